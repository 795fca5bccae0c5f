//! What the receiver's test binaries share; each uses a part of it.
#![allow(dead_code)]

/// A receiver on `addr` (port 0: any) serving `dir` from its own runtime,
/// so a test can stop it mid-upload; returns its address and the runtime.
pub fn serving(
    dir: &std::path::Path,
    addr: &str,
) -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    serve_on(fileuploader_server::Receiver::new(dir).unwrap(), addr, 1)
}

/// `receiver` on `addr` (port 0: any) from a runtime of its own with
/// `workers` threads; its address and the runtime.
pub fn serve_on(
    receiver: fileuploader_server::Receiver,
    addr: &str,
    workers: usize,
) -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        receiver
            .serve(tokio::net::TcpListener::from_std(listener).unwrap())
            .await
    });
    (addr, rt)
}

/// A request as a [`Meddling`] transport keeps it: method and headers.
pub type Sent = (http::Method, http::HeaderMap);
/// What a transport answers.
pub type Reply = Result<fileuploader_core::Response, fileuploader_core::TransportError>;
type Instead = Box<dyn Fn(&Sent, &[Sent]) -> Option<Reply> + Send + Sync>;
type After = Box<dyn Fn(&Sent, &[Sent], fileuploader_core::Response) -> Reply + Send + Sync>;

/// Our transport with a hand between it and the server, for faults a
/// server does not make by itself: `instead` may answer a request itself
/// (it then never leaves); `after` may change or lose the server's answer.
/// Both see the request and every one sent before it.
pub struct Meddling {
    inner: fileuploader_transport_hyper::HyperTransport,
    instead: Instead,
    after: After,
    /// Every request so far.
    pub sent: std::sync::Arc<std::sync::Mutex<Vec<Sent>>>,
}

impl Meddling {
    pub fn new(
        instead: impl Fn(&Sent, &[Sent]) -> Option<Reply> + Send + Sync + 'static,
        after: impl Fn(&Sent, &[Sent], fileuploader_core::Response) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Meddling {
            inner: fileuploader_transport_hyper::HyperTransport::new().unwrap(),
            instead: Box::new(instead),
            after: Box::new(after),
            sent: std::sync::Arc::default(),
        }
    }
}

impl std::fmt::Debug for Meddling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meddling").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl fileuploader_core::Transport for Meddling {
    async fn send(&self, request: fileuploader_core::Request) -> Reply {
        let this: Sent = (request.method().clone(), request.headers().clone());
        let before = self.sent.lock().unwrap().clone();
        self.sent.lock().unwrap().push(this.clone());
        if let Some(reply) = (self.instead)(&this, &before) {
            return reply;
        }
        let answer = self.inner.send(request).await?;
        (self.after)(&this, &before, answer)
    }
}

/// A connection reset, as a transport reports it.
pub fn reset() -> Reply {
    Err(fileuploader_core::TransportError::new(
        fileuploader_core::TransportErrorKind::Reset,
        "connection reset",
    ))
}

/// Whether `sent` holds a request of `method`.
pub fn any(sent: &[Sent], method: &http::Method) -> bool {
    sent.iter().any(|(m, _)| m == method)
}

/// The boundary of the forms [`form`] writes.
pub const BOUNDARY: &str = "XyZ";

/// A `multipart/form-data` body of these parts: a name, a file name for a
/// file part, and the bytes.
pub fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file, data) in parts {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(f) = file {
            body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}
