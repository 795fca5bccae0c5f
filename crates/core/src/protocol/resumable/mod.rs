//! tus 1.0 and the IETF resumable-upload draft: an upload is created with
//! `POST` at the job's URL (the creation endpoint), answered with its own
//! URL; its bytes are appended in order with `PATCH` at `Upload-Offset`;
//! `HEAD` says how many bytes the server holds, and that, not the journal,
//! decides where a resumed upload goes on.
//!
//! With tus, several blocks in flight use the concatenation extension when
//! the server advertises it (each block a partial upload, joined by a final
//! `POST`), and one stream otherwise, with a notice.
//!
//! One session speaks both, in the dialect of its
//! [`Version`](fileuploader_wire::resumable::Version) (which the wire crate
//! owns: headers, completion flag, content types). Its rooms: this module
//! (the protocols, the session's state and what every request shares:
//! discovery by `OPTIONS`, `HEAD`, answers that do not follow the
//! protocol), `stream` (create, append, complete), `concat` (parts and the
//! final `POST`), `saved` (what a later run reads back). `Mode` is where a
//! session is: `Unknown` until begun, then `Stream`, `Creating` (the first
//! block creates the upload, then `Stream`) or `Concatenated`; the tests
//! take each transition against a scripted server.

mod concat;
mod saved;
mod stream;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Mutex;

use async_trait::async_trait;
use fileuploader_wire::draft::{disposition, UploadLimit, UPLOAD_LIMIT};
use http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use fileuploader_wire::resumable::{
    decode_text, parse_offset, Checksum, ChecksumAlgorithm, Metadata, Version, IDEMPOTENCY_KEY,
    INTEROP_VERSION, LANDED_NAME, OFFSET_OCTET_STREAM, TUS_CHECKSUM_ALGORITHM, TUS_EXTENSION,
    TUS_RESUMABLE, TUS_V1, TUS_VERSION, UPLOAD_CHECKSUM, UPLOAD_CONCAT, UPLOAD_LENGTH,
    UPLOAD_METADATA, UPLOAD_OFFSET,
};

use super::{
    header_value, Constraints, FinalAnswer, Finish, Handle, Holding, Landing, Protocol,
    SavedSession, UploadSession, UploadTarget, Verdict,
};
use crate::body::{BlockData, UploadBody};
use crate::error::{code, Error, ErrorKind};
use crate::plan::Block;
use crate::retry;
use crate::source::lock;
use crate::transport::{InterimAnswers, Request, Response, Transport};

use self::saved::{Part, Resumed};

/// The most bytes the final upload's `Upload-Concat` header may take:
/// what front ends take in one header field by default (nginx's
/// `large_client_header_buffers` of 8 KiB, Apache's 8 190 bytes; Node
/// takes 16 KiB for all of a request's headers). A longer header is
/// refused after every part was sent, and again on every run.
const MAX_CONCAT_HEADER: u64 = 8000;
/// What one part's path is taken to add to the creation URL's path in the
/// final's header: its id (32 hex digits at our receiver and tusd), a
/// slash and a space, with room to spare.
const PART_ID_BYTES: u64 = 48;

/// The smallest piece a block is cut into after a `413` that names no
/// limit: a front end that takes less is not one to upload through.
const MIN_PIECE: u64 = 64 << 10;

/// The most partial uploads one final upload at `url` may join: their
/// paths must fit in [`MAX_CONCAT_HEADER`] (one, for a path too long for
/// two: then no file goes in parts).
fn max_parts(url: &Uri) -> u64 {
    (MAX_CONCAT_HEADER / (url.path().len() as u64 + PART_ID_BYTES)).max(1)
}

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

/// The IETF resumable-upload draft at an interop version (the newest
/// spoken, 9, by default; a server that refuses a creation at one without
/// echoing it gets the next older, down to 3): `POST` with
/// `Upload-Complete` creates (with the whole source when it is one block,
/// the name in `Content-Disposition`), `PATCH` with
/// `application/partial-upload` appends, `HEAD` tells the offset. Appends
/// go in order, one at a time.
#[derive(Debug, Clone, Copy)]
pub struct IetfDraft {
    version: u32,
}

impl IetfDraft {
    /// The draft at interop `version` (one of
    /// [`INTEROP_VERSIONS`](fileuploader_wire::resumable::INTEROP_VERSIONS)).
    pub fn new(version: u32) -> Self {
        IetfDraft { version }
    }
}

impl Default for IetfDraft {
    fn default() -> Self {
        IetfDraft::new(fileuploader_wire::resumable::NEWEST_INTEROP_VERSION)
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
    /// The protocol spoken: a server that refuses an interop version of
    /// the draft gets an older one.
    dialect: Mutex<Version>,
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
    /// The answer to the request that completed the upload (its last
    /// append, or the final `POST` of its parts): the final answer, rather
    /// than the `HEAD` that confirms it.
    completed_by: Option<FinalAnswer>,
    /// The interim answers to the last creation sent with content: a
    /// `104` there says where the upload is, should the creation be cut.
    creation_interim: Option<InterimAnswers>,
    /// The limits the draft's server announced last (`Upload-Limit`).
    limits: UploadLimit,
    /// The most one request may carry through a front end that refused
    /// more with a `413` naming no limit (see `halve_pieces`).
    front_limit: Option<u64>,
    /// The bytes the last creation or append carried, as `(start, end)`:
    /// a block goes in several when the server bounds what one may carry.
    piece: Option<(u64, u64)>,
    /// The parts going in pieces, by their block's first byte.
    part_pieces: BTreeMap<u64, PartPieces>,
    /// Whether a creation under the idempotency key may have reached the
    /// server before (in this run or one the journal tells of).
    key_sent: bool,
    /// Whether the last creation was such a creation sent again: the
    /// server may hold more of the upload than it carried.
    resent: bool,
}

/// A part sent in pieces (a front end bounds what one request carries),
/// in the part's own bytes: where it is once created, what the server
/// holds of it, and where the last piece sent ends.
#[derive(Debug, Clone, Default)]
struct PartPieces {
    url: Option<Uri>,
    held: u64,
    sent_end: u64,
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
    /// The `HEAD`'s answer.
    answer: FinalAnswer,
}

impl Session {
    fn open(dialect: Version, target: &UploadTarget<'_>) -> Result<Box<dyn UploadSession>, Error> {
        let mut headers = target.base_headers();
        if dialect == Version::Tus {
            headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_V1));
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
        let saved = target.saved.and_then(Resumed::from_saved);
        let blocks = target.total.div_ceil(target.block_size.max(1));
        let parallel = dialect == Version::Tus && target.threads > 1 && blocks >= 2;
        let most = max_parts(target.url);
        let mut notices = Vec::new();
        // A run resuming parts an older version began goes on joining them.
        let resuming_parts = matches!(saved, Some(Resumed::Concatenated(_)));
        if parallel && blocks > most && !resuming_parts {
            let instead = match most {
                1 => "the creation URL's path leaves no room for two parts".to_owned(),
                _ => format!(
                    "blocks of {} bytes or more would go in parallel",
                    target.total.div_ceil(most)
                ),
            };
            notices.push(format!(
                "{:?} has {blocks} blocks, more than one final request can join ({most} parts keep its header under {MAX_CONCAT_HEADER} bytes); it goes as one stream, one block at a time ({instead})",
                target.name,
            ));
        }
        let (key, key_sent) = match &saved {
            Some(Resumed::FirstBlock { key, .. }) if !key.is_empty() => (key.clone(), true),
            _ => (format!("{:032x}", rand::random::<u128>()), false),
        };
        Ok(Box::new(Session {
            dialect: Mutex::new(dialect),
            url: target.url.clone(),
            name: target.name.to_owned(),
            total: target.total,
            headers,
            metadata: Metadata(pairs).to_string(),
            key,
            parallel: parallel && blocks <= most,
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
                completed_by: None,
                creation_interim: None,
                limits: UploadLimit::default(),
                front_limit: None,
                piece: None,
                part_pieces: BTreeMap::new(),
                key_sent,
                resent: false,
            }),
            checksums: target.integrity != super::Integrity::None,
            notices: Mutex::new(notices),
        }))
    }

    /// Goes on at the upload a `104` of this interop version told of (one
    /// of another version is to be ignored), for a creation with content
    /// cut short or failed by the server: whether one did.
    fn resume_where_told(&self) -> bool {
        let Version::Ietf(version) = self.dialect() else {
            return false;
        };
        let state = &mut *lock(&self.state);
        if state.mode != Mode::Creating {
            return false;
        }
        let told = state.creation_interim.take().and_then(|interim| {
            interim
                .recorded()
                .into_iter()
                .find_map(|(status, headers)| {
                    let ours = headers
                        .get(INTEROP_VERSION)
                        .is_some_and(|v| v.as_bytes() == version.to_string().as_bytes());
                    (status.as_u16() == 104 && ours)
                        .then(|| headers.get(LOCATION)?.to_str().ok().map(str::to_owned))
                        .flatten()
                })
        });
        let url = told.and_then(|location| {
            let base = url::Url::parse(&self.url.to_string()).ok()?;
            base.join(&location).ok()?.as_str().parse::<Uri>().ok()
        });
        match url {
            Some(url) => {
                state.mode = Mode::Stream(url);
                true
            }
            None => false,
        }
    }

    fn dialect(&self) -> Version {
        *lock(&self.dialect)
    }

    /// Keeps the limits an answer of the draft announces (`Upload-Limit`;
    /// the newest answer's stand), and fails when the file is larger than
    /// the server takes.
    fn learn_limits(&self, headers: &HeaderMap) -> Result<(), Error> {
        if self.dialect().limit_age_key().is_none() {
            return Ok(());
        }
        let Some(limits) = headers
            .get(UPLOAD_LIMIT)
            .and_then(|v| v.to_str().ok())
            .and_then(UploadLimit::parse)
        else {
            return Ok(());
        };
        lock(&self.state).limits = limits;
        match limits.max_size {
            Some(most) if most < self.total => Err(Error::new(
                ErrorKind::Status,
                code::TOO_LARGE,
                format!(
                    "the server takes files of at most {most} bytes (its Upload-Limit max-size), but {:?} has {}",
                    self.name, self.total
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Where the content of the last creation or append of `block` ended:
    /// the piece it carried, or (before any) the block's end.
    fn sent_end(&self, block: &Block) -> u64 {
        let end = block.offset + block.len;
        lock(&self.state)
            .piece
            .filter(|&(start, _)| (block.offset..end).contains(&start))
            .map_or(end, |(_, piece_end)| piece_end)
    }

    /// Whether a creation or append of `sent` bytes carried more than the
    /// server's limits now allow.
    fn sent_too_much(&self, sent: u64) -> bool {
        self.max_append().is_some_and(|most| sent > most)
    }

    /// After a `413` the protocol's server did not send (no
    /// `Tus-Resumable`, no `Upload-Limit`: a proxy's or a web server's,
    /// such as nginx's `client_max_body_size`): the next requests carry
    /// half of what this one did, unless that is under [`MIN_PIECE`].
    /// Whether they will.
    fn halve_pieces(&self, response: &Response, sent: u64) -> bool {
        if response.headers().contains_key(TUS_RESUMABLE)
            || response.headers().contains_key(UPLOAD_LIMIT)
        {
            return false;
        }
        let half = sent / 2;
        if half < MIN_PIECE {
            return false;
        }
        // Parts in flight at once may each be refused: the limit only
        // shrinks, and is told when it does.
        let lowered = {
            let state = &mut *lock(&self.state);
            let lowered = state.front_limit.is_none_or(|limit| half < limit);
            if lowered {
                state.front_limit = Some(half);
            }
            lowered
        };
        if lowered {
            lock(&self.notices).push(format!(
                "a server before the receiver refused {sent} bytes in one request (413); {:?} goes on in pieces of {half} bytes",
                self.name
            ));
        }
        true
    }

    /// What was sent of `block`'s part in pieces (nothing, when it goes
    /// in one request).
    fn part_pieces(&self, block: &Block) -> PartPieces {
        lock(&self.state)
            .part_pieces
            .get(&block.offset)
            .cloned()
            .unwrap_or_default()
    }

    /// The most one creation or append may carry, where the server says
    /// or a front end made it known.
    fn max_append(&self) -> Option<u64> {
        let state = lock(&self.state);
        let said = state.limits.max_append_size.map(|most| most.max(1));
        match (said, state.front_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Names the file in a creation as the draft does, in
    /// `Content-Disposition` (tus names it in its metadata only).
    fn name_it(&self, headers: &mut HeaderMap) -> Result<(), Error> {
        if self.dialect() != Version::Tus {
            let base = self.name.rsplit('/').next().unwrap_or(&self.name);
            headers.insert(CONTENT_DISPOSITION, header_value(&disposition(base))?);
        }
        Ok(())
    }

    /// The offset an append's answer moved the upload to: its
    /// `Upload-Offset`, or, from interop version 7 (where an append's
    /// success needs only `Upload-Complete`), the end of what was sent.
    fn offset_after(&self, what: &str, response: &Response, end: u64) -> Result<u64, Error> {
        match self.dialect() {
            Version::Ietf(v) if v >= 7 && !response.headers().contains_key(UPLOAD_OFFSET) => {
                Ok(end)
            }
            _ => self.offset_of(what, response),
        }
    }

    /// Steps down to the next older interop version of the draft when a
    /// creation's refusal suggests the server does not speak this one (a
    /// 400, 412 or 415 that does not echo the version sent); whether it
    /// did.
    fn step_down(&self, response: &Response) -> bool {
        let Version::Ietf(sent) = self.dialect() else {
            return false;
        };
        let echoed = response
            .headers()
            .get(INTEROP_VERSION)
            .is_some_and(|v| v.as_bytes() == sent.to_string().as_bytes());
        let refusal = matches!(response.status().as_u16(), 400 | 412 | 415);
        let Some(older) = Version::Ietf(sent).older().filter(|_| refusal && !echoed) else {
            return false;
        };
        *lock(&self.dialect) = older;
        lock(&self.notices).push(format!(
            "the server refused the creation of {:?} at {} ({}); trying {}",
            self.name,
            Version::Ietf(sent).name(),
            response.status(),
            older.name()
        ));
        true
    }

    fn request(&self, method: Method, url: &Uri, body: UploadBody) -> Request {
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if let Version::Ietf(v) = self.dialect() {
            headers.insert(INTEROP_VERSION, HeaderValue::from(v));
        }
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = url.clone();
        *request.headers_mut() = headers;
        request
    }

    fn context(&self, what: &str) -> String {
        format!(
            " to the {} {what} of {:?}",
            self.dialect().name(),
            self.name
        )
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
                server_of(self.dialect()),
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
                self.dialect().name()
            ),
        )
    }

    /// Where the server says a finished upload landed, and its length as
    /// the server states it (checked against the source's).
    /// (The caller records `url` as where it landed, under the state's lock
    /// it may hold already.)
    fn landed(&self, held: &Held) -> Landing {
        let mut landing =
            Landing::confirmed(held.name.clone(), held.length.or(Some(self.total)), None);
        landing.answer = Some(held.answer.clone());
        landing
    }

    /// The landing `response` reports of the whole upload: the name it
    /// landed under where the server says, and the answer itself (its
    /// receipt, the application's word).
    fn landed_by(&self, response: &Response) -> Landing {
        let name = response
            .headers()
            .get(LANDED_NAME)
            .and_then(|v| v.to_str().ok())
            .map(decode_text);
        Landing::confirmed(name, Some(self.total), None).answered(response)
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
        if self.dialect() != Version::Tus || lock(&self.state).asked {
            return Ok(());
        }
        let response = transport
            .send(self.request(Method::OPTIONS, &self.url, UploadBody::new()))
            .await?;
        let discovery_refused = matches!(
            response.status(),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
        );
        if !response.headers().contains_key(TUS_VERSION) && discovery_refused {
            // Discovery is optional for a client: a server that refuses it
            // still gets the core protocol and creation, and nothing that
            // needs announcing (concatenation, checksums).
            let assumed = format!(
                "the tus server answered OPTIONS with {}: assuming tus 1.0 with creation only (no concatenation, no checksums); {:?} goes as one stream",
                response.status(),
                self.name
            );
            tracing::info!("{assumed}");
            lock(&self.notices).push(assumed);
            let state = &mut *lock(&self.state);
            state.asked = true;
            state.concatenates = false;
            state.creates_with_upload = false;
            state.checksum = None;
            return Ok(());
        }
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
            StatusCode::NOT_FOUND if self.dialect() != Version::Tus => {
                self.stranger(what, response)
            }
            _ => crate::error::status_error(response, &self.context(what)),
        }
    }

    /// Says in the IETF dialect whether this request ends the upload.
    fn mark_complete(&self, headers: &mut HeaderMap, complete: bool) {
        if let Some((name, flag)) = self.dialect().completion(complete) {
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
                self.learn_limits(response.headers())?;
                let header = |name: &str| response.headers().get(name)?.to_str().ok();
                let held = Held {
                    offset: self.offset_of("HEAD", &response)?,
                    length: header(UPLOAD_LENGTH).and_then(|v| parse_offset(v).ok()),
                    name: header(LANDED_NAME).map(decode_text),
                    complete: self.complete_of(&response),
                    answer: FinalAnswer::of(&response),
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
        self.dialect().complete_in(header).ok().flatten()
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
            return self.begin_parts(transport, saved).await;
        }
        self.begin_stream(transport, saved).await
    }

    fn content_type(&self) -> &'static str {
        self.dialect().append_type()
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
        let (method, url, data) = match mode.clone() {
            Mode::Concatenated => match self.part_pieces(block) {
                PartPieces {
                    url: Some(url),
                    held,
                    ..
                } => (Method::PATCH, url, data.skip(held.min(block.len))),
                _ => (Method::POST, self.url.clone(), data),
            },
            Mode::Creating => (Method::POST, self.url.clone(), data),
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
        let start = block.offset + block.len - data.len();
        // A server that bounds what one request carries gets the block in
        // pieces, each answered before the next.
        let data = match self.max_append() {
            Some(most) if data.len() > most => data.take(most),
            _ => data,
        };
        let end = start + data.len();
        {
            let state = &mut *lock(&self.state);
            if mode == Mode::Concatenated {
                // Parts go at once: each keeps what it was sent apart.
                let pieces = state.part_pieces.entry(block.offset).or_default();
                pieces.sent_end = end - block.offset;
            } else {
                state.piece = Some((start, end));
            }
        }
        let sum = match (checksum, data.bytes()) {
            (Some(algorithm), Some(bytes)) => Some(Checksum {
                algorithm: algorithm.name().to_owned(),
                digest: algorithm.digest(bytes),
            }),
            _ => None,
        };
        let mut body = UploadBody::new();
        body.push_block(data);
        let appends_to_part = mode == Mode::Concatenated && method == Method::PATCH;
        let mut request = self.request(method, &url, body);
        let headers = request.headers_mut();
        if let Some(sum) = sum {
            headers.insert(UPLOAD_CHECKSUM, header_value(&sum.to_string())?);
        }
        let mode = lock(&self.state).mode.clone();
        if appends_to_part {
            headers.insert(UPLOAD_OFFSET, HeaderValue::from(start - block.offset));
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(OFFSET_OCTET_STREAM));
        } else if mode == Mode::Concatenated {
            headers.insert(UPLOAD_LENGTH, HeaderValue::from(block.len));
            headers.insert(UPLOAD_CONCAT, HeaderValue::from_static("partial"));
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(OFFSET_OCTET_STREAM));
        } else if mode == Mode::Creating {
            headers.insert(UPLOAD_LENGTH, HeaderValue::from(self.total));
            headers.insert(UPLOAD_METADATA, header_value(&self.metadata)?);
            self.name_it(headers)?;
            headers.insert(IDEMPOTENCY_KEY, self.key_value()?);
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type()));
            self.mark_complete(headers, end == self.total);
            let interim = InterimAnswers::default();
            request.extensions_mut().insert(interim.clone());
            let state = &mut *lock(&self.state);
            state.creation_interim = Some(interim);
            state.resent = std::mem::replace(&mut state.key_sent, true);
        } else {
            headers.insert(UPLOAD_OFFSET, HeaderValue::from(start));
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type()));
            self.mark_complete(headers, end == self.total);
        }
        Ok(request)
    }

    fn judge(&self, block: &Block, response: &Response) -> Verdict {
        let status = response.status();
        let what = format!("block {} of {}", block.index + 1, block.count);
        let mode = lock(&self.state).mode.clone();
        let concatenated = mode == Mode::Concatenated;
        if let Err(e) = self.learn_limits(response.headers()) {
            return Verdict::Fail(e);
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            let sent = if concatenated {
                let pieces = self.part_pieces(block);
                pieces.sent_end - pieces.held.min(pieces.sent_end)
            } else {
                lock(&self.state)
                    .piece
                    .map_or(0, |(start, end)| end - start)
            };
            if self.sent_too_much(sent) || self.halve_pieces(response, sent) {
                // Refused for carrying more than the limits it now
                // announces, or than a limit it did not name: the block
                // goes in pieces.
                return Verdict::More;
            }
        }
        if status.is_success() {
            return match mode {
                Mode::Creating => self.judge_created(block, response, &what),
                Mode::Concatenated => self.judge_part(block, response, &what),
                Mode::Stream(_) | Mode::Unknown => self.judge_append(block, response, &what),
            };
        }
        let error = crate::error::status_error(response, &self.context(&what));
        if self.complete_of(response) == Some(true) {
            // The draft's server ended the upload with this answer (the
            // file was refused for what it is): resuming cannot mend it.
            return Verdict::Fail(error);
        }
        let failed_by_server = status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT;
        if mode == Mode::Creating && failed_by_server && self.resume_where_told() {
            // Told where the upload is before it failed: go on there.
            return Verdict::Resync(error);
        }
        if mode == Mode::Creating && self.step_down(response) {
            // Created again, in an older interop version.
            return Verdict::Resync(error);
        }
        match status {
            // The offset moved, or the upload is gone: ask again.
            StatusCode::CONFLICT | StatusCode::NOT_FOUND | StatusCode::GONE if !concatenated => {
                Verdict::Resync(error)
            }
            // A part going in pieces whose offset moved (a piece cut off
            // that the server kept some of), or that is gone: the part
            // begins again.
            StatusCode::CONFLICT | StatusCode::NOT_FOUND | StatusCode::GONE
                if lock(&self.state)
                    .part_pieces
                    .remove(&block.offset)
                    .is_some_and(|p| p.url.is_some()) =>
            {
                Verdict::Retry { error, after: None }
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

    fn resumable_after_cut(&self, _block: &Block) -> bool {
        self.resume_where_told()
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
            Mode::Concatenated => match self.join(transport).await? {
                ControlFlow::Continue(url) => url,
                ControlFlow::Break(finish) => return Ok(finish),
            },
            Mode::Unknown | Mode::Creating => return Ok(Finish::Landed(Landing::unconfirmed())),
        };
        match self.held(transport, &url).await? {
            Some(Held {
                offset,
                complete: Some(false),
                ..
            }) if offset == self.total => self.complete(transport, &url).await,
            Some(held) if held.offset == self.total => {
                let mut landing = self.landed(&held);
                let mut state = lock(&self.state);
                state.landed_at = Some(url.to_string());
                if let Some(answer) = state.completed_by.take() {
                    landing.answer = Some(answer);
                }
                Ok(Finish::Landed(landing))
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
            // An empty upload is created by `begin`, under its key, and may
            // land there: kept before, a run stopped before the creation's
            // answer creates under the same key again and finds the landing.
            Mode::Unknown if self.total == 0 => SavedSession::of(Handle::FirstRequest {
                key: self.key.clone(),
            }),
            _ => SavedSession::of(Handle::Parts),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use bytes::Bytes;

    use super::*;
    use crate::form::FormField;
    use crate::plan::BlockPlan;
    use crate::protocol::Receipt;
    use crate::transport::TransportError;

    fn saved(handle: Handle, receipts: &[(u64, &str)]) -> SavedSession {
        let mut saved = SavedSession::of(handle);
        saved.receipts = receipts.iter().map(|&(i, r)| (i, r.to_owned())).collect();
        saved
    }

    #[test]
    fn each_saved_shape_reads_back_as_what_the_session_saved() {
        let url = "http://127.0.0.1:9/files/abc";
        let at = || Handle::Url { url: url.into() };
        let read = |saved: SavedSession| Resumed::from_saved(&saved).expect("a resumable shape");
        assert_eq!(read(saved(at(), &[])), Resumed::Stream(url.to_owned()));
        let first_request = || Handle::FirstRequest { key: "k1".into() };
        let first = read(saved(first_request(), &[(0, url)]));
        assert_eq!(
            first,
            Resumed::FirstBlock {
                key: "k1".into(),
                url: Some(url.into())
            }
        );
        assert_eq!(first.url(), Some(url));
        let unsent = read(saved(first_request(), &[]));
        assert_eq!(unsent.url(), None, "its first block was never acknowledged");
        let parts = read(saved(
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
        let multipart = Handle::Multipart {
            upload_id: "u".into(),
            key: "k".into(),
        };
        assert_eq!(
            Resumed::from_saved(&saved(multipart, &[])),
            None,
            "another protocol's upload: begun afresh"
        );
    }

    /// One transition per test, against a server played by a script: each
    /// request is recorded as `METHOD path`, and answered by `reply`.
    type Reply = dyn Fn(&Method, &str) -> Response + Send + Sync;

    struct Scripted {
        reply: Box<Reply>,
        seen: Mutex<Vec<(String, HeaderMap)>>,
    }

    impl fmt::Debug for Scripted {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Scripted")
        }
    }

    #[async_trait]
    impl Transport for Scripted {
        async fn send(&self, request: Request) -> Result<Response, TransportError> {
            let path = request.uri().path().to_owned();
            let seen = format!("{} {path}", request.method());
            lock(&self.seen).push((seen, request.headers().clone()));
            Ok((self.reply)(request.method(), &path))
        }
    }

    fn scripted(reply: impl Fn(&Method, &str) -> Response + Send + Sync + 'static) -> Scripted {
        Scripted {
            reply: Box::new(reply),
            seen: Mutex::default(),
        }
    }

    impl Scripted {
        /// The requests seen since last asked.
        fn seen(&self) -> Vec<String> {
            lock(&self.seen).drain(..).map(|(s, _)| s).collect()
        }

        /// The value of header `name` on the last request.
        fn last(&self, name: &str) -> Option<String> {
            let seen = lock(&self.seen);
            let (_, headers) = seen.last()?;
            Some(headers.get(name)?.to_str().ok()?.to_owned())
        }
    }

    fn answer(status: u16, headers: &[(&str, &str)]) -> Response {
        let mut response = http::Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        response.body(Bytes::new()).unwrap()
    }

    const URL: &str = "http://127.0.0.1:9/files/";

    /// A session of a 20-byte source in 10-byte blocks.
    fn session(
        protocol: &dyn Protocol,
        threads: usize,
        saved: Option<&SavedSession>,
    ) -> Box<dyn UploadSession> {
        session_of(protocol, (20, 10), threads, saved)
    }

    /// A session of `a.bin`, `total` bytes in blocks of `block_size`.
    fn session_of(
        protocol: &dyn Protocol,
        (total, block_size): (u64, u64),
        threads: usize,
        saved: Option<&SavedSession>,
    ) -> Box<dyn UploadSession> {
        let url: Uri = URL.parse().unwrap();
        protocol
            .open(&UploadTarget {
                url: &url,
                headers: &HeaderMap::new(),
                fields: &FormField::default(),
                key: "file",
                name: "a.bin",
                total,
                integrity: crate::protocol::Integrity::None,
                threads,
                block_size,
                saved,
                endpoints: &Default::default(),
            })
            .unwrap()
    }

    /// A draft session of the newest version, begun: the draft asks the
    /// server nothing before its first block (a server that answered
    /// would fail the begin).
    async fn draft_begun(saved: Option<&SavedSession>) -> Box<dyn UploadSession> {
        let begun = session(&IetfDraft::default(), 1, saved);
        begun
            .begin(&scripted(|_, _| answer(500, &[])))
            .await
            .unwrap();
        begun
    }

    fn block(index: u64) -> Block {
        BlockPlan::new(vec![20], 10).block(0, index).unwrap()
    }

    fn data() -> BlockData {
        BlockData::memory(Bytes::from_static(b"0123456789"))
    }

    fn acked(verdict: Verdict) -> Option<String> {
        match verdict {
            Verdict::Ack(Receipt(receipt)) => receipt,
            other => panic!("not acknowledged: {other:?}"),
        }
    }

    /// A server that refuses `OPTIONS` (tuspyserver's `/files` answers
    /// 405) still gets tus with creation, one stream, and the run says
    /// what was assumed; a server that answers it as no tus server is
    /// still refused.
    #[tokio::test]
    async fn tus_without_discovery_assumes_creation_only() {
        for refused in [404, 405, 501] {
            let server = scripted(move |method, path| match (method.as_str(), path) {
                ("OPTIONS", _) => answer(refused, &[]),
                ("POST", "/files/") => answer(201, &[("location", "/files/u1")]),
                _ => answer(500, &[]),
            });
            let session = session(&Tus, 4, None);
            let holding = session.begin(&server).await.unwrap();
            assert_eq!(holding, Holding::Ranges(Vec::new()));
            assert_eq!(server.seen(), ["OPTIONS /files/", "POST /files/"]);
            assert_eq!(session.constraints().max_in_flight, 1, "one stream");
            let notices = session.notices();
            assert!(
                notices[0].contains(&format!("answered OPTIONS with {refused}"))
                    && notices[0].contains("creation only"),
                "{notices:?}"
            );
            let request = session.encode(&block(0), data()).unwrap();
            assert!(request.headers().get("upload-checksum").is_none());
        }
        let stranger = scripted(|method, _| match method.as_str() {
            "OPTIONS" => answer(200, &[]),
            _ => answer(500, &[]),
        });
        let error = session(&Tus, 4, None).begin(&stranger).await.unwrap_err();
        assert_eq!(error.code(), code::PROTOCOL_MISMATCH, "{error}");
    }

    /// tus without concatenation: begin creates the upload (Unknown to
    /// Stream), blocks are appended in order, finish asks `HEAD`.
    #[tokio::test]
    async fn tus_creates_then_appends_then_finishes_by_head() {
        let server = scripted(|method, path| match (method.as_str(), path) {
            ("OPTIONS", _) => answer(
                204,
                &[("tus-version", "1.0.0"), ("tus-extension", "creation")],
            ),
            ("POST", "/files/") => answer(201, &[("location", "/files/u1")]),
            ("PATCH", "/files/u1") => answer(204, &[("upload-offset", "10")]),
            ("HEAD", "/files/u1") => {
                answer(200, &[("upload-offset", "20"), ("upload-length", "20")])
            }
            _ => answer(500, &[]),
        });
        let session = session(&Tus, 4, None);
        assert_eq!(session.constraints().max_in_flight, usize::MAX, "not begun");
        let holding = session.begin(&server).await.unwrap();
        assert_eq!(holding, Holding::Ranges(Vec::new()));
        assert_eq!(server.last("upload-length").as_deref(), Some("20"));
        assert_eq!(server.seen(), ["OPTIONS /files/", "POST /files/"]);
        assert_eq!(session.constraints().max_in_flight, 1, "one stream");
        assert_eq!(
            session.saved().handle,
            Handle::Url {
                url: "http://127.0.0.1:9/files/u1".into()
            }
        );
        let notices = session.notices();
        assert!(notices[0].contains("one stream"), "{notices:?}");

        let request = session.encode(&block(0), data()).unwrap();
        assert_eq!(
            (request.method(), request.uri().path()),
            (&Method::PATCH, "/files/u1")
        );
        assert_eq!(request.headers()[UPLOAD_OFFSET], "0");
        let reply = answer(204, &[("upload-offset", "10")]);
        assert_eq!(
            acked(session.judge(&block(0), &reply)).as_deref(),
            Some("http://127.0.0.1:9/files/u1"),
            "the first block's receipt is the upload's URL"
        );
        let request = session.encode(&block(1), data()).unwrap();
        assert_eq!(request.headers()[UPLOAD_OFFSET], "10");
        let reply = answer(204, &[("upload-offset", "20")]);
        assert_eq!(acked(session.judge(&block(1), &reply)), None);

        let Finish::Landed(landing) = session.finish(&server).await.unwrap() else {
            panic!("not landed");
        };
        assert_eq!((landing.confirmed, landing.length), (true, Some(20)));
        assert_eq!(server.seen(), ["HEAD /files/u1"]);
        assert_eq!(
            session.location().as_deref(),
            Some("http://127.0.0.1:9/files/u1")
        );
    }

    /// An append the server kept only part of (Stream to Stream, resync);
    /// an offset past what was sent (a violation, not progress); a moved
    /// offset (409: resync).
    #[tokio::test]
    async fn an_append_is_judged_by_the_offset_it_moved_to() {
        let server = scripted(|method, _| match method.as_str() {
            "OPTIONS" => answer(204, &[("tus-version", "1.0.0")]),
            _ => answer(201, &[("location", "/files/u1")]),
        });
        let session = session(&Tus, 1, None);
        session.begin(&server).await.unwrap();
        let short = answer(204, &[("upload-offset", "4")]);
        assert!(matches!(
            session.judge(&block(0), &short),
            Verdict::Resync(_)
        ));
        let request = session.encode(&block(0), data()).unwrap();
        assert_eq!(
            (
                request.headers()[UPLOAD_OFFSET].to_str().unwrap(),
                request.body().len()
            ),
            ("4", 6),
            "only what the server lacks is sent again"
        );
        let past = answer(204, &[("upload-offset", "11")]);
        let Verdict::Fail(e) = session.judge(&block(0), &past) else {
            panic!("an offset past the block is taken");
        };
        assert_eq!(e.code(), code::PROTOCOL_VIOLATION);
        assert!(matches!(
            session.judge(&block(0), &answer(409, &[])),
            Verdict::Resync(_)
        ));
        assert!(matches!(
            session.judge(&block(0), &answer(503, &[])),
            Verdict::Retry { .. }
        ));
    }

    /// The draft creates with the first block (Unknown to Creating, no
    /// request), whose answer names the upload (Creating to Stream).
    #[tokio::test]
    async fn the_draft_creates_the_upload_with_its_first_block() {
        let server = scripted(|_, _| answer(500, &[]));
        let session = session(&IetfDraft::new(6), 1, None);
        let holding = session.begin(&server).await.unwrap();
        assert_eq!(holding, Holding::Ranges(Vec::new()));
        assert!(
            server.seen().is_empty(),
            "nothing asked before the first block"
        );
        let Handle::FirstRequest { key } = session.saved().handle else {
            panic!("the key is saved before the first answer");
        };
        let request = session.encode(&block(0), data()).unwrap();
        assert_eq!(
            (request.method(), request.uri().path()),
            (&Method::POST, "/files/")
        );
        let headers = request.headers();
        assert_eq!(
            headers[IDEMPOTENCY_KEY].to_str().unwrap(),
            format!("\"{key}\"")
        );
        assert_eq!(headers["upload-complete"], "?0", "one block of two");
        let created = answer(201, &[("location", "/files/u9"), ("upload-offset", "10")]);
        assert_eq!(
            acked(session.judge(&block(0), &created)).as_deref(),
            Some("http://127.0.0.1:9/files/u9"),
            "the URL is the first block's receipt"
        );
        let request = session.encode(&block(1), data()).unwrap();
        assert_eq!(
            (request.method(), request.uri().path()),
            (&Method::PATCH, "/files/u9")
        );
        assert_eq!(request.headers()["upload-complete"], "?1", "the last block");
    }

    /// The newest interop version first, named in Content-Disposition; a
    /// creation refused without the version echoed steps down one version
    /// (and the run says so), one refused with it echoed does not; from
    /// interop 7 an append's success needs no Upload-Offset.
    #[tokio::test]
    async fn the_draft_steps_down_to_the_version_a_server_takes() {
        let session = draft_begun(None).await;
        let request = session.encode(&block(0), data()).unwrap();
        let headers = request.headers();
        assert_eq!(headers[INTEROP_VERSION], "9");
        assert_eq!(
            headers["content-disposition"],
            "inline; filename=\"a.bin\"; filename*=UTF-8''a.bin"
        );
        assert!(matches!(
            session.judge(&block(0), &answer(400, &[])),
            Verdict::Resync(_)
        ));
        let request = session.encode(&block(0), data()).unwrap();
        assert_eq!(request.headers()[INTEROP_VERSION], "8");
        assert!(
            session.notices()[0].contains("interop version 9) (400 Bad Request); trying IETF resumable-upload (interop version 8)"),
            "said"
        );
        // Refused in its own version: a refusal, not a version to drop.
        assert!(matches!(
            session.judge(&block(0), &answer(400, &[(INTEROP_VERSION, "8")])),
            Verdict::Fail(_)
        ));
        let created = answer(201, &[("location", "/files/u9"), (INTEROP_VERSION, "8")]);
        acked(session.judge(&block(0), &created));
        let appended = answer(204, &[("upload-complete", "?1")]);
        acked(session.judge(&block(1), &appended));
    }

    /// A 413 the upload's server did not send (a proxy's body limit, which
    /// names none) sends the block on in pieces of half as much each time,
    /// down to 64 KiB: then it fails with the refusal, which says what to
    /// do. A 413 with the protocol's headers is the server's own word.
    #[tokio::test]
    async fn a_proxys_413_sends_the_block_on_in_smaller_pieces() {
        const KIB: u64 = 1024;
        let session = session_of(&IetfDraft::default(), (256 * KIB, 256 * KIB), 1, None);
        session
            .begin(&scripted(|_, _| answer(500, &[])))
            .await
            .unwrap();
        let block = BlockPlan::new(vec![256 * KIB], 256 * KIB)
            .block(0, 0)
            .unwrap();
        let data = || BlockData::memory(Bytes::from(vec![7u8; 256 * 1024]));
        let proxy = || {
            http::Response::builder()
                .status(413)
                .header("content-type", "text/html")
                .body(Bytes::from_static(
                    b"<html><head><title>413 Request Entity Too Large</title></head></html>",
                ))
                .unwrap()
        };
        // (what was sent: method, start, end; the answer) in turn.
        let mut sent = Vec::new();
        let mut send = |reply: Response| {
            let request = session.encode(&block, data()).unwrap();
            let start = request
                .headers()
                .get(UPLOAD_OFFSET)
                .map_or(0, |v| v.to_str().unwrap().parse::<u64>().unwrap());
            sent.push((
                request.method().to_string(),
                start,
                start + request.body().len(),
            ));
            session.judge(&block, &reply)
        };
        assert!(matches!(send(proxy()), Verdict::More));
        let created = answer(
            201,
            &[("location", "/files/u1"), ("upload-offset", "131072")],
        );
        assert!(matches!(send(created), Verdict::More));
        assert!(matches!(send(proxy()), Verdict::More));
        assert!(matches!(
            send(answer(204, &[("upload-offset", "196608")])),
            Verdict::More
        ));
        let Verdict::Fail(refused) = send(proxy()) else {
            panic!("64 KiB is the smallest piece");
        };
        assert!(
            refused.message().contains("send smaller blocks"),
            "{refused}"
        );
        // The server's own 413 (here: tus's) is its word, not a proxy's.
        let own = answer(413, &[("tus-resumable", "1.0.0")]);
        assert!(matches!(send(own), Verdict::Fail(_)));
        let bytes = |s: u64, e: u64| (s * KIB, e * KIB);
        let ranges: Vec<(u64, u64)> = sent.iter().map(|(_, s, e)| (*s, *e)).collect();
        assert_eq!(
            ranges,
            [
                bytes(0, 256),
                bytes(0, 128),
                bytes(128, 256),
                bytes(128, 192),
                bytes(192, 256),
                bytes(192, 256),
            ]
        );
        assert_eq!(sent[1].0, "POST", "the creation went again, smaller");
        let notices = session.notices();
        assert!(
            notices[0].contains("refused 262144 bytes in one request (413)"),
            "{notices:?}"
        );
    }

    /// A part of a tus concatenation refused by a proxy's 413 goes in
    /// pieces too: created with the first, appended to with the rest; the
    /// part is acknowledged once it holds its whole block, with its URL.
    /// A part whose append finds its offset moved begins again.
    #[tokio::test]
    async fn a_proxys_413_sends_a_part_on_in_pieces() {
        const KIB: u64 = 1024;
        let session = session_of(&Tus, (512 * KIB, 256 * KIB), 2, None);
        let server = scripted(|_, _| {
            answer(
                204,
                &[
                    ("tus-version", "1.0.0"),
                    (
                        "tus-extension",
                        "creation,creation-with-upload,concatenation",
                    ),
                ],
            )
        });
        session.begin(&server).await.unwrap();
        let plan = BlockPlan::new(vec![512 * KIB], 256 * KIB);
        let (first, second) = (plan.block(0, 0).unwrap(), plan.block(0, 1).unwrap());
        let data = || BlockData::memory(Bytes::from(vec![7u8; 256 * 1024]));
        let proxy = || {
            http::Response::builder()
                .status(413)
                .body(Bytes::from_static(b"<html><title>413</title></html>"))
                .unwrap()
        };
        // (method, path, offset in the part, length) of each request.
        let mut sent = Vec::new();
        let mut send = |block: &Block, reply: Response| {
            let request = session.encode(block, data()).unwrap();
            let offset = request
                .headers()
                .get(UPLOAD_OFFSET)
                .map(|v| v.to_str().unwrap().to_owned());
            sent.push((
                request.method().to_string(),
                request.uri().path().to_owned(),
                offset,
                request.body().len() / 1024,
            ));
            session.judge(block, &reply)
        };
        // Both parts went at once with all their bytes; both are refused.
        let (a, b) = (
            session.encode(&first, data()).unwrap(),
            session.encode(&second, data()).unwrap(),
        );
        assert_eq!((a.body().len(), b.body().len()), (256 * 1024, 256 * 1024));
        assert!(matches!(session.judge(&first, &proxy()), Verdict::More));
        assert!(matches!(session.judge(&second, &proxy()), Verdict::More));
        let created = |part: &str| answer(201, &[("location", part), ("upload-offset", "131072")]);
        assert!(matches!(send(&first, created("/files/p0")), Verdict::More));
        assert!(matches!(send(&second, created("/files/p1")), Verdict::More));
        let whole = answer(204, &[("upload-offset", "262144")]);
        let receipt = acked(send(&first, whole)).unwrap();
        assert_eq!(
            receipt,
            format!("0 {} http://127.0.0.1:9/files/p0", 256 * KIB)
        );
        // The second part's append finds its offset moved (a piece cut
        // off, partly kept): the part is created again, in pieces.
        assert!(matches!(
            send(&second, answer(409, &[])),
            Verdict::Retry { .. }
        ));
        assert!(matches!(send(&second, created("/files/p2")), Verdict::More));
        let whole = answer(204, &[("upload-offset", "262144")]);
        let receipt = acked(send(&second, whole)).unwrap();
        assert_eq!(
            receipt,
            format!("{} {} http://127.0.0.1:9/files/p2", 256 * KIB, 512 * KIB)
        );
        let offset = |o: &str| Some(o.to_owned());
        assert_eq!(
            sent,
            [
                ("POST".into(), "/files/".into(), None, 128),
                ("POST".into(), "/files/".into(), None, 128),
                ("PATCH".into(), "/files/p0".into(), offset("131072"), 128),
                ("PATCH".into(), "/files/p1".into(), offset("131072"), 128),
                ("POST".into(), "/files/".into(), None, 128),
                ("PATCH".into(), "/files/p2".into(), offset("131072"), 128),
            ]
        );
        let notices = session.notices();
        assert_eq!(notices.len(), 1, "told once: {notices:?}");
        assert!(notices[0].contains("refused 262144 bytes"), "{notices:?}");
    }

    /// A server's `Upload-Limit` is obeyed: a creation refused with 413 for
    /// carrying more than its `max-append-size` goes again smaller (not a
    /// failure, not a retry), each block then goes in pieces, each answered
    /// before the next, and only the request that ends the file says it
    /// completes it; a `max-size` under the file's fails it with 413's code.
    /// An error answer that says the upload is complete is not retried.
    #[tokio::test]
    async fn the_draft_obeys_the_limits_a_server_announces() {
        let bounded = draft_begun(None).await;
        let request = bounded.encode(&block(0), data()).unwrap();
        assert_eq!(request.body().len(), 10, "no limits known yet");
        let refused = answer(413, &[("upload-limit", "max-size=100, max-append-size=4")]);
        assert!(matches!(bounded.judge(&block(0), &refused), Verdict::More));
        let mut sent = Vec::new();
        let mut verdicts = Vec::new();
        let mut receipts = Vec::new();
        for b in 0..2 {
            loop {
                let request = bounded.encode(&block(b), data()).unwrap();
                let headers = request.headers();
                let start = headers
                    .get(UPLOAD_OFFSET)
                    .map_or(0, |v| v.to_str().unwrap().parse::<u64>().unwrap());
                let end = start + request.body().len();
                sent.push((
                    request.method().to_string(),
                    start,
                    end,
                    headers["upload-complete"].to_str().unwrap().to_owned(),
                ));
                let end = end.to_string();
                let reply = if request.method() == Method::POST {
                    answer(201, &[("location", "/files/u9"), ("upload-offset", &end)])
                } else {
                    answer(204, &[("upload-offset", &end)])
                };
                let verdict = bounded.judge(&block(b), &reply);
                verdicts.push(matches!(verdict, Verdict::More));
                if !matches!(verdict, Verdict::More) {
                    receipts.push(acked(verdict));
                    break;
                }
            }
        }
        let piece = |m: &str, s: u64, e: u64, c: &str| (m.to_owned(), s, e, c.to_owned());
        assert_eq!(
            sent,
            [
                piece("POST", 0, 4, "?0"),
                piece("PATCH", 4, 8, "?0"),
                piece("PATCH", 8, 10, "?0"),
                piece("PATCH", 10, 14, "?0"),
                piece("PATCH", 14, 18, "?0"),
                piece("PATCH", 18, 20, "?1"),
            ]
        );
        assert_eq!(verdicts, [true, true, false, true, true, false]);
        assert_eq!(
            receipts,
            [Some("http://127.0.0.1:9/files/u9".to_owned()), None],
            "the first block's receipt is the upload's URL, though its last piece was an append"
        );

        let ended = answer(503, &[("upload-complete", "?1")]);
        assert!(
            matches!(bounded.judge(&block(1), &ended), Verdict::Fail(_)),
            "an error that ends the upload is the file's answer, not one to retry"
        );

        let small = draft_begun(None).await;
        let _ = small.encode(&block(0), data()).unwrap();
        let refused = answer(413, &[("upload-limit", "max-size=16")]);
        let Verdict::Fail(e) = small.judge(&block(0), &refused) else {
            panic!("a file past max-size goes on");
        };
        assert_eq!(e.code(), code::TOO_LARGE);
        assert!(e.message().contains("at most 16 bytes"), "{e}");
    }

    /// A creation sent again under the key a stopped run saved may find
    /// the server holding more than it carried (the earlier run's pieces):
    /// that is where the upload goes on (begin again, at its URL), not a
    /// lie; a first creation answered so is one.
    #[tokio::test]
    async fn a_creation_sent_again_may_find_more_than_it_carried() {
        let stopped = saved(Handle::FirstRequest { key: "k".into() }, &[]);
        let resumed = draft_begun(Some(&stopped)).await;
        let request = resumed.encode(&block(0), data()).unwrap();
        assert_eq!(request.headers()[IDEMPOTENCY_KEY], "\"k\"");
        let more = answer(201, &[("location", "/files/u9"), ("upload-offset", "15")]);
        assert!(matches!(
            resumed.judge(&block(0), &more),
            Verdict::Resync(_)
        ));
        let Handle::Url { url } = resumed.saved().handle else {
            panic!("the upload's URL is kept");
        };
        assert_eq!(url, "http://127.0.0.1:9/files/u9");

        let fresh = draft_begun(None).await;
        let _ = fresh.encode(&block(0), data()).unwrap();
        let Verdict::Fail(e) = fresh.judge(&block(0), &more) else {
            panic!("a first creation holding more than it carried is taken");
        };
        assert_eq!(e.code(), code::PROTOCOL_VIOLATION);
    }

    /// A file of more blocks than one final request's header can name
    /// (which front ends refuse after every part was sent) goes as one
    /// stream, and says so; one block fewer than that goes in parts.
    #[tokio::test]
    async fn a_file_of_more_parts_than_a_final_header_takes_goes_as_one_stream() {
        let url: Uri = URL.parse().unwrap();
        let most = max_parts(&url);
        let open = |blocks: u64| session_of(&Tus, (blocks * 10, 10), 4, None);
        let server = || {
            scripted(|method, _| match method.as_str() {
                "OPTIONS" => answer(
                    204,
                    &[
                        ("tus-version", "1.0.0"),
                        (
                            "tus-extension",
                            "creation,creation-with-upload,concatenation",
                        ),
                    ],
                ),
                "POST" => answer(201, &[("location", "/files/u1")]),
                _ => answer(500, &[]),
            })
        };
        let within = open(most);
        within.begin(&server()).await.unwrap();
        assert_eq!(within.constraints().max_in_flight, usize::MAX, "in parts");
        assert!(within.notices().is_empty());

        let beyond = open(most + 1);
        beyond.begin(&server()).await.unwrap();
        assert_eq!(beyond.constraints().max_in_flight, 1, "one stream");
        let notices = beyond.notices();
        assert!(
            notices[0].contains(&format!(
                "{} blocks, more than one final request can join ({most} parts",
                most + 1
            )),
            "{notices:?}"
        );
        // The header of `most` parts of ids as long as ours fits.
        let path = format!("{}{:032x} ", url.path(), 0);
        assert!(most * path.len() as u64 <= MAX_CONCAT_HEADER);
        // A creation URL too long for two parts sends every file as one
        // stream, and says so without dividing by nothing.
        let long: Uri = format!("http://127.0.0.1:9/{}", "p".repeat(9000))
            .parse()
            .unwrap();
        assert_eq!(max_parts(&long), 1);
    }

    /// An empty upload is created, and lands, in `begin`: its key is what
    /// it saves before, and a session opened from that save (a run stopped
    /// before the creation's answer) creates under the same key, which
    /// finds the landing instead of a name taken.
    #[tokio::test]
    async fn an_empty_upload_saves_its_key_before_it_is_created() {
        let open =
            |saved: Option<&SavedSession>| session_of(&IetfDraft::default(), (0, 10), 1, saved);
        let stopped = open(None).saved();
        let Handle::FirstRequest { key } = &stopped.handle else {
            panic!("an empty upload saves its key before it is created: {stopped:?}");
        };
        let server = scripted(|method, _| match method.as_str() {
            "POST" => answer(201, &[("location", "/files/e1"), ("upload-complete", "?1")]),
            _ => answer(500, &[]),
        });
        let resumed = open(Some(&stopped));
        let holding = resumed.begin(&server).await.unwrap();
        assert!(matches!(holding, Holding::Landed(_)), "{holding:?}");
        assert_eq!(server.last(IDEMPOTENCY_KEY), Some(format!("\"{key}\"")));
    }

    /// A draft upload whose every byte the server holds but does not count
    /// complete is completed by an empty append at finish.
    #[tokio::test]
    async fn a_draft_upload_held_whole_but_not_complete_is_completed() {
        let server = scripted(|method, _| match method.as_str() {
            "HEAD" => answer(204, &[("upload-offset", "20"), ("upload-complete", "?0")]),
            "PATCH" => answer(204, &[("upload-offset", "20"), ("upload-complete", "?1")]),
            _ => answer(500, &[]),
        });
        let saved = SavedSession::of(Handle::Url {
            url: format!("{URL}u3"),
        });
        let session = session(&IetfDraft::new(6), 1, Some(&saved));
        let holding = session.begin(&server).await.unwrap();
        assert_eq!(holding, Holding::Ranges(vec![(0, 20)]), "held, not landed");
        let Finish::Landed(landing) = session.finish(&server).await.unwrap() else {
            panic!("not landed");
        };
        assert!(landing.confirmed);
        assert_eq!(server.last("upload-offset").as_deref(), Some("20"));
        assert_eq!(
            server.seen(),
            ["HEAD /files/u3", "HEAD /files/u3", "PATCH /files/u3"]
        );
    }

    /// A resumed stream goes on from the server's offset (Unknown to
    /// Stream by `HEAD`), and one the server holds whole has landed.
    #[tokio::test]
    async fn a_resumed_stream_goes_on_from_the_servers_offset() {
        let server = scripted(|method, path| match (method.as_str(), path) {
            ("OPTIONS", _) => answer(204, &[("tus-version", "1.0.0")]),
            ("HEAD", "/files/half") => {
                answer(200, &[("upload-offset", "10"), ("upload-length", "20")])
            }
            ("HEAD", "/files/whole") => {
                answer(200, &[("upload-offset", "20"), ("upload-length", "20")])
            }
            _ => answer(404, &[]),
        });
        let at = |name: &str| {
            SavedSession::of(Handle::Url {
                url: format!("{URL}{name}"),
            })
        };
        let half = session(&Tus, 1, Some(&at("half")));
        assert_eq!(
            half.begin(&server).await.unwrap(),
            Holding::Ranges(vec![(0, 10)])
        );
        let request = half.encode(&block(1), data()).unwrap();
        assert_eq!(request.uri().path(), "/files/half");
        let whole = session(&Tus, 1, Some(&at("whole")));
        assert!(matches!(
            whole.begin(&server).await.unwrap(),
            Holding::Landed(_)
        ));
        assert_eq!(
            whole.location().as_deref(),
            Some("http://127.0.0.1:9/files/whole")
        );
        let gone = scripted(|method, _| match method.as_str() {
            "OPTIONS" => answer(204, &[("tus-version", "1.0.0")]),
            "HEAD" => answer(404, &[]),
            _ => answer(201, &[("location", "/files/new")]),
        });
        let again = session(&Tus, 1, Some(&at("half")));
        assert_eq!(
            again.begin(&gone).await.unwrap(),
            Holding::Ranges(Vec::new())
        );
        assert_eq!(
            gone.seen(),
            ["OPTIONS /files/", "HEAD /files/half", "POST /files/"],
            "gone: created anew"
        );
    }

    /// Concatenation (Unknown to Concatenated): each block a partial upload
    /// whose receipt is its part; finish joins them by the final `POST`.
    #[tokio::test]
    async fn tus_concatenation_sends_parts_and_joins_them() {
        let server = scripted(|method, path| match (method.as_str(), path) {
            ("OPTIONS", _) => answer(
                204,
                &[
                    ("tus-version", "1.0.0"),
                    (
                        "tus-extension",
                        "creation,creation-with-upload,concatenation",
                    ),
                ],
            ),
            ("POST", _) => answer(201, &[("location", "/files/final")]),
            ("HEAD", "/files/final") => {
                answer(200, &[("upload-offset", "20"), ("upload-length", "20")])
            }
            _ => answer(404, &[]),
        });
        let session = session(&Tus, 2, None);
        assert_eq!(
            session.begin(&server).await.unwrap(),
            Holding::Ranges(Vec::new())
        );
        assert_eq!(
            server.seen(),
            ["OPTIONS /files/"],
            "parts are created with their bytes"
        );
        assert_eq!(
            session.constraints().max_in_flight,
            usize::MAX,
            "parts go in parallel"
        );
        assert!(
            session.idempotent(&block(0)),
            "a part sent twice is harmless"
        );
        let request = session.encode(&block(1), data()).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.headers()[UPLOAD_CONCAT], "partial");
        assert_eq!(request.headers()[UPLOAD_LENGTH], "10");
        for (index, part) in [(1, "/files/p1"), (0, "/files/p0")] {
            let made = answer(201, &[("location", part), ("upload-offset", "10")]);
            let receipt = acked(session.judge(&block(index), &made)).unwrap();
            assert_eq!(
                receipt,
                format!(
                    "{} {} http://127.0.0.1:9{part}",
                    index * 10,
                    index * 10 + 10
                )
            );
        }
        let short = answer(201, &[("location", "/files/p2"), ("upload-offset", "3")]);
        assert!(matches!(
            session.judge(&block(0), &short),
            Verdict::Retry { .. }
        ));
        assert_eq!(session.saved().handle, Handle::Parts);
        let Finish::Landed(landing) = session.finish(&server).await.unwrap() else {
            panic!("not landed");
        };
        assert_eq!(landing.length, Some(20));
        let seen = lock(&server.seen).clone();
        assert_eq!(seen[0].0, "POST /files/");
        assert_eq!(
            seen[0].1[UPLOAD_CONCAT], "final;/files/p0 /files/p1",
            "the parts in their order, by path"
        );
        assert_eq!(
            session.location().as_deref(),
            Some("http://127.0.0.1:9/files/final")
        );
    }

    /// A resumed concatenation keeps the parts the server holds whole and
    /// sends the others again; a final refused for a gone part resyncs.
    #[tokio::test]
    async fn a_resumed_concatenation_keeps_the_parts_held_whole() {
        let server = scripted(|method, path| match (method.as_str(), path) {
            ("OPTIONS", _) => answer(
                204,
                &[
                    ("tus-version", "1.0.0"),
                    ("tus-extension", "creation-with-upload,concatenation"),
                ],
            ),
            ("HEAD", "/files/p0") => {
                answer(200, &[("upload-offset", "10"), ("upload-length", "10")])
            }
            ("HEAD", "/files/p1") => {
                answer(200, &[("upload-offset", "4"), ("upload-length", "10")])
            }
            ("POST", _) => answer(400, &[]),
            _ => answer(404, &[]),
        });
        let mut saved = SavedSession::of(Handle::Parts);
        saved.receipts = vec![(0, format!("0 10 {URL}p0")), (1, format!("10 20 {URL}p1"))];
        let session = session(&Tus, 2, Some(&saved));
        assert_eq!(
            session.begin(&server).await.unwrap(),
            Holding::Ranges(vec![(0, 10)])
        );
        assert!(matches!(
            session.finish(&server).await.unwrap(),
            Finish::Resync(_)
        ));
    }
}
