//! Request bodies built from parts, so block bytes are never copied: framing
//! bytes, block bytes already in memory, and block bytes read from the source
//! piece by piece while the body is sent.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use crate::error::{code, Error, ErrorKind};
use crate::rate::RateLimit;
use crate::source::{Source, READ_PIECE};

/// The bytes of one block, as a dialect gets them to encode: in memory, or a
/// range of the source that the body reads in pieces of at most
/// [`READ_PIECE`] bytes as it is sent.
#[derive(Debug, Clone)]
pub struct BlockData(BlockBytes);

#[derive(Debug, Clone)]
enum BlockBytes {
    Memory(Bytes),
    Source {
        source: Arc<dyn Source>,
        offset: u64,
        len: u64,
    },
}

impl BlockData {
    /// Block bytes held in memory.
    pub fn memory(bytes: Bytes) -> Self {
        BlockData(BlockBytes::Memory(bytes))
    }

    /// `len` bytes of `source` at `offset`. A block of at most
    /// [`READ_PIECE`] bytes is read now; a larger one is read piece by piece
    /// as its body is sent, so no buffer of the whole block ever exists.
    ///
    /// # Errors
    ///
    /// The source's read errors.
    pub async fn read(source: &Arc<dyn Source>, offset: u64, len: u64) -> Result<Self, Error> {
        if len <= READ_PIECE as u64 {
            let bytes = source.read_at(offset, len as usize).await?;
            return Ok(BlockData::memory(bytes));
        }
        Ok(BlockData(BlockBytes::Source {
            source: source.clone(),
            offset,
            len,
        }))
    }

    /// The same bytes without the first `n` (all of them if `n` is more).
    #[must_use]
    pub fn skip(self, n: u64) -> Self {
        match self.0 {
            BlockBytes::Memory(bytes) => {
                let n = (n as usize).min(bytes.len());
                BlockData::memory(bytes.slice(n..))
            }
            BlockBytes::Source {
                source,
                offset,
                len,
            } => {
                let n = n.min(len);
                BlockData(BlockBytes::Source {
                    source,
                    offset: offset + n,
                    len: len - n,
                })
            }
        }
    }

    /// The first `n` bytes (all of them if `n` is more).
    #[must_use]
    pub fn take(self, n: u64) -> Self {
        match self.0 {
            BlockBytes::Memory(bytes) => {
                let n = (n as usize).min(bytes.len());
                BlockData::memory(bytes.slice(..n))
            }
            BlockBytes::Source {
                source,
                offset,
                len,
            } => BlockData(BlockBytes::Source {
                source,
                offset,
                len: len.min(n),
            }),
        }
    }

    /// The bytes, when they are in memory.
    pub fn bytes(&self) -> Option<&Bytes> {
        match &self.0 {
            BlockBytes::Memory(bytes) => Some(bytes),
            BlockBytes::Source { .. } => None,
        }
    }

    /// The number of bytes.
    pub fn len(&self) -> u64 {
        match &self.0 {
            BlockBytes::Memory(b) => b.len() as u64,
            BlockBytes::Source { len, .. } => *len,
        }
    }

    /// Whether the block has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request body made of parts: for a block, the multipart prefix, the
/// block's bytes, the CRC32C of those bytes, computed as they pass, and the
/// suffix.
///
/// It implements [`http_body::Body`] with an exact size hint, so HTTP
/// transports stream it as is; other transports take its bytes in order with
/// [`UploadBody::next_chunk`]. Block bytes are never copied: a chunk is either
/// framing, the block's own buffer, or a piece of the source read just before
/// it is handed out. A piece that cannot be read fails the body with the
/// source's error, and the core reports that error for the block.
#[derive(Debug, Default)]
pub struct UploadBody {
    parts: VecDeque<Part>,
    len: u64,
    /// Whether a digest part needs the CRC32C of the data handed out.
    checksummed: bool,
    crc: u32,
    meter: Meter,
    /// A chunk the rate holds back, and until when.
    pace: Option<(Bytes, Pin<Box<tokio::time::Sleep>>)>,
    /// The rest of a chunk larger than [`PACE_SLICE`], paced next.
    unpaced: Bytes,
}

/// The most bytes the rate books at once: a block in memory (one chunk of
/// up to the block size) leaves in slices of this, so its bytes flow at
/// the rate instead of waiting, all of them, for the whole block's time
/// (at a rate below block size ÷ idle timeout, no byte moved for longer
/// than the idle timeout, on every attempt).
const PACE_SLICE: usize = 64 << 10;

/// How a body is measured as its bytes leave: made by the run for each
/// request and handed to the body once ([`UploadBody::measure`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Meter {
    /// Counts the source's bytes as they leave (the job's progress).
    pub(crate) sent: Option<Arc<AtomicU64>>,
    /// Told how the sending went.
    pub(crate) report: Option<Arc<BodyReport>>,
    /// Whether the report carries the CRC32C of the source's bytes.
    pub(crate) crc32c: bool,
    /// The byte rate shared with every other body of the manager.
    pub(crate) rate: Option<Arc<RateLimit>>,
}

/// What a body tells the core about its sending, once the transport is done
/// with it.
#[derive(Debug, Default)]
pub(crate) struct BodyReport {
    /// The first source read error, whatever the transport made of the cut
    /// body.
    pub(crate) read_failure: OnceLock<Error>,
    /// The CRC32C of the source's bytes, set once the last byte was handed
    /// out (when asked for).
    pub(crate) crc32c: OnceLock<u32>,
    /// Whether every byte of the body was handed out.
    pub(crate) complete: AtomicBool,
}

/// The length of a digest: a CRC32C as lowercase hex.
const DIGEST_LEN: u64 = 8;

#[derive(Debug)]
enum Part {
    Framing(Bytes),
    Data(Bytes),
    Read(PieceReader),
    /// Framing followed by the digest of the data before it.
    Digest(Bytes),
}

impl Clone for UploadBody {
    /// A body that sends the same bytes from the start of what is left; a
    /// piece being read is read again.
    fn clone(&self) -> Self {
        let parts = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Framing(b) => Part::Framing(b.clone()),
                Part::Data(b) => Part::Data(b.clone()),
                Part::Read(r) => Part::Read(PieceReader::new(r.source.clone(), r.offset, r.left)),
                Part::Digest(b) => Part::Digest(b.clone()),
            })
            .collect();
        UploadBody {
            parts,
            len: self.len,
            checksummed: self.checksummed,
            crc: self.crc,
            meter: self.meter.clone(),
            pace: None,
            unpaced: Bytes::new(),
        }
    }
}

impl UploadBody {
    /// An empty body.
    pub fn new() -> Self {
        UploadBody::default()
    }

    /// Appends framing bytes (multipart headers, boundaries).
    pub fn push(&mut self, frame: Bytes) {
        self.len += frame.len() as u64;
        if !frame.is_empty() {
            self.parts.push_back(Part::Framing(frame));
        }
    }

    /// Appends bytes of the source held in memory. They count as sent in the
    /// progress view when they are handed out.
    pub fn push_data(&mut self, data: Bytes) {
        self.len += data.len() as u64;
        if !data.is_empty() {
            self.parts.push_back(Part::Data(data));
        }
    }

    /// Appends a block's bytes, however they are held.
    pub fn push_block(&mut self, block: BlockData) {
        match block.0 {
            BlockBytes::Memory(bytes) => self.push_data(bytes),
            BlockBytes::Source {
                source,
                offset,
                len,
            } => {
                self.len += len;
                self.parts
                    .push_back(Part::Read(PieceReader::new(source, offset, len)));
            }
        }
    }

    /// Appends `head` followed by the CRC32C of the source's bytes pushed
    /// before it, as 8 lowercase hex digits. The CRC is computed as those
    /// bytes are handed out, so a block read from the source is read once.
    pub fn push_digest(&mut self, head: Bytes) {
        self.len += head.len() as u64 + DIGEST_LEN;
        self.checksummed = true;
        self.parts.push_back(Part::Digest(head));
    }

    /// The source's bytes the body has left to send (its length without
    /// framing and digests).
    pub(crate) fn carried(&self) -> u64 {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Data(b) => b.len() as u64,
                Part::Read(r) => r.left,
                Part::Framing(_) | Part::Digest(_) => 0,
            })
            .sum()
    }

    /// The exact length of the body in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Measures the body by `meter` as its bytes leave: progress, the
    /// report (with the CRC32C when asked) and the shared rate.
    pub(crate) fn measure(&mut self, meter: Meter) {
        self.checksummed |= meter.crc32c;
        self.meter = meter;
    }

    /// Books a chunk on the shared rate and hands it out when the rate
    /// says: before, not after, so the last chunk of a body waits its turn
    /// too (a body of one chunk would otherwise go out at once).
    fn paced(
        &mut self,
        mut chunk: Bytes,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(rate) = self.meter.rate.clone() else {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        };
        if chunk.len() > PACE_SLICE {
            self.unpaced = chunk.split_off(PACE_SLICE);
        }
        if let Some(until) = rate.book(chunk.len()) {
            self.pace = Some((chunk, Box::pin(tokio::time::sleep_until(until))));
            return self.held(cx);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    /// The chunk the rate holds, once its time has come.
    fn held(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some((_, sleep)) = &mut self.pace else {
            return Poll::Ready(None);
        };
        ready!(sleep.as_mut().poll(cx));
        let (chunk, _) = self.pace.take().expect("a held chunk");
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    /// The last part was handed out.
    fn finished(&self) {
        if let Some(report) = &self.meter.report {
            if self.checksummed {
                let _ = report.crc32c.set(self.crc);
            }
            report.complete.store(true, Ordering::SeqCst);
        }
    }

    /// The next bytes of the body, in order, for transports that write them
    /// themselves; `None` at the end.
    ///
    /// # Errors
    ///
    /// The source's error when a piece of it cannot be read.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, Error>> {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await?;
        Some(frame.map(|f| f.into_data().unwrap_or_default()))
    }

    /// The whole body in one buffer. This copies every byte; meant for tests
    /// and for transports that must hold a request whole.
    ///
    /// # Errors
    ///
    /// The source's error when a piece of it cannot be read.
    pub async fn into_bytes(mut self) -> Result<Bytes, Error> {
        let mut all = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        while let Some(chunk) = self.next_chunk().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all.into())
    }

    /// Accounts for source bytes handed out: progress and the digest.
    fn pass(&mut self, data: &Bytes) {
        if let Some(sent) = &self.meter.sent {
            sent.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        if self.checksummed {
            self.crc = crc32c::crc32c_append(self.crc, data);
        }
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.pace.is_some() {
            return this.held(cx);
        }
        if !this.unpaced.is_empty() {
            let rest = std::mem::take(&mut this.unpaced);
            return this.paced(rest, cx);
        }
        loop {
            let chunk = match this.parts.front_mut() {
                None => {
                    this.finished();
                    return Poll::Ready(None);
                }
                Some(Part::Framing(b)) => std::mem::take(b),
                Some(Part::Data(b)) => {
                    let b = std::mem::take(b);
                    this.pass(&b);
                    b
                }
                Some(Part::Digest(head)) => {
                    let mut b = BytesMut::with_capacity(head.len() + DIGEST_LEN as usize);
                    b.put_slice(head);
                    b.put_slice(format!("{:08x}", this.crc).as_bytes());
                    b.freeze()
                }
                Some(Part::Read(reader)) => match ready!(reader.poll_piece(cx)) {
                    Some(Ok(piece)) => {
                        this.pass(&piece);
                        return this.paced(piece, cx);
                    }
                    Some(Err(e)) => {
                        if let Some(report) = &this.meter.report {
                            let _ = report.read_failure.set(e.clone());
                        }
                        return Poll::Ready(Some(Err(e)));
                    }
                    None => {
                        this.parts.pop_front();
                        continue;
                    }
                },
            };
            this.parts.pop_front();
            if this.parts.is_empty() {
                this.finished();
            }
            return this.paced(chunk, cx);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty() && self.pace.is_none() && self.unpaced.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        let left = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Framing(b) | Part::Data(b) => b.len() as u64,
                Part::Read(r) => r.left,
                Part::Digest(b) => b.len() as u64 + DIGEST_LEN,
            })
            .sum::<u64>()
            + self.pace.as_ref().map_or(0, |(held, _)| held.len() as u64)
            + self.unpaced.len() as u64;
        SizeHint::with_exact(left)
    }
}

type PieceRead = Pin<Box<dyn Future<Output = Result<Bytes, Error>> + Send>>;

/// Reads a range of a source in pieces of at most [`READ_PIECE`] bytes, one
/// at a time, each when it is asked for.
struct PieceReader {
    source: Arc<dyn Source>,
    offset: u64,
    left: u64,
    reading: Option<PieceRead>,
}

impl fmt::Debug for PieceReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PieceReader")
            .field("source", &self.source)
            .field("offset", &self.offset)
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl PieceReader {
    fn new(source: Arc<dyn Source>, offset: u64, left: u64) -> Self {
        PieceReader {
            source,
            offset,
            left,
            reading: None,
        }
    }

    /// The next piece, or `None` when the range is done.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(READ_PIECE as u64) as usize;
        let (source, offset) = (self.source.clone(), self.offset);
        let reading = self
            .reading
            .get_or_insert_with(|| Box::pin(async move { source.read_at(offset, n).await }));
        let piece = ready!(reading.as_mut().poll(cx));
        self.reading = None;
        let piece = piece.and_then(|p| {
            if p.len() == n {
                Ok(p)
            } else {
                Err(Error::new(
                    ErrorKind::Source,
                    code::READ_FAILED,
                    format!("the source gave {} bytes at {offset} for {n}", p.len()),
                ))
            }
        });
        if piece.is_ok() {
            self.offset += n as u64;
            self.left -= n as u64;
        } else {
            self.left = 0;
        }
        Poll::Ready(Some(piece))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemorySource;
    use async_trait::async_trait;
    use http_body_util::BodyExt;
    use std::time::Duration;

    #[tokio::test]
    async fn parts_stream_in_order_and_count_only_data() {
        let data = Bytes::from_static(b"0123456789");
        let mut body = UploadBody::new();
        body.push(Bytes::from_static(b"<head>"));
        body.push_data(data.clone());
        body.push(Bytes::from_static(b"<tail>"));
        let sent = Arc::new(AtomicU64::new(0));
        body.measure(Meter {
            sent: Some(sent.clone()),
            ..Meter::default()
        });
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

    /// A block held in memory (one chunk as large as the block) leaves at
    /// the rate in slices: its first bytes go within their own time, not
    /// after the whole block's. Found by chaos `expiring` seed 116: 8 MiB blocks at
    /// 2.4 MB/s moved no byte for 3.4 s, past the client's idle timeout,
    /// on every attempt.
    #[tokio::test(start_paused = true)]
    async fn a_block_in_memory_leaves_at_the_rate_in_slices() {
        let block = Bytes::from(vec![7u8; 16 * PACE_SLICE]);
        let mut body = UploadBody::new();
        body.push_data(block.clone());
        body.measure(Meter {
            rate: Some(Arc::new(RateLimit::new(16 * PACE_SLICE as u64))),
            ..Meter::default()
        });
        let start = tokio::time::Instant::now();
        let mut gaps = Vec::new();
        let mut last = start;
        let mut sent = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= PACE_SLICE, "{} bytes at once", data.len());
            gaps.push(last.elapsed());
            last = tokio::time::Instant::now();
            sent.extend_from_slice(&data);
        }
        assert_eq!(sent, block, "every byte, in order");
        assert!(
            gaps[0] < Duration::from_millis(63),
            "the first slice goes within its own time at the rate: {:?}",
            gaps[0]
        );
        assert!(
            gaps.iter().all(|g| *g <= Duration::from_millis(100)),
            "bytes flow at the rate: {gaps:?}"
        );
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took <= Duration::from_secs(1),
            "one second's bytes at the rate: {took:?}"
        );
    }

    #[tokio::test]
    async fn a_large_block_is_read_in_pieces_as_it_is_sent() {
        let all: Bytes = (0..READ_PIECE * 3).map(|i| (i % 251) as u8).collect();
        let source: Arc<dyn Source> = Arc::new(MemorySource::new(all.clone()));
        let (offset, len) = (5, 2 * READ_PIECE as u64 + 7);
        let block = BlockData::read(&source, offset, len).await.unwrap();
        let expected = all.slice(5..5 + len as usize);
        assert_eq!(block.len(), len);

        let mut body = UploadBody::new();
        body.push(Bytes::from_static(b"<"));
        body.push_block(block);
        body.push(Bytes::from_static(b">"));
        assert_eq!(body.len(), len + 2);
        assert_eq!(
            body.clone().into_bytes().await.unwrap().len() as u64,
            len + 2
        );
        let sent = Arc::new(AtomicU64::new(0));
        body.measure(Meter {
            sent: Some(sent.clone()),
            ..Meter::default()
        });

        let mut chunks = Vec::new();
        while let Some(chunk) = body.next_chunk().await {
            chunks.push(chunk.unwrap());
            assert_eq!(
                body.size_hint().exact(),
                Some(len + 2 - chunks.iter().map(|c| c.len() as u64).sum::<u64>())
            );
        }
        let lens: Vec<_> = chunks.iter().map(Bytes::len).collect();
        assert_eq!(lens, [1, READ_PIECE, READ_PIECE, 7, 1]);
        assert_eq!(&chunks[1..4].concat()[..], &expected[..]);
        // Pieces of an in-memory source are slices of it, not copies.
        assert_eq!(chunks[1].as_ptr(), all[5..].as_ptr());
        assert_eq!(sent.load(Ordering::Relaxed), len);
    }

    #[tokio::test]
    async fn small_blocks_are_read_at_once() {
        let source: Arc<dyn Source> = Arc::new(MemorySource::new(vec![1u8; 100]));
        let block = BlockData::read(&source, 10, 50).await.unwrap();
        assert!(matches!(block.0, BlockBytes::Memory(ref b) if b.len() == 50));
    }

    /// A source that counts the bytes read from it.
    #[derive(Debug)]
    struct Counted(MemorySource, AtomicU64);

    #[async_trait]
    impl Source for Counted {
        fn len(&self) -> u64 {
            self.0.len()
        }

        async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, Error> {
            self.1.fetch_add(len as u64, Ordering::Relaxed);
            self.0.read_at(offset, len).await
        }
    }

    #[tokio::test]
    async fn the_digest_covers_the_bytes_before_it_read_once() {
        let all: Bytes = (0..READ_PIECE * 3).map(|i| (i % 241) as u8).collect();
        let counted = Arc::new(Counted(MemorySource::new(all.clone()), AtomicU64::new(0)));
        let source: Arc<dyn Source> = counted.clone();
        let len = 2 * READ_PIECE as u64 + 99;
        let mut body = UploadBody::new();
        body.push(Bytes::from_static(b"<"));
        body.push_data(Bytes::from_static(b"ab"));
        body.push_block(BlockData::read(&source, 1, len).await.unwrap());
        body.push_digest(Bytes::from_static(b"|crc="));
        body.push(Bytes::from_static(b">"));
        assert_eq!(body.len(), 1 + 2 + len + 5 + 8 + 1);

        let data = [&b"ab"[..], &all[1..1 + len as usize]].concat();
        let expected = [
            &b"<"[..],
            &data,
            format!("|crc={:08x}>", crc32c::crc32c(&data)).as_bytes(),
        ]
        .concat();
        // A clone taken part-way carries the digest of what was sent so far.
        body.next_chunk().await.unwrap().unwrap();
        body.next_chunk().await.unwrap().unwrap();
        let first_piece = body.next_chunk().await.unwrap().unwrap();
        let rest = body.clone().into_bytes().await.unwrap();
        assert_eq!(rest.len() as u64, body.size_hint().exact().unwrap());
        assert_eq!(
            [&b"<ab"[..], &first_piece, &rest].concat(),
            expected,
            "the clone finishes the same body"
        );
        assert_eq!(&body.into_bytes().await.unwrap()[..], &rest[..]);
        assert_eq!(
            counted.1.load(Ordering::Relaxed),
            len + len - READ_PIECE as u64,
            "each byte read once per copy of the body, never for the digest"
        );
    }

    /// A source whose reads fail past a given offset.
    #[derive(Debug)]
    struct FailsAfter(u64);

    #[async_trait]
    impl Source for FailsAfter {
        fn len(&self) -> u64 {
            1 << 20
        }

        async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, Error> {
            if offset >= self.0 {
                return Err(Error::new(ErrorKind::Source, code::READ_FAILED, "gone"));
            }
            Ok(Bytes::from(vec![0; len]))
        }
    }

    #[tokio::test]
    async fn a_finished_body_reports_completion_and_the_data_crc() {
        let mut body = UploadBody::new();
        body.push(Bytes::from_static(b"<head>"));
        body.push_data(Bytes::from_static(b"abc"));
        body.push(Bytes::from_static(b"<tail>"));
        let report = Arc::new(BodyReport::default());
        body.measure(Meter {
            report: Some(report.clone()),
            crc32c: true,
            ..Meter::default()
        });
        body.next_chunk().await.unwrap().unwrap();
        body.next_chunk().await.unwrap().unwrap();
        assert!(!report.complete.load(Ordering::SeqCst));
        body.next_chunk().await.unwrap().unwrap();
        assert!(
            report.complete.load(Ordering::SeqCst),
            "complete as the last part leaves, before any further poll"
        );
        assert_eq!(report.crc32c.get(), Some(&crc32c::crc32c(b"abc")));
    }

    #[tokio::test]
    async fn a_failed_piece_fails_the_body_and_is_kept_for_the_core() {
        let source: Arc<dyn Source> = Arc::new(FailsAfter(READ_PIECE as u64));
        let block = BlockData::read(&source, 0, 3 * READ_PIECE as u64)
            .await
            .unwrap();
        let mut body = UploadBody::new();
        body.push_block(block);
        let report = Arc::new(BodyReport::default());
        body.measure(Meter {
            report: Some(report.clone()),
            crc32c: true,
            ..Meter::default()
        });
        assert_eq!(body.next_chunk().await.unwrap().unwrap().len(), READ_PIECE);
        let e = body.next_chunk().await.unwrap().unwrap_err();
        assert_eq!(e.code(), code::READ_FAILED);
        assert_eq!(
            report.read_failure.get().map(Error::code),
            Some(code::READ_FAILED)
        );
        assert!(!report.complete.load(Ordering::SeqCst));
        assert_eq!(report.crc32c.get(), None, "no CRC for a body cut short");
        assert!(
            body.next_chunk().await.is_none(),
            "the body ends after a failure"
        );
    }
}
