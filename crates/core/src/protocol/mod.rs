//! Upload sessions: how one source travels in one protocol, and how the
//! receiver's answers decide what is sent and whether the file landed.
//!
//! **This layer may still change** as tus 1.0 and the IETF resumable-upload
//! draft join the segmented multipart convention; it is public so that
//! other protocols can be written outside this crate.
//!
//! A [`Protocol`] opens one [`UploadSession`] per source of a run. The
//! scheduler then drives it:
//!
//! 1. [`begin`](UploadSession::begin) asks the receiver what it already holds
//!    ([`Holding`]); that, not the local resume journal, seeds the plan. Only
//!    a receiver that cannot answer leaves the journal to decide, and the run
//!    says so.
//! 2. Each block is [`encode`](UploadSession::encode)d into a request within
//!    the session's [`Constraints`], sent, and its response
//!    [`judge`](UploadSession::judge)d: acknowledged, retried, resynced (the
//!    receiver holds other ranges than thought: begin again and re-plan), or
//!    failed. A request whose outcome is unknown (the connection broke after
//!    its body left) is sent again only when the session calls it
//!    [`idempotent`](UploadSession::idempotent); otherwise the session is
//!    resynced.
//! 3. Once every block of the source is acknowledged,
//!    [`finish`](UploadSession::finish) confirms that the file landed whole
//!    ([`Landing`]); the core checks its length and digest against what was
//!    sent.
//! 4. On cancel or failure, [`abort`](UploadSession::abort) discards what the
//!    receiver holds, where the protocol can and nothing could resume it.
//!
//! [`saved`](UploadSession::saved) is what a later run needs to find the
//! upload again; the journal keeps it, as a cache, never as the judge.

mod companion;
pub mod parts;
mod resumable;
mod segmented;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, Uri};

use crate::body::BlockData;
use crate::error::Error;
use crate::form::FormField;
use crate::plan::Block;
use crate::source::lock;
use crate::transport::{Request, Response, Transport};

pub use companion::Companion;
pub use parts::{Parts, PartsBackend};
pub use resumable::{IetfDraft, Tus};
pub use segmented::SegmentedMultipart;

pub use crate::answer::FinalAnswer;

/// Asks the server at `url` by `OPTIONS` which protocol it speaks: tus 1.0
/// when it answers with `Tus-Version`, the IETF draft when it answers with
/// `Upload-Draft-Interop-Version` (at that version), the segmented
/// multipart convention otherwise.
///
/// # Errors
///
/// When the server cannot be reached.
pub async fn discover(
    transport: &dyn Transport,
    url: &Uri,
    headers: &HeaderMap,
) -> Result<std::sync::Arc<dyn Protocol>, Error> {
    use fileuploader_wire::resumable::{INTEROP_VERSION, TUS_VERSION};
    let mut request = Request::new(crate::body::UploadBody::new());
    *request.method_mut() = http::Method::OPTIONS;
    *request.uri_mut() = url.clone();
    *request.headers_mut() = headers.clone();
    let response = transport.send(request).await?;
    let answered = response.headers();
    if answered.contains_key(TUS_VERSION) {
        return Ok(std::sync::Arc::new(Tus));
    }
    let interop = answered
        .get(INTEROP_VERSION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    Ok(match interop {
        Some(version) => std::sync::Arc::new(IetfDraft::new(version)),
        None => std::sync::Arc::new(SegmentedMultipart),
    })
}

/// Which digests travel with the blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Integrity {
    /// None: the bytes are sent as they are, and a landing is confirmed by
    /// its length only.
    None,
    /// Each block carries the CRC32C of its bytes (in the segmented
    /// protocol, an `X-Block-CRC32C` form field after the file part); the
    /// reference receiver refuses a block that does not match with 460, and
    /// the block is sent again. The CRCs, combined, are also checked against
    /// the digest of the landed file when the receiver states one. CRC32C
    /// runs at about 10 GB/s on one core here, against 1.5 GB/s for SHA-256
    /// with the SHA instructions.
    #[default]
    BlockCrc32c,
}

/// What a manager's sessions learnt of the endpoints they upload to,
/// shared by every job of the manager: so that the many files of a run do
/// not each find out the same thing with a request of their own. Kept per
/// manager, not per process: the same address may be another server an
/// hour later.
#[derive(Debug, Default)]
pub struct Endpoints {
    /// Endpoints found not to answer status queries, by URL.
    silent: Mutex<HashSet<String>>,
}

impl Endpoints {
    /// Whether `url` was found not to answer status queries (and has not
    /// answered one since).
    pub fn is_silent(&self, url: &Uri) -> bool {
        lock(&self.silent).contains(&url.to_string())
    }

    /// Records whether `url` answers status queries.
    pub fn set_answers(&self, url: &Uri, answers: bool) {
        let mut silent = lock(&self.silent);
        if answers {
            silent.remove(&url.to_string());
        } else {
            silent.insert(url.to_string());
        }
    }
}

/// What a protocol needs to know about one source of a job.
#[derive(Debug)]
pub struct UploadTarget<'a> {
    /// Where the requests go.
    pub url: &'a Uri,
    /// The job's headers, validated; they replace defaults of the same name.
    pub headers: &'a HeaderMap,
    /// The job's form fields.
    pub fields: &'a FormField,
    /// The file part's form name.
    pub key: &'a str,
    /// The remote file name.
    pub name: &'a str,
    /// The source's length in bytes.
    pub total: u64,
    /// Which digests to send.
    pub integrity: Integrity,
    /// How many blocks the job may have in flight (its `thread_num`).
    pub threads: usize,
    /// The job's block size.
    pub block_size: u64,
    /// What an earlier, interrupted run kept to find its upload again.
    pub saved: Option<&'a SavedSession>,
    /// What the manager's sessions learnt of the endpoints they upload to.
    pub endpoints: &'a Arc<Endpoints>,
}

impl UploadTarget<'_> {
    /// The headers every request of a session starts from: a
    /// `User-Agent`, then the job's own (which replace it), without a
    /// `Content-Type`, which each protocol sets for itself.
    pub fn base_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!("fileuploader/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in self.headers {
            if name != http::header::CONTENT_TYPE {
                headers.insert(name, value.clone());
            }
        }
        headers
    }
}

/// A header value from text, or error -10 naming it.
pub(crate) fn header_value(s: &str) -> Result<http::HeaderValue, Error> {
    http::HeaderValue::from_str(s).map_err(|_| {
        Error::invalid(
            crate::error::code::INVALID_OPTION,
            format!("cannot send header {s:?}"),
        )
    })
}

/// What a later run needs to find an upload again, kept in the resume
/// journal (as JSON, beside the blocks' receipts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSession {
    /// The receiver's handle on the upload, by kind.
    pub handle: Handle,
    /// The receipts of blocks acknowledged in earlier runs, by block index
    /// (ETags, say, that a finish must name).
    pub receipts: Vec<(u64, String)>,
}

impl SavedSession {
    /// A saved session with this upload id ([`Handle::Id`]) and no
    /// receipts.
    pub fn new(upload_id: impl Into<String>) -> Self {
        SavedSession::of(Handle::Id {
            id: upload_id.into(),
        })
    }

    /// A saved session with this handle and no receipts.
    pub fn of(handle: Handle) -> Self {
        SavedSession {
            handle,
            receipts: Vec::new(),
        }
    }
}

/// How a session finds its upload again: the one thing it saves besides
/// the blocks' receipts. Serialized by the resume journal as JSON tagged by
/// `kind`, so a protocol's saved state is never split out of a string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Handle {
    /// An upload id (the segmented protocol's, which the client makes up),
    /// or any handle a protocol outside this crate keeps as text.
    Id {
        /// The id.
        id: String,
    },
    /// The upload's own URL on the receiver (tus, the IETF draft).
    Url {
        /// The URL, as the receiver gave it.
        url: String,
    },
    /// An upload that its first request creates (creation with upload)
    /// under an idempotency key; once that request is acknowledged, block
    /// 0's receipt is the upload's URL.
    FirstRequest {
        /// The idempotency key the creation carries.
        key: String,
    },
    /// An upload sent as partial uploads joined by a final request (tus
    /// concatenation): each block's receipt names its part.
    Parts,
    /// An S3 multipart upload signed by a backend: its id there, and the
    /// object's key; each block's receipt is its part's ETag.
    Multipart {
        /// The backend's upload id.
        upload_id: String,
        /// The object's key in the bucket.
        key: String,
    },
}

impl Handle {
    /// Reads a handle from the text the first journal format kept:
    /// `concatenation`, `creation-with-upload KEY`, an upload URL, or an
    /// upload id.
    pub(crate) fn from_v1(text: &str) -> Self {
        if text == "concatenation" {
            return Handle::Parts;
        }
        if let Some(key) = text.strip_prefix("creation-with-upload") {
            if key.is_empty() || key.starts_with(' ') {
                return Handle::FirstRequest {
                    key: key.trim_start().to_owned(),
                };
            }
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            return Handle::Url {
                url: text.to_owned(),
            };
        }
        Handle::Id {
            id: text.to_owned(),
        }
    }
}

/// How the blocks of a source may be planned and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Constraints {
    /// Blocks must arrive in order, one at a time.
    pub sequential: bool,
    /// The most blocks of this source in flight at once (the job's
    /// `thread_num` bounds them all).
    pub max_in_flight: usize,
    /// The smallest block size (every block but the last is this big).
    pub min_block_size: u64,
    /// The largest block size.
    pub max_block_size: u64,
    /// The most blocks a source may have.
    pub max_blocks: u64,
    /// Each block's bytes are read into memory before they are encoded
    /// (for a digest that goes in a request header); memory stays bounded
    /// by the blocks in flight.
    pub in_memory: bool,
}

impl Default for Constraints {
    /// Any order, any number in flight, any block size and count.
    fn default() -> Self {
        Constraints {
            sequential: false,
            max_in_flight: usize::MAX,
            min_block_size: 1,
            max_block_size: u64::MAX,
            max_blocks: u64::MAX,
            in_memory: false,
        }
    }
}

/// What the receiver holds of an upload when a session begins.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Holding {
    /// It answered: these half-open byte ranges (none for an upload it does
    /// not know).
    Ranges(Vec<(u64, u64)>),
    /// It answered: the file has landed already.
    Landed(Landing),
    /// It cannot say (it does not answer queries): the journal decides.
    Unknown,
}

/// What the receiver made of one block.
#[derive(Debug)]
#[non_exhaustive]
pub enum Verdict {
    /// Stored; the receipt is kept with the acknowledgement.
    Ack(Receipt),
    /// The receiver took this request's bytes, but not yet the whole
    /// block (it bounds what one request may carry): send the rest now.
    /// Not a retry: nothing failed.
    More,
    /// Send the same block again, after at least this long.
    Retry {
        /// Why, for the message if retries run out.
        error: Error,
        /// The receiver's `Retry-After`, if it gave one.
        after: Option<Duration>,
    },
    /// The receiver holds other ranges than thought (it lost or discarded
    /// the upload): begin again and re-plan the source.
    Resync(Error),
    /// The job fails with this error.
    Fail(Error),
}

/// What a receiver gave for an acknowledged block, such as an ETag or a new
/// offset; kept with the acknowledgement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt(pub Option<String>);

/// How a session's finish came out.
#[derive(Debug)]
#[non_exhaustive]
pub enum Finish {
    /// The file landed (confirmed or not, see [`Landing::confirmed`]).
    Landed(Landing),
    /// The receiver does not hold the whole upload after all: begin again
    /// and send what it lacks.
    Resync(Error),
}

/// What is known of a landed file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Landing {
    /// Whether the receiver said so. An unconfirmed landing is a receiver
    /// that acknowledged every block but cannot answer for the file.
    pub confirmed: bool,
    /// The name it landed under, if stated.
    pub name: Option<String>,
    /// Its length, if stated.
    pub length: Option<u64>,
    /// Its CRC32C, if stated.
    pub crc32c: Option<u32>,
    /// The receiver's answer that reported the landing, where there was
    /// one.
    pub answer: Option<FinalAnswer>,
}

impl Landing {
    /// A landing the receiver confirmed, with what it stated.
    pub fn confirmed(name: Option<String>, length: Option<u64>, crc32c: Option<u32>) -> Self {
        Landing {
            confirmed: true,
            name,
            length,
            crc32c,
            answer: None,
        }
    }

    /// The landing, as `response` reported it.
    pub fn answered(mut self, response: &Response) -> Self {
        self.answer = Some(FinalAnswer::of(response));
        self
    }

    /// A landing nobody can confirm.
    pub fn unconfirmed() -> Self {
        Landing::default()
    }
}

/// A wire protocol: opens a session per source.
pub trait Protocol: Send + Sync + fmt::Debug + 'static {
    /// Prepares the session of one source; called once per source per run,
    /// without I/O, so per-source work (framing, headers) is done once.
    ///
    /// # Errors
    ///
    /// When the source cannot be sent in this protocol (code -10).
    fn open(&self, target: &UploadTarget<'_>) -> Result<Box<dyn UploadSession>, Error>;

    /// The block size a run sends sources of up to `largest` bytes in,
    /// given the job's `requested` one: a protocol with rules on part
    /// sizes (S3's: 5 MiB but the last, 10 000 parts) raises it to fit,
    /// and the run says so in the job's notices. The job's, by default.
    fn block_size_for(&self, requested: u64, largest: u64) -> u64 {
        let _ = largest;
        requested
    }
}

/// One source's upload in one protocol. See the [module docs](self) for the
/// order in which the core calls these.
#[async_trait]
pub trait UploadSession: Send + Sync + fmt::Debug {
    /// How the source's blocks may be planned and sent: checked against
    /// the job when the session opens, and asked again as blocks are sent,
    /// so a session may loosen or tighten them once it has begun.
    fn constraints(&self) -> Constraints {
        Constraints::default()
    }

    /// Creates the upload or looks it up, and says what the receiver holds.
    ///
    /// # Errors
    ///
    /// When the receiver cannot be asked, or refuses.
    async fn begin(&self, transport: &dyn Transport) -> Result<Holding, Error>;

    /// The request carrying `data`, the bytes of `block`.
    ///
    /// # Errors
    ///
    /// When the request cannot be built (code -10).
    fn encode(&self, block: &Block, data: BlockData) -> Result<Request, Error>;

    /// What the receiver's `response` to `block` means.
    fn judge(&self, block: &Block, response: &Response) -> Verdict;

    /// Whether sending `block` twice is harmless, so a request whose outcome
    /// is unknown may simply be sent again.
    fn idempotent(&self, block: &Block) -> bool;

    /// Whether `block` may be sent again while its first request is still
    /// in flight, the slower copy then abandoned mid-body (a hedge, see
    /// [`RetryPolicy::hedge`](crate::RetryPolicy::hedge)): by default,
    /// when it is [idempotent](Self::idempotent).
    fn hedgeable(&self, block: &Block) -> bool {
        self.idempotent(block)
    }

    /// Whether `block`'s request, cut short by the connection, is better
    /// resumed where the receiver said it keeps the upload (an interim
    /// answer told it) than sent again: the core then asks the receiver
    /// again ([`begin`](Self::begin)) instead of retrying.
    fn resumable_after_cut(&self, _block: &Block) -> bool {
        false
    }

    /// Confirms, once every block is acknowledged, that the file landed.
    ///
    /// # Errors
    ///
    /// When the receiver cannot be asked, or says the upload failed.
    async fn finish(&self, transport: &dyn Transport) -> Result<Finish, Error>;

    /// Discards what the receiver holds of the upload, where the protocol
    /// can; the core calls it on cancel or failure when nothing could resume
    /// the upload later.
    ///
    /// # Errors
    ///
    /// When the receiver cannot be asked; the core only logs it.
    async fn abort(&self, transport: &dyn Transport) -> Result<(), Error>;

    /// What a later run needs to find this upload again.
    fn saved(&self) -> SavedSession;

    /// Whether a begin may make something at the receiver that only its
    /// answer names, and that nothing would find again (an S3 multipart
    /// upload's creation; a tus creation carries an idempotency key
    /// instead). A cancel then lets a begin in flight end, within a bound,
    /// so that what it made can be discarded.
    fn begin_may_create(&self) -> bool {
        false
    }

    /// What the user should hear of how the session went (a protocol
    /// feature the server lacks, say); the core asks after each begin.
    fn notices(&self) -> Vec<String> {
        Vec::new()
    }

    /// The upload's own URL on the receiver once it landed, where the
    /// protocol has one (tus and the IETF draft); the core reports it with
    /// the landing.
    fn location(&self) -> Option<String> {
        None
    }
}
