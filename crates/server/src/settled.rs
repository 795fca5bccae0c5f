//! A body stream that never reports its end in the same poll that brought
//! its last bytes.
//!
//! multer 3.1, while looking for the first boundary, polls the body twice in
//! one call and, if the second poll both delivers the rest of the body and
//! ends it, reports "incomplete multipart stream" without looking at the
//! bytes it just buffered. Over HTTP/2 the connection task fills a request's
//! body from another thread, so a small block can arrive whole between the
//! two polls: about one 10 KiB block in five thousand was refused that way.
//! Holding the end back for one wake-up means a poll that ends the stream
//! never carries new bytes, so multer always looks at what it holds first.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;

/// Wraps a stream, returning `Pending` (and waking at once) when it first
/// ends, and the end only on the poll after.
pub(crate) struct SettledEnd<S> {
    inner: S,
    ended: bool,
}

impl<S> SettledEnd<S> {
    pub(crate) fn new(inner: S) -> Self {
        SettledEnd {
            inner,
            ended: false,
        }
    }
}

impl<S: Stream + Unpin> Stream for SettledEnd<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(None) => {
                self.ended = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::StreamExt;

    /// A body that is not there at the first poll, then arrives whole and
    /// ends at the next: what a fast HTTP/2 connection task can produce.
    fn arrives_whole_after_one_pending(body: Bytes) -> impl Stream<Item = std::io::Result<Bytes>> {
        let mut first = true;
        let mut rest = Some(body);
        futures_util::stream::poll_fn(move |cx| {
            if std::mem::take(&mut first) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(rest.take().map(Ok))
        })
    }

    fn form(boundary: &str, data: &[u8]) -> Bytes {
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"RemoteFile\"; filename=\"a.bin\"\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        Bytes::from(body)
    }

    async fn file_part(
        stream: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    ) -> multer::Result<Vec<u8>> {
        let mut parts = multer::Multipart::new(stream, "b0undary");
        let mut data = Vec::new();
        while let Some(field) = parts.next_field().await? {
            data.extend_from_slice(&field.bytes().await?);
        }
        Ok(data)
    }

    #[tokio::test]
    async fn a_body_arriving_whole_after_a_pending_poll_parses() {
        let data = vec![0xA5; 10240];
        let body = form("b0undary", &data);
        let parsed = file_part(SettledEnd::new(Box::pin(arrives_whole_after_one_pending(
            body,
        ))))
        .await;
        assert_eq!(parsed.expect("the form parses"), data);
    }

    #[tokio::test]
    async fn items_pass_through_and_the_end_comes_one_poll_late() {
        let mut stream = SettledEnd::new(futures_util::stream::iter([1, 2]));
        assert_eq!(stream.next().await, Some(1));
        assert_eq!(stream.next().await, Some(2));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(Pin::new(&mut stream).poll_next(&mut cx), Poll::Pending);
        assert_eq!(Pin::new(&mut stream).poll_next(&mut cx), Poll::Ready(None));
        assert_eq!(Pin::new(&mut stream).poll_next(&mut cx), Poll::Ready(None));
    }
}
