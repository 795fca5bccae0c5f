//! Request bodies fed piece by piece from another task, so bytes stream to
//! the object store with at most a few pieces in memory.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use fileuploader_store::{ErrorKind, StoreError};
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// Pieces in flight between a feeder and the store's request.
const DEPTH: usize = 4;
/// How long the store may go without taking a piece before the request
/// is given up (503).
pub(crate) const STALL: Duration = Duration::from_secs(60);

/// The feeding end.
#[derive(Debug)]
pub(crate) struct Feed {
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl Feed {
    /// Hands `bytes` on; fails if the request ended or took nothing for
    /// [`STALL`].
    pub(crate) async fn send(&self, bytes: Bytes) -> Result<(), StoreError> {
        if bytes.is_empty() {
            // A request that took its last byte may have ended already.
            return Ok(());
        }
        match tokio::time::timeout(STALL, self.tx.send(Ok(bytes))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(StoreError::new(
                ErrorKind::Unavailable,
                "the object store ended the request early",
            )),
            Err(_) => Err(stalled()),
        }
    }

    /// Ends the body with an error, so the request fails instead of
    /// storing a short object.
    pub(crate) async fn fail(self, why: String) {
        let _ = self.tx.send(Err(io::Error::other(why))).await;
    }
}

/// The store took nothing for [`STALL`].
pub(crate) fn stalled() -> StoreError {
    StoreError::new(
        ErrorKind::Unavailable,
        format!("the object store took no bytes for {} s", STALL.as_secs()),
    )
}

/// A body of `len` bytes and the end that feeds it.
pub(crate) fn channel(len: u64) -> (Feed, ByteStream) {
    let (tx, rx) = mpsc::channel(DEPTH);
    let body = ChannelBody { rx, left: len };
    (Feed { tx }, ByteStream::from_body_1_x(body))
}

struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    left: u64,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                if bytes.len() as u64 > self.left {
                    return Poll::Ready(Some(Err(io::Error::other("more bytes than declared"))));
                }
                self.left -= bytes.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) if self.left > 0 => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the body ended {} bytes short", self.left),
            )))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
