//! Partial and landed files on disk, with their records in [`State`]. All
//! file I/O runs on the blocking pool.
//!
//! - A block is written only where the upload has no acknowledged bytes;
//!   where it overlaps acknowledged bytes it is compared with them, and a
//!   difference refuses it (409). Two requests never write the same range
//!   at once: each reserves its range first (a second gets 503).
//! - A block is acknowledged once verified (length, CRC32C) and durable:
//!   its bytes synced and its record committed.
//! - Files are opened per request, not held per upload.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fileuploader_wire::{ContentRange, CrcShift, RangeSet, Statement};
use http::StatusCode;

use crate::state::{Change, Record, State};
use crate::{partial_dir, too_large, Refusal};

/// Bytes gathered before one positional write.
const WRITE_BATCH: usize = 256 * 1024;

/// What one request may do, as the receiver's settings and its
/// credentials say.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allowance<'a> {
    /// Who asks; an upload answers only to who began it.
    pub(crate) owner: &'a str,
    pub(crate) policy: OnConflict,
    /// The most bytes partial uploads may hold together.
    pub(crate) quota: Option<u64>,
}

/// What landing does when a file of the same name is there already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnConflict {
    /// Refuse the upload with 409, before its first byte is stored when
    /// the name is taken already (the default).
    #[default]
    Refuse,
    /// Replace the existing file.
    Overwrite,
    /// Land under the first free name of `name (1).ext`, `name (2).ext`, …
    Rename,
}

#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    partial: PathBuf,
    state: Arc<State>,
    uploads: Mutex<HashMap<String, Arc<Upload>>>,
}

/// An upload arriving in blocks: what is acknowledged (a cache of its
/// records) and what is being written now.
#[derive(Debug)]
pub(crate) struct Upload {
    id: String,
    temp: PathBuf,
    total: u64,
    name: String,
    owner: String,
    ranges: Mutex<Ranges>,
    /// Set while the upload is being landed.
    landing: AtomicBool,
    landing_error: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct Ranges {
    acked: RangeSet,
    /// Each acknowledged block: start → (end, CRC32C if it had one).
    blocks: BTreeMap<u64, (u64, Option<u32>)>,
    /// Ranges requests are writing now.
    writing: RangeSet,
}

/// Where one request's file part goes.
#[derive(Debug)]
pub(crate) enum Target {
    Segment {
        upload: Arc<Upload>,
        range: ContentRange,
        /// The parts of `range` acknowledged already: compared, not written.
        acked: RangeSet,
        /// Held until the request is done, however it ends.
        reserved: Reservation,
    },
    Whole {
        temp: tempfile::NamedTempFile,
        name: String,
        id: Option<String>,
    },
}

/// A range of an upload one request is writing; released when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    upload: Arc<Upload>,
    range: ContentRange,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock(&self.upload.ranges)
            .writing
            .remove(self.range.start, self.range.end);
    }
}

/// What a written part came to.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) len: u64,
    pub(crate) crc: u32,
    /// Whether it differed from acknowledged bytes it overlaps.
    pub(crate) differs: bool,
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

async fn recorded(change: Change, state: &Arc<State>) -> Result<(), Refusal> {
    state
        .apply(change)
        .await
        .map_err(|e| Refusal::internal("record", e))
}

fn taken(name: &str) -> Refusal {
    Refusal::new(
        StatusCode::CONFLICT,
        format!("a file named {name} is in the receiver's directory already"),
    )
}

impl Store {
    pub(crate) fn new(dir: &Path) -> io::Result<Self> {
        let partial = partial_dir(dir);
        fs::create_dir_all(&partial)?;
        let state_dir = dir.join(".fileuploader-state");
        fs::create_dir_all(&state_dir)?;
        let state = Arc::new(State::open(&state_dir.join("uploads.sqlite"))?);
        let store = Store {
            dir: dir.to_owned(),
            partial,
            state,
            uploads: Mutex::default(),
        };
        store.clean_leftovers()?;
        Ok(store)
    }

    /// Discards every upload untouched for `ttl`; returns how many.
    pub(crate) async fn expire(&self, ttl: std::time::Duration) -> Result<usize, Refusal> {
        let before = crate::state::now_ms() - ttl.as_millis() as i64;
        let state = self.state.clone();
        let stale = blocking("read records", move || {
            state.untouched_since(before).map_err(io::Error::other)
        })
        .await?;
        for id in &stale {
            self.discard(id).await?;
        }
        Ok(stale.len())
    }

    /// Removes partial files no record owns: what a crash left behind.
    fn clean_leftovers(&self) -> io::Result<()> {
        let known = self.state.uploads().map_err(io::Error::other)?;
        for entry in fs::read_dir(&self.partial)? {
            let path = entry?.path();
            let owned = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix("id-"))
                .is_some_and(|id| known.iter().any(|k| k == id));
            if !owned {
                fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn temp_of(&self, id: &str) -> PathBuf {
        self.partial.join(format!("id-{id}.part"))
    }

    /// Which ranges of upload `id` are here, if it is in progress.
    pub(crate) async fn status(&self, id: &str) -> Result<Option<(u64, RangeSet)>, Refusal> {
        let upload = self.find(id).await?;
        Ok(upload.map(|u| (u.total, lock(&u.ranges).acked.clone())))
    }

    /// Upload `id` in progress, if `owner` began it: to anyone else it does
    /// not exist.
    async fn find_owned(&self, id: &str, owner: &str) -> Result<Option<Arc<Upload>>, Refusal> {
        Ok(self.find(id).await?.filter(|u| u.owner == owner))
    }

    /// What the receiver can say of upload `id` to `owner`.
    pub(crate) async fn statement(&self, id: &str, owner: &str) -> Result<Statement, Refusal> {
        if let Some(upload) = self.find_owned(id, owner).await? {
            return Ok(Statement::Partial {
                upload_id: id.to_owned(),
                total: upload.total,
                received: lock(&upload.ranges).acked.ranges().to_vec(),
                error: lock(&upload.landing_error).clone(),
            });
        }
        let (state, key) = (self.state.clone(), id.to_owned());
        let landed = blocking("read records", move || {
            state.landed(&key).map_err(io::Error::other)
        })
        .await?;
        Ok(landed.unwrap_or_else(|| Statement::Unknown {
            upload_id: id.to_owned(),
        }))
    }

    /// Discards upload `id` for `owner`: its partial file and its records.
    pub(crate) async fn discard_owned(&self, id: &str, owner: &str) -> Result<(), Refusal> {
        if self.find_owned(id, owner).await?.is_none() {
            return Ok(());
        }
        self.discard(id).await
    }

    /// Discards upload `id`: its partial file and its records.
    async fn discard(&self, id: &str) -> Result<(), Refusal> {
        lock(&self.uploads).remove(id);
        recorded(Change::Discard { id: id.to_owned() }, &self.state).await?;
        let temp = self.temp_of(id);
        blocking("discard upload", move || match fs::remove_file(temp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }

    /// Upload `id` in progress, from memory or from its records.
    async fn find(&self, id: &str) -> Result<Option<Arc<Upload>>, Refusal> {
        if let Some(upload) = lock(&self.uploads).get(id).cloned() {
            return Ok(Some(upload));
        }
        let (state, key) = (self.state.clone(), id.to_owned());
        let record = blocking("read records", move || {
            state.record(&key).map_err(io::Error::other)
        })
        .await?;
        Ok(record.map(|r| self.cache(id, r)))
    }

    fn cache(&self, id: &str, record: Record) -> Arc<Upload> {
        let mut ranges = Ranges::default();
        for (start, end, crc) in record.blocks {
            ranges.acked.insert(start, end);
            ranges.blocks.insert(start, (end, crc));
        }
        let upload = Upload {
            id: id.to_owned(),
            temp: self.temp_of(id),
            total: record.total,
            name: record.name,
            owner: record.owner,
            ranges: Mutex::new(ranges),
            landing: AtomicBool::new(false),
            landing_error: Mutex::new(record.landing_error),
        };
        lock(&self.uploads)
            .entry(id.to_owned())
            .or_insert(Arc::new(upload))
            .clone()
    }

    /// The target for a request's file part: its range of an upload (found
    /// or begun, the range reserved), or a fresh whole file.
    pub(crate) async fn open(
        &self,
        id: Option<&str>,
        name: &str,
        range: Option<ContentRange>,
        allowance: Allowance<'_>,
    ) -> Result<Target, Refusal> {
        let Some(range) = range else {
            if allowance.policy == OnConflict::Refuse && self.dir.join(name).exists() {
                return Err(taken(name));
            }
            let partial = self.partial.clone();
            let temp = blocking("create temporary file", move || {
                tempfile::Builder::new()
                    .prefix("whole-")
                    .tempfile_in(partial)
            })
            .await?;
            return Ok(Target::Whole {
                temp,
                name: name.to_owned(),
                id: id.map(str::to_owned),
            });
        };
        let id = id.ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "an upload in blocks needs an X-Upload-Id, so it cannot meet another client's",
            )
        })?;
        let upload = match self.find(id).await? {
            Some(upload) if upload.owner == allowance.owner => upload,
            Some(_) => {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "this upload id belongs to other credentials",
                ))
            }
            None => self.begin(id, name, range.total, allowance).await?,
        };
        if upload.total != range.total {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                format!(
                    "upload {id} is {} bytes long, this block says {}",
                    upload.total, range.total
                ),
            ));
        }
        let acked = {
            let mut ranges = lock(&upload.ranges);
            let mut writing = RangeSet::default();
            writing.insert(range.start, range.end);
            for &(s, e) in ranges.writing.ranges() {
                writing.remove(s, e);
            }
            if writing.covered() != range.len() {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "another request is writing this range of the upload; try again",
                ));
            }
            ranges.writing.insert(range.start, range.end);
            let mut acked = RangeSet::default();
            for &(s, e) in ranges.acked.ranges() {
                let (s, e) = (s.max(range.start), e.min(range.end));
                acked.insert(s, e);
            }
            acked
        };
        Ok(Target::Segment {
            reserved: Reservation {
                upload: upload.clone(),
                range,
            },
            upload,
            range,
            acked,
        })
    }

    /// Begins upload `id`: its partial file (durably created) and its record.
    async fn begin(
        &self,
        id: &str,
        name: &str,
        total: u64,
        allowance: Allowance<'_>,
    ) -> Result<Arc<Upload>, Refusal> {
        if allowance.policy == OnConflict::Refuse && self.dir.join(name).exists() {
            return Err(taken(name));
        }
        if let Some(quota) = allowance.quota {
            let state = self.state.clone();
            let held = blocking("read records", move || {
                state.bytes_held().map_err(io::Error::other)
            })
            .await?;
            if held.saturating_add(total) > quota {
                return Err(Refusal::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!(
                        "partial uploads hold {held} of the receiver's {quota} bytes; this one needs {total}"
                    ),
                ));
            }
        }
        let (temp, partial) = (self.temp_of(id), self.partial.clone());
        blocking("create partial file", move || {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&temp)?;
            File::open(partial)?.sync_all()
        })
        .await?;
        let change = Change::Begin {
            id: id.to_owned(),
            total,
            name: name.to_owned(),
            owner: allowance.owner.to_owned(),
        };
        recorded(change, &self.state).await?;
        let record = Record {
            total,
            name: name.to_owned(),
            owner: allowance.owner.to_owned(),
            landing_error: None,
            blocks: Vec::new(),
        };
        Ok(self.cache(id, record))
    }

    /// Acknowledges a verified part, durably, and lands the file once all
    /// of it is here. Answers the statement for the client.
    pub(crate) async fn commit(
        &self,
        target: Target,
        name_field: Option<String>,
        crc: Option<u32>,
        policy: OnConflict,
    ) -> Result<Statement, Refusal> {
        match target {
            Target::Whole { temp, name, id } => {
                let name = name_field.unwrap_or(name);
                let dir = self.dir.clone();
                let (landed_as, size, crc) = blocking("land file", move || {
                    temp.as_file().sync_all()?;
                    let size = temp.as_file().metadata()?.len();
                    let crc = crc_of(temp.as_file())?;
                    let path = temp.into_temp_path();
                    let landed_as = place(&path, &dir, &name, policy)?;
                    Ok((landed_as, size, crc))
                })
                .await
                .map_err(|e| landing_refusal(&e))?;
                let statement =
                    Statement::landed(id.as_deref().unwrap_or(""), &landed_as, size, Some(crc));
                if let Some(id) = id {
                    let change = Change::Landed {
                        id,
                        statement: statement.clone(),
                    };
                    recorded(change, &self.state).await?;
                }
                Ok(statement)
            }
            Target::Segment {
                upload,
                range,
                reserved,
                ..
            } => {
                let complete = self.acknowledge(&upload, range, crc).await?;
                drop(reserved);
                let received = Statement::Received {
                    upload_id: upload.id.clone(),
                    start: range.start,
                    end: range.end,
                };
                if !complete || upload.landing.swap(true, Ordering::SeqCst) {
                    return Ok(received);
                }
                let landed = self.land(&upload, name_field, policy).await;
                upload.landing.store(false, Ordering::SeqCst);
                landed
            }
        }
    }

    /// Records a block durably unless it was acknowledged before; returns
    /// whether the upload is now complete.
    async fn acknowledge(
        &self,
        upload: &Arc<Upload>,
        range: ContentRange,
        crc: Option<u32>,
    ) -> Result<bool, Refusal> {
        let known = lock(&upload.ranges).acked.contains(range.start, range.end);
        if !known {
            let change = Change::Ack {
                id: upload.id.clone(),
                start: range.start,
                end: range.end,
                crc,
                file: upload.temp.clone(),
            };
            recorded(change, &self.state).await?;
            let mut ranges = lock(&upload.ranges);
            ranges.acked.insert(range.start, range.end);
            ranges.blocks.insert(range.start, (range.end, crc));
        }
        Ok(lock(&upload.ranges).acked.covered() == upload.total)
    }

    /// Checks a complete upload against its blocks and puts it in place.
    async fn land(
        &self,
        upload: &Arc<Upload>,
        name_field: Option<String>,
        policy: OnConflict,
    ) -> Result<Statement, Refusal> {
        let expected = upload.expected_crc();
        let name = name_field.unwrap_or_else(|| upload.name.clone());
        let (temp, dir, total) = (upload.temp.clone(), self.dir.clone(), upload.total);
        let placed = blocking("land file", move || {
            let file = File::open(&temp)?;
            file.sync_all()?;
            if file.metadata()?.len() != total
                || expected.is_some_and(|crc| crc_of(&file).ok() != Some(crc))
            {
                return Ok(None);
            }
            place(&temp, &dir, &name, policy).map(Some)
        })
        .await;
        match placed {
            Ok(Some(landed_as)) => {
                let statement =
                    Statement::landed(&upload.id, &landed_as, upload.total, upload.expected_crc());
                let change = Change::Landed {
                    id: upload.id.clone(),
                    statement: statement.clone(),
                };
                recorded(change, &self.state).await?;
                lock(&self.uploads).remove(&upload.id);
                Ok(statement)
            }
            Ok(None) => {
                self.discard(&upload.id).await?;
                Err(Refusal::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("{}: the stored bytes do not match the acknowledged blocks; the upload was discarded", upload.name),
                ))
            }
            Err(e) => {
                let refusal = landing_refusal(&e);
                *lock(&upload.landing_error) = Some(refusal.message().to_owned());
                let change = Change::LandingError {
                    id: upload.id.clone(),
                    error: Some(refusal.message().to_owned()),
                };
                recorded(change, &self.state).await?;
                Err(refusal)
            }
        }
    }
}

/// Why a landing failed, as a refusal: 409 when the name is taken, the
/// cause's status otherwise.
fn landing_refusal(e: &Refusal) -> Refusal {
    let conflict = ["Is a directory", "File exists", "Directory not empty"]
        .iter()
        .any(|m| e.message().contains(m));
    let status = if conflict {
        StatusCode::CONFLICT
    } else {
        e.status()
    };
    Refusal::new(status, format!("cannot land the file: {}", e.message()))
}

/// Puts the finished `temp` in `dir` as `name`, by `policy`, durably;
/// returns the name it landed under.
fn place(temp: &Path, dir: &Path, name: &str, policy: OnConflict) -> io::Result<String> {
    let landed_as = match policy {
        OnConflict::Overwrite => {
            fs::rename(temp, dir.join(name))?;
            name.to_owned()
        }
        OnConflict::Refuse => {
            // A hard link never replaces: it fails if the name is taken.
            fs::hard_link(temp, dir.join(name))?;
            fs::remove_file(temp)?;
            name.to_owned()
        }
        OnConflict::Rename => {
            let (stem, ext) = match name.rsplit_once('.') {
                Some((s, e)) if !s.is_empty() => (s, format!(".{e}")),
                _ => (name, String::new()),
            };
            let mut landed = None;
            for n in 0..10_000 {
                let candidate = match n {
                    0 => name.to_owned(),
                    n => format!("{stem} ({n}){ext}"),
                };
                match fs::hard_link(temp, dir.join(&candidate)) {
                    Ok(()) => {
                        landed = Some(candidate);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            let landed = landed.ok_or_else(|| io::Error::other("no free name"))?;
            fs::remove_file(temp)?;
            landed
        }
    };
    File::open(dir)?.sync_all()?;
    Ok(landed_as)
}

impl Upload {
    /// The whole file's CRC32C as the acknowledged blocks say it must be:
    /// their CRCs combined in order, when every block had one and they tile
    /// the file exactly.
    fn expected_crc(&self) -> Option<u32> {
        let ranges = lock(&self.ranges);
        let mut at = 0;
        let mut crc = 0;
        let mut shift = CrcShift::new(0);
        for (&start, &(end, block_crc)) in ranges.blocks.iter() {
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
}

/// The CRC32C of a whole file, read from its start in 1 MiB pieces.
fn crc_of(file: &File) -> io::Result<u32> {
    let mut crc = 0;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    loop {
        match file.read_at(&mut buf, at)? {
            0 => return Ok(crc),
            n => {
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                at += n as u64;
            }
        }
    }
}

impl Target {
    /// The file the part's bytes go into, and where the part starts.
    fn destination(&self) -> io::Result<(File, u64)> {
        match self {
            Target::Segment { upload, range, .. } => Ok((
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&upload.temp)?,
                range.start,
            )),
            Target::Whole { temp, .. } => Ok((temp.as_file().try_clone()?, 0)),
        }
    }

    /// Writes a part's bytes at their offset, in batches, comparing rather
    /// than writing where they overlap acknowledged bytes; refuses a part
    /// longer than `max` before writing past it.
    pub(crate) async fn write_part(
        &self,
        field: &mut multer::Field<'_>,
        max: u64,
        whole: bool,
    ) -> Result<Written, Refusal> {
        let (file, start) = self
            .destination()
            .map_err(|e| Refusal::internal("open partial file", e))?;
        let file = Arc::new(file);
        let acked = match self {
            Target::Segment { acked, .. } => acked.clone(),
            Target::Whole { .. } => RangeSet::default(),
        };
        let mut written = Written {
            len: 0,
            crc: 0,
            differs: false,
        };
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0usize;
        loop {
            let chunk = field.chunk().await.map_err(crate::malformed)?;
            let end = chunk.is_none();
            if let Some(chunk) = chunk {
                if written.len + batched as u64 + chunk.len() as u64 > max {
                    return Err(if whole {
                        too_large(max)
                    } else {
                        Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "file part is longer than its Content-Range",
                        )
                    });
                }
                written.crc = crc32c::crc32c_append(written.crc, &chunk);
                batched += chunk.len();
                batch.push(chunk);
            }
            if batched >= WRITE_BATCH || (end && batched > 0) {
                let chunks = std::mem::take(&mut batch);
                let (file, at, acked) = (file.clone(), start + written.len, acked.clone());
                let same = blocking("write block", move || {
                    write_or_compare(&file, &chunks, at, &acked)
                })
                .await?;
                written.differs |= !same;
                written.len += batched as u64;
                batched = 0;
            }
            if end {
                return Ok(written);
            }
        }
    }
}

/// Writes `chunks` at `offset`, except where `acked` says the bytes are
/// acknowledged: there it compares. Returns whether those were the same.
fn write_or_compare(
    file: &File,
    chunks: &[Bytes],
    mut offset: u64,
    acked: &RangeSet,
) -> io::Result<bool> {
    let mut same = true;
    for chunk in chunks {
        let mut done = 0usize;
        while done < chunk.len() {
            let at = offset + done as u64;
            let left = (chunk.len() - done) as u64;
            // The stretch from `at` that is wholly acknowledged or wholly not.
            let next_edge = acked
                .ranges()
                .iter()
                .flat_map(|&(s, e)| [s, e])
                .find(|&edge| edge > at)
                .unwrap_or(u64::MAX);
            let n = left.min(next_edge - at) as usize;
            let piece = &chunk[done..done + n];
            if acked.contains(at, at + n as u64) {
                let mut stored = vec![0u8; n];
                file.read_exact_at(&mut stored, at)?;
                same &= stored == piece;
            } else {
                file.write_all_at(piece, at)?;
            }
            done += n;
        }
        offset += chunk.len() as u64;
    }
    Ok(same)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_acknowledged_bytes_are_compared_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"0123456789").unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut acked = RangeSet::default();
        acked.insert(2, 4);
        acked.insert(6, 8);
        let same = write_or_compare(&file, &[Bytes::from_static(b"ab23cd")], 0, &acked).unwrap();
        assert!(same);
        assert_eq!(fs::read(&path).unwrap(), b"ab23cd6789");
        let differs = write_or_compare(
            &file,
            &[Bytes::from_static(b"xy"), Bytes::from_static(b"XYZ")],
            4,
            &acked,
        )
        .unwrap();
        assert!(!differs, "6 and 7 differ from what was acknowledged");
        assert_eq!(
            fs::read(&path).unwrap(),
            b"ab23xy67Z9",
            "acknowledged bytes untouched, the gap written"
        );
    }
}
