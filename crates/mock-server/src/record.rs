//! What arrived: each block request parsed with multer and recorded, with
//! the shared state both servers write into.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fileuploader_wire::sync::lock;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use fileuploader_wire::Statement;

use crate::answers::Ledger;
use crate::faults::{Action, Fault, FiredFault};

/// `Content-Range: bytes first-last/total`, as sent (last inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub first: u64,
    /// Last byte, inclusive.
    pub last: u64,
    /// Length of the whole source.
    pub total: u64,
}

impl Range {
    fn parse(value: &str) -> Option<Range> {
        let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
        let (first, last) = range.split_once('-')?;
        Some(Range {
            first: first.parse().ok()?,
            last: last.parse().ok()?,
            total: total.parse().ok()?,
        })
    }
}

/// One request as the mock server received and answered it.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Order of arrival, from 0.
    pub seq: usize,
    /// The `X-Upload-Id` header.
    pub upload_id: Option<String>,
    /// The file part's form name.
    pub key: Option<String>,
    /// The file part's `filename`.
    pub file_name: Option<String>,
    /// The `Content-Range`, if sent.
    pub range: Option<Range>,
    /// The file part's bytes.
    pub data: Bytes,
    /// SHA-256 of the file part's bytes, in hex.
    pub sha256: String,
    /// The text parts, in order, but for the block's CRC32C.
    pub fields: Vec<(String, String)>,
    /// The block's CRC32C: the value of the `X-Block-CRC32C` part that
    /// followed the file part, if one did.
    pub crc32c: Option<String>,
    /// The request headers.
    pub headers: HeaderMap,
    /// Whether the body parsed as multipart with exactly one file part.
    pub well_formed: bool,
    /// Which attempt this was for its block (1 for the first).
    pub attempt: usize,
    /// The status answered.
    pub status: u16,
    /// When the whole request had arrived.
    pub arrived: Instant,
    /// When the answer was due to leave (arrival plus any delay).
    pub completes: Instant,
    /// Requests in flight at arrival, this one included.
    pub in_flight: usize,
}

impl Arrival {
    /// The block's key: upload id (or file name) and first byte.
    pub fn block_key(&self) -> (String, u64) {
        let source = self
            .upload_id
            .clone()
            .or_else(|| self.file_name.clone())
            .unwrap_or_default();
        (source, self.range.map_or(0, |r| r.first))
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) arrivals: Vec<Arrival>,
    pub(crate) attempts: HashMap<(String, u64), usize>,
    pub(crate) first_seen: HashMap<(String, u64), usize>,
    pub(crate) fired: Vec<FiredFault>,
}

/// The shared record of a mock server.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorder {
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) faults: Arc<Vec<Fault>>,
    pub(crate) delay: Duration,
    /// What the server answers for its uploads, when it answers.
    pub(crate) ledger: Option<Arc<Mutex<Ledger>>>,
}

/// Polls a future whose inputs are all in memory until it is ready.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

struct Parsed {
    key: Option<String>,
    file_name: Option<String>,
    data: Bytes,
    fields: Vec<(String, String)>,
    crc32c: Option<String>,
    well_formed: bool,
}

fn parse(headers: &HeaderMap, body: Bytes) -> Parsed {
    let mut parsed = Parsed {
        key: None,
        file_name: None,
        data: Bytes::new(),
        fields: Vec::new(),
        crc32c: None,
        well_formed: false,
    };
    let boundary = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        return parsed;
    };
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(body)]);
    let mut form = multer::Multipart::new(stream, boundary);
    let mut files = 0;
    let complete = ready(async {
        while let Some(field) = form.next_field().await.ok()? {
            let name = field.name().map(str::to_owned);
            match field.file_name().map(str::to_owned) {
                Some(file) => {
                    files += 1;
                    parsed.key = name;
                    parsed.file_name = Some(file);
                    parsed.data = field.bytes().await.ok()?;
                }
                None => {
                    let name = name.unwrap_or_default();
                    let text = field.text().await.ok()?;
                    if files == 1 && name == fileuploader_core::BLOCK_CRC32C_FIELD {
                        parsed.crc32c = Some(text);
                    } else {
                        parsed.fields.push((name, text));
                    }
                }
            }
        }
        Some(())
    });
    parsed.well_formed = complete.is_some() && files == 1;
    parsed
}

impl Recorder {
    /// Records a request and decides the answer: the first matching fault's
    /// action, or 200, and, from a server that answers for its uploads, the
    /// statement of a stored block.
    pub(crate) fn record(
        &self,
        headers: HeaderMap,
        body: Bytes,
    ) -> (Action, Arrival, Option<Statement>) {
        let parsed = parse(&headers, body);
        let range = headers
            .get(http::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(Range::parse);
        let upload_id = headers
            .get("x-upload-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let now = Instant::now();
        let mut state = lock(&self.state);
        let mut arrival = Arrival {
            seq: state.arrivals.len(),
            upload_id,
            key: parsed.key,
            file_name: parsed.file_name,
            range,
            sha256: Sha256::digest(&parsed.data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            data: parsed.data,
            fields: parsed.fields,
            crc32c: parsed.crc32c,
            headers,
            well_formed: parsed.well_formed,
            attempt: 0,
            status: 200,
            arrived: now,
            completes: now + self.delay,
            in_flight: 0,
        };
        let key = arrival.block_key();
        let distinct = state.first_seen.len();
        let nth = *state.first_seen.entry(key.clone()).or_insert(distinct);
        let attempt = {
            let n = state.attempts.entry(key).or_default();
            *n += 1;
            *n
        };
        arrival.attempt = attempt;
        let action = self
            .faults
            .iter()
            .find(|f| f.matches(range.map_or(0, |r| r.first), nth, attempt))
            .map(|f| {
                state.fired.push(FiredFault {
                    seq: arrival.seq,
                    range,
                    attempt,
                    action: f.action.clone(),
                });
                f.action.clone()
            })
            .unwrap_or(Action::Status(200));
        match &action {
            Action::Status(s) | Action::RetryAfter(s, _) | Action::Redirect(s, _) => {
                arrival.status = *s
            }
            Action::Delay(d) => arrival.completes = now + self.delay + *d,
            Action::Hold => arrival.completes = now + Duration::from_secs(3600),
        }
        arrival.in_flight = 1 + state.arrivals.iter().filter(|a| a.completes > now).count();
        state.arrivals.push(arrival.clone());
        let stored = matches!(action, Action::Status(200..=299) | Action::Delay(_));
        let statement = self
            .ledger
            .as_ref()
            .filter(|_| stored && arrival.well_formed)
            .map(|ledger| {
                let range = arrival.range.map(|r| (r.first, r.last + 1, r.total));
                lock(ledger).stored(
                    arrival.upload_id.as_deref(),
                    arrival.file_name.as_deref().unwrap_or(""),
                    range,
                    arrival.data.len() as u64,
                )
            });
        (action, arrival, statement)
    }
}
