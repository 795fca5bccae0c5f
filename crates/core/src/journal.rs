//! Resume journals: which blocks of a source a server has acknowledged,
//! kept append-only and fsync'd so a run killed at any moment can be resumed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fileuploader_wire::resumable::{decode_text, encode_text};

use crate::source::{lock, SourceIdentity};

const MAGIC: &str = "fileuploader-journal 1";

/// Whether a job keeps a resume journal, and where.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Resume {
    /// No journal: every run uploads every block (the default).
    #[default]
    Off,
    /// Keep journals in this directory: a run of the same job after an
    /// interrupted one sends only the blocks the server had not
    /// acknowledged, and counts a source that landed before the
    /// interruption as landed once the receiver confirms it (same length
    /// and CRC32C). Applies to file sources; the journals are removed when
    /// the job succeeds.
    In(PathBuf),
    /// As [`In`](Self::In), but the journals stay after the job succeeds,
    /// as receipts of what landed, until [`Job::remove_journals`]: for a
    /// batch of jobs that is done only when every one of them is (a folder
    /// uploaded a file per job), so that resuming the batch asks the
    /// receiver about files that landed instead of sending them again.
    ///
    /// [`Job::remove_journals`]: crate::Job::remove_journals
    KeptIn(PathBuf),
}

impl Resume {
    /// Journals in [`default_journal_dir`].
    pub fn on() -> Self {
        Resume::In(default_journal_dir())
    }

    /// The directory journals are kept in, if any.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Resume::Off => None,
            Resume::In(dir) | Resume::KeptIn(dir) => Some(dir),
        }
    }
}

/// Where resume journals are kept by default: `$FILEUPLOADER_JOURNAL_DIR`, else
/// `$XDG_STATE_HOME/fileuploader/journals`, else
/// `~/.local/state/fileuploader/journals`, else a folder in the system's
/// temporary directory.
pub fn default_journal_dir() -> PathBuf {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("FILEUPLOADER_JOURNAL_DIR")
        .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("fileuploader/journals")))
        .or_else(|| env("HOME").map(|d| d.join(".local/state/fileuploader/journals")))
        .unwrap_or_else(|| std::env::temp_dir().join("fileuploader-journals"))
}

/// One source's journal: a cache of its upload session (the upload id and
/// the blocks acknowledged, with their CRC32Cs), never the judge of what the
/// receiver holds.
#[derive(Debug)]
pub(crate) struct Journal {
    dir: PathBuf,
    path: PathBuf,
    /// The header line up to the upload id.
    header: String,
    /// The open file and the upload id its header names.
    file: Mutex<Option<(File, String)>>,
}

/// One acknowledged block, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournaledAck {
    pub(crate) index: u64,
    /// The CRC32C of its bytes, when one was computed.
    pub(crate) crc32c: Option<u32>,
    /// What the receiver gave for it (an ETag, an offset), if anything.
    pub(crate) receipt: Option<String>,
}

/// What a journal says when a run starts.
#[derive(Debug)]
pub(crate) struct Resumed {
    pub(crate) journal: Journal,
    /// The upload id of the interrupted run, if there was one.
    pub(crate) upload_id: Option<String>,
    /// The blocks it saw acknowledged.
    pub(crate) acked: Vec<JournaledAck>,
    pub(crate) note: Option<String>,
}

impl Journal {
    /// Reads the journal for uploading `source` to `server_url` in
    /// `block_size` blocks: what an interrupted run of the same content
    /// kept, or nothing (with a note saying why) if the source changed.
    pub(crate) fn open(
        dir: &Path,
        server_url: &str,
        source: &SourceIdentity,
        block_size: u64,
    ) -> io::Result<Resumed> {
        fs::create_dir_all(dir)?;
        let key = format!("{server_url}\t{}\t{block_size}", source.path);
        let fingerprint = format!(
            "{}\t{}\t{:08x}",
            source.len, source.modified_ns, source.sample_crc32c
        );
        let base: String = Path::new(&source.path)
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || "._-".contains(*c))
                    .take(64)
                    .collect()
            })
            .unwrap_or_default();
        let path = dir.join(format!(
            "{base}-{:08x}.journal",
            crc32c::crc32c(key.as_bytes())
        ));

        let (upload_id, acked, note) = match fs::read_to_string(&path) {
            Ok(text) => {
                // Only whole lines count: a crash leaves at worst a torn
                // last line, which could be a prefix of another number.
                let mut lines = text
                    .split_inclusive('\n')
                    .filter_map(|l| l.strip_suffix('\n'));
                let header: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
                let same_key = header.get(1..4).map(|k| k.join("\t")) == Some(key.clone());
                let same_content =
                    header.get(4..7).map(|f| f.join("\t")) == Some(fingerprint.clone());
                match (header.first() == Some(&MAGIC) && same_key, same_content, header.get(7)) {
                    (true, true, Some(id)) => {
                        let acked = lines.filter_map(parse_ack).collect();
                        (Some(id.to_string()), acked, None)
                    }
                    (true, _, _) => (
                        None,
                        Vec::new(),
                        Some(format!(
                            "{} changed since the interrupted upload (size, modification time or content); starting it over",
                            source.path
                        )),
                    ),
                    _ => (None, Vec::new(), Some(format!("the journal {} was not for this upload; starting over", path.display()))),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, Vec::new(), None),
            Err(e) => return Err(e),
        };
        let file = match &upload_id {
            Some(id) => Some((OpenOptions::new().append(true).open(&path)?, id.clone())),
            None => None,
        };
        Ok(Resumed {
            journal: Journal {
                dir: dir.to_owned(),
                path,
                header: format!("{MAGIC}\t{key}\t{fingerprint}"),
                file: Mutex::new(file),
            },
            upload_id,
            acked,
            note,
        })
    }

    /// Keeps `upload_id` as the session to resume; a new id starts the
    /// journal over, durably.
    pub(crate) fn keep_session(&self, upload_id: &str) -> io::Result<()> {
        let mut file = lock(&self.file);
        if file.as_ref().is_some_and(|(_, id)| id == upload_id) {
            return Ok(());
        }
        let mut f = File::create(&self.path)?;
        writeln!(f, "{}\t{upload_id}", self.header)?;
        f.sync_all()?;
        sync_dir(&self.dir);
        *file = Some((f, upload_id.to_owned()));
        Ok(())
    }

    /// Records that block `index` was acknowledged, with its CRC32C and the
    /// receiver's receipt when there are any, durably.
    pub(crate) fn ack(&self, ack: &JournaledAck) -> io::Result<()> {
        let mut file = lock(&self.file);
        let Some((file, _)) = file.as_mut() else {
            return Err(io::Error::other("the journal has no session yet"));
        };
        let crc = ack
            .crc32c
            .map_or_else(|| "-".to_owned(), |c| format!("{c:08x}"));
        let line = match &ack.receipt {
            Some(receipt) => format!("ack {} {crc} {}\n", ack.index, encode_text(receipt)),
            None => format!("ack {} {crc}\n", ack.index),
        };
        // One write per line, so a crash leaves at worst a partial last
        // line, which reading skips.
        file.write_all(line.as_bytes())?;
        file.sync_data()
    }

    /// Deletes the journal once its job is done.
    pub(crate) fn remove(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Where the journal is.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// `ack N`, `ack N CRC` or `ack N CRC RECEIPT`, with `-` for no CRC.
fn parse_ack(line: &str) -> Option<JournaledAck> {
    let mut fields = line.strip_prefix("ack ")?.split(' ');
    let index = fields.next()?.parse().ok()?;
    let crc32c = fields.next().and_then(|c| u32::from_str_radix(c, 16).ok());
    let receipt = fields.next().map(decode_text);
    Some(JournaledAck {
        index,
        crc32c,
        receipt,
    })
}

/// Makes a new file's directory entry durable too; best effort.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(len: u64, sample: u32) -> SourceIdentity {
        SourceIdentity {
            path: "/data/scan.pdf".into(),
            len,
            modified_ns: 42,
            sample_crc32c: sample,
        }
    }

    #[test]
    fn resumes_the_same_content_and_starts_changed_content_over() {
        let dir = tempfile::tempdir().unwrap();
        let url = "http://127.0.0.1/u";
        let first = Journal::open(dir.path(), url, &identity(100, 7), 10).unwrap();
        assert_eq!((first.upload_id.as_deref(), first.acked.len()), (None, 0));
        assert!(first.note.is_none());
        let ack = |index, crc32c, receipt: Option<&str>| JournaledAck {
            index,
            crc32c,
            receipt: receipt.map(str::to_owned),
        };
        assert!(
            first.journal.ack(&ack(1, None, None)).is_err(),
            "no session kept yet"
        );
        first.journal.keep_session("id-1").unwrap();
        first.journal.ack(&ack(3, Some(0xabc), None)).unwrap();
        first
            .journal
            .ack(&ack(0, None, Some("\"etag 1\"%\n")))
            .unwrap();
        // A crash mid-line leaves a torn last line: "ack 9" of "ack 95".
        OpenOptions::new()
            .append(true)
            .open(first.journal.path())
            .unwrap()
            .write_all(b"ack 9")
            .unwrap();
        drop(first);

        let again = Journal::open(dir.path(), url, &identity(100, 7), 10).unwrap();
        assert_eq!(
            again.upload_id.as_deref(),
            Some("id-1"),
            "the upload id survives"
        );
        assert_eq!(
            again.acked,
            [
                ack(3, Some(0xabc), None),
                ack(0, None, Some("\"etag 1\"%\n"))
            ],
            "receipts survive escaping; the torn line is skipped"
        );
        again.journal.keep_session("id-1").unwrap();
        again.journal.ack(&ack(5, None, None)).unwrap();
        drop(again);
        let kept = Journal::open(dir.path(), url, &identity(100, 7), 10).unwrap();
        assert_eq!(
            kept.acked.len(),
            2,
            "the torn line stays unreadable: {:?}",
            kept.acked
        );
        kept.journal.keep_session("id-2").unwrap();
        drop(kept);
        let restarted = Journal::open(dir.path(), url, &identity(100, 7), 10).unwrap();
        assert_eq!(
            (restarted.upload_id.as_deref(), restarted.acked.len()),
            (Some("id-2"), 0),
            "a new session starts the journal over"
        );
        drop(restarted);

        let changed = Journal::open(dir.path(), url, &identity(100, 8), 10).unwrap();
        assert_eq!((changed.upload_id, changed.acked.len()), (None, 0));
        assert!(changed
            .note
            .unwrap()
            .contains("changed since the interrupted upload"));

        let other_blocks = Journal::open(dir.path(), url, &identity(100, 8), 20).unwrap();
        assert_eq!(
            other_blocks.upload_id, None,
            "another block size is another journal"
        );
        assert_ne!(other_blocks.journal.path(), changed.journal.path());
        changed.journal.remove().unwrap();
        assert!(!changed.journal.path().exists());
        changed.journal.remove().unwrap();
    }
}
