//! Partial and landed files on disk. All file I/O runs on the blocking pool.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::StatusCode;

use crate::{partial_dir, too_large, ContentRange, RangeSet, Refusal};

/// Bytes gathered before one positional write.
const WRITE_BATCH: usize = 256 * 1024;

#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    partial: PathBuf,
    uploads: Mutex<HashMap<String, Arc<Upload>>>,
}

/// An upload arriving in segments: its temporary file, its length, and the
/// ranges received, also appended to a side file so a restarted receiver
/// knows them.
#[derive(Debug)]
pub(crate) struct Upload {
    file: Arc<File>,
    temp: PathBuf,
    total: u64,
    coverage: Mutex<RangeSet>,
    landed: AtomicBool,
}

/// Where one request's file part goes.
#[derive(Debug)]
pub(crate) enum Target {
    Segment {
        key: String,
        upload: Arc<Upload>,
        range: ContentRange,
        name: String,
    },
    Whole {
        temp: tempfile::NamedTempFile,
        file: Arc<File>,
        name: String,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.raw_os_error() == Some(28) => Err(Refusal::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("{what}: disk full"),
        )),
        Ok(Err(e)) => Err(Refusal::internal(what, e)),
        Err(e) => Err(Refusal::internal(what, e)),
    }
}

fn ranges_path(temp: &Path) -> PathBuf {
    temp.with_extension("ranges")
}

impl Store {
    pub(crate) fn new(dir: &Path) -> io::Result<Self> {
        let partial = partial_dir(dir);
        fs::create_dir_all(&partial)?;
        Ok(Store {
            dir: dir.to_owned(),
            partial,
            uploads: Mutex::default(),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn status(&self, id: &str) -> Option<(u64, RangeSet)> {
        let upload = lock(&self.uploads).get(&format!("id-{id}")).cloned()?;
        let coverage = lock(&upload.coverage).clone();
        Some((upload.total, coverage))
    }

    /// The target for a request's file part: the upload its range belongs
    /// to (found, reloaded from disk, or begun), or a fresh whole file.
    pub(crate) async fn open(
        &self,
        id: Option<&str>,
        name: &str,
        range: Option<ContentRange>,
    ) -> Result<Target, Refusal> {
        let Some(range) = range else {
            let partial = self.partial.clone();
            let (temp, file) = blocking("create temporary file", move || {
                let temp = tempfile::Builder::new()
                    .prefix("whole-")
                    .tempfile_in(partial)?;
                let file = Arc::new(temp.as_file().try_clone()?);
                Ok((temp, file))
            })
            .await?;
            return Ok(Target::Whole {
                temp,
                file,
                name: name.to_owned(),
            });
        };
        let key = id.map_or_else(|| format!("name-{name}"), |id| format!("id-{id}"));
        let existing = lock(&self.uploads).get(&key).cloned();
        let upload = match existing {
            Some(upload) => upload,
            None => {
                let temp = self.partial.join(format!("{key}.part"));
                let total = range.total;
                let loaded =
                    blocking("open partial upload", move || Upload::open(temp, total)).await?;
                lock(&self.uploads)
                    .entry(key.clone())
                    .or_insert(Arc::new(loaded))
                    .clone()
            }
        };
        if upload.total != range.total {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                format!(
                    "upload {key} is {} bytes long, this block says {}",
                    upload.total, range.total
                ),
            ));
        }
        Ok(Target::Segment {
            key,
            upload,
            range,
            name: name.to_owned(),
        })
    }

    /// Records a fully received part; lands the file once all of it is here.
    pub(crate) async fn commit(
        &self,
        target: Target,
        name_field: Option<String>,
    ) -> Result<String, Refusal> {
        match target {
            Target::Whole { temp, name, .. } => {
                let name = name_field.unwrap_or(name);
                let dest = self.dir.join(&name);
                let size = blocking("land file", move || {
                    temp.as_file().sync_all()?;
                    let size = temp.as_file().metadata()?.len();
                    temp.persist(&dest).map_err(|e| e.error)?;
                    Ok(size)
                })
                .await?;
                sync_dir(&self.dir).await?;
                Ok(format!("complete: {name} ({size} bytes)\n"))
            }
            Target::Segment {
                key,
                upload,
                range,
                name,
            } => {
                let complete = {
                    let mut coverage = lock(&upload.coverage);
                    coverage.insert(range.start, range.end);
                    coverage.covered() == upload.total
                };
                let (temp, start, end) = (upload.temp.clone(), range.start, range.end);
                blocking("record range", move || {
                    let mut side = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(ranges_path(&temp))?;
                    writeln!(side, "{start} {end}")
                })
                .await?;
                if !complete || upload.landed.swap(true, Ordering::SeqCst) {
                    return Ok("ok\n".into());
                }
                lock(&self.uploads).remove(&key);
                let name = name_field.unwrap_or(name);
                let dest = self.dir.join(&name);
                let total = upload.total;
                blocking("land file", move || {
                    upload.file.sync_all()?;
                    fs::rename(&upload.temp, &dest)?;
                    fs::remove_file(ranges_path(&upload.temp))
                })
                .await?;
                sync_dir(&self.dir).await?;
                Ok(format!("complete: {name} ({total} bytes)\n"))
            }
        }
    }
}

async fn sync_dir(dir: &Path) -> Result<(), Refusal> {
    let dir = dir.to_owned();
    blocking("sync directory", move || File::open(dir)?.sync_all()).await
}

impl Upload {
    /// Opens (or creates) the temporary file and reloads the ranges a
    /// previous run of the receiver recorded.
    fn open(temp: PathBuf, total: u64) -> io::Result<Upload> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&temp)?;
        let mut coverage = RangeSet::default();
        if let Ok(text) = fs::read_to_string(ranges_path(&temp)) {
            for line in text.lines() {
                let mut nums = line.split(' ').map(str::parse::<u64>);
                if let (Some(Ok(s)), Some(Ok(e))) = (nums.next(), nums.next()) {
                    if s < e && e <= total {
                        coverage.insert(s, e);
                    }
                }
            }
        }
        Ok(Upload {
            file: Arc::new(file),
            temp,
            total,
            coverage: Mutex::new(coverage),
            landed: AtomicBool::new(false),
        })
    }
}

impl Target {
    fn file_and_start(&self) -> (Arc<File>, u64) {
        match self {
            Target::Segment { upload, range, .. } => (upload.file.clone(), range.start),
            Target::Whole { file, .. } => (file.clone(), 0),
        }
    }

    /// Writes a part's bytes at their offset, in batches; refuses a part
    /// longer than `max` before writing past it. Returns the bytes written.
    pub(crate) async fn write_part(
        &self,
        field: &mut multer::Field<'_>,
        max: u64,
        whole: bool,
    ) -> Result<u64, Refusal> {
        let (file, start) = self.file_and_start();
        let mut written = 0u64;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0usize;
        loop {
            let chunk = field.chunk().await.map_err(crate::malformed)?;
            let end = chunk.is_none();
            if let Some(chunk) = chunk {
                if written + batched as u64 + chunk.len() as u64 > max {
                    return Err(if whole {
                        too_large(max)
                    } else {
                        Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "file part is longer than its Content-Range",
                        )
                    });
                }
                batched += chunk.len();
                batch.push(chunk);
            }
            if batched >= WRITE_BATCH || (end && batched > 0) {
                let file = file.clone();
                let offset = start + written;
                let chunks = std::mem::take(&mut batch);
                blocking("write block", move || write_all_at(&file, &chunks, offset)).await?;
                written += batched as u64;
                batched = 0;
            }
            if end {
                return Ok(written);
            }
        }
    }
}

fn write_all_at(file: &File, chunks: &[Bytes], mut offset: u64) -> io::Result<()> {
    for chunk in chunks {
        std::os::unix::fs::FileExt::write_all_at(file, chunk, offset)?;
        offset += chunk.len() as u64;
    }
    Ok(())
}
