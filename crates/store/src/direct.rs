//! Uploads whose bytes go straight to the store, on URLs the store signs
//! for the receiver (a browser's multipart upload to a bucket): the
//! receiver begins each one under its own rules, signs its parts, and
//! lands it by completing it, through [`Store::land`](crate::Store::land)
//! like every other landing ([`Arrival::Direct`](crate::Arrival::Direct)).
//!
//! The receiver never sees these bytes. What it vouches for is what the
//! store holds when it completes the upload: the parts the store lists,
//! their sizes against what was declared, and the landed object's digests
//! as the store reads it back.
//!
//! A client may also place a file itself, on a form or requests the store
//! signed ([`Direct::sign_form`], [`Direct::sign_request`]), completing it
//! with the store: the receiver then [watches](Watch) for it, and records
//! its landing when it arrives.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::{OnConflict, Quota, StoreError};

/// The most parts one direct upload may have (S3's rule).
pub const MAX_PARTS: u32 = 10_000;

/// A direct upload to begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDirect {
    /// Its identifier, unique in the store; the client names the upload
    /// by it on every later request.
    pub id: String,
    /// The name it lands under (settled here: the store's key for it is
    /// chosen as it begins).
    pub name: String,
    /// Who began it: only the same credentials may touch it.
    pub owner: String,
    /// The length the client declared, if it did; checked at landing.
    pub declared: Option<u64>,
    /// The file's media type, stored with the object.
    pub content_type: Option<String>,
    /// What the receiver's before-creation hook attached to it (a JSON
    /// object), carried to its landing.
    pub metadata: Option<String>,
}

/// A direct upload in progress, as its store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectUpload {
    /// What it was begun with, its name as settled.
    pub begun: NewDirect,
    /// Where its object lands in the store.
    pub key: String,
    /// The store's bucket (or its like).
    pub bucket: String,
    /// The store's own name for the upload (S3's multipart upload id):
    /// the client never needs it.
    pub handle: String,
    /// The URL of the object once it lands.
    pub location: String,
}

/// A file a client places in the store itself, on what the receiver signed
/// for it (a form, or a multipart upload the client begins and completes
/// with the store): nothing tells the receiver when it lands, so it watches
/// for it ([`Direct::watch`], [`Direct::settle_watches`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The id its landing takes, unless its key is watched already.
    pub id: String,
    /// Where the file lands: a key [`Direct::key_of`] gave.
    pub key: String,
    /// Whose credentials signed for it.
    pub owner: String,
    /// The most bytes it may hold: a larger file is removed, not landed.
    pub max_size: u64,
    /// How long the client may still take (its signature's lifetime).
    pub valid_for: Duration,
}

/// A part the store holds of a direct upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    /// Its number, from 1.
    pub number: u32,
    /// The store's tag for its bytes.
    pub etag: String,
    /// Its length in bytes.
    pub size: u64,
}

/// A URL the store signed: valid until `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    /// The URL, its signature in its query.
    pub url: String,
    /// When it stops being accepted.
    pub expires: SystemTime,
}

/// An HTML form the store accepts a whole small file by (S3's `POST`
/// policy): the file goes last, as the field `file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedForm {
    /// Where the form is posted.
    pub url: String,
    /// Its fields, in order.
    pub fields: Vec<(String, String)>,
    /// When the policy stops being accepted.
    pub expires: SystemTime,
}

/// What a store that takes direct uploads does for the receiver. Its
/// landing is [`Store::land_direct`](crate::Store::land_direct).
#[async_trait]
pub trait Direct: Send + Sync {
    /// Begins direct upload `new`, durably: its name checked by `policy`
    /// (a taken name is refused, or numbered, as the policy says), its
    /// declared length charged to `quota`.
    async fn begin_direct(
        &self,
        new: NewDirect,
        quota: Quota,
        policy: OnConflict,
    ) -> Result<DirectUpload, StoreError>;

    /// Direct upload `id` in progress, as recorded.
    async fn direct_upload(&self, id: &str) -> Result<Option<DirectUpload>, StoreError>;

    /// A URL part `number` (1 to [`MAX_PARTS`]) of `upload` may be sent
    /// to with `PUT`, for `valid_for`.
    async fn sign_part(
        &self,
        upload: &DirectUpload,
        number: u32,
        valid_for: Duration,
    ) -> Result<SignedUrl, StoreError>;

    /// The parts the store holds of `upload`, by number.
    async fn stored_parts(&self, upload: &DirectUpload) -> Result<Vec<StoredPart>, StoreError>;

    /// Watches for the file `watch` describes, durably (before the
    /// signature that places it is handed out); watching a key again
    /// extends its watch. Returns the id its landing takes.
    async fn watch(&self, watch: Watch) -> Result<String, StoreError>;

    /// Settles every watch: a file that arrived since its watch began is
    /// landed (read back, recorded, its event left), or removed if larger
    /// than its watch allows; a watch whose time ran out with nothing
    /// arrived is dropped. Returns the landings.
    async fn settle_watches(&self) -> Result<Vec<crate::Landed>, StoreError>;

    /// The parts the store holds of multipart upload `upload_id` at `key`,
    /// one a client began itself on a request [`sign_request`] signed
    /// (only keys of files below the store's folder).
    ///
    /// [`sign_request`]: Direct::sign_request
    async fn parts_at(&self, key: &str, upload_id: &str) -> Result<Vec<StoredPart>, StoreError>;

    /// Abandons `upload`: its parts and its record go.
    async fn abort_direct(&self, upload: &DirectUpload) -> Result<(), StoreError>;

    /// The key a file named `name` lands at.
    fn key_of(&self, name: &str) -> String;

    /// A URL for one request a client makes of the store itself (Uppy's
    /// `signRequest`), for `valid_for`. Only the keys of files below the
    /// store's folder are signed; a new file's (`PutObject`,
    /// `CreateMultipart`) is made from its name, the others must be such a
    /// key. Bytes and completions sent this way bypass the receiver:
    /// nothing records their landing.
    async fn sign_request(
        &self,
        request: &StoreRequest,
        valid_for: Duration,
    ) -> Result<SignedUrl, StoreError>;

    /// A form a small file named `name` (of at most `max_size` bytes) may
    /// be posted to the store by, for `valid_for`. Such a file bypasses
    /// the receiver altogether: nothing records its landing.
    async fn sign_form(
        &self,
        name: &str,
        content_type: Option<&str>,
        max_size: u64,
        valid_for: Duration,
    ) -> Result<SignedForm, StoreError>;
}

/// One request a client makes of the store itself, to be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreRequest {
    /// A whole file, `name`, in one `PUT`.
    PutObject {
        /// The file's name, settled by the receiver.
        name: String,
    },
    /// Beginning a multipart upload of `name`.
    CreateMultipart {
        /// The file's name, settled by the receiver.
        name: String,
    },
    /// A part of a multipart upload at `key`.
    UploadPart {
        /// The object's key, as the store gave it.
        key: String,
        /// The store's id of the upload.
        upload_id: String,
        /// The part's number, 1 to [`MAX_PARTS`].
        number: u32,
    },
    /// The parts of a multipart upload at `key`.
    ListParts {
        /// The object's key.
        key: String,
        /// The store's id of the upload.
        upload_id: String,
    },
    /// Completing a multipart upload at `key`.
    Complete {
        /// The object's key.
        key: String,
        /// The store's id of the upload.
        upload_id: String,
    },
    /// Abandoning a multipart upload at `key`.
    Abort {
        /// The object's key.
        key: String,
        /// The store's id of the upload.
        upload_id: String,
    },
}

/// Part `number` of a direct upload as the client says it sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedPart {
    /// Its number, from 1.
    pub number: u32,
    /// The tag the store answered its `PUT` with.
    pub etag: String,
}
