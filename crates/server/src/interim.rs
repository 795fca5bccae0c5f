//! Interim answers (`1xx`) over HTTP/1.1, which hyper's server cannot send
//! itself: the draft's `104 (Upload Resumption Supported)` tells a client
//! where its upload is before the final answer, so that a client whose
//! connection breaks mid-body (Apple's URLSession) resumes instead of
//! starting again.
//!
//! A connection's bytes pass [`InterimIo`]; a handler given its
//! connection's [`Interim`] (in the request's extensions, for HTTP/1.1
//! requests only) queues an interim head, which goes out on the socket
//! before anything hyper writes next, and at once if hyper is reading the
//! request's body meanwhile. Over HTTP/1.1 nothing of the final answer is
//! written while a request's body is read, so the head never lands inside
//! another message.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use fileuploader_wire::sync::lock;
use http::{HeaderMap, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The connection's task, to wake when a head is queued.
    waker: Option<Waker>,
}

/// The interim answers queued for one HTTP/1.1 connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interim(Arc<Mutex<Pending>>);

impl Interim {
    /// Queues an interim answer of `status` with `headers`.
    pub(crate) fn send(&self, status: StatusCode, headers: &HeaderMap) {
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
        let mut pending = lock(&self.0);
        pending.bytes.extend_from_slice(&head);
        if let Some(waker) = pending.waker.take() {
            waker.wake();
        }
    }
}

/// A connection that writes queued interim answers before anything else.
pub(crate) struct InterimIo<I> {
    inner: I,
    interim: Interim,
}

impl<I> InterimIo<I> {
    /// `inner`, and the handle its handlers queue interim answers with.
    pub(crate) fn new(inner: I) -> (Self, Interim) {
        let interim = Interim::default();
        (
            InterimIo {
                inner,
                interim: interim.clone(),
            },
            interim,
        )
    }
}

impl<I: AsyncWrite + Unpin> InterimIo<I> {
    /// Writes what is queued; ready once nothing is.
    fn write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut pending = lock(&self.interim.0);
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
