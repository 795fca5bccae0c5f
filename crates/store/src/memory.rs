//! A store in process memory: for tests of the receiver's doors and as the
//! reference the conformance suite is checked against. It keeps every
//! promise of a [`Store`] except surviving its process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fileuploader_wire::sync::lock;
use fileuploader_wire::{ContentRange, RangeSet};

use crate::{
    numbered, Block, BlockWriter, ErrorKind, Event, Landed, NewUpload, OnConflict, Quota, Store,
    StoreError, Upload, WholeWriter, WriteBytes,
};

/// A [`Store`] in memory. Clones share their uploads and files, as
/// receivers sharing a directory or a bucket do.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Held>>,
}

#[derive(Debug, Default)]
struct Held {
    uploads: HashMap<String, Kept>,
    landed: HashMap<String, Landed>,
    files: BTreeMap<String, Vec<u8>>,
    /// Byte ranges being written, by upload.
    writing: HashMap<String, Vec<(u64, u64)>>,
    /// Bytes of whole files arriving, by owner.
    arriving: HashMap<String, u64>,
    /// The outbox, when events are kept: each event and when it is due.
    events: Option<BTreeMap<String, (Event, Instant)>>,
    /// How many files sent whole without an id were told of.
    told_whole: u64,
    /// Whether landings are digested with SHA-256.
    digests: bool,
}

impl Held {
    /// The SHA-256 of landed `bytes`, when landings are digested.
    fn digest(&self, bytes: &[u8]) -> Option<[u8; 32]> {
        use sha2::Digest;
        self.digests.then(|| sha2::Sha256::digest(bytes).into())
    }

    /// Leaves the event of `landed` in the outbox, when events are kept;
    /// a landing told twice leaves one.
    fn tell(&mut self, landed: &Landed) {
        if let Some(events) = &mut self.events {
            let key = match landed.id.as_str() {
                "" => {
                    self.told_whole += 1;
                    format!("whole-{}", self.told_whole)
                }
                id => id.to_owned(),
            };
            events.entry(key.clone()).or_insert_with(|| {
                let event = Event {
                    key,
                    landed: landed.clone(),
                    attempts: 0,
                };
                (event, Instant::now())
            });
        }
    }
}

#[derive(Debug)]
struct Kept {
    upload: Upload,
    bytes: Vec<u8>,
    touched: Instant,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// The bytes of the file landed as `name`, if there is one.
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        self.held().files.get(name).cloned()
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        lock(&self.inner)
    }
}

impl Held {
    /// Why `more` bytes for `owner` would break `quota`.
    fn over(&self, quota: &Quota, owner: &str, more: u64) -> Option<StoreError> {
        let in_progress = self
            .uploads
            .values()
            .map(|k| (&k.upload.begun.owner, k.upload.begun.total))
            .chain(self.arriving.iter().map(|(o, &n)| (o, n)));
        let (mut held, mut by_owner) = (0, 0);
        for (who, bytes) in in_progress {
            held += bytes;
            if who == owner {
                by_owner += bytes;
            }
        }
        let why = quota.refusal(owner, more, held, by_owner)?;
        Some(StoreError::new(ErrorKind::Full, why))
    }

    /// Puts `bytes` in place as `name` by `policy`; the name it took.
    /// Refuses to land under `id` for `owner` when other credentials hold
    /// it, landed or in progress.
    fn refuse_others(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let in_progress = self.uploads.get(id).map(|k| &k.upload.begun.owner);
        let landed = self.landed.get(id).map(|l| &l.owner);
        match in_progress.into_iter().chain(landed).any(|o| o != owner) {
            true => Err(StoreError::others_id(id)),
            false => Ok(()),
        }
    }

    fn place(
        &mut self,
        name: &str,
        policy: OnConflict,
        bytes: Vec<u8>,
    ) -> Result<String, StoreError> {
        let name = match policy {
            OnConflict::Overwrite => name.to_owned(),
            OnConflict::Refuse if self.files.contains_key(name) => {
                return Err(StoreError::new(
                    ErrorKind::Conflict,
                    format!("cannot land the file as {name}: a file of that name is there"),
                ))
            }
            OnConflict::Refuse => name.to_owned(),
            OnConflict::Rename => (0..)
                .map(|n| numbered(name, n))
                .find(|candidate| !self.files.contains_key(candidate))
                .unwrap_or_else(|| name.to_owned()),
        };
        self.files.insert(name.clone(), bytes);
        Ok(name)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        Ok(self.held().uploads.get(id).map(|k| k.upload.clone()))
    }

    async fn begin(&self, new: NewUpload, quota: Quota) -> Result<Upload, StoreError> {
        let mut held = self.held();
        held.refuse_others(&new.id, &new.owner)?;
        if let Some(kept) = held.uploads.get(&new.id) {
            return Ok(kept.upload.clone());
        }
        if let Some(refusal) = held.over(&quota, &new.owner, new.total) {
            return Err(refusal);
        }
        let upload = Upload::new(new);
        held.uploads.insert(
            upload.begun.id.clone(),
            Kept {
                bytes: vec![0; upload.begun.total as usize],
                upload: upload.clone(),
                touched: Instant::now(),
            },
        );
        Ok(upload)
    }

    async fn write_block(
        &self,
        upload: &Upload,
        range: ContentRange,
        _sized: bool,
    ) -> Result<Box<dyn BlockWriter>, StoreError> {
        let id = upload.begun.id.clone();
        let mut held = self.held();
        if !held.uploads.contains_key(&id) {
            return Err(StoreError::new(
                ErrorKind::Conflict,
                format!("upload {id} ended while this block came"),
            ));
        }
        let writing = held.writing.entry(id.clone()).or_default();
        if !range.is_empty()
            && writing
                .iter()
                .any(|&(s, e)| s < range.end && range.start < e)
        {
            return Err(StoreError::new(
                ErrorKind::Busy,
                "another request is writing this range of the upload; try again",
            ));
        }
        writing.push((range.start, range.end));
        Ok(Box::new(MemoryBlock {
            store: self.clone(),
            id,
            range,
            bytes: Vec::new(),
            same: true,
        }))
    }

    async fn concatenate(
        &self,
        new: NewUpload,
        parts: &[Upload],
        quota: Quota,
    ) -> Result<Upload, StoreError> {
        let mut held = self.held();
        if let Some(refusal) = held.over(&quota, &new.owner, new.total) {
            return Err(refusal);
        }
        let mut upload = Upload::new(new);
        let mut bytes = Vec::new();
        for part in parts {
            let kept = held.uploads.get(&part.begun.id).ok_or_else(|| {
                StoreError::new(
                    ErrorKind::NotFound,
                    format!("upload {} is not in progress", part.begun.id),
                )
            })?;
            let at = bytes.len() as u64;
            for block in kept.upload.blocks.iter() {
                upload.add(Block {
                    start: at + block.start,
                    end: at + block.end,
                    crc32c: block.crc32c,
                });
            }
            bytes.extend_from_slice(&kept.bytes);
        }
        held.uploads.insert(
            upload.begun.id.clone(),
            Kept {
                upload: upload.clone(),
                bytes,
                touched: Instant::now(),
            },
        );
        Ok(upload)
    }

    async fn write_whole(
        &self,
        owner: &str,
        quota: Quota,
    ) -> Result<Box<dyn WholeWriter>, StoreError> {
        Ok(Box::new(MemoryWhole {
            store: self.clone(),
            owner: owner.to_owned(),
            quota,
            bytes: Vec::new(),
        }))
    }

    async fn land_blocks(
        &self,
        id: &str,
        name: &str,
        policy: OnConflict,
    ) -> Result<Landed, StoreError> {
        let mut held = self.held();
        let Some(kept) = held.uploads.get(id) else {
            return held.landed.get(id).cloned().ok_or_else(|| {
                StoreError::new(
                    ErrorKind::NotFound,
                    format!("upload {id} is not in progress"),
                )
            });
        };
        if held.writing.get(id).is_some_and(|w| !w.is_empty()) {
            return Err(StoreError::new(
                ErrorKind::Busy,
                format!("upload {id} is complete, but a request is still writing to it; try again"),
            ));
        }
        let upload = kept.upload.clone();
        if !upload.complete() {
            return Err(StoreError::new(
                ErrorKind::Conflict,
                format!("upload {id} is not complete"),
            ));
        }
        held.refuse_others(id, &upload.begun.owner)?;
        let expected = upload.expected_crc32c();
        let bytes = kept.bytes.clone();
        if expected.is_some_and(|crc| crc != crc32c_of(&bytes)) {
            held.uploads.remove(id);
            return Err(StoreError::new(
                ErrorKind::Corrupt,
                format!("upload {id}: the stored bytes do not match the acknowledged blocks; the upload was discarded"),
            ));
        }
        match held.place(name, policy, bytes) {
            Ok(landed_as) => {
                let landed = Landed::new(
                    id,
                    &upload.begun.owner,
                    &landed_as,
                    upload.begun.total,
                    expected,
                )
                .with_metadata(upload.begun.metadata.clone())
                .with_sha256(held.digest(&held.files[&landed_as]));
                held.uploads.remove(id);
                held.landed.insert(id.to_owned(), landed.clone());
                held.tell(&landed);
                Ok(landed)
            }
            Err(refusal) => {
                if let Some(kept) = held.uploads.get_mut(id) {
                    kept.upload.landing_error = Some(refusal.message().to_owned());
                }
                Err(refusal)
            }
        }
    }

    async fn landed(&self, id: &str) -> Result<Option<Landed>, StoreError> {
        Ok(self.held().landed.get(id).cloned())
    }

    async fn discard(&self, id: &str) -> Result<(), StoreError> {
        self.held().uploads.remove(id);
        Ok(())
    }

    async fn expire(&self, ttl: Duration) -> Result<usize, StoreError> {
        let mut held = self.held();
        let Held {
            uploads, writing, ..
        } = &mut *held;
        let before = uploads.len();
        let live = |id: &str, kept: &Kept| {
            kept.touched.elapsed() < ttl || writing.get(id).is_some_and(|w| !w.is_empty())
        };
        // Parts of a concatenation stay while their owner writes parts.
        let writing_parts: std::collections::HashSet<String> = uploads
            .iter()
            .filter(|(id, kept)| kept.upload.begun.partial && live(id, kept))
            .map(|(_, kept)| kept.upload.begun.owner.clone())
            .collect();
        uploads.retain(|id, kept| {
            live(id, kept)
                || (kept.upload.begun.partial && writing_parts.contains(&kept.upload.begun.owner))
        });
        Ok(before - uploads.len())
    }

    async fn name_taken(&self, name: &str, _id: Option<&str>) -> Result<bool, StoreError> {
        Ok(self.held().files.contains_key(name))
    }

    fn keep_digests(&self) -> Result<(), StoreError> {
        self.held().digests = true;
        Ok(())
    }

    fn keep_events(&self) -> Result<(), StoreError> {
        self.held().events.get_or_insert_with(BTreeMap::new);
        Ok(())
    }

    async fn claim_events(&self, limit: usize, lease: Duration) -> Result<Vec<Event>, StoreError> {
        let mut held = self.held();
        let now = Instant::now();
        let mut due: Vec<&mut (Event, Instant)> = held
            .events
            .iter_mut()
            .flat_map(|events| events.values_mut())
            .filter(|(_, at)| *at <= now)
            .collect();
        due.sort_by_key(|(_, at)| *at);
        Ok(due
            .into_iter()
            .take(limit)
            .map(|(event, at)| {
                *at = now + lease;
                event.clone()
            })
            .collect())
    }

    async fn event_delivered(&self, key: &str) -> Result<(), StoreError> {
        if let Some(events) = &mut self.held().events {
            events.remove(key);
        }
        Ok(())
    }

    async fn event_failed(&self, key: &str, retry_in: Duration) -> Result<(), StoreError> {
        if let Some((event, at)) = self.held().events.as_mut().and_then(|e| e.get_mut(key)) {
            event.attempts += 1;
            *at = Instant::now() + retry_in;
        }
        Ok(())
    }
}

fn crc32c_of(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// One reserved block of a [`MemoryStore`] upload.
struct MemoryBlock {
    store: MemoryStore,
    id: String,
    range: ContentRange,
    bytes: Vec<u8>,
    same: bool,
}

impl Drop for MemoryBlock {
    fn drop(&mut self) {
        let mut held = self.store.held();
        if let Some(writing) = held.writing.get_mut(&self.id) {
            if let Some(i) = writing
                .iter()
                .position(|&r| r == (self.range.start, self.range.end))
            {
                writing.remove(i);
            }
        }
    }
}

#[async_trait]
impl WriteBytes for MemoryBlock {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        self.bytes.extend_from_slice(&bytes);
        Ok(())
    }
}

#[async_trait]
impl BlockWriter for MemoryBlock {
    async fn finish(&mut self) -> Result<bool, StoreError> {
        let held = self.store.held();
        let Some(kept) = held.uploads.get(&self.id) else {
            return Ok(true);
        };
        let start = self.range.start;
        for &(s, e) in kept.upload.received.ranges() {
            let (s, e) = (s.max(start), e.min(start + self.bytes.len() as u64));
            if s < e {
                let ours = &self.bytes[(s - start) as usize..(e - start) as usize];
                self.same &= ours == &kept.bytes[s as usize..e as usize];
            }
        }
        Ok(self.same)
    }

    async fn acknowledge(
        self: Box<Self>,
        len: u64,
        crc32c: Option<u32>,
    ) -> Result<Upload, StoreError> {
        let mut held = self.store.held();
        let Some(kept) = held.uploads.get_mut(&self.id) else {
            return Err(StoreError::new(
                ErrorKind::NotFound,
                format!("upload {} is not in progress", self.id),
            ));
        };
        let (start, end) = (self.range.start, self.range.start + len);
        let mut acked = RangeSet::default();
        for &(s, e) in kept.upload.received.ranges() {
            acked.insert(s.max(start), e.min(end));
        }
        // Acknowledged bytes are compared with, never overwritten.
        for (i, byte) in self.bytes[..len as usize].iter().enumerate() {
            let at = start + i as u64;
            if !acked.contains(at, at + 1) {
                kept.bytes[at as usize] = *byte;
            }
        }
        kept.upload.add(Block { start, end, crc32c });
        kept.touched = Instant::now();
        Ok(kept.upload.clone())
    }
}

/// A whole file arriving at a [`MemoryStore`].
struct MemoryWhole {
    store: MemoryStore,
    owner: String,
    quota: Quota,
    bytes: Vec<u8>,
}

impl Drop for MemoryWhole {
    fn drop(&mut self) {
        let mut held = self.store.held();
        if let Some(n) = held.arriving.get_mut(&self.owner) {
            *n = n.saturating_sub(self.bytes.len() as u64);
        }
    }
}

#[async_trait]
impl WriteBytes for MemoryWhole {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        let mut held = self.store.held();
        if let Some(refusal) = held.over(&self.quota, &self.owner, bytes.len() as u64) {
            return Err(refusal);
        }
        *held.arriving.entry(self.owner.clone()).or_default() += bytes.len() as u64;
        self.bytes.extend_from_slice(&bytes);
        Ok(())
    }
}

#[async_trait]
impl WholeWriter for MemoryWhole {
    async fn place(
        self: Box<Self>,
        name: &str,
        policy: OnConflict,
        id: Option<&str>,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<Landed, StoreError> {
        let mut held = self.store.held();
        if let Some(id) = id {
            held.refuse_others(id, owner)?;
        }
        let length = self.bytes.len() as u64;
        let crc = crc32c_of(&self.bytes);
        let landed_as = held.place(name, policy, self.bytes.clone())?;
        let landed = Landed::new(id.unwrap_or(""), owner, &landed_as, length, Some(crc))
            .with_metadata(metadata.map(str::to_owned))
            .with_sha256(held.digest(&self.bytes));
        if let Some(id) = id {
            held.landed.insert(id.to_owned(), landed.clone());
        }
        held.tell(&landed);
        Ok(landed)
    }
}
