//! Request bodies built from frames, so block bytes are never copied.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// A request body made of frames: for a block, the multipart prefix, the
/// block's bytes (shared with the buffer they were read into) and the suffix.
///
/// It implements [`http_body::Body`] with an exact size hint, so HTTP
/// transports stream it as is; other transports take the frames with
/// [`UploadBody::into_frames`] and write them in order.
#[derive(Debug, Clone, Default)]
pub struct UploadBody {
    frames: VecDeque<Bytes>,
    len: u64,
    data_frame: Option<usize>,
    sent: Option<Arc<AtomicU64>>,
}

impl UploadBody {
    /// An empty body.
    pub fn new() -> Self {
        UploadBody::default()
    }

    /// Appends a framing frame (multipart headers, boundaries).
    pub fn push(&mut self, frame: Bytes) {
        self.len += frame.len() as u64;
        if !frame.is_empty() {
            self.frames.push_back(frame);
        }
    }

    /// Appends the frame holding the source's bytes. Its length is what the
    /// progress view counts as sent.
    pub fn push_data(&mut self, frame: Bytes) {
        self.data_frame = Some(self.frames.len());
        self.len += frame.len() as u64;
        self.frames.push_back(frame);
    }

    /// The exact length of the body in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counts the data frame's bytes into `counter` as they are handed out.
    pub(crate) fn count_sent(&mut self, counter: Arc<AtomicU64>) {
        self.sent = Some(counter);
    }

    /// The frames in order, for transports that write them themselves. The
    /// data frame counts as sent from here on.
    pub fn into_frames(self) -> VecDeque<Bytes> {
        if let (Some(n), Some(sent)) = (self.data_frame, &self.sent) {
            sent.fetch_add(self.frames[n].len() as u64, Ordering::Relaxed);
        }
        self.frames
    }

    /// The whole body as one buffer. This copies; meant for tests.
    pub fn to_bytes(&self) -> Bytes {
        let mut all = Vec::with_capacity(self.len as usize);
        for frame in &self.frames {
            all.extend_from_slice(frame);
        }
        all.into()
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let Some(frame) = this.frames.pop_front() else {
            return Poll::Ready(None);
        };
        match this.data_frame {
            Some(0) => {
                if let Some(sent) = &this.sent {
                    sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
                }
                this.data_frame = None;
            }
            Some(n) => this.data_frame = Some(n - 1),
            None => {}
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.frames.iter().map(|f| f.len() as u64).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn frames_stream_in_order_and_count_only_data() {
        let data = Bytes::from_static(b"0123456789");
        let mut body = UploadBody::new();
        body.push(Bytes::from_static(b"<head>"));
        body.push_data(data.clone());
        body.push(Bytes::from_static(b"<tail>"));
        let sent = Arc::new(AtomicU64::new(0));
        body.count_sent(sent.clone());
        assert_eq!(body.len(), 22);
        assert_eq!(body.size_hint().exact(), Some(22));

        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(&frames[1][..], b"0123456789");
        // The data frame is the very buffer the block was read into: no copy.
        assert_eq!(frames[1].as_ptr(), data.as_ptr());
        assert_eq!(sent.load(Ordering::Relaxed), 10);
    }
}
