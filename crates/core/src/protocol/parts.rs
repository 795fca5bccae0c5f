//! S3 multipart uploads, whoever signs them: a [`PartsBackend`] creates
//! the upload, signs its parts, lists what the bucket holds, completes and
//! aborts it; the session here plans, sends and judges the parts, the same
//! for every backend. The bucket is the judge: a resumed run asks the
//! backend which parts the bucket holds, and sends only the others; the
//! journal keeps the upload id and key to ask with. A part refused as
//! unsigned or expired (403) or an upload the bucket no longer has (404)
//! begins the session again, signing afresh.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::header::ETAG;
use http::StatusCode;

use crate::body::{BlockData, UploadBody};
use crate::error::{code, Error};
use crate::plan::Block;
use crate::protocol::{
    Constraints, Finish, Handle, Holding, Landing, Protocol, Receipt, SavedSession, UploadSession,
    UploadTarget, Verdict,
};
use crate::retry;
use crate::source::lock;
use crate::transport::{Request, Response, Transport};

/// S3's smallest part but the last.
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART: u64 = 5 << 30;
/// S3's most parts of one upload.
pub const MAX_PARTS: u64 = 10_000;

/// The part size S3's rules allow for a file of `largest` bytes, from
/// `requested`: 5 MiB at least, large enough for 10 000 parts (in whole
/// MiB), 5 GiB at most.
pub fn part_size_for(requested: u64, largest: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let fits = largest.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    requested.max(MIN_PART).max(fits).min(MAX_PART)
}

/// A multipart upload a backend created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartsUpload {
    /// The backend's id for it.
    pub id: String,
    /// The object's key in the bucket.
    pub key: String,
}

/// A part the bucket holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPart {
    /// Its number, from 1.
    pub number: u32,
    /// The bucket's tag for it.
    pub etag: String,
    /// Its length.
    pub size: u64,
}

/// How a backend's completion came out.
#[derive(Debug)]
pub enum Completion {
    /// The object is complete: how it landed.
    Landed(Landing),
    /// The bucket refused the parts named, though they were acknowledged
    /// (one still being written by an attempt the client gave up on, or
    /// replaced): the upload is aborted and sent again afresh, for this
    /// reason.
    PartsRefused(Error),
}

/// Who creates, signs, lists, completes and aborts S3 multipart uploads
/// for a [`Parts`] session: a Companion backend over HTTP
/// ([`Companion`](super::Companion)), or the bucket itself with keys the
/// client holds.
#[async_trait]
pub trait PartsBackend: Send + Sync + fmt::Debug + 'static {
    /// Begins the upload of `name`, `total` bytes long.
    ///
    /// # Errors
    ///
    /// When the backend cannot be asked, or refuses.
    async fn create(
        &self,
        transport: &dyn Transport,
        name: &str,
        total: u64,
    ) -> Result<PartsUpload, Error>;

    /// The parts the bucket holds of `upload`; `None` when it is gone
    /// (completed, aborted, expired).
    ///
    /// # Errors
    ///
    /// When the backend cannot be asked.
    async fn held(
        &self,
        transport: &dyn Transport,
        upload: &PartsUpload,
    ) -> Result<Option<Vec<HeldPart>>, Error>;

    /// Readies parts `numbers` of `upload` to be sent (a backend that
    /// signs remotely fetches their URLs now).
    ///
    /// # Errors
    ///
    /// When the backend cannot be asked.
    async fn prepare(
        &self,
        transport: &dyn Transport,
        upload: &PartsUpload,
        numbers: &[u32],
    ) -> Result<(), Error>;

    /// Whether each part's request carries its CRC32C (the block is then
    /// read into memory first, to digest it).
    fn digests_parts(&self) -> bool {
        false
    }

    /// The request that sends `body` as part `number` of `upload`, with
    /// its CRC32C when [`digests_parts`](Self::digests_parts).
    ///
    /// # Errors
    ///
    /// When the part cannot be signed.
    fn part(
        &self,
        upload: &PartsUpload,
        number: u32,
        body: UploadBody,
        crc32c: Option<u32>,
    ) -> Result<Request, Error>;

    /// The one request of an empty file, which has no part (not every
    /// bucket takes an empty one); any success acknowledges it.
    ///
    /// # Errors
    ///
    /// When it cannot be built.
    fn empty(&self, upload: &PartsUpload) -> Result<Request, Error>;

    /// Completes `upload` of `total` bytes from `parts` (number and tag,
    /// in order; none for an empty file) and says how it came out.
    ///
    /// # Errors
    ///
    /// When the backend cannot be asked, or refuses.
    async fn complete(
        &self,
        transport: &dyn Transport,
        upload: &PartsUpload,
        parts: &[(u32, String)],
        total: u64,
    ) -> Result<Completion, Error>;

    /// Abandons `upload`, its parts too.
    ///
    /// # Errors
    ///
    /// When the backend cannot be asked.
    async fn abort(&self, transport: &dyn Transport, upload: &PartsUpload) -> Result<(), Error>;
}

/// S3 multipart uploads through `backend`: parts of 5 MiB to 5 GiB, at
/// most 10 000 (the block size grows to fit, see
/// [`Protocol::block_size_for`]), each acknowledged by its ETag.
#[derive(Debug, Clone)]
pub struct Parts {
    backend: Arc<dyn PartsBackend>,
}

impl Parts {
    /// Multipart uploads created and signed by `backend`.
    pub fn new(backend: Arc<dyn PartsBackend>) -> Self {
        Parts { backend }
    }
}

impl Protocol for Parts {
    fn block_size_for(&self, requested: u64, largest: u64) -> u64 {
        part_size_for(requested, largest)
    }

    fn open(&self, target: &UploadTarget<'_>) -> Result<Box<dyn UploadSession>, Error> {
        let upload = match target.saved.map(|s| &s.handle) {
            Some(Handle::Multipart { upload_id, key }) => Some(PartsUpload {
                id: upload_id.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        // The tags of parts acknowledged before: should the upload be
        // gone, they can still ask whether it completed.
        let etags = match (&upload, target.saved) {
            (Some(_), Some(saved)) => saved.receipts.iter().cloned().collect(),
            _ => BTreeMap::new(),
        };
        Ok(Box::new(Session {
            backend: self.backend.clone(),
            name: target.name.to_owned(),
            total: target.total,
            block_size: target.block_size,
            state: Mutex::new(State { upload, etags }),
        }))
    }
}

#[derive(Debug)]
struct State {
    upload: Option<PartsUpload>,
    /// The bucket's tag for each part it holds, by block index.
    etags: BTreeMap<u64, String>,
}

#[derive(Debug)]
struct Session {
    backend: Arc<dyn PartsBackend>,
    name: String,
    total: u64,
    block_size: u64,
    state: Mutex<State>,
}

impl Session {
    fn blocks(&self) -> u64 {
        self.total.div_ceil(self.block_size).max(1)
    }

    /// Bytes `start..end` of block `index`.
    fn range(&self, index: u64) -> (u64, u64) {
        let start = index * self.block_size;
        (start, (start + self.block_size).min(self.total))
    }

    /// Every part by number with its tag (none for an empty file), if
    /// every one was acknowledged.
    fn named_parts(&self) -> Option<Vec<(u32, String)>> {
        if self.total == 0 {
            return Some(Vec::new());
        }
        let etags = &lock(&self.state).etags;
        (0..self.blocks())
            .map(|i| etags.get(&i).map(|e| (i as u32 + 1, e.clone())))
            .collect()
    }

    fn upload(&self) -> Result<PartsUpload, Error> {
        lock(&self.state)
            .upload
            .clone()
            .ok_or_else(|| violation(&self.name, "no upload begun".into()))
    }

    fn context(&self, block: &Block) -> String {
        format!(
            " for part {} of {} of {:?}",
            block.index + 1,
            block.count,
            self.name
        )
    }
}

/// A backend that broke its protocol, for `name`.
pub(crate) fn violation(name: &str, what: String) -> Error {
    Error::new(
        crate::ErrorKind::Status,
        code::PROTOCOL_VIOLATION,
        format!("the multipart upload of {name:?} went wrong: {what}"),
    )
}

#[async_trait]
impl UploadSession for Session {
    fn constraints(&self) -> Constraints {
        Constraints {
            min_block_size: MIN_PART,
            max_block_size: MAX_PART,
            max_blocks: MAX_PARTS,
            in_memory: self.backend.digests_parts(),
            ..Constraints::default()
        }
    }

    async fn begin(&self, transport: &dyn Transport) -> Result<Holding, Error> {
        let known = lock(&self.state).upload.clone();
        let found = match &known {
            Some(upload) => self.backend.held(transport, upload).await?,
            None => None,
        };
        if let (Some(upload), None) = (&known, &found) {
            // Gone from the bucket's open uploads: completed by a run whose
            // answer was lost, perhaps. With every part's tag known, asking
            // for the completion again says (a backend that landed it
            // answers with the landing; a bucket checks the object).
            if let Some(parts) = self.named_parts() {
                let again = self
                    .backend
                    .complete(transport, upload, &parts, self.total)
                    .await;
                if let Ok(Completion::Landed(landing)) = again {
                    return Ok(Holding::Landed(landing));
                }
            }
        }
        let (upload, held) = match (known, found) {
            (Some(upload), Some(parts)) => (upload, parts),
            _ => {
                let created = self
                    .backend
                    .create(transport, &self.name, self.total)
                    .await?;
                // Known at once: whatever fails next, it can be aborted.
                lock(&self.state).upload = Some(created.clone());
                (created, Vec::new())
            }
        };
        // A part of another size than this run's block there is sent
        // again: the plan, not the bucket, says where parts start.
        let mut etags = BTreeMap::new();
        for part in held {
            let index = u64::from(part.number).wrapping_sub(1);
            if index < self.blocks() && self.total > 0 {
                let (start, end) = self.range(index);
                if part.size == end - start {
                    etags.insert(index, part.etag);
                }
            }
        }
        let wanted: Vec<u32> = (0..self.blocks())
            .filter(|i| !etags.contains_key(i) && self.total > 0)
            .map(|i| i as u32 + 1)
            .collect();
        self.backend.prepare(transport, &upload, &wanted).await?;
        let ranges = etags.keys().map(|&i| self.range(i)).collect();
        let mut state = lock(&self.state);
        state.upload = Some(upload);
        state.etags = etags;
        Ok(Holding::Ranges(ranges))
    }

    fn encode(&self, block: &Block, data: BlockData) -> Result<Request, Error> {
        let upload = self.upload()?;
        if self.total == 0 {
            return self.backend.empty(&upload);
        }
        let crc32c = data.bytes().map(|b| crc32c::crc32c(b));
        let mut body = UploadBody::new();
        body.push_block(data);
        self.backend
            .part(&upload, block.index as u32 + 1, body, crc32c)
    }

    fn judge(&self, block: &Block, response: &Response) -> Verdict {
        let status = response.status();
        if status.is_success() && self.total == 0 {
            return Verdict::Ack(Receipt::default());
        }
        if status.is_success() {
            let etag = response.headers().get(ETAG).and_then(|v| v.to_str().ok());
            return match etag {
                Some(etag) => {
                    lock(&self.state).etags.insert(block.index, etag.to_owned());
                    Verdict::Ack(Receipt(Some(etag.to_owned())))
                }
                None => Verdict::Fail(violation(
                    &self.name,
                    format!("the bucket answered part {} with no ETag", block.index + 1),
                )),
            };
        }
        let error = crate::error::status_error(response, &self.context(block));
        match status {
            // The signature expired, or the upload is gone: begin again.
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => Verdict::Resync(error),
            _ if retry::is_retryable_status(status) => {
                let after = error.retry_after();
                Verdict::Retry { error, after }
            }
            _ => Verdict::Fail(error),
        }
    }

    fn idempotent(&self, _block: &Block) -> bool {
        // A part sent again replaces itself.
        true
    }

    fn hedgeable(&self, _block: &Block) -> bool {
        // Not beside itself: a bucket may complete from the newest attempt
        // at a part, finished or not (Garage does), and refuses the
        // completion when that is a copy abandoned mid-body.
        false
    }

    async fn finish(&self, transport: &dyn Transport) -> Result<Finish, Error> {
        let upload = self.upload()?;
        let parts = self.named_parts().ok_or_else(|| {
            let etags = &lock(&self.state).etags;
            let missing = (0..self.blocks()).find(|i| !etags.contains_key(i));
            violation(
                &self.name,
                format!(
                    "part {} was never acknowledged",
                    missing.unwrap_or_default() + 1
                ),
            )
        })?;
        match self
            .backend
            .complete(transport, &upload, &parts, self.total)
            .await?
        {
            Completion::Landed(landing) => Ok(Finish::Landed(landing)),
            Completion::PartsRefused(reason) => {
                if let Err(e) = self.backend.abort(transport, &upload).await {
                    tracing::warn!("cannot abort the refused upload of {:?}: {e}", self.name);
                }
                let mut state = lock(&self.state);
                state.upload = None;
                state.etags.clear();
                Ok(Finish::Resync(reason))
            }
        }
    }

    async fn abort(&self, transport: &dyn Transport) -> Result<(), Error> {
        let upload = lock(&self.state).upload.clone();
        match upload {
            Some(upload) => self.backend.abort(transport, &upload).await,
            None => Ok(()),
        }
    }

    fn begin_may_create(&self) -> bool {
        true
    }

    fn saved(&self) -> SavedSession {
        let state = lock(&self.state);
        let handle = match &state.upload {
            Some(upload) => Handle::Multipart {
                upload_id: upload.id.clone(),
                key: upload.key.clone(),
            },
            None => Handle::Id { id: String::new() },
        };
        SavedSession {
            handle,
            receipts: state.etags.iter().map(|(&i, e)| (i, e.clone())).collect(),
        }
    }

    fn location(&self) -> Option<String> {
        lock(&self.state).upload.as_ref().map(|u| u.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_to_s3s_rules() {
        const MIB: u64 = 1 << 20;
        assert_eq!(part_size_for(1 << 20, 10 * MIB), MIN_PART, "5 MiB at least");
        assert_eq!(
            part_size_for(8 * MIB, 10 * MIB),
            8 * MIB,
            "a larger one is kept"
        );
        // 100 GiB in 10 000 parts: 10.24 MiB each, rounded up to 11 MiB.
        assert_eq!(part_size_for(8 * MIB, 100 << 30), 11 * MIB);
        assert_eq!(part_size_for(8 * MIB, 5 << 40), 525 * MIB);
        assert_eq!(part_size_for(8 * MIB, 100 << 40), MAX_PART, "5 GiB at most");
        assert_eq!(part_size_for(MIN_PART, 0), MIN_PART);
    }
}
