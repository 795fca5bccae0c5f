//! The segmented multipart convention of the reference FileUploader, with
//! the answers of a receiver that can give them (`docs/PROTOCOL.md`).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use rand::distr::{Alphanumeric, SampleString};

use fileuploader_wire::resumable::decode_text;
use fileuploader_wire::{
    put_escaped, Statement, BLOCK_CRC32C_FIELD, STATEMENT_HEADER, STATEMENT_MEDIA_TYPE,
    UPLOAD_ID_HEADER, UPLOAD_ID_QUERY,
};

use super::{
    header_value, Endpoints, FinalAnswer, Finish, Handle, Holding, Integrity, Landing, Protocol,
    Receipt, SavedSession, UploadSession, UploadTarget, Verdict,
};
use crate::body::{BlockData, UploadBody};
use crate::error::{code, Error};
use crate::plan::Block;
use crate::retry;
use crate::source::lock;
use crate::transport::{Request, Response, Transport};

/// The segmented multipart convention of the reference FileUploader: each
/// block is a `multipart/form-data` `POST` with the form fields and one file
/// part, and a `Content-Range` header when the source has several blocks.
///
/// A receiver that answers status queries (`GET url?upload_id=ID`, as the
/// reference receiver does) is asked what it holds when a resumed source
/// begins (a new upload id has nothing to ask about), and, unless a block's
/// answer already stated the landing, whether the file landed when it
/// finishes. A receiver that cannot answer gets the same
/// blocks as ever, and its landings are reported unconfirmed. See
/// `docs/PROTOCOL.md`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SegmentedMultipart;

impl Protocol for SegmentedMultipart {
    fn open(&self, target: &UploadTarget<'_>) -> Result<Box<dyn UploadSession>, Error> {
        let boundary = format!(
            "fileuploader-{}",
            Alphanumeric.sample_string(&mut rand::rng(), 24)
        );
        let (upload_id, fresh) = match target.saved.map(|s| &s.handle) {
            Some(Handle::Id { id } | Handle::Url { url: id }) => (id.clone(), false),
            _ => (new_upload_id(), true),
        };
        let mut prefix = Vec::new();
        for (key, value) in target.fields.iter() {
            if key == BLOCK_CRC32C_FIELD {
                return Err(Error::invalid(
                    code::INVALID_OPTION,
                    format!("form field {key} is set by the uploader and cannot be replaced"),
                ));
            }
            put_part_head(&mut prefix, &boundary, key, None);
            prefix.extend_from_slice(value.as_bytes());
            prefix.extend_from_slice(b"\r\n");
        }
        put_part_head(&mut prefix, &boundary, target.key, Some(target.name));

        let base = target.base_headers();
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let named = Named::new(target.url, &base, &content_type, upload_id)?;
        let digest_head = (target.integrity == Integrity::BlockCrc32c).then(|| {
            let mut head = b"\r\n".to_vec();
            put_part_head(&mut head, &boundary, BLOCK_CRC32C_FIELD, None);
            Bytes::from(head)
        });
        Ok(Box::new(Session {
            url: target.url.clone(),
            named: Mutex::new(named),
            base,
            content_type,
            name: target.name.to_owned(),
            total: target.total,
            prefix: Bytes::from(prefix),
            digest_head,
            suffix: Bytes::from(format!("\r\n--{boundary}--\r\n")),
            answers: AtomicU8::new(NOT_ASKED),
            endpoints: target.endpoints.clone(),
            fresh: AtomicBool::new(fresh),
            acked: AtomicBool::new(!fresh),
            landing: Mutex::new(None),
            last: Mutex::new(None),
        }))
    }
}

/// A fresh upload identifier: 32 random hex digits.
fn new_upload_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `url` with `upload_id=ID` added to its query.
fn status_url(url: &Uri, upload_id: &str) -> Result<Uri, Error> {
    let pair = format!("{UPLOAD_ID_QUERY}={upload_id}");
    let path_and_query = match url.path_and_query() {
        Some(pq) => match pq.query() {
            Some(q) if !q.is_empty() => format!("{}?{q}&{pair}", pq.path()),
            _ => format!("{}?{pair}", pq.path()),
        },
        None => format!("/?{pair}"),
    };
    let mut parts = url.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|e| {
        Error::invalid(
            code::INVALID_URL,
            format!("cannot add the upload id to {url}: {e}"),
        )
    })?);
    Uri::from_parts(parts).map_err(|e| {
        Error::invalid(
            code::INVALID_URL,
            format!("cannot add the upload id to {url}: {e}"),
        )
    })
}

/// Writes `--boundary` and a part's headers, up to the blank line.
fn put_part_head(buf: &mut Vec<u8>, boundary: &str, name: &str, filename: Option<&str>) {
    buf.extend_from_slice(b"--");
    buf.extend_from_slice(boundary.as_bytes());
    buf.extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"");
    put_escaped(buf, name);
    buf.push(b'"');
    if let Some(filename) = filename {
        buf.extend_from_slice(b"; filename=\"");
        put_escaped(buf, filename);
        buf.extend_from_slice(b"\"\r\nContent-Type: ");
        let mime = mime_guess::from_path(filename).first_or_octet_stream();
        buf.extend_from_slice(mime.essence_str().as_bytes());
    }
    buf.extend_from_slice(b"\r\n\r\n");
}

/// Whether the receiver answers status queries: not asked yet, yes, no.
const NOT_ASKED: u8 = 0;
const ANSWERS: u8 = 1;
const SILENT: u8 = 2;

/// What names a session's upload on the wire: its id, the status URL
/// and the headers that carry it.
#[derive(Debug)]
struct Named {
    upload_id: String,
    status_url: Uri,
    /// The headers of blocks.
    headers: HeaderMap,
    /// The headers of status queries and discards.
    query_headers: HeaderMap,
}

impl Named {
    fn new(
        url: &Uri,
        base: &HeaderMap,
        content_type: &str,
        upload_id: String,
    ) -> Result<Self, Error> {
        let mut query_headers = base.clone();
        query_headers.insert(
            HeaderName::from_static(UPLOAD_ID_HEADER),
            header_value(&upload_id)?,
        );
        let mut headers = query_headers.clone();
        headers.insert(CONTENT_TYPE, header_value(content_type)?);
        Ok(Named {
            status_url: status_url(url, &upload_id)?,
            upload_id,
            headers,
            query_headers,
        })
    }
}

#[derive(Debug)]
struct Session {
    url: Uri,
    /// The upload's id and what carries it: another when a new id turns
    /// out to be someone else's.
    named: Mutex<Named>,
    /// The headers every request starts from, and the blocks' type.
    base: HeaderMap,
    content_type: String,
    name: String,
    total: u64,
    prefix: Bytes,
    /// The framing before the digest field's value, when there is one.
    digest_head: Option<Bytes>,
    suffix: Bytes,
    answers: AtomicU8,
    /// What the manager's sessions learnt of their endpoints.
    endpoints: Arc<Endpoints>,
    /// Whether the upload id is new and nothing was sent under it yet: no
    /// receiver can hold anything of it, so there is nothing to ask.
    fresh: AtomicBool,
    /// Whether the id is known to be this client's: a block under it was
    /// acknowledged, in this run or (for a saved id the receiver cannot
    /// ask about) an earlier one, or the receiver holds it in progress.
    acked: AtomicBool,
    /// The landing a block's answer stated.
    landing: Mutex<Option<Landing>>,
    /// The answer to the last block acknowledged: the final answer of a
    /// receiver that states no landing.
    last: Mutex<Option<FinalAnswer>>,
}

impl Session {
    /// A body-less request to the status URL.
    fn query(&self, method: Method) -> Request {
        let mut request = Request::new(UploadBody::new());
        *request.method_mut() = method;
        let named = lock(&self.named);
        *request.uri_mut() = named.status_url.clone();
        *request.headers_mut() = named.query_headers.clone();
        request
    }

    /// The receiver's statement in `response`, if it made one about this
    /// upload.
    /// A statement in the `Upload-Statement` header comes first: the body
    /// is then the receiver's application's.
    fn statement(&self, response: &Response) -> Option<Statement> {
        let header = response.headers().get(STATEMENT_HEADER);
        let statement = match header.and_then(|v| v.to_str().ok()) {
            Some(escaped) => Statement::from_json(decode_text(escaped).as_bytes())?,
            None => {
                let json = response
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ct| ct.starts_with(STATEMENT_MEDIA_TYPE));
                Statement::from_json(response.body()).filter(|_| json)?
            }
        };
        let id = statement.upload_id();
        (id == lock(&self.named).upload_id
            || (id.is_empty() && matches!(statement, Statement::Landed { .. })))
        .then_some(statement)
    }

    /// Asks the receiver what it holds: its statement, or `None` when it
    /// cannot answer.
    async fn ask(&self, transport: &dyn Transport) -> Result<Option<(Statement, Response)>, Error> {
        let response = transport.send(self.query(Method::GET)).await?;
        if let Some(statement) = self.statement(&response) {
            self.learnt(true);
            return Ok(Some((statement, response)));
        }
        if retry::is_retryable_status(response.status()) {
            return Err(crate::error::status_error(
                &response,
                &format!(" to the status query for {:?}", self.name),
            ));
        }
        self.learnt(false);
        Ok(None)
    }

    /// Records whether the receiver answers status queries, for this
    /// session and the manager's others to the same URL.
    fn learnt(&self, answers: bool) {
        let state = if answers { ANSWERS } else { SILENT };
        if self.answers.swap(state, Ordering::Relaxed) != state {
            self.endpoints.set_answers(&self.url, answers);
        }
    }

    fn landing_of(&self, statement: &Statement) -> Option<Landing> {
        match statement {
            Statement::Landed { name, length, .. } => Some(Landing::confirmed(
                Some(name.clone()),
                Some(*length),
                statement.landed_crc32c(),
            )),
            _ => None,
        }
    }

    fn context(&self, block: &Block) -> String {
        format!(
            " for block {} of {} of {:?}",
            block.index + 1,
            block.count,
            self.name
        )
    }
}

#[async_trait]
impl UploadSession for Session {
    async fn begin(&self, transport: &dyn Transport) -> Result<Holding, Error> {
        *lock(&self.landing) = None;
        if self.fresh.swap(false, Ordering::Relaxed) {
            // A new id: the status query could only say it is unknown.
            // Whether the receiver answers queries is learnt at the end,
            // if a block's answer does not state the landing first.
            return Ok(Holding::Ranges(Vec::new()));
        }
        let Some((statement, response)) = self.ask(transport).await? else {
            return Ok(Holding::Unknown);
        };
        if let Some(landing) = self.landing_of(&statement) {
            return Ok(Holding::Landed(landing.answered(&response)));
        }
        // The receiver answers for these credentials only: an upload it
        // holds in progress is ours, and one it knows nothing of holds
        // nothing of ours, whatever an earlier run sent under the id.
        self.acked.store(
            matches!(statement, Statement::Partial { .. }),
            Ordering::Relaxed,
        );
        match statement {
            Statement::Partial {
                total, received, ..
            } if total == self.total => Ok(Holding::Ranges(received)),
            Statement::Partial { total, .. } => {
                Err(Error::new(
                    crate::ErrorKind::Status,
                    code::HTTP_OTHER,
                    format!(
                    "the receiver holds upload {} of {:?} as {total} bytes, but the source has {}",
                    lock(&self.named).upload_id, self.name, self.total
                ),
                ))
            }
            _ => Ok(Holding::Ranges(Vec::new())),
        }
    }

    fn encode(&self, block: &Block, data: BlockData) -> Result<Request, Error> {
        let mut body = UploadBody::new();
        body.push(self.prefix.clone());
        body.push_block(data);
        if let Some(head) = &self.digest_head {
            body.push_digest(head.clone());
        }
        body.push(self.suffix.clone());

        let mut headers = lock(&self.named).headers.clone();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if let Some(range) = block.content_range() {
            headers.insert(CONTENT_RANGE, header_value(&range.to_string())?);
        }
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.url.clone();
        *request.headers_mut() = headers;
        Ok(request)
    }

    fn judge(&self, block: &Block, response: &Response) -> Verdict {
        let status = response.status();
        if status.is_success() {
            let statement = self.statement(response);
            if statement.is_some() {
                // A receiver that states what it made of this upload's
                // blocks speaks the convention: it answers queries too.
                self.learnt(true);
            }
            if let Some(landing) = statement
                .and_then(|s| self.landing_of(&s))
                .map(|l| l.answered(response))
            {
                *lock(&self.landing) = Some(landing);
            }
            *lock(&self.last) = Some(FinalAnswer::of(response));
            self.acked.store(true, Ordering::Relaxed);
            return Verdict::Ack(Receipt::default());
        }
        let error = crate::error::status_error(response, &self.context(block));
        if status == StatusCode::FORBIDDEN && !self.acked.load(Ordering::Relaxed) {
            // A new id someone else's before any block of ours arrived
            // (ids can leak): nothing of ours is under it, so the upload
            // begins again under another. A client refused for itself is
            // refused again, and its retries end.
            if let Ok(named) =
                Named::new(&self.url, &self.base, &self.content_type, new_upload_id())
            {
                *lock(&self.named) = named;
                self.fresh.store(true, Ordering::Relaxed);
                return Verdict::Resync(error);
            }
        }
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            // The receiver discarded the upload: what it holds is not what
            // was acknowledged.
            return Verdict::Resync(error);
        }
        if retry::is_retryable_status(status) {
            let after = error.retry_after();
            return Verdict::Retry { error, after };
        }
        Verdict::Fail(error)
    }

    fn idempotent(&self, block: &Block) -> bool {
        // A ranged block lands at its offset however often it arrives; a
        // whole file sent twice may land twice.
        block.count > 1
    }

    async fn finish(&self, transport: &dyn Transport) -> Result<Finish, Error> {
        if let Some(landing) = lock(&self.landing).clone() {
            return Ok(Finish::Landed(landing));
        }
        let unconfirmed = || Landing {
            answer: lock(&self.last).clone(),
            ..Landing::unconfirmed()
        };
        // A receiver this session, or another of the manager's, found
        // silent is not asked (unless it has spoken since).
        let silent = match self.answers.load(Ordering::Relaxed) {
            NOT_ASKED => self.endpoints.is_silent(&self.url),
            answers => answers == SILENT,
        };
        if silent {
            return Ok(Finish::Landed(unconfirmed()));
        }
        let Some((statement, response)) = self.ask(transport).await? else {
            return Ok(Finish::Landed(unconfirmed()));
        };
        if let Some(landing) = self.landing_of(&statement) {
            return Ok(Finish::Landed(landing.answered(&response)));
        }
        let lost = |why: String| {
            Finish::Resync(Error::new(
                crate::ErrorKind::Status,
                code::NOT_FINISHED,
                format!("{:?} did not land: {why}", self.name),
            ))
        };
        match statement {
            Statement::Partial {
                error: Some(error), ..
            } => Err(Error::new(
                crate::ErrorKind::Status,
                code::NOT_FINISHED,
                format!(
                    "the receiver holds every byte of {:?} but could not land it: {error}",
                    self.name
                ),
            )),
            Statement::Partial { received, .. } => Ok(lost(format!(
                "the receiver holds {} of its {} bytes",
                received.iter().map(|(s, e)| e - s).sum::<u64>(),
                self.total
            ))),
            _ => Ok(lost("the receiver no longer knows the upload".into())),
        }
    }

    async fn abort(&self, transport: &dyn Transport) -> Result<(), Error> {
        // Only a receiver known to speak the convention (it answered a
        // query, or stated what it made of a block) is sent a discard.
        if self.answers.load(Ordering::Relaxed) != ANSWERS {
            return Ok(());
        }
        transport.send(self.query(Method::DELETE)).await?;
        Ok(())
    }

    fn saved(&self) -> SavedSession {
        SavedSession::new(lock(&self.named).upload_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::FormField;
    use futures_util::stream;
    use http::header::USER_AGENT;

    fn target<'a>(
        url: &'a Uri,
        headers: &'a HeaderMap,
        fields: &'a FormField,
        name: &'a str,
        key: &'a str,
    ) -> UploadTarget<'a> {
        UploadTarget {
            url,
            headers,
            fields,
            key,
            name,
            total: 5,
            integrity: Integrity::BlockCrc32c,
            threads: 1,
            block_size: 10240,
            saved: Some(saved()),
            // Each test's own: what one learns must not reach another.
            endpoints: Box::leak(Box::default()),
        }
    }

    fn saved() -> &'static SavedSession {
        static SAVED: std::sync::OnceLock<SavedSession> = std::sync::OnceLock::new();
        SAVED.get_or_init(|| SavedSession::new("abc123"))
    }

    /// A source of `data.len()` bytes sent whole, as one block.
    fn whole(data: &'static [u8]) -> (Block, Bytes) {
        let len = data.len() as u64;
        let block = Block {
            source: 0,
            index: 0,
            count: 1,
            offset: 0,
            len,
            total: len,
        };
        (block, Bytes::from_static(data))
    }

    /// Encodes one block for a source named `name` under form key `key`.
    fn encode(
        headers: &HeaderMap,
        fields: &FormField,
        name: &str,
        key: &str,
        (block, data): (Block, Bytes),
    ) -> Request {
        let url: Uri = "http://127.0.0.1/upload".parse().unwrap();
        let session = SegmentedMultipart
            .open(&target(&url, headers, fields, name, key))
            .unwrap();
        session.encode(&block, BlockData::memory(data)).unwrap()
    }

    /// Each part's name and file name, as multer reads them.
    async fn names(request: &Request) -> Vec<(String, Option<String>)> {
        parse(request)
            .await
            .into_iter()
            .map(|p| (p.0, p.1))
            .collect()
    }

    /// Parses a request body with multer, an independent parser.
    async fn parse(request: &Request) -> Vec<(String, Option<String>, Option<String>, Vec<u8>)> {
        let ct = request.headers()[CONTENT_TYPE].to_str().unwrap();
        let boundary = multer::parse_boundary(ct).unwrap();
        let body = request.body().clone().into_bytes().await.unwrap();
        let chunks = stream::iter([Ok::<_, std::io::Error>(body)]);
        let mut form = multer::Multipart::new(chunks, boundary);
        let mut parts = Vec::new();
        while let Some(field) = form.next_field().await.unwrap() {
            let name = field.name().map(str::to_owned).unwrap();
            let filename = field.file_name().map(str::to_owned);
            let ct = field.content_type().map(|m| m.to_string());
            parts.push((name, filename, ct, field.bytes().await.unwrap().to_vec()));
        }
        parts
    }

    #[tokio::test]
    async fn encodes_fields_then_file_part_with_exact_length() {
        let mut fields = FormField::default();
        fields.add("customField", "FormFieldValue");
        fields.add("empty", "");
        let block = Block {
            source: 0,
            index: 1,
            count: 3,
            offset: 2,
            len: 3,
            total: 8,
        };
        let request = encode(
            &HeaderMap::new(),
            &fields,
            "scan.pdf",
            "RemoteFile",
            (block, Bytes::from_static(b"cde")),
        );

        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.headers()[CONTENT_RANGE], "bytes 2-4/8");
        assert_eq!(request.headers()[UPLOAD_ID_HEADER], "abc123");
        let len: u64 = request.headers()[CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            len,
            request.body().clone().into_bytes().await.unwrap().len() as u64
        );

        let parts = parse(&request).await;
        assert_eq!(parts.len(), 4);
        assert_eq!(
            parts[0],
            ("customField".into(), None, None, b"FormFieldValue".to_vec())
        );
        assert_eq!(parts[1].3, b"");
        assert_eq!(parts[2].0, "RemoteFile");
        assert_eq!(parts[2].1.as_deref(), Some("scan.pdf"));
        assert_eq!(parts[2].2.as_deref(), Some("application/pdf"));
        assert_eq!(parts[2].3, b"cde");
        let crc = format!("{:08x}", crc32c::crc32c(b"cde"));
        assert_eq!(
            parts[3],
            (BLOCK_CRC32C_FIELD.into(), None, None, crc.into_bytes()),
            "the digest follows the file part"
        );
    }

    #[test]
    fn the_digest_field_is_reserved() {
        let url: Uri = "http://127.0.0.1/upload".parse().unwrap();
        let (headers, mut fields) = (HeaderMap::new(), FormField::default());
        fields.add(BLOCK_CRC32C_FIELD, "00000000");
        let e = SegmentedMultipart
            .open(&target(&url, &headers, &fields, "a", "file"))
            .unwrap_err();
        assert_eq!(e.code(), code::INVALID_OPTION);
        assert!(e.message().contains("X-Block-CRC32C"), "{e}");
    }

    #[tokio::test]
    async fn single_block_has_no_range_and_user_headers_replace_defaults() {
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_static("scanner/2"));
        headers.insert("x-extra", HeaderValue::from_static("1"));
        let request = encode(&headers, &FormField::default(), "a.bin", "file", whole(b""));
        assert!(request.headers().get(CONTENT_RANGE).is_none());
        assert_eq!(request.headers()[USER_AGENT], "scanner/2");
        assert_eq!(request.headers().get_all(USER_AGENT).iter().count(), 1);
        assert_eq!(request.headers()["x-extra"], "1");
        let parts = parse(&request).await;
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].0.as_str(), parts[0].3.len()), ("file", 0));
        assert_eq!(parts[1].3, b"00000000", "the CRC32C of no bytes");
    }

    #[tokio::test]
    async fn control_bytes_in_names_still_parse() {
        // Found by the job_encoding fuzz target: a raw 0x1F in a field name
        // made the whole body unparseable.
        let mut fields = FormField::default();
        fields.add("\u{1f}", "");
        fields.add("a\tb\u{7f}\u{0}", "v");
        let request = encode(&HeaderMap::new(), &fields, "n\u{1b}.txt", "", whole(b""));
        let expected = [
            ("%1F", None),
            ("a\tb%7F%00", None),
            ("", Some("n%1B.txt")),
            (BLOCK_CRC32C_FIELD, None),
        ];
        assert_eq!(
            names(&request).await,
            expected.map(|(n, f)| (n.to_owned(), f.map(str::to_owned)))
        );
    }

    #[tokio::test]
    async fn a_trailing_backslash_cannot_swallow_the_closing_quote() {
        // Found by the job_encoding fuzz target: `name="\"` read as a
        // quoted-pair ran on into the filename parameter.
        let mut fields = FormField::default();
        fields.add("C:\\dir\\", "v");
        let request = encode(&HeaderMap::new(), &fields, "\\", "\\", whole(b"x"));
        let expected = [
            ("C:%5Cdir%5C", None),
            ("%5C", Some("%5C")),
            (BLOCK_CRC32C_FIELD, None),
        ];
        assert_eq!(
            names(&request).await,
            expected.map(|(n, f)| (n.to_owned(), f.map(str::to_owned)))
        );
    }

    #[tokio::test]
    async fn quotes_and_line_breaks_cannot_forge_parts() {
        let mut fields = FormField::default();
        fields.add("a\"\r\n\r\nevil", "v\r\n--not-a-boundary");
        let name = "x\".txt\"\r\nContent-Type: text/html";
        let request = encode(
            &HeaderMap::new(),
            &fields,
            name,
            "Remote\"File",
            whole(b"ok"),
        );
        let parts = parse(&request).await;
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert_eq!(parts[0].0, "a%22%0D%0A%0D%0Aevil");
        assert_eq!(parts[0].3, b"v\r\n--not-a-boundary");
        assert_eq!(parts[1].0, "Remote%22File");
        assert_eq!(
            parts[1].1.as_deref(),
            Some("x%22.txt%22%0D%0AContent-Type: text/html")
        );
        assert_eq!(parts[1].3, b"ok");
    }
}
