//! The one error type of the core, and the reference error codes.

use crate::answer::{FinalAnswer, DEFAULT_ANSWER_LIMIT};
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// The numeric error codes reported to `on_run_failure` and by [`Error::code`].
///
/// Negative codes are client-side, positive ones are transfer codes. The numbers
/// are those of the reference FileUploader, so error handling ports unchanged;
/// the codes marked *added* are this project's, for cases the reference lacks.
pub mod code {
    /// The URL to upload to is invalid, or the uploading service cannot be reached.
    pub const INVALID_URL: i32 = -2;
    /// "Upload cancelled."
    pub const CANCELLED: i32 = -3;
    /// The job has no sources.
    pub const NO_SOURCES: i32 = -4;
    /// Invalid upload job id.
    pub const INVALID_JOB: i32 = -5;
    /// Cannot create an upload job (for example: no async runtime to run it on).
    pub const CANNOT_CREATE_JOB: i32 = -6;
    /// A source is empty (an empty source URL).
    pub const EMPTY_SOURCE: i32 = -7;
    /// Cancel-all while a job is still being created.
    pub const CANCEL_ALL_WHILE_CREATING: i32 = -8;
    /// *Added*: the job is already running; a job runs once at a time.
    pub const ALREADY_RUNNING: i32 = -9;
    /// *Added*: a job setting is invalid (block size, thread count, a header or
    /// header value that cannot be sent).
    pub const INVALID_OPTION: i32 = -10;
    /// URL malformed.
    pub const URL_MALFORMED: i32 = 1;
    /// Cannot resolve proxy.
    pub const PROXY: i32 = 2;
    /// Cannot resolve host.
    pub const DNS: i32 = 3;
    /// Cannot connect.
    pub const CONNECT: i32 = 4;
    /// Access denied (also: a source file that may not be read).
    pub const ACCESS_DENIED: i32 = 5;
    /// Partial file (also: the file the receiver says it landed differs from
    /// the source in length or digest).
    pub const PARTIAL_FILE: i32 = 6;
    /// Upload failed (also: the connection was reset or closed mid-request).
    pub const UPLOAD_FAILED: i32 = 7;
    /// Read failed (also: a source changed size while it was uploaded).
    pub const READ_FAILED: i32 = 8;
    /// Out of memory.
    pub const OUT_OF_MEMORY: i32 = 9;
    /// Server disk full (also: the server answered 507).
    pub const DISK_FULL: i32 = 10;
    /// Timeout.
    pub const TIMEOUT: i32 = 11;
    /// HTTP 404.
    pub const HTTP_404: i32 = 12;
    /// HTTP 500.
    pub const HTTP_500: i32 = 13;
    /// HTTP 503.
    pub const HTTP_503: i32 = 14;
    /// Null pointer.
    pub const NULL_POINTER: i32 = 21;
    /// Invalid id.
    pub const INVALID_ID: i32 = 22;
    /// Failed (anything else).
    pub const FAILED: i32 = 23;
    /// HTTP status above 500 other than 503.
    pub const HTTP_5XX: i32 = 24;
    /// HTTP status below 200.
    pub const HTTP_1XX: i32 = 25;
    /// HTTP 3xx, or 4xx other than 404 (and 413, see [`TOO_LARGE`]).
    pub const HTTP_OTHER: i32 = 26;
    /// Cannot find file.
    pub const FILE_NOT_FOUND: i32 = 27;
    /// Aborted.
    pub const ABORTED: i32 = 28;
    /// Not finished (also: the receiver did not land a file whose every
    /// block it acknowledged).
    pub const NOT_FINISHED: i32 = 29;
    /// Beyond the maximum size (also: the server answered 413).
    pub const TOO_LARGE: i32 = 32;
    /// *Added*: TLS handshake or certificate verification failed.
    pub const TLS: i32 = 35;
    /// *Added*: the receiver acknowledged every block but cannot confirm
    /// that the file landed, and the job requires confirmation
    /// (`Job::require_confirmation`).
    pub const UNCONFIRMED: i32 = 36;
    /// *Added*: the server does not speak the chosen protocol (it answered
    /// a tus or IETF draft request as something else would).
    pub const PROTOCOL_MISMATCH: i32 = 37;
    /// *Added*: the server claimed what the client knows to be false (an
    /// offset past the bytes sent, a length other than the file's): a
    /// server bug or a hostile server, never taken as progress.
    pub const PROTOCOL_VIOLATION: i32 = 38;
    /// *Added*: the receiver's signed receipt for a landed file does not
    /// vouch for the bytes sent (another length, CRC32C or SHA-256), or is
    /// not a receipt: the landing is not taken as proof.
    pub const RECEIPT_MISMATCH: i32 = 39;
}

/// What went wrong, in broad classes. Finer detail is in [`Error::code`] and
/// the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A job setting or its input is invalid; nothing was sent.
    InvalidJob,
    /// A source could not be found, opened or read, or changed while it was sent.
    Source,
    /// The job was cancelled.
    Cancelled,
    /// The server answered with a status that is not a success.
    Status,
    /// The transport failed to deliver a request.
    Transport(TransportErrorKind),
    /// The job could not be started.
    Run,
}

/// An error of the core: an [`ErrorKind`], a reference error [code](code), a
/// message and an optional source.
///
/// `Display` prints the message, which is also the `errorString` given to
/// `on_run_failure`.
#[derive(Clone)]
pub struct Error(Box<Inner>);

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    code: i32,
    message: String,
    status: Option<http::StatusCode>,
    /// How long the server asked to be left alone (`Retry-After`).
    retry_after: Option<std::time::Duration>,
    /// The receiver's answer the error came of, its body cut to
    /// [`DEFAULT_ANSWER_LIMIT`](crate::DEFAULT_ANSWER_LIMIT).
    answer: Option<FinalAnswer>,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl Error {
    /// A new error of `kind` with the reference `code` and a message.
    pub fn new(kind: ErrorKind, code: i32, message: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            code,
            message: message.into(),
            status: None,
            retry_after: None,
            answer: None,
            source: None,
        }))
    }

    /// An invalid-job error ([`code::INVALID_OPTION`] unless another code is given).
    pub(crate) fn invalid(code: i32, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidJob, code, message)
    }

    /// The error reported when a job is cancelled: -3, "Upload cancelled.".
    pub fn cancelled() -> Self {
        Error::new(ErrorKind::Cancelled, code::CANCELLED, "Upload cancelled.")
    }

    /// Appends `more` to the message.
    pub(crate) fn extend_message(mut self, more: &str) -> Self {
        self.0.message.push_str(more);
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.0.source = Some(Arc::new(source));
        self
    }

    /// The error for a non-success HTTP status, by the reference table:
    /// 404 → 12, 500 → 13, 503 → 14, 507 → 10, other 5xx → 24, 1xx → 25,
    /// 413 → 32, 3xx and other 4xx → 26.
    pub fn from_status(status: http::StatusCode, context: &str) -> Self {
        let n = status.as_u16();
        let code = match n {
            404 => code::HTTP_404,
            413 => code::TOO_LARGE,
            507 => code::DISK_FULL,
            500 => code::HTTP_500,
            503 => code::HTTP_503,
            501.. => code::HTTP_5XX,
            ..200 => code::HTTP_1XX,
            _ => code::HTTP_OTHER,
        };
        let mut error = Error::new(
            ErrorKind::Status,
            code,
            format!("server answered {status}{context}"),
        );
        error.0.status = Some(status);
        error
    }

    /// The broad class of the error.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The reference error code (see [`code`]).
    pub fn code(&self) -> i32 {
        self.0.code
    }

    /// The message, as given to `on_run_failure`.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The HTTP status, for errors of kind [`ErrorKind::Status`].
    pub fn status(&self) -> Option<http::StatusCode> {
        self.0.status
    }

    /// How long the server asked to wait before asking again, when its
    /// answer said (`Retry-After`).
    pub(crate) fn retry_after(&self) -> Option<std::time::Duration> {
        self.0.retry_after
    }

    /// The receiver's answer this error came of (its status, headers and
    /// body up to 64 KiB), when it came of one.
    pub fn answer(&self) -> Option<&FinalAnswer> {
        self.0.answer.as_ref()
    }

    /// Whether the same request may succeed if tried again: a retryable
    /// transport failure or status.
    pub(crate) fn is_retryable(&self) -> bool {
        match self.0.kind {
            ErrorKind::Transport(kind) => kind.is_retryable(),
            ErrorKind::Status => self.0.status.is_some_and(crate::retry::is_retryable_status),
            _ => false,
        }
    }
}

/// The error for a response that is not a success: its status by the
/// reference table, with `context`, the redirect target if any, and the
/// start of the body.
pub(crate) fn status_error(response: &http::Response<bytes::Bytes>, context: &str) -> Error {
    let mut context = context.to_owned();
    if let Some(location) = response.headers().get(http::header::LOCATION) {
        context += &format!(
            " (redirect to {})",
            String::from_utf8_lossy(location.as_bytes())
        );
    }
    let body = String::from_utf8_lossy(response.body());
    let body = body.trim();
    let store_said = xml_error(body);
    let html = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"))
        || body.starts_with('<');
    if let Some(said) = store_said {
        // An object store's error document: its code and message.
        context += &format!(": {said}");
    } else if html {
        // Another server's error page (a proxy's, a web server's): its
        // title says what it is; its markup says nothing.
        let hint = html_hint(response.status());
        context += &match html_title(body) {
            Some(title) => format!(": an HTML page titled {title:?} ({hint})"),
            None => format!(": an HTML page ({hint})"),
        };
    } else if !body.is_empty() {
        let short: String = body.chars().take(200).collect();
        context += &format!(": {short}");
    }
    let mut error = Error::from_status(response.status(), &context);
    error.0.retry_after =
        crate::retry::retry_after(response.headers(), std::time::SystemTime::now());
    error.0.answer = Some(FinalAnswer::of(response).bounded(DEFAULT_ANSWER_LIMIT));
    error
}

/// What to do about an HTML error page answering with `status`: a page a
/// proxy or a web server sends, not the receiver.
fn html_hint(status: http::StatusCode) -> &'static str {
    use http::StatusCode as S;
    match status {
        S::PAYLOAD_TOO_LARGE => {
            "a server before the receiver refuses bodies this large: send smaller blocks, or raise its limit (nginx: client_max_body_size)"
        }
        S::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "a server before the receiver refuses headers this large (nginx: large_client_header_buffers)"
        }
        S::BAD_GATEWAY | S::GATEWAY_TIMEOUT => {
            "a proxy could not reach the receiver behind it: is the receiver up?"
        }
        _ => "is the URL the receiver's?",
    }
}

/// What an S3 error document (`<Error><Code>…</Code><Message>…`) says.
fn xml_error(body: &str) -> Option<String> {
    if !body.starts_with("<?xml") {
        return None;
    }
    let element = |name: &str| {
        let start = body.find(&format!("<{name}>"))? + name.len() + 2;
        let end = start + body[start..].find(&format!("</{name}>"))?;
        Some(
            body[start..end]
                .trim()
                .chars()
                .take(200)
                .collect::<String>(),
        )
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (Some(code), None) => Some(code),
        _ => None,
    }
}

/// The text of an HTML page's `<title>`, white space folded.
fn html_title(page: &str) -> Option<String> {
    let lower = page.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let title = page[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!title.is_empty()).then(|| title.chars().take(120).collect())
}

impl From<TransportError> for Error {
    /// Keeps the transport's message and, as the source, the cause it
    /// kept: the transport's own error level says nothing the message does
    /// not, so it is left out of the chain.
    fn from(e: TransportError) -> Self {
        let kind = e.kind();
        let (message, source) = e.into_parts();
        let mut error = Error::new(ErrorKind::Transport(kind), kind.code(), message);
        error.0.source = source.map(Arc::from);
        error
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind)
            .field("code", &self.0.code)
            .field("message", &self.0.message);
        if let Some(source) = &self.0.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Why a transport failed. Each kind maps to a reference error code
/// ([`TransportErrorKind::code`]) and says whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The URL cannot be parsed or has no host (code 1). Not retried.
    InvalidUrl,
    /// The URL's scheme is not one the transport speaks (code -2). Not retried.
    UnsupportedScheme,
    /// The proxy could not be resolved or reached (code 2). Retried.
    Proxy,
    /// The host name could not be resolved (code 3). Retried.
    Dns,
    /// The connection was refused or could not be made (code 4). Retried.
    Connect,
    /// TLS failed: handshake, or a certificate not trusted or not for this
    /// host (code 35). Not retried.
    Tls,
    /// A timeout fired; the message names which one (code 11). Retried.
    Timeout,
    /// The connection was reset or closed before the response (code 7). Retried.
    Reset,
    /// Anything else (code 23). Not retried.
    Other,
}

impl TransportErrorKind {
    /// The reference error code for this kind.
    pub fn code(self) -> i32 {
        match self {
            TransportErrorKind::InvalidUrl => code::URL_MALFORMED,
            TransportErrorKind::UnsupportedScheme => code::INVALID_URL,
            TransportErrorKind::Proxy => code::PROXY,
            TransportErrorKind::Dns => code::DNS,
            TransportErrorKind::Connect => code::CONNECT,
            TransportErrorKind::Tls => code::TLS,
            TransportErrorKind::Timeout => code::TIMEOUT,
            TransportErrorKind::Reset => code::UPLOAD_FAILED,
            TransportErrorKind::Other => code::FAILED,
        }
    }

    /// Whether trying the same request again may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            TransportErrorKind::Proxy
                | TransportErrorKind::Dns
                | TransportErrorKind::Connect
                | TransportErrorKind::Timeout
                | TransportErrorKind::Reset
        )
    }
}

/// A failure to exchange a request: a kind, a message and an optional cause.
///
/// `Display` prints the message, which should say what happened and to which
/// host ("connect to 127.0.0.1:9: connection refused").
pub struct TransportError {
    kind: TransportErrorKind,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl TransportError {
    /// A new error of `kind`.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        TransportError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Why the transport failed.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// The message and the cause.
    pub(crate) fn into_parts(self) -> (String, Option<Box<dyn StdError + Send + Sync>>) {
        (self.message, self.source)
    }
}

impl fmt::Debug for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for TransportError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_from_an_answer_keeps_the_answer() {
        let response = http::Response::builder()
            .status(422)
            .body(bytes::Bytes::from(vec![b'x'; DEFAULT_ANSWER_LIMIT + 5]))
            .unwrap();
        let error = status_error(&response, " to block 1");
        let answer = error.answer().expect("the answer is kept");
        assert_eq!(answer.status.as_u16(), 422);
        assert_eq!(
            (answer.body.len(), answer.cut_from),
            (DEFAULT_ANSWER_LIMIT, Some(DEFAULT_ANSWER_LIMIT + 5))
        );
        assert!(Error::cancelled().answer().is_none());
    }

    #[test]
    fn an_html_error_page_is_told_by_its_title() {
        let page = "<!DOCTYPE html>\n<HTML><head><Title>502 Bad\n   Gateway</title></head><body><h1>nginx</h1></body></html>";
        assert_eq!(html_title(page).as_deref(), Some("502 Bad Gateway"));
        assert_eq!(html_title("<html><body>no title</body></html>"), None);
        let response = http::Response::builder()
            .status(502)
            .header("content-type", "text/html")
            .body(bytes::Bytes::from(page))
            .unwrap();
        let error = status_error(&response, " to the POST");
        assert!(
            error.message().ends_with(
                ": an HTML page titled \"502 Bad Gateway\" (a proxy could not reach the receiver behind it: is the receiver up?)"
            ),
            "{}",
            error.message()
        );
        // A proxy's limit says which, and what to do.
        for (status, title, says) in [
            (413, "413 Request Entity Too Large", "send smaller blocks"),
            (404, "404 Not Found", "is the URL the receiver's?"),
        ] {
            let page = format!("<html><head><title>{title}</title></head></html>");
            let response = http::Response::builder()
                .status(status)
                .header("content-type", "text/html")
                .body(bytes::Bytes::from(page))
                .unwrap();
            let message = status_error(&response, " to block 2").message().to_owned();
            assert!(message.contains(says), "{message}");
        }
    }
    use http::StatusCode;

    #[test]
    fn error_stays_one_pointer_wide() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn statuses_map_to_reference_codes() {
        let cases = [
            (404, code::HTTP_404),
            (500, code::HTTP_500),
            (503, code::HTTP_503),
            (502, code::HTTP_5XX),
            (504, code::HTTP_5XX),
            (599, code::HTTP_5XX),
            (101, code::HTTP_1XX),
            (301, code::HTTP_OTHER),
            (307, code::HTTP_OTHER),
            (400, code::HTTP_OTHER),
            (403, code::HTTP_OTHER),
            (429, code::HTTP_OTHER),
            (413, code::TOO_LARGE),
            (507, code::DISK_FULL),
        ];
        for (status, expected) in cases {
            let e = Error::from_status(StatusCode::from_u16(status).unwrap(), "");
            assert_eq!(e.code(), expected, "status {status}");
            assert_eq!(e.kind(), ErrorKind::Status);
            assert_eq!(e.status().map(|s| s.as_u16()), Some(status));
        }
    }

    #[test]
    fn cancelled_has_reference_message() {
        let e = Error::cancelled();
        assert_eq!(e.code(), -3);
        assert_eq!(e.to_string(), "Upload cancelled.");
    }
}
