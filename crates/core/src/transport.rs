//! The boundary through which every byte leaves the process.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::body::UploadBody;
use crate::error::code;

/// A request as the core hands it to a transport: method, URL, headers and a
/// framed body whose exact length is known.
pub type Request = http::Request<UploadBody>;

/// A response as a transport hands it back: status, headers, negotiated HTTP
/// version and the (small) body, read whole.
pub type Response = http::Response<Bytes>;

/// Sends one request and returns its response.
///
/// A transport reports every response it receives, whatever the status: a 404
/// or a 503 is a [`Response`], and the core decides what it means. Only a
/// failure to exchange the request at all is a [`TransportError`]. A transport
/// should set the response's [`version`](http::Response::version) to the HTTP
/// version it actually used; the core reports it as `Job::http_version`.
///
/// Dropping the returned future must abort the request: that is how the core
/// cancels in-flight blocks.
///
/// # Examples
///
/// A transport that takes every body, byte by byte in order, counts it, and
/// answers 200:
///
/// ```
/// use fileuploader_core::{Request, Response, Transport, TransportError, TransportErrorKind};
///
/// #[derive(Debug)]
/// struct Sink;
///
/// #[async_trait::async_trait]
/// impl Transport for Sink {
///     async fn send(&self, request: Request) -> Result<Response, TransportError> {
///         let mut body = request.into_body();
///         let mut taken = 0;
///         while let Some(chunk) = body.next_chunk().await {
///             let chunk = chunk
///                 .map_err(|e| TransportError::new(TransportErrorKind::Other, e.to_string()))?;
///             taken += chunk.len();
///         }
///         Ok(Response::new(format!("took {taken} bytes").into()))
///     }
/// }
/// ```
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Sends `request` and returns the response, whatever its status.
    ///
    /// # Errors
    ///
    /// A [`TransportError`] when the request could not be exchanged: its kind
    /// says why and whether the core may try again.
    async fn send(&self, request: Request) -> Result<Response, TransportError>;
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for Arc<T> {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        (**self).send(request).await
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
