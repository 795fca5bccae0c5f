//! Interim answers (`1xx`), which hyper's server cannot send itself: the
//! draft's `104 (Upload Resumption Supported)` tells a client where its
//! upload is before the final answer, so that a client whose connection
//! breaks mid-body (Apple's URLSession) resumes instead of starting again.
//!
//! Over HTTP/1.1 a connection's bytes pass [`InterimIo`]; a handler given
//! its connection's [`Interim`] (in the request's extensions) queues an
//! interim head, which goes out on the socket before anything hyper writes
//! next, and at once if hyper is reading the request's body meanwhile.
//! Over HTTP/1.1 nothing of the final answer is written while a request's
//! body is read, so the head never lands inside another message. Over
//! HTTP/2 (served by [`crate::http2`]) the stream's own handle sends it as
//! a `HEADERS` frame.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use fileuploader_wire::sync::lock;
use http::{HeaderMap, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The interim heads an HTTP/1.1 connection has yet to write.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    bytes: Vec<u8>,
    /// The connection's task, to wake when a head is queued.
    waker: Option<Waker>,
}

/// Where a request's interim answers go: its HTTP/1.1 connection's queue,
/// or its HTTP/2 stream.
#[derive(Debug, Clone)]
pub(crate) enum Interim {
    /// Queued for the connection's socket.
    Http1(Arc<Mutex<Pending>>),
    /// Sent on the stream, before its final answer.
    Http2(Arc<Mutex<h2::server::SendResponse<Bytes>>>),
}

impl Interim {
    /// Sends an interim answer of `status` with `headers`, as far as the
    /// connection allows (one it cannot take is left out: the final
    /// answer still comes).
    pub(crate) fn send(&self, status: StatusCode, headers: &HeaderMap) {
        match self {
            Interim::Http1(pending) => {
                let mut head = format!(
                    "HTTP/1.1 {} {}\r\n",
                    status.as_u16(),
                    status
                        .canonical_reason()
                        .unwrap_or("Upload Resumption Supported")
                )
                .into_bytes();
                for (name, value) in headers {
                    head.extend_from_slice(name.as_str().as_bytes());
                    head.extend_from_slice(b": ");
                    head.extend_from_slice(value.as_bytes());
                    head.extend_from_slice(b"\r\n");
                }
                head.extend_from_slice(b"\r\n");
                let mut pending = lock(pending);
                pending.bytes.extend_from_slice(&head);
                if let Some(waker) = pending.waker.take() {
                    waker.wake();
                }
            }
            Interim::Http2(stream) => {
                let mut head = http::Response::new(());
                *head.status_mut() = status;
                *head.headers_mut() = headers.clone();
                if let Err(e) = lock(stream).send_informational(head) {
                    tracing::debug!("an interim answer could not be sent: {e}");
                }
            }
        }
    }
}

/// A connection that writes queued interim answers before anything else.
pub(crate) struct InterimIo<I> {
    inner: I,
    pending: Arc<Mutex<Pending>>,
}

impl<I> InterimIo<I> {
    /// `inner`, and the handle its handlers queue interim answers with.
    pub(crate) fn new(inner: I) -> (Self, Interim) {
        let pending = Arc::new(Mutex::new(Pending::default()));
        (
            InterimIo {
                inner,
                pending: pending.clone(),
            },
            Interim::Http1(pending),
        )
    }
}

impl<I: AsyncWrite + Unpin> InterimIo<I> {
    /// Writes what is queued; ready once nothing is.
    fn write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut pending = lock(&self.pending);
        pending.waker = Some(cx.waker().clone());
        if pending.bytes.is_empty() {
            return Poll::Ready(Ok(()));
        }
        while !pending.bytes.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &pending.bytes) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    pending.bytes.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Through any buffer of the stream's (TLS), onto the wire.
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for InterimIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // While a body is read the answer has not begun: a queued head
        // goes out now (a failure to write shows on the next write).
        if let Poll::Ready(Err(e)) = this.write_queued(cx) {
            tracing::debug!("an interim answer could not be written: {e}");
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for InterimIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.write_queued(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.write_queued(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
