//! The resumable-upload draft at interop version 9 (draft -12), one
//! scenario per requirement its upload sections place on a server, each
//! sent request by request through the transport under test to the
//! caller's receiver. Each scenario names the section and what it checks;
//! where the text says MUST the scenario fails on the first deviation.
//!
//! A server that announces no limits still sends `Upload-Limit`
//! (`min-size=0`), so every check of the field holds for any server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fileuploader_core::{
    BlockData, Error, InterimAnswers, Request, Response, Source, Transport, UploadBody,
};
use fileuploader_wire::draft::{UploadLimit, UPLOAD_LIMIT};
use http::{HeaderValue, Method, StatusCode};
use tokio::sync::Notify;

use crate::conformance::TransportFactory;
use crate::protocols::{land, ReceiverFactory, Sent, Served};

/// The interop version these scenarios speak.
const VERSION: &str = "9";

/// A receiver and a transport to talk to it in the draft's terms.
struct Draft {
    transport: Arc<dyn Transport>,
    served: Served,
}

impl Draft {
    async fn new(transport: TransportFactory, receiver: ReceiverFactory) -> Self {
        Draft {
            transport: transport(),
            served: receiver().await,
        }
    }

    /// `method` at `url` with `headers` (and the interop version), `body`
    /// its content.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: UploadBody,
    ) -> Response {
        let request = self.request(method, url, headers, body);
        self.transport
            .send(request)
            .await
            .unwrap_or_else(|e| panic!("{url}: the request failed: {e}"))
    }

    fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: UploadBody,
    ) -> Request {
        let len = HeaderValue::from(body.len());
        let mut request = http::Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = url.parse().expect("a URL");
        let fields = request.headers_mut();
        fields.insert(
            "upload-draft-interop-version",
            HeaderValue::from_static(VERSION),
        );
        fields.insert("content-length", len);
        for (name, value) in headers {
            fields.insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        request
    }

    /// Creates an upload of `length` bytes carrying `content`, not
    /// completing it: the creation's answer, and the upload's URL.
    async fn create(&self, length: u64, content: &'static [u8]) -> (Response, String) {
        let created = self
            .send(
                Method::POST,
                &self.served.url,
                &[
                    ("upload-complete", "?0".into()),
                    ("upload-length", length.to_string()),
                    ("content-type", "application/octet-stream".into()),
                    (
                        "content-disposition",
                        format!("inline; filename=\"draft-{}.bin\"", unique()),
                    ),
                ],
                body(content),
            )
            .await;
        assert!(
            created.status().is_success(),
            "creation with Upload-Complete: ?0 was answered {}",
            created.status()
        );
        let location = header(&created, "location")
            .unwrap_or_else(|| panic!("a creation whose content was processed names no Location"));
        let url = self.resolve(&location);
        (created, url)
    }

    /// Appends `body` at `offset` to the upload at `url`, with `more`
    /// headers.
    async fn append(
        &self,
        url: &str,
        offset: u64,
        complete: bool,
        body: UploadBody,
        more: &[(&str, String)],
    ) -> Response {
        let request = self.append_request(url, offset, complete, body, more);
        self.transport
            .send(request)
            .await
            .unwrap_or_else(|e| panic!("{url}: the request failed: {e}"))
    }

    /// The request that appends `body` at `offset` to the upload at `url`.
    fn append_request(
        &self,
        url: &str,
        offset: u64,
        complete: bool,
        body: UploadBody,
        more: &[(&str, String)],
    ) -> Request {
        let mut headers = vec![
            ("upload-offset", offset.to_string()),
            (
                "upload-complete",
                (if complete { "?1" } else { "?0" }).into(),
            ),
            ("content-type", "application/partial-upload".into()),
        ];
        headers.extend(more.iter().cloned());
        self.request(Method::PATCH, url, &headers, body)
    }

    /// Retrieves the upload's offset with `method` (`HEAD` or `GET`).
    async fn offset(&self, method: Method, url: &str) -> Response {
        self.send(method, url, &[], UploadBody::new()).await
    }

    /// A `Location` as a URL: absolute, or a path on the receiver's origin.
    fn resolve(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            return location.to_owned();
        }
        let url = &self.served.url;
        let origin_end = url[8..].find('/').map_or(url.len(), |i| i + 8);
        format!("{}{location}", &url[..origin_end])
    }
}

/// A number no other scenario's file has.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn body(content: &'static [u8]) -> UploadBody {
    let mut body = UploadBody::new();
    body.push_data(Bytes::from_static(content));
    body
}

fn header(response: &Response, name: &str) -> Option<String> {
    Some(response.headers().get(name)?.to_str().ok()?.to_owned())
}

/// `Upload-Limit`, which must be there and parse as the draft's
/// dictionary.
fn limits(response: &Response, what: &str) -> UploadLimit {
    let value = header(response, UPLOAD_LIMIT).unwrap_or_else(|| {
        panic!("{what}: no Upload-Limit (a server without limits says min-size=0)")
    });
    UploadLimit::parse(&value)
        .unwrap_or_else(|| panic!("{what}: Upload-Limit {value:?} is not the draft's dictionary"))
}

fn offset_of(response: &Response, what: &str) -> u64 {
    header(response, "upload-offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no Upload-Offset"))
}

/// Upload Limit: an `OPTIONS` without `Upload-Complete` at a resource that
/// creates uploads MUST include `Upload-Limit`.
pub(crate) async fn draft9_options_announces_limits(t: TransportFactory, r: ReceiverFactory) {
    let draft = Draft::new(t, r).await;
    let options = draft
        .send(Method::OPTIONS, &draft.served.url, &[], UploadBody::new())
        .await;
    assert!(
        options.status().is_success(),
        "OPTIONS was answered {}",
        options.status()
    );
    limits(&options, "OPTIONS");
}

/// Upload Creation: a creation with `Upload-Complete: ?0` whose content
/// was processed MUST be answered with `Location` and `Upload-Limit`, and
/// the server MUST record the length `Upload-Length` gave (offset
/// retrieval tells it back).
pub(crate) async fn draft9_creation_names_the_upload_and_records_its_length(
    t: TransportFactory,
    r: ReceiverFactory,
) {
    let draft = Draft::new(t, r).await;
    let (created, url) = draft.create(6, b"abc").await;
    limits(&created, "the creation's answer");
    let head = draft.offset(Method::HEAD, &url).await;
    assert_eq!(header(&head, "upload-length").as_deref(), Some("6"));
}

/// Offset Retrieval: a successful `HEAD` or `GET` MUST carry the offset,
/// `Upload-Complete`, the length the client gave and `Upload-Limit` (and
/// SHOULD say `Cache-Control: no-store`, checked too); the offset told
/// MUST be accepted by the next append (Concurrency).
pub(crate) async fn draft9_offset_retrieval_by_head_and_get(
    t: TransportFactory,
    r: ReceiverFactory,
) {
    let draft = Draft::new(t, r).await;
    let (_, url) = draft.create(6, b"abc").await;
    for method in [Method::HEAD, Method::GET] {
        let what = format!("{method} of the upload");
        let asked = draft.offset(method, &url).await;
        assert!(asked.status().is_success(), "{what}: {}", asked.status());
        assert_eq!(offset_of(&asked, &what), 3, "{what}");
        assert_eq!(
            header(&asked, "upload-complete").as_deref(),
            Some("?0"),
            "{what}"
        );
        assert_eq!(
            header(&asked, "upload-length").as_deref(),
            Some("6"),
            "{what}"
        );
        limits(&asked, &what);
        assert!(
            header(&asked, "cache-control").is_some_and(|v| v.contains("no-store")),
            "{what}: no Cache-Control: no-store"
        );
    }
    let told = offset_of(&draft.offset(Method::HEAD, &url).await, "HEAD");
    let appended = draft.append(&url, told, false, body(b"d"), &[]).await;
    assert!(
        appended.status().is_success(),
        "an append at the offset HEAD told was answered {}",
        appended.status()
    );
}

/// Upload Append: an `Upload-Offset` that is not the upload's MUST be
/// refused with 409, `Upload-Complete: ?0` and the right offset, and the
/// upload keeps none of it.
pub(crate) async fn draft9_a_mismatching_offset_is_a_409_with_the_offset(
    t: TransportFactory,
    r: ReceiverFactory,
) {
    let draft = Draft::new(t, r).await;
    let (_, url) = draft.create(6, b"abc").await;
    let wrong = draft.append(&url, 5, false, body(b"f"), &[]).await;
    assert_eq!(wrong.status(), StatusCode::CONFLICT);
    assert_eq!(header(&wrong, "upload-complete").as_deref(), Some("?0"));
    assert_eq!(offset_of(&wrong, "the 409"), 3);
    let head = draft.offset(Method::HEAD, &url).await;
    assert_eq!(
        offset_of(&head, "HEAD after the 409"),
        3,
        "the upload moved"
    );
}

/// Upload Length: indicated lengths MUST match, within a request and
/// across requests; a request whose lengths disagree is refused (4xx) and
/// changes nothing.
pub(crate) async fn draft9_inconsistent_lengths_are_refused(
    t: TransportFactory,
    r: ReceiverFactory,
) {
    let draft = Draft::new(t, r).await;
    let within = draft
        .send(
            Method::POST,
            &draft.served.url,
            &[
                ("upload-complete", "?1".into()),
                ("upload-length", "6".into()),
            ],
            body(b"abc"),
        )
        .await;
    assert!(
        within.status().is_client_error(),
        "a creation of 3 bytes saying it completes an upload of 6 was answered {}",
        within.status()
    );
    let (_, url) = draft.create(6, b"abc").await;
    let across = draft
        .append(&url, 3, false, body(b"d"), &[("upload-length", "7".into())])
        .await;
    assert!(
        across.status().is_client_error(),
        "an append saying the upload has 7 bytes, created with 6, was answered {}",
        across.status()
    );
    let head = draft.offset(Method::HEAD, &url).await;
    assert_eq!(
        offset_of(&head, "HEAD"),
        3,
        "a refused request moved the upload"
    );
}

/// Upload Append: with the length known, the server MUST NOT let the
/// offset pass it, however the request is framed.
pub(crate) async fn draft9_the_offset_never_passes_the_length(
    t: TransportFactory,
    r: ReceiverFactory,
) {
    let draft = Draft::new(t, r).await;
    let (_, url) = draft.create(4, b"ab").await;
    let past = draft.append(&url, 2, true, body(b"cdef"), &[]).await;
    assert!(
        past.status().is_client_error(),
        "4 bytes at offset 2 of an upload of 4 were answered {}",
        past.status()
    );
    let head = draft.offset(Method::HEAD, &url).await;
    if head.status().is_success() {
        assert!(
            offset_of(&head, "HEAD") <= 4,
            "the offset passed the length"
        );
    }
}

/// Upload Append: a request with `Upload-Complete: ?1` whose content was
/// processed completes the upload, and its answer MUST say
/// `Upload-Complete: ?1`; a later offset retrieval says so too.
pub(crate) async fn draft9_the_completing_append_says_complete(
    t: TransportFactory,
    r: ReceiverFactory,
) {
    let draft = Draft::new(t, r).await;
    let (_, url) = draft.create(6, b"abc").await;
    let last = draft.append(&url, 3, true, body(b"def"), &[]).await;
    assert!(
        last.status().is_success(),
        "the last append: {}",
        last.status()
    );
    assert_eq!(header(&last, "upload-complete").as_deref(), Some("?1"));
    let head = draft.offset(Method::HEAD, &url).await;
    if head.status().is_success() {
        assert_eq!(header(&head, "upload-complete").as_deref(), Some("?1"));
        assert_eq!(offset_of(&head, "HEAD"), 6);
    }
}

/// A source whose bytes past `good` cannot be read (`fail`), or do not
/// come until `release` is notified.
#[derive(Debug)]
struct Halting {
    len: u64,
    good: u64,
    fail: bool,
    release: Arc<Notify>,
}

#[async_trait::async_trait]
impl Source for Halting {
    fn len(&self) -> u64 {
        self.len
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, Error> {
        if offset + len as u64 > self.good {
            if self.fail {
                return Err(Error::new(
                    fileuploader_core::ErrorKind::Source,
                    fileuploader_core::code::READ_FAILED,
                    "the scenario cuts the body here",
                ));
            }
            self.release.notified().await;
        }
        Ok(Bytes::from(pattern(offset, len)))
    }
}

fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| (i % 251) as u8)
        .collect()
}

/// The first `len` bytes of a [`Halting`] source, as a body.
async fn halting_body(source: Halting) -> UploadBody {
    let len = source.len;
    let source: Arc<dyn Source> = Arc::new(source);
    let mut body = UploadBody::new();
    body.push_block(
        BlockData::read(&source, 0, len)
            .await
            .expect("a body read piece by piece"),
    );
    body
}

const PIECE: u64 = fileuploader_core::READ_PIECE as u64;

/// Upload Append: content cut short (here the body breaks off after its
/// first piece) leaves the upload MUST-not-complete; what arrived is kept
/// (SHOULD), so the client resumes at the offset told, and the file ends
/// whole.
pub(crate) async fn draft9_an_interrupted_append_is_not_complete(
    t: TransportFactory,
    r: ReceiverFactory,
) {
    let draft = Draft::new(t, r).await;
    let total = 4 * PIECE;
    let (created, url) = draft.create(total, b"").await;
    assert_eq!(offset_of(&created, "the creation"), 0);
    let cut = halting_body(Halting {
        len: total,
        good: PIECE,
        fail: true,
        release: Arc::default(),
    })
    .await;
    let request = draft.append_request(&url, 0, true, cut, &[]);
    let _ = draft.transport.send(request).await;
    let head = draft.offset(Method::HEAD, &url).await;
    assert!(head.status().is_success(), "HEAD: {}", head.status());
    assert_eq!(
        header(&head, "upload-complete").as_deref(),
        Some("?0"),
        "an upload whose completing append broke off counts complete"
    );
    let held = offset_of(&head, "HEAD");
    assert!(held <= PIECE, "it holds {held} bytes, of {PIECE} sent");
    let mut rest = UploadBody::new();
    rest.push_data(Bytes::from(pattern(held, (total - held) as usize)));
    let last = draft.append(&url, held, true, rest, &[]).await;
    assert!(
        last.status().is_success(),
        "the resumed append at {held}: {} {}",
        last.status(),
        String::from_utf8_lossy(last.body())
    );
    let name = landed_name(&draft, total);
    let landed = std::fs::read(draft.served.dir.join(&name)).expect("the landed file");
    assert_eq!(
        landed,
        pattern(0, total as usize),
        "the landed file differs"
    );
}

/// The only file of `total` bytes in the receiver's directory.
fn landed_name(draft: &Draft, total: u64) -> String {
    std::fs::read_dir(&draft.served.dir)
        .expect("the receiver's directory")
        .filter_map(Result::ok)
        .filter(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() == total))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a landed file of the upload's length")
}

/// Concurrency: while an append hangs mid-body (its connection alive), an
/// offset retrieval MUST NOT tell an outdated offset, and the offset it
/// tells MUST be accepted by the next append; the file lands whole.
pub(crate) async fn draft9_an_offset_told_during_a_hung_append_is_accepted(
    t: TransportFactory,
    r: ReceiverFactory,
) {
    let draft = Arc::new(Draft::new(t, r).await);
    let total = 4 * PIECE;
    let (_, url) = draft.create(total, b"").await;
    let release = Arc::new(Notify::new());
    let hung = halting_body(Halting {
        len: total,
        good: PIECE,
        fail: false,
        release: release.clone(),
    })
    .await;
    let request = draft.append_request(&url, 0, true, hung, &[]);
    let sender = draft.clone();
    let first = tokio::spawn(async move { sender.transport.send(request).await });
    // The first piece on its way; whatever of it arrived, the offset told
    // next must be one an append is taken at.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let head = draft.offset(Method::HEAD, &url).await;
    assert!(head.status().is_success(), "HEAD: {}", head.status());
    let held = offset_of(&head, "HEAD during the hung append");
    let mut rest = UploadBody::new();
    rest.push_data(Bytes::from(pattern(held, (total - held) as usize)));
    let last = draft.append(&url, held, true, rest, &[]).await;
    assert!(
        last.status().is_success(),
        "an append at the offset told during a hung one was answered {}",
        last.status()
    );
    first.abort();
    release.notify_waiters();
    let name = landed_name(&draft, total);
    let landed = std::fs::read(draft.served.dir.join(&name)).expect("the landed file");
    assert_eq!(
        landed,
        pattern(0, total as usize),
        "the landed file differs"
    );
}

/// 104 (Upload Resumption Supported): a server MUST NOT send it to a
/// request of another interop version (or none), and one it sends MUST
/// carry `Location`, `Upload-Limit` and the request's interop version. A
/// transport that passes interim answers over shows none; the MUST NOTs
/// hold for it all the same.
pub(crate) async fn draft9_104_only_in_the_requests_version(
    t: TransportFactory,
    r: ReceiverFactory,
) {
    let draft = Draft::new(t, r).await;
    for version in [VERSION, "8"] {
        let interim = InterimAnswers::default();
        let mut request = draft.request(
            Method::POST,
            &draft.served.url,
            &[
                ("upload-complete", "?1".into()),
                ("upload-draft-interop-version", version.into()),
                (
                    "content-disposition",
                    format!("inline; filename=\"draft-{}.bin\"", unique()),
                ),
            ],
            body(b"abcdef"),
        );
        request.extensions_mut().insert(interim.clone());
        let answer = draft.transport.send(request).await.expect("an answer");
        assert!(answer.status().is_success(), "{}", answer.status());
        for (status, headers) in interim.recorded() {
            if status.as_u16() != 104 {
                continue;
            }
            let of = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            assert_eq!(
                of("upload-draft-interop-version"),
                Some(version),
                "a 104 to a request of interop version {version}"
            );
            assert!(of("location").is_some(), "a 104 without Location");
            assert!(of(UPLOAD_LIMIT).is_some(), "a 104 without Upload-Limit");
        }
    }
}

/// Upload Cancellation: after a `DELETE` the upload is deactivated (a
/// SHOULD): it is no longer found, and nothing lands.
pub(crate) async fn draft9_a_cancelled_upload_is_gone(t: TransportFactory, r: ReceiverFactory) {
    let draft = Draft::new(t, r).await;
    let (_, url) = draft.create(6, b"abc").await;
    let deleted = draft
        .send(Method::DELETE, &url, &[], UploadBody::new())
        .await;
    assert!(
        deleted.status().is_success(),
        "DELETE: {}",
        deleted.status()
    );
    let head = draft.offset(Method::HEAD, &url).await;
    assert!(
        head.status().is_client_error(),
        "HEAD after DELETE: {}",
        head.status()
    );
    let after = draft.append(&url, 3, true, body(b"def"), &[]).await;
    assert!(
        after.status().is_client_error(),
        "an append after DELETE: {}",
        after.status()
    );
}

/// What a [`Watching`] transport saw of the client's requests.
#[derive(Debug, Default)]
struct Seen {
    /// Creations and appends under way.
    transfers: usize,
    /// Every request: method, headers, and how many transfers were under
    /// way when it left.
    requests: Vec<(Method, http::HeaderMap, usize)>,
}

/// The transport under test, watched: each request is kept with how many
/// transfers (creations and appends) were under way as it left.
#[derive(Debug)]
struct Watching {
    inner: Arc<dyn Transport>,
    seen: Arc<std::sync::Mutex<Seen>>,
}

#[async_trait::async_trait]
impl Transport for Watching {
    async fn send(&self, request: Request) -> Result<Response, fileuploader_core::TransportError> {
        let transfer = matches!(*request.method(), Method::POST | Method::PATCH);
        {
            let mut seen = self.seen.lock().expect("the watch");
            let under_way = seen.transfers;
            seen.requests.push((
                request.method().clone(),
                request.headers().clone(),
                under_way,
            ));
            if transfer {
                seen.transfers += 1;
            }
        }
        let answer = self.inner.send(request).await;
        if transfer {
            self.seen.lock().expect("the watch").transfers -= 1;
        }
        answer
    }
}

/// The client's side, through our client and the transport under test:
/// every request MUST carry the interop version; every creation and
/// append MUST carry `Upload-Complete`, every append `Upload-Offset`; the
/// client MUST NOT transfer to one upload in parallel, nor retrieve the
/// offset while a transfer is under way. Files of several sizes, three
/// blocks in flight asked for, each landing whole.
pub(crate) async fn draft9_our_client_keeps_the_clients_musts(
    t: TransportFactory,
    r: ReceiverFactory,
) {
    let served = r().await;
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let manager = fileuploader_core::UploadManager::new(Watching {
        inner: t(),
        seen: seen.clone(),
    });
    for len in [0, 1, 3 * PIECE + 5] {
        let name = format!("client-{len}.bin");
        let data = pattern(0, len as usize);
        let sent = Sent {
            protocol: Arc::new(fileuploader_core::protocol::IetfDraft::new(9)),
            block: PIECE,
            threads: 3,
        };
        if let Err(e) = land(&manager, &served, &sent, &name, &data).await {
            panic!("{len} bytes: {e}");
        }
    }
    let seen = seen.lock().expect("the watch");
    assert!(seen.requests.len() >= 5, "{} requests", seen.requests.len());
    for (method, headers, under_way) in &seen.requests {
        let of = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(
            of("upload-draft-interop-version"),
            Some(VERSION),
            "{method}"
        );
        match *method {
            Method::POST | Method::PATCH => {
                assert!(
                    of("upload-complete").is_some(),
                    "{method} without Upload-Complete"
                );
                assert_eq!(
                    *under_way, 0,
                    "{method} while another transfer was under way"
                );
            }
            Method::HEAD | Method::GET => {
                assert_eq!(*under_way, 0, "{method} while a transfer was under way");
            }
            _ => {}
        }
        if *method == Method::PATCH {
            assert!(of("upload-offset").is_some(), "PATCH without Upload-Offset");
            assert_eq!(of("content-type"), Some("application/partial-upload"));
        }
    }
}
