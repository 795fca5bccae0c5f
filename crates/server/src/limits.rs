//! What one client may cost the receiver: connections, time, and the bytes
//! of a form that are held in memory rather than streamed to disk.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// The receiver's limits; each has a default fit for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// How long a client may take to send a request's head, and how long
    /// a connection with no request in flight stays open (HTTP/1.1 and
    /// HTTP/2).
    pub header_timeout: Duration,
    /// How long a request body may go without a byte before it is answered
    /// 408.
    pub idle_timeout: Duration,
    /// The largest request head (HTTP/1.1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// The most bytes before a form's first boundary, and of one part's
    /// headers; beyond them the request is refused (400).
    pub max_part_head: usize,
    /// The most text fields in one request (400 beyond).
    pub max_fields: usize,
    /// The longest text field (400 beyond).
    pub max_field_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_part_head: 16 * 1024,
            max_fields: 64,
            max_field_bytes: 64 * 1024,
        }
    }
}

/// Why a request body was cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cut {
    /// No byte for the idle timeout.
    Idle(Duration),
    /// A preamble or part head longer than the limit.
    PartHead(usize),
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cut::Idle(d) => write!(f, "no byte of the body for {d:?}"),
            Cut::PartHead(n) => write!(
                f,
                "a multipart boundary or part head did not end within {n} bytes"
            ),
        }
    }
}

impl std::error::Error for Cut {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body checked as it streams: each read must come within the idle
/// timeout; in a form, the first boundary within `max_part_head` bytes, and
/// each part's head (the boundary line through the blank line) within as
/// many.
pub(crate) struct Guarded<S> {
    inner: S,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    scan: Option<HeadScan>,
}

impl<S> Guarded<S> {
    /// A form body with this boundary.
    pub(crate) fn new(inner: S, boundary: &str, limits: &Limits) -> Self {
        let mut guarded = Self::raw(inner, limits);
        guarded.scan = Some(HeadScan::new(boundary, limits.max_part_head));
        guarded
    }

    /// A body of plain bytes.
    pub(crate) fn raw(inner: S, limits: &Limits) -> Self {
        Guarded {
            inner,
            idle: limits.idle_timeout,
            sleep: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            scan: None,
        }
    }
}

impl<S> Stream for Guarded<S>
where
    S: Stream<Item = Result<Bytes, BoxError>> + Unpin,
{
    type Item = Result<Bytes, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let deadline = Instant::now() + this.idle;
                this.sleep.as_mut().reset(deadline);
                match this.scan.as_mut().map_or(Ok(()), |s| s.feed(&chunk)) {
                    Ok(()) => Poll::Ready(Some(Ok(chunk))),
                    Err(cut) => Poll::Ready(Some(Err(Box::new(cut)))),
                }
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Cut::Idle(this.idle))))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

/// Where a scan of a form stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the first boundary line.
    Preamble,
    /// In a part's head: after a boundary, before the blank line.
    Head,
    /// In a part's body.
    Body,
}

/// Follows boundaries and blank lines across chunks, counting the bytes of
/// the preamble and of each part head.
#[derive(Debug)]
struct HeadScan {
    /// `\r\n--boundary`; the first boundary may come without its `\r\n`.
    delimiter: Vec<u8>,
    max: usize,
    phase: Phase,
    /// Bytes of the current preamble or head so far.
    counted: usize,
    /// The end of the previous chunk, so patterns split across chunks are
    /// found.
    tail: Vec<u8>,
}

impl HeadScan {
    fn new(boundary: &str, max: usize) -> Self {
        HeadScan {
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            max,
            phase: Phase::Preamble,
            counted: 0,
            tail: b"\r\n".to_vec(),
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), Cut> {
        let keep = self.delimiter.len().max(4);
        let mut window = std::mem::take(&mut self.tail);
        let old = window.len();
        window.extend_from_slice(chunk);
        let mut at = 0;
        loop {
            let (pattern, next): (&[u8], Phase) = match self.phase {
                Phase::Preamble | Phase::Body => (&self.delimiter, Phase::Head),
                Phase::Head => (b"\r\n\r\n", Phase::Body),
            };
            let found =
                memchr::memmem::find(&window[at..], pattern).map(|i| at + i + pattern.len());
            match found {
                Some(end) => {
                    if self.phase != Phase::Body {
                        self.counted += end.saturating_sub(at.max(old));
                        if self.counted > self.max {
                            return Err(Cut::PartHead(self.max));
                        }
                    }
                    self.phase = next;
                    self.counted = 0;
                    at = end;
                }
                None => {
                    if self.phase != Phase::Body {
                        self.counted += window.len() - at.max(old);
                        if self.counted > self.max {
                            return Err(Cut::PartHead(self.max));
                        }
                    }
                    break;
                }
            }
        }
        let from = window.len().saturating_sub(keep).max(at);
        self.tail = window[from..].to_vec();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]], max: usize) -> Result<Phase, Cut> {
        let mut s = HeadScan::new("XyZ", max);
        for c in chunks {
            s.feed(c)?;
        }
        Ok(s.phase)
    }

    #[test]
    fn a_form_passes_in_any_cut_and_long_heads_or_preambles_do_not() {
        let form: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n0123456789\r\n--XyZ\r\nContent-Disposition: form-data; name=\"g\"\r\n\r\nv\r\n--XyZ--\r\n";
        for cut in 0..form.len() {
            let (a, b) = form.split_at(cut);
            assert!(scan(&[a, b], 100).is_ok(), "cut at {cut}");
        }
        let body_only = [b"--XyZ\r\nh: 1\r\n\r\n".as_slice(), &[7u8; 100_000]];
        assert_eq!(
            scan(&body_only, 100),
            Ok(Phase::Body),
            "bodies are not counted"
        );
        assert_eq!(
            scan(&[&[b'a'; 200]], 100),
            Err(Cut::PartHead(100)),
            "no boundary within the limit"
        );
        let endless_head = [b"--XyZ\r\nContent-Type: ".as_slice(), &[b'x'; 200]];
        assert_eq!(scan(&endless_head, 100), Err(Cut::PartHead(100)));
        let small_chunks: Vec<&[u8]> = std::iter::repeat_n(b"ab".as_slice(), 60).collect();
        assert_eq!(scan(&small_chunks, 100), Err(Cut::PartHead(100)));
    }
}
