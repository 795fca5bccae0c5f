//! Partial and landed files on disk. All file I/O runs on the blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fileuploader_wire::{ContentRange, CrcShift, RangeSet, Statement};
use http::StatusCode;

use crate::{landed_dir, partial_dir, too_large, Refusal};

/// Bytes gathered before one positional write.
const WRITE_BATCH: usize = 256 * 1024;

#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    partial: PathBuf,
    /// Landing statements by upload id, for status queries after landing.
    landed: PathBuf,
    uploads: Mutex<HashMap<String, Arc<Upload>>>,
}

/// An upload arriving in segments: its temporary file, its length, and the
/// blocks received, also appended to a side file so a restarted receiver
/// knows them.
#[derive(Debug)]
pub(crate) struct Upload {
    file: Arc<File>,
    temp: PathBuf,
    total: u64,
    coverage: Mutex<RangeSet>,
    /// Each acknowledged block: start → (end, CRC32C if the client sent one).
    blocks: Mutex<BTreeMap<u64, (u64, Option<u32>)>>,
    /// Set while the upload is being landed, and once it has.
    landing: AtomicBool,
    /// Why the last landing failed, if it did.
    landing_error: Mutex<Option<String>>,
}

/// Where one request's file part goes.
#[derive(Debug)]
pub(crate) enum Target {
    Segment {
        key: String,
        upload: Arc<Upload>,
        range: ContentRange,
        name: String,
        /// The range was received already: check the bytes, write nothing.
        duplicate: bool,
    },
    Whole {
        temp: tempfile::NamedTempFile,
        file: Arc<File>,
        name: String,
        id: Option<String>,
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

/// The key of an upload: its id, or its name for clients that send none.
fn key_of(id: Option<&str>, name: &str) -> String {
    id.map_or_else(|| format!("name-{name}"), |id| format!("id-{id}"))
}

/// Why a landing failed, as a refusal: 409 when the name is taken by a
/// directory, 500 otherwise.
fn landing_refusal(name: &str, e: &Refusal) -> Refusal {
    let status =
        if e.message().contains("Is a directory") || e.message().contains("Directory not empty") {
            StatusCode::CONFLICT
        } else {
            e.status()
        };
    Refusal::new(status, format!("cannot land {name}: {}", e.message()))
}

impl Store {
    pub(crate) fn new(dir: &Path) -> io::Result<Self> {
        let partial = partial_dir(dir);
        fs::create_dir_all(&partial)?;
        let landed = landed_dir(dir);
        fs::create_dir_all(&landed)?;
        Ok(Store {
            dir: dir.to_owned(),
            partial,
            landed,
            uploads: Mutex::default(),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Which ranges of upload `id` are here, if it is in progress (in
    /// memory, or on disk from before a restart).
    pub(crate) async fn status(&self, id: &str) -> Result<Option<(u64, RangeSet)>, Refusal> {
        let Some(upload) = self.find(&key_of(Some(id), "")).await? else {
            return Ok(None);
        };
        let coverage = lock(&upload.coverage).clone();
        Ok(Some((upload.total, coverage)))
    }

    /// What the receiver can say of upload `id`.
    pub(crate) async fn statement(&self, id: &str) -> Result<Statement, Refusal> {
        if let Some(upload) = self.find(&key_of(Some(id), "")).await? {
            let received = lock(&upload.coverage).ranges().to_vec();
            let error = lock(&upload.landing_error).clone();
            return Ok(Statement::Partial {
                upload_id: id.to_owned(),
                total: upload.total,
                received,
                error,
            });
        }
        let record = self.landed.join(format!("{id}.json"));
        let text = blocking("read landing record", move || match fs::read(record) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await?;
        Ok(text
            .and_then(|t| Statement::from_json(&t))
            .unwrap_or_else(|| Statement::Unknown {
                upload_id: id.to_owned(),
            }))
    }

    /// Discards upload `id`: its partial file and its record.
    pub(crate) async fn discard(&self, id: &str) -> Result<(), Refusal> {
        let key = key_of(Some(id), "");
        let upload = lock(&self.uploads).remove(&key);
        let temp = upload.map_or_else(
            || self.partial.join(format!("{key}.part")),
            |u| u.temp.clone(),
        );
        blocking("discard upload", move || {
            for path in [ranges_path(&temp), temp] {
                match fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        })
        .await
    }

    /// The upload under `key`, from memory or reloaded from disk.
    async fn find(&self, key: &str) -> Result<Option<Arc<Upload>>, Refusal> {
        if let Some(upload) = lock(&self.uploads).get(key).cloned() {
            return Ok(Some(upload));
        }
        let temp = self.partial.join(format!("{key}.part"));
        let loaded = blocking("open partial upload", move || Upload::reopen(temp)).await?;
        Ok(loaded.map(|upload| {
            lock(&self.uploads)
                .entry(key.to_owned())
                .or_insert(Arc::new(upload))
                .clone()
        }))
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
                id: id.map(str::to_owned),
            });
        };
        let key = key_of(id, name);
        let existing = self.find(&key).await?;
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
        let duplicate = lock(&upload.coverage).contains(range.start, range.end);
        Ok(Target::Segment {
            key,
            upload,
            range,
            name: name.to_owned(),
            duplicate,
        })
    }

    /// Records a fully received part; lands the file once all of it is
    /// here. Answers the statement for the client.
    pub(crate) async fn commit(
        &self,
        target: Target,
        name_field: Option<String>,
        crc: Option<u32>,
    ) -> Result<Statement, Refusal> {
        match target {
            Target::Whole { temp, name, id, .. } => {
                let name = name_field.unwrap_or(name);
                let dest = self.dir.join(&name);
                let (size, crc) = blocking("land file", move || {
                    temp.as_file().sync_all()?;
                    let size = temp.as_file().metadata()?.len();
                    let crc = crc_of(temp.as_file())?;
                    temp.persist(&dest).map_err(|e| e.error)?;
                    Ok((size, crc))
                })
                .await
                .map_err(|e| landing_refusal(&name, &e))?;
                sync_dir(&self.dir).await?;
                let statement =
                    Statement::landed(id.as_deref().unwrap_or(""), &name, size, Some(crc));
                if let Some(id) = id {
                    self.keep_landing(&id, &statement).await?;
                }
                Ok(statement)
            }
            Target::Segment {
                key,
                upload,
                range,
                name,
                duplicate,
            } => {
                let complete = if duplicate {
                    upload.is_complete()
                } else {
                    upload.record(range, crc).await?
                };
                let id = key.strip_prefix("id-").unwrap_or("");
                let received = Statement::Received {
                    upload_id: id.to_owned(),
                    start: range.start,
                    end: range.end,
                };
                if !complete || upload.landing.swap(true, Ordering::SeqCst) {
                    return Ok(received);
                }
                let name = name_field.unwrap_or(name);
                let landed = upload.clone().land(self.dir.join(&name), &name).await;
                if let Err(e) = landed {
                    let refusal = landing_refusal(&name, &e);
                    if e.status() == StatusCode::UNPROCESSABLE_ENTITY {
                        lock(&self.uploads).remove(&key);
                    } else {
                        *lock(&upload.landing_error) = Some(refusal.message().to_owned());
                        upload.landing.store(false, Ordering::SeqCst);
                    }
                    return Err(refusal);
                }
                lock(&self.uploads).remove(&key);
                sync_dir(&self.dir).await?;
                let statement = Statement::landed(id, &name, upload.total, upload.landed_crc());
                if !id.is_empty() {
                    self.keep_landing(id, &statement).await?;
                }
                Ok(statement)
            }
        }
    }

    /// Records durably that upload `id` landed, for later status queries.
    async fn keep_landing(&self, id: &str, statement: &Statement) -> Result<(), Refusal> {
        let (dir, path, json) = (
            self.landed.clone(),
            self.landed.join(format!("{id}.json")),
            statement.to_json(),
        );
        blocking("record landing", move || {
            let mut file = File::create(&path)?;
            file.write_all(json.as_bytes())?;
            file.sync_all()?;
            File::open(dir)?.sync_all()
        })
        .await
    }
}

async fn sync_dir(dir: &Path) -> Result<(), Refusal> {
    let dir = dir.to_owned();
    blocking("sync directory", move || File::open(dir)?.sync_all()).await
}

impl Upload {
    /// Reopens an upload a previous run of the receiver began, if its
    /// record says how long it is.
    fn reopen(temp: PathBuf) -> io::Result<Option<Upload>> {
        let text = match fs::read_to_string(ranges_path(&temp)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let total = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("total "))
            .and_then(|t| t.parse().ok());
        match total {
            Some(total) if temp.exists() => Upload::open(temp, total).map(Some),
            _ => Ok(None),
        }
    }

    /// Opens (or creates) the temporary file and reloads the blocks a
    /// previous run of the receiver recorded.
    fn open(temp: PathBuf, total: u64) -> io::Result<Upload> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&temp)?;
        let mut coverage = RangeSet::default();
        let mut blocks = BTreeMap::new();
        let side = ranges_path(&temp);
        if !side.exists() {
            let mut f = File::create(&side)?;
            writeln!(f, "total {total}")?;
            f.sync_all()?;
        }
        if let Ok(text) = fs::read_to_string(side) {
            for line in text.lines() {
                let mut fields = line.split(' ');
                let start = fields.next().and_then(|f| f.parse::<u64>().ok());
                let end = fields.next().and_then(|f| f.parse::<u64>().ok());
                let crc = fields.next().and_then(|c| u32::from_str_radix(c, 16).ok());
                if let (Some(s), Some(e)) = (start, end) {
                    if s < e && e <= total {
                        coverage.insert(s, e);
                        blocks.insert(s, (e, crc));
                    }
                }
            }
        }
        Ok(Upload {
            file: Arc::new(file),
            temp,
            total,
            coverage: Mutex::new(coverage),
            blocks: Mutex::new(blocks),
            landing: AtomicBool::new(false),
            landing_error: Mutex::default(),
        })
    }

    fn is_complete(&self) -> bool {
        lock(&self.coverage).covered() == self.total
    }

    /// The landed file's CRC32C, when every block had one.
    fn landed_crc(&self) -> Option<u32> {
        self.expected_crc()
    }

    /// Records an acknowledged block, on disk first; returns whether the
    /// upload is now complete.
    async fn record(&self, range: ContentRange, crc: Option<u32>) -> Result<bool, Refusal> {
        let (temp, start, end) = (self.temp.clone(), range.start, range.end);
        blocking("record range", move || {
            let mut side = OpenOptions::new()
                .create(true)
                .append(true)
                .open(ranges_path(&temp))?;
            match crc {
                Some(crc) => writeln!(side, "{start} {end} {crc:08x}"),
                None => writeln!(side, "{start} {end}"),
            }
        })
        .await?;
        lock(&self.blocks).insert(start, (end, crc));
        let mut coverage = lock(&self.coverage);
        coverage.insert(start, end);
        Ok(coverage.covered() == self.total)
    }

    /// The whole file's CRC32C as the acknowledged blocks say it must be:
    /// their CRCs combined in order, when every block had one and they tile
    /// the file exactly.
    fn expected_crc(&self) -> Option<u32> {
        let blocks = lock(&self.blocks);
        let mut at = 0;
        let mut crc = 0;
        let mut shift = CrcShift::new(0);
        for (&start, &(end, block_crc)) in blocks.iter() {
            if start != at {
                return None;
            }
            if shift.len() != end - start {
                shift = CrcShift::new(end - start);
            }
            crc = shift.join(crc, block_crc?);
            at = end;
        }
        (at == self.total).then_some(crc)
    }

    /// Checks the stored bytes against the acknowledged blocks and renames
    /// the file into place; discards it (422) if they differ.
    async fn land(self: Arc<Self>, dest: PathBuf, name: &str) -> Result<(), Refusal> {
        let expected = self.expected_crc();
        let verified = blocking("land file", move || {
            self.file.sync_all()?;
            if expected.is_some_and(|crc| crc_of(&self.file).ok() != Some(crc)) {
                fs::remove_file(&self.temp)?;
                fs::remove_file(ranges_path(&self.temp))?;
                return Ok(false);
            }
            fs::rename(&self.temp, &dest)?;
            fs::remove_file(ranges_path(&self.temp))?;
            Ok(true)
        })
        .await?;
        if verified {
            Ok(())
        } else {
            Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{name}: the stored bytes do not match the acknowledged blocks; the upload was discarded"),
            ))
        }
    }
}

/// The CRC32C of a whole file, read from its start in 1 MiB pieces.
fn crc_of(file: &File) -> io::Result<u32> {
    let mut file = file.try_clone()?;
    file.seek(io::SeekFrom::Start(0))?;
    let mut crc = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(crc),
            n => crc = crc32c::crc32c_append(crc, &buf[..n]),
        }
    }
}

impl Target {
    /// Where the part's bytes go: a file and an offset, or nowhere for a
    /// range already received.
    fn destination(&self) -> Option<(Arc<File>, u64)> {
        match self {
            Target::Segment {
                duplicate: true, ..
            } => None,
            Target::Segment { upload, range, .. } => Some((upload.file.clone(), range.start)),
            Target::Whole { file, .. } => Some((file.clone(), 0)),
        }
    }

    /// Writes a part's bytes at their offset, in batches; refuses a part
    /// longer than `max` before writing past it. Returns the part's length
    /// and CRC32C.
    pub(crate) async fn write_part(
        &self,
        field: &mut multer::Field<'_>,
        max: u64,
        whole: bool,
    ) -> Result<(u64, u32), Refusal> {
        let destination = self.destination();
        let mut crc = 0;
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
                crc = crc32c::crc32c_append(crc, &chunk);
                batched += chunk.len();
                batch.push(chunk);
            }
            if batched >= WRITE_BATCH || (end && batched > 0) {
                let chunks = std::mem::take(&mut batch);
                if let Some((file, start)) = &destination {
                    let (file, offset) = (file.clone(), start + written);
                    blocking("write block", move || write_all_at(&file, &chunks, offset)).await?;
                }
                written += batched as u64;
                batched = 0;
            }
            if end {
                return Ok((written, crc));
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
