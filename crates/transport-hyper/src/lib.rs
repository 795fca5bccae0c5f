//! The default transport of fileuploader: hyper 1 with hyper-util's pooled
//! client and rustls. It owns connections, TLS, proxies, timeouts and the
//! errors they make; what to send and what an answer means are the core's.
//!
//! - Connections are kept alive and reused across blocks and jobs.
//! - TLS is verified against the bundled web PKI roots by default; the
//!   platform's roots, extra CA files and a client certificate are options.
//! - HTTP/1.1 by default; with [`HyperTransportBuilder::http2`], HTTP/2 is
//!   offered by ALPN over TLS and used by prior knowledge over cleartext.
//! - Connect, request and stall (idle) timeouts, and the low-speed limit
//!   (under 1 KiB/s over 60 s by default), each fail with code 11 and say
//!   which one fired.
//! - Redirects are not followed, as in the reference; following 307 and 308
//!   is an option.
//! - An explicit HTTP proxy (CONNECT for https), or the conventional
//!   `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` variables when enabled.
//!
//! # Examples
//!
//! ```no_run
//! use fileuploader_core::UploadManager;
//! use fileuploader_transport_hyper::HyperTransport;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = HyperTransport::builder()
//!     .http2(true)
//!     .stall_timeout(std::time::Duration::from_secs(20))
//!     .build()?;
//! let manager = UploadManager::new(transport);
//! let mut job = manager.create_job();
//! job.server_url = "https://example.com/upload".into();
//! job.source_value.add("scan.pdf", "scan.pdf", None);
//! manager.run(&job)?.wait().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod body;
mod dns;
mod errors;
mod proxy;
mod tls;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use fileuploader_core::{
    InterimAnswers, Request, Response, Transport, TransportError, TransportErrorKind,
};
use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{Activity, SlicedBody};
use crate::proxy::ProxyConnector;
pub use crate::tls::Roots;

/// How much of a response body is kept; the rest is not read.
const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// How many 307/308 redirects are followed when following is on.
const MAX_REDIRECTS: usize = 5;

type HyperClient = Client<HttpsConnector<ProxyConnector>, SlicedBody>;

/// A [`Transport`] over hyper and rustls. Cheap to clone; clones share the
/// connection pool.
#[derive(Clone)]
pub struct HyperTransport {
    /// HTTP/1.1, or HTTP/2 negotiated by ALPN over TLS: one pool each of
    /// the HTTP/2 connections a host gets (one pool under HTTP/1.1).
    clients: Vec<HyperClient>,
    /// HTTP/2 by prior knowledge, for cleartext URLs when HTTP/2 is asked
    /// for: as many pools.
    h2c: Vec<HyperClient>,
    /// The pool the next request takes.
    next: Arc<std::sync::atomic::AtomicUsize>,
    /// Which targets go through which proxy, if proxies are set.
    proxies: Option<Arc<Matcher>>,
    options: Options,
}

#[derive(Debug, Clone)]
struct Options {
    request_timeout: Option<Duration>,
    stall_timeout: Option<Duration>,
    low_speed: Option<LowSpeed>,
    follow_redirects: bool,
}

/// The slowest a request may go: fewer than `bytes_per_second` on average
/// over any `over` is a stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LowSpeed {
    bytes_per_second: u64,
    over: Duration,
}

impl fmt::Debug for HyperTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperTransport")
            .field("http2", &!self.h2c.is_empty())
            .field("http2_connections", &self.h2c.len())
            .field("proxy", &self.proxies.is_some())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl HyperTransport {
    /// A transport with the defaults: HTTP/1.1, web PKI roots, 10 s connect
    /// timeout, 30 s stall timeout, no request timeout, no redirects.
    ///
    /// # Errors
    ///
    /// Only if the TLS set-up fails, which the defaults do not.
    pub fn new() -> Result<Self, BuildError> {
        Self::builder().build()
    }

    /// A builder to choose the options.
    pub fn builder() -> HyperTransportBuilder {
        HyperTransportBuilder::default()
    }
}

/// Builds a [`HyperTransport`]. `Default` agrees with
/// [`HyperTransport::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HyperTransportBuilder {
    tls: tls::TlsOptions,
    http2: bool,
    http2_connections: usize,
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    stall_timeout: Option<Duration>,
    low_speed: Option<LowSpeed>,
    follow_redirects: bool,
    pool_idle_timeout: Option<Duration>,
    proxy: Option<String>,
    proxy_from_env: bool,
}

impl Default for HyperTransportBuilder {
    fn default() -> Self {
        HyperTransportBuilder {
            tls: tls::TlsOptions::default(),
            http2: false,
            http2_connections: 1,
            connect_timeout: Some(Duration::from_secs(10)),
            request_timeout: None,
            stall_timeout: Some(Duration::from_secs(30)),
            low_speed: Some(LowSpeed {
                bytes_per_second: 1024,
                over: Duration::from_secs(60),
            }),
            follow_redirects: false,
            pool_idle_timeout: Some(Duration::from_secs(90)),
            proxy: None,
            proxy_from_env: false,
        }
    }
}

impl HyperTransportBuilder {
    /// Which roots TLS trusts (default: the bundled web PKI roots).
    pub fn roots(mut self, roots: Roots) -> Self {
        self.tls.roots = roots;
        self
    }

    /// Also trusts the CA certificates in the PEM file at `path`.
    pub fn add_root_pem(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.extra_roots.push(path.into());
        self
    }

    /// Presents a client certificate (mutual TLS): a PEM chain and its PEM
    /// private key.
    pub fn identity_pem(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls.identity = Some((cert.into(), key.into()));
        self
    }

    /// Uses HTTP/2: offered by ALPN over TLS (HTTP/1.1 stays the fallback),
    /// and by prior knowledge over cleartext. Off by default.
    pub fn http2(mut self, on: bool) -> Self {
        self.http2 = on;
        self
    }

    /// Under HTTP/2, spreads requests over `n` connections to a host, in
    /// turn (default 1, HTTP/2's own way: every request on one). Over TLS
    /// each connection is encrypted, and decrypted at the receiver, apart,
    /// so more than one lets both ends use more than one core.
    pub fn http2_connections(mut self, n: usize) -> Self {
        self.http2_connections = n.max(1);
        self
    }

    /// How long making a connection may take; `None` waits for the system.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// How long one whole request may take, response included; `None` (the
    /// default) sets no bound.
    pub fn request_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.request_timeout = timeout.into();
        self
    }

    /// How long a request may go without moving a byte either way (sending
    /// the body, or waiting for and reading the response); `None` disables.
    pub fn stall_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.stall_timeout = timeout.into();
        self
    }

    /// The slowest a request may go: fewer than `bytes_per_second` bytes
    /// moved either way on average over any span of `over` fails it with
    /// code 11, however steadily they trickle (curl's `--speed-limit` and
    /// `--speed-time`). Default 1 KiB/s over 60 s; a rate of 0 disables.
    pub fn low_speed_limit(mut self, bytes_per_second: u64, over: Duration) -> Self {
        self.low_speed = (bytes_per_second > 0 && !over.is_zero()).then_some(LowSpeed {
            bytes_per_second,
            over,
        });
        self
    }

    /// Follows 307 and 308 redirects (up to 5), sending the same block again.
    /// Off by default: a redirect fails the job with code 26.
    pub fn follow_redirects(mut self, on: bool) -> Self {
        self.follow_redirects = on;
        self
    }

    /// How long an unused pooled connection is kept; `None` keeps it.
    pub fn pool_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.pool_idle_timeout = timeout.into();
        self
    }

    /// Sends every request through the HTTP proxy at `url`
    /// (`http://[user:password@]host:port`): https targets through a CONNECT
    /// tunnel, http targets as absolute-form requests. Failures to reach or
    /// use the proxy fail with code 2.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = Some(url.into());
        self
    }

    /// Uses the proxies the conventional variables name: `HTTPS_PROXY`
    /// (or `https_proxy`) for https targets, `HTTP_PROXY` for http ones,
    /// `ALL_PROXY` for both, except hosts matching `NO_PROXY`. Read when the
    /// transport is built; off by default. An explicit
    /// [`proxy`](Self::proxy) takes precedence.
    pub fn proxy_from_env(mut self, on: bool) -> Self {
        self.proxy_from_env = on;
        self
    }

    /// Builds the transport.
    ///
    /// # Errors
    ///
    /// When a CA file or client certificate cannot be read or used, the
    /// platform roots are asked for and none can be loaded, or the proxy URL
    /// is not an http URL with a host.
    pub fn build(self) -> Result<HyperTransport, BuildError> {
        let tls = self.tls.client_config()?;
        let mut http = dns::Connector::new_with_resolver(dns::Resolver::new());
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(self.connect_timeout);
        let proxies = match (&self.proxy, self.proxy_from_env) {
            (Some(url), _) => Some(Arc::new(explicit_proxy(url)?)),
            (None, true) => Some(Arc::new(Matcher::from_env())),
            (None, false) => None,
        };
        let http = ProxyConnector::new(http, proxies.clone());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1();
        let https = if self.http2 {
            https.enable_http2().wrap_connector(http)
        } else {
            https.wrap_connector(http)
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout);
        if let Some(stall) = self.stall_timeout.filter(|_| self.http2) {
            // Every request shares one HTTP/2 connection: one that stalls
            // must be closed, not given the retries too. A ping unanswered
            // within half the stall timeout closes it first.
            builder
                .http2_keep_alive_interval(stall / 4)
                .http2_keep_alive_timeout(stall / 2);
        }
        let pools = if self.http2 {
            self.http2_connections.max(1)
        } else {
            1
        };
        let clients = (0..pools).map(|_| builder.build(https.clone())).collect();
        let h2c = match self.http2 {
            true => (0..pools)
                .map(|_| builder.clone().http2_only(true).build(https.clone()))
                .collect(),
            false => Vec::new(),
        };
        Ok(HyperTransport {
            clients,
            h2c,
            next: Arc::default(),
            proxies,
            options: Options {
                request_timeout: self.request_timeout,
                stall_timeout: self.stall_timeout,
                low_speed: self.low_speed,
                follow_redirects: self.follow_redirects,
            },
        })
    }
}

fn explicit_proxy(url: &str) -> Result<Matcher, BuildError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| BuildError::new(format!("proxy URL {url:?}: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(BuildError::new(format!(
            "proxy URL {url:?} must be http://host:port"
        )));
    }
    Ok(Matcher::builder().all(url.to_owned()).build())
}

/// A [`HyperTransportBuilder`] could not build: a certificate, key or proxy
/// URL was missing or unusable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(String);

impl BuildError {
    fn new(message: String) -> Self {
        BuildError(message)
    }
}

impl HyperTransport {
    /// The pool for a request to `uri`: under HTTP/2, each in turn.
    fn client_for(&self, uri: &http::Uri) -> &HyperClient {
        let pools = match uri.scheme_str() {
            Some("http") if !self.h2c.is_empty() => &self.h2c,
            _ => &self.clients,
        };
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &pools[turn % pools.len()]
    }

    /// One exchange: send, then read at most [`MAX_RESPONSE_BODY`] bytes of
    /// the response.
    async fn exchange(
        &self,
        request: Request,
        activity: &Activity,
    ) -> Result<Response, TransportError> {
        let uri = request.uri().clone();
        let (mut parts, body) = request.into_parts();
        // A CONNECT tunnel carries its own credentials; an absolute-form
        // request through the proxy carries them in a header.
        let proxy_auth = self
            .proxies
            .as_ref()
            .filter(|_| uri.scheme_str() == Some("http"))
            .and_then(|m| m.intercept(&uri)?.basic_auth().cloned());
        if let Some(auth) = proxy_auth {
            parts
                .headers
                .insert(http::header::PROXY_AUTHORIZATION, auth);
        }
        let (body, body_gone) = SlicedBody::new(body, activity.clone());
        let interim = parts.extensions.get::<InterimAnswers>().cloned();
        let mut request = http::Request::from_parts(parts, body);
        if let Some(interim) = interim {
            // Seen over HTTP/1.1; hyper's HTTP/2 client passes them over.
            hyper::ext::on_informational(&mut request, move |answer| {
                interim.record(answer.status(), answer.headers().clone());
            });
        }
        let response = self
            .client_for(&uri)
            .request(request)
            .await
            .map_err(|e| errors::classify(e, &uri))?;
        activity.touch();
        // A server may answer before it has read the whole body; the block
        // is only done (and its buffer free) once hyper has let go of it.
        let _ = body_gone.await;
        let (parts, mut body) = response.into_parts();
        let mut kept = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| errors::classify(e, &uri))?;
            activity.touch();
            if let Ok(data) = frame.into_data() {
                activity.carried(data.len());
                let room = MAX_RESPONSE_BODY - kept.len();
                kept.extend_from_slice(&data[..data.len().min(room)]);
                if kept.len() == MAX_RESPONSE_BODY {
                    break;
                }
            }
        }
        Ok(Response::from_parts(parts, kept.freeze()))
    }

    /// An exchange bounded by the stall timeout and the low-speed limit.
    async fn watched(&self, request: Request) -> Result<Response, TransportError> {
        let activity = Activity::new();
        let uri = request.uri().clone();
        let exchange = self.exchange(request, &activity);
        let (stall, low_speed) = (self.options.stall_timeout, self.options.low_speed);
        if stall.is_none() && low_speed.is_none() {
            return exchange.await;
        }
        tokio::pin!(exchange);
        // The current low-speed window: when it ends, and the bytes moved
        // when it began.
        let mut window = low_speed.map(|l| (std::time::Instant::now() + l.over, 0));
        loop {
            let stalls_at = stall.map(|s| activity.last() + s);
            let wake = [stalls_at, window.map(|(ends, _)| ends)]
                .into_iter()
                .flatten()
                .min()
                .expect("a stall timeout or a low-speed limit");
            tokio::select! {
                result = &mut exchange => return result,
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = std::time::Instant::now();
                    if let Some(stall) = stall.filter(|s| activity.last() + *s <= now) {
                        return Err(TransportError::new(
                            TransportErrorKind::Timeout,
                            format!("idle timeout: no byte moved either way for {stall:?} with {}", errors::host(&uri)),
                        ));
                    }
                    if let (Some(limit), Some((ends, from))) = (low_speed, window) {
                        if ends <= now {
                            let moved = activity.moved() - from;
                            let needed = limit.bytes_per_second.saturating_mul(limit.over.as_secs().max(1));
                            if moved < needed {
                                return Err(TransportError::new(
                                    TransportErrorKind::Timeout,
                                    format!(
                                        "too slow: {moved} bytes moved in {:?} with {}, under the low-speed limit of {} bytes/s (--speed-limit, --speed-time)",
                                        limit.over, errors::host(&uri), limit.bytes_per_second
                                    ),
                                ));
                            }
                            window = Some((now + limit.over, activity.moved()));
                        }
                    }
                }
            }
        }
    }

    /// Sends, following 307/308 when asked to.
    async fn send_following(&self, mut request: Request) -> Result<Response, TransportError> {
        for _ in 0..MAX_REDIRECTS {
            if !self.options.follow_redirects {
                break;
            }
            let again = clone_request(&request);
            let response = self.watched(request).await?;
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| resolve_location(again.uri(), l));
            match (status, location) {
                (307 | 308, Some(next)) => {
                    request = again;
                    if !same_origin(request.uri(), &next) {
                        // Credentials are for the origin they were given to.
                        for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION] {
                            request.headers_mut().remove(name);
                        }
                    }
                    *request.uri_mut() = next;
                }
                _ => return Ok(response),
            }
        }
        self.watched(request).await
    }
}

fn clone_request(request: &Request) -> Request {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Whether two URIs share scheme, host and port.
fn same_origin(a: &http::Uri, b: &http::Uri) -> bool {
    let port = |u: &http::Uri| {
        u.port_u16().or_else(|| match u.scheme_str() {
            Some("https") => Some(443),
            _ => Some(80),
        })
    };
    a.scheme() == b.scheme() && a.host() == b.host() && port(a) == port(b)
}

fn resolve_location(base: &http::Uri, location: &str) -> Option<http::Uri> {
    let base = url::Url::parse(&base.to_string()).ok()?;
    base.join(location).ok()?.as_str().parse().ok()
}

#[async_trait]
impl Transport for HyperTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        errors::check_uri(request.uri())?;
        let uri = request.uri().clone();
        let send = self.send_following(request);
        match self.options.request_timeout {
            None => send.await,
            Some(limit) => tokio::time::timeout(limit, send).await.unwrap_or_else(|_| {
                Err(TransportError::new(
                    TransportErrorKind::Timeout,
                    format!(
                        "request timeout: no response within {limit:?} from {}",
                        errors::host(&uri)
                    ),
                ))
            }),
        }
    }
}

/// The public types can be shared across threads; checked at compile time.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<HyperTransport>();
    shareable::<HyperTransportBuilder>();
};

/// The README's Rust examples, compiled and checked as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
