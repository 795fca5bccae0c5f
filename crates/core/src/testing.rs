//! A transport that keeps requests in memory and answers as scripted, for
//! deterministic tests of the core and of code built on it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};

use crate::source::lock;
use crate::transport::{Request, Response, Transport, TransportError, TransportErrorKind};

/// A request as [`MemoryTransport`] saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The method.
    pub method: Method,
    /// The target URL.
    pub uri: Uri,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// When the transport received it.
    pub at: Instant,
    /// How many requests were in flight, this one included, when it arrived.
    pub in_flight: usize,
}

impl RecordedRequest {
    /// The `Content-Range` header, if any.
    pub fn content_range(&self) -> Option<&str> {
        self.headers
            .get(http::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
    }
}

/// What [`MemoryTransport`] does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this status (and body) after the transport's delay.
    Status(StatusCode, &'static str),
    /// Answer with this status and a `Retry-After` header of this value.
    RetryAfter(StatusCode, &'static str),
    /// Fail with a transport error of this kind.
    Fail(TransportErrorKind),
    /// Never answer; only dropping the request ends it.
    Hang,
}

type Script = dyn Fn(&RecordedRequest, usize) -> Reply + Send + Sync;

/// A [`Transport`] that records every block request and answers it by
/// script; 200 to everything unless told otherwise. Clones share the record.
///
/// It stands for a receiver that cannot answer status queries: a request
/// other than a `POST` (a status query or a discard) gets 404 at once, is
/// not given to the script, and is recorded in [`queries`](Self::queries)
/// only.
#[derive(Clone)]
pub struct MemoryTransport {
    inner: Arc<Shared>,
}

struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    queries: Mutex<Vec<(Method, Uri)>>,
    attempts: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    delay: Duration,
    /// How many requests are worked on at once, if that is bounded.
    capacity: Option<tokio::sync::Semaphore>,
    version: http::Version,
    script: Box<Script>,
}

impl fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("requests", &lock(&self.inner.requests).len())
            .field("delay", &self.inner.delay)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTransport {
    /// A transport answering 200 at once to every request.
    pub fn new() -> Self {
        Self::scripted(Duration::ZERO, |_, _| Reply::Status(StatusCode::OK, ""))
    }

    /// A transport that waits `delay` before each answer, and answers what
    /// `script` says given the request and its attempt number (1 for the first
    /// request with that `Content-Range`, 2 for the next, …).
    pub fn scripted(
        delay: Duration,
        script: impl Fn(&RecordedRequest, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::build(delay, None, Box::new(script))
    }

    fn build(
        delay: Duration,
        capacity: Option<tokio::sync::Semaphore>,
        script: Box<Script>,
    ) -> Self {
        MemoryTransport {
            inner: Arc::new(Shared {
                requests: Mutex::default(),
                queries: Mutex::default(),
                attempts: Mutex::default(),
                in_flight: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                delay,
                capacity,
                version: http::Version::HTTP_11,
                script,
            }),
        }
    }

    /// A transport that answers 200 to every request after `delay`, but
    /// works on at most `capacity` at once: the others wait their turn, as
    /// at a receiver or on a link that more requests no longer speed up.
    pub fn saturating(delay: Duration, capacity: usize) -> Self {
        let capacity = tokio::sync::Semaphore::new(capacity.max(1));
        Self::build(
            delay,
            Some(capacity),
            Box::new(|_, _| Reply::Status(StatusCode::OK, "")),
        )
    }

    /// Every block request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests).clone()
    }

    /// The method and URL of every other request (status queries and
    /// discards), in order of arrival.
    pub fn queries(&self) -> Vec<(Method, Uri)> {
        lock(&self.inner.queries).clone()
    }

    /// The most requests that were in flight at once.
    pub fn peak_in_flight(&self) -> usize {
        self.inner.peak.load(Ordering::SeqCst)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }
}

fn response(status: StatusCode, body: &'static str, version: http::Version) -> Response {
    let mut response = Response::new(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = status;
    *response.version_mut() = version;
    response
}

struct Flight<'a>(&'a AtomicUsize);

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        let s = &self.inner;
        if request.method() != Method::POST {
            let query = (request.method().clone(), request.uri().clone());
            lock(&s.queries).push(query);
            return Ok(response(StatusCode::NOT_FOUND, "", s.version));
        }
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _flight = Flight(&s.in_flight);
        s.peak.fetch_max(now, Ordering::SeqCst);
        let (parts, body) = request.into_parts();
        let body = body
            .into_bytes()
            .await
            .map_err(|e| TransportError::new(TransportErrorKind::Other, e.to_string()))?;
        let recorded = RecordedRequest {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
            at: Instant::now(),
            in_flight: now,
        };
        let key = format!(
            "{}|{}",
            recorded.content_range().unwrap_or(""),
            recorded
                .headers
                .get(crate::UPLOAD_ID_HEADER)
                .map_or("", |v| v.to_str().unwrap_or(""))
        );
        let attempt = {
            let mut attempts = lock(&s.attempts);
            let n = attempts.entry(key).or_default();
            *n += 1;
            *n
        };
        let reply = (s.script)(&recorded, attempt);
        lock(&s.requests).push(recorded);
        let _turn = match &s.capacity {
            Some(capacity) => Some(
                capacity
                    .acquire()
                    .await
                    .map_err(|e| TransportError::new(TransportErrorKind::Other, e.to_string()))?,
            ),
            None => None,
        };
        if !s.delay.is_zero() {
            tokio::time::sleep(s.delay).await;
        }
        match reply {
            Reply::Status(status, body) => Ok(response(status, body, s.version)),
            Reply::RetryAfter(status, after) => {
                let mut response = response(status, "", s.version);
                response.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static(after),
                );
                Ok(response)
            }
            Reply::Fail(kind) => Err(TransportError::new(kind, format!("scripted {kind:?}"))),
            Reply::Hang => std::future::pending().await,
        }
    }
}

/// Everything a job's three events reported, in order: percentages as
/// `"0"`, `"50"`, …, then `"success"` or `"failure CODE MESSAGE"`.
#[derive(Debug, Clone, Default)]
pub struct EventLog(Arc<Mutex<Vec<String>>>);

impl EventLog {
    /// Sets all three events of `job` to write into this log.
    pub fn attach(&self, job: &mut crate::Job) {
        let (a, b, c) = (self.clone(), self.clone(), self.clone());
        job.on_upload_transfer_percentage(move |_, p| a.push(p.to_string()));
        job.on_run_success(move |_| b.push("success".into()));
        job.on_run_failure(move |_, code, msg| c.push(format!("failure {code} {msg}")));
    }

    /// Appends an entry.
    pub fn push(&self, entry: String) {
        lock(&self.0).push(entry);
    }

    /// Every entry, in order.
    pub fn all(&self) -> Vec<String> {
        lock(&self.0).clone()
    }

    /// The percentages reported, in order.
    pub fn percents(&self) -> Vec<u8> {
        self.all().iter().filter_map(|s| s.parse().ok()).collect()
    }

    /// The terminal events (success or failure) reported, in order.
    pub fn terminals(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|s| s.parse::<u8>().is_err())
            .collect()
    }
}

/// A source of `len` generated bytes (byte `i` is `i % 251`) that counts how
/// many bytes of the blocks it handed out are still alive, to check that a
/// job's memory stays within `thread_num × block_size`.
#[derive(Debug, Clone)]
pub struct CountedSource {
    len: u64,
    live: Arc<std::sync::atomic::AtomicI64>,
    peak: Arc<std::sync::atomic::AtomicI64>,
    reads: Arc<AtomicUsize>,
}

impl CountedSource {
    /// A source of `len` bytes.
    pub fn new(len: u64) -> Self {
        CountedSource {
            len,
            live: Arc::default(),
            peak: Arc::default(),
            reads: Arc::default(),
        }
    }

    /// The byte at `offset`.
    pub fn byte_at(offset: u64) -> u8 {
        (offset % 251) as u8
    }

    /// Bytes of blocks alive now.
    pub fn live(&self) -> i64 {
        self.live.load(Ordering::SeqCst)
    }

    /// The most bytes of blocks alive at once.
    pub fn peak(&self) -> i64 {
        self.peak.load(Ordering::SeqCst)
    }

    /// How many reads were made.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

/// A block buffer that tells its source when it is freed.
struct Counted {
    data: Vec<u8>,
    live: Arc<std::sync::atomic::AtomicI64>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live
            .fetch_sub(self.data.len() as i64, Ordering::SeqCst);
    }
}

#[async_trait]
impl crate::Source for CountedSource {
    fn len(&self) -> u64 {
        self.len
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, crate::Error> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let now = self.live.fetch_add(len as i64, Ordering::SeqCst) + len as i64;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let data = (offset..offset + len as u64).map(Self::byte_at).collect();
        Ok(Bytes::from_owner(Counted {
            data,
            live: self.live.clone(),
        }))
    }
}
