//! The accept loop: connections (TLS when configured), HTTP/1.1 and
//! HTTP/2 with their windows and timeouts, graceful stops, and the bound
//! on connections and descriptors.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use fileuploader_wire::sync::lock;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::limits::SendGuarded;
use crate::receiver::Tls;
use crate::Receiver;

/// How many bytes of one HTTP/2 request body a client may send ahead of the
/// receiver's reads; four times this for a whole connection.
pub(crate) const H2_STREAM_WINDOW: u32 = 1 << 20;
/// The largest HTTP/2 frame a client may send.
pub(crate) const H2_MAX_FRAME: u32 = 256 << 10;
/// The first wait after a failed `accept`; it doubles up to a second.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// How often the store is asked for files placed on the receiver's
/// signatures.
const WATCH_EVERY: Duration = Duration::from_secs(1);

impl Receiver {
    /// Serves HTTP/1.1 and HTTP/2 on `listener` until the task is dropped.
    /// First it fits its [`Limits`](crate::Limits) to the files the process may open:
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
        // Files clients place in the store on what it signed: recorded as
        // they arrive.
        let watcher = self.clone();
        let _watcher = self.store.direct().is_some().then(|| {
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    if let Err(e) = watcher.settle_watches_now().await {
                        tracing::warn!("cannot look for files placed on signatures: {e}");
                    }
                    tokio::time::sleep(WATCH_EVERY).await;
                }
            }))
        });
        let _delivery = self.after_landing.clone().map(|hook| {
            AbortOnDrop(tokio::spawn(crate::hooks::deliver(
                self.store.clone(),
                crate::hooks::Teller::new(hook, &self.hook_roots),
            )))
        });
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
            None => {
                let http2 = opens_http2(&tcp, limits.header_timeout).await;
                self.serve_io(tcp, http2, stopping).await;
            }
            Some(Tls(acceptor)) => {
                let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(tls)) => {
                        // Over TLS, HTTP/2 is chosen by ALPN.
                        let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                        self.serve_io(tls, http2, stopping).await;
                    }
                    Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }
        }
    }

    /// Serves HTTP/2 (`http2`) or HTTP/1.1 on `io`.
    async fn serve_io<I>(self, io: I, http2: bool, mut stopping: tokio::sync::watch::Receiver<bool>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.limits;
        if http2 {
            let io = SendGuarded::new(io, limits.send_timeout);
            return crate::http2::serve(self, io, stopping).await;
        }
        let receiver = self;
        let activity = Arc::new(Activity::new());
        let busy = activity.clone();
        let (io, interim) = crate::interim::InterimIo::new(io);
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            let (receiver, busy) = (receiver.clone(), busy.clone());
            // Interim answers go on the connection itself, between messages
            // of HTTP/1.1 (an HTTP/1.0 client would not expect them).
            if req.version() == http::Version::HTTP_11 {
                req.extensions_mut().insert(interim.clone());
            }
            async move {
                let _request = busy.begin();
                Ok::<_, Infallible>(receiver.handle(req).await)
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
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
}

/// The requests of one connection: how many are in flight, and when the
/// last one ended.
pub(crate) struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    last: std::sync::Mutex<tokio::time::Instant>,
}

/// One request in flight; it ends when dropped.
pub(crate) struct InFlight<'a>(&'a Activity);

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            in_flight: 0.into(),
            last: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    pub(crate) fn begin(&self) -> InFlight<'_> {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(self)
    }

    fn last(&self) -> tokio::time::Instant {
        *lock(&self.last)
    }

    /// Completes once no request has been in flight for `timeout`.
    pub(crate) async fn idle_for(&self, timeout: Duration) {
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
        *lock(&self.0.last) = tokio::time::Instant::now();
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The first bytes of an HTTP/2 connection without TLS (its preface); no
/// HTTP/1.1 request begins so (`PRI` is reserved for it).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Whether a connection without TLS opens with HTTP/2's preface: its
/// first bytes are looked at, not taken, for at most `timeout`.
async fn opens_http2(tcp: &tokio::net::TcpStream, timeout: Duration) -> bool {
    let looked = async {
        let mut first = [0u8; HTTP2_PREFACE.len()];
        loop {
            let n = tcp.peek(&mut first).await.unwrap_or(0);
            if n == 0 || first[..n] != HTTP2_PREFACE[..n] {
                return false;
            }
            if n == HTTP2_PREFACE.len() {
                return true;
            }
            // Part of the preface is here: wait for the rest.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(timeout, looked).await.unwrap_or(false)
}

/// Aborts a task when dropped, so the janitor and the hooks' delivery end
/// with `serve`.
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
