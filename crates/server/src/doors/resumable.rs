//! The receiver's tus 1.0 and IETF resumable-upload doors. Both create an
//! upload with `POST` (answering its URL in `Location`), report its offset
//! on `HEAD`, append with `PATCH` at `Upload-Offset`, and end it with
//! `DELETE`; they differ in their version headers, media types and how a
//! request says it carries the end. Both run on the same store as the
//! segmented multipart door: an append is a block from the offset, answered
//! only once durable.

use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use fileuploader_wire::draft::{
    disposition_name, format_digests, parse_digests, wanted_digests, Problem, UploadLimit,
    CONTENT_DIGEST, PROBLEM_JSON, REPR_DIGEST, UPLOAD_LIMIT, WANT_REPR_DIGEST,
};
use fileuploader_wire::receipt::RECEIPT_HEADER;
use fileuploader_wire::resumable::{
    encode_text, parse_offset, Checksum, ChecksumAlgorithm, Concat, Hasher, Metadata, Version,
    IDEMPOTENCY_KEY, INTEROP_VERSION, LANDED_NAME, OFFSET_OCTET_STREAM, TUS_CHECKSUM_ALGORITHM,
    TUS_EXTENSION, TUS_MAX_SIZE, TUS_RESUMABLE, TUS_V1, TUS_VERSION, UPLOAD_CHECKSUM,
    UPLOAD_CONCAT, UPLOAD_DEFER_LENGTH, UPLOAD_EXPIRES, UPLOAD_LENGTH, UPLOAD_METADATA,
    UPLOAD_OFFSET,
};
use fileuploader_wire::ContentRange;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::appends::Appending;
use crate::auth::Grant;
use crate::interim::Interim;
use crate::limits::{Cut, Guarded};
use crate::receiver::Receiver;
use crate::refusal::Refusal;
use crate::request::{plain_name, RequestBody};
use crate::store::{BlockWriter, NewUpload, Upload};
use crate::uploads::{self, Allowance, Chunks, Outcome, Via};

/// `104 (Upload Resumption Supported)`, the draft's interim answer.
const UPLOAD_RESUMPTION_SUPPORTED: StatusCode = match StatusCode::from_u16(104) {
    Ok(status) => status,
    Err(_) => StatusCode::CONTINUE,
};

/// The tus extensions this receiver supports.
pub(crate) const TUS_EXTENSIONS: &str =
    "creation,creation-with-upload,termination,checksum,concatenation,expiration";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl From<Version> for Via {
    fn from(dialect: Version) -> Self {
        match dialect {
            Version::Tus => Via::Tus,
            Version::Ietf(v) => Via::Draft(v),
        }
    }
}

/// The protocol a request's headers name, if either: the IETF draft's
/// version header, else tus's (a `HEAD` may come without it).
pub(crate) fn version_of(
    request_headers: &HeaderMap,
    method: &Method,
) -> Option<Result<Version, Refusal>> {
    if let Some(value) = request_headers.get(INTEROP_VERSION) {
        let text = String::from_utf8_lossy(value.as_bytes());
        return Some(Version::ietf(&text).map_err(|e| bad(e.to_string())));
    }
    let tus = request_headers.contains_key(TUS_RESUMABLE)
        || matches!(*method, Method::HEAD | Method::PATCH);
    tus.then_some(Ok(Version::Tus))
}

/// A response under construction: status, headers, a text body.
pub(crate) struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// The landed file's digests, when the answer reports a landing: for
    /// `Repr-Digest`, if the request wants it.
    digests: Vec<(ChecksumAlgorithm, Vec<u8>)>,
}

impl Answer {
    fn new(status: StatusCode) -> Self {
        Answer {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            digests: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
            self.headers.insert(HeaderName::from_static(name), value);
        }
        self
    }

    /// A refusal as one of the draft's problem types.
    fn problem(refusal: &Refusal, problem: Problem) -> Self {
        let mut answer = Answer::new(refusal.status());
        answer.body = Bytes::from(problem.to_json(refusal.message()));
        answer.header("content-type", PROBLEM_JSON)
    }

    pub(crate) fn refused(refusal: &Refusal) -> Self {
        let mut answer = Answer::new(refusal.status());
        answer.body = Bytes::from(format!("{}\n", refusal.message()));
        answer.header("content-type", "text/plain; charset=utf-8")
    }

    pub(crate) fn into_response(self, dialect: Option<Version>) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        match dialect {
            Some(Version::Tus) => {
                response
                    .headers_mut()
                    .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_V1));
            }
            Some(Version::Ietf(v)) => {
                response.headers_mut().insert(INTEROP_VERSION, v.into());
            }
            None => {}
        }
        response
    }
}

/// The `OPTIONS` answer: what the receiver speaks, tus and the draft
/// alike (the draft's `Accept-Patch` and `Upload-Limit`, its lifetime
/// named as `dialect` names it, the newest's way without one).
pub(crate) fn options(limits: UploadLimit, dialect: Option<Version>) -> Answer {
    let algorithms: Vec<&str> = ChecksumAlgorithm::ALL.iter().map(|a| a.name()).collect();
    let answer = Answer::new(StatusCode::NO_CONTENT)
        .header(TUS_VERSION, TUS_V1)
        .header(TUS_EXTENSION, TUS_EXTENSIONS)
        .header(TUS_MAX_SIZE, limits.max_size.unwrap_or(u64::MAX))
        .header(TUS_CHECKSUM_ALGORITHM, algorithms.join(","))
        .header("accept-patch", fileuploader_wire::resumable::PARTIAL_UPLOAD);
    let dialect = dialect.unwrap_or(Version::Ietf(
        fileuploader_wire::resumable::NEWEST_INTEROP_VERSION,
    ));
    with_limits(answer, dialect, limits)
}

/// `answer` with `Upload-Limit`, where `dialect` has it.
fn with_limits(answer: Answer, dialect: Version, limits: UploadLimit) -> Answer {
    match dialect.limit_age_key().and_then(|key| limits.format(key)) {
        Some(value) => answer.header(UPLOAD_LIMIT, value),
        None => answer,
    }
}

/// A raw request body as chunks, each within the idle timeout, feeding a
/// digest as they pass.
struct Body {
    stream: Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>,
    hasher: Option<Hasher>,
}

#[async_trait::async_trait]
impl Chunks for Body {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Refusal> {
        match self.stream.next().await {
            None => Ok(None),
            Some(Ok(chunk)) => {
                if let Some(h) = &mut self.hasher {
                    h.update(&chunk);
                }
                Ok(Some(chunk))
            }
            Some(Err(e)) => Err(match e.downcast_ref::<Cut>() {
                Some(cut) => Refusal::new(StatusCode::REQUEST_TIMEOUT, cut.to_string()),
                None => crate::refusal::broke_off(e),
            }),
        }
    }
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, message)
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Where an upload's bytes stop being contiguous from the start: its
/// offset.
fn offset_of(upload: &Upload) -> u64 {
    match upload.received.ranges().first() {
        Some(&(0, end)) => end,
        _ => 0,
    }
}

/// A fresh upload id: 128 random bits in hex.
pub(crate) fn fresh_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Receiver {
    /// Serves one tus or IETF request.
    pub(crate) async fn resumable<B: RequestBody>(
        &self,
        request: Request<B>,
        grant: &Grant,
        dialect: Version,
    ) -> Result<Answer, Refusal> {
        if dialect == Version::Tus
            && *request.method() != Method::HEAD
            && text(request.headers(), TUS_RESUMABLE) != Some(TUS_V1)
        {
            return Ok(Answer::new(StatusCode::PRECONDITION_FAILED).header(TUS_VERSION, TUS_V1));
        }
        let wanted = match dialect {
            Version::Tus => Vec::new(),
            Version::Ietf(_) => text(request.headers(), WANT_REPR_DIGEST)
                .map(wanted_digests)
                .unwrap_or_default(),
        };
        let answer = match *request.method() {
            Method::POST => self.create(request, grant, dialect).await,
            Method::HEAD => self.offset(request.uri(), grant, dialect).await,
            // The draft reads the offset with GET too (from interop 9;
            // earlier versions never send it).
            Method::GET if dialect != Version::Tus => {
                self.offset(request.uri(), grant, dialect).await
            }
            Method::PATCH => self.append(request, grant, dialect).await,
            Method::DELETE => self.terminate(request.uri(), grant).await,
            _ => Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST, HEAD, PATCH or DELETE",
            )),
        }?;
        // The landed file's digests, those asked for that it has.
        let given: Vec<_> = wanted
            .iter()
            .filter_map(|w| answer.digests.iter().find(|(a, _)| a == w).cloned())
            .collect();
        Ok(match given.as_slice() {
            [] => answer,
            _ => answer.header(REPR_DIGEST, format_digests(&given)),
        })
    }

    /// The upload a URL names: its last path segment.
    fn upload_of(uri: &http::Uri) -> Result<&str, Refusal> {
        let id = uri
            .path()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        fileuploader_wire::check_upload_id(id)
            .map_err(|e| Refusal::new(StatusCode::NOT_FOUND, e.to_string()))
    }

    /// When an upload touched now expires.
    fn expires(&self) -> String {
        httpdate::fmt_http_date(SystemTime::now() + self.expire)
    }

    /// The limits an upload of `grant`'s has here.
    pub(crate) fn upload_limit(&self, grant: Option<&Grant>) -> UploadLimit {
        UploadLimit {
            max_size: Some(grant.map_or(self.max_upload_size, |g| g.largest(self.max_upload_size))),
            max_age: Some(self.expire.as_secs()),
            max_append_size: self.max_append_size,
            ..UploadLimit::default()
        }
    }

    async fn create<B: RequestBody>(
        &self,
        request: Request<B>,
        grant: &Grant,
        dialect: Version,
    ) -> Result<Answer, Refusal> {
        let headers = request.headers();
        let concat = text(headers, UPLOAD_CONCAT)
            .map(Concat::parse)
            .transpose()
            .map_err(|e| bad(e.to_string()))?;
        if let Some(Concat::Final(urls)) = concat {
            return self.concatenate(request.uri(), headers, grant, &urls).await;
        }
        if headers.contains_key(UPLOAD_DEFER_LENGTH) {
            return Err(bad(
                "Upload-Defer-Length is not supported: send Upload-Length",
            ));
        }
        let complete = completes(headers, dialect)?;
        let length = match (text(headers, UPLOAD_LENGTH), complete) {
            (Some(v), _) => parse_offset(v).map_err(|e| bad(e.to_string()))?,
            (None, Some(true)) => text(headers, header::CONTENT_LENGTH.as_str())
                .and_then(|v| parse_offset(v).ok())
                .ok_or_else(|| {
                    bad("a complete upload without Upload-Length needs a Content-Length")
                })?,
            (None, _) => return Err(bad("Upload-Length is required")),
        };
        let max_size = grant.largest(self.max_upload_size);
        if length > max_size {
            return Err(crate::refusal::too_large(max_size));
        }
        if let (Some(true), Some(carried)) = (complete, content_length(headers)) {
            if carried != length {
                return inconsistent(
                    dialect,
                    format!("this request completes the upload with {carried} bytes, but Upload-Length says {length}"),
                );
            }
        }
        self.append_bound(headers, dialect)?;
        // A creation sent again (its answer lost) names the same upload.
        let id = match text(headers, IDEMPOTENCY_KEY) {
            Some(key) => uploads::derived_id(&grant.owner, &[IDEMPOTENCY_KEY, key]),
            None => fresh_id(),
        };
        let partial = concat == Some(Concat::Partial);
        let name = if partial {
            id.clone()
        } else {
            name_of(headers, grant, &id)?
        };
        let location = location(request.uri(), &id);
        let with_body = match dialect {
            Version::Tus => {
                text(headers, header::CONTENT_TYPE.as_str()) == Some(OFFSET_OCTET_STREAM)
            }
            Version::Ietf(_) => true,
        };
        let new = NewUpload {
            id: id.clone(),
            total: length,
            name,
            owner: grant.owner.clone(),
            partial,
            metadata: None,
        };
        let allowance = self.allowance(grant, dialect);
        let answer = Answer::new(StatusCode::CREATED)
            .header("location", &location)
            .header(UPLOAD_EXPIRES, self.expires());
        let answer = with_limits(answer, dialect, self.upload_limit(Some(grant)));
        let opened = uploads::open(self.store.as_ref(), new, allowance).await;
        let upload = match opened.map_err(not_to_retry)? {
            Outcome::InProgress(upload) => upload,
            // Created and landed before: the answer that said so was lost.
            landed => return self.told(answer, dialect, landed, 0),
        };
        if length == 0 && !partial {
            // Nothing will ever be appended: it is complete as created.
            let outcome =
                uploads::land(self.store.as_ref(), upload, None, self.terms(dialect)).await?;
            return self.told(answer, dialect, outcome, 0);
        }
        if !with_body {
            return Ok(answer.header(UPLOAD_OFFSET, 0));
        }
        // Registered before the upload is told of: a request for it ends
        // this one and waits for what it keeps.
        let appending = self.appends.begin(&id, &grant.owner).await;
        if let (Version::Ietf(v), Some(interim)) = (dialect, request.extensions().get::<Interim>())
        {
            // Where the upload is, before its bytes: a client whose
            // connection breaks mid-body resumes there.
            let told = with_limits(
                Answer::new(StatusCode::CREATED)
                    .header("location", &location)
                    .header(INTEROP_VERSION, v),
                dialect,
                self.upload_limit(Some(grant)),
            );
            interim.send(UPLOAD_RESUMPTION_SUPPORTED, &told.headers);
        }
        let (outcome, end) = self
            .pour_append(request, &upload, appending, 0, complete, dialect)
            .await?;
        self.told(answer, dialect, outcome, end)
    }

    /// Creates a final upload from complete partial ones (the tus
    /// concatenation extension), lands it, and discards the parts.
    async fn concatenate(
        &self,
        uri: &http::Uri,
        headers: &HeaderMap,
        grant: &Grant,
        urls: &[String],
    ) -> Result<Answer, Refusal> {
        let paths = urls
            .iter()
            .map(|url| {
                url.parse::<http::Uri>()
                    .map_err(|_| bad(format!("malformed URL {url:?} in Upload-Concat")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ids = paths
            .iter()
            .map(Self::upload_of)
            .collect::<Result<Vec<_>, _>>()?;
        // A part named twice would make a file of bytes sent once.
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = ids.iter().find(|id| !seen.insert(**id)) {
            return Err(bad(format!(
                "Upload-Concat names partial upload {twice} more than once; name each part once"
            )));
        }
        // The same parts make the same final upload: a request sent again
        // (its answer lost) finds the file it landed, not a name taken.
        let id = uploads::derived_id(&grant.owner, &ids);
        let answer = Answer::new(StatusCode::CREATED).header("location", location(uri, &id));
        let store = self.store.as_ref();
        let begun =
            match uploads::settle(store, &id, &grant.owner, self.terms(Version::Tus)).await? {
                // Built before: landed, or failed to land (tried again now).
                outcome @ (Outcome::Landed(..) | Outcome::Failed(..)) => {
                    return self.told(answer, Version::Tus, outcome, 0)
                }
                // Begun but not built whole (the receiver stopped while it
                // joined the parts): built again from the parts, as it was
                // let in.
                Outcome::InProgress(upload) => Some(upload.begun),
                Outcome::Unknown => None,
            };
        let mut parts = Vec::with_capacity(ids.len());
        for id in ids {
            let part = uploads::find_owned(self.store.as_ref(), id, &grant.owner)
                .await?
                .ok_or_else(|| {
                    Refusal::new(
                        StatusCode::NOT_FOUND,
                        format!("partial upload {id} is unknown, expired or ended"),
                    )
                })?;
            if !part.begun.partial || !part.complete() {
                return Err(bad(format!("upload {id} is not a finished partial upload")));
            }
            parts.push(part);
        }
        let total = parts.iter().map(|p| p.begun.total).sum::<u64>();
        let max_size = grant.largest(self.max_upload_size);
        if total > max_size {
            return Err(crate::refusal::too_large(max_size));
        }
        let (name, metadata) = match begun {
            Some(begun) => (begun.name, begun.metadata),
            None => {
                let name = name_of(headers, grant, &id)?;
                let allowance = self.allowance(grant, Version::Tus);
                let (name, metadata) = match allowance.admit(Some(&id), &name, Some(total)).await? {
                    Some(admitted) => (admitted.name, Some(admitted.metadata)),
                    None => (name, None),
                };
                uploads::check_name(store, &name, self.on_conflict, None)
                    .await
                    .map_err(not_to_retry)?;
                (name, metadata)
            }
        };
        let new = NewUpload {
            id: id.clone(),
            total,
            name: name.clone(),
            owner: grant.owner.clone(),
            partial: false,
            metadata,
        };
        let whole = store.concatenate(new, &parts, self.quota).await?;
        let outcome = uploads::land(store, whole, Some(name), self.terms(Version::Tus)).await?;
        if let Outcome::Landed(..) = outcome {
            // All at once: the store records them together.
            let discards = parts.iter().map(|part| store.discard(&part.begun.id));
            futures_util::future::try_join_all(discards).await?;
        }
        self.told(answer, Version::Tus, outcome, 0)
    }

    /// What an upload has come to, as a creation's, an append's or a
    /// `HEAD`'s answer says it: landed, its length as the offset (complete,
    /// in the IETF dialect), the name it landed under and its receipt; in
    /// progress, its offset (at least `at`, where the bytes this request
    /// took end); a failed landing, refused (422 for what the client cannot
    /// mend, the cause's status else), never with an offset that would say
    /// it is complete. The application's word, if it spoke, is the body
    /// (a 204 becomes a 200 to carry it).
    fn told(
        &self,
        answer: Answer,
        dialect: Version,
        outcome: Outcome,
        at: u64,
    ) -> Result<Answer, Refusal> {
        match outcome {
            Outcome::Landed(landed, word) => {
                let mut answer = finished(answer, dialect, landed.length, true)
                    .header(LANDED_NAME, encode_text(&landed.name));
                answer.digests = [
                    landed
                        .crc32c
                        .map(|c| (ChecksumAlgorithm::Crc32c, c.to_be_bytes().to_vec())),
                    landed
                        .sha256
                        .map(|s| (ChecksumAlgorithm::Sha256, s.to_vec())),
                ]
                .into_iter()
                .flatten()
                .collect();
                if let Some(receipt) = self.receipt_of(&landed) {
                    answer = answer.header(RECEIPT_HEADER, receipt);
                }
                if let Some(word) = word {
                    // The application's word is the body; a 204 cannot carry one.
                    if answer.status == StatusCode::NO_CONTENT {
                        answer.status = StatusCode::OK;
                    }
                    answer = answer.header("content-type", word.content_type());
                    answer.body = word.body;
                }
                Ok(answer)
            }
            Outcome::InProgress(upload) => {
                Ok(finished(answer, dialect, offset_of(&upload).max(at), false))
            }
            Outcome::Failed(_, refusal) => Err(landing_failed(&refusal)),
            Outcome::Unknown => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "the upload is unknown, expired or ended",
            )),
        }
    }

    fn allowance<'a>(&'a self, grant: &'a Grant, dialect: Version) -> Allowance<'a> {
        Allowance {
            owner: &grant.owner,
            terms: self.terms(dialect),
            quota: self.quota,
            gate: self.before_creation.as_ref(),
        }
    }

    async fn offset(
        &self,
        uri: &http::Uri,
        grant: &Grant,
        dialect: Version,
    ) -> Result<Answer, Refusal> {
        let id = Self::upload_of(uri)?;
        self.appends.take_over(id, &grant.owner).await;
        let status = match dialect {
            Version::Tus => StatusCode::OK,
            Version::Ietf(_) => StatusCode::NO_CONTENT,
        };
        let mut answer = Answer::new(status).header("cache-control", "no-store");
        answer = with_limits(answer, dialect, self.upload_limit(Some(grant)));
        // A whole upload that has not landed lands first: telling its
        // offset before would tell the client it landed.
        let outcome =
            uploads::settle(self.store.as_ref(), id, &grant.owner, self.terms(dialect)).await?;
        match &outcome {
            Outcome::InProgress(upload) => {
                if upload.begun.partial {
                    answer = answer.header(UPLOAD_CONCAT, Concat::Partial);
                }
                answer = answer.header(UPLOAD_LENGTH, upload.begun.total);
            }
            Outcome::Landed(landed, _) => {
                answer = answer.header(UPLOAD_LENGTH, landed.length);
            }
            _ => {}
        }
        self.told(answer, dialect, outcome, 0)
    }

    async fn append<B: RequestBody>(
        &self,
        request: Request<B>,
        grant: &Grant,
        dialect: Version,
    ) -> Result<Answer, Refusal> {
        let headers = request.headers();
        if dialect == Version::Tus
            && text(headers, header::CONTENT_TYPE.as_str()) != Some(OFFSET_OCTET_STREAM)
        {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("a tus PATCH is {OFFSET_OCTET_STREAM}"),
            ));
        }
        let offset = text(headers, UPLOAD_OFFSET)
            .ok_or_else(|| bad("Upload-Offset is required"))
            .and_then(|v| parse_offset(v).map_err(|e| bad(e.to_string())))?;
        let complete = completes(headers, dialect)?;
        let id = Self::upload_of(request.uri())?.to_owned();
        // Registered before anything is looked up: a request for the
        // upload arriving from now on ends this one and waits for what it
        // keeps, so no offset told meanwhile is outdated.
        let appending = self.appends.begin(&id, &grant.owner).await;
        let upload =
            match uploads::settle(self.store.as_ref(), &id, &grant.owner, self.terms(dialect))
                .await?
            {
                Outcome::InProgress(upload) => upload,
                Outcome::Landed(landed, word) => {
                    let length = landed.length;
                    // Complete already: an empty append at its end is no change.
                    if offset == length && request_is_empty(&request) {
                        let answer = Answer::new(StatusCode::NO_CONTENT);
                        return self.told(answer, dialect, Outcome::Landed(landed, word), 0);
                    }
                    let message = format!("upload {id} is complete at {length} bytes");
                    if dialect.has_completed_problem() {
                        let refusal = bad(message);
                        return Ok(Answer::problem(&refusal, Problem::CompletedUpload));
                    }
                    return Err(Refusal::new(StatusCode::CONFLICT, message).with_offset(length));
                }
                outcome => {
                    return self.told(Answer::new(StatusCode::NO_CONTENT), dialect, outcome, 0)
                }
            };
        if let Some(said) = text(headers, UPLOAD_LENGTH) {
            let said = parse_offset(said).map_err(|e| bad(e.to_string()))?;
            if said != upload.begun.total {
                return inconsistent(
                    dialect,
                    format!(
                        "Upload-Length says {said} bytes, but the upload was created with {}",
                        upload.begun.total
                    ),
                );
            }
        }
        let held = offset_of(&upload);
        if offset != held {
            let refusal = Refusal::new(
                StatusCode::CONFLICT,
                format!("Upload-Offset is {offset}, but the receiver holds {held} bytes"),
            );
            if dialect.has_problem_types() {
                let problem = Problem::MismatchingOffset {
                    expected: held,
                    provided: offset,
                };
                return Ok(Answer::problem(&refusal, problem).header(UPLOAD_OFFSET, held));
            }
            return Err(refusal.with_offset(held));
        }
        let answer = Answer::new(StatusCode::NO_CONTENT).header(UPLOAD_EXPIRES, self.expires());
        let (outcome, end) = self
            .pour_append(request, &upload, appending, offset, complete, dialect)
            .await?;
        self.told(answer, dialect, outcome, end)
    }

    /// Appends a request's body at `offset`: checked against its
    /// `Upload-Checksum`, acknowledged durably, landed when it completes the
    /// upload. A body cut short without a checksum keeps what arrived, as
    /// does one a newer request for the upload ends.
    /// Returns what the upload came to, and where the bytes taken end.
    async fn pour_append<B: RequestBody>(
        &self,
        request: Request<B>,
        upload: &Upload,
        mut appending: Appending,
        offset: u64,
        complete: Option<bool>,
        dialect: Version,
    ) -> Result<(Outcome, u64), Refusal> {
        let mut checksum = text(request.headers(), UPLOAD_CHECKSUM)
            .map(Checksum::parse)
            .transpose()
            .map_err(|e| bad(e.to_string()))?;
        if dialect != Version::Tus && checksum.is_none() {
            // The draft's own: a digest of this request's content.
            let digests = text(request.headers(), CONTENT_DIGEST)
                .map(parse_digests)
                .transpose()
                .map_err(|e| bad(e.to_string()))?;
            checksum = digests
                .and_then(|d| d.into_iter().next())
                .map(|(algorithm, digest)| Checksum {
                    algorithm: algorithm.name().to_owned(),
                    digest,
                });
        }
        let algorithm = match &checksum {
            None => None,
            Some(c) => Some(ChecksumAlgorithm::from_name(&c.algorithm).ok_or_else(|| {
                bad(format!(
                    "checksum algorithm {:?} is not supported",
                    c.algorithm
                ))
            })?),
        };
        let total = upload.begun.total;
        if offset == total {
            // Nothing more to take (a part waiting for its concatenation).
            return Ok((Outcome::InProgress(upload.clone()), offset));
        }
        let bound = self.append_bound(request.headers(), dialect)?;
        // A body that says its length reserves just that much.
        let sized = content_length(request.headers());
        let end = match sized {
            Some(len) if len > total - offset => {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body runs past the upload's {total} bytes"),
                ))
            }
            Some(len) => offset + len,
            None => bound.map_or(total, |most| total.min(offset + most)),
        };
        let range = ContentRange {
            start: offset,
            end,
            total,
        };
        let mut writer = self
            .store
            .write_block(upload, range, sized.is_some())
            .await?;
        let stream = request.into_body().into_data_stream().map_err(Into::into);
        let mut body = Body {
            stream: Box::pin(Guarded::raw(Box::pin(stream), &self.limits)),
            hasher: algorithm.map(ChecksumAlgorithm::hasher),
        };
        let mut poured = uploads::Poured { len: 0, crc32c: 0 };
        let cut = loop {
            let next = tokio::select! {
                next = body.next_chunk() => next,
                () = appending.taken_over() => Err(Refusal::new(
                    StatusCode::CONFLICT,
                    "a newer request for this upload took it over; this one ends with the bytes it delivered kept",
                )),
            };
            match next {
                Ok(None) => break None,
                Ok(Some(chunk)) => {
                    if poured.len + chunk.len() as u64 > range.len() {
                        break Some(match bound {
                            Some(most) if range.end < total => too_much(most),
                            _ => Refusal::new(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                format!("the body runs past the upload's {total} bytes"),
                            ),
                        });
                    }
                    poured.len += chunk.len() as u64;
                    poured.crc32c = crc32c::crc32c_append(poured.crc32c, &chunk);
                    writer.write(chunk).await?;
                }
                Err(e) => break Some(e),
            }
        };
        if let Some(refusal) = cut {
            if checksum.is_none()
                && poured.len > 0
                && refusal.status() != StatusCode::PAYLOAD_TOO_LARGE
            {
                // What arrived is kept: the client resumes from there.
                self.keep(writer, poured, dialect).await?;
            }
            return Err(refusal);
        }
        if let (Some(expected), Some(hasher)) = (&checksum, body.hasher.take()) {
            let digest = hasher.finish();
            if digest != expected.digest {
                // tus names its own status; the draft's digests are
                // plain bad requests.
                let status = match dialect {
                    Version::Tus => StatusCode::from_u16(fileuploader_wire::DIGEST_MISMATCH)
                        .unwrap_or(StatusCode::BAD_REQUEST),
                    Version::Ietf(_) => StatusCode::BAD_REQUEST,
                };
                return Err(Refusal::new(
                    status,
                    format!(
                        "the body does not match its {} checksum",
                        expected.algorithm
                    ),
                ));
            }
        }
        let end = offset + poured.len;
        if complete == Some(true) && end != total {
            return Err(bad(format!(
                "Upload-Complete says this request ends the upload, but it ends at {end} of {total} bytes"
            )));
        }
        if poured.len == 0 {
            return Ok((Outcome::InProgress(upload.clone()), offset));
        }
        Ok((self.keep(writer, poured, dialect).await?, end))
    }

    /// The most one request of the draft may carry here (`None`: up to
    /// the upload's end); refused with 413 now when its `Content-Length`
    /// says more.
    fn append_bound(&self, headers: &HeaderMap, dialect: Version) -> Result<Option<u64>, Refusal> {
        let Some(most) = self.max_append_size.filter(|_| dialect != Version::Tus) else {
            return Ok(None);
        };
        match content_length(headers) {
            Some(len) if len > most => Err(too_much(most)),
            _ => Ok(Some(most)),
        }
    }

    /// Acknowledges the bytes `poured` into `writer`, landing the upload if
    /// they complete it.
    async fn keep(
        &self,
        writer: Box<dyn BlockWriter>,
        poured: uploads::Poured,
        dialect: Version,
    ) -> Result<Outcome, Refusal> {
        let terms = self.terms(dialect);
        let store = self.store.as_ref();
        uploads::acknowledge(store, writer, poured.len, Some(poured.crc32c), None, terms).await
    }

    async fn terminate(&self, uri: &http::Uri, grant: &Grant) -> Result<Answer, Refusal> {
        let id = Self::upload_of(uri)?;
        self.appends.take_over(id, &grant.owner).await;
        if uploads::find_owned(self.store.as_ref(), id, &grant.owner)
            .await?
            .is_none()
        {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!("upload {id} is unknown, expired or ended"),
            ));
        }
        self.store.discard(id).await?;
        Ok(Answer::new(StatusCode::NO_CONTENT))
    }

    /// Serves one request of either protocol, answering its refusals in
    /// its own dialect.
    pub(crate) async fn resumable_response<B: RequestBody>(
        &self,
        request: Request<B>,
        grant: Result<Grant, Refusal>,
        dialect: Version,
    ) -> Response<Full<Bytes>> {
        let result = match grant {
            Ok(grant) => self.resumable(request, &grant, dialect).await,
            Err(refusal) => Err(refusal),
        };
        let limits = self.upload_limit(None);
        let answer = result.unwrap_or_else(|refusal| {
            tracing::debug!(%refusal, "refused");
            let mut answer = Answer::refused(&refusal);
            if refusal.status() == StatusCode::PAYLOAD_TOO_LARGE {
                // The draft's 413 says which limits it keeps.
                answer = with_limits(answer, dialect, limits);
            }
            if let Some(offset) = refusal.offset() {
                answer = answer.header(UPLOAD_OFFSET, offset);
            }
            answer
        });
        let refused = answer.status.is_client_error() || answer.status.is_server_error();
        let answer = match dialect.completion(false) {
            // The draft's refusals are the upload protocol's, not the
            // file's (a landing that failed is tried again): the upload
            // is not complete.
            Some((name, flag)) if refused && !answer.headers.contains_key(name) => {
                answer.header(name, flag)
            }
            _ => answer,
        };
        answer.into_response(Some(dialect))
    }
}

/// A request whose lengths disagree with each other or with the upload's:
/// a 400, the draft's `inconsistent-upload-length` problem where the
/// dialect has problem types.
fn inconsistent(dialect: Version, message: String) -> Result<Answer, Refusal> {
    let refusal = bad(message);
    if dialect.has_problem_types() {
        return Ok(Answer::problem(&refusal, Problem::InconsistentLength));
    }
    Err(refusal)
}

/// A request's `Content-Length`, where it gives one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
}

/// A request of the draft carrying more than `most` bytes.
fn too_much(most: u64) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("one creation or append may carry at most {most} bytes here (Upload-Limit max-append-size): send the rest in further appends"),
    )
}

/// Where a new upload `id` lives: below the creation URL's path, with its
/// query (a signed creation URL's signature covers the upload too).
fn location(uri: &http::Uri, id: &str) -> String {
    let path = uri.path().trim_end_matches('/');
    match uri.query() {
        Some(query) => format!("{path}/{id}?{query}"),
        None => format!("{path}/{id}"),
    }
}

/// The name an upload lands under: its metadata's `relativePath` (a path
/// below a folder, as Uppy and our client send it for a folder's files),
/// else its `Content-Disposition` file name (the draft's way), else its
/// metadata's `filename` (or `name`), made a name inside the receiver's
/// directory and allowed by the credentials; else its id.
fn name_of(headers: &HeaderMap, grant: &Grant, id: &str) -> Result<String, Refusal> {
    let metadata = text(headers, UPLOAD_METADATA)
        .map(Metadata::parse)
        .transpose()
        .map_err(|e| bad(e.to_string()))?
        .unwrap_or_default();
    let relative = metadata
        .text("relativePath")
        .filter(|p| p.contains('/') && p != "null");
    // The draft's way, a file name without folders: Content-Disposition
    // (tus clients send none).
    let disposed = text(headers, header::CONTENT_DISPOSITION.as_str()).and_then(disposition_name);
    let name = match relative
        .or(disposed)
        .or_else(|| metadata.text("filename"))
        .or_else(|| metadata.text("name"))
    {
        Some(name) => plain_name(&name)?,
        None => id.to_owned(),
    };
    grant.check_name(&name)?;
    Ok(name)
}

/// Whether the request says it ends the upload (IETF), if it says.
fn completes(headers: &HeaderMap, dialect: Version) -> Result<Option<bool>, Refusal> {
    dialect
        .complete_in(|name| text(headers, name))
        .map_err(|e| bad(format!("the completion header: {e}")))
}

/// Whether a request carries no content, as its body says (a body of
/// unstated length, chunked, is not taken for empty).
fn request_is_empty<B: RequestBody>(request: &Request<B>) -> bool {
    let body = request.body();
    body.is_end_stream()
        || body.size_hint().exact() == Some(0)
        || content_length(request.headers()) == Some(0)
}

/// A creation's conflict no retry can mend (its name taken, its id begun
/// with another length), as browser tus clients read it: tus-js-client and
/// Uppy retry 409 and 423, so this door answers 422.
fn not_to_retry(refusal: Refusal) -> Refusal {
    if refusal.status() == StatusCode::CONFLICT {
        Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, refusal.message())
    } else {
        refusal
    }
}

/// A landing that failed, as the tus and IETF doors refuse it: 409 means
/// "ask the offset again" there, and the offset would say complete, so a
/// cause the client cannot mend (a name taken, a folder in the way) is
/// 422; a server-side cause keeps its status, for the client to try again.
fn landing_failed(cause: &Refusal) -> Refusal {
    let status = if cause.status().is_client_error() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        cause.status()
    };
    Refusal::new(
        status,
        format!(
            "every byte arrived but the file did not land: {}",
            cause.message()
        ),
    )
}

/// The offset and, in the IETF dialect, whether the upload is complete:
/// what an append's or a `HEAD`'s answer says.
fn finished(answer: Answer, dialect: Version, offset: u64, landed: bool) -> Answer {
    let answer = answer.header(UPLOAD_OFFSET, offset);
    match dialect.completion(landed) {
        Some((name, flag)) => answer.header(name, flag),
        None => answer,
    }
}
