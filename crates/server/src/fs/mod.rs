//! The embedded store: partial and landed files in one directory, upload
//! records in SQLite beside them. All file I/O runs on the blocking pool.
//!
//! - Any number of receiver processes may share the directory. Records are
//!   read from SQLite per request (each process caches an upload's blocks
//!   and reads only those acknowledged since); a writer reserves its range
//!   of the partial file with an open-file-description lock (`F_OFD_SETLK`),
//!   which every process sees and the kernel releases when the writer ends
//!   or its process dies; landing takes the whole file's lock, so it waits
//!   (a few seconds at most, then 503) for writers in flight and none
//!   starts until it is done. Expiry and the sweep of orphaned files leave
//!   alone a file a writer holds any of: an upload is in use while its
//!   bytes arrive, however slowly.
//! - A block is written only where the upload has no acknowledged bytes;
//!   where it overlaps acknowledged bytes it is compared with them.
//! - A block is acknowledged once its bytes are synced and its record
//!   committed (see `state`).
//! - Files are opened per request, not held per upload.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use fileuploader_wire::sync::lock;
use fileuploader_wire::{ContentRange, RangeSet};

mod state;

use self::state::{now_ms, Change, State};
use fileuploader_store::{
    BlockWriter, ErrorKind, Event, Landed, NewUpload, OnConflict, Quota, Store, StoreError, Upload,
    WholeWriter, WriteBytes,
};

/// Bytes gathered before one positional write.
const WRITE_BATCH: usize = 128 * 1024;
/// How long landing tries to take a file that requests still write.
const LAND_WAIT: Duration = Duration::from_secs(5);
/// How often it tries.
const LAND_RETRY: Duration = Duration::from_millis(50);
/// How old a partial file with no record must be before expiry removes it:
/// a process beginning an upload records it first and creates its file
/// just after.
const ORPHAN_AGE: Duration = Duration::from_secs(60);

/// Uploads kept in a directory: landed files in it, partial ones in
/// `.fileuploader-partial/`, records in `.fileuploader-state/`. Any number
/// of receivers, in any number of processes, may share one directory.
#[derive(Debug, Clone)]
pub struct FsStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    partial: PathBuf,
    state: State,
    /// Whether each landing leaves an event in the outbox.
    events: AtomicBool,
    /// Whether each landing's bytes are digested with SHA-256.
    digests: AtomicBool,
    /// This process as a deliverer of events: its name, and the file it
    /// holds locked while it lives.
    deliverer: std::sync::OnceLock<(String, File)>,
    /// Events this process told while a full disk kept it from recording
    /// so: not told again by it, and recorded once there is room.
    told_unrecorded: std::sync::Mutex<HashSet<String>>,
}

/// Runs file work on the blocking pool; a full disk is [`ErrorKind::Full`].
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(io_refusal(what, &e)),
        Err(e) => Err(StoreError::io(what, e)),
    }
}

pub(super) fn io_refusal(what: &str, e: &io::Error) -> StoreError {
    if let Some(others) = e
        .get_ref()
        .and_then(|e| e.downcast_ref::<state::OthersId>())
    {
        return StoreError::new(ErrorKind::Forbidden, others.to_string());
    }
    if e.kind() == io::ErrorKind::QuotaExceeded {
        return StoreError::new(ErrorKind::Full, e.to_string());
    }
    if e.kind() == io::ErrorKind::StorageFull {
        StoreError::new(ErrorKind::Full, format!("{what}: disk full"))
    } else {
        StoreError::io(what, e)
    }
}

/// Takes a write lock on `len` bytes of `file` from `start` (`len` 0: all
/// of it), shared with every process, without waiting: `Ok(false)` says
/// another holds part of it.
fn lock_range(file: &File, start: u64, len: u64) -> io::Result<bool> {
    // SAFETY: `flock` is plain data; every field fcntl reads is set below.
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = libc::F_WRLCK as _;
    range.l_whence = libc::SEEK_SET as _;
    range.l_start = start as libc::off_t;
    range.l_len = len as libc::off_t;
    loop {
        // SAFETY: a valid descriptor and a pointer to an initialised flock.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &range) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN | libc::EACCES) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Whether a writer (of any process) holds part of the file at `path`.
fn in_use(path: &Path) -> io::Result<bool> {
    match OpenOptions::new().write(true).open(path) {
        Ok(file) => Ok(!lock_range(&file, 0, 0)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

impl FsStore {
    /// A store in `dir` (created if missing), with what a crash left there
    /// cleaned up.
    ///
    /// # Errors
    ///
    /// When the directories or the records cannot be created or read.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref();
        let partial = crate::partial_dir(dir);
        fs::create_dir_all(&partial)?;
        let state_dir = dir.join(".fileuploader-state");
        fs::create_dir_all(&state_dir)?;
        let state = State::open(&state_dir.join("uploads.sqlite"))?;
        let inner = Inner {
            dir: dir.to_owned(),
            partial,
            state,
            events: AtomicBool::new(false),
            digests: AtomicBool::new(false),
            deliverer: std::sync::OnceLock::new(),
            told_unrecorded: std::sync::Mutex::default(),
        };
        inner.clean_leftovers(Duration::ZERO)?;
        Ok(FsStore {
            inner: Arc::new(inner),
        })
    }

    /// The directory files land in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Runs `f` on the blocking pool with the store.
    async fn with<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Inner) -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        blocking(what, move || f(&inner)).await
    }
}

impl Inner {
    /// Takes the file placed as `landed_as` out of the directory again
    /// unless its landing was `recorded`: a landing is what the record
    /// says (a full disk, say, failed the record), so no file stands there
    /// that the receiver, its status queries and its hooks do not know.
    /// An upload in blocks keeps its bytes in its partial file and lands
    /// when asked again.
    fn unplace_unless(&self, recorded: &io::Result<()>, landed_as: &str) {
        if recorded.is_err() {
            if let Err(e) = fs::remove_file(self.dir.join(landed_as)) {
                tracing::error!(
                    "cannot take back {landed_as:?}, whose landing was not recorded: {e}"
                );
            }
        }
    }

    /// The key of the event a landing of upload `id` leaves, when the
    /// store keeps events: the id, or a key of its own for a file sent
    /// whole without one.
    fn event_key(&self, id: &str) -> Option<String> {
        if !self.events.load(Ordering::Relaxed) {
            return None;
        }
        Some(match id {
            "" => format!("whole-{:032x}", rand::random::<u128>()),
            id => id.to_owned(),
        })
    }

    fn temp_of(&self, id: &str) -> PathBuf {
        self.partial.join(format!("id-{id}.part"))
    }

    /// Upload `id` as recorded now.
    fn read(&self, id: &str) -> io::Result<Option<Upload>> {
        self.state.upload(id)
    }

    /// Reserves `range` of upload `id`'s partial file for one writer, and
    /// reads the upload under that reservation: no other writer can change
    /// the range now, and a landing either finished before or waits.
    fn reserve(&self, id: &str, range: ContentRange) -> Result<Held, StoreError> {
        let refused = |e: io::Error| io_refusal("open partial file", &e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.temp_of(id))
            .map_err(refused)?;
        if !range.is_empty() && !lock_range(&file, range.start, range.len()).map_err(refused)? {
            return Err(StoreError::new(
                ErrorKind::Busy,
                "another request is writing this range of the upload; try again",
            ));
        }
        match self.read(id).map_err(refused)? {
            Some(upload) => {
                let mut acked = RangeSet::default();
                for &(s, e) in upload.received.ranges() {
                    acked.insert(s.max(range.start), e.min(range.end));
                }
                Ok(Held {
                    file,
                    id: id.to_owned(),
                    acked,
                })
            }
            None => Err(StoreError::new(
                ErrorKind::Conflict,
                format!("upload {id} ended while this block came"),
            )),
        }
    }

    /// Removes partial files no record owns and older than `min_age`.
    fn clean_leftovers(&self, min_age: Duration) -> io::Result<()> {
        let known = self.state.uploads()?;
        for entry in fs::read_dir(&self.partial)? {
            let entry = entry?;
            let owned = entry
                .file_name()
                .to_str()
                .and_then(|s| s.strip_prefix("id-")?.strip_suffix(".part"))
                .is_some_and(|id| known.iter().any(|k| k == id));
            let age = entry
                .metadata()?
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            if !owned && age >= min_age && !in_use(&entry.path())? {
                remove_if_there(&entry.path())?;
            }
        }
        // A whole file's charge whose file is gone (its writer crashed,
        // and the sweep took the file) goes too.
        for key in self.state.reservations()? {
            if !self.partial.join(&key).try_exists()? {
                self.state.apply(Change::Release { key })?;
            }
        }
        Ok(())
    }

    fn discard(&self, id: &str) -> io::Result<()> {
        // The bytes go first: on a full disk the record of the discard
        // cannot be written until they have made room (a discard that
        // fails there is tried again by the next expiry pass).
        remove_if_there(&self.temp_of(id))?;
        self.state.apply(Change::Discard { id: id.to_owned() })?;
        self.state.forget(id);
        Ok(())
    }

    /// This process's name as a deliverer of events, and those of the
    /// deliverers that ended (their lock file no process holds, now
    /// removed): their claims are free to take. Each deliverer holds a
    /// lock on `.fileuploader-state/deliverers/NAME` while it lives.
    fn deliverers(&self) -> io::Result<(String, Vec<String>)> {
        let folder = self.dir.join(".fileuploader-state/deliverers");
        let me = match self.deliverer.get() {
            Some((me, _)) => me.clone(),
            None => {
                fs::create_dir_all(&folder)?;
                let me = format!("{:032x}", rand::random::<u128>());
                let file = File::create(folder.join(&me))?;
                lock_range(&file, 0, 0)?;
                let _ = self.deliverer.set((me, file));
                self.deliverer
                    .get()
                    .map(|(me, _)| me.clone())
                    .unwrap_or_default()
            }
        };
        let mut dead = Vec::new();
        for entry in fs::read_dir(&folder)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != me && !in_use(&entry.path())? {
                remove_if_there(&entry.path())?;
                dead.push(name);
            }
        }
        Ok((me, dead))
    }

    /// Refuses to land under `id` when credentials other than `owner` hold
    /// it, landed or in progress: checked before the file is placed, so
    /// that nothing in the directory is replaced for a landing its record
    /// would refuse (the record's commit checks again, for landings at the
    /// same moment).
    fn not_anothers(&self, id: &str, owner: &str) -> io::Result<()> {
        if id.is_empty() {
            return Ok(());
        }
        let landed = self.state.landed(id)?.map(|l| l.owner);
        let in_progress = self.read(id)?.map(|u| u.begun.owner);
        if landed.into_iter().chain(in_progress).any(|o| o != owner) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                state::OthersId(StoreError::others_id(id).message().to_owned()),
            ));
        }
        Ok(())
    }

    /// Lands upload `id` under the whole file's lock.
    fn land_fenced(&self, id: &str, name: &str, policy: OnConflict) -> io::Result<Landing> {
        let temp = self.temp_of(id);
        let file = match OpenOptions::new().read(true).write(true).open(&temp) {
            Ok(file) => file,
            // An empty upload's partial file is made after its record, and
            // no block makes it: a process stopped in between leaves an
            // empty upload whose file is the empty file.
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.empty_in_progress(id)? => {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&temp)?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.gone(id),
            Err(e) => return Err(e),
        };
        if !lock_range(&file, 0, 0)? {
            return Ok(Landing::Busy);
        }
        // Whoever held the lock before may have landed or discarded it.
        let Some(upload) = self.read(id)? else {
            return self.gone(id);
        };
        let expected = upload.expected_crc32c();
        file.sync_all()?;
        let total = upload.begun.total;
        let sha = self.digests.load(Ordering::Relaxed);
        let digests = match (expected, sha) {
            (None, false) => None,
            _ => Some(digests_of(&file, sha)?),
        };
        if !upload.complete()
            || file.metadata()?.len() != total
            || expected.is_some_and(|crc| digests.map(|(read, _)| read) != Some(crc))
        {
            self.discard(id)?;
            return Ok(Landing::Mismatch);
        }
        self.not_anothers(id, &upload.begun.owner)?;
        match place(&temp, &self.dir, name, policy) {
            Ok(landed_as) => {
                let landed = Landed::new(id, &upload.begun.owner, &landed_as, total, expected)
                    .with_metadata(upload.begun.metadata.clone())
                    .with_sha256(digests.and_then(|(_, sha256)| sha256));
                let recorded = self.state.apply(Change::Landed {
                    landed: landed.clone(),
                    event: self.event_key(id),
                });
                self.unplace_unless(&recorded, &landed_as);
                recorded?;
                self.state.forget(id);
                remove_if_there(&temp)?;
                Ok(Landing::Landed(landed))
            }
            Err(e) => {
                let refusal = landing_refusal(name, &e);
                let change = Change::LandingError {
                    id: id.to_owned(),
                    error: Some(refusal.message().to_owned()),
                };
                self.state.apply(change)?;
                Ok(Landing::Failed(refusal))
            }
        }
    }

    /// Whether upload `id` is in progress with no bytes to come.
    fn empty_in_progress(&self, id: &str) -> io::Result<bool> {
        Ok(self.read(id)?.is_some_and(|u| u.begun.total == 0))
    }

    /// What landing says of an upload no longer in progress.
    fn gone(&self, id: &str) -> io::Result<Landing> {
        Ok(match self.state.landed(id)? {
            Some(landed) => Landing::Landed(landed),
            None => Landing::Failed(StoreError::new(
                ErrorKind::NotFound,
                format!("upload {id} is not in progress"),
            )),
        })
    }
}

enum Landing {
    Landed(Landed),
    Failed(StoreError),
    Mismatch,
    /// A request still holds part of the file.
    Busy,
}

#[async_trait]
impl Store for FsStore {
    async fn upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        let id = id.to_owned();
        self.with("read records", move |s| s.read(&id)).await
    }

    async fn begin(&self, new: NewUpload, quota: Quota) -> Result<Upload, StoreError> {
        let id = new.id.clone();
        self.with("begin upload", move |s| {
            // Recorded first: a partial file is never without its record
            // for long, so other processes' clean-ups leave it alone.
            s.state.apply(Change::Begin(new, quota))?;
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(s.temp_of(&id))?;
            File::open(&s.partial)?.sync_all()?;
            s.read(&id)?
                .ok_or_else(|| io::Error::other("the upload was discarded as it began"))
        })
        .await
    }

    async fn write_block(
        &self,
        upload: &Upload,
        range: ContentRange,
        _sized: bool,
    ) -> Result<Box<dyn BlockWriter>, StoreError> {
        Ok(Box::new(FsBlock {
            store: self.clone(),
            reservation: Reservation::start(self.clone(), upload.begun.id.clone(), range),
            range,
            written: 0,
            batch: Batch::default(),
            same: true,
        }))
    }

    async fn concatenate(
        &self,
        new: NewUpload,
        parts: &[Upload],
        quota: Quota,
    ) -> Result<Upload, StoreError> {
        let parts = parts.to_vec();
        self.with("concatenate uploads", move |s| {
            let id = new.id.clone();
            s.state.apply(Change::Begin(new, quota))?;
            let temp = s.temp_of(&id);
            let whole = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temp)?;
            let mut changes = Vec::new();
            let mut at = 0;
            // An empty part adds nothing, and its partial file may never
            // have been made (see `land_fenced`).
            for part in parts.iter().filter(|p| p.begun.total > 0) {
                let bytes = File::open(s.temp_of(&part.begun.id))?;
                let copied = clone_or_copy(&bytes, &whole, at, part.begun.total)?;
                if copied != part.begun.total {
                    return Err(io::Error::other(format!(
                        "upload {} holds {copied} of its {} bytes",
                        part.begun.id, part.begun.total
                    )));
                }
                changes.extend(part.blocks.iter().map(|b| Change::Ack {
                    id: id.clone(),
                    start: at + b.start,
                    end: at + b.end,
                    crc: b.crc32c,
                    file: temp.clone(),
                }));
                at += part.begun.total;
            }
            // The joined bytes are durable before any block says so.
            whole.sync_all()?;
            File::open(&s.partial)?.sync_all()?;
            s.state.apply_all(changes)?;
            s.read(&id)?
                .ok_or_else(|| io::Error::other("the upload was discarded as it began"))
        })
        .await
    }

    async fn write_whole(
        &self,
        owner: &str,
        quota: Quota,
    ) -> Result<Box<dyn WholeWriter>, StoreError> {
        let temp = self
            .with("create temporary file", |s| {
                // The mode every landed file gets, whatever its size: 0666
                // less the receiver's umask, as for files in blocks.
                let temp = tempfile::Builder::new()
                    .prefix("whole-")
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
                    .tempfile_in(&s.partial)?;
                // Held while it is written: the sweep of orphaned files
                // leaves it alone, however long the upload takes.
                lock_range(temp.as_file(), 0, 0)?;
                Ok(temp)
            })
            .await?;
        let file = Arc::new(
            temp.as_file()
                .try_clone()
                .map_err(|e| StoreError::io("open temporary file", e))?,
        );
        let key = temp
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Box::new(FsWhole {
            store: self.clone(),
            temp,
            file,
            written: 0,
            batch: Batch::default(),
            charge: Charge {
                store: self.clone(),
                key,
                owner: owner.to_owned(),
                quota,
                bytes: 0,
            },
        }))
    }

    async fn land_blocks(
        &self,
        id: &str,
        name: &str,
        policy: OnConflict,
    ) -> Result<Landed, StoreError> {
        // The lock is tried, not waited for on a thread of the blocking
        // pool: a request holding a range of the file for long must not
        // pin a thread per landing that waits behind it.
        let waited = tokio::time::Instant::now();
        let landing = loop {
            let (key, name) = (id.to_owned(), name.to_owned());
            let landing = self
                .with("land file", move |s| s.land_fenced(&key, &name, policy))
                .await?;
            if !matches!(landing, Landing::Busy) || waited.elapsed() >= LAND_WAIT {
                break landing;
            }
            tokio::time::sleep(LAND_RETRY).await;
        };
        match landing {
            Landing::Busy => Err(StoreError::new(
                ErrorKind::Busy,
                format!("upload {id} is complete, but a request is still writing to it, so it cannot land yet; try again"),
            )),
            Landing::Landed(landed) => Ok(landed),
            Landing::Failed(refusal) => Err(refusal),
            Landing::Mismatch => Err(StoreError::new(
                ErrorKind::Corrupt,
                format!("upload {id}: the stored bytes do not match the acknowledged blocks; the upload was discarded"),
            )),
        }
    }

    async fn landed(&self, id: &str) -> Result<Option<Landed>, StoreError> {
        let id = id.to_owned();
        self.with("read records", move |s| s.state.landed(&id))
            .await
    }

    async fn discard(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with("discard upload", move |s| s.discard(&id)).await
    }

    async fn expire(&self, ttl: Duration) -> Result<usize, StoreError> {
        self.with("expire uploads", move |s| {
            let before = now_ms() - ttl.as_millis() as i64;
            let mut stale = Vec::new();
            for id in s.state.untouched_since(before)? {
                // A request writing to it now (however slowly) keeps it:
                // it is touched, not expired.
                let path = s.temp_of(&id);
                match OpenOptions::new().write(true).open(&path) {
                    Ok(file) if !lock_range(&file, 0, 0)? => {
                        s.state.apply(Change::Touch { id })?;
                    }
                    // Held locked until its bytes are gone.
                    Ok(file) => stale.push((id, Some(file))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => stale.push((id, None)),
                    Err(e) => return Err(e),
                }
            }
            // Parts of a concatenation stay while their owner writes parts
            // (looked up after the touches above).
            let ids: Vec<String> = stale.iter().map(|(id, _)| id.clone()).collect();
            let kept = s.state.parts_kept_by_owner(&ids, before)?;
            stale.retain(|(id, _)| !kept.contains(id));
            // Every stale upload's bytes go before any record is written:
            // on a full disk the records need the room they free.
            for (id, _) in &stale {
                tracing::info!("upload {id} expired: nothing was written to it for {ttl:?}");
                remove_if_there(&s.temp_of(id))?;
            }
            let mut failed = None;
            for (id, _) in &stale {
                if let Err(e) = s.discard(id) {
                    failed.get_or_insert(e);
                }
            }
            s.clean_leftovers(ORPHAN_AGE.min(ttl))?;
            match failed {
                Some(e) => Err(e),
                None => Ok(stale.len()),
            }
        })
        .await
    }

    fn keep_digests(&self) -> Result<(), StoreError> {
        self.inner.digests.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn keep_events(&self) -> Result<(), StoreError> {
        self.inner.events.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn claim_events(&self, limit: usize, lease: Duration) -> Result<Vec<Event>, StoreError> {
        let lease = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        self.with("claim events", move |s| {
            let now = now_ms();
            let full = |e: &io::Error| e.kind() == io::ErrorKind::StorageFull;
            let told: Vec<String> = lock(&s.told_unrecorded).iter().cloned().collect();
            for key in told {
                match s.state.apply(Change::Delivered { key: key.clone() }) {
                    Ok(()) => {
                        lock(&s.told_unrecorded).remove(&key);
                    }
                    Err(e) if full(&e) => break,
                    Err(e) => return Err(e),
                }
            }
            let claimed = s.deliverers().and_then(|(me, dead)| {
                let claim = state::Claim {
                    now,
                    until: now + lease,
                    me: &me,
                    dead: &dead,
                };
                s.state.claim_events(claim, limit)
            });
            match claimed {
                // A full disk cannot record a claim: the events are told
                // unclaimed, perhaps twice by a fleet, never late; those
                // this process told already wait for room to record it.
                Err(e) if full(&e) => {
                    let told = lock(&s.told_unrecorded).clone();
                    let due = s.state.due_events(now, limit + told.len())?;
                    Ok(due
                        .into_iter()
                        .filter(|event| !told.contains(&event.key))
                        .take(limit)
                        .collect())
                }
                claimed => claimed,
            }
        })
        .await
    }

    async fn event_delivered(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.with("record a delivery", move |s| {
            match s.state.apply(Change::Delivered { key: key.clone() }) {
                Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                    tracing::warn!("event {key} was told, but the disk is full: it is recorded once there is room, and not told again meanwhile");
                    lock(&s.told_unrecorded).insert(key);
                    Ok(())
                }
                recorded => recorded,
            }
        })
        .await
    }

    async fn event_failed(&self, key: &str, retry_in: Duration) -> Result<(), StoreError> {
        let (key, due) = (key.to_owned(), now_ms() + retry_in.as_millis() as i64);
        self.with("record a failed delivery", move |s| {
            s.state.apply(Change::Undelivered { key, due })
        })
        .await
    }

    /// A file here is always a recorded landing, or another's (a landing
    /// whose record fails takes its file back).
    async fn name_taken(&self, name: &str, _id: Option<&str>) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with("look up name", move |s| {
            match s.dir.join(name).try_exists() {
                // A file where the name needs a folder takes the name too.
                Err(e) if in_the_way(&e) => Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => Ok(false),
                other => other,
            }
        })
        .await
    }
}

/// Bytes gathered for one positional write.
#[derive(Default)]
struct Batch {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Batch {
    /// Writes what is gathered at `at` of `file` (comparing where `acked`
    /// says); returns how many bytes and whether the compared ones matched.
    async fn flush(
        &mut self,
        file: &Arc<File>,
        at: u64,
        acked: &RangeSet,
    ) -> Result<(u64, bool), StoreError> {
        let Some((chunks, len)) = self.take() else {
            return Ok((0, true));
        };
        let (file, acked) = (file.clone(), acked.clone());
        let same = blocking("write block", move || {
            write_or_compare(&file, &chunks, at, &acked)
        })
        .await?;
        Ok((len, same))
    }

    /// What is gathered, and how many bytes, if anything is.
    fn take(&mut self) -> Option<(Vec<Bytes>, u64)> {
        match self.len {
            0 => None,
            len => {
                self.len = 0;
                Some((std::mem::take(&mut self.chunks), len as u64))
            }
        }
    }

    /// Gathers `bytes`; says whether it is time to flush.
    fn push(&mut self, bytes: Bytes) -> bool {
        self.len += bytes.len();
        self.chunks.push(bytes);
        self.len >= WRITE_BATCH
    }
}

/// A block's range of its partial file, reserved for its writer until
/// dropped.
struct Held {
    file: File,
    /// The upload's id.
    id: String,
    /// The parts of the range acknowledged already: compared, not written.
    acked: RangeSet,
}

/// How long a block's bytes may take to come before its range is reserved
/// without them: a request whose bytes arrive slowly holds its range, so
/// expiry and the sweep leave its upload alone, while a block that comes at
/// once is reserved, read and written in one trip to the blocking pool.
const RESERVE_AFTER: Duration = Duration::from_millis(100);

/// A block's reservation of its range: taken with its first bytes, or by
/// a timer when they are slow, whichever comes first.
enum Reservation {
    /// Not taken yet: the timer's task, and who claimed the taking.
    Pending {
        timer: tokio::task::JoinHandle<Result<Held, StoreError>>,
        claimed: Arc<AtomicBool>,
        id: String,
    },
    Taken(Arc<Held>),
}

impl Reservation {
    fn start(store: FsStore, id: String, range: ContentRange) -> Reservation {
        let claimed = Arc::new(AtomicBool::new(false));
        let (by_timer, key) = (claimed.clone(), id.clone());
        let timer = tokio::spawn(async move {
            tokio::time::sleep(RESERVE_AFTER).await;
            if by_timer.swap(true, Ordering::AcqRel) {
                return Err(StoreError::io("reserve block", "taken with the bytes"));
            }
            store
                .with("open partial file", move |s| Ok(s.reserve(&key, range)))
                .await?
        });
        Reservation::Pending { timer, claimed, id }
    }

    /// The upload's id.
    fn id(&self) -> &str {
        match self {
            Reservation::Pending { id, .. } => id,
            Reservation::Taken(held) => &held.id,
        }
    }

    /// The reservation, and the first bytes written under it: taken here
    /// (with the bytes, in one trip) unless the timer took it already.
    async fn write(
        &mut self,
        store: &FsStore,
        range: ContentRange,
        chunks: Vec<Bytes>,
        at: u64,
    ) -> Result<bool, StoreError> {
        let held = match self {
            Reservation::Taken(held) => Some(held.clone()),
            Reservation::Pending { timer, claimed, .. } => {
                if claimed.swap(true, Ordering::AcqRel) {
                    Some(Arc::new(
                        timer
                            .await
                            .map_err(|e| StoreError::io("reserve block", e))??,
                    ))
                } else {
                    timer.abort();
                    None
                }
            }
        };
        let id = self.id().to_owned();
        let inner = store.inner.clone();
        let (held, same) = blocking("write block", move || {
            let held = match held {
                Some(held) => held,
                None => match inner.reserve(&id, range) {
                    Ok(held) => Arc::new(held),
                    Err(refused) => return Ok(Err(refused)),
                },
            };
            let same = write_or_compare(&held.file, &chunks, at, &held.acked)?;
            Ok(Ok((held, same)))
        })
        .await??;
        *self = Reservation::Taken(held);
        Ok(same)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Reservation::Pending { timer, claimed, .. } = self {
            if !claimed.swap(true, Ordering::AcqRel) {
                timer.abort();
            }
        }
    }
}

/// One block going into a partial file.
struct FsBlock {
    store: FsStore,
    reservation: Reservation,
    range: ContentRange,
    written: u64,
    batch: Batch,
    same: bool,
}

impl FsBlock {
    async fn flush(&mut self) -> Result<(), StoreError> {
        let Some((chunks, len)) = self.batch.take() else {
            return Ok(());
        };
        let at = self.range.start + self.written;
        let same = self
            .reservation
            .write(&self.store, self.range, chunks, at)
            .await?;
        self.same &= same;
        self.written += len;
        Ok(())
    }
}

#[async_trait]
impl WriteBytes for FsBlock {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        if self.batch.push(bytes) {
            self.flush().await?;
        }
        Ok(())
    }
}

#[async_trait]
impl BlockWriter for FsBlock {
    async fn finish(&mut self) -> Result<bool, StoreError> {
        self.flush().await?;
        Ok(self.same)
    }

    async fn acknowledge(
        self: Box<Self>,
        len: u64,
        crc32c: Option<u32>,
    ) -> Result<Upload, StoreError> {
        let FsBlock {
            store,
            reservation,
            range,
            written,
            ..
        } = *self;
        if len > written || len > range.len() {
            return Err(StoreError::io(
                "acknowledge block",
                format!("{len} bytes acknowledged of {written} written"),
            ));
        }
        let end = range.start + len;
        let upload = match &reservation {
            Reservation::Taken(held) if !held.acked.contains(range.start, end) => {
                let id = held.id.clone();
                let change = Change::Ack {
                    file: store.inner.temp_of(&id),
                    id,
                    start: range.start,
                    end,
                    crc: crc32c,
                };
                let recorded = store.inner.state.acknowledge(change).await;
                recorded.map_err(|e| io_refusal("acknowledge block", &e))?
            }
            // Nothing new (no bytes, or all acknowledged already): no
            // record to write, the upload as it is now.
            _ => {
                let key = reservation.id().to_owned();
                store.with("read records", move |s| s.read(&key)).await?
            }
        };
        // The range stays reserved until the record says it is here.
        drop(reservation);
        upload.ok_or_else(|| StoreError::io("acknowledge block", "the upload was discarded"))
    }
}

/// A whole file going into a temporary file; removed unless landed.
struct FsWhole {
    store: FsStore,
    temp: tempfile::NamedTempFile,
    file: Arc<File>,
    written: u64,
    batch: Batch,
    charge: Charge,
}

/// How much more of the quota a whole file takes each time it needs more.
const CHARGE_STEP: u64 = 8 << 20;

/// What a whole file in flight is charged to the quota; the charge goes
/// when it is dropped (landed or not).
struct Charge {
    store: FsStore,
    /// Its temporary file's name.
    key: String,
    owner: String,
    quota: Quota,
    bytes: u64,
}

impl Charge {
    /// Charges enough for `len` bytes in all, or refuses (507).
    async fn cover(&mut self, len: u64) -> Result<(), StoreError> {
        if !self.quota.is_limited() || len <= self.bytes {
            return Ok(());
        }
        let bytes = len.div_ceil(CHARGE_STEP) * CHARGE_STEP;
        let change = Change::Reserve {
            key: self.key.clone(),
            owner: self.owner.clone(),
            bytes,
            quota: self.quota,
        };
        self.store
            .with("charge the quota", move |s| s.state.apply(change))
            .await?;
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let (inner, key) = (self.store.inner.clone(), std::mem::take(&mut self.key));
        let release = move || {
            if let Err(e) = inner.state.apply(Change::Release { key }) {
                tracing::warn!(
                    "cannot release a whole file's quota: {e}; the next expiry pass will"
                );
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(release)),
            Err(_) => release(),
        }
    }
}

impl FsWhole {
    async fn flush(&mut self) -> Result<(), StoreError> {
        self.charge
            .cover(self.written + self.batch.len as u64)
            .await?;
        let nothing = RangeSet::default();
        let (len, _) = self.batch.flush(&self.file, self.written, &nothing).await?;
        self.written += len;
        Ok(())
    }
}

#[async_trait]
impl WriteBytes for FsWhole {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        if self.batch.push(bytes) {
            self.flush().await?;
        }
        Ok(())
    }
}

#[async_trait]
impl WholeWriter for FsWhole {
    async fn place(
        mut self: Box<Self>,
        name: &str,
        policy: OnConflict,
        id: Option<&str>,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<Landed, StoreError> {
        self.flush().await?;
        let FsWhole {
            store,
            temp,
            file,
            charge,
            ..
        } = *self;
        let (key, name) = (id.unwrap_or("").to_owned(), name.to_owned());
        let owner = owner.to_owned();
        let metadata = metadata.map(str::to_owned);
        store
            .with("land file", move |s| {
                file.sync_all()?;
                let size = file.metadata()?.len();
                let (crc, sha256) = digests_of(&file, s.digests.load(Ordering::Relaxed))?;
                let path = temp.into_temp_path();
                s.not_anothers(&key, &owner)?;
                let landed_as = match place(&path, &s.dir, &name, policy) {
                    Ok(landed_as) => landed_as,
                    Err(e) => return Ok(Err(landing_refusal(&name, &e))),
                };
                let landed = Landed::new(&key, &owner, &landed_as, size, Some(crc))
                    .with_metadata(metadata)
                    .with_sha256(sha256);
                let event = s.event_key(&key);
                if !key.is_empty() || event.is_some() {
                    let recorded = s.state.apply(Change::Landed {
                        landed: landed.clone(),
                        event,
                    });
                    s.unplace_unless(&recorded, &landed_as);
                    recorded?;
                }
                drop(charge);
                Ok(Ok(landed))
            })
            .await?
    }
}

/// Whether `e` says a name cannot be had because something is in its way:
/// a file or folder of that name, or a file where the name needs a folder.
/// Puts the first `len` bytes of `from` at `at` of `to`; returns how many
/// it put (fewer when `from` is shorter). The kernel shares the extents
/// where the file system can (`copy_file_range` clones on XFS and Btrfs,
/// as `FICLONERANGE` does) and else copies them itself, without the bytes
/// passing through the receiver; where it can do neither, they are copied
/// here.
fn clone_or_copy(from: &File, to: &File, at: u64, len: u64) -> io::Result<u64> {
    let (mut read_at, mut write_at) = (0i64, at as i64);
    let mut done = 0;
    while done < len {
        let left = (len - done).min(1 << 30) as usize;
        // SAFETY: two open descriptors and pointers to live offsets.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut read_at,
                to.as_raw_fd(),
                &mut write_at,
                left,
                0,
            )
        };
        match n {
            0 => break,
            n if n > 0 => done += n as u64,
            _ => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                        return Ok(done + copy_at(from, to, done, at + done, len - done)?)
                    }
                    _ => return Err(e),
                }
            }
        }
    }
    Ok(done)
}

/// Copies `len` bytes of `from` at `read_at` to `to` at `write_at` through
/// a buffer; returns how many (fewer when `from` is shorter).
fn copy_at(from: &File, to: &File, read_at: u64, write_at: u64, len: u64) -> io::Result<u64> {
    let mut buf = vec![0; (len.min(1 << 20)) as usize];
    let mut done = 0;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = from.read_at(&mut buf[..want], read_at + done)?;
        if n == 0 {
            break;
        }
        to.write_all_at(&buf[..n], write_at + done)?;
        done += n as u64;
    }
    Ok(done)
}

fn in_the_way(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::AlreadyExists
            | io::ErrorKind::IsADirectory
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::DirectoryNotEmpty
    )
}

/// Why landing as `name` failed: a conflict when the name is taken (by a
/// file, or a folder in the way), invalid when it is too long for the file
/// system, the cause's kind otherwise.
fn landing_refusal(name: &str, e: &io::Error) -> StoreError {
    let text = e.to_string();
    if e.raw_os_error() == Some(libc::ENAMETOOLONG) {
        return StoreError::new(
            ErrorKind::Invalid,
            format!("cannot land the file as {name}: the name is too long for the receiver's file system; upload under a shorter one"),
        );
    }
    if in_the_way(e) {
        return StoreError::new(
            ErrorKind::Conflict,
            format!(
                "cannot land the file as {name}: another file or folder took that name meanwhile ({text}); free the name, or upload under another"
            ),
        );
    }
    let cause = io_refusal("land file", e);
    StoreError::new(
        cause.kind(),
        format!("cannot land the file as {name}: {}", cause.message()),
    )
}

/// Puts the finished `temp` in `dir` as `name`, by `policy`, durably;
/// returns the name it landed under. `temp` stays until the caller has
/// recorded the landing and removes it: a landing waiting on the same
/// upload finds either the file or the record, never neither.
fn place(temp: &Path, dir: &Path, name: &str, policy: OnConflict) -> io::Result<String> {
    let folder = make_folders(dir, name)?;
    let landed_as = match policy {
        OnConflict::Overwrite => {
            // A second link, renamed over the name: replaced atomically.
            let staging = temp.with_extension("landing");
            let _ = fs::remove_file(&staging);
            fs::hard_link(temp, &staging)?;
            fs::rename(&staging, dir.join(name))?;
            name.to_owned()
        }
        OnConflict::Refuse => {
            // A hard link never replaces: it fails if the name is taken,
            // unless by this very file (a landing cut off before its
            // record).
            link_unless_there(temp, &dir.join(name))?;
            name.to_owned()
        }
        OnConflict::Rename => {
            let mut landed = None;
            for n in 0..10_000 {
                let candidate = fileuploader_store::numbered(name, n);
                match link_unless_there(temp, &dir.join(&candidate)) {
                    Ok(()) => {
                        landed = Some(candidate);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            landed.ok_or_else(|| io::Error::other("no free name"))?
        }
    };
    File::open(folder)?.sync_all()?;
    Ok(landed_as)
}

/// Links `temp` as `path`; a `path` that is `temp` already (linked by a
/// landing the receiver stopped in before recording it) counts as done.
fn link_unless_there(temp: &Path, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match fs::hard_link(temp, path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let (ours, there) = (fs::metadata(temp)?, fs::symlink_metadata(path)?);
            if (ours.dev(), ours.ino()) == (there.dev(), there.ino()) {
                Ok(())
            } else {
                Err(e)
            }
        }
        linked => linked,
    }
}

/// Makes the folders of `name` (a `/`-separated relative path) below `dir`,
/// durably; returns the one the file goes in. A part that exists as
/// anything but a plain folder (a file, or a link that could lead out of
/// `dir`) is refused.
fn make_folders(dir: &Path, name: &str) -> io::Result<PathBuf> {
    let mut at = dir.to_owned();
    let Some((folders, _)) = name.rsplit_once('/') else {
        return Ok(at);
    };
    for part in folders.split('/') {
        let parent = at.clone();
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{part:?} is in the way: it is not a folder"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match fs::create_dir(&at) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !fs::symlink_metadata(&at)?.is_dir() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
            Ok(()) => File::open(parent)?.sync_all()?,
        }
    }
    Ok(at)
}

/// Removes `path` unless it is gone already.
fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The CRC32C of a whole file, read from its start in 1 MiB pieces.
/// The CRC32C of `file`'s bytes and, if `sha`, their SHA-256: one read.
fn digests_of(file: &File, sha: bool) -> io::Result<(u32, Option<[u8; 32]>)> {
    use sha2::Digest;
    let mut crc = 0;
    let mut sha256 = sha.then(sha2::Sha256::new);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    loop {
        match file.read_at(&mut buf, at)? {
            0 => return Ok((crc, sha256.map(|h| h.finalize().into()))),
            n => {
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                if let Some(h) = &mut sha256 {
                    h.update(&buf[..n]);
                }
                at += n as u64;
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

    #[tokio::test]
    async fn an_id_other_credentials_hold_is_refused_a_landing_and_theirs_keeps_its_file_and_event()
    {
        use fileuploader_store::{Arrival, NewUpload, Quota, Store};
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path()).unwrap();
        store.keep_events().unwrap();
        // Client A's upload under id X is complete, not yet landed...
        let new = NewUpload {
            id: "X".into(),
            total: 4,
            name: "a.bin".into(),
            owner: "A".into(),
            partial: false,
            metadata: None,
        };
        let upload = store.begin(new, Quota::none()).await.unwrap();
        let range = ContentRange::parse("bytes 0-3/4").unwrap();
        let mut block = store.write_block(&upload, range, true).await.unwrap();
        block.write(Bytes::from_static(b"mine")).await.unwrap();
        assert!(block.finish().await.unwrap());
        assert!(block.acknowledge(4, None).await.unwrap().complete());
        // B's whole file under X, begun before A's upload was known.
        let refused_to_b = || async {
            let mut whole = store.write_whole("B", Quota::none()).await.unwrap();
            whole.write(Bytes::from_static(b"evil")).await.unwrap();
            let arrival = Arrival::whole(whole, Some("X"), "B");
            let refused = store
                .land(arrival, "a.bin", OnConflict::Overwrite)
                .await
                .unwrap_err();
            assert_eq!(refused.kind(), ErrorKind::Forbidden, "{refused}");
        };
        // It comes to land first: refused, and A's upload is untouched.
        refused_to_b().await;
        assert!(!dir.path().join("a.bin").exists(), "nothing placed");
        assert!(store.landed("X").await.unwrap().is_none());
        // A's lands, told as A's, with its event.
        let landed = store
            .land(Arrival::blocks("X"), "a.bin", OnConflict::Overwrite)
            .await
            .unwrap();
        assert_eq!(
            (landed.owner.as_str(), landed.name.as_str()),
            ("A", "a.bin")
        );
        assert_eq!(std::fs::read(dir.path().join("a.bin")).unwrap(), b"mine");
        // B, landing under X afterwards, is refused too.
        refused_to_b().await;
        assert_eq!(std::fs::read(dir.path().join("a.bin")).unwrap(), b"mine");
        let events = store
            .claim_events(10, Duration::from_secs(60))
            .await
            .unwrap();
        let names: Vec<_> = events.iter().map(|e| e.landed.name.as_str()).collect();
        assert_eq!(names, ["a.bin"]);
    }

    /// A receiver stopped between an empty upload's record and its partial
    /// file (`kill -9` in `begin`) left that upload unable to land: every
    /// landing of it answered "not in progress".
    #[tokio::test]
    async fn an_empty_upload_whose_partial_file_was_never_made_lands_empty() {
        use fileuploader_store::{Arrival, NewUpload, Quota, Store};
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path()).unwrap();
        // Begun, then its partial file gone as if never made; landed.
        let land_without_file = |id: &'static str, total: u64| {
            let store = store.clone();
            async move {
                let new = NewUpload {
                    id: id.into(),
                    total,
                    name: format!("{id}.bin"),
                    owner: "A".into(),
                    partial: false,
                    metadata: None,
                };
                store.begin(new, Quota::none()).await.unwrap();
                std::fs::remove_file(store.inner.temp_of(id)).unwrap();
                let name = format!("{id}.bin");
                store
                    .land(Arrival::blocks(id), &name, OnConflict::Refuse)
                    .await
            }
        };
        let landed = land_without_file("E", 0).await.unwrap();
        assert_eq!((landed.name.as_str(), landed.length), ("E.bin", 0));
        assert_eq!(std::fs::read(dir.path().join("E.bin")).unwrap(), b"");
        assert!(!store.inner.temp_of("E").exists());
        // An upload with bytes to come is still gone without its file.
        let refused = land_without_file("F", 4).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::NotFound, "{refused}");
    }

    #[tokio::test]
    async fn events_a_deliverer_held_when_it_ended_go_to_the_next_at_once() {
        use fileuploader_store::{Arrival, Quota, Store};
        async fn land(store: &FsStore, keys: std::ops::Range<usize>) {
            for n in keys {
                let mut whole = store.write_whole("", Quota::none()).await.unwrap();
                whole.write(Bytes::from_static(b"told")).await.unwrap();
                let key = format!("held-{n}");
                let arrival = Arrival::whole(whole, Some(&key), "");
                let name = format!("{key}.bin");
                store
                    .land(arrival, &name, OnConflict::Refuse)
                    .await
                    .unwrap();
            }
        }
        let keys = |events: Vec<fileuploader_store::Event>| {
            let mut keys: Vec<String> = events.into_iter().map(|e| e.key).collect();
            keys.sort();
            keys
        };
        let dir = tempfile::tempdir().unwrap();
        let first = FsStore::new(dir.path()).unwrap();
        first.keep_events().unwrap();
        land(&first, 0..6).await;
        let hour = Duration::from_secs(3600);
        let held = keys(first.claim_events(4, hour).await.unwrap());
        assert_eq!(held.len(), 4);
        let second = FsStore::new(dir.path()).unwrap();
        second.keep_events().unwrap();
        let rest = keys(second.claim_events(4, hour).await.unwrap());
        assert_eq!(rest.len(), 2, "only what no live deliverer holds: {rest:?}");
        assert!(rest.iter().all(|k| !held.contains(k)));
        drop(first);
        // More due than one claim takes, beside what the ended one held.
        land(&second, 6..10).await;
        let mut taken = keys(second.claim_events(4, hour).await.unwrap());
        taken.extend(keys(second.claim_events(4, hour).await.unwrap()));
        taken.sort();
        let mut expected = held.clone();
        expected.extend((6..10).map(|n| format!("held-{n}")));
        expected.sort();
        assert_eq!(
            taken, expected,
            "an ended deliverer's claims do not wait out their lease"
        );
    }

    #[test]
    fn parts_are_put_at_their_offsets_by_the_kernel_or_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("part");
        fs::write(&part, b"world").unwrap();
        let whole = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("whole"))
            .unwrap();
        whole.write_all_at(b"hello ", 0).unwrap();
        let from = File::open(&part).unwrap();
        assert_eq!(clone_or_copy(&from, &whole, 6, 5).unwrap(), 5);
        // A part shorter than it says is told so, not padded.
        assert_eq!(clone_or_copy(&from, &whole, 11, 8).unwrap(), 5);
        assert_eq!(copy_at(&from, &whole, 1, 16, 4).unwrap(), 4);
        assert_eq!(
            fs::read(dir.path().join("whole")).unwrap(),
            b"hello worldworldorld"
        );
    }

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

    #[test]
    fn a_range_locked_by_one_descriptor_is_refused_to_another_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"0123456789").unwrap();
        let open = || OpenOptions::new().write(true).open(&path).unwrap();
        let (a, b) = (open(), open());
        assert!(lock_range(&a, 2, 4).unwrap());
        assert!(!lock_range(&b, 5, 2).unwrap(), "overlaps 2..6");
        assert!(lock_range(&b, 6, 2).unwrap(), "next to it is free");
        assert!(!lock_range(&open(), 0, 0).unwrap(), "the whole file is not");
        drop((a, b));
        assert!(lock_range(&open(), 0, 0).unwrap());
    }
}
