//! The receiver's [`Store`] on S3-compatible object storage: any number of
//! `fileuploader serve` processes, behind any load balancer, share one
//! bucket, with no sticky routing and no coordinator.
//!
//! This crate owns the bucket's layout and how each promise of a store is
//! kept there; it knows nothing of HTTP answers (its failures are
//! [`StoreError`]s by kind) and does not depend on the receiver: a
//! receiver takes it with `fileuploader_server::Receiver::with_store`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use fileuploader_store_s3::{S3Location, S3Options, S3Store};
//!
//! let location: S3Location = "s3://uploads/incoming".parse()?;
//! let options = S3Options {
//!     endpoint: Some("http://127.0.0.1:3900".into()),
//!     region: Some("garage".into()),
//!     // Else AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile.
//!     key: Some(("GK1234".into(), "secret".into())),
//! };
//! let store = S3Store::connect(&location, &options).await?;
//! # let _ = store;
//! # Ok(())
//! # }
//! ```
//!
//! # How it keeps the promises of a store
//!
//! Everything an upload is lives in the bucket (see the `keys` layout):
//! its record, one empty object per acknowledged block whose key says the
//! block's range, CRC32C and where its bytes are, and the bytes themselves,
//! one object per request. A block is acknowledged once its bytes and then
//! its key are stored, and S3 stores nothing it has not made durable; any
//! receiver lists the keys and knows what every other one acknowledged.
//!
//! - Bytes stream from the request into the store: a request that says its
//!   length becomes one object as it arrives; one that does not (a chunked
//!   `PATCH`, a whole file) is cut into objects of 5 MiB. Memory per
//!   request is bounded either way.
//! - Landing makes the file one object, `PREFIX/NAME`, by a multipart
//!   upload: stored objects of 5 MiB or more become parts by copies inside
//!   the store; smaller ones are read and joined into parts of 5 MiB. An
//!   empty file is one empty object. A landing runs to its end on a task
//!   of its own, whether or not its request is still there; one cut off
//!   anyway (the store failing between the object and its record) leaves
//!   an object marked as its upload's, which that upload sent again
//!   replaces.
//! - Written once: the multipart upload of an upload's landing is begun
//!   with the upload and named in its record, so receivers that see the
//!   last block at the same moment complete the same multipart upload; the
//!   store makes one object of it, whoever completes it first, and the
//!   others find the object theirs. Nothing relies on conditional writes
//!   (not every S3-compatible store honours them).
//! - Two requests for the same range at the same moment, through different
//!   receivers, are not held apart as a directory's locks hold them: each
//!   stores its own copy, and a landing uses the first.
//! - A block lists its upload once, as it arrives (its owner, length and
//!   offset are checked against that listing), and is answered with that
//!   listing plus itself: blocks other receivers acknowledged meanwhile may
//!   be missing from the answer. A landing lists again; an upload whose
//!   completing block did not see it complete lands when its status is
//!   asked.
//! - A request the store does not serve in time is answered 503 (with
//!   `Retry-After`); the client tries again.

mod body;
pub mod client;
mod direct;
mod events;
mod keys;
mod plain_http;
mod plan;
pub mod post_policy;
mod sigv4;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use fileuploader_store::{
    Block, BlockWriter, ErrorKind, Event, Landed, NewUpload, OnConflict, Quota, Store, StoreError,
    Upload, WholeWriter, WriteBytes,
};
use fileuploader_wire::sync::lock;
use fileuploader_wire::ContentRange;
use futures_util::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};

use crate::keys::{Ack, Layout, UPLOAD_METADATA};
use crate::plan::{Part, Piece};

/// Bytes of a request of unknown length stored as one object: large
/// enough to be copied as a part of the landed file.
const PIECE: usize = plan::MIN_PART as usize;
/// Requests to the store at once for one landing or one clean-up.
const FAN_OUT: usize = 8;
/// How long a request with no bytes to stream (a listing, a record) may
/// take before it is answered 503.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// Times a landing is tried before its client hears 503.
const LANDING_TRIES: u64 = 3;
/// How old a multipart upload or data no upload record owns must be
/// before expiry removes it (or the expiry time, if shorter): longer than
/// a landing takes.
const ORPHAN_AGE: Duration = Duration::from_secs(600);

/// `s3://BUCKET/PREFIX`: where a store keeps its uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The folder of the bucket files land in (may be empty).
    pub prefix: String,
}

impl FromStr for S3Location {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (bucket, prefix) = split_s3(s, "s3://BUCKET/PREFIX location")?;
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }
}

/// The bucket and the rest of `s3://BUCKET/REST`, or why `s` is not a
/// `what`.
pub(crate) fn split_s3<'s>(s: &'s str, what: &str) -> Result<(&'s str, &'s str), String> {
    let rest = s
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{s:?} is not an {what}"))?;
    let (bucket, rest) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("{s:?} names no bucket"));
    }
    Ok((bucket, rest))
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// How to reach the store. Credentials are `key` when given, else from the
/// usual places of the AWS SDK: `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`, or a profile in `~/.aws/credentials`
/// (`AWS_PROFILE`).
#[derive(Clone, Default)]
pub struct S3Options {
    /// The store's address, for stores other than AWS S3 (Garage, MinIO):
    /// requests then name the bucket in the path.
    pub endpoint: Option<String>,
    /// The region to sign for; by default `AWS_REGION` or the profile's,
    /// else `us-east-1`.
    pub region: Option<String>,
    /// An access key: its id and its secret.
    pub key: Option<(String, String)>,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("key", &self.key.as_ref().map(|(id, _)| (id, "…")))
            .finish()
    }
}

/// Why a store could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(String);

/// Uploads kept in an S3-compatible bucket. See the [crate] for how.
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// For requests that carry no stream: bounded in time.
    control: Client,
    /// For requests that stream bytes: bounded by their pieces' progress.
    data: Client,
    bucket: String,
    /// The endpoint, when it is not AWS's.
    endpoint: Option<String>,
    /// The credentials requests are signed with, for forms signed here.
    credentials: Option<aws_sdk_s3::config::SharedCredentialsProvider>,
    layout: Layout,
    /// Uploads as last read, by id: acknowledgements are only ever added
    /// while an upload lives, so a read lists only those past the run
    /// from its first byte.
    seen: Mutex<HashMap<String, Seen>>,
    /// Whether each landing leaves an event in the outbox.
    events: AtomicBool,
    /// Whether each landing's bytes are read back and digested (SHA-256).
    digests: AtomicBool,
    /// The events this receiver holds a claim on, by key.
    claims: Mutex<HashMap<String, events::Held>>,
}

/// An upload's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    /// Unique to this beginning: a record written again for the same id
    /// has another ETag, so nothing read of the one before is kept.
    begun: String,
    id: String,
    total: u64,
    name: String,
    owner: String,
    partial: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<String>,
}

/// Which page of a listing to ask for.
struct Page<'a> {
    /// Only keys after this one.
    after: Option<&'a str>,
    /// The token a page before gave.
    token: Option<String>,
    /// At most this many keys.
    max: Option<i32>,
}

/// A multipart upload that lands a file at `key`.
#[derive(Debug, Clone)]
struct Landing {
    key: String,
    upload_id: String,
}

impl Meta {
    fn begun(&self) -> NewUpload {
        NewUpload {
            id: self.id.clone(),
            total: self.total,
            name: self.name.clone(),
            owner: self.owner.clone(),
            partial: self.partial,
            metadata: self.metadata.clone(),
        }
    }
}

/// An upload as stored: its record, its acknowledgements, and the newest
/// change to either.
struct Stored {
    meta: Meta,
    acks: Vec<Ack>,
    /// The multipart uploads begun for its landing, in the order of their
    /// records' keys: every receiver lands with the first.
    landings: Vec<String>,
    upload: Upload,
}

/// Uploads a process keeps what it read of, at most.
const SEEN_MAX: usize = 4096;

/// What one process last read of an upload.
#[derive(Debug, Clone)]
struct Seen {
    etag: String,
    meta: Meta,
    /// Its acknowledgements by key (by first byte).
    acks: Vec<(String, Ack)>,
    /// The key of the last acknowledgement of the run from byte 0.
    run: Option<String>,
    /// The upload they make, with the blocks this process acknowledged
    /// since (for [`Store::upload_for_block`]).
    upload: Upload,
}

/// One listed object.
struct Listed {
    key: String,
    etag: String,
    modified: SystemTime,
}

/// The AWS SDK set up for a store or a bucket client: its HTTP client
/// (plain or rustls), region, credentials and endpoint.
pub(crate) struct Sdk {
    pub(crate) base: aws_sdk_s3::config::Builder,
    pub(crate) credentials: Option<aws_sdk_s3::config::SharedCredentialsProvider>,
}

impl Sdk {
    pub(crate) async fn new(options: &S3Options) -> Self {
        let plain = options
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let http = if plain {
            plain_http::client()
        } else {
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https()
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some((id, secret)) = &options.key {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id,
                secret,
                None,
                None,
                "fileuploader",
            ));
        }
        let shared = loader.load().await;
        let mut base = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if shared.region().is_none() {
            base = base.region(Region::from_static("us-east-1"));
        }
        if let Some(endpoint) = &options.endpoint {
            base = base.endpoint_url(endpoint).force_path_style(true);
        }
        Sdk {
            base,
            credentials: shared.credentials_provider(),
        }
    }

    /// A client for requests that carry no stream: bounded in time.
    pub(crate) fn control(&self) -> Client {
        Client::from_conf(
            self.base
                .clone()
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(5))
                        .operation_attempt_timeout(CONTROL_TIMEOUT)
                        .build(),
                )
                .build(),
        )
    }
}

/// `key` as a URL path wants it: everything but unreserved characters and
/// `/` escaped (S3 signs the path escaped once).
pub(crate) fn escape_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A bucket's address: path-style on an `endpoint` of its own, else AWS's
/// virtual host in `region`.
pub(crate) fn bucket_url(endpoint: Option<&str>, bucket: &str, region: &str) -> String {
    match endpoint {
        Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        None => format!("https://{bucket}.s3.{region}.amazonaws.com"),
    }
}

/// A failed request to the store, as the client hears it: 503, try again.
fn failed<E, R>(what: &str, e: &SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: fmt::Debug,
{
    let e = DisplayErrorContext(e);
    tracing::warn!("{what}: {e}");
    StoreError::new(
        ErrorKind::Unavailable,
        format!("{what}: the object store failed: {e}"),
    )
}

/// Whether a request failed because what it names is not there.
fn missing<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    let code = e.as_service_error().and_then(|s| s.code());
    matches!(code, Some("NoSuchKey" | "NotFound" | "NoSuchUpload"))
        || e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
}

/// `key` as `x-amz-copy-source` wants it: the bucket, then the key with
/// everything but unreserved characters and `/` escaped.
fn copy_source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{}", escape_key(key))
}

/// `Range` for bytes `from..to`.
fn byte_range(from: u64, to: u64) -> String {
    format!("bytes={from}-{}", to - 1)
}

impl S3Store {
    /// Refuses (507) `more` bytes for `owner` that would break `quota`,
    /// counting the uploads in progress as the bucket lists them (and, for
    /// a quota per credential, reading whose each is). Not in one step
    /// with the upload's record: receivers sharing the bucket may let in a
    /// little more at the same moment.
    async fn charge(&self, quota: &Quota, owner: &str, more: u64) -> Result<(), StoreError> {
        if !quota.is_limited() {
            return Ok(());
        }
        let by_owner = quota.per_credential.is_some() && !owner.is_empty();
        let layout = &self.s().layout;
        let (mut held, mut mine) = (0, 0);
        for listed in self.list(&layout.uploads()).await? {
            let Some(total) = layout
                .split_upload_key(&listed.key)
                .and_then(|(_, rest)| Layout::parse_meta(rest).or(Layout::parse_direct(rest)))
            else {
                continue;
            };
            held += total;
            if by_owner {
                let record = self.get_small(&listed.key).await?;
                // An upload's record or a direct upload's: both name it.
                #[derive(Deserialize)]
                struct Whose {
                    owner: String,
                }
                let whose = record.and_then(|b| serde_json::from_slice::<Whose>(&b).ok());
                if whose.is_some_and(|w| w.owner == owner) {
                    mine += total;
                }
            }
        }
        match quota.refusal(owner, more, held, mine) {
            Some(why) => Err(StoreError::new(ErrorKind::Full, why)),
            None => Ok(()),
        }
    }

    /// Connects to the bucket of `location` and checks that it answers
    /// our credentials.
    ///
    /// # Errors
    ///
    /// When the bucket cannot be reached, does not exist, or refuses the
    /// credentials: the message says which.
    pub async fn connect(location: &S3Location, options: &S3Options) -> Result<Self, ConnectError> {
        let sdk = Sdk::new(options).await;
        let control = sdk.control();
        let data = Client::from_conf(
            sdk.base
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(5))
                        .build(),
                )
                .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
                .build(),
        );
        let store = S3Store {
            inner: Arc::new(Inner {
                control,
                data,
                bucket: location.bucket.clone(),
                endpoint: options.endpoint.clone(),
                credentials: sdk.credentials,
                layout: Layout::new(&location.prefix),
                seen: Mutex::default(),
                events: AtomicBool::new(false),
                digests: AtomicBool::new(false),
                claims: Mutex::default(),
            }),
        };
        store
            .inner
            .control
            .list_objects_v2()
            .bucket(&location.bucket)
            .prefix(store.inner.layout.uploads())
            .max_keys(1)
            .send()
            .await
            .map_err(|e| {
                ConnectError(format!(
                    "cannot use {location}: {}",
                    DisplayErrorContext(&e)
                ))
            })?;
        Ok(store)
    }

    fn s(&self) -> &Inner {
        &self.inner
    }

    /// Every object below `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        self.list_after(prefix, None).await
    }

    /// The first objects below `prefix`, at most `max` (one page).
    async fn list_first(&self, prefix: &str, max: i32) -> Result<Vec<Listed>, StoreError> {
        let first = Page {
            after: None,
            token: None,
            max: Some(max),
        };
        Ok(self.list_page(prefix, first).await?.0)
    }

    /// The objects below `prefix` whose keys sort after `after`.
    async fn list_after(
        &self,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<Vec<Listed>, StoreError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = Page {
                after,
                token,
                max: None,
            };
            let (listed, next) = self.list_page(prefix, page).await?;
            out.extend(listed);
            match next {
                Some(next) => token = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// One page of the objects below `prefix`, and the token of the next
    /// page if there is one.
    async fn list_page(
        &self,
        prefix: &str,
        page: Page<'_>,
    ) -> Result<(Vec<Listed>, Option<String>), StoreError> {
        let s = self.s();
        let answer = s
            .control
            .list_objects_v2()
            .bucket(&s.bucket)
            .prefix(prefix)
            .set_start_after(page.after.map(str::to_owned))
            .set_continuation_token(page.token)
            .set_max_keys(page.max)
            .send()
            .await
            .map_err(|e| failed("list the store", &e))?;
        let listed = answer
            .contents()
            .iter()
            .filter_map(|object| {
                let modified = object
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                Some(Listed {
                    key: object.key()?.to_owned(),
                    etag: object.e_tag().unwrap_or_default().to_owned(),
                    modified,
                })
            })
            .collect();
        let next = answer
            .next_continuation_token()
            .filter(|_| answer.is_truncated() == Some(true))
            .map(str::to_owned);
        Ok((listed, next))
    }

    /// The whole of a small object, or `None` when it is not there.
    async fn get_small(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let s = self.s();
        let got = s
            .control
            .get_object()
            .bucket(&s.bucket)
            .key(key)
            .send()
            .await;
        let object = match got {
            Ok(object) => object,
            Err(e) if missing(&e) => return Ok(None),
            Err(e) => return Err(failed("read a record", &e)),
        };
        let bytes = object.body.collect().await.map_err(|e| {
            StoreError::new(
                ErrorKind::Unavailable,
                format!("read a record: the object store failed: {e}"),
            )
        })?;
        Ok(Some(bytes.into_bytes()))
    }

    async fn put_small(
        &self,
        what: &str,
        key: &str,
        bytes: impl Into<Bytes>,
    ) -> Result<(), StoreError> {
        let s = self.s();
        s.control
            .put_object()
            .bucket(&s.bucket)
            .key(key)
            .body(ByteStream::from(bytes.into()))
            .send()
            .await
            .map_err(|e| failed(what, &e))?;
        Ok(())
    }

    /// The upload a landed object belongs to, or `None` when nothing is
    /// at `key`.
    async fn owner_of(&self, key: &str) -> Result<Option<String>, StoreError> {
        let s = self.s();
        match s
            .control
            .head_object()
            .bucket(&s.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(
                head.metadata()
                    .and_then(|m| m.get(UPLOAD_METADATA))
                    .cloned()
                    .unwrap_or_default(),
            )),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(failed("look up a name", &e)),
        }
    }

    /// Removes `keys`, a thousand per request.
    async fn delete(&self, keys: Vec<String>) -> Result<(), StoreError> {
        let s = self.s();
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::io("delete objects", e))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StoreError::io("delete objects", e))?;
            let out = s
                .control
                .delete_objects()
                .bucket(&s.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| failed("delete objects", &e))?;
            if let Some(error) = out.errors().first() {
                return Err(StoreError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "delete {}: {}",
                        error.key().unwrap_or_default(),
                        error.message().unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn delete_below(&self, prefix: &str) -> Result<(), StoreError> {
        let keys = self
            .list(prefix)
            .await?
            .into_iter()
            .map(|l| l.key)
            .collect();
        self.delete(keys).await
    }

    async fn abort(&self, landing: &Landing) -> Result<(), StoreError> {
        let s = self.s();
        match s
            .control
            .abort_multipart_upload()
            .bucket(&s.bucket)
            .key(&landing.key)
            .upload_id(&landing.upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if missing(&e) => Ok(()),
            Err(e) => Err(failed("abort a multipart upload", &e)),
        }
    }

    /// Begins the multipart upload that lands upload `id` at `key`, of
    /// `content_type` when it is known.
    async fn begin_landing(
        &self,
        id: &str,
        key: &str,
        content_type: Option<&str>,
    ) -> Result<Landing, StoreError> {
        let s = self.s();
        let created = s
            .control
            .create_multipart_upload()
            .bucket(&s.bucket)
            .key(key)
            .metadata(UPLOAD_METADATA, id)
            .set_content_type(content_type.map(str::to_owned))
            .send()
            .await
            .map_err(|e| failed("begin a multipart upload", &e))?;
        let upload_id = created.upload_id().ok_or_else(|| {
            StoreError::io("begin a multipart upload", "the store gave no upload id")
        })?;
        Ok(Landing {
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
        })
    }

    /// Of the recorded uploads `untouched` says are stale, the parts of
    /// concatenations whose owner touched a part since: a part done early
    /// waits for its final, which comes once the owner's last part is
    /// done. Records are read only when some stale upload is a part, and
    /// only until each stale part's owner is found at work. A record that
    /// cannot be read counts as no part (a stale one then expires), so one
    /// damaged record does not stop the sweep; an unreachable store does.
    async fn parts_kept_by_owner<F>(
        &self,
        uploads: &HashMap<String, F>,
        untouched: impl Fn(&str, &F) -> bool,
    ) -> Result<HashSet<String>, StoreError> {
        let mut stale_parts = Vec::new();
        for (id, found) in uploads {
            if untouched(id, found) {
                if let Some(owner) = self.part_owner(id).await? {
                    stale_parts.push((id.clone(), owner));
                }
            }
        }
        if stale_parts.is_empty() {
            return Ok(HashSet::new());
        }
        let mut unheard: HashSet<String> = stale_parts.iter().map(|(_, o)| o.clone()).collect();
        let mut writing = HashSet::new();
        for (id, found) in uploads {
            if unheard.is_empty() {
                break;
            }
            if !untouched(id, found) {
                if let Some(owner) = self.part_owner(id).await? {
                    if unheard.remove(&owner) {
                        writing.insert(owner);
                    }
                }
            }
        }
        Ok(stale_parts
            .into_iter()
            .filter(|(_, owner)| writing.contains(owner))
            .map(|(id, _)| id)
            .collect())
    }

    /// The owner of upload `id` if it is a part of a concatenation. A
    /// record that cannot be read is no part, and says so in the log; only
    /// a store that cannot be reached fails.
    async fn part_owner(&self, id: &str) -> Result<Option<String>, StoreError> {
        match self.read(id).await {
            Ok(stored) => Ok(stored.filter(|s| s.meta.partial).map(|s| s.meta.owner)),
            Err(e) if e.kind() == ErrorKind::Unavailable => Err(e),
            Err(e) => {
                tracing::warn!("upload {id}: its record cannot be read ({e}); expiry treats it as no part of a concatenation");
                Ok(None)
            }
        }
    }

    /// Upload `id` as stored now: what this process read of it before,
    /// and the listing of what follows the run from its first byte.
    async fn read(&self, id: &str) -> Result<Option<Stored>, StoreError> {
        let layout = &self.s().layout;
        let mut cached = lock(&self.s().seen).get(id).cloned();
        loop {
            let after = cached.as_ref().and_then(|c| c.run.clone());
            let mut meta_key = None;
            let mut fresh = Vec::new();
            let mut landings = Vec::new();
            let mut error = false;
            for listed in self
                .list_after(&layout.upload(id), after.as_deref())
                .await?
            {
                let Some((_, rest)) = layout.split_upload_key(&listed.key) else {
                    continue;
                };
                if rest == "error" {
                    error = true;
                } else if let Some(upload_id) = Layout::parse_landing(rest) {
                    landings.push(upload_id);
                } else if let Some(name) = rest.strip_prefix("a/") {
                    if let Some(ack) = Layout::parse_ack(name) {
                        fresh.push((listed.key.clone(), ack));
                    }
                } else if Layout::parse_meta(rest).is_some() {
                    meta_key = Some((listed.key, listed.etag));
                }
            }
            let Some((key, etag)) = meta_key else {
                lock(&self.s().seen).remove(id);
                return Ok(None);
            };
            let (meta, mut acks) = match cached.take() {
                Some(seen) if seen.etag == etag => {
                    let kept = seen
                        .acks
                        .into_iter()
                        .filter(|(k, _)| after.as_ref().is_some_and(|a| k <= a))
                        .collect();
                    (seen.meta, kept)
                }
                // Begun again since: read all of it.
                Some(_) => continue,
                None => {
                    let Some(bytes) = self.get_small(&key).await? else {
                        return Ok(None);
                    };
                    let meta: Meta = serde_json::from_slice(&bytes)
                        .map_err(|e| StoreError::io("read an upload record", e))?;
                    (meta, Vec::new())
                }
            };
            acks.extend(fresh);
            acks.sort_by(|a, b| a.0.cmp(&b.0));
            acks.dedup_by(|a, b| a.0 == b.0);
            let mut upload = Upload::new(meta.begun());
            let (mut run, mut at) = (None, Some(0));
            for (key, ack) in &acks {
                at = at.filter(|&at| ack.start <= at).map(|at| at.max(ack.end));
                if at.is_some() {
                    run = Some(key.clone());
                }
                upload.add(ack.block());
            }
            if error {
                upload.landing_error = self
                    .get_small(&layout.error(id))
                    .await?
                    .map(|b| String::from_utf8_lossy(&b).into_owned());
            }
            let seen = Seen {
                etag,
                meta: meta.clone(),
                acks: acks.clone(),
                run,
                upload: upload.clone(),
            };
            {
                let mut all = lock(&self.s().seen);
                if all.len() >= SEEN_MAX {
                    all.clear();
                }
                all.insert(id.to_owned(), seen);
            }
            return Ok(Some(Stored {
                meta,
                acks: acks.into_iter().map(|(_, a)| a).collect(),
                landings,
                upload,
            }));
        }
    }

    /// Records `acks` for upload `id`, and returns `seen` (the upload as
    /// the request that brought them read it) with them: no listing on a
    /// block's way, so blocks that other receivers acknowledged since that
    /// read may be missing from the answer. Nothing that decides reads it:
    /// a landing lists the upload again, and an upload whose completing
    /// block was answered without seeing it complete lands when its status
    /// is asked, as after a listing that lagged.
    async fn acknowledge_all(
        &self,
        id: &str,
        acks: Vec<(Ack, Bytes)>,
        mut seen: Upload,
    ) -> Result<Upload, StoreError> {
        let layout = &self.s().layout;
        let puts: Vec<_> = acks
            .iter()
            .map(|(ack, bytes)| {
                let key = layout.ack(id, ack);
                async move {
                    match bytes.len() {
                        0 => {
                            self.put_small("acknowledge a block", &key, Bytes::new())
                                .await
                        }
                        _ => self.put_bytes(&key, bytes.clone()).await,
                    }
                }
            })
            .collect();
        futures_util::stream::iter(puts)
            .buffer_unordered(FAN_OUT)
            .try_collect::<Vec<()>>()
            .await?;
        if let Some(kept) = lock(&self.s().seen).get_mut(id) {
            // Only its own beginning's: the one that request read.
            if kept.upload.begun == seen.begun {
                for (ack, _) in &acks {
                    kept.upload.add(ack.block());
                }
            }
        }
        for (ack, _) in acks {
            seen.add(ack.block());
        }
        Ok(seen)
    }

    /// Stores `bytes` as a data object of upload `data`; returns its nonce.
    async fn put_piece(&self, data: &str, bytes: Bytes) -> Result<String, StoreError> {
        let nonce = keys::nonce();
        self.put_bytes(&self.s().layout.data_object(data, &nonce), bytes)
            .await?;
        Ok(nonce)
    }

    /// Stores `bytes` as the object `key`, unsigned like every body of
    /// bytes.
    async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let s = self.s();
        s.data
            .put_object()
            .bucket(&s.bucket)
            .key(key)
            .content_length(bytes.len() as i64)
            .body(ByteStream::from(bytes))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| failed("store bytes", &e))?;
        Ok(())
    }

    /// Makes `pieces` (tiling `total` bytes) one object, landing it by
    /// `policy` under `name` or the first free name after it; returns the
    /// name it landed under. Upload `id` is what the object says it is. An
    /// object of `id`'s there already is this landing, done by another
    /// request (the same acknowledged blocks), unless `again`: a whole file
    /// sent again replaces what an attempt before it left unrecorded.
    async fn compose(
        &self,
        id: &str,
        pieces: &[Piece],
        name: &str,
        policy: OnConflict,
        begun: Option<&Landing>,
        again: bool,
    ) -> Result<String, StoreError> {
        let layout = &self.s().layout;
        for n in 0..10_000 {
            let candidate = fileuploader_store::numbered(name, n);
            let key = layout.landed_file(&candidate);
            match self.owner_of(&key).await? {
                Some(owner) if owner == id && !again => return Ok(candidate),
                Some(owner) if owner == id => {}
                Some(_) if policy == OnConflict::Refuse => {
                    return Err(StoreError::new(
                        ErrorKind::Conflict,
                        format!(
                            "cannot land the file: a file named {name} is in the bucket already"
                        ),
                    ))
                }
                Some(_) if policy == OnConflict::Rename => continue,
                _ => {}
            }
            if pieces.iter().all(|p| p.len == 0) {
                self.put_empty(id, &key).await?;
                if let Some(landing) = begun {
                    // Not needed: what expiry or the upload's removal
                    // would abort anyway.
                    if let Err(e) = self.abort(landing).await {
                        tracing::warn!("upload {id} landed empty; {e}");
                    }
                }
                return Ok(candidate);
            }
            let landing = match begun {
                Some(landing) if landing.key == key => landing.clone(),
                _ => self.begin_landing(id, &key, None).await?,
            };
            let mut tries = 0;
            return loop {
                let refusal = match self.complete(&landing, pieces).await {
                    Ok(()) => break Ok(candidate),
                    Err(refusal) => refusal,
                };
                // Another receiver completing the same landing replaces
                // parts under this one, or completes it first.
                if !again && self.owner_of(&key).await?.is_some_and(|owner| owner == id) {
                    break Ok(candidate);
                }
                tries += 1;
                if tries == LANDING_TRIES {
                    break Err(refusal);
                }
                tokio::time::sleep(Duration::from_millis(100 * tries)).await;
            };
        }
        Err(StoreError::new(
            ErrorKind::Conflict,
            format!("cannot land the file: no free name like {name}"),
        ))
    }

    /// Lands an empty file at `key` for upload `id`: one empty object, not
    /// a multipart upload, which needs a part (and Garage 2.5 refuses an
    /// empty one).
    async fn put_empty(&self, id: &str, key: &str) -> Result<(), StoreError> {
        let s = self.s();
        s.control
            .put_object()
            .bucket(&s.bucket)
            .key(key)
            .metadata(UPLOAD_METADATA, id)
            .body(ByteStream::from(Bytes::new()))
            .send()
            .await
            .map_err(|e| failed("land an empty file", &e))?;
        Ok(())
    }

    /// Uploads the parts of `pieces` to `landing` and completes it (at
    /// least one byte).
    async fn complete(&self, landing: &Landing, pieces: &[Piece]) -> Result<(), StoreError> {
        let s = self.s();
        let total = pieces.iter().map(|p| p.len).sum();
        let parts = plan::plan(pieces, plan::min_part(total));
        let puts: Vec<_> = parts
            .iter()
            .enumerate()
            .map(|(i, part)| self.put_part(landing, i as i32 + 1, part))
            .collect();
        let mut done: Vec<CompletedPart> = futures_util::stream::iter(puts)
            .buffer_unordered(FAN_OUT)
            .try_collect()
            .await?;
        done.sort_by_key(|p| p.part_number());
        s.control
            .complete_multipart_upload()
            .bucket(&s.bucket)
            .key(&landing.key)
            .upload_id(&landing.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| failed("complete the landing", &e))?;
        Ok(())
    }

    /// Uploads part `number` of a landing: copied in the store, or read
    /// and sent back.
    async fn put_part(
        &self,
        landing: &Landing,
        number: i32,
        part: &Part,
    ) -> Result<CompletedPart, StoreError> {
        let s = self.s();
        let e_tag = match part {
            Part::Copy(slice) => s
                .control
                .upload_part_copy()
                .bucket(&s.bucket)
                .key(&landing.key)
                .upload_id(&landing.upload_id)
                .part_number(number)
                .copy_source(copy_source(&s.bucket, &slice.key))
                .copy_source_range(byte_range(slice.from, slice.to))
                .send()
                .await
                .map_err(|e| failed("copy a part", &e))?
                .copy_part_result()
                .and_then(|r| r.e_tag())
                .map(str::to_owned),
            Part::Join(slices) => {
                let (feed, body) = body::channel(part.len());
                let feeding = self.feed(feed, slices.clone());
                let sending = s
                    .data
                    .upload_part()
                    .bucket(&s.bucket)
                    .key(&landing.key)
                    .upload_id(&landing.upload_id)
                    .part_number(number)
                    .content_length(part.len() as i64)
                    .body(body)
                    .customize()
                    .disable_payload_signing()
                    .send();
                let (fed, sent) = tokio::join!(feeding, sending);
                let sent = sent.map_err(|e| failed("send a part", &e));
                fed.and(sent)?.e_tag().map(str::to_owned)
            }
        };
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(e_tag)
            .build())
    }

    /// Reads `slices` from the store, in order, into `feed`.
    async fn feed(&self, feed: body::Feed, slices: Vec<plan::Slice>) -> Result<(), StoreError> {
        let s = self.s();
        for slice in slices {
            let got = s
                .data
                .get_object()
                .bucket(&s.bucket)
                .key(&slice.key)
                .range(byte_range(slice.from, slice.to))
                .send()
                .await;
            let mut object = match got {
                Ok(object) => object,
                Err(e) => {
                    let refusal = failed("read stored bytes", &e);
                    feed.fail(refusal.message().to_owned()).await;
                    return Err(refusal);
                }
            };
            loop {
                match tokio::time::timeout(body::STALL, object.body.try_next()).await {
                    Ok(Ok(Some(bytes))) => feed.send(bytes).await?,
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => {
                        let why = format!("read stored bytes: {e}");
                        feed.fail(why.clone()).await;
                        return Err(StoreError::new(ErrorKind::Unavailable, why));
                    }
                    Err(_) => {
                        feed.fail("the object store stalled".into()).await;
                        return Err(body::stalled());
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes upload `id`'s records, bytes and multipart uploads: its
    /// record last, so nothing it owned outlives it unseen.
    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        let layout = &self.s().layout;
        let (metas, rest): (Vec<String>, Vec<String>) = self
            .list(&layout.upload(id))
            .await?
            .into_iter()
            .map(|l| l.key)
            .partition(|k| {
                layout
                    .split_upload_key(k)
                    .is_some_and(|(_, rest)| Layout::parse_meta(rest).is_some())
            });
        for key in &rest {
            let Some(upload_id) = layout
                .split_upload_key(key)
                .and_then(|(_, rest)| Layout::parse_landing(rest))
            else {
                continue;
            };
            if let Some(object) = self.get_small(key).await? {
                let landing = Landing {
                    key: String::from_utf8_lossy(&object).into_owned(),
                    upload_id,
                };
                self.abort(&landing).await?;
            }
        }
        self.delete_below(&layout.data(id)).await?;
        self.delete(rest).await?;
        self.delete(metas).await
    }

    async fn land_stored(
        &self,
        stored: Stored,
        name: &str,
        policy: OnConflict,
    ) -> Result<Landed, StoreError> {
        let id = stored.meta.id.clone();
        let layout = &self.s().layout;
        if let Some(landed) = self.landed(&id).await? {
            if landed.owner != stored.meta.owner {
                return Err(StoreError::others_id(&id));
            }
        }
        let Some(pieces) = tile(&stored, layout) else {
            return Err(StoreError::new(
                ErrorKind::Conflict,
                format!("upload {id} is not complete"),
            ));
        };
        let begun = stored.landings.first().map(|upload_id| Landing {
            key: layout.landed_file(&stored.meta.name),
            upload_id: upload_id.clone(),
        });
        match self
            .compose(&id, &pieces, name, policy, begun.as_ref(), false)
            .await
        {
            Ok(landed_as) => {
                let landed = Landed::new(
                    &id,
                    &stored.meta.owner,
                    &landed_as,
                    stored.meta.total,
                    stored.upload.expected_crc32c(),
                )
                .with_metadata(stored.meta.metadata.clone())
                .with_sha256(self.digest(&layout.landed_file(&landed_as)).await?);
                self.leave_event(&landed).await?;
                self.put_small(
                    "record the landing",
                    &layout.landed(&id),
                    landed.to_record(),
                )
                .await?;
                // Landed and recorded: what is left is the expiry's to
                // remove if this fails.
                if let Err(refusal) = self.remove(&id).await {
                    tracing::warn!("upload {id} landed; removing its parts: {refusal}");
                }
                Ok(landed)
            }
            Err(refusal) => {
                self.put_small(
                    "record a failed landing",
                    &layout.error(&id),
                    refusal.message().to_owned(),
                )
                .await?;
                Err(refusal)
            }
        }
    }
}

/// Runs a landing to its end even if the request that awaits it goes (its
/// client gone, the request's future dropped): cut off between its object
/// and its record, it would leave a file no record names. A directory's
/// landing runs on a blocking thread, which nothing cuts off either.
async fn detached<T: Send + 'static>(
    landing: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(landing)
        .await
        .map_err(|e| StoreError::io("land", e))?
}

/// The data objects that tile upload `stored` from its first byte to its
/// last, in order, the first acknowledgement of a range winning.
fn tile(stored: &Stored, layout: &Layout) -> Option<Vec<Piece>> {
    let mut by_start: BTreeMap<u64, &Ack> = BTreeMap::new();
    for ack in &stored.acks {
        by_start.entry(ack.start).or_insert(ack);
    }
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < stored.meta.total {
        let ack = by_start.get(&at)?;
        if ack.end <= at {
            return None;
        }
        pieces.push(Piece {
            key: layout.source(&stored.meta.id, ack),
            len: ack.end - ack.start,
        });
        at = ack.end;
    }
    (at == stored.meta.total).then_some(pieces)
}

#[async_trait]
impl Store for S3Store {
    /// What this process saw of the upload and acknowledged since, once a
    /// `HEAD` of its record says it is the same beginning: a listing takes
    /// a store such as Garage many times as long as a `HEAD`.
    async fn upload_for_block(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        let kept = lock(&self.s().seen)
            .get(id)
            .map(|seen| (seen.etag.clone(), seen.meta.total, seen.upload.clone()));
        if let Some((etag, total, upload)) = kept {
            let s = self.s();
            let head = s
                .control
                .head_object()
                .bucket(&s.bucket)
                .key(s.layout.meta(id, total))
                .send()
                .await;
            match head {
                Ok(head) if head.e_tag() == Some(etag.as_str()) => return Ok(Some(upload)),
                Ok(_) => {}
                Err(e) if missing(&e) => {}
                Err(e) => return Err(failed("read an upload record", &e)),
            }
        }
        self.upload(id).await
    }

    async fn upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        Ok(self.read(id).await?.map(|s| s.upload))
    }

    async fn begin(&self, new: NewUpload, quota: Quota) -> Result<Upload, StoreError> {
        if let Some(stored) = self.read(&new.id).await? {
            if stored.meta.owner != new.owner {
                return Err(StoreError::others_id(&new.id));
            }
            return Ok(stored.upload);
        }
        // Another's landing under the id: blocks begun under it could
        // never land. (Two receivers beginning one id for two credentials
        // at the same moment can still both record it; the landing then
        // refuses the second.)
        if let Some(landed) = self.landed(&new.id).await? {
            if landed.owner != new.owner {
                return Err(StoreError::others_id(&new.id));
            }
        }
        self.charge(&quota, &new.owner, new.total).await?;
        let layout = &self.s().layout;
        if !new.partial {
            // Recorded before the upload is: receivers beginning it at the
            // same moment each record theirs, and all land with the first.
            let key = layout.landed_file(&new.name);
            let landing = self.begin_landing(&new.id, &key, None).await?;
            self.put_small(
                "record a landing",
                &layout.landing(&new.id, &landing.upload_id),
                key,
            )
            .await?;
        }
        let meta = Meta {
            begun: keys::nonce(),
            id: new.id.clone(),
            total: new.total,
            name: new.name.clone(),
            owner: new.owner.clone(),
            partial: new.partial,
            metadata: new.metadata.clone(),
        };
        let json = serde_json::to_vec(&meta).map_err(|e| StoreError::io("record", e))?;
        self.put_small("record an upload", &layout.meta(&new.id, new.total), json)
            .await?;
        Ok(Upload::new(new))
    }

    async fn write_block(
        &self,
        upload: &Upload,
        range: ContentRange,
        sized: bool,
    ) -> Result<Box<dyn BlockWriter>, StoreError> {
        let id = upload.begun.id.clone();
        let overlaps = upload
            .received
            .ranges()
            .iter()
            .any(|&(s, e)| s < range.end && range.start < e);
        if overlaps || range.is_empty() {
            // Only whole acknowledged blocks can be compared: by CRC32C.
            let blocks: Vec<Block> = upload
                .blocks
                .iter()
                .filter(|b| b.start < range.end && range.start < b.end)
                .copied()
                .collect();
            let mut at = range.start;
            for b in &blocks {
                if b.start != at || b.end > range.end || b.crc32c.is_none() {
                    return Err(StoreError::new(
                        ErrorKind::Conflict,
                        "the block overlaps acknowledged bytes of the upload in other ranges; ask which ranges the receiver holds",
                    ));
                }
                at = b.end;
            }
            if at != range.end {
                return Err(StoreError::new(
                    ErrorKind::Conflict,
                    "the block overlaps acknowledged bytes of the upload in other ranges; ask which ranges the receiver holds",
                ));
            }
            return Ok(Box::new(Compare {
                seen: upload.clone(),
                blocks,
                at: range.start,
                crc: 0,
                same: true,
            }));
        }
        if sized && range.len() <= INLINE_MAX {
            return Ok(Box::new(Inline {
                store: self.clone(),
                seen: upload.clone(),
                range,
                bytes: BytesMut::with_capacity(range.len() as usize),
                crc: 0,
            }));
        }
        if sized {
            return Ok(Box::new(Streaming::start(self.clone(), upload, range)));
        }
        let mut pieces = Pieces::new(self.clone(), id, range.start);
        pieces.seen = Some(upload.clone());
        Ok(Box::new(pieces))
    }

    async fn concatenate(
        &self,
        new: NewUpload,
        parts: &[Upload],
        quota: Quota,
    ) -> Result<Upload, StoreError> {
        self.charge(&quota, &new.owner, new.total).await?;
        let mut acks = Vec::new();
        let mut at = 0;
        for part in parts {
            let Some(stored) = self.read(&part.begun.id).await? else {
                return Err(StoreError::new(
                    ErrorKind::NotFound,
                    format!("partial upload {} is gone", part.begun.id),
                ));
            };
            let moved = stored.acks.iter().map(|a| a.moved(&part.begun.id, at));
            acks.extend(moved.map(|a| (a, Bytes::new())));
            at += part.begun.total;
        }
        let id = new.id.clone();
        // Charged above, before the parts were read.
        let upload = self.begin(new, Quota::none()).await?;
        self.acknowledge_all(&id, acks, upload).await
    }

    async fn write_whole(
        &self,
        owner: &str,
        quota: Quota,
    ) -> Result<Box<dyn WholeWriter>, StoreError> {
        let data = format!("whole-{}", keys::nonce());
        Ok(Box::new(Whole {
            pieces: Pieces::new(self.clone(), data, 0),
            owner: owner.to_owned(),
            quota,
            taken: 0,
            checked: 0,
        }))
    }

    async fn land_blocks(
        &self,
        id: &str,
        name: &str,
        policy: OnConflict,
    ) -> Result<Landed, StoreError> {
        if let Some(landed) = self.landed(id).await? {
            return Ok(landed);
        }
        match self.read(id).await? {
            Some(stored) => {
                let (store, name) = (self.clone(), name.to_owned());
                detached(async move { store.land_stored(stored, &name, policy).await }).await
            }
            None => match self.landed(id).await? {
                Some(landed) => Ok(landed),
                None => Err(StoreError::new(
                    ErrorKind::NotFound,
                    format!("upload {id} is not in progress"),
                )),
            },
        }
    }

    async fn landed(&self, id: &str) -> Result<Option<Landed>, StoreError> {
        let Some(bytes) = self.get_small(&self.s().layout.landed(id)).await? else {
            return Ok(None);
        };
        // Version 2 records, and those of receivers before them (the
        // landing statement, bare or with its owner), read alike; an older
        // one is rewritten in this version's form (best effort: it reads
        // either way).
        let text = String::from_utf8_lossy(&bytes);
        let landed = Landed::from_record(&text, None).ok_or_else(|| {
            StoreError::io("read a landing record", format!("unreadable: {text}"))
        })?;
        let record = landed.to_record();
        if record != text {
            let key = self.s().layout.landed(id);
            if let Err(e) = self
                .put_small("rewrite a landing record", &key, record)
                .await
            {
                tracing::warn!("upload {id}: cannot rewrite its landing record: {e}");
            }
        }
        Ok(Some(landed))
    }

    async fn discard(&self, id: &str) -> Result<(), StoreError> {
        self.remove(id).await
    }

    async fn expire(&self, ttl: Duration) -> Result<usize, StoreError> {
        let s = self.s();
        let orphan_age = ORPHAN_AGE.min(ttl);
        let now = SystemTime::now();
        let older = |t: SystemTime, age: Duration| now.duration_since(t).is_ok_and(|d| d >= age);
        // Each upload's newest change, whether it has its record, and the
        // multipart uploads begun for it.
        #[derive(Default)]
        struct Found {
            touched: Option<SystemTime>,
            recorded: bool,
            landings: Vec<String>,
        }
        let mut uploads: HashMap<String, Found> = HashMap::new();
        for listed in self.list(&s.layout.uploads()).await? {
            let Some((id, rest)) = s.layout.split_upload_key(&listed.key) else {
                continue;
            };
            let seen = uploads.entry(id.to_owned()).or_default();
            seen.touched = seen.touched.max(Some(listed.modified));
            seen.recorded |=
                Layout::parse_meta(rest).is_some() || Layout::parse_direct(rest).is_some();
            seen.landings.extend(Layout::parse_landing(rest));
        }
        // Bytes by upload: a request streaming pieces of an upload keeps
        // it touched, however long it runs.
        let mut data: HashMap<String, SystemTime> = HashMap::new();
        for listed in self.list(&s.layout.all_data()).await? {
            let Some((id, _)) = listed
                .key
                .strip_prefix(&s.layout.all_data())
                .and_then(|rest| rest.split_once('/'))
            else {
                continue;
            };
            let newest = data.entry(id.to_owned()).or_insert(SystemTime::UNIX_EPOCH);
            *newest = (*newest).max(listed.modified);
        }
        let untouched = |id: &str, seen: &Found| {
            let age = if seen.recorded { ttl } else { orphan_age };
            seen.touched
                .max(data.get(id).copied())
                .is_some_and(|t| older(t, age))
        };
        let kept = self.parts_kept_by_owner(&uploads, untouched).await?;
        let mut stale = 0;
        let mut live_landings = Vec::new();
        for (id, seen) in &uploads {
            if untouched(id, seen) && !kept.contains(id) {
                if seen.recorded {
                    tracing::info!("upload {id} expired: nothing was written to it for {ttl:?}");
                }
                self.remove(id).await?;
                stale += usize::from(seen.recorded);
            } else {
                live_landings.extend(seen.landings.iter().cloned());
            }
        }
        // Bytes no live upload owns.
        for (id, newest) in data {
            let owned = uploads.get(&id).is_some_and(|seen| seen.recorded);
            if !owned && older(newest, orphan_age) {
                self.delete_below(&s.layout.data(&id)).await?;
            }
        }
        // Multipart uploads no live upload owns.
        let mut key_marker = None;
        let mut id_marker = None;
        loop {
            let page = s
                .control
                .list_multipart_uploads()
                .bucket(&s.bucket)
                .prefix(s.layout.prefix())
                .set_key_marker(key_marker)
                .set_upload_id_marker(id_marker)
                .send()
                .await
                .map_err(|e| failed("list multipart uploads", &e))?;
            for open in page.uploads() {
                let (Some(key), Some(upload_id)) = (open.key(), open.upload_id()) else {
                    continue;
                };
                let started = open
                    .initiated()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                if !live_landings.iter().any(|l| l == upload_id) && older(started, orphan_age) {
                    let landing = Landing {
                        key: key.to_owned(),
                        upload_id: upload_id.to_owned(),
                    };
                    self.abort(&landing).await?;
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
        }
        Ok(stale)
    }

    fn direct(&self) -> Option<&dyn fileuploader_store::Direct> {
        Some(self)
    }

    async fn land_direct(
        &self,
        id: &str,
        parts: &[fileuploader_store::ClaimedPart],
        max_size: Option<u64>,
        policy: OnConflict,
    ) -> Result<Landed, StoreError> {
        self.land_direct_upload(id, parts, max_size, policy).await
    }

    /// An object says which upload it is: one of upload `id`'s, with no
    /// landing recorded (else `id` would be found landed first), is a
    /// landing cut off before its record, and does not take the name.
    async fn name_taken(&self, name: &str, id: Option<&str>) -> Result<bool, StoreError> {
        let key = self.s().layout.landed_file(name);
        Ok(self
            .owner_of(&key)
            .await?
            .is_some_and(|owner| Some(owner.as_str()) != id))
    }

    /// Digests by reading each landed object back once (a `GET` of it).
    fn keep_digests(&self) -> Result<(), StoreError> {
        self.s().digests.store(true, AtomicOrdering::Relaxed);
        Ok(())
    }

    fn keep_events(&self) -> Result<(), StoreError> {
        self.s().events.store(true, AtomicOrdering::Relaxed);
        Ok(())
    }

    async fn claim_events(&self, limit: usize, lease: Duration) -> Result<Vec<Event>, StoreError> {
        self.claim(limit, lease).await
    }

    async fn event_delivered(&self, key: &str) -> Result<(), StoreError> {
        self.delivered(key).await
    }

    async fn event_failed(&self, key: &str, retry_in: Duration) -> Result<(), StoreError> {
        self.undelivered(key, retry_in).await
    }
}

/// A block over acknowledged blocks: compared by CRC32C, block by block.
struct Compare {
    /// The upload as the request read it: nothing new to record, so the
    /// answer.
    seen: Upload,
    blocks: Vec<Block>,
    at: u64,
    crc: u32,
    same: bool,
}

impl Compare {
    /// The acknowledged block byte `at` is in, its index.
    fn block_at(&self, at: u64) -> Option<usize> {
        self.blocks.iter().position(|b| b.start <= at && at < b.end)
    }
}

#[async_trait]
impl WriteBytes for Compare {
    async fn write(&mut self, mut bytes: Bytes) -> Result<(), StoreError> {
        while !bytes.is_empty() {
            let Some(i) = self.block_at(self.at) else {
                self.same = false;
                return Ok(());
            };
            let block = self.blocks[i];
            let n = ((block.end - self.at) as usize).min(bytes.len());
            let piece = bytes.split_to(n);
            self.crc = crc32c::crc32c_append(self.crc, &piece);
            self.at += n as u64;
            if self.at == block.end {
                self.same &= Some(self.crc) == block.crc32c;
                self.crc = 0;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl BlockWriter for Compare {
    async fn finish(&mut self) -> Result<bool, StoreError> {
        Ok(self.same)
    }

    async fn acknowledge(
        self: Box<Self>,
        _len: u64,
        _crc32c: Option<u32>,
    ) -> Result<Upload, StoreError> {
        Ok(self.seen)
    }
}

/// A block of known length streaming into one data object.
struct Streaming {
    store: S3Store,
    /// The upload as the request read it.
    seen: Upload,
    range: ContentRange,
    nonce: String,
    feed: Option<body::Feed>,
    put: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
    stored: Option<Result<(), StoreError>>,
    written: u64,
    crc: u32,
}

impl Streaming {
    fn start(store: S3Store, seen: &Upload, range: ContentRange) -> Self {
        let nonce = keys::nonce();
        let (feed, body) = body::channel(range.len());
        let s = store.clone();
        let key = s.s().layout.data_object(&seen.begun.id, &nonce);
        let put = tokio::spawn(async move {
            let s = s.s();
            s.data
                .put_object()
                .bucket(&s.bucket)
                .key(key)
                .content_length(range.len() as i64)
                .body(body)
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map(|_| ())
                .map_err(|e| failed("store a block", &e))
        });
        Streaming {
            store,
            seen: seen.clone(),
            range,
            nonce,
            feed: Some(feed),
            put: Some(put),
            stored: None,
            written: 0,
            crc: 0,
        }
    }

    /// Waits for the object's request to end.
    async fn stored(&mut self) -> Result<(), StoreError> {
        if let Some(put) = self.put.take() {
            self.feed = None;
            let result = match tokio::time::timeout(body::STALL, put).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => Err(StoreError::io("store a block", e)),
                Err(_) => Err(body::stalled()),
            };
            self.stored = Some(result);
        }
        self.stored.clone().unwrap_or(Ok(()))
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        // An unacknowledged block leaves at most an object no key names.
        if let Some(put) = self.put.take() {
            put.abort();
        }
    }
}

#[async_trait]
impl WriteBytes for Streaming {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        self.written += bytes.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, &bytes);
        let Some(feed) = &self.feed else {
            return Err(StoreError::io("store a block", "written after its end"));
        };
        if feed.send(bytes).await.is_err() {
            // The request failed: say why.
            self.stored().await?;
            return Err(StoreError::new(
                ErrorKind::Unavailable,
                format!(
                    "the object store answered after {} of the block's {} bytes",
                    self.written,
                    self.range.len()
                ),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl BlockWriter for Streaming {
    async fn finish(&mut self) -> Result<bool, StoreError> {
        if self.written == self.range.len() {
            self.stored().await?;
        } else if let Some(put) = self.put.take() {
            put.abort();
            self.feed = None;
        }
        Ok(true)
    }

    async fn acknowledge(
        mut self: Box<Self>,
        len: u64,
        crc32c: Option<u32>,
    ) -> Result<Upload, StoreError> {
        whole_request(self.range, self.written, len, self.crc, crc32c)?;
        self.stored().await?;
        let ack = Ack {
            start: self.range.start,
            end: self.range.end,
            crc32c: Some(self.crc),
            data: self.seen.begun.id.clone(),
            nonce: self.nonce.clone(),
        };
        // Moved out (the writer's drop still runs): its blocks, not copied.
        let begun = self.seen.begun.clone();
        let id = begun.id.clone();
        let seen = std::mem::replace(&mut self.seen, Upload::new(begun));
        self.store
            .acknowledge_all(&id, vec![(ack, Bytes::new())], seen)
            .await
    }
}

/// Refuses a block that is not the whole request it said it was, or whose
/// CRC32C is not the one `claimed`.
fn whole_request(
    range: ContentRange,
    written: u64,
    len: u64,
    crc: u32,
    claimed: Option<u32>,
) -> Result<(), StoreError> {
    if len != range.len() || written != len {
        return Err(StoreError::new(
            ErrorKind::Unavailable,
            format!(
                "the body ended after {written} of its {} bytes; this store keeps only whole requests",
                range.len()
            ),
        ));
    }
    if claimed.is_some_and(|c| c != crc) {
        return Err(StoreError::io(
            "acknowledge a block",
            "its CRC32C is not the one computed",
        ));
    }
    Ok(())
}

/// The most bytes a block may have to be held until its end and stored
/// with its acknowledgement in one `PUT` (see [`Inline`]).
const INLINE_MAX: u64 = 256 * 1024;

/// A small block of known length, held in memory until the request ends
/// and then stored and acknowledged by one `PUT`: its bytes are the body
/// of its acknowledgement's object. One write to the store on its way
/// instead of two after one another, for at most [`INLINE_MAX`] bytes held
/// a request.
struct Inline {
    store: S3Store,
    /// The upload as the request read it.
    seen: Upload,
    range: ContentRange,
    bytes: BytesMut,
    crc: u32,
}

#[async_trait]
impl WriteBytes for Inline {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        if (self.bytes.len() + bytes.len()) as u64 > self.range.len() {
            return Err(StoreError::io(
                "store a block",
                format!("more than its {} bytes", self.range.len()),
            ));
        }
        self.crc = crc32c::crc32c_append(self.crc, &bytes);
        self.bytes.extend_from_slice(&bytes);
        Ok(())
    }
}

#[async_trait]
impl BlockWriter for Inline {
    async fn finish(&mut self) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn acknowledge(
        self: Box<Self>,
        len: u64,
        crc32c: Option<u32>,
    ) -> Result<Upload, StoreError> {
        let Inline {
            store,
            seen,
            range,
            bytes,
            crc,
        } = *self;
        whole_request(range, bytes.len() as u64, len, crc, crc32c)?;
        let ack = Ack::inline(range.start, range.end, crc, keys::nonce());
        let id = seen.begun.id.clone();
        store
            .acknowledge_all(&id, vec![(ack, bytes.freeze())], seen)
            .await
    }
}

/// Bytes of unknown length, stored as objects of [`PIECE`] bytes.
struct Pieces {
    store: S3Store,
    /// The upload whose data folder takes the objects.
    data: String,
    /// For a block: its upload as the request read it.
    seen: Option<Upload>,
    at: u64,
    buffer: BytesMut,
    stored: Vec<Ack>,
}

impl Pieces {
    fn new(store: S3Store, data: String, at: u64) -> Self {
        Pieces {
            store,
            data,
            seen: None,
            at,
            buffer: BytesMut::new(),
            stored: Vec::new(),
        }
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let bytes = self.buffer.split().freeze();
        let crc = crc32c::crc32c(&bytes);
        let len = bytes.len() as u64;
        let nonce = self.store.put_piece(&self.data, bytes).await?;
        self.stored.push(Ack {
            start: self.at,
            end: self.at + len,
            crc32c: Some(crc),
            data: self.data.clone(),
            nonce,
        });
        self.at += len;
        Ok(())
    }
}

#[async_trait]
impl WriteBytes for Pieces {
    async fn write(&mut self, mut bytes: Bytes) -> Result<(), StoreError> {
        while !bytes.is_empty() {
            let n = (PIECE - self.buffer.len()).min(bytes.len());
            self.buffer.extend_from_slice(&bytes.split_to(n));
            if self.buffer.len() == PIECE {
                self.flush().await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl BlockWriter for Pieces {
    async fn finish(&mut self) -> Result<bool, StoreError> {
        self.flush().await?;
        Ok(true)
    }

    async fn acknowledge(
        mut self: Box<Self>,
        len: u64,
        _crc32c: Option<u32>,
    ) -> Result<Upload, StoreError> {
        self.flush().await?;
        let start = self.stored.first().map_or(self.at, |a| a.start);
        let acks: Vec<(Ack, Bytes)> = self
            .stored
            .iter()
            .filter(|a| a.end <= start + len)
            .map(|a| (a.clone(), Bytes::new()))
            .collect();
        let seen = self
            .seen
            .take()
            .ok_or_else(|| StoreError::io("acknowledge a block", "these bytes are not a block"))?;
        self.store.acknowledge_all(&self.data, acks, seen).await
    }
}

/// A whole file arriving in one request: pieces, then landed.
/// A whole file on its way into pieces, checked against the quota (with
/// what the bucket lists as held) each time it has grown by a step.
struct Whole {
    pieces: Pieces,
    owner: String,
    quota: Quota,
    taken: u64,
    /// The length last checked against the quota.
    checked: u64,
}

/// How much a whole file grows between two checks against the quota.
const QUOTA_STEP: u64 = 8 << 20;

#[async_trait]
impl WriteBytes for Whole {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        self.taken += bytes.len() as u64;
        if self.quota.is_limited() && self.taken > self.checked {
            let upto = self.taken.div_ceil(QUOTA_STEP) * QUOTA_STEP;
            self.pieces
                .store
                .charge(&self.quota, &self.owner, upto)
                .await?;
            self.checked = upto;
        }
        self.pieces.write(bytes).await
    }
}

#[async_trait]
impl WholeWriter for Whole {
    async fn place(
        self: Box<Self>,
        name: &str,
        policy: OnConflict,
        id: Option<&str>,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<Landed, StoreError> {
        let owned = |s: &str| s.to_owned();
        let (name, id, owner) = (owned(name), id.map(owned), owned(owner));
        detached(self.place_here(name, policy, id, owner, metadata.map(owned))).await
    }
}

impl Whole {
    /// [`WholeWriter::place`], on the task that runs it to its end.
    async fn place_here(
        mut self: Box<Self>,
        name: String,
        policy: OnConflict,
        id: Option<String>,
        owner: String,
        metadata: Option<String>,
    ) -> Result<Landed, StoreError> {
        let (name, id, owner) = (name.as_str(), id.as_deref(), owner.as_str());
        let metadata = metadata.as_deref();
        self.pieces.flush().await?;
        let pieces = &self.pieces;
        let store = &pieces.store;
        if let Some(id) = id {
            // Checked, not held: receivers share no lock (see the crate's
            // documentation); what the check misses, landing at the same
            // moment, the bucket cannot refuse.
            fileuploader_store::refuse_others(store, id, owner).await?;
        }
        let layout = &store.s().layout;
        let tiles: Vec<Piece> = pieces
            .stored
            .iter()
            .map(|a| Piece {
                key: layout.data_object(&a.data, &a.nonce),
                len: a.end - a.start,
            })
            .collect();
        let mut crc = 0;
        for a in &pieces.stored {
            crc = crc32c_combine(crc, a.crc32c.unwrap_or(0), a.end - a.start);
        }
        let marker = id.map_or_else(|| pieces.data.clone(), str::to_owned);
        let landed = store
            .compose(&marker, &tiles, name, policy, None, true)
            .await;
        store.delete_below(&layout.data(&pieces.data)).await?;
        let landed_as = landed?;
        let landed = Landed::new(id.unwrap_or(""), owner, &landed_as, pieces.at, Some(crc))
            .with_metadata(metadata.map(str::to_owned))
            .with_sha256(store.digest(&layout.landed_file(&landed_as)).await?);
        store.leave_event(&landed).await?;
        if let Some(id) = id {
            store
                .put_small("record the landing", &layout.landed(id), landed.to_record())
                .await?;
        }
        Ok(landed)
    }
}

/// The CRC32C of two pieces joined, from theirs and the second's length.
fn crc32c_combine(first: u32, second: u32, second_len: u64) -> u32 {
    fileuploader_wire::CrcShift::new(second_len).join(first, second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_name_a_bucket_and_a_prefix() {
        let l: S3Location = "s3://b/in/coming/".parse().unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", "in/coming"));
        let l: S3Location = "s3://b".parse().unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", ""));
        assert!("s3:///x".parse::<S3Location>().is_err());
        assert!("/tmp/x".parse::<S3Location>().is_err());
    }

    #[test]
    fn copy_sources_escape_what_is_not_a_plain_key() {
        assert_eq!(copy_source("b", "in/a b+ü.txt"), "b/in/a%20b%2B%C3%BC.txt");
    }
}
