//! A small raw HTTP/1.1 listener for the faults wiremock cannot express:
//! closing the connection after some body bytes, stalling mid-body, and
//! resetting.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// An HTTP/1.1 upload endpoint on 127.0.0.1 that injects [`RawFault`]s into
/// chosen requests (counted from 1 in order of arrival) and otherwise records
/// and answers 200, like [`MockUploadServer`](crate::MockUploadServer).
#[derive(Debug)]
pub struct RawFaultServer {
    addr: SocketAddr,
    recording: Recording,
    fired: Arc<Mutex<Vec<FiredRawFault>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawFaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    script: HashMap<usize, RawFault>,
    count: AtomicUsize,
    recorder: Recorder,
    fired: Arc<Mutex<Vec<FiredRawFault>>>,
}

impl RawFaultServer {
    /// Starts the listener; `script` maps request numbers to faults.
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
        let fired = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            script: script.into_iter().collect(),
            count: AtomicUsize::new(0),
            recorder: recorder.clone(),
            fired: fired.clone(),
        });
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, shared.clone()));
            }
        });
        RawFaultServer {
            addr,
            recording: Recording(recorder),
            fired,
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
        self.fired.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Reads until `buf` holds at least `n` bytes; false if the peer closed.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, n: usize) -> bool {
    while buf.len() < n {
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
    true
}

/// Parses a request head at the front of `buf`: its length and headers.
fn head(buf: &[u8]) -> Option<Result<(usize, HeaderMap), ()>> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut slots);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let mut headers = HeaderMap::new();
            for h in request.headers.iter() {
                let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(h.name.as_bytes()),
                    HeaderValue::from_bytes(h.value),
                ) else {
                    return Some(Err(()));
                };
                headers.append(name, value);
            }
            Some(Ok((len, headers)))
        }
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(Err(())),
    }
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let (head_len, headers) = loop {
            match head(&buf) {
                Some(Ok(parsed)) => break parsed,
                Some(Err(())) => return,
                None => {
                    if !matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
                        return;
                    }
                }
            }
        };
        let _ = buf.split_to(head_len);
        let length: usize = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        let n = shared.count.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(&fault) = shared.script.get(&n) {
            shared
                .fired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(FiredRawFault { request: n, fault });
            match fault {
                RawFault::CloseAfter(k) => {
                    fill(&mut stream, &mut buf, k.min(length)).await;
                }
                RawFault::StallAfter(k) => {
                    fill(&mut stream, &mut buf, k.min(length)).await;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                RawFault::Reset => {
                    let _ = stream.set_zero_linger();
                }
            }
            return;
        }
        if !fill(&mut stream, &mut buf, length).await {
            return;
        }
        let body: Bytes = buf.split_to(length).freeze();
        let (action, _) = shared.recorder.record(headers, body);
        let (status, extra) = match action {
            Action::Status(s) => (s, String::new()),
            Action::RetryAfter(s, after) => (s, format!("retry-after: {after}\r\n")),
            Action::Delay(d) => {
                tokio::time::sleep(d).await;
                (200, String::new())
            }
            Action::Hold => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
        };
        let response = format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\n{extra}\r\n");
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
