//! The fileuploader reference receiver: accepts the segmented multipart
//! convention (see `docs/PROTOCOL.md`) and lands each upload whole.
//!
//! - A request with `Content-Range: bytes first-last/total` is a block: its
//!   file part is written at `first` into a temporary file for that upload,
//!   and the received ranges are tracked. When all `total` bytes have
//!   arrived, the file is fsync'd and atomically renamed into place.
//! - A request without `Content-Range` is a whole file, landed the same way.
//! - Uploads are told apart by the `X-Upload-Id` header, or by file name
//!   for clients that send none.
//! - File names are reduced to a plain name or refused (400); nothing is
//!   written outside the directory. Uploads above the maximum size get 413; a
//!   part whose length disagrees with `Content-Range`, or malformed multipart,
//!   gets 400 and counts for nothing.
//! - A block with an `X-Block-CRC32C` form field whose bytes do not match
//!   is refused with 460, so the client sends it again; a block for a range
//!   already received is read and checked but not written again. When an
//!   upload completes, the stored file is read back and checked against the
//!   acknowledged blocks' CRC32Cs before it lands.
//! - `GET ?upload_id=ID` answers which byte ranges of an upload have arrived.
//!
//! # Examples
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let receiver = fileuploader_server::Receiver::new("/srv/uploads")?.max_upload_size(1 << 30);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! receiver.serve(listener).await
//! # }
//! ```

#![warn(missing_docs)]

mod appends;
mod auth;
mod cors;
mod ingest;
mod limits;
mod linger;
mod request;
mod resumable;
mod settled;
pub mod store;

use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::auth::Grant;
pub use crate::auth::{sign_url, Access, BlankSecret, NameRule};
pub use crate::cors::{BadCors, Cors};
use crate::ingest::{Allowance, Outcome};
pub use crate::limits::Limits;
use crate::limits::{Admission, Cut, Guarded, SendGuarded};
pub use crate::request::{plain_name, upload_id};
use crate::settled::SettledEnd;
use crate::store::{BlockWriter, FsStore, NewUpload, Store, WholeWriter};
pub use crate::store::{OnConflict, Quota};
use fileuploader_wire::{parse_crc32c, STATEMENT_MEDIA_TYPE, UPLOAD_ID_QUERY};
pub use fileuploader_wire::{
    ContentRange, RangeSet, Statement, BLOCK_CRC32C_FIELD, DIGEST_MISMATCH, UPLOAD_ID_HEADER,
};
/// How many bytes of one HTTP/2 request body a client may send ahead of the
/// receiver's reads; four times this for a whole connection.
const H2_STREAM_WINDOW: u32 = 1 << 20;
/// The largest HTTP/2 frame a client may send.
const H2_MAX_FRAME: u32 = 256 << 10;
/// How long a partial upload may go untouched before it is discarded.
pub const DEFAULT_EXPIRE: Duration = Duration::from_secs(24 * 3600);
/// The first wait after a failed `accept`; it doubles up to a second.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// The default largest upload: 16 GiB.
pub const DEFAULT_MAX_UPLOAD_SIZE: u64 = 16 << 30;

/// A request body the receiver reads: hyper's, or any like it.
pub(crate) trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// A refused request: the status and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Refusal {
    status: StatusCode,
    message: String,
    /// The upload's offset, told with a conflict over it.
    offset: Option<u64>,
}

impl Refusal {
    /// A refusal with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            offset: None,
        }
    }

    /// A 500: `what` failed because of `e`.
    pub fn internal(what: &str, e: impl fmt::Display) -> Self {
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
    }

    /// The same, telling the upload's offset (`Upload-Offset`).
    pub(crate) fn with_offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    pub(crate) fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The HTTP status sent back.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message sent back.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The receiver: a store, a size limit, and the rules of who may upload
/// what. Cheap to clone; clones share the store.
#[derive(Debug, Clone)]
pub struct Receiver {
    store: Arc<dyn Store>,
    max_upload_size: u64,
    discard: bool,
    on_conflict: OnConflict,
    limits: Limits,
    access: Access,
    expire: Duration,
    quota: Quota,
    tls: Option<Tls>,
    grace: Duration,
    cors: Cors,
    /// Appends in flight, which a newer request for their upload ends.
    appends: appends::Appends,
    /// Requests in flight, all together and per credential.
    requests: Arc<Admission>,
}

/// The TLS side of the receiver, when it serves HTTPS.
#[derive(Clone)]
struct Tls(tokio_rustls::TlsAcceptor);

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls")
    }
}

impl Receiver {
    /// A receiver landing files in `dir` (created if missing), through an
    /// [`FsStore`]: partial uploads live in `dir/.fileuploader-partial/`
    /// until complete.
    ///
    /// # Errors
    ///
    /// When the directories cannot be created.
    pub fn new(dir: impl AsRef<Path>) -> std::io::Result<Self> {
        Ok(Self::with_store(FsStore::new(dir)?))
    }

    /// A receiver keeping uploads in `store`.
    pub fn with_store(store: impl Store) -> Self {
        Receiver {
            store: Arc::new(store),
            max_upload_size: DEFAULT_MAX_UPLOAD_SIZE,
            discard: false,
            on_conflict: OnConflict::default(),
            limits: Limits::default(),
            access: Access::default(),
            expire: DEFAULT_EXPIRE,
            quota: Quota::none(),
            tls: None,
            grace: Duration::from_secs(30),
            cors: Cors::default(),
            appends: appends::Appends::default(),
            requests: Arc::default(),
        }
    }

    /// Refuses uploads larger than `bytes` with 413 (default 16 GiB).
    #[must_use]
    pub fn max_upload_size(mut self, bytes: u64) -> Self {
        self.max_upload_size = bytes;
        self
    }

    /// What landing does when a file of the same name is there already
    /// (default: refuse with 409).
    #[must_use]
    pub fn on_conflict(mut self, policy: OnConflict) -> Self {
        self.on_conflict = policy;
        self
    }

    /// Serves HTTPS with the certificate chain and private key in these PEM
    /// files (HTTP/2 by ALPN, else HTTP/1.1).
    ///
    /// # Errors
    ///
    /// When the files cannot be read or do not hold a matching chain and key.
    pub fn tls(mut self, cert_pem: &Path, key_pem: &Path) -> std::io::Result<Self> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |what: &Path, e: &dyn fmt::Display| {
            std::io::Error::other(format!("{}: {e}", what.display()))
        };
        let certs = CertificateDer::pem_file_iter(cert_pem)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(cert_pem, &e))?;
        let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|e| bad(key_pem, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(cert_pem, &e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad(cert_pem, &e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        self.tls = Some(Tls(tokio_rustls::TlsAcceptor::from(Arc::new(config))));
        Ok(self)
    }

    /// How long a stopping receiver lets requests in flight finish
    /// (default 30 s).
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Which web origins may upload from a browser (default: none).
    #[must_use]
    pub fn cors(mut self, cors: Cors) -> Self {
        self.cors = cors;
        self
    }

    /// Who may use the receiver (default: anyone).
    #[must_use]
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Discards partial uploads untouched for `ttl` (default 24 h); the
    /// janitor of [`serve`](Self::serve) checks every quarter of it, at
    /// most every minute.
    #[must_use]
    pub fn expire(mut self, ttl: Duration) -> Self {
        self.expire = ttl;
        self
    }

    /// Refuses (507) an upload that would bring the bytes held by uploads
    /// in progress above `bytes`, before it stores anything (a whole file:
    /// once its bytes would); see [`Quota`].
    #[must_use]
    pub fn quota(mut self, bytes: u64) -> Self {
        self.quota.total = Some(bytes);
        self
    }

    /// Refuses (507) an upload that would bring the bytes held by the
    /// uploads in progress of its credentials above `bytes`, so that one
    /// tenant cannot fill the room of all; see [`Quota`].
    #[must_use]
    pub fn quota_per_credential(mut self, bytes: u64) -> Self {
        self.quota.per_credential = Some(bytes);
        self
    }

    /// Discards the partial uploads untouched for the expiry time now;
    /// returns how many.
    ///
    /// # Errors
    ///
    /// When the records cannot be read or a partial file removed.
    pub async fn expire_now(&self) -> Result<usize, Refusal> {
        self.store.expire(self.expire).await
    }

    /// Sets the limits on connections, time and memory per request.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Reads and discards every body, answering 200: a sink for benchmarks.
    #[must_use]
    pub fn discard(mut self, on: bool) -> Self {
        self.discard = on;
        self
    }

    /// The store uploads are kept in.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Which byte ranges of upload `id` have arrived, and of how many;
    /// `None` for an upload not in progress.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub async fn status(&self, id: &str) -> Result<Option<(u64, RangeSet)>, Refusal> {
        let upload = self.store.upload(id).await?;
        Ok(upload.map(|u| (u.begun.total, u.received)))
    }

    /// Handles one request, in whichever protocol it speaks: the segmented
    /// multipart convention (`POST` uploads, `GET ?upload_id=` asks what the
    /// receiver holds of an upload, `DELETE ?upload_id=` discards it), tus
    /// 1.0 (requests with `Tus-Resumable`, and `HEAD`/`PATCH`), or the IETF
    /// draft (requests with `Upload-Draft-Interop-Version`); `OPTIONS` says
    /// what it speaks. Mount it in any hyper-compatible service, on a tokio
    /// runtime with its time driver enabled (the idle timeout needs it).
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // A body left unread by an early answer is drained, so the client
        // hears the answer rather than a reset.
        let mut request = request.map(linger::Lingering::new);
        let origin = request.headers().get(header::ORIGIN).cloned();
        let preflight = *request.method() == Method::OPTIONS;
        let head = *request.method() == Method::HEAD;
        let override_to = (*request.method() == Method::POST)
            .then(|| request.headers().get("x-http-method-override"))
            .flatten()
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok());
        if let Some(method) = override_to {
            *request.method_mut() = method;
        }
        let mut response = if preflight {
            resumable::options(self.max_upload_size).into_response(Some(resumable::Dialect::Tus))
        } else {
            let grant = self.access.check(request.headers(), request.uri());
            let admitted = grant
                .as_ref()
                .ok()
                .map(|g| self.requests.admit(&g.owner, &self.limits));
            let (grant, _admitted) = match admitted {
                Some(Err(busy)) => (Err(busy), None),
                Some(Ok(admitted)) => (grant, Some(admitted)),
                None => (grant, None),
            };
            match resumable::Dialect::of(request.headers(), request.method()) {
                Some(Ok(dialect)) => self.resumable_response(request, grant, dialect).await,
                Some(Err(refusal)) => resumable::Answer::refused(&refusal).into_response(None),
                None => self.segmented(request, grant).await,
            }
        };
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            // Busy or waiting on its store: the client may come back soon.
            response
                .headers_mut()
                .entry(header::RETRY_AFTER)
                .or_insert(header::HeaderValue::from_static("1"));
        }
        if head {
            // No answer to HEAD has a body: HTTP/2 peers reset a stream
            // whose HEAD answer carries one (a refusal's message).
            response.headers_mut().remove(header::CONTENT_LENGTH);
            *response.body_mut() = Full::default();
        }
        self.cors
            .decorate(origin.as_ref(), preflight, response.headers_mut());
        response
    }

    /// Serves one request of the segmented multipart convention.
    async fn segmented<B: RequestBody>(
        &self,
        request: Request<B>,
        grant: Result<Grant, Refusal>,
    ) -> Response<Full<Bytes>> {
        let result = match grant {
            Err(refusal) => Err(refusal),
            Ok(grant) => match *request.method() {
                Method::POST if self.discard => self.sink(request).await,
                Method::POST => self.receive(request, &grant).await,
                Method::GET if !self.discard => self.status_of(request.uri(), &grant).await,
                Method::DELETE if !self.discard => self.discard_upload(request.uri(), &grant).await,
                _ => Err(Refusal::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use POST to upload",
                )),
            },
        };
        let (status, content_type, body) = match result {
            Ok(statement) => {
                let status = match statement {
                    Some(Statement::Unknown { .. }) => StatusCode::NOT_FOUND,
                    _ => StatusCode::OK,
                };
                let body = statement.map_or_else(|| "ok\n".to_owned(), |s| s.to_json());
                (status, STATEMENT_MEDIA_TYPE, body)
            }
            Err(refusal) => {
                tracing::debug!(%refusal, "refused");
                let body = format!("{}\n", refusal.message);
                (refusal.status, "text/plain; charset=utf-8", body)
            }
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    }

    /// Serves HTTP/1.1 and HTTP/2 on `listener` until the task is dropped.
    /// First it fits its [`Limits`] to the files the process may open:
    /// it raises the soft `RLIMIT_NOFILE` as far as the hard one allows,
    /// and where that is not enough lowers connections and requests in
    /// flight to fit, with a warning.
    ///
    /// # Errors
    ///
    /// When accepting connections fails.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        self.serve_until(listener, std::future::pending()).await
    }

    /// Serves as [`serve`](Self::serve) until `shutdown` completes; then
    /// accepts nothing more, lets requests in flight finish for up to
    /// `grace`, and returns.
    ///
    /// # Errors
    ///
    /// Never so far: failed accepts are retried.
    pub async fn serve_until(
        mut self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.limits = self.limits.fitted_to_descriptors();
        let max = self.limits.max_connections;
        let connections = Arc::new(tokio::sync::Semaphore::new(max));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let janitor = self.clone();
        let _janitor = AbortOnDrop(tokio::spawn(async move {
            let every =
                (janitor.expire / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
            loop {
                match janitor.expire_now().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("discarded {n} expired partial uploads"),
                    Err(e) => tracing::warn!("cannot discard expired uploads: {e}"),
                }
                tokio::time::sleep(every).await;
            }
        }));
        let mut backoff = ACCEPT_BACKOFF;
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => {
                    backoff = ACCEPT_BACKOFF;
                    tcp
                }
                Err(e) => {
                    // Out of descriptors, or a connection aborted before it
                    // was accepted: the listener is fine; wait and go on.
                    tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                turn_away(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (receiver, stopping) = (self.clone(), stopping.clone());
            tokio::spawn(async move {
                let _permit = permit;
                receiver.connection(tcp, stopping).await;
            });
        }
        drop(listener);
        let _ = stop.send(true);
        // Every connection holds a permit until it ends.
        let drained = tokio::time::timeout(self.grace, connections.acquire_many(max as u32));
        if drained.await.is_err() {
            tracing::warn!(
                "requests still in flight after {:?}; stopping anyway",
                self.grace
            );
        }
        Ok(())
    }

    /// Serves one connection, over TLS when configured, until it ends or
    /// the receiver stops (then gracefully).
    async fn connection(
        self,
        tcp: tokio::net::TcpStream,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        let limits = self.limits;
        // Telling HTTP/1.1 from HTTP/2 needs the first bytes, and no
        // timeout of hyper's covers that wait: bound it here.
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(limits.header_timeout, tcp.peek(&mut first));
        if !matches!(peeked.await, Ok(Ok(1..))) {
            return;
        }
        match self.tls.clone() {
            None => self.serve_io(tcp, stopping).await,
            Some(Tls(acceptor)) => {
                let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(tls)) => self.serve_io(tls, stopping).await,
                    Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve_io<I>(self, io: I, mut stopping: tokio::sync::watch::Receiver<bool>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.limits;
        let receiver = self;
        let activity = Arc::new(Activity::new());
        let busy = activity.clone();
        let service = hyper::service::service_fn(move |req| {
            let (receiver, busy) = (receiver.clone(), busy.clone());
            async move {
                let _request = busy.begin();
                Ok::<_, Infallible>(receiver.handle(req).await)
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(limits.header_timeout))
            .keep_alive_timeout(limits.header_timeout)
            .max_header_list_size(limits.max_header_bytes as u32)
            .max_concurrent_streams(limits.max_streams)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_STREAM_WINDOW * 4)
            .max_frame_size(H2_MAX_FRAME);
        let io = SendGuarded::new(io, limits.send_timeout);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            _ = async { stopping.wait_for(|stop| *stop).await.map(|_| ()) } => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            () = activity.idle_for(limits.header_timeout) => {
                // HTTP/2 keeps a connection without requests open for good
                // (its pings answer); close it as HTTP/1.1 keep-alive is.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!("connection ended: {e}");
        }
    }

    /// The upload a status query or discard names.
    fn queried_id(uri: &http::Uri) -> Result<&str, Refusal> {
        let id = uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix(UPLOAD_ID_QUERY)?.strip_prefix('='))
            .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "ask with ?upload_id=ID"))?;
        fileuploader_wire::check_upload_id(id)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))
    }

    async fn status_of(
        &self,
        uri: &http::Uri,
        grant: &Grant,
    ) -> Result<Option<Statement>, Refusal> {
        let id = Self::queried_id(uri)?;
        self.appends.take_over(id, &grant.owner).await;
        let outcome =
            ingest::settle(self.store.as_ref(), id, &grant.owner, self.on_conflict).await?;
        Ok(Some(outcome.statement(id)))
    }

    async fn discard_upload(
        &self,
        uri: &http::Uri,
        grant: &Grant,
    ) -> Result<Option<Statement>, Refusal> {
        let id = Self::queried_id(uri)?;
        self.appends.take_over(id, &grant.owner).await;
        if ingest::find_owned(self.store.as_ref(), id, &grant.owner)
            .await?
            .is_some()
        {
            self.store.discard(id).await?;
        }
        Ok(Some(Statement::Unknown {
            upload_id: id.to_owned(),
        }))
    }

    /// Reads a whole body and keeps nothing (discard mode).
    async fn sink<B: RequestBody>(
        &self,
        request: Request<B>,
    ) -> Result<Option<Statement>, Refusal> {
        let mut body = std::pin::pin!(request.into_body());
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| {
                Refusal::new(StatusCode::BAD_REQUEST, format!("body: {}", e.into()))
            })?;
        }
        Ok(None)
    }

    async fn receive<B: RequestBody>(
        &self,
        request: Request<B>,
        grant: &Grant,
    ) -> Result<Option<Statement>, Refusal> {
        let headers = request.headers();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let boundary = multer::parse_boundary(content_type)
            .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "not multipart/form-data"))?;
        let range = headers
            .get(header::CONTENT_RANGE)
            .map(|v| ContentRange::parse(v.to_str().unwrap_or("")))
            .transpose()
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        let id = upload_id(headers)?;
        let max_size = grant
            .max_size
            .map_or(self.max_upload_size, |m| m.min(self.max_upload_size));
        let limit = range.map_or(max_size, |r| r.total);
        if limit > max_size {
            return Err(too_large(max_size));
        }
        let allowed = |name: &str| -> Result<(), Refusal> {
            match &grant.name {
                Some(rule) if !rule.allows(name) => Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!("the upload URL does not allow the name {name:?}"),
                )),
                _ => Ok(()),
            }
        };
        let allowance = Allowance {
            owner: &grant.owner,
            policy: self.on_conflict,
            quota: self.quota,
        };
        let stream = SettledEnd::new(Guarded::new(
            Box::pin(request.into_body().into_data_stream().map_err(Into::into)),
            &boundary,
            &self.limits,
        ));
        let mut form = multer::Multipart::new(stream, boundary);
        let mut file: Option<(Part, ingest::Poured)> = None;
        let mut name_field = None;
        let mut expected_crc = None;
        let mut fields = 0;
        while let Some(mut field) = form.next_field().await.map_err(malformed)? {
            match (field.file_name(), &file) {
                (Some(part_name), None) => {
                    let name = plain_name(&fileuploader_wire::unescape_name(part_name))?;
                    allowed(&name)?;
                    let mut part = match self.part(id.as_deref(), name, range, allowance).await? {
                        Ok(part) => part,
                        Err(landed) => {
                            while field.chunk().await.map_err(malformed)?.is_some() {}
                            return Ok(Some(landed));
                        }
                    };
                    let max = range.map_or(max_size, |r| r.len());
                    let poured = match &mut part {
                        Part::Block(writer) => {
                            ingest::pour(&mut field, writer.as_mut(), max, || {
                                Refusal::new(
                                    StatusCode::BAD_REQUEST,
                                    "file part is longer than its Content-Range",
                                )
                            })
                            .await?
                        }
                        Part::Whole(writer, _) => {
                            ingest::pour(&mut field, writer.as_mut(), max, || too_large(max))
                                .await?
                        }
                    };
                    file = Some((part, poured));
                }
                (Some(_), Some(_)) => {
                    // Refused before anything lands: the first part's
                    // writer goes with this answer, keeping nothing.
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "the form has more than one file part; send each file in its own request (none of these was kept)",
                    ));
                }
                (None, _) => {
                    fields += 1;
                    if fields > self.limits.max_fields {
                        return Err(Refusal::new(
                            StatusCode::BAD_REQUEST,
                            format!("more than {} form fields", self.limits.max_fields),
                        ));
                    }
                    let key = field.name().unwrap_or("").to_owned();
                    let text = read_small(field, self.limits.max_field_bytes).await?;
                    match key.as_str() {
                        "filename" => {
                            let name = plain_name(&text)?;
                            allowed(&name)?;
                            name_field = Some(name);
                        }
                        BLOCK_CRC32C_FIELD if expected_crc.is_some() => {
                            return Err(Refusal::new(
                                StatusCode::BAD_REQUEST,
                                "X-Block-CRC32C given twice",
                            ))
                        }
                        BLOCK_CRC32C_FIELD => {
                            expected_crc = Some(parse_crc32c(&text).map_err(|_| {
                                Refusal::new(StatusCode::BAD_REQUEST, "malformed X-Block-CRC32C")
                            })?)
                        }
                        _ => {}
                    }
                }
            }
        }
        let (part, poured) =
            file.ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "no file part in the form"))?;
        let crc = poured.crc32c;
        if expected_crc.is_some_and(|expected| expected != crc) {
            return Err(Refusal::new(
                StatusCode::from_u16(DIGEST_MISMATCH).unwrap_or(StatusCode::BAD_REQUEST),
                format!(
                    "block digest mismatch: X-Block-CRC32C says {:08x}, the bytes have {crc:08x}",
                    expected_crc.unwrap_or(0)
                ),
            ));
        }
        match (part, range) {
            (Part::Whole(writer, part_name), _) => {
                let name = name_field.unwrap_or(part_name);
                ingest::land_whole(self.store.as_ref(), writer, &name, id.as_deref(), allowance)
                    .await
                    .map(Some)
            }
            (Part::Block(writer), Some(r)) => {
                if poured.len != r.len() {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "file part has {} bytes but Content-Range says {}",
                            poured.len,
                            r.len()
                        ),
                    ));
                }
                let outcome = ingest::acknowledge(
                    self.store.as_ref(),
                    writer,
                    r.len(),
                    expected_crc,
                    name_field,
                    self.on_conflict,
                )
                .await?;
                match outcome {
                    Outcome::Landed(statement) => Ok(Some(statement)),
                    Outcome::InProgress(upload) => Ok(Some(Statement::Received {
                        upload_id: upload.begun.id,
                        start: r.start,
                        end: r.end,
                    })),
                    Outcome::Failed(_, refusal) => Err(refusal),
                    Outcome::Unknown => Err(Refusal::internal("receive", "the upload vanished")),
                }
            }
            (Part::Block(_), None) => Err(Refusal::internal("receive", "a block without a range")),
        }
    }

    /// Where a request's file part goes: a block of an upload (found or
    /// begun, its range reserved) or a whole file; or, when the upload it
    /// names has landed already, the statement of its landing.
    async fn part(
        &self,
        id: Option<&str>,
        name: String,
        range: Option<ContentRange>,
        allowance: Allowance<'_>,
    ) -> Result<Result<Part, Statement>, Refusal> {
        let Some(range) = range else {
            let store = self.store.as_ref();
            if let Some(landed) = ingest::open_whole(store, id, &name, allowance).await? {
                return Ok(Err(landed));
            }
            let writer = store.write_whole(allowance.owner, allowance.quota).await?;
            return Ok(Ok(Part::Whole(writer, name)));
        };
        let id = id.ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "an upload in blocks needs an X-Upload-Id, so it cannot meet another client's",
            )
        })?;
        let new = NewUpload {
            id: id.to_owned(),
            total: range.total,
            name,
            owner: allowance.owner.to_owned(),
            partial: false,
        };
        match ingest::open(self.store.as_ref(), new, allowance).await? {
            Outcome::Landed(statement) => Ok(Err(statement)),
            Outcome::InProgress(upload) => Ok(Ok(Part::Block(
                self.store.write_block(&upload, range, true).await?,
            ))),
            Outcome::Failed(..) | Outcome::Unknown => {
                Err(Refusal::internal("open upload", "neither begun nor landed"))
            }
        }
    }
}

/// A request's file part on its way into the store.
enum Part {
    Block(Box<dyn BlockWriter>),
    /// A whole file and the name its part gave.
    Whole(Box<dyn WholeWriter>, String),
}

fn too_large(max: u64) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("upload is larger than the maximum of {max} bytes"),
    )
}

fn malformed(e: multer::Error) -> Refusal {
    if let multer::Error::StreamReadFailed(cause) = &e {
        return match cause.downcast_ref::<Cut>() {
            Some(cut @ (Cut::Idle(_) | Cut::Slow { .. })) => {
                Refusal::new(StatusCode::REQUEST_TIMEOUT, cut.to_string())
            }
            Some(cut) => Refusal::new(StatusCode::BAD_REQUEST, cut.to_string()),
            None => broke_off(cause),
        };
    }
    Refusal::new(StatusCode::BAD_REQUEST, format!("malformed multipart: {e}"))
}

/// A request body the connection ended early (closed one way, reset):
/// nothing is wrong with the request, which may come again (408).
pub(crate) fn broke_off(cause: impl fmt::Display) -> Refusal {
    Refusal::new(
        StatusCode::REQUEST_TIMEOUT,
        format!("the request body broke off: {cause}"),
    )
}

/// The requests of one connection: how many are in flight, and when the
/// last one ended.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    last: std::sync::Mutex<tokio::time::Instant>,
}

/// One request in flight; it ends when dropped.
struct InFlight<'a>(&'a Activity);

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: 0.into(),
            last: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    fn begin(&self) -> InFlight<'_> {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(self)
    }

    fn last(&self) -> tokio::time::Instant {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let quiet_until = self.last() + timeout;
            tokio::time::sleep_until(quiet_until).await;
            let busy = self.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0;
            if !busy && self.last() + timeout <= tokio::time::Instant::now() {
                return;
            }
            if busy {
                tokio::time::sleep(timeout).await;
            }
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Aborts a task when dropped, so the janitor ends with `serve`.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers a connection over the limit with 503, as far as its socket
/// takes it without waiting, and closes it at once: a burst of them never
/// holds descriptors.
fn turn_away(tcp: tokio::net::TcpStream) {
    let answer = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let _ = tcp.try_write(answer);
}

async fn read_small(mut field: multer::Field<'_>, max: usize) -> Result<String, Refusal> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        if text.len() + chunk.len() > max {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("form field larger than {max} bytes"),
            ));
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text)
        .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "form field is not UTF-8"))
}

/// Where partial uploads are kept, below the receiver's directory.
pub fn partial_dir(dir: &Path) -> PathBuf {
    dir.join(".fileuploader-partial")
}

/// The public types can be shared across threads; checked at compile time.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Receiver>();
    shareable::<Refusal>();
};
