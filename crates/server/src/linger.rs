//! Request bodies an answer leaves unread. A receiver that refuses a
//! request before its body (401 for a wrong token, 413, 409 for a name
//! taken, 503 at a limit) and closes at once makes the client's send fail
//! with a reset: it never reads the refusal and takes it for a network
//! fault. Like nginx's lingering close, what is left of such a body is
//! read and thrown away, up to a bound in bytes and in time, so the client
//! finishes sending and reads the answer.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// The most of an unread body the receiver reads to let its answer be
/// heard: a block of the command's default 8 MiB, and more.
const LINGER_BYTES: u64 = 16 << 20;
/// The longest it reads one.
const LINGER_TIME: Duration = Duration::from_secs(5);

/// A request body that, dropped before its end, is drained (boundedly) by
/// a task of its own.
pub(crate) struct Lingering<B: Body<Data = Bytes> + Send + 'static> {
    inner: Option<Pin<Box<B>>>,
    ended: bool,
}

impl<B: Body<Data = Bytes> + Send + 'static> Lingering<B> {
    pub(crate) fn new(body: B) -> Self {
        Lingering {
            inner: Some(Box::pin(body)),
            ended: false,
        }
    }
}

impl<B: Body<Data = Bytes> + Send + 'static> Body for Lingering<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = inner.as_mut().poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl<B: Body<Data = Bytes> + Send + 'static> Drop for Lingering<B> {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else {
            return;
        };
        if self.ended || body.is_end_stream() || body.size_hint().lower() > LINGER_BYTES {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let drain = async {
                let mut read = 0u64;
                while let Some(Ok(frame)) = body.frame().await {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if read > LINGER_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        });
    }
}
