//! Direct uploads on a bucket: a browser (or any client) sends parts
//! straight to S3 on URLs the receiver asks this store to sign.
//!
//! - Begun as every landing here is: the multipart upload of the landed
//!   object `PREFIX/NAME` is created with the upload and named in its
//!   records (`u/ID/l/HEX`), so removing or expiring the upload aborts it;
//!   its record is `u/ID/direct-DECLARED` (0 when no length was declared),
//!   which quotas count like an upload's `meta-TOTAL`.
//! - Landed by [`S3Store::land_direct_upload`]: the parts the bucket lists
//!   are the truth; each the client names must be there with the tag it
//!   was given, the total within the limits and as declared. The object is
//!   completed, then read back once for its CRC32C and SHA-256: the bytes
//!   never passed the receiver, so it vouches for what the bucket holds.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use fileuploader_store::direct::{
    DirectUpload, NewDirect, SignedForm, SignedUrl, StoreRequest, StoredPart, Watch, MAX_PARTS,
};
use fileuploader_store::{ClaimedPart, Direct, ErrorKind, Landed, OnConflict, Quota, StoreError};
use serde::{Deserialize, Serialize};

use crate::keys::{Layout, UPLOAD_METADATA};
use crate::post_policy::{PostPolicy, Signer};
use crate::{failed, missing, Landing, S3Store};

/// A direct upload's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DirectMeta {
    id: String,
    name: String,
    owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    declared: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<String>,
    key: String,
    /// The bucket's id of the multipart upload.
    multipart: String,
}

impl DirectMeta {
    fn upload(&self, store: &S3Store) -> DirectUpload {
        DirectUpload {
            begun: NewDirect {
                id: self.id.clone(),
                name: self.name.clone(),
                owner: self.owner.clone(),
                declared: self.declared,
                content_type: self.content_type.clone(),
                metadata: self.metadata.clone(),
            },
            key: self.key.clone(),
            bucket: store.s().bucket.clone(),
            handle: self.multipart.clone(),
            location: format!("{}/{}", store.bucket_url(), self.key),
        }
    }
}

/// A watch's record: see [`Watch`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WatchRecord {
    id: String,
    name: String,
    owner: String,
    key: String,
    max_size: u64,
    /// When the watch began, and until when it holds (ms since the epoch).
    since_ms: u64,
    until_ms: u64,
}

/// How long a watch outlives its signature: a request signed at its last
/// moment still gets to arrive.
const WATCH_GRACE: Duration = Duration::from_secs(60);

/// How much older than its watch an arriving object may look: S3 gives
/// its time in whole seconds, and the bucket's clock is not ours.
const WATCH_SKEW: Duration = Duration::from_secs(2);

/// What reading an object back found.
pub(crate) struct ReadBack {
    pub(crate) length: u64,
    pub(crate) crc32c: u32,
    pub(crate) sha256: [u8; 32],
}

impl S3Store {
    /// Reads the object at `key` once, digesting it.
    pub(crate) async fn read_back(&self, key: &str) -> Result<ReadBack, StoreError> {
        use sha2::Digest;
        let s = self.s();
        let object = s
            .data
            .get_object()
            .bucket(&s.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed("read a landed file back", &e))?;
        let mut sha = sha2::Sha256::new();
        let (mut length, mut crc32c) = (0u64, 0u32);
        let mut body = object.body;
        while let Some(chunk) = body.try_next().await.map_err(|e| {
            StoreError::new(
                ErrorKind::Unavailable,
                format!("read a landed file back: {e}"),
            )
        })? {
            sha.update(&chunk);
            crc32c = crc32c::crc32c_append(crc32c, &chunk);
            length += chunk.len() as u64;
        }
        Ok(ReadBack {
            length,
            crc32c,
            sha256: sha.finalize().into(),
        })
    }

    /// Settles one watch (see [`Direct::settle_watches`]): its landing,
    /// if the file arrived within its bounds.
    async fn settle_watch(&self, record_key: &str) -> Result<Option<Landed>, StoreError> {
        let s = self.s();
        let Some(bytes) = self.get_small(record_key).await? else {
            return Ok(None);
        };
        let drop_watch = || self.delete(vec![record_key.to_owned()]);
        let Ok(watch) = serde_json::from_slice::<WatchRecord>(&bytes) else {
            drop_watch().await?;
            return Ok(None);
        };
        let head = s
            .control
            .head_object()
            .bucket(&s.bucket)
            .key(&watch.key)
            .send()
            .await;
        let modified = match head {
            Ok(head) => head
                .last_modified()
                .and_then(|t| SystemTime::try_from(*t).ok()),
            Err(e) if missing(&e) => None,
            Err(e) => return Err(failed("look for a watched file", &e)),
        };
        let since = SystemTime::UNIX_EPOCH + Duration::from_millis(watch.since_ms);
        let arrived = modified.is_some_and(|m| m + WATCH_SKEW >= since);
        if !arrived {
            if crate::events::now_ms() > watch.until_ms {
                drop_watch().await?;
            }
            return Ok(None);
        }
        if fileuploader_store::Store::landed(self, &watch.id)
            .await?
            .is_some()
        {
            drop_watch().await?;
            return Ok(None);
        }
        let read = self.read_back(&watch.key).await?;
        if read.length > watch.max_size {
            tracing::warn!(
                "{} arrived with {} bytes, past the {} its signature allowed: removed",
                watch.key,
                read.length,
                watch.max_size
            );
            self.delete(vec![watch.key.clone(), record_key.to_owned()])
                .await?;
            return Ok(None);
        }
        let landed = Landed::new(
            &watch.id,
            &watch.owner,
            &watch.name,
            read.length,
            Some(read.crc32c),
        )
        .with_sha256(Some(read.sha256));
        self.leave_event(&landed).await?;
        self.put_small(
            "record the landing",
            &s.layout.landed(&watch.id),
            landed.to_record(),
        )
        .await?;
        drop_watch().await?;
        Ok(Some(landed))
    }

    /// The parts the bucket holds of multipart upload `upload_id` at
    /// `key` (`what`, for messages), by number.
    async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
        what: &str,
    ) -> Result<Vec<StoredPart>, StoreError> {
        let s = self.s();
        let mut parts = Vec::new();
        let mut marker = None;
        loop {
            let page = s
                .control
                .list_parts()
                .bucket(&s.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker)
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) if missing(&e) => {
                    return Err(StoreError::new(
                        ErrorKind::NotFound,
                        format!(
                        "{what}: the bucket has no such multipart upload (aborted or completed)"
                    ),
                    ))
                }
                Err(e) => return Err(failed("list a direct upload's parts", &e)),
            };
            for part in page.parts() {
                parts.push(StoredPart {
                    number: part.part_number().unwrap_or_default().max(0) as u32,
                    etag: part.e_tag().unwrap_or_default().to_owned(),
                    size: part.size().unwrap_or_default().max(0) as u64,
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            marker = page.next_part_number_marker().map(str::to_owned);
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    async fn direct_meta(&self, id: &str) -> Result<Option<DirectMeta>, StoreError> {
        let layout = &self.s().layout;
        let record = self.list(&layout.upload(id)).await?.into_iter().find(|l| {
            layout
                .split_upload_key(&l.key)
                .is_some_and(|(_, rest)| Layout::parse_direct(rest).is_some())
        });
        let Some(record) = record else {
            return Ok(None);
        };
        let Some(bytes) = self.get_small(&record.key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::io("read a direct upload's record", e))
    }

    /// Completes direct upload `id` from `parts` and records its landing:
    /// see [`Store::land_direct`](fileuploader_store::Store::land_direct).
    pub(crate) async fn land_direct_upload(
        &self,
        id: &str,
        parts: &[ClaimedPart],
        max_size: Option<u64>,
        policy: OnConflict,
    ) -> Result<Landed, StoreError> {
        let Some(meta) = self.direct_meta(id).await? else {
            if let Some(landed) = fileuploader_store::Store::landed(self, id).await? {
                return Ok(landed);
            }
            return Err(StoreError::new(
                ErrorKind::NotFound,
                format!("upload {id} is not here: never begun, aborted, or expired"),
            ));
        };
        let upload = meta.upload(self);
        let stored = match self.stored_parts(&upload).await {
            Ok(stored) => Some(stored),
            // Completed by a request before this one, stopped before it
            // recorded the landing: the object says whose it is.
            Err(e)
                if e.kind() == ErrorKind::NotFound
                    && self.owner_of(&meta.key).await?.as_deref() == Some(id) =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        let s = self.s();
        let mut total = None;
        if let Some(stored) = stored {
            total = Some(check_parts(&meta, parts, &stored, max_size)?);
            match self.owner_of(&meta.key).await? {
                Some(owner) if owner != id && policy != OnConflict::Overwrite => {
                    return Err(StoreError::new(
                        ErrorKind::Conflict,
                        format!(
                            "cannot land the file: a file named {} landed in the bucket after this upload began; begin it again",
                            meta.name
                        ),
                    ))
                }
                _ => {}
            }
            if parts.is_empty() {
                self.place_empty(&meta).await?;
            } else {
                self.complete_parts(&meta, parts).await?;
            }
        }
        let read = self.read_back(&meta.key).await?;
        if let Some(total) = total.filter(|&t| t != read.length) {
            return Err(StoreError::new(
                ErrorKind::Corrupt,
                format!(
                    "upload {id}: the bucket holds {} bytes after completing {total} bytes of parts",
                    read.length
                ),
            ));
        }
        let landed = Landed::new(id, &meta.owner, &meta.name, read.length, Some(read.crc32c))
            .with_metadata(meta.metadata.clone())
            .with_sha256(Some(read.sha256));
        let layout = &s.layout;
        self.leave_event(&landed).await?;
        self.put_small("record the landing", &layout.landed(id), landed.to_record())
            .await?;
        // The multipart upload is complete: removing its records aborts
        // nothing the bucket still has open.
        if let Err(refusal) = self.remove(id).await {
            tracing::warn!("upload {id} landed; removing its records: {refusal}");
        }
        Ok(landed)
    }

    /// Completes `meta`'s multipart upload from `parts`.
    async fn complete_parts(
        &self,
        meta: &DirectMeta,
        parts: &[ClaimedPart],
    ) -> Result<(), StoreError> {
        let s = self.s();
        let completed: Vec<CompletedPart> = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number as i32)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        let done = s
            .control
            .complete_multipart_upload()
            .bucket(&s.bucket)
            .key(&meta.key)
            .upload_id(&meta.multipart)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await;
        let refused = match done {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // Completed by another request at the same moment (through another
        // receiver): the upload is gone, or its parts are (Garage drops a
        // completed upload's parts while the other request reads them), and
        // the object says whose it is once the bucket agrees.
        let raced = missing(&refused) || refused.code() == Some("InvalidPart");
        if raced && self.completed_as(meta).await? {
            return Ok(());
        }
        match refused {
            // Listed, yet refused: a part of the same number is still being
            // written by an attempt its client gave up on (Garage 2.5
            // completes from the newest attempt, finished or not), or the
            // part's own request was cut off just as it ended, after the
            // part was recorded (Garage 2.5's clean-up of the cut request
            // then drops the recorded part's bytes). Only the client can
            // cure it, by sending its parts again.
            e if e.code() == Some("InvalidPart") => Err(StoreError::new(
                ErrorKind::Invalid,
                format!(
                    "upload {}: the bucket refused the parts named, though it lists them (InvalidPart: {}); send them again in a new upload",
                    meta.id,
                    e.message().unwrap_or_default()
                ),
            )),
            e => Err(failed("complete a direct upload", &e)),
        }
    }

    /// Whether `meta`'s key holds its upload's object, asked a few times
    /// over a second: a completion that raced this one may be seen by some
    /// of the bucket's nodes before the others.
    async fn completed_as(&self, meta: &DirectMeta) -> Result<bool, StoreError> {
        for pause in [0, 50, 100, 200, 300, 350] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            if self.owner_of(&meta.key).await?.as_deref() == Some(&meta.id) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Lands `meta` as an empty object, its multipart upload aborted: a
    /// store need not take an empty part (Garage refuses one).
    async fn place_empty(&self, meta: &DirectMeta) -> Result<(), StoreError> {
        let s = self.s();
        s.control
            .put_object()
            .bucket(&s.bucket)
            .key(&meta.key)
            .metadata(UPLOAD_METADATA, &meta.id)
            .set_content_type(meta.content_type.clone())
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b""))
            .send()
            .await
            .map_err(|e| failed("place an empty file", &e))?;
        self.abort(&Landing {
            key: meta.key.clone(),
            upload_id: meta.multipart.clone(),
        })
        .await
    }

    /// `key`, if it is a file's below the store's folder (never one of the
    /// store's own records).
    fn own_key<'k>(&self, key: &'k str) -> Result<&'k str, StoreError> {
        let prefix = self.s().layout.prefix();
        let name = key.strip_prefix(prefix).unwrap_or("");
        let plain = !name.is_empty()
            && name.split('/').all(|p| {
                !p.is_empty() && p != "." && p != ".." && !p.starts_with(".fileuploader-")
            });
        match plain {
            true => Ok(key),
            false => Err(StoreError::new(
                ErrorKind::Invalid,
                format!("{key:?} is not the key of a file below {prefix:?}"),
            )),
        }
    }

    /// The credentials requests are signed with, as now resolved.
    async fn credentials(&self) -> Result<aws_credential_types::Credentials, StoreError> {
        use aws_sdk_s3::config::ProvideCredentials as _;
        let provider = self.s().credentials.as_ref().ok_or_else(|| {
            StoreError::new(
                ErrorKind::Unavailable,
                "sign: the receiver has no credentials for the bucket",
            )
        })?;
        provider
            .provide_credentials()
            .await
            .map_err(|e| StoreError::new(ErrorKind::Unavailable, format!("sign: {e}")))
    }

    /// The bucket's address for a form.
    fn bucket_url(&self) -> String {
        let s = self.s();
        crate::bucket_url(s.endpoint.as_deref(), &s.bucket, &self.region())
    }

    fn region(&self) -> String {
        self.s()
            .control
            .config()
            .region()
            .map_or_else(|| "us-east-1".to_owned(), |r| r.to_string())
    }
}

/// `s` as a URL query value (S3's upload ids may hold `+`, `/`, `=`).
pub(crate) fn query_value(s: &str) -> String {
    crate::escape_key(s).replace('/', "%2F")
}

/// Checks the parts a client names against those the bucket holds, and
/// returns the file's length: every named part there with its tag, in
/// order, each but the last at least 5 MiB, the whole within `max_size`
/// and as declared.
fn check_parts(
    meta: &DirectMeta,
    claimed: &[ClaimedPart],
    stored: &[StoredPart],
    max_size: Option<u64>,
) -> Result<u64, StoreError> {
    let invalid = |why: String| StoreError::new(ErrorKind::Invalid, why);
    if claimed.is_empty() {
        // An empty file: not every store takes an empty part.
        return match stored.first() {
            None if meta.declared.unwrap_or(0) == 0 => Ok(0),
            _ => Err(invalid(
                "name the parts sent: only an empty file completes with none".into(),
            )),
        };
    }
    let mut total = 0u64;
    let mut last = 0;
    for (i, part) in claimed.iter().enumerate() {
        if part.number <= last || part.number > MAX_PARTS {
            return Err(invalid(format!(
                "parts must be numbered 1 to {MAX_PARTS} in rising order; part {} follows {last}",
                part.number
            )));
        }
        last = part.number;
        let Some(held) = stored.iter().find(|s| s.number == part.number) else {
            return Err(invalid(format!(
                "part {} is not in the bucket; send it again",
                part.number
            )));
        };
        if held.etag.trim_matches('"') != part.etag.trim_matches('"') {
            return Err(invalid(format!(
                "part {} in the bucket is not the one named (its tag is {}); send it again",
                part.number, held.etag
            )));
        }
        if i + 1 < claimed.len() && held.size < crate::plan::MIN_PART {
            return Err(invalid(format!(
                "part {} is {} bytes; every part but the last needs {} at least",
                part.number,
                held.size,
                crate::plan::MIN_PART
            )));
        }
        total += held.size;
    }
    if let Some(limit) = max_size.filter(|&l| total > l) {
        return Err(StoreError::new(
            ErrorKind::Full,
            format!(
                "the file is {total} bytes; this receiver takes files of {limit} bytes at most"
            ),
        ));
    }
    if let Some(declared) = meta.declared.filter(|&d| d != total) {
        return Err(StoreError::new(
            ErrorKind::Conflict,
            format!(
                "upload {} was declared {declared} bytes long, its parts hold {total}",
                meta.id
            ),
        ));
    }
    Ok(total)
}

#[async_trait]
impl Direct for S3Store {
    async fn begin_direct(
        &self,
        new: NewDirect,
        quota: Quota,
        policy: OnConflict,
    ) -> Result<DirectUpload, StoreError> {
        let s = self.s();
        if let Some(meta) = self.direct_meta(&new.id).await? {
            return Ok(meta.upload(self));
        }
        self.charge(&quota, &new.owner, new.declared.unwrap_or(0))
            .await?;
        let layout = &s.layout;
        let mut settled = None;
        for n in 0..10_000 {
            let candidate = fileuploader_store::numbered(&new.name, n);
            match self.owner_of(&layout.landed_file(&candidate)).await? {
                Some(_) if policy == OnConflict::Refuse => {
                    return Err(StoreError::new(
                        ErrorKind::Conflict,
                        format!("a file named {} is in the bucket already", new.name),
                    ))
                }
                Some(_) if policy == OnConflict::Rename => continue,
                _ => {
                    settled = Some(candidate);
                    break;
                }
            }
        }
        let name = settled.ok_or_else(|| {
            StoreError::new(
                ErrorKind::Conflict,
                format!("no free name like {}", new.name),
            )
        })?;
        let key = layout.landed_file(&name);
        let landing = self
            .begin_landing(&new.id, &key, new.content_type.as_deref())
            .await?;
        self.put_small(
            "record a landing",
            &layout.landing(&new.id, &landing.upload_id),
            key.clone(),
        )
        .await?;
        let meta = DirectMeta {
            id: new.id.clone(),
            name,
            owner: new.owner,
            declared: new.declared,
            content_type: new.content_type,
            metadata: new.metadata,
            key,
            multipart: landing.upload_id,
        };
        let json = serde_json::to_vec(&meta).map_err(|e| StoreError::io("record", e))?;
        self.put_small(
            "record a direct upload",
            &layout.direct(&new.id, new.declared.unwrap_or(0)),
            json,
        )
        .await?;
        Ok(meta.upload(self))
    }

    async fn direct_upload(&self, id: &str) -> Result<Option<DirectUpload>, StoreError> {
        Ok(self.direct_meta(id).await?.map(|m| m.upload(self)))
    }

    async fn sign_part(
        &self,
        upload: &DirectUpload,
        number: u32,
        valid_for: Duration,
    ) -> Result<SignedUrl, StoreError> {
        let request = StoreRequest::UploadPart {
            key: upload.key.clone(),
            upload_id: upload.handle.clone(),
            number,
        };
        self.sign_request(&request, valid_for).await
    }

    async fn stored_parts(&self, upload: &DirectUpload) -> Result<Vec<StoredPart>, StoreError> {
        self.list_parts(
            &upload.key,
            &upload.handle,
            &format!("upload {}", upload.begun.id),
        )
        .await
    }

    async fn parts_at(&self, key: &str, upload_id: &str) -> Result<Vec<StoredPart>, StoreError> {
        let key = self.own_key(key)?;
        self.list_parts(key, upload_id, &format!("the upload at {key}"))
            .await
    }

    async fn abort_direct(&self, upload: &DirectUpload) -> Result<(), StoreError> {
        let landing = Landing {
            key: upload.key.clone(),
            upload_id: upload.handle.clone(),
        };
        self.abort(&landing).await?;
        self.remove(&upload.begun.id).await
    }

    fn key_of(&self, name: &str) -> String {
        self.s().layout.landed_file(name)
    }

    async fn watch(&self, watch: Watch) -> Result<String, StoreError> {
        let s = self.s();
        let key = self.own_key(&watch.key)?.to_owned();
        let record_key = s.layout.watch(&key);
        let now = crate::events::now_ms();
        let until = now + (watch.valid_for + WATCH_GRACE).as_millis() as u64;
        let known = self
            .get_small(&record_key)
            .await?
            .and_then(|b| serde_json::from_slice::<WatchRecord>(&b).ok());
        let record = match known {
            Some(mut known) => {
                known.until_ms = known.until_ms.max(until);
                known.owner = watch.owner;
                known.max_size = watch.max_size;
                known
            }
            None => WatchRecord {
                id: watch.id,
                name: key
                    .strip_prefix(s.layout.prefix())
                    .unwrap_or(&key)
                    .to_owned(),
                owner: watch.owner,
                key,
                max_size: watch.max_size,
                since_ms: now,
                until_ms: until,
            },
        };
        let json = serde_json::to_vec(&record).map_err(|e| StoreError::io("record", e))?;
        self.put_small("record a watch", &record_key, json).await?;
        Ok(record.id)
    }

    async fn settle_watches(&self) -> Result<Vec<Landed>, StoreError> {
        let mut landed = Vec::new();
        for listed in self.list(&self.s().layout.watches()).await? {
            match self.settle_watch(&listed.key).await {
                Ok(Some(one)) => landed.push(one),
                Ok(None) => {}
                Err(e) => tracing::warn!("cannot settle the watch {}: {e}", listed.key),
            }
        }
        Ok(landed)
    }

    async fn sign_request(
        &self,
        request: &StoreRequest,
        valid_for: Duration,
    ) -> Result<SignedUrl, StoreError> {
        let s = self.s();
        let part =
            |key: &str, upload_id: &str, rest: &str| -> Result<(String, String), StoreError> {
                let key = self.own_key(key)?;
                Ok((
                    key.to_owned(),
                    format!("?{rest}uploadId={}", query_value(upload_id)),
                ))
            };
        let (method, (key, query)) = match request {
            StoreRequest::PutObject { name } => {
                ("PUT", (s.layout.landed_file(name), String::new()))
            }
            StoreRequest::CreateMultipart { name } => {
                ("POST", (s.layout.landed_file(name), "?uploads".to_owned()))
            }
            StoreRequest::UploadPart {
                key,
                upload_id,
                number,
            } => {
                if !(1..=MAX_PARTS).contains(number) {
                    return Err(StoreError::new(
                        ErrorKind::Invalid,
                        format!("the part number must be 1 to {MAX_PARTS}, not {number}"),
                    ));
                }
                (
                    "PUT",
                    part(key, upload_id, &format!("partNumber={number}&"))?,
                )
            }
            StoreRequest::ListParts { key, upload_id } => ("GET", part(key, upload_id, "")?),
            StoreRequest::Complete { key, upload_id } => ("POST", part(key, upload_id, "")?),
            StoreRequest::Abort { key, upload_id } => ("DELETE", part(key, upload_id, "")?),
        };
        let url = format!("{}/{}{query}", self.bucket_url(), crate::escape_key(&key));
        let credentials = self.credentials().await?;
        let signed = crate::sigv4::sign_s3(
            credentials,
            &self.region(),
            method,
            &url,
            &[],
            Some(valid_for),
        )
        .map_err(|e| StoreError::new(ErrorKind::Invalid, format!("sign a request: {e}")))?;
        let crate::sigv4::Signed::Url(url) = signed else {
            return Err(StoreError::io("sign a request", "no URL"));
        };
        Ok(SignedUrl {
            url,
            expires: SystemTime::now() + valid_for,
        })
    }

    async fn sign_form(
        &self,
        name: &str,
        content_type: Option<&str>,
        max_size: u64,
        valid_for: Duration,
    ) -> Result<SignedForm, StoreError> {
        let s = self.s();
        let credentials = self.credentials().await?;
        let signer = Signer {
            key_id: credentials.access_key_id().to_owned(),
            secret: credentials.secret_access_key().to_owned(),
            session_token: credentials.session_token().map(str::to_owned),
            region: self.region(),
        };
        let policy = PostPolicy {
            bucket: s.bucket.clone(),
            key: s.layout.landed_file(name),
            max_size,
            valid_for,
            content_type: content_type.map(str::to_owned),
            success_status: Some(201),
        };
        let now = SystemTime::now();
        let form = policy.form(&self.bucket_url(), &signer, now);
        Ok(SignedForm {
            url: form.url,
            fields: form.fields,
            expires: now + valid_for,
        })
    }
}
