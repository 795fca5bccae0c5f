//! What a later run needs: opening a source's resume journal, which caches
//! its upload session and never decides what the receiver holds.

use std::path::Path;

use crate::error::Error;
use crate::job::Job;
use crate::journal::{Journal, Resumed};
use crate::source::{Source, SourceIdentity};

/// Opens the resume journal of one source, noting on the job why it starts
/// over or why it cannot resume at all.
pub(crate) async fn open_journal(
    job: &Job,
    dir: &Path,
    source: &dyn Source,
    identity: SourceIdentity,
) -> Option<Resumed> {
    let identity = match sample_crc32c(source, job.block_size).await {
        Ok(sample_crc32c) => SourceIdentity {
            sample_crc32c,
            ..identity
        },
        Err(e) => {
            job.state
                .notice(format!("cannot resume {}: {e}", identity.path));
            return None;
        }
    };
    let (dir, url, block_size) = (dir.to_owned(), job.server_url.clone(), job.block_size);
    let opened = tokio::task::spawn_blocking(move || {
        let path = identity.path.clone();
        Journal::open(&dir, &url, &identity, block_size).map_err(|e| {
            format!(
                "cannot use the resume journal for {path} in {}: {e}",
                dir.display()
            )
        })
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match opened {
        Ok(resumed) => {
            if let Some(note) = &resumed.note {
                job.state.notice(note.clone());
            }
            Some(resumed)
        }
        Err(e) => {
            job.state.notice(e);
            None
        }
    }
}

/// A CRC32C of up to three 64 KiB samples (start, middle, end) of a source,
/// so a journal can tell content that changed without a new size or time.
async fn sample_crc32c(source: &dyn Source, block_size: u64) -> Result<u32, Error> {
    let len = source.len();
    let n = len.min(block_size).min(64 * 1024);
    let mut offsets = vec![0, (len - n) / 2, len - n];
    offsets.dedup();
    let mut crc = 0;
    for offset in offsets {
        crc = crc32c::crc32c_append(crc, &source.read_at(offset, n as usize).await?);
    }
    Ok(crc)
}

/// The CRC32C of `len` bytes of `source` at `offset`, read in pieces.
pub(crate) async fn crc32c_of(source: &dyn Source, offset: u64, len: u64) -> Result<u32, Error> {
    let mut crc = 0;
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(1 << 20);
        crc = crc32c::crc32c_append(crc, &source.read_at(at, n as usize).await?);
        at += n;
    }
    Ok(crc)
}

/// The CRC32C and SHA-256 of all of `source`'s bytes, read once.
pub(crate) async fn digests_of(source: &dyn Source) -> Result<(u32, [u8; 32]), Error> {
    use sha2::Digest;
    let (mut crc, mut sha) = (0, sha2::Sha256::new());
    let mut at = 0;
    while at < source.len() {
        let n = (source.len() - at).min(1 << 20);
        let bytes = source.read_at(at, n as usize).await?;
        crc = crc32c::crc32c_append(crc, &bytes);
        sha.update(&bytes);
        at += n;
    }
    Ok((crc, sha.finalize().into()))
}
