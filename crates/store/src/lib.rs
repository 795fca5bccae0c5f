//! Where a fileuploader receiver keeps uploads: the [`Store`] interface,
//! the records it deals in ([`Upload`], [`Landed`]) and its errors
//! ([`StoreError`], by [`ErrorKind`]).
//!
//! This crate owns what every store shares and nothing of HTTP: the
//! receiver's doors turn a [`Landed`] or a [`StoreError`] into their
//! protocol's answer. It depends on `fileuploader-wire` for byte ranges and
//! CRC32C arithmetic only. The stores themselves live elsewhere: the
//! receiver's embedded `FsStore` (a directory on disk) in
//! `fileuploader-server`, `S3Store` in `fileuploader-store-s3`.
//!
//! A store holds partial uploads (their bytes, their acknowledged blocks
//! with digests, their owner and when they were last touched) and lands
//! complete ones under a name. It keeps no truth in process memory: every
//! answer comes from what is stored, so any number of receivers sharing
//! one store agree. The protocols of the receiver drive it the same way:
//!
//! 1. [`Store::begin`] an upload (or find it with [`Store::upload`]);
//! 2. [`Store::write_block`] reserves a byte range and takes its bytes; the
//!    receiver checks them (length, digest) and then calls
//!    [`BlockWriter::acknowledge`], which returns only once the block would
//!    survive a crash; a writer dropped unacknowledged leaves no trace;
//! 3. once the acknowledged ranges cover the upload, [`Store::land`] puts it
//!    in place, fenced against writers still in flight. A file sent whole
//!    goes to a [`WholeWriter`] and lands through the same call;
//! 4. a store that keeps events ([`Store::keep_events`]) leaves an [`Event`]
//!    for each landing in the landing's own commit, until the receiver's
//!    hooks took it ([`Store::event_delivered`]).

pub mod conformance;
pub mod direct;
mod error;
mod landed;
mod memory;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fileuploader_wire::{ContentRange, CrcShift, RangeSet};

pub use self::direct::{
    ClaimedPart, Direct, DirectUpload, NewDirect, SignedForm, SignedUrl, StoreRequest, StoredPart,
    Watch,
};
pub use self::error::{ErrorKind, StoreError};
pub use self::landed::Landed;
pub use self::memory::MemoryStore;

/// What landing does when a file of the same name is there already. Every
/// store carries out each policy, so the list is exhaustive: a new policy
/// is a change to every store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnConflict {
    /// Refuse the upload ([`ErrorKind::Conflict`]; the receiver answers
    /// 409), before its first byte is stored when the name is taken
    /// already (the default).
    #[default]
    Refuse,
    /// Replace the existing file.
    Overwrite,
    /// Land under the first free name of `name (1).ext`, `name (2).ext`, …
    Rename,
}

/// Refuses ([`StoreError::others_id`]) to land under `id` for `owner` when
/// other credentials hold `id`, landed or in progress: what a store checks
/// before it lands anything under an id (two uploads of one id by different
/// credentials can each be begun before the other is known).
///
/// # Errors
///
/// [`ErrorKind::Forbidden`], or the store's failure to read.
pub async fn refuse_others(store: &dyn Store, id: &str, owner: &str) -> Result<(), StoreError> {
    if id.is_empty() {
        return Ok(());
    }
    let in_progress = store.upload(id).await?.map(|u| u.begun.owner);
    let landed = store.landed(id).await?.map(|l| l.owner);
    match in_progress.into_iter().chain(landed).any(|o| o != owner) {
        true => Err(StoreError::others_id(id)),
        false => Ok(()),
    }
}

/// The `n`th name [`OnConflict::Rename`] tries for `name`: `name` itself,
/// then `name (1).ext`, `name (2).ext`, …, the number before the last
/// part's extension (not a folder's).
pub fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    let base_at = name.rfind('/').map_or(0, |i| i + 1);
    match name[base_at..].rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => {
            format!("{}{stem} ({n}).{ext}", &name[..base_at])
        }
        _ => format!("{name} ({n})"),
    }
}

/// An upload to begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUpload {
    /// Its identifier, unique in the store.
    pub id: String,
    /// Its length in bytes.
    pub total: u64,
    /// The name it lands under unless the last block names another.
    pub name: String,
    /// Who began it: only the same credentials may touch it.
    pub owner: String,
    /// A part of a later concatenation: complete, it waits for
    /// [`Store::concatenate`] instead of landing.
    pub partial: bool,
    /// What the receiver's before-creation hook attached to it (a JSON
    /// object), carried to its landing and the landing's event; `Some`
    /// also says the hook settled its name.
    pub metadata: Option<String>,
}

/// How many bytes uploads in progress may hold: all together, and those of
/// one credential (not counted where access is open: everyone is then one
/// credential). An upload in blocks is charged its full length as it
/// begins, a whole file its bytes as they arrive, a concatenation its whole
/// length before anything is copied; each charge is checked and made in
/// one step, so two requests are never let into the same room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quota {
    /// The most bytes all uploads in progress may hold.
    pub total: Option<u64>,
    /// The most bytes the uploads in progress of one credential may hold.
    pub per_credential: Option<u64>,
}

impl Quota {
    /// No limit.
    pub fn none() -> Self {
        Quota::default()
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.total.is_some() || self.per_credential.is_some()
    }

    /// Why charging `more` bytes to `owner` would break the quota, given
    /// what all uploads and that owner's hold now; `None` when it fits.
    pub fn refusal(&self, owner: &str, more: u64, held: u64, held_by_owner: u64) -> Option<String> {
        if let Some(limit) = self.total.filter(|&l| held.saturating_add(more) > l) {
            return Some(format!(
                "uploads in progress hold {held} of the receiver's {limit} bytes and this one needs {more} more; try again when others have landed, or ask the operator for room"
            ));
        }
        let limit = self.per_credential.filter(|_| !owner.is_empty())?;
        (held_by_owner.saturating_add(more) > limit).then(|| {
            format!(
                "your uploads in progress hold {held_by_owner} of the {limit} bytes one credential may hold and this one needs {more} more; finish or delete one of them first"
            )
        })
    }
}

/// One acknowledged block of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Its first byte.
    pub start: u64,
    /// One past its last byte.
    pub end: u64,
    /// Its CRC32C, when the client sent one.
    pub crc32c: Option<u32>,
}

/// An upload in progress, as its store holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// What it was begun with.
    pub begun: NewUpload,
    /// Its acknowledged blocks, by first byte; shared between copies, so
    /// a copy of an upload of many blocks costs no copy of its list.
    pub blocks: std::sync::Arc<Vec<Block>>,
    /// The byte ranges its acknowledged blocks cover.
    pub received: RangeSet,
    /// Why its last landing failed, if it did.
    pub landing_error: Option<String>,
}

impl Upload {
    /// An upload with nothing received yet.
    pub fn new(begun: NewUpload) -> Self {
        Upload {
            begun,
            blocks: std::sync::Arc::default(),
            received: RangeSet::default(),
            landing_error: None,
        }
    }

    /// Adds an acknowledged block (replacing one that starts where it does).
    pub fn add(&mut self, block: Block) {
        let blocks = std::sync::Arc::make_mut(&mut self.blocks);
        match blocks.binary_search_by_key(&block.start, |b| b.start) {
            Ok(i) => blocks[i] = block,
            Err(i) => blocks.insert(i, block),
        }
        self.received.insert(block.start, block.end);
    }

    /// Whether every byte has been acknowledged.
    pub fn complete(&self) -> bool {
        self.received.covered() == self.begun.total
    }

    /// The whole file's CRC32C as the acknowledged blocks say it must be:
    /// their CRCs joined in order, when every block had one and they tile
    /// the file exactly.
    pub fn expected_crc32c(&self) -> Option<u32> {
        let mut at = 0;
        let mut crc = 0;
        let mut shift = CrcShift::new(0);
        for block in self.blocks.iter() {
            if block.start != at {
                return None;
            }
            if shift.len() != block.end - block.start {
                shift = CrcShift::new(block.end - block.start);
            }
            crc = shift.join(crc, block.crc32c?);
            at = block.end;
        }
        (at == self.begun.total).then_some(crc)
    }
}

/// Where the receiver keeps uploads. See the [module](self) for the order
/// of calls; every method reads or changes what is stored, so receivers
/// sharing a store see the same uploads.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Upload `id` in progress, as stored now.
    async fn upload(&self, id: &str) -> Result<Option<Upload>, StoreError>;

    /// Upload `id` in progress, for a block about to be written to it
    /// ([`write_block`](Self::write_block)): as [`upload`](Self::upload),
    /// except that a store shared by receivers may answer from what this
    /// process read of the upload before, once it has checked that the
    /// upload is still that same beginning. Such an answer may lack blocks
    /// acknowledged since through other receivers, never has one too many:
    /// nothing but a block's way may take it.
    async fn upload_for_block(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        self.upload(id).await
    }

    /// Begins an upload, durably, charging its length to `quota`
    /// ([`ErrorKind::Full`] when it does not fit); an upload of that id in
    /// progress already is returned as it is. An id other credentials hold,
    /// in progress or landed, is refused ([`ErrorKind::Forbidden`]) with
    /// nothing recorded: blocks acknowledged under it could never land.
    async fn begin(&self, new: NewUpload, quota: Quota) -> Result<Upload, StoreError>;

    /// Returns the one writer of `range` of `upload`: the range is
    /// reserved for it when its first bytes are written, or soon after this
    /// call if they are slow to come, and stays so until it is dropped
    /// ([`ErrorKind::Busy`], from this call or from the writer's first
    /// write, while another writes any byte of it). Bytes the upload has
    /// acknowledged already are compared with, never overwritten. `sized`
    /// says the request declared it carries all of `range` (a body that may
    /// end sooner, such as a chunked `PATCH`, is not sized); a store that
    /// keeps only whole requests may keep nothing of a sized body cut short.
    async fn write_block(
        &self,
        upload: &Upload,
        range: ContentRange,
        sized: bool,
    ) -> Result<Box<dyn BlockWriter>, StoreError>;

    /// Begins upload `new` as the concatenation of complete uploads
    /// `parts`, in order, their blocks (and digests) carried over, its
    /// length charged to `quota` before anything is copied; returns it
    /// complete, ready to land. The parts stay until discarded.
    async fn concatenate(
        &self,
        new: NewUpload,
        parts: &[Upload],
        quota: Quota,
    ) -> Result<Upload, StoreError>;

    /// A writer for a whole file arriving in one request from `owner`,
    /// its bytes charged to `quota` as they arrive ([`ErrorKind::Full`]
    /// once they do not fit).
    async fn write_whole(
        &self,
        owner: &str,
        quota: Quota,
    ) -> Result<Box<dyn WholeWriter>, StoreError>;

    /// Lands `arrival` as `name` by `policy`, durably, and records the
    /// landing: the one way a file lands in a store. A complete upload in
    /// blocks lands by [`land_blocks`](Self::land_blocks), a whole file's
    /// bytes by their writer ([`WholeWriter::place`]).
    async fn land(
        &self,
        arrival: Arrival,
        name: &str,
        policy: OnConflict,
    ) -> Result<Landed, StoreError> {
        match arrival {
            Arrival::Blocks(id) => self.land_blocks(&id, name, policy).await,
            Arrival::Whole {
                writer,
                id,
                owner,
                metadata,
            } => {
                writer
                    .place(name, policy, id.as_deref(), &owner, metadata.as_deref())
                    .await
            }
            Arrival::Direct {
                id,
                parts,
                max_size,
            } => self.land_direct(&id, &parts, max_size, policy).await,
        }
    }

    /// Direct uploads, if this store takes them: bytes that go straight
    /// to it on URLs it signs.
    fn direct(&self) -> Option<&dyn Direct> {
        None
    }

    /// Lands direct upload `id` from `parts`, for [`land`](Self::land):
    /// checks them against the parts the store holds (every one there,
    /// with the tag the client was given, the whole no longer than
    /// `max_size` nor other than declared), completes the object, digests
    /// it as stored, and records the landing; refused ([`ErrorKind::Conflict`])
    /// when its name went to another file since it began and `policy` is
    /// not to overwrite. An upload that landed already answers its
    /// landing.
    async fn land_direct(
        &self,
        id: &str,
        parts: &[ClaimedPart],
        max_size: Option<u64>,
        policy: OnConflict,
    ) -> Result<Landed, StoreError> {
        let _ = (parts, max_size, policy);
        Err(StoreError::new(
            ErrorKind::Invalid,
            format!("upload {id}: this receiver's store takes no direct uploads"),
        ))
    }

    /// Lands complete upload `id` as `name`, for [`land`](Self::land):
    /// checks the stored bytes against the acknowledged blocks, puts them in
    /// place by `policy`, and records the landing, all fenced against
    /// writers in flight. A failed landing is recorded on the upload and
    /// may be tried again; an upload that landed already answers its
    /// landing.
    async fn land_blocks(
        &self,
        id: &str,
        name: &str,
        policy: OnConflict,
    ) -> Result<Landed, StoreError>;

    /// The landing of upload `id`, if it landed.
    async fn landed(&self, id: &str) -> Result<Option<Landed>, StoreError>;

    /// Discards upload `id`, its bytes and its records; nothing if unknown.
    async fn discard(&self, id: &str) -> Result<(), StoreError>;

    /// Discards every upload untouched for `ttl`, and partial data no
    /// upload owns; returns how many uploads went. A part of a
    /// concatenation ([`NewUpload::partial`]) stays while any part of the
    /// same owner was touched within `ttl`: a part done early waits for
    /// its final, which comes once the owner's last part is done.
    async fn expire(&self, ttl: Duration) -> Result<usize, StoreError>;

    /// Whether a landed file is called `name` already. A file that
    /// upload `id` placed there and never recorded as landed (its landing
    /// cut off between the two, on a store that cannot do both at once)
    /// does not count: landing `id` again takes its place.
    async fn name_taken(&self, name: &str, id: Option<&str>) -> Result<bool, StoreError>;

    /// From now on, digests each landing's bytes with SHA-256 as it lands
    /// and keeps the digest on its record ([`Landed::sha256`]): what the
    /// receiver's signed receipts vouch for. A store that cannot refuses
    /// ([`ErrorKind::Invalid`]).
    fn keep_digests(&self) -> Result<(), StoreError> {
        Err(StoreError::new(
            ErrorKind::Invalid,
            "this store does not digest the files it lands (SHA-256), so it cannot back receipts",
        ))
    }

    /// From now on, keeps an event for each landing in the landing's own
    /// commit (an outbox), until [`event_delivered`](Self::event_delivered):
    /// what the receiver's after-landing hooks are told. A store without
    /// an outbox refuses ([`ErrorKind::Invalid`]).
    fn keep_events(&self) -> Result<(), StoreError> {
        Err(StoreError::new(
            ErrorKind::Invalid,
            "this store keeps no events of what landed, so it cannot feed hooks",
        ))
    }

    /// Claims, for this process to deliver, up to `limit` landing events
    /// not delivered yet whose time has come, oldest first: no other
    /// receiver sharing the store is given them for `lease`, unless this
    /// one says first how their delivery went. So each event is delivered
    /// once by the fleet, unless a deliverer outlives its lease.
    async fn claim_events(
        &self,
        _limit: usize,
        _lease: Duration,
    ) -> Result<Vec<Event>, StoreError> {
        Ok(Vec::new())
    }

    /// Event `key` was delivered: it is kept no more.
    async fn event_delivered(&self, _key: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Event `key` could not be delivered: it is tried again after
    /// `retry_in`.
    async fn event_failed(&self, _key: &str, _retry_in: Duration) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A landing the application is to hear of, as the store's outbox keeps
/// it until it is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its idempotency key: the upload id (or, for a file sent whole
    /// without one, a key of its own). A consumer drops a repeat by it.
    pub key: String,
    /// What landed.
    pub landed: Landed,
    /// How many deliveries failed so far.
    pub attempts: u32,
}

impl Event {
    /// The event as the hooks receive it: one JSON object.
    pub fn to_json(&self) -> String {
        let landed = &self.landed;
        serde_json::json!({
            "type": "landed",
            "key": self.key,
            "upload_id": landed.id,
            "name": landed.name,
            "length": landed.length,
            "crc32c": landed.crc32c.map(fileuploader_wire::format_crc32c),
            "owner": landed.owner,
            "metadata": landed.metadata.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()),
            "attempt": self.attempts + 1,
        })
        .to_string()
    }
}

/// Takes bytes in order: what the two writers share.
#[async_trait]
pub trait WriteBytes: Send {
    /// Takes the next bytes. The caller bounds their total (by the block's
    /// length, or the largest upload).
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError>;
}

/// Takes one reserved block's bytes; dropping it unacknowledged releases
/// the range and leaves no acknowledged trace.
#[async_trait]
pub trait BlockWriter: WriteBytes {
    /// Ends the bytes; says whether every byte that overlapped
    /// acknowledged bytes was the same as them.
    async fn finish(&mut self) -> Result<bool, StoreError>;

    /// Records the first `len` bytes of the reserved range as a block
    /// (all of them for a block that arrived whole), with its CRC32C if it
    /// had one, once its bytes and its record are durable; returns the
    /// upload as it is then, or at least as the writer was given it plus
    /// this block (a store shared by several receivers may not look again
    /// on a block's way, so blocks others acknowledged meanwhile can be
    /// missing; a landing reads the upload again).
    async fn acknowledge(
        self: Box<Self>,
        len: u64,
        crc32c: Option<u32>,
    ) -> Result<Upload, StoreError>;
}

/// What [`Store::land`] lands.
pub enum Arrival {
    /// Complete upload `id`, sent in blocks.
    Blocks(String),
    /// A whole file's bytes, as its writer took them, recorded under `id`
    /// for `owner` when there is an id.
    Whole {
        /// The writer that took the bytes.
        writer: Box<dyn WholeWriter>,
        /// The upload id the file was sent under, if any.
        id: Option<String>,
        /// Whose credentials sent it.
        owner: String,
        /// What the before-creation hook attached, if it was asked.
        metadata: Option<String>,
    },
    /// Direct upload `id`, its bytes sent straight to the store in parts.
    Direct {
        /// The upload.
        id: String,
        /// Its parts, as the client says it sent them.
        parts: Vec<ClaimedPart>,
        /// The most bytes a file may have, if the receiver sets a limit.
        max_size: Option<u64>,
    },
}

impl Arrival {
    /// Complete upload `id`.
    pub fn blocks(id: impl Into<String>) -> Self {
        Arrival::Blocks(id.into())
    }

    /// The bytes `writer` took, from `owner`, under `id` if any.
    pub fn whole(writer: Box<dyn WholeWriter>, id: Option<&str>, owner: &str) -> Self {
        Arrival::Whole {
            writer,
            id: id.map(str::to_owned),
            owner: owner.to_owned(),
            metadata: None,
        }
    }

    /// The same arrival with `metadata` from the before-creation hook
    /// (only a whole file carries its own; an upload in blocks keeps its
    /// metadata from [`NewUpload::metadata`]).
    #[must_use]
    pub fn with_metadata(mut self, metadata: Option<String>) -> Self {
        if let Arrival::Whole { metadata: kept, .. } = &mut self {
            *kept = metadata;
        }
        self
    }
}

impl fmt::Debug for Arrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arrival::Blocks(id) => f.debug_tuple("Blocks").field(id).finish(),
            Arrival::Whole { id, owner, .. } => f
                .debug_struct("Whole")
                .field("id", id)
                .field("owner", owner)
                .finish_non_exhaustive(),
            Arrival::Direct { id, parts, .. } => f
                .debug_struct("Direct")
                .field("id", id)
                .field("parts", &parts.len())
                .finish_non_exhaustive(),
        }
    }
}

/// Takes the bytes of a file sent whole; dropping it keeps nothing.
#[async_trait]
pub trait WholeWriter: WriteBytes {
    /// Places the bytes as `name` by `policy`, durably, recording the
    /// landing under `id` for `owner` when there is an id, with the
    /// before-creation hook's `metadata`. Its store's [`Store::land`]
    /// calls it, for [`Arrival::Whole`].
    async fn place(
        self: Box<Self>,
        name: &str,
        policy: OnConflict,
        id: Option<&str>,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<Landed, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(total: u64) -> Upload {
        Upload::new(NewUpload {
            id: "u".into(),
            total,
            name: "n".into(),
            owner: String::new(),
            partial: false,
            metadata: None,
        })
    }

    #[test]
    fn renamed_names_number_the_last_parts_stem() {
        assert_eq!(numbered("a/b.tar.gz", 0), "a/b.tar.gz");
        assert_eq!(numbered("a/b.tar.gz", 2), "a/b.tar (2).gz");
        assert_eq!(numbered("x.d/noext", 1), "x.d/noext (1)");
        assert_eq!(numbered(".hidden", 1), ".hidden (1)");
    }

    #[test]
    fn expected_crc_joins_blocks_that_tile_the_file() {
        let data = b"hello, world";
        let mut u = upload(12);
        u.add(Block {
            start: 5,
            end: 12,
            crc32c: Some(crc32c::crc32c(&data[5..])),
        });
        assert_eq!(u.expected_crc32c(), None, "a gap at the start");
        u.add(Block {
            start: 0,
            end: 5,
            crc32c: Some(crc32c::crc32c(&data[..5])),
        });
        assert!(u.complete());
        assert_eq!(u.expected_crc32c(), Some(crc32c::crc32c(data)));
        u.add(Block {
            start: 0,
            end: 5,
            crc32c: None,
        });
        assert_eq!(u.expected_crc32c(), None, "a block without a CRC");
    }
}
