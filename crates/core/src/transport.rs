//! The boundary through which every byte leaves the process.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::body::UploadBody;
pub use crate::error::{TransportError, TransportErrorKind};

/// A request as the core hands it to a transport: method, URL, headers and a
/// framed body whose exact length is known.
pub type Request = http::Request<UploadBody>;

/// A response as a transport hands it back: status, headers, negotiated HTTP
/// version and the (small) body, read whole.
pub type Response = http::Response<Bytes>;

/// The interim answers (`1xx`) to one request, for the session that sent
/// it: the IETF draft's `104` says where an upload is before its final
/// answer, so that a request cut short can be resumed there. A session
/// puts one in a request's extensions; a transport that sees interim
/// answers records each (the hyper transport does, over HTTP/1.1), one
/// that cannot leaves it empty.
#[derive(Debug, Clone, Default)]
pub struct InterimAnswers(Arc<std::sync::Mutex<Vec<(http::StatusCode, http::HeaderMap)>>>);

impl InterimAnswers {
    /// Records an interim answer.
    pub fn record(&self, status: http::StatusCode, headers: http::HeaderMap) {
        crate::source::lock(&self.0).push((status, headers));
    }

    /// The interim answers recorded so far, in order.
    pub fn recorded(&self) -> Vec<(http::StatusCode, http::HeaderMap)> {
        crate::source::lock(&self.0).clone()
    }
}

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
