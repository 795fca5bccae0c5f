//! The request body as hyper sees it: the core's frames, sliced so progress
//! is seen often, with every poll noted for the stall timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fileuploader_core::{Error, UploadBody};
use http_body::{Body, Frame, SizeHint};

/// The largest frame handed to hyper. Slices share the block's buffer.
const SLICE: usize = 256 * 1024;

/// When bytes last moved in either direction, for the stall timeout, and
/// how many have, for the low-speed limit.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    start: Instant,
    last_nanos: Arc<AtomicU64>,
    moved: Arc<AtomicU64>,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_nanos: Arc::default(),
            moved: Arc::default(),
        }
    }

    /// Notes `n` bytes carried either way.
    pub(crate) fn carried(&self, n: usize) {
        self.moved.fetch_add(n as u64, Ordering::Relaxed);
        self.touch();
    }

    /// The bytes carried so far.
    pub(crate) fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    pub(crate) fn touch(&self) {
        let nanos = self.start.elapsed().as_nanos() as u64;
        self.last_nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    pub(crate) fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last_nanos.load(Ordering::Relaxed))
    }
}

/// The core's body, handed to hyper in slices of at most [`SLICE`] bytes.
/// Every slice, and the body itself, holds a share of a token; [`BodyGone`]
/// resolves once hyper has let go of all of them: the bytes were written, or
/// the request was abandoned.
#[derive(Debug)]
pub(crate) struct SlicedBody {
    inner: UploadBody,
    pending: Bytes,
    activity: Activity,
    token: Token,
}

type Token = Arc<tokio::sync::oneshot::Sender<()>>;

/// Resolves when the matching [`SlicedBody`] and every slice of it are gone.
pub(crate) type BodyGone = tokio::sync::oneshot::Receiver<()>;

/// A frame's bytes with a share of the token: slices of it share it too, so
/// the token outlives every byte hyper still holds. No bytes are copied.
struct Tracked {
    bytes: Bytes,
    _token: Token,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl SlicedBody {
    pub(crate) fn new(inner: UploadBody, activity: Activity) -> (Self, BodyGone) {
        let (gone, wait) = tokio::sync::oneshot::channel();
        let body = SlicedBody {
            inner,
            pending: Bytes::new(),
            activity,
            token: Arc::new(gone),
        };
        (body, wait)
    }
}

impl Body for SlicedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        this.activity.touch();
        if this.pending.is_empty() {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let token = this.token.clone();
                        this.pending = Bytes::from_owner(Tracked {
                            bytes: data,
                            _token: token,
                        });
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
        let n = this.pending.len().min(SLICE);
        this.activity.carried(n);
        Poll::Ready(Some(Ok(Frame::data(this.pending.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.inner.size_hint();
        SizeHint::with_exact(rest.exact().unwrap_or(0) + self.pending.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn slices_share_the_block_buffer() {
        let data = Bytes::from(vec![7u8; SLICE * 2 + 5]);
        let mut inner = UploadBody::new();
        inner.push(Bytes::from_static(b"head"));
        inner.push_data(data.clone());
        let (mut body, gone) = SlicedBody::new(inner, Activity::new());
        assert_eq!(body.size_hint().exact(), Some(4 + data.len() as u64));
        let mut frames = Vec::new();
        while let Some(f) = body.frame().await {
            frames.push(f.unwrap().into_data().unwrap());
        }
        let lens: Vec<_> = frames.iter().map(Bytes::len).collect();
        assert_eq!(lens, [4, SLICE, SLICE, 5]);
        assert_eq!(frames[1].as_ptr(), data.as_ptr());
        assert_eq!(frames[3].as_ptr(), data[SLICE * 2..].as_ptr());
        drop(body);
        let mut gone = gone;
        assert!(
            gone.try_recv()
                .is_err_and(|e| e == tokio::sync::oneshot::error::TryRecvError::Empty),
            "slices still held"
        );
        drop(frames);
        assert!(
            gone.await.is_err(),
            "the wait ends when the last slice is gone"
        );
    }
}
