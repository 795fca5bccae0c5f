//! An upload job: what to send, where, how, and whom to tell.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::answer::{FinalAnswer, DEFAULT_ANSWER_LIMIT};
pub use crate::form::FormField;
use crate::journal::{Journal, Resume};
use crate::protocol::{Integrity, Protocol};
use crate::retry::RetryPolicy;
use crate::source::{lock, Source};

/// The default block size, in bytes (8 MiB): large enough that a request's
/// round trip costs little next to its bytes (10 KiB blocks hold even a
/// loopback upload near 180 MB/s, at some 17 800 requests a second; see
/// docs/PERFORMANCE.md), small enough that `thread_num` of them in memory
/// stay modest.
pub const DEFAULT_BLOCK_SIZE: u64 = 8 << 20;
/// The reference API's default block size, 10240 bytes, for jobs that must
/// send exactly the requests a reference client would.
pub const REFERENCE_BLOCK_SIZE: u64 = 10240;
/// The largest block size a job accepts (1 GiB): a job holds up to
/// `thread_num` blocks in memory.
pub const MAX_BLOCK_SIZE: u64 = 1 << 30;
/// The largest `thread_num` a job accepts. The reference caps it at 4; this
/// project allows more because blocks, not file ranges, are what run at once.
pub const MAX_THREAD_NUM: usize = 16;
/// The form name of the file part when a source gives no key.
pub const DEFAULT_KEY: &str = "RemoteFile";

/// Identifies a job for [`UploadManager::cancel`](crate::UploadManager::cancel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub(crate) u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {}", self.0)
    }
}

/// Headers added to every request of a job (`HttpHeader`). An entry replaces
/// a default header of the same name (case-insensitively); others are added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpHeader {
    headers: Vec<(String, String)>,
}

impl HttpHeader {
    /// Sets header `name` to `value`, replacing an earlier entry of the same
    /// name. Names and values are checked when the job runs: one with CR, LF
    /// or other bytes that cannot be sent fails the run with code -10.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        self.headers.push((name, value.into()));
    }

    /// The value set for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Removes the entry for `name`; returns whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.headers.len();
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before != self.headers.len()
    }

    /// The entries, in the order they were set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Where one source's bytes come from.
#[derive(Clone)]
pub enum SourceRef {
    /// A URL: `file://…`, a plain path, or a `mem://` URL from
    /// [`UploadManager::generate_url_for_upload_data`](crate::UploadManager::generate_url_for_upload_data).
    Url(String),
    /// A source of the caller's own kind.
    Custom(Arc<dyn Source>),
}

impl fmt::Debug for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceRef::Url(u) => f.debug_tuple("Url").field(u).finish(),
            SourceRef::Custom(s) => f.debug_tuple("Custom").field(s).finish(),
        }
    }
}

/// One entry of [`SourceValue`]: the bytes, the remote name and the form key.
#[derive(Debug, Clone)]
pub struct SourceEntry {
    /// Where the bytes come from.
    pub source: SourceRef,
    /// The file name sent in the part's `filename`; when empty, the job's
    /// `file_name`, then the source's own name.
    pub name: String,
    /// The part's form name; `RemoteFile` unless given.
    pub key: String,
}

/// The files of a job (`SourceValue`).
#[derive(Debug, Clone, Default)]
pub struct SourceValue {
    entries: Vec<SourceEntry>,
}

impl SourceValue {
    /// Adds a source by URL (`file://…`, a `mem://` URL) or path (a `&str`,
    /// a `Path`, a `PathBuf`), uploaded as `name` under form key `key`
    /// (default `RemoteFile`). A path that is not UTF-8 goes through
    /// [`add_source`](Self::add_source) with a [`FileSource`](crate::FileSource).
    ///
    /// ```
    /// # let mut job = fileuploader_core::Job::default();
    /// job.source_value.add("/tmp/scan.pdf", "scan.pdf", None);
    /// job.source_value.add("file:///tmp/a.png", "a.png", "image");
    /// job.source_value.add(std::path::Path::new("/tmp/b.png"), "b.png", None);
    /// ```
    pub fn add<'a>(
        &mut self,
        source: impl AsRef<std::ffi::OsStr>,
        name: impl Into<String>,
        key: impl Into<Option<&'a str>>,
    ) {
        let source = source.as_ref().to_string_lossy().into_owned();
        self.push(SourceRef::Url(source), name.into(), key.into());
    }

    /// Adds a source of the caller's own kind.
    pub fn add_source<'a>(
        &mut self,
        source: Arc<dyn Source>,
        name: impl Into<String>,
        key: impl Into<Option<&'a str>>,
    ) {
        self.push(SourceRef::Custom(source), name.into(), key.into());
    }

    fn push(&mut self, source: SourceRef, name: String, key: Option<&str>) {
        self.entries.push(SourceEntry {
            source,
            name,
            key: key.unwrap_or(DEFAULT_KEY).to_owned(),
        });
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> &[SourceEntry] {
        &self.entries
    }

    /// How many sources there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no source was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

type PercentFn = dyn Fn(&Job, u8) + Send + Sync;
type SuccessFn = dyn Fn(&Job) + Send + Sync;
type FailureFn = dyn Fn(&Job, i32, &str) + Send + Sync;

#[derive(Clone, Default)]
pub(crate) struct Callbacks {
    pub(crate) percent: Option<Arc<PercentFn>>,
    pub(crate) success: Option<Arc<SuccessFn>>,
    pub(crate) failure: Option<Arc<FailureFn>>,
}

/// Where one source landed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceLanding {
    /// The source's name as it was sent.
    pub source: String,
    /// The name the receiver says the file landed under (it may differ:
    /// a name the receiver cleaned or renamed); `None` when the protocol
    /// or the receiver does not say.
    pub name: Option<String>,
    /// Whether the receiver confirmed the landing.
    pub confirmed: bool,
    /// The upload's URL on the receiver, where the protocol has one (tus
    /// and the IETF draft).
    pub url: Option<String>,
    /// The receiver's answer that reported the landing (status, headers,
    /// body up to [`Job::answer_limit`]), where there was one: in the
    /// segmented protocol the landing statement, or what the receiver's
    /// application put in its place.
    pub answer: Option<FinalAnswer>,
    /// The receiver's signed receipt for the file (compact JWS, see
    /// [`fileuploader_wire::receipt`]), when it signs them; checked
    /// against the source's length, CRC32C and SHA-256 before the source
    /// counted as landed.
    pub receipt: Option<String>,
}

/// A snapshot of a job's progress, for callers who want more than a percentage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Progress {
    /// Source bytes handed to the transport, retries included.
    pub bytes_sent: u64,
    /// Source bytes whose block the server acknowledged with a success.
    pub bytes_acknowledged: u64,
    /// Bytes in all sources of the job.
    pub total_bytes: u64,
    /// Blocks acknowledged.
    pub blocks_acknowledged: u64,
    /// Blocks in the job.
    pub total_blocks: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// How many blocks may be in flight now: `thread_num`, or where
    /// [`Job::auto_threads`] has taken the limit.
    pub thread_limit: u64,
    /// Requests sent again after a failure.
    pub retries: u64,
    /// Blocks sent again beside a request that ran far past the job's
    /// recent ones ([`RetryPolicy::hedge`]).
    pub hedges: u64,
    /// Blocks the receiver already held when the run began (from a
    /// previous, interrupted run), not sent again.
    pub resumed_blocks: u64,
    /// Sources whose landing the receiver confirmed.
    pub landings_confirmed: u64,
    /// Sources whose every block the receiver acknowledged but whose
    /// landing it cannot confirm (a receiver that does not answer status
    /// queries).
    pub landings_unconfirmed: u64,
    /// Whether the run resumed blocks on the word of the local journal
    /// alone, because the receiver cannot say what it holds.
    pub journal_trusted: bool,
    /// Time since the run started (to its end, once it ended).
    pub elapsed: Duration,
}

impl Progress {
    /// Acknowledged bytes per second over the run so far.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.bytes_acknowledged as f64 / secs
        } else {
            0.0
        }
    }
}

/// Counters shared by a job's clones and its running task.
#[derive(Debug, Default)]
pub(crate) struct JobState {
    pub(crate) http_version: AtomicU8,
    pub(crate) sent: Arc<AtomicU64>,
    pub(crate) acked: AtomicU64,
    pub(crate) total: AtomicU64,
    pub(crate) blocks_acked: AtomicU64,
    pub(crate) total_blocks: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) threads: Arc<AtomicU64>,
    pub(crate) retries: AtomicU64,
    pub(crate) hedges: AtomicU64,
    pub(crate) resumed_blocks: AtomicU64,
    pub(crate) confirmed: AtomicU64,
    pub(crate) unconfirmed: AtomicU64,
    pub(crate) journal_trusted: AtomicBool,
    pub(crate) notices: Mutex<Vec<String>>,
    pub(crate) landings: Mutex<Vec<SourceLanding>>,
    /// The receiver's answer the last run failed on, if it failed on one.
    pub(crate) failed_on: Mutex<Option<FinalAnswer>>,
    /// The resume journals of the current or last run.
    pub(crate) journals: Mutex<Vec<Arc<Journal>>>,
    pub(crate) times: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl JobState {
    pub(crate) fn start(&self, total: u64, total_blocks: u64) {
        for counter in [
            &*self.sent,
            &self.acked,
            &self.blocks_acked,
            &self.retries,
            &self.resumed_blocks,
            &self.confirmed,
            &self.unconfirmed,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        self.journal_trusted.store(false, Ordering::Relaxed);
        lock(&self.landings).clear();
        self.total.store(total, Ordering::Relaxed);
        self.total_blocks.store(total_blocks, Ordering::Relaxed);
        *lock(&self.times) = (Some(Instant::now()), None);
    }

    /// Forgets the notices of an earlier run.
    pub(crate) fn clear_notices(&self) {
        lock(&self.notices).clear();
        *lock(&self.failed_on) = None;
    }

    /// Records something the caller should be told, such as a resumed
    /// source that had changed.
    pub(crate) fn notice(&self, text: String) {
        tracing::warn!("{text}");
        lock(&self.notices).push(text);
    }

    pub(crate) fn finish(&self) {
        lock(&self.times).1 = Some(Instant::now());
    }

    pub(crate) fn set_version(&self, version: http::Version) {
        let v = match version {
            http::Version::HTTP_09 => 1,
            http::Version::HTTP_10 => 2,
            http::Version::HTTP_2 => 3,
            http::Version::HTTP_3 => 4,
            _ => 0,
        };
        self.http_version.store(v, Ordering::Relaxed);
    }
}

/// An upload job (`Job`): sources, a server URL, and the settings and events
/// of the reference API. Make one with
/// [`UploadManager::create_job`](crate::UploadManager::create_job), set its
/// fields, and pass it to [`UploadManager::run`](crate::UploadManager::run).
///
/// A clone is the same job: it shares the id, the progress and the HTTP
/// version, so a clone moved into a callback can cancel or observe the job.
///
/// # Examples
///
/// ```
/// use fileuploader_core::Job;
///
/// let mut job = Job::default();
/// job.server_url = "http://127.0.0.1:8080/upload".into();
/// job.block_size = 1 << 20;
/// job.thread_num = 4;
/// job.form_field.add("customField", "FormFieldValue");
/// job.http_header.insert("Authorization", "Bearer abc");
/// job.source_value.add("/tmp/scan.pdf", "scan.pdf", None);
/// job.on_upload_transfer_percentage(|_job, percent| println!("{percent}%"));
/// job.on_run_success(|_job| println!("done"));
/// job.on_run_failure(|_job, code, message| eprintln!("error {code}: {message}"));
/// assert_eq!(job.http_version(), "1.1");
/// ```
#[derive(Clone)]
pub struct Job {
    /// `BlockSize`: bytes per block, each block one request (default
    /// [`DEFAULT_BLOCK_SIZE`], 8 MiB; the reference's 10240 is
    /// [`REFERENCE_BLOCK_SIZE`]; at most [`MAX_BLOCK_SIZE`]).
    pub block_size: u64,
    /// `FileName`: the remote file name for sources added without a name.
    pub file_name: String,
    /// `FormField`: extra text fields sent with every request.
    pub form_field: FormField,
    /// `HttpHeader`: headers added to, or replacing defaults of, every request.
    pub http_header: HttpHeader,
    /// `ServerUrl`: where the `POST`s go; `http` or `https`.
    pub server_url: String,
    /// `SourceValue`: the files to upload.
    pub source_value: SourceValue,
    /// `ThreadNum`: how many blocks may be in flight at once (default 1, at
    /// most [`MAX_THREAD_NUM`]).
    pub thread_num: usize,
    /// Whether the job finds how many blocks to keep in flight by itself,
    /// `thread_num` at most (not a reference property; default false): it
    /// begins with four, doubles while throughput grows, keeps to the
    /// last limit that paid and tries one more now and then, halves on a
    /// retried failure and steps back when requests slow down.
    /// [`Progress::thread_limit`] says where it stands.
    pub auto_threads: bool,
    /// How failed blocks are retried (not a reference property; the
    /// reference never retries, [`RetryPolicy::none`] restores that).
    pub retry: RetryPolicy,
    /// Which digests travel with the blocks (not a reference property;
    /// default: a CRC32C per block).
    pub integrity: Integrity,
    /// Whether an interrupted run can be resumed (not a reference property;
    /// default [`Resume::Off`]).
    pub resume: Resume,
    /// Whether a source counts as uploaded only once the receiver confirms
    /// it landed (not a reference property; default false). When true, a
    /// receiver that acknowledges every block but cannot answer for the
    /// file fails the job with [`code::UNCONFIRMED`](crate::code::UNCONFIRMED);
    /// when false, [`Progress::landings_unconfirmed`] counts such sources.
    pub require_confirmation: bool,
    /// The most bytes of the receiver's final answer kept with each
    /// landing ([`SourceLanding::answer`]) and with an error that came of
    /// an answer (not a reference property; default
    /// [`DEFAULT_ANSWER_LIMIT`], 64 KiB). A longer body is cut, and says
    /// by how much.
    pub answer_limit: usize,
    /// The wire protocol of this job (not a reference property; default
    /// `None`: the manager's, see
    /// [`UploadManagerBuilder::protocol`](crate::UploadManagerBuilder::protocol)).
    pub protocol: Option<Arc<dyn Protocol>>,
    pub(crate) callbacks: Callbacks,
    pub(crate) id: JobId,
    pub(crate) state: Arc<JobState>,
}

impl Default for Job {
    /// A job with the reference defaults and a fresh id.
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Job {
            block_size: DEFAULT_BLOCK_SIZE,
            file_name: String::new(),
            form_field: FormField::default(),
            http_header: HttpHeader::default(),
            server_url: String::new(),
            source_value: SourceValue::default(),
            thread_num: 1,
            auto_threads: false,
            retry: RetryPolicy::default(),
            integrity: Integrity::default(),
            resume: Resume::Off,
            require_confirmation: false,
            answer_limit: DEFAULT_ANSWER_LIMIT,
            protocol: None,
            callbacks: Callbacks::default(),
            id: JobId(NEXT_ID.fetch_add(1, Ordering::Relaxed)),
            state: Arc::default(),
        }
    }
}

impl Job {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// `HttpVersion`: the HTTP version the last request used (`"1.1"` before
    /// the first response, `"2"` once HTTP/2 was negotiated).
    pub fn http_version(&self) -> &'static str {
        match self.state.http_version.load(Ordering::Relaxed) {
            1 => "0.9",
            2 => "1.0",
            3 => "2",
            4 => "3",
            _ => "1.1",
        }
    }

    /// `Version`: the version of the job format, `1.0` as in the reference.
    pub fn version(&self) -> f64 {
        1.0
    }

    /// A snapshot of the job's progress in the current or last run.
    pub fn progress(&self) -> Progress {
        let s = &self.state;
        let (start, end) = *lock(&s.times);
        Progress {
            bytes_sent: s.sent.load(Ordering::Relaxed),
            bytes_acknowledged: s.acked.load(Ordering::Relaxed),
            total_bytes: s.total.load(Ordering::Relaxed),
            blocks_acknowledged: s.blocks_acked.load(Ordering::Relaxed),
            total_blocks: s.total_blocks.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            thread_limit: s.threads.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            hedges: s.hedges.load(Ordering::Relaxed),
            resumed_blocks: s.resumed_blocks.load(Ordering::Relaxed),
            landings_confirmed: s.confirmed.load(Ordering::Relaxed),
            landings_unconfirmed: s.unconfirmed.load(Ordering::Relaxed),
            journal_trusted: s.journal_trusted.load(Ordering::Relaxed),
            elapsed: start.map_or(Duration::ZERO, |t| {
                end.unwrap_or_else(Instant::now).duration_since(t)
            }),
        }
    }

    /// Where each source of the current or last run landed so far, in the
    /// order they landed, as the receiver said.
    pub fn landings(&self) -> Vec<SourceLanding> {
        lock(&self.state.landings).clone()
    }

    /// The receiver's answer the last run failed on (status, headers, body
    /// up to [`answer_limit`](Self::answer_limit)), when it failed on one:
    /// what a failure callback reads beside the code and message.
    pub fn failure_answer(&self) -> Option<FinalAnswer> {
        lock(&self.state.failed_on).clone()
    }

    /// Deletes the resume journals of the last run: for
    /// [`Resume::KeptIn`], once the batch the job belongs to is done
    /// (under [`Resume::In`] a job that succeeds deletes them itself).
    /// Journals already gone are no error.
    pub fn remove_journals(&self) -> std::io::Result<()> {
        let journals = std::mem::take(&mut *lock(&self.state.journals));
        journals.iter().try_for_each(|j| j.remove())
    }

    /// Notices of the current or last run, such as "the source changed since
    /// the interrupted upload; starting it over".
    pub fn notices(&self) -> Vec<String> {
        lock(&self.state.notices).clone()
    }

    /// `OnUploadTransferPercentage`: called with 0 first, then each time the
    /// whole-number percentage rises, and with 100 just before success.
    pub fn on_upload_transfer_percentage(
        &mut self,
        f: impl Fn(&Job, u8) + Send + Sync + 'static,
    ) -> &mut Self {
        self.callbacks.percent = Some(Arc::new(f));
        self
    }

    /// `OnRunSuccess`: called once when every source landed: confirmed by
    /// the receiver, or, for a receiver that cannot answer, every block
    /// acknowledged (see [`Progress::landings_unconfirmed`]).
    pub fn on_run_success(&mut self, f: impl Fn(&Job) + Send + Sync + 'static) -> &mut Self {
        self.callbacks.success = Some(Arc::new(f));
        self
    }

    /// `OnRunFailure`: called once with the error code and message when a run
    /// fails, is cancelled, or is refused.
    pub fn on_run_failure(
        &mut self,
        f: impl Fn(&Job, i32, &str) + Send + Sync + 'static,
    ) -> &mut Self {
        self.callbacks.failure = Some(Arc::new(f));
        self
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("block_size", &self.block_size)
            .field("file_name", &self.file_name)
            .field("form_field", &self.form_field)
            .field("http_header", &self.http_header)
            .field("server_url", &self.server_url)
            .field("source_value", &self.source_value)
            .field("thread_num", &self.thread_num)
            .field("auto_threads", &self.auto_threads)
            .field("retry", &self.retry)
            .field("integrity", &self.integrity)
            .field("resume", &self.resume)
            .field("require_confirmation", &self.require_confirmation)
            .field("answer_limit", &self.answer_limit)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}
