//! A listener for the faults wiremock cannot express: closing the
//! connection after some body bytes, stalling mid-body, and resetting. It
//! serves HTTP/1.1 and HTTP/2 (by prior knowledge) alike, on hyper.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fileuploader_wire::sync::lock;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::faults::Action;
use crate::record::Recorder;
use crate::recording::Recording;

/// A fault injected into the bytes of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFault {
    /// Read this many body bytes, then close the connection without answering.
    CloseAfter(usize),
    /// Read this many body bytes, then neither read nor answer (for an hour).
    StallAfter(usize),
    /// Reset the connection (RST) as soon as the request head arrived.
    Reset,
}

/// A raw fault that fired: on which request (counted from 1) and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FiredRawFault {
    /// The request's number, from 1, in order of arrival of request heads.
    pub request: usize,
    /// The fault.
    pub fault: RawFault,
}

/// An upload endpoint on 127.0.0.1 that injects [`RawFault`]s into chosen
/// block requests (`POST`s, counted from 1 in order of arrival) and
/// otherwise records and answers 200, like
/// [`MockUploadServer`](crate::MockUploadServer). Other requests (status
/// queries) get 404: it cannot say what it holds. It speaks HTTP/1.1 and
/// HTTP/2 by prior knowledge.
#[derive(Debug)]
pub struct RawFaultServer {
    addr: SocketAddr,
    recording: Recording,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawFaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Shared {
    script: HashMap<usize, RawFault>,
    count: AtomicUsize,
    recorder: Recorder,
    fired: Mutex<Vec<FiredRawFault>>,
    /// Stalled requests whose client went away.
    abandoned: AtomicUsize,
    /// The HTTP version of each block request.
    versions: Mutex<Vec<http::Version>>,
}

/// A connection's kill switch: pulled, the connection is dropped at once.
type Kill = Arc<Notify>;

impl RawFaultServer {
    /// Starts the listener; `script` maps block request numbers to faults.
    ///
    /// # Panics
    ///
    /// If no port on 127.0.0.1 can be bound.
    pub async fn start(script: impl IntoIterator<Item = (usize, RawFault)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("a bound address");
        let recorder = Recorder::default();
        let shared = Arc::new(Shared {
            script: script.into_iter().collect(),
            count: AtomicUsize::new(0),
            recorder: recorder.clone(),
            fired: Mutex::default(),
            abandoned: AtomicUsize::new(0),
            versions: Mutex::default(),
        });
        let accepting = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // Dropped connections are reset, not closed gracefully.
                let _ = stream.set_zero_linger();
                let (shared, kill) = (accepting.clone(), Kill::default());
                tokio::spawn(async move {
                    let pulled = kill.clone();
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, shared.clone(), kill.clone())
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let serving = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = serving => {}
                        () = pulled.notified() => {}
                    }
                });
            }
        });
        RawFaultServer {
            addr,
            recording: Recording(recorder),
            shared,
            task,
        }
    }

    /// The URL to upload to.
    pub fn url(&self) -> String {
        format!("http://{}/upload", self.addr)
    }

    /// What arrived whole.
    pub fn recording(&self) -> &Recording {
        &self.recording
    }

    /// The faults that fired, in order.
    pub fn fired(&self) -> Vec<FiredRawFault> {
        lock(&self.shared.fired).clone()
    }

    /// The HTTP version of each block request, in order of arrival.
    pub fn versions(&self) -> Vec<http::Version> {
        lock(&self.shared.versions).clone()
    }

    /// How many stalled requests their client abandoned: the request was
    /// aborted (its connection closed, or its HTTP/2 stream reset) while the
    /// server held it.
    pub fn abandoned(&self) -> usize {
        self.shared.abandoned.load(Ordering::SeqCst)
    }
}

/// How long a stalled request's body is left unread.
const STALL_BEFORE_DRAINING: Duration = Duration::from_millis(300);

/// Counts a stalled request as abandoned when it is dropped; only the
/// client's going away (or the server's) drops one.
struct Abandoned(Arc<Shared>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        self.0.abandoned.fetch_add(1, Ordering::SeqCst);
    }
}

fn answer(status: u16, extra: Option<(&'static str, String)>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Some((name, value)) = extra {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    kill: Kill,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != http::Method::POST {
        // A status query: this server cannot say what it holds.
        return Ok(answer(404, None));
    }
    let n = shared.count.fetch_add(1, Ordering::SeqCst) + 1;
    lock(&shared.versions).push(req.version());
    let (parts, mut body) = req.into_parts();
    let fault = shared.script.get(&n).copied();
    if let Some(fault) = fault {
        lock(&shared.fired).push(FiredRawFault { request: n, fault });
    }
    let upto = match fault {
        Some(RawFault::Reset) => 0,
        Some(RawFault::CloseAfter(k) | RawFault::StallAfter(k)) => k,
        None => usize::MAX,
    };
    let mut data = BytesMut::new();
    let mut broken = false;
    while data.len() < upto {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(chunk) = frame.into_data() {
                    data.extend_from_slice(&chunk);
                }
            }
            Some(Err(_)) => {
                broken = true;
                break;
            }
        }
    }
    match fault {
        Some(RawFault::Reset | RawFault::CloseAfter(_)) => {
            kill.notify_one();
            return Ok(std::future::pending().await);
        }
        Some(RawFault::StallAfter(_)) => {
            // Hold without reading for a while, then take the rest but never
            // answer, until the client gives up on the request: hyper then
            // drops this future, or the body breaks off.
            let _abandoned = Abandoned(shared.clone());
            tokio::time::sleep(STALL_BEFORE_DRAINING).await;
            while let Some(Ok(_)) = body.frame().await {}
            return Ok(std::future::pending().await);
        }
        None if broken => return Ok(answer(400, None)),
        None => {}
    }
    let (action, _, _) = shared.recorder.record(parts.headers, data.freeze());
    Ok(match action {
        Action::Status(s) => answer(s, None),
        Action::RetryAfter(s, after) => answer(s, Some(("retry-after", after))),
        Action::Redirect(s, to) => answer(s, Some(("location", to))),
        Action::Delay(d) => {
            tokio::time::sleep(d).await;
            answer(200, None)
        }
        Action::Hold => std::future::pending().await,
    })
}
