//! tus 1.0 and the IETF resumable-upload draft: an upload is created with
//! `POST` at the job's URL (the creation endpoint), answered with its own
//! URL; its bytes are appended in order with `PATCH` at `Upload-Offset`;
//! `HEAD` says how many bytes the server holds, and that, not the journal,
//! decides where a resumed upload goes on.
//!
//! With tus, several blocks in flight use the concatenation extension when
//! the server advertises it (each block a partial upload, joined by a final
//! `POST`), and one stream otherwise, with a notice.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use fileuploader_wire::resumable::{
    decode_text, parse_offset, Checksum, ChecksumAlgorithm, Concat, Metadata, Version,
    IDEMPOTENCY_KEY, INTEROP_VERSION, LANDED_NAME, OFFSET_OCTET_STREAM, TUS_CHECKSUM_ALGORITHM,
    TUS_EXTENSION, TUS_RESUMABLE, TUS_V1, TUS_VERSION, UPLOAD_CHECKSUM, UPLOAD_CONCAT,
    UPLOAD_LENGTH, UPLOAD_METADATA, UPLOAD_OFFSET,
};

use super::{
    header_value, Constraints, Finish, Handle, Holding, Landing, Protocol, Receipt, SavedSession,
    UploadSession, UploadTarget, Verdict,
};
use crate::body::{BlockData, UploadBody};
use crate::error::{code, Error, ErrorKind};
use crate::plan::Block;
use crate::retry;
use crate::source::lock;
use crate::transport::{Request, Response, Transport};

/// The most partial uploads one final upload joins: their paths, about 45
/// bytes each, must fit in one request header.
const MAX_PARTS: u64 = 1000;

/// "a tus 1.0 server", "an IETF … server".
fn server_of(version: Version) -> String {
    match version {
        Version::Tus => format!("a {} server", version.name()),
        Version::Ietf(_) => format!("an {} server", version.name()),
    }
}

/// tus 1.0 (<https://tus.io/protocols/resumable-upload>): creation,
/// creation-with-upload for a source sent as one block, `PATCH` appends,
/// resume by `HEAD`, termination on cancel when resume is off, and
/// concatenation for several blocks in flight when the server advertises
/// it. File name, its media type and the form fields travel in
/// `Upload-Metadata` (`filename`, `filetype`, `relativePath` for a name
/// with folders in it, then each field).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tus;

/// The IETF resumable-upload draft at an interop version (6 by default,
/// what tus-js-client's `ietf-draft-05` mode and tusd speak; 3 and 5 also
/// work): `POST` with `Upload-Complete` creates (with the whole source when
/// it is one block), `PATCH` with `application/partial-upload` appends,
/// `HEAD` tells the offset. Appends go in order, one at a time.
#[derive(Debug, Clone, Copy)]
pub struct IetfDraft {
    version: u32,
}

impl IetfDraft {
    /// The draft at interop `version` (3, 5 or 6 are known to work).
    pub fn new(version: u32) -> Self {
        IetfDraft { version }
    }
}

impl Default for IetfDraft {
    fn default() -> Self {
        IetfDraft::new(6)
    }
}

impl Protocol for Tus {
    fn open(&self, target: &UploadTarget<'_>) -> Result<Box<dyn UploadSession>, Error> {
        Session::open(Version::Tus, target)
    }
}

impl Protocol for IetfDraft {
    fn open(&self, target: &UploadTarget<'_>) -> Result<Box<dyn UploadSession>, Error> {
        Session::open(Version::Ietf(self.version), target)
    }
}

/// How the blocks travel.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Not begun yet.
    Unknown,
    /// The first block creates the upload (creation with upload).
    Creating,
    /// Appended in order to the upload at this URL.
    Stream(Uri),
    /// Each block a partial upload, joined at the end.
    Concatenated,
}

#[derive(Debug)]
struct Session {
    dialect: Version,
    url: Uri,
    name: String,
    total: u64,
    /// Headers every request carries (the job's, the version header).
    headers: HeaderMap,
    metadata: String,
    /// The idempotency key every creation of this upload carries: one sent
    /// again (its answer lost) finds the same upload, or its landing. Kept
    /// in the journal until the upload's URL is.
    key: String,
    /// Whether the session may send several blocks at once (the job has
    /// several in flight, and the protocol could concatenate them).
    parallel: bool,
    state: Mutex<State>,
    /// Whether blocks may carry a checksum (the job's integrity).
    checksums: bool,
    /// What the user should hear.
    notices: Mutex<Vec<String>>,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    /// The URL of the upload that landed.
    landed_at: Option<String>,
    /// The bytes the server holds of a streamed upload.
    offset: u64,
    /// Each block's partial upload, by its first byte.
    parts: BTreeMap<u64, Part>,
    /// What a resumed run found in the journal.
    saved: Option<Resumed>,
    /// Whether the server was asked by `OPTIONS` yet.
    asked: bool,
    /// Whether it can concatenate.
    concatenates: bool,
    /// Whether a creation may carry the first bytes.
    creates_with_upload: bool,
    /// The checksum algorithm both sides know, if any.
    checksum: Option<ChecksumAlgorithm>,
}

/// Whether `parts` cover `0..total` exactly, one after another.
fn covers(parts: &[Part], total: u64) -> bool {
    let mut spans: Vec<(u64, u64)> = parts.iter().map(|p| (p.start, p.end)).collect();
    spans.sort_unstable();
    let mut next = 0;
    spans.iter().all(|&(start, end)| {
        let follows = start == next;
        next = end;
        follows
    }) && next == total
}

/// What a `HEAD` says of an upload.
#[derive(Debug)]
struct Held {
    offset: u64,
    length: Option<u64>,
    /// The name it landed under, where the server says (ours does).
    name: Option<String>,
    /// Whether the server counts it finished, where the protocol says.
    complete: Option<bool>,
}

/// A block sent as a partial upload: its byte range and its URL. Its
/// receipt, `START END URL`, is what a resumed run finds it by.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    start: u64,
    end: u64,
    url: String,
}

/// What a resumable session saved for a later run, read from its
/// [`SavedSession`] in this one place: the handle says which kind, the
/// receipts fill it in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resumed {
    /// An upload at this URL, appended to in order.
    Stream(String),
    /// An upload its first block creates under an idempotency key: that
    /// block's receipt, when it was acknowledged, is the upload's URL.
    FirstBlock { key: String, url: Option<String> },
    /// Parts sent apart (concatenation), each with its range and URL.
    Concatenated(Vec<Part>),
}

impl Resumed {
    fn from_saved(saved: &SavedSession) -> Self {
        match &saved.handle {
            Handle::Parts => Resumed::Concatenated(
                saved
                    .receipts
                    .iter()
                    .filter_map(|(_, r)| Part::from_receipt(r))
                    .collect(),
            ),
            Handle::FirstRequest { key } => Resumed::FirstBlock {
                key: key.clone(),
                url: saved
                    .receipts
                    .iter()
                    .find(|(i, _)| *i == 0)
                    .map(|(_, url)| url.clone()),
            },
            Handle::Url { url } | Handle::Id { id: url } => Resumed::Stream(url.clone()),
        }
    }

    /// The URL to ask the server about, when there is one.
    fn url(&self) -> Option<&str> {
        match self {
            Resumed::Stream(url) => Some(url),
            Resumed::FirstBlock { url, .. } => url.as_deref(),
            Resumed::Concatenated(_) => None,
        }
    }
}

impl Part {
    fn receipt(&self) -> String {
        format!("{} {} {}", self.start, self.end, self.url)
    }

    fn from_receipt(receipt: &str) -> Option<Self> {
        let mut words = receipt.splitn(3, ' ');
        let start = words.next()?.parse().ok()?;
        let end = words.next()?.parse().ok()?;
        let url = words.next()?.to_owned();
        Some(Part { start, end, url })
    }
}

impl Session {
    fn open(dialect: Version, target: &UploadTarget<'_>) -> Result<Box<dyn UploadSession>, Error> {
        let mut headers = target.base_headers();
        match dialect {
            Version::Tus => {
                headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_V1));
            }
            Version::Ietf(v) => {
                headers.insert(INTEROP_VERSION, HeaderValue::from(v));
            }
        }
        // `filename` and `filetype`, as tus-js-client and Uppy send them
        // (some servers require both).
        // A name with folders in it (a folder's file) also travels whole
        // as `relativePath`, as Uppy sends it.
        let filetype = mime_guess::from_path(target.name).first_or_octet_stream();
        let base = target.name.rsplit('/').next().unwrap_or(target.name);
        let mut pairs = vec![
            ("filename".to_owned(), Some(base.as_bytes().to_vec())),
            (
                "filetype".to_owned(),
                Some(filetype.essence_str().as_bytes().to_vec()),
            ),
        ];
        if base != target.name {
            pairs.push((
                "relativePath".to_owned(),
                Some(target.name.as_bytes().to_vec()),
            ));
        }
        for (key, value) in target.fields.iter() {
            if key.is_empty() || key.contains([' ', ',']) || pairs.iter().any(|(k, _)| k == key) {
                return Err(Error::invalid(
                    code::INVALID_OPTION,
                    format!("form field {key:?} cannot travel as Upload-Metadata"),
                ));
            }
            pairs.push((key.to_owned(), Some(value.as_bytes().to_vec())));
        }
        let saved = target.saved.map(Resumed::from_saved);
        let key = match &saved {
            Some(Resumed::FirstBlock { key, .. }) if !key.is_empty() => key.clone(),
            _ => format!("{:032x}", rand::random::<u128>()),
        };
        Ok(Box::new(Session {
            dialect,
            url: target.url.clone(),
            name: target.name.to_owned(),
            total: target.total,
            headers,
            metadata: Metadata(pairs).to_string(),
            key,
            parallel: dialect == Version::Tus
                && target.threads > 1
                && (2..=MAX_PARTS).contains(&target.total.div_ceil(target.block_size.max(1))),
            state: Mutex::new(State {
                mode: Mode::Unknown,
                landed_at: None,
                offset: 0,
                parts: BTreeMap::new(),
                saved,
                asked: false,
                concatenates: false,
                // The draft's creation always may carry bytes.
                creates_with_upload: dialect != Version::Tus,
                checksum: None,
            }),
            checksums: target.integrity != super::Integrity::None,
            notices: Mutex::default(),
        }))
    }

    fn request(&self, method: Method, url: &Uri, body: UploadBody) -> Request {
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = url.clone();
        *request.headers_mut() = headers;
        request
    }

    fn context(&self, what: &str) -> String {
        format!(" to the {} {what} of {:?}", self.dialect.name(), self.name)
    }

    /// An answer that does not follow the protocol.
    fn stranger(&self, what: &str, response: &Response) -> Error {
        let body = String::from_utf8_lossy(response.body());
        let body: String = body.trim().chars().take(200).collect();
        Error::new(
            ErrorKind::Status,
            code::PROTOCOL_MISMATCH,
            format!(
                "the server did not answer as {}: {what} got {}{}{body}",
                server_of(self.dialect),
                response.status(),
                if body.is_empty() { "" } else { ": " }
            ),
        )
    }

    /// The upload URL a creation answer names, resolved against the
    /// creation URL.
    fn location(&self, response: &Response) -> Result<Uri, Error> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.stranger("creating the upload (no Location)", response))?;
        let base = url::Url::parse(&self.url.to_string())
            .map_err(|e| Error::invalid(code::INVALID_URL, e.to_string()))?;
        base.join(location)
            .ok()
            .and_then(|u| u.as_str().parse().ok())
            .ok_or_else(|| {
                self.stranger(
                    &format!("creating the upload (Location {location:?})"),
                    response,
                )
            })
    }

    /// An answer claiming what the client knows to be false.
    fn violation(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Status,
            code::PROTOCOL_VIOLATION,
            format!(
                "the {} server's answer cannot be true: {what}; nothing it said is taken as progress",
                self.dialect.name()
            ),
        )
    }

    /// Where the server says a finished upload landed, and its length as
    /// the server states it (checked against the source's).
    /// (The caller records `url` as where it landed, under the state's lock
    /// it may hold already.)
    fn landed(&self, held: &Held) -> Landing {
        Landing::confirmed(held.name.clone(), held.length.or(Some(self.total)), None)
    }

    fn offset_of(&self, what: &str, response: &Response) -> Result<u64, Error> {
        response
            .headers()
            .get(UPLOAD_OFFSET)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_offset(v).ok())
            .ok_or_else(|| self.stranger(&format!("{what} (no Upload-Offset)"), response))
    }

    /// Asks a tus server by `OPTIONS`, once, whether it can concatenate
    /// (with creation-with-upload) and which checksum algorithms it takes.
    async fn ask(&self, transport: &dyn Transport) -> Result<(), Error> {
        if self.dialect != Version::Tus || lock(&self.state).asked {
            return Ok(());
        }
        let response = transport
            .send(self.request(Method::OPTIONS, &self.url, UploadBody::new()))
            .await?;
        if !response.headers().contains_key(TUS_VERSION) {
            if retry::is_retryable_status(response.status()) {
                return Err(crate::error::status_error(
                    &response,
                    &self.context("OPTIONS"),
                ));
            }
            return Err(self.stranger("OPTIONS", &response));
        }
        let list = |name: &str| -> Vec<String> {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(',')
                .map(|e| e.trim().to_ascii_lowercase())
                .collect()
        };
        let extensions = list(TUS_EXTENSION);
        let has = |name: &str| extensions.iter().any(|e| e == name);
        let algorithms = list(TUS_CHECKSUM_ALGORITHM);
        let state = &mut *lock(&self.state);
        state.asked = true;
        state.concatenates = has("concatenation") && has("creation-with-upload");
        state.creates_with_upload = has("creation-with-upload");
        state.checksum = ChecksumAlgorithm::ALL.into_iter().find(|a| {
            self.checksums && has("checksum") && algorithms.iter().any(|n| n == a.name())
        });
        if self.parallel && !state.concatenates {
            lock(&self.notices).push(format!(
                "the tus server does not offer concatenation with creation-with-upload; {:?} goes as one stream, one block at a time",
                self.name
            ));
        }
        Ok(())
    }

    /// Creates a streamed upload: its URL.
    async fn create(&self, transport: &dyn Transport) -> Result<Uri, Error> {
        let mut request = self.request(Method::POST, &self.url, UploadBody::new());
        let headers = request.headers_mut();
        headers.insert(UPLOAD_LENGTH, HeaderValue::from(self.total));
        headers.insert(UPLOAD_METADATA, header_value(&self.metadata)?);
        headers.insert(IDEMPOTENCY_KEY, self.key_value()?);
        self.mark_complete(headers, self.total == 0);
        let response = transport.send(request).await?;
        if !response.status().is_success() {
            return Err(self.refused("creation", &response));
        }
        self.location(&response)
    }

    /// The idempotency key as its header carries it: a quoted string.
    fn key_value(&self) -> Result<HeaderValue, Error> {
        header_value(&format!("\"{}\"", self.key))
    }

    /// A refusal of `what`: a status error, or a stranger's answer.
    fn refused(&self, what: &str, response: &Response) -> Error {
        match response.status() {
            StatusCode::PRECONDITION_FAILED | StatusCode::METHOD_NOT_ALLOWED => {
                self.stranger(what, response)
            }
            StatusCode::NOT_FOUND if self.dialect != Version::Tus => self.stranger(what, response),
            _ => crate::error::status_error(response, &self.context(what)),
        }
    }

    /// Says in the IETF dialect whether this request ends the upload.
    fn mark_complete(&self, headers: &mut HeaderMap, complete: bool) {
        if let Some((name, flag)) = self.dialect.completion(complete) {
            headers.insert(name, HeaderValue::from_static(flag));
        }
    }

    /// What the server says of the upload at `url`; `None` when it no
    /// longer knows it.
    async fn held(&self, transport: &dyn Transport, url: &Uri) -> Result<Option<Held>, Error> {
        let response = transport
            .send(self.request(Method::HEAD, url, UploadBody::new()))
            .await?;
        match response.status() {
            s if s.is_success() => {
                let header = |name: &str| response.headers().get(name)?.to_str().ok();
                let held = Held {
                    offset: self.offset_of("HEAD", &response)?,
                    length: header(UPLOAD_LENGTH).and_then(|v| parse_offset(v).ok()),
                    name: header(LANDED_NAME).map(decode_text),
                    complete: self.complete_of(&response),
                };
                let most = held.length.unwrap_or(self.total).min(self.total);
                if held.offset > most {
                    return Err(self.violation(&format!(
                        "HEAD of {url} says offset {}, past the {most} bytes it can hold",
                        held.offset
                    )));
                }
                Ok(Some(held))
            }
            StatusCode::NOT_FOUND | StatusCode::GONE | StatusCode::FORBIDDEN => Ok(None),
            _ => Err(crate::error::status_error(&response, &self.context("HEAD"))),
        }
    }

    /// Whether the draft's server counts the upload finished
    /// (`Upload-Complete`, or `Upload-Incomplete` at version 3); tus does
    /// not say.
    fn complete_of(&self, response: &Response) -> Option<bool> {
        let header = |name: &str| response.headers().get(name)?.to_str().ok();
        self.dialect.complete_in(header).ok().flatten()
    }

    /// Sends the empty append that completes an upload whose every byte the
    /// server holds but which it does not count finished (the append that
    /// said so never reached it).
    async fn complete(&self, transport: &dyn Transport, url: &Uri) -> Result<Finish, Error> {
        let mut request = self.request(Method::PATCH, url, UploadBody::new());
        let headers = request.headers_mut();
        headers.insert(UPLOAD_OFFSET, HeaderValue::from(self.total));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type()));
        self.mark_complete(headers, true);
        let response = transport.send(request).await?;
        let status = response.status();
        if status.is_success() && self.complete_of(&response) != Some(false) {
            lock(&self.state).landed_at = Some(url.to_string());
            return Ok(Finish::Landed(Landing::confirmed(
                None,
                Some(self.total),
                None,
            )));
        }
        if status.is_success() || retry::is_retryable_status(status) {
            return Ok(Finish::Resync(Error::new(
                ErrorKind::Status,
                code::NOT_FINISHED,
                format!(
                    "the server holds every byte of {:?} but did not count it complete",
                    self.name
                ),
            )));
        }
        Err(self.refused("completing append", &response))
    }

    /// Finds the upload `saved` names (or the one this run began) and what
    /// the server holds of it, or creates one.
    async fn find_or_create(
        &self,
        transport: &dyn Transport,
        saved: Option<Resumed>,
    ) -> Result<Holding, Error> {
        let concatenate = {
            let state = lock(&self.state);
            match &state.mode {
                Mode::Concatenated => true,
                Mode::Stream(_) | Mode::Creating => false,
                Mode::Unknown => match &saved {
                    Some(s) => matches!(s, Resumed::Concatenated(_)),
                    None => self.parallel && self.total > 0 && state.concatenates,
                },
            }
        };
        if concatenate {
            lock(&self.state).mode = Mode::Concatenated;
            let known: Vec<Part> = match &saved {
                Some(Resumed::Concatenated(parts)) => parts.clone(),
                _ => lock(&self.state).parts.values().cloned().collect(),
            };
            let mut parts = BTreeMap::new();
            let mut held = Vec::new();
            for part in &known {
                let Ok(uri) = part.url.parse::<Uri>() else {
                    continue;
                };
                if let Some(Held {
                    offset,
                    length: Some(length),
                    ..
                }) = self.held(transport, &uri).await?
                {
                    if offset == length && length == part.end - part.start {
                        held.push((part.start, part.end));
                        parts.insert(part.start, part.clone());
                    }
                }
            }
            if held.len() < known.len() && covers(&known, self.total) {
                // A server may delete parts once they make a final upload:
                // gone parts that made the whole file may have landed. The
                // same final request says so where it did.
                if let Some(landing) = self.landed_from(transport, &known).await? {
                    return Ok(Holding::Landed(landing));
                }
            }
            lock(&self.state).parts = parts;
            return Ok(Holding::Ranges(held));
        }
        let resumed = saved
            .as_ref()
            .and_then(|s| s.url().map(str::to_owned))
            .or_else(|| match &lock(&self.state).mode {
                Mode::Stream(url) => Some(url.to_string()),
                _ => None,
            })
            .and_then(|u| u.parse::<Uri>().ok());
        if let Some(url) = resumed {
            if let Some(held) = self.held(transport, &url).await? {
                let (offset, length) = (held.offset, held.length);
                if length.is_some_and(|l| l != self.total) {
                    return Err(Error::new(
                        ErrorKind::Status,
                        code::HTTP_OTHER,
                        format!(
                            "the server holds {url} as {} bytes, but {:?} has {}",
                            length.unwrap_or(0),
                            self.name,
                            self.total
                        ),
                    ));
                }
                let state = &mut *lock(&self.state);
                if offset > self.total {
                    return Err(self.violation(&format!(
                        "it holds {offset} bytes of {url}, but {:?} has {}",
                        self.name, self.total
                    )));
                }
                state.mode = Mode::Stream(url.clone());
                state.offset = offset;
                if offset == self.total && held.complete != Some(false) {
                    state.landed_at = Some(url.to_string());
                    return Ok(Holding::Landed(self.landed(&held)));
                }
                return Ok(Holding::Ranges(vec![(0, offset)]));
            }
        }
        {
            let state = &mut *lock(&self.state);
            if self.total > 0 && state.creates_with_upload {
                state.mode = Mode::Creating;
                state.offset = 0;
                return Ok(Holding::Ranges(Vec::new()));
            }
        }
        let url = self.create(transport).await?;
        let state = &mut *lock(&self.state);
        state.mode = Mode::Stream(url);
        state.offset = 0;
        if self.total == 0 {
            return Ok(Holding::Landed(Landing::confirmed(None, Some(0), None)));
        }
        Ok(Holding::Ranges(Vec::new()))
    }

    /// Asks for the final upload of `parts`, in their order.
    async fn final_request(
        &self,
        transport: &dyn Transport,
        parts: &[Part],
    ) -> Result<Response, Error> {
        let urls = parts.iter().map(|p| self.shortest(&p.url)).collect();
        let mut request = self.request(Method::POST, &self.url, UploadBody::new());
        let headers = request.headers_mut();
        headers.insert(
            UPLOAD_CONCAT,
            header_value(&Concat::Final(urls).to_string())?,
        );
        headers.insert(UPLOAD_METADATA, header_value(&self.metadata)?);
        Ok(transport.send(request).await?)
    }

    /// The landing of the final upload of `parts` when the server has it
    /// whole already; `None` when it does not (it refuses the request, or
    /// the upload it names is short).
    async fn landed_from(
        &self,
        transport: &dyn Transport,
        parts: &[Part],
    ) -> Result<Option<Landing>, Error> {
        let mut parts = parts.to_vec();
        parts.sort_by_key(|p| p.start);
        let response = self.final_request(transport, &parts).await?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let Ok(url) = self.location(&response) else {
            return Ok(None);
        };
        Ok(match self.held(transport, &url).await? {
            Some(held) if held.offset == self.total => {
                lock(&self.state).landed_at = Some(url.to_string());
                Some(self.landed(&held))
            }
            _ => None,
        })
    }

    /// A part's URL as the final upload names it: its path when it is on
    /// the creation URL's server, keeping the header short.
    fn shortest(&self, url: &str) -> String {
        match url.parse::<Uri>() {
            Ok(uri)
                if uri.authority() == self.url.authority() && uri.scheme() == self.url.scheme() =>
            {
                uri.path_and_query()
                    .map_or_else(|| url.to_owned(), |p| p.as_str().to_owned())
            }
            _ => url.to_owned(),
        }
    }

    fn content_type(&self) -> &'static str {
        self.dialect.append_type()
    }
}

#[async_trait]
impl UploadSession for Session {
    fn constraints(&self) -> Constraints {
        let state = lock(&self.state);
        let in_memory = state.checksum.is_some();
        match state.mode {
            Mode::Concatenated => Constraints {
                in_memory,
                ..Constraints::default()
            },
            Mode::Unknown if self.parallel => Constraints::default(),
            _ => Constraints {
                sequential: true,
                max_in_flight: 1,
                in_memory,
                ..Constraints::default()
            },
        }
    }

    async fn begin(&self, transport: &dyn Transport) -> Result<Holding, Error> {
        self.ask(transport).await?;
        let saved = lock(&self.state).saved.take();
        let begun = self.find_or_create(transport, saved.clone()).await;
        if begun.is_err() {
            // Begun again after a failure (a connection lost while asking),
            // the same interrupted upload is looked for.
            lock(&self.state).saved = saved;
        }
        begun
    }

    fn encode(&self, block: &Block, data: BlockData) -> Result<Request, Error> {
        let (mode, offset, checksum) = {
            let state = lock(&self.state);
            (state.mode.clone(), state.offset, state.checksum)
        };
        let (method, url, data) = match mode {
            Mode::Concatenated | Mode::Creating => (Method::POST, self.url.clone(), data),
            // The server may hold part of this block (a body cut short is
            // kept): send only the rest.
            Mode::Stream(url) => {
                let skip = offset.saturating_sub(block.offset).min(block.len);
                (Method::PATCH, url, data.skip(skip))
            }
            Mode::Unknown => {
                return Err(Error::invalid(
                    code::FAILED,
                    "a block was encoded before its session began",
                ))
            }
        };
        let sum = match (checksum, data.bytes()) {
            (Some(algorithm), Some(bytes)) => Some(Checksum {
                algorithm: algorithm.name().to_owned(),
                digest: algorithm.digest(bytes),
            }),
            _ => None,
        };
        let start = block.offset + block.len - data.len();
        let mut body = UploadBody::new();
        body.push_block(data);
        let mut request = self.request(method, &url, body);
        let headers = request.headers_mut();
        if let Some(sum) = sum {
            headers.insert(UPLOAD_CHECKSUM, header_value(&sum.to_string())?);
        }
        let mode = lock(&self.state).mode.clone();
        if mode == Mode::Concatenated {
            headers.insert(UPLOAD_LENGTH, HeaderValue::from(block.len));
            headers.insert(UPLOAD_CONCAT, HeaderValue::from_static("partial"));
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(OFFSET_OCTET_STREAM));
        } else if mode == Mode::Creating {
            headers.insert(UPLOAD_LENGTH, HeaderValue::from(self.total));
            headers.insert(UPLOAD_METADATA, header_value(&self.metadata)?);
            headers.insert(IDEMPOTENCY_KEY, self.key_value()?);
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type()));
            self.mark_complete(headers, block.offset + block.len == self.total);
        } else {
            headers.insert(UPLOAD_OFFSET, HeaderValue::from(start));
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type()));
            self.mark_complete(headers, block.offset + block.len == self.total);
        }
        Ok(request)
    }

    fn judge(&self, block: &Block, response: &Response) -> Verdict {
        let status = response.status();
        let what = format!("block {} of {}", block.index + 1, block.count);
        let end = block.offset + block.len;
        let mode = lock(&self.state).mode.clone();
        let concatenated = mode == Mode::Concatenated;
        if status.is_success() && mode == Mode::Creating {
            let created = self
                .location(response)
                .and_then(|url| Ok((url, self.offset_of(&what, response)?)));
            let (url, offset) = match created {
                Ok(created) => created,
                Err(e) => return Verdict::Fail(e),
            };
            if offset > end {
                return Verdict::Fail(self.violation(&format!(
                    "{what} was created holding {offset} bytes, but only {end} were sent"
                )));
            }
            let state = &mut *lock(&self.state);
            state.mode = Mode::Stream(url.clone());
            state.offset = offset;
            if offset < end {
                return Verdict::Resync(self.stranger(
                    &format!("{what} (the server kept {offset} bytes, the block ends at {end})"),
                    response,
                ));
            }
            return Verdict::Ack(Receipt(Some(url.to_string())));
        }
        if status.is_success() {
            let offset = match self.offset_of(&what, response) {
                Ok(offset) => offset,
                Err(e) => return Verdict::Fail(e),
            };
            if concatenated && offset > block.len {
                return Verdict::Fail(self.violation(&format!(
                    "{what} was kept as {offset} bytes, but only {} were sent",
                    block.len
                )));
            }
            if offset > end {
                return Verdict::Fail(self.violation(&format!(
                    "{what} moved the offset to {offset}, but only {end} bytes were sent"
                )));
            }
            if concatenated {
                if offset != block.len {
                    return Verdict::Retry {
                        error: self.stranger(
                            &format!("{what} (kept {offset} of {} bytes)", block.len),
                            response,
                        ),
                        after: None,
                    };
                }
                return match self.location(response) {
                    Ok(url) => {
                        let part = Part {
                            start: block.offset,
                            end,
                            url: url.to_string(),
                        };
                        let receipt = part.receipt();
                        lock(&self.state).parts.insert(block.offset, part);
                        Verdict::Ack(Receipt(Some(receipt)))
                    }
                    Err(e) => Verdict::Fail(e),
                };
            }
            lock(&self.state).offset = offset;
            if offset < end {
                return Verdict::Resync(self.stranger(
                    &format!("{what} (the server holds {offset} bytes, the block ends at {end})"),
                    response,
                ));
            }
            return Verdict::Ack(Receipt::default());
        }
        let error = crate::error::status_error(response, &self.context(&what));
        match status {
            // The offset moved, or the upload is gone: ask again.
            StatusCode::CONFLICT | StatusCode::NOT_FOUND | StatusCode::GONE if !concatenated => {
                Verdict::Resync(error)
            }
            s if s.as_u16() == fileuploader_wire::DIGEST_MISMATCH
                || s == StatusCode::LOCKED
                || retry::is_retryable_status(s) =>
            {
                let after = error.retry_after();
                Verdict::Retry { error, after }
            }
            _ => Verdict::Fail(error),
        }
    }

    fn idempotent(&self, _block: &Block) -> bool {
        // A partial upload sent twice is one more part nobody names; an
        // append sent twice meets a moved offset and is refused.
        lock(&self.state).mode == Mode::Concatenated
    }

    async fn finish(&self, transport: &dyn Transport) -> Result<Finish, Error> {
        let mode = lock(&self.state).mode.clone();
        let url = match mode {
            Mode::Stream(url) => url,
            Mode::Concatenated => {
                let parts: Vec<Part> = lock(&self.state).parts.values().cloned().collect();
                let response = self.final_request(transport, &parts).await?;
                if response.status() == StatusCode::BAD_REQUEST
                    || response.status() == StatusCode::NOT_FOUND
                {
                    // A part expired or is gone: find out which and resend.
                    return Ok(Finish::Resync(crate::error::status_error(
                        &response,
                        &self.context("final concatenation"),
                    )));
                }
                if !response.status().is_success() {
                    return Err(self.refused("final concatenation", &response));
                }
                self.location(&response)?
            }
            Mode::Unknown | Mode::Creating => return Ok(Finish::Landed(Landing::unconfirmed())),
        };
        match self.held(transport, &url).await? {
            Some(Held {
                offset,
                complete: Some(false),
                ..
            }) if offset == self.total => self.complete(transport, &url).await,
            Some(held) if held.offset == self.total => {
                lock(&self.state).landed_at = Some(url.to_string());
                Ok(Finish::Landed(self.landed(&held)))
            }
            Some(Held { offset, .. }) => Ok(Finish::Resync(Error::new(
                ErrorKind::Status,
                code::NOT_FINISHED,
                format!(
                    "the server holds {offset} of the {} bytes of {:?}",
                    self.total, self.name
                ),
            ))),
            None => Ok(Finish::Resync(Error::new(
                ErrorKind::Status,
                code::NOT_FINISHED,
                format!("the server no longer knows the upload of {:?}", self.name),
            ))),
        }
    }

    async fn abort(&self, transport: &dyn Transport) -> Result<(), Error> {
        let urls: Vec<Uri> = {
            let state = lock(&self.state);
            match &state.mode {
                Mode::Stream(url) => vec![url.clone()],
                Mode::Concatenated => state
                    .parts
                    .values()
                    .filter_map(|p| p.url.parse().ok())
                    .collect(),
                Mode::Unknown | Mode::Creating => Vec::new(),
            }
        };
        for url in urls {
            transport
                .send(self.request(Method::DELETE, &url, UploadBody::new()))
                .await?;
        }
        Ok(())
    }

    fn notices(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.notices))
    }

    fn location(&self) -> Option<String> {
        lock(&self.state).landed_at.clone()
    }

    fn saved(&self) -> SavedSession {
        match &lock(&self.state).mode {
            Mode::Stream(url) => SavedSession::of(Handle::Url {
                url: url.to_string(),
            }),
            Mode::Creating => SavedSession::of(Handle::FirstRequest {
                key: self.key.clone(),
            }),
            _ => SavedSession::of(Handle::Parts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(handle: Handle, receipts: &[(u64, &str)]) -> SavedSession {
        let mut saved = SavedSession::of(handle);
        saved.receipts = receipts.iter().map(|&(i, r)| (i, r.to_owned())).collect();
        saved
    }

    #[test]
    fn each_saved_shape_reads_back_as_what_the_session_saved() {
        let url = "http://127.0.0.1:9/files/abc";
        let at = || Handle::Url { url: url.into() };
        assert_eq!(
            Resumed::from_saved(&saved(at(), &[])),
            Resumed::Stream(url.to_owned())
        );
        let first_request = || Handle::FirstRequest { key: "k1".into() };
        let first = Resumed::from_saved(&saved(first_request(), &[(0, url)]));
        assert_eq!(
            first,
            Resumed::FirstBlock {
                key: "k1".into(),
                url: Some(url.into())
            }
        );
        assert_eq!(first.url(), Some(url));
        let unsent = Resumed::from_saved(&saved(first_request(), &[]));
        assert_eq!(unsent.url(), None, "its first block was never acknowledged");
        let parts = Resumed::from_saved(&saved(
            Handle::Parts,
            &[
                (0, "0 10 http://h/p0"),
                (1, "10 20 http://h/p1"),
                (2, "torn"),
            ],
        ));
        assert_eq!(
            parts,
            Resumed::Concatenated(vec![
                Part {
                    start: 0,
                    end: 10,
                    url: "http://h/p0".into()
                },
                Part {
                    start: 10,
                    end: 20,
                    url: "http://h/p1".into()
                },
            ]),
            "an unreadable receipt is skipped"
        );
        assert_eq!(parts.url(), None);
        let part = Part {
            start: 5,
            end: 9,
            url: "http://h/x y".into(),
        };
        assert_eq!(Part::from_receipt(&part.receipt()), Some(part));
    }
}
