//! Where the bytes come from: files read block by block, and registered memory.

pub(crate) use fileuploader_wire::sync::lock;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{code, Error, ErrorKind};

/// The most bytes read from a source at once while a body is sent. Small
/// enough that a piece is still in the CPU cache when the socket write copies
/// it out; reading whole multi-megabyte blocks instead costs several times
/// more memory bandwidth.
pub const READ_PIECE: usize = 64 * 1024;

/// The prefix of URLs that name bytes registered with
/// [`UploadManager::generate_url_for_upload_data`](crate::UploadManager::generate_url_for_upload_data).
pub const MEMORY_URL_PREFIX: &str = "mem://";

/// Something a job can upload: a known length, and bytes read at any offset.
///
/// The core reads a block of at most [`READ_PIECE`] bytes whole, and a larger
/// block in pieces of [`READ_PIECE`] bytes as it is sent, each byte once per
/// attempt (the block's CRC32C is computed from the same pieces); it reads
/// again whatever must be sent again, and never asks for more than
/// [`READ_PIECE`] bytes at once.
/// Implement it to upload from somewhere other than a file or memory.
#[async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// The length of the source in bytes, fixed for the whole upload.
    fn len(&self) -> u64;

    /// Whether the source has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name to upload under when the job gives none (a file's own name).
    fn default_name(&self) -> Option<String> {
        None
    }

    /// What identifies this source's content across runs, for resuming an
    /// interrupted upload; `None` (the default) for sources that cannot be
    /// resumed. `sample_crc32c` is filled in by the core.
    fn identity(&self) -> Option<SourceIdentity> {
        None
    }

    /// Reads exactly `len` bytes at `offset`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Source`] when the bytes cannot be read, or the source no
    /// longer has the length it had when the job started.
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, Error>;
}

/// What a resume journal records of a source, to know it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIdentity {
    /// Where the content lives (a file's canonical path).
    pub path: String,
    /// Its length.
    pub len: u64,
    /// Its modification time, in nanoseconds since the Unix epoch.
    pub modified_ns: u128,
    /// A CRC32C of a few sampled blocks.
    pub sample_crc32c: u32,
}

/// A file on disk, read with positional reads: at once when the bytes are in
/// the page cache, else on the blocking pool.
#[derive(Debug)]
pub struct FileSource {
    file: Arc<File>,
    /// The path it was opened from, for messages.
    opened: PathBuf,
    /// Its canonical path, found when first asked for (a resume journal
    /// names the source by it): a run of many small files that keeps no
    /// journal never pays for it.
    path: std::sync::OnceLock<PathBuf>,
    len: u64,
    modified_ns: u128,
}

impl FileSource {
    /// Opens `path` for upload.
    ///
    /// # Errors
    ///
    /// Code 27 if it does not exist or is not a regular file, 5 if it may not
    /// be read, 8 for other read failures.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| open_error(path, e))?;
        let meta = file.metadata().map_err(|e| open_error(path, e))?;
        if !meta.is_file() {
            return Err(Error::new(
                ErrorKind::Source,
                code::FILE_NOT_FOUND,
                format!("cannot find file: {} is not a regular file", path.display()),
            ));
        }
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(FileSource {
            file: Arc::new(file),
            opened: path.to_owned(),
            path: std::sync::OnceLock::new(),
            len: meta.len(),
            modified_ns,
        })
    }

    /// The file's absolute path, symbolic links resolved.
    pub fn path(&self) -> &Path {
        self.path
            .get_or_init(|| canonical(&self.file, &self.opened))
    }
}

/// The absolute path, symbolic links resolved, of `file` opened from
/// `path`: on Linux what the kernel knows of the open file (one `readlink`,
/// where resolving the path walks each of its components), else resolved
/// from `path`; `path` itself when neither can be had.
fn canonical(file: &File, path: &Path) -> PathBuf {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let known = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if let Ok(known) = known {
            if known.is_absolute() && known.exists() {
                return known;
            }
        }
    }
    let _ = file;
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

fn open_error(path: &Path, e: io::Error) -> Error {
    let code = match e.kind() {
        io::ErrorKind::NotFound => code::FILE_NOT_FOUND,
        io::ErrorKind::PermissionDenied => code::ACCESS_DENIED,
        _ => code::READ_FAILED,
    };
    Error::new(
        ErrorKind::Source,
        code,
        format!("cannot open {}: {e}", path.display()),
    )
    .with_source(e)
}

fn changed(path: &Path, expected: u64, now: u64) -> Error {
    Error::new(
        ErrorKind::Source,
        code::READ_FAILED,
        format!(
            "{} changed during upload: it had {expected} bytes, now {now}",
            path.display()
        ),
    )
}

#[async_trait]
impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn default_name(&self) -> Option<String> {
        self.path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    }

    fn identity(&self) -> Option<SourceIdentity> {
        Some(SourceIdentity {
            path: self.path().to_string_lossy().into_owned(),
            len: self.len,
            modified_ns: self.modified_ns,
            sample_crc32c: 0,
        })
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, Error> {
        let mut buf = BUFFERS.take(len);
        if read_cached(&self.file, &mut buf, offset) {
            // Bytes in the page cache are read here, without a trip to the
            // blocking pool; the length check is the same.
            check_len(&self.file, &self.opened, self.len)?;
            return Ok(Bytes::from_owner(Pooled(buf)));
        }
        let (file, path, expected) = (self.file.clone(), self.opened.clone(), self.len);
        self.blocking(move || {
            check_len(&file, &path, expected)?;
            read_piece(&file, &path, expected, &mut buf, offset)?;
            Ok(Bytes::from_owner(Pooled(buf)))
        })
        .await
    }
}

impl FileSource {
    /// Runs a blocking read on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        tokio::task::spawn_blocking(read).await.map_err(|e| {
            Error::new(
                ErrorKind::Source,
                code::READ_FAILED,
                format!("read of {} did not finish: {e}", self.opened.display()),
            )
        })?
    }
}

/// Fails when the file at `path` no longer has the `expected` length.
fn check_len(file: &File, path: &Path, expected: u64) -> Result<(), Error> {
    let now = file.metadata().map_err(|e| open_error(path, e))?.len();
    if now == expected {
        Ok(())
    } else {
        Err(changed(path, expected, now))
    }
}

/// Fills `buf` from `offset`, waiting for the disk if need be.
fn read_piece(
    file: &File,
    path: &Path,
    expected: u64,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), Error> {
    read_exact_at(file, buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            // Shorter than it was: say how long it is now.
            check_len(file, path, expected)
                .err()
                .unwrap_or_else(|| changed(path, expected, offset))
        } else {
            open_error(path, e)
        }
    })
}

/// Read buffers kept for reuse, process-wide. Reusing them keeps a running
/// job's memory at the pieces in flight (freed and re-allocated buffers
/// otherwise pile up in the allocator's arenas), spares each read a fresh,
/// zeroed, page-faulting allocation, and hands out memory that is likely
/// still in the CPU cache. At most [`SPARE_BUFFERS`] buffers and
/// [`SPARE_BYTES`] bytes wait here.
static BUFFERS: BufferPool = BufferPool {
    spare: Mutex::new(Vec::new()),
};
const SPARE_BUFFERS: usize = 64;
const SPARE_BYTES: usize = SPARE_BUFFERS * READ_PIECE;

struct BufferPool {
    spare: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A buffer of exactly `len` initialised bytes, reused when one fits.
    fn take(&self, len: usize) -> Vec<u8> {
        let reused = {
            let mut spare = lock(&self.spare);
            // The most recently returned buffer that fits: the likeliest to
            // be in the CPU cache still.
            let fit = spare.iter().rposition(|b| b.capacity() >= len);
            fit.map(|i| spare.swap_remove(i))
        };
        let mut buf = reused.unwrap_or_default();
        // Only bytes never written before are zeroed; the rest is
        // overwritten by the read.
        buf.resize(len, 0);
        buf
    }

    fn give(&self, buf: Vec<u8>) {
        let mut spare = lock(&self.spare);
        let held: usize = spare.iter().map(Vec::capacity).sum();
        if spare.len() < SPARE_BUFFERS && held + buf.capacity() <= SPARE_BYTES {
            spare.push(buf);
        }
    }
}

/// A block's bytes, going back to the pool when the last `Bytes` over them
/// is dropped.
struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        BUFFERS.give(std::mem::take(&mut self.0));
    }
}

/// Fills `buf` from `offset` only if every byte is in the page cache, so the
/// read cannot block (Linux's `RWF_NOWAIT`); false leaves the read to the
/// blocking pool.
#[cfg(target_os = "linux")]
fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(offset) = libc::off_t::try_from(offset) else {
        return false;
    };
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, which is valid for writes of its length
    // for the whole call, and the descriptor belongs to the open `file`.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    usize::try_from(n).is_ok_and(|n| n == buf.len())
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_file: &File, _buf: &mut [u8], _offset: u64) -> bool {
    false
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Bytes held in memory; reads are slices of the same buffer, never copies.
#[derive(Debug, Clone)]
pub struct MemorySource {
    data: Bytes,
}

impl MemorySource {
    /// A source over `data`.
    pub fn new(data: impl Into<Bytes>) -> Self {
        MemorySource { data: data.into() }
    }
}

#[async_trait]
impl Source for MemorySource {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, Error> {
        let start = offset as usize;
        self.data.get(start..start + len).map_or_else(
            || {
                Err(Error::new(
                    ErrorKind::Source,
                    code::READ_FAILED,
                    format!("read of {len} bytes at {offset} is past the end of memory data"),
                ))
            },
            |_| Ok(self.data.slice(start..start + len)),
        )
    }
}

/// Bytes registered with the manager, by the number in their `mem://` URL.
#[derive(Debug, Default)]
pub(crate) struct MemoryRegistry {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Bytes>>,
}

impl MemoryRegistry {
    pub(crate) fn register(&self, data: Bytes) -> String {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.entries).insert(id, data);
        format!("{MEMORY_URL_PREFIX}{id}")
    }

    pub(crate) fn remove(&self, url: &str) -> bool {
        Self::id(url).is_some_and(|id| lock(&self.entries).remove(&id).is_some())
    }

    fn id(url: &str) -> Option<u64> {
        url.strip_prefix(MEMORY_URL_PREFIX)?.parse().ok()
    }

    /// Resolves a source URL: `mem://N`, `file://…`, or a plain path.
    pub(crate) fn resolve(&self, url: &str) -> Result<Arc<dyn Source>, Error> {
        if url.is_empty() {
            return Err(Error::invalid(code::EMPTY_SOURCE, "a source is empty"));
        }
        if url.starts_with(MEMORY_URL_PREFIX) {
            let data = Self::id(url).and_then(|id| lock(&self.entries).get(&id).cloned());
            return data
                .map(|d| Arc::new(MemorySource::new(d)) as Arc<dyn Source>)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Source,
                        code::FILE_NOT_FOUND,
                        format!("cannot find file: no upload data is registered as {url}"),
                    )
                });
        }
        let path = if url.starts_with("file:") {
            url::Url::parse(url)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Source,
                        code::FILE_NOT_FOUND,
                        format!("cannot find file: {url} is not a local file URL"),
                    )
                })?
        } else {
            PathBuf::from(url)
        };
        Ok(Arc::new(FileSource::open(path)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn file_reads_are_positional_and_detect_change() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"abcdefghij").unwrap();
        let src = FileSource::open(f.path()).unwrap();
        assert_eq!(src.len(), 10);
        assert_eq!(&src.read_at(3, 4).await.unwrap()[..], b"defg");
        f.write_all(b"more").unwrap();
        let e = src.read_at(0, 2).await.unwrap_err();
        assert_eq!(e.code(), code::READ_FAILED);
        assert!(e.message().contains("changed during upload"), "{e}");
    }

    #[tokio::test]
    async fn a_file_cut_short_fails_its_reads_and_says_how_long_it_is_now() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[7; 3 * READ_PIECE]).unwrap();
        let src = FileSource::open(f.path()).unwrap();
        assert_eq!(src.read_at(READ_PIECE as u64, 9).await.unwrap().len(), 9);
        f.as_file().set_len(READ_PIECE as u64).unwrap();
        let e = src.read_at(READ_PIECE as u64, 9).await.unwrap_err();
        assert_eq!(e.code(), code::READ_FAILED);
        let now = format!("now {}", READ_PIECE);
        assert!(e.message().contains(&now), "says how long it is now: {e}");
    }

    #[test]
    fn open_failures_map_to_reference_codes() {
        let path = Path::new("/x");
        for (kind, expected) in [
            (io::ErrorKind::NotFound, code::FILE_NOT_FOUND),
            (io::ErrorKind::PermissionDenied, code::ACCESS_DENIED),
            (io::ErrorKind::InvalidData, code::READ_FAILED),
        ] {
            let e = open_error(path, io::Error::from(kind));
            assert_eq!(
                (e.code(), e.kind()),
                (expected, ErrorKind::Source),
                "{kind:?}"
            );
            assert!(e.message().starts_with("cannot open /x: "), "{e}");
        }
    }

    #[test]
    fn pooled_buffers_are_reused_and_bounded() {
        let pool = BufferPool {
            spare: Mutex::new(Vec::new()),
        };
        let mut a = pool.take(1000);
        a[0] = 9;
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(600);
        assert_eq!(
            (b.as_ptr(), b.len()),
            (ptr, 600),
            "the same memory, cut to size"
        );
        pool.give(b);
        let c = pool.take(1000);
        assert_eq!((c.as_ptr(), c.len()), (ptr, 1000));
        for _ in 0..SPARE_BUFFERS + 4 {
            pool.give(vec![0; 10]);
        }
        assert_eq!(lock(&pool.spare).len(), SPARE_BUFFERS);
        let big = pool.take(SPARE_BYTES + 1);
        pool.give(big);
        assert!(lock(&pool.spare)
            .iter()
            .all(|b| b.capacity() <= SPARE_BYTES));
    }

    #[test]
    fn resolve_reports_reference_codes() {
        let reg = MemoryRegistry::default();
        assert_eq!(reg.resolve("").unwrap_err().code(), code::EMPTY_SOURCE);
        assert_eq!(
            reg.resolve("/no/such/file").unwrap_err().code(),
            code::FILE_NOT_FOUND
        );
        let dir = tempfile::tempdir().unwrap();
        let e = reg.resolve(dir.path().to_str().unwrap()).unwrap_err();
        assert_eq!(e.code(), code::FILE_NOT_FOUND);
        assert!(e.message().contains("not a regular file"), "{e}");
        assert_eq!(
            reg.resolve("mem://77").unwrap_err().code(),
            code::FILE_NOT_FOUND
        );
    }

    #[tokio::test]
    async fn file_urls_and_memory_urls_resolve() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"xyz").unwrap();
        let reg = MemoryRegistry::default();
        let url = url::Url::from_file_path(f.path()).unwrap();
        assert_eq!(reg.resolve(url.as_str()).unwrap().len(), 3);
        let mem = reg.register(Bytes::from_static(b"hello"));
        let src = reg.resolve(&mem).unwrap();
        assert_eq!(&src.read_at(1, 3).await.unwrap()[..], b"ell");
        assert!(reg.remove(&mem));
        assert!(reg.resolve(&mem).is_err());
    }
}
