//! What one client may cost the receiver: connections, time, and the bytes
//! of a form that are held in memory rather than streamed to disk.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fileuploader_wire::sync::lock;
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
    /// The slowest a request body may arrive, in bytes per second averaged
    /// over [`rate_window`](Self::rate_window); slower is answered 408 and
    /// the connection closed (0: no minimum).
    pub min_rate: u64,
    /// The span over which [`min_rate`](Self::min_rate) is measured.
    pub rate_window: Duration,
    /// How long the receiver may wait to write an answer to a client that
    /// does not read it before closing the connection.
    pub send_timeout: Duration,
    /// Requests in flight at once on one HTTP/2 connection.
    pub max_streams: u32,
    /// Requests in flight at once, all clients together; one more is
    /// answered 503 at once.
    pub max_requests: usize,
    /// Requests in flight at once for one credential (one token, one
    /// signed URL; not counted when access is open, where only
    /// [`max_requests`](Self::max_requests) holds); one more is answered
    /// 503 at once.
    pub max_requests_per_credential: usize,
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
            min_rate: 256,
            rate_window: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            max_streams: 16,
            max_requests: 512,
            max_requests_per_credential: 64,
        }
    }
}

/// Descriptors kept aside for the listener, the records, logs and such.
const SPARE_DESCRIPTORS: u64 = 128;

impl Limits {
    /// These limits, fitted to the file descriptors the process may open:
    /// each connection holds one, each request in flight up to two (its
    /// partial or temporary file and the landed one). The soft limit is
    /// raised as far as the hard one allows; where that is not enough,
    /// connections and requests are lowered to fit, with a warning, so no
    /// client ever brings the receiver to "too many open files".
    pub(crate) fn fitted_to_descriptors(mut self) -> Self {
        let needed = self.max_connections as u64 + 2 * self.max_requests as u64 + SPARE_DESCRIPTORS;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid resource and a pointer to an rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return self;
        }
        if limit.rlim_cur < needed {
            let raised = libc::rlimit {
                rlim_cur: needed.min(limit.rlim_max),
                rlim_max: limit.rlim_max,
            };
            // SAFETY: as above; the soft limit stays within the hard one.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit.rlim_cur = raised.rlim_cur;
            }
        }
        if limit.rlim_cur < needed {
            let room = limit.rlim_cur.saturating_sub(SPARE_DESCRIPTORS);
            self.max_connections = self.max_connections.min((room / 2) as usize).max(1);
            self.max_requests = self.max_requests.min((room / 4) as usize).max(1);
            tracing::warn!(
                "the process may open {} files, fewer than the {needed} the limits need: serving at most {} connections and {} requests at once; raise `ulimit -n` for more",
                limit.rlim_cur,
                self.max_connections,
                self.max_requests
            );
        }
        self
    }
}

/// The requests in flight, all together and per credential, so that one
/// credential cannot take every writer, open file or blocking thread.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    counts: std::sync::Mutex<(usize, std::collections::HashMap<String, usize>)>,
}

/// A request let in; it leaves when dropped.
#[derive(Debug)]
pub(crate) struct Admitted<'a> {
    admission: &'a Admission,
    owner: String,
}

impl Admission {
    /// Lets in a request of `owner`, or refuses it (503) at once when the
    /// receiver, or that credential, has as many in flight as allowed.
    pub(crate) fn admit(
        &self,
        owner: &str,
        limits: &Limits,
    ) -> Result<Admitted<'_>, crate::Refusal> {
        let mut counts = lock(&self.counts);
        let (all, each) = &mut *counts;
        let mine = each.get(owner).copied().unwrap_or(0);
        let busy = if *all >= limits.max_requests {
            Some(format!(
                "the receiver has {} requests in flight, its most; try again",
                limits.max_requests
            ))
        } else if !owner.is_empty() && mine >= limits.max_requests_per_credential {
            Some(format!(
                "these credentials have {} requests in flight, their most; wait for one to end",
                limits.max_requests_per_credential
            ))
        } else {
            None
        };
        if let Some(why) = busy {
            return Err(crate::Refusal::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                why,
            ));
        }
        *all += 1;
        each.insert(owner.to_owned(), mine + 1);
        Ok(Admitted {
            admission: self,
            owner: owner.to_owned(),
        })
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut counts = lock(&self.admission.counts);
        let (all, each) = &mut *counts;
        *all = all.saturating_sub(1);
        if let Some(n) = each.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                each.remove(&self.owner);
            }
        }
    }
}

/// Why a request body was cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cut {
    /// No byte for the idle timeout.
    Idle(Duration),
    /// Fewer bytes than the minimum rate asks over its window.
    Slow {
        got: u64,
        window: Duration,
        min_rate: u64,
    },
    /// A preamble or part head longer than the limit.
    PartHead(usize),
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cut::Idle(d) => write!(f, "no byte of the body for {d:?}"),
            Cut::Slow {
                got,
                window,
                min_rate,
            } => write!(
                f,
                "the body came at {} bytes/s over {window:?}, below the receiver's minimum of {min_rate} bytes/s",
                got / window.as_secs().max(1)
            ),
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
/// timeout, and each rate window must bring its minimum of bytes; in a
/// form, the first boundary within `max_part_head` bytes, and each part's
/// head (the boundary line through the blank line) within as many.
pub(crate) struct Guarded<S> {
    inner: S,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    rate: Option<Rate>,
    scan: Option<HeadScan>,
}

/// The bytes of the current rate window, and when it ends.
struct Rate {
    window: Duration,
    min_rate: u64,
    got: u64,
    ends: Pin<Box<Sleep>>,
}

impl Rate {
    fn new(limits: &Limits) -> Option<Self> {
        (limits.min_rate > 0 && !limits.rate_window.is_zero()).then(|| Rate {
            window: limits.rate_window,
            min_rate: limits.min_rate,
            got: 0,
            ends: Box::pin(tokio::time::sleep(limits.rate_window)),
        })
    }

    /// `Err` when a window ended short of its bytes; else a new one begins.
    fn poll_window(&mut self, cx: &mut Context<'_>) -> Result<(), Cut> {
        while self.ends.as_mut().poll(cx).is_ready() {
            let needed = self.min_rate.saturating_mul(self.window.as_secs().max(1));
            if self.got < needed {
                return Err(Cut::Slow {
                    got: self.got,
                    window: self.window,
                    min_rate: self.min_rate,
                });
            }
            self.got = 0;
            let next = self.ends.deadline() + self.window;
            self.ends.as_mut().reset(next);
        }
        Ok(())
    }
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
            rate: Rate::new(limits),
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
        if let Some(Err(cut)) = this.rate.as_mut().map(|r| r.poll_window(cx)) {
            return Poll::Ready(Some(Err(Box::new(cut))));
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let deadline = Instant::now() + this.idle;
                this.sleep.as_mut().reset(deadline);
                if let Some(rate) = &mut this.rate {
                    rate.got += chunk.len() as u64;
                }
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

/// A connection whose writes may not stall for longer than the send
/// timeout: a client that stops reading its answers (while it pipelines
/// requests, or holds a stream open) loses its connection.
pub(crate) struct SendGuarded<I> {
    inner: I,
    timeout: Duration,
    /// Armed while a write waits on the client.
    stalled: Pin<Box<Sleep>>,
    armed: bool,
}

impl<I> SendGuarded<I> {
    pub(crate) fn new(inner: I, timeout: Duration) -> Self {
        SendGuarded {
            inner,
            timeout,
            stalled: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }

    /// What a write that returned `poll` comes to: a stall longer than the
    /// timeout is an error.
    fn judge<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.timeout;
            self.stalled.as_mut().reset(deadline);
        }
        match self.stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing of its answers for {:?}",
                    self.timeout
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SendGuarded<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SendGuarded<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.judge(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.judge(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.judge(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
