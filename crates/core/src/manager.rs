//! `UploadManager`: validates jobs, runs them, cancels them.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;

use crate::body::BlockData;
use crate::dialect::{Dialect, SegmentedMultipart, SourceEncoder, UploadTarget, UPLOAD_ID_HEADER};
use crate::error::{code, Error, ErrorKind};
use crate::events::{EventDispatcher, Events};
use crate::job::{Job, JobId, JobState, SourceRef, MAX_BLOCK_SIZE, MAX_THREAD_NUM};
use crate::journal::{Journal, Resume, Resumed};
use crate::plan::{Block, BlockPlan};
use crate::progress::Percentage;
use crate::retry;
use crate::source::{lock, MemoryRegistry, Source, SourceIdentity};
use crate::transport::{Response, Transport};

/// Headers that frame the request; a job may not set them.
const RESERVED_HEADERS: [&str; 5] = [
    "content-length",
    "content-range",
    "transfer-encoding",
    "host",
    UPLOAD_ID_HEADER,
];

/// Runs upload jobs over a [`Transport`] (`UploadManager`).
///
/// Cheap to clone: clones share the running jobs and the registered memory,
/// so a clone moved into a job's callback can cancel that job.
///
/// # Examples
///
/// ```
/// use fileuploader_core::{testing::MemoryTransport, UploadManager};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fileuploader_core::Error> {
/// let transport = MemoryTransport::new();
/// let manager = UploadManager::new(transport.clone());
/// let mut job = manager.create_job();
/// job.server_url = "http://127.0.0.1:8080/upload".into();
/// job.block_size = 4;
/// let url = manager.generate_url_for_upload_data(&b"hello world"[..]);
/// job.source_value.add(url, "hello.txt", None);
/// manager.run(&job)?.wait().await?;
/// assert_eq!(transport.requests().len(), 3);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct UploadManager {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Arc<dyn Transport>,
    dialect: Arc<dyn Dialect>,
    events: Events,
    memory: MemoryRegistry,
    running: Mutex<HashMap<JobId, Arc<CancelSignal>>>,
}

impl fmt::Debug for UploadManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadManager")
            .field("transport", &self.inner.transport)
            .field("dialect", &self.inner.dialect)
            .field("running", &lock(&self.inner.running).len())
            .finish()
    }
}

/// Builds an [`UploadManager`].
#[must_use]
pub struct UploadManagerBuilder {
    transport: Arc<dyn Transport>,
    dialect: Arc<dyn Dialect>,
    dispatch: Option<EventDispatcher>,
}

impl fmt::Debug for UploadManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadManagerBuilder")
            .field("transport", &self.transport)
            .field("dialect", &self.dialect)
            .field("dispatch", &self.dispatch.is_some())
            .finish()
    }
}

impl UploadManagerBuilder {
    /// Speaks another wire protocol (default: [`SegmentedMultipart`]).
    pub fn dialect(mut self, dialect: impl Dialect) -> Self {
        self.dialect = Arc::new(dialect);
        self
    }

    /// Runs callbacks through `dispatch` instead of inline.
    pub fn event_dispatcher(mut self, dispatch: EventDispatcher) -> Self {
        self.dispatch = Some(dispatch);
        self
    }

    /// The manager.
    pub fn build(self) -> UploadManager {
        UploadManager {
            inner: Arc::new(Inner {
                transport: self.transport,
                dialect: self.dialect,
                events: Events::new(self.dispatch),
                memory: MemoryRegistry::default(),
                running: Mutex::default(),
            }),
        }
    }
}

impl UploadManager {
    /// A manager sending over `transport` in the segmented multipart
    /// dialect, calling callbacks inline.
    pub fn new(transport: impl Transport) -> Self {
        Self::builder(transport).build()
    }

    /// A builder, to choose the wire dialect or where callbacks run.
    pub fn builder(transport: impl Transport) -> UploadManagerBuilder {
        UploadManagerBuilder {
            transport: Arc::new(transport),
            dialect: Arc::new(SegmentedMultipart),
            dispatch: None,
        }
    }

    /// `CreateJob`: a new job with the reference defaults.
    pub fn create_job(&self) -> Job {
        Job::default()
    }

    /// `GenerateURLForUploadData`: registers bytes held in memory and returns
    /// the `mem://` URL to add to a job's `source_value`. The bytes are shared,
    /// not copied, and kept until [`release_upload_data`](Self::release_upload_data).
    pub fn generate_url_for_upload_data(&self, data: impl Into<Bytes>) -> String {
        self.inner.memory.register(data.into())
    }

    /// Forgets bytes registered by [`generate_url_for_upload_data`](Self::generate_url_for_upload_data);
    /// returns whether `url` named any.
    pub fn release_upload_data(&self, url: &str) -> bool {
        self.inner.memory.remove(url)
    }

    /// `Run`: checks the job and starts it on the current tokio runtime.
    /// Returns at once; the [`JobHandle`] awaits the outcome, and the job's
    /// events report it.
    ///
    /// # Errors
    ///
    /// A job that cannot run is refused before anything is sent, with its
    /// reference code: -4 no sources, -7 an empty source, -2 an invalid or
    /// non-HTTP server URL, -10 a bad block size, thread count or header,
    /// 27/5/8 a source that cannot be opened, -6 no tokio runtime. These also
    /// fire `on_run_failure`. A job that is already running is refused with -9
    /// and no event (its running run will report).
    pub fn run(&self, job: &Job) -> Result<JobHandle, Error> {
        let started = tokio::runtime::Handle::try_current()
            .map_err(|_| {
                Error::new(
                    ErrorKind::Run,
                    code::CANNOT_CREATE_JOB,
                    "cannot create an upload job: run needs a tokio runtime",
                )
            })
            .and_then(|runtime| Ok((runtime, self.prepare(job)?)));
        let (runtime, run) = match started {
            Ok(ok) => ok,
            Err(e) => {
                self.inner.events.failure(job, &e);
                return Err(e);
            }
        };
        let cancel = Arc::new(CancelSignal::default());
        {
            let mut running = lock(&self.inner.running);
            if running.contains_key(&job.id) {
                return Err(Error::new(
                    ErrorKind::Run,
                    code::ALREADY_RUNNING,
                    format!("{} is already running", job.id),
                ));
            }
            running.insert(job.id, cancel.clone());
        }
        let (tx, rx) = watch::channel(None);
        let manager = self.clone();
        let job = job.clone();
        let run_job = job.clone();
        runtime.spawn(async move {
            let job = run_job;
            let outcome = match manager.start(&job, run, cancel).await {
                Ok(ctx) => supervise(ctx).await,
                Err(e) => Err(e),
            };
            job.state.finish();
            lock(&manager.inner.running).remove(&job.id);
            match &outcome {
                Ok(()) => manager.inner.events.success(&job),
                Err(e) => manager.inner.events.failure(&job, e),
            }
            tx.send_replace(Some(outcome));
        });
        Ok(JobHandle { job, outcome: rx })
    }

    /// `Cancel`: stops `job` if it is running. No block starts after this
    /// returns, requests in flight are aborted, and the job fails with -3
    /// "Upload cancelled.". Safe to call from the job's own callbacks.
    /// Returns whether the job was running.
    pub fn cancel(&self, job: &Job) -> bool {
        let signal = lock(&self.inner.running).get(&job.id).cloned();
        signal.is_some_and(|s| s.cancel())
    }

    /// `CancelAllUpload`: cancels every running job of this manager, as
    /// [`cancel`](Self::cancel) does. Returns whether any job was running.
    pub fn cancel_all_upload(&self) -> bool {
        let signals: Vec<_> = lock(&self.inner.running).values().cloned().collect();
        signals.iter().fold(false, |any, s| s.cancel() | any)
    }

    /// Checks a job and resolves everything its run needs.
    fn prepare(&self, job: &Job) -> Result<PreparedRun, Error> {
        if job.block_size == 0 || job.block_size > MAX_BLOCK_SIZE {
            return Err(Error::invalid(
                code::INVALID_OPTION,
                format!(
                    "block_size {} is out of range 1..={MAX_BLOCK_SIZE}",
                    job.block_size
                ),
            ));
        }
        if job.thread_num == 0 || job.thread_num > MAX_THREAD_NUM {
            return Err(Error::invalid(
                code::INVALID_OPTION,
                format!(
                    "thread_num {} is out of range 1..={MAX_THREAD_NUM}",
                    job.thread_num
                ),
            ));
        }
        let url = parse_server_url(&job.server_url)?;
        let headers = validate_headers(job)?;
        if job.source_value.is_empty() {
            return Err(Error::invalid(code::NO_SOURCES, "the job has no sources"));
        }
        let mut sources = Vec::with_capacity(job.source_value.len());
        for entry in job.source_value.entries() {
            let source = match &entry.source {
                SourceRef::Url(u) => self.inner.memory.resolve(u)?,
                SourceRef::Custom(s) => s.clone(),
            };
            let name = [entry.name.as_str(), job.file_name.as_str()]
                .into_iter()
                .find(|n| !n.is_empty())
                .map(str::to_owned)
                .or_else(|| source.default_name())
                .unwrap_or_else(|| "upload.bin".to_owned());
            sources.push(SourcePlan {
                source,
                name,
                key: entry.key.clone(),
            });
        }
        Ok(PreparedRun {
            url,
            headers,
            sources,
        })
    }

    /// Readies a checked job to send: opens resume journals (skipping the
    /// blocks they hold), and prepares each source's encoder with its upload
    /// id.
    async fn start(
        &self,
        job: &Job,
        run: PreparedRun,
        cancel: Arc<CancelSignal>,
    ) -> Result<Arc<RunContext>, Error> {
        job.state.clear_notices();
        let lens: Vec<u64> = run.sources.iter().map(|s| s.source.len()).collect();
        let total_bytes = lens.iter().sum();
        let mut plan = BlockPlan::new(lens, job.block_size);
        let (mut resumed_bytes, mut resumed_blocks) = (0, 0);
        let mut sources = Vec::with_capacity(run.sources.len());
        for (i, s) in run.sources.into_iter().enumerate() {
            let resumed = match (&job.resume, s.source.identity()) {
                (Resume::In(dir), Some(identity)) => {
                    open_journal(job, dir, &*s.source, identity).await
                }
                _ => None,
            };
            let upload_id = match &resumed {
                Some(r) => {
                    for &index in &r.acked {
                        if let Some(len) = plan.mark_done(i, index) {
                            resumed_bytes += len;
                            resumed_blocks += 1;
                        }
                    }
                    r.upload_id.clone()
                }
                None => new_upload_id(),
            };
            let encoder = self.inner.dialect.prepare(&UploadTarget {
                url: &run.url,
                headers: &run.headers,
                fields: &job.form_field,
                key: &s.key,
                name: &s.name,
                total: s.source.len(),
                upload_id: &upload_id,
                integrity: job.integrity,
            })?;
            sources.push(PreparedSource {
                source: s.source,
                encoder,
                name: s.name,
                journal: resumed.map(|r| Arc::new(r.journal)),
            });
        }
        Ok(Arc::new(RunContext {
            job: job.clone(),
            transport: self.inner.transport.clone(),
            retries_left: AtomicU64::new(job.retry.budget_for(plan.total_blocks())),
            sources,
            plan,
            total_bytes,
            resumed: (resumed_bytes, resumed_blocks),
            cancel,
            events: self.inner.events.clone(),
        }))
    }
}

/// Opens the resume journal of one source, noting on the job why it starts
/// over or why it cannot resume at all.
async fn open_journal(
    job: &Job,
    dir: &Path,
    source: &dyn Source,
    identity: SourceIdentity,
) -> Option<Resumed> {
    let identity = match sample_crc32c(source, job.block_size).await {
        Ok(sample_crc32c) => SourceIdentity {
            sample_crc32c,
            ..identity
        },
        Err(e) => {
            job.state
                .notice(format!("cannot resume {}: {e}", identity.path));
            return None;
        }
    };
    let (dir, url, block_size) = (dir.to_owned(), job.server_url.clone(), job.block_size);
    let opened = tokio::task::spawn_blocking(move || {
        let path = identity.path.clone();
        Journal::open(&dir, &url, &identity, block_size, new_upload_id).map_err(|e| {
            format!(
                "cannot use the resume journal for {path} in {}: {e}",
                dir.display()
            )
        })
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match opened {
        Ok(resumed) => {
            if let Some(note) = &resumed.note {
                job.state.notice(note.clone());
            }
            Some(resumed)
        }
        Err(e) => {
            job.state.notice(e);
            None
        }
    }
}

/// A CRC32C of up to three 64 KiB samples (start, middle, end) of a source,
/// so a journal can tell content that changed without a new size or time.
async fn sample_crc32c(source: &dyn Source, block_size: u64) -> Result<u32, Error> {
    let len = source.len();
    let n = len.min(block_size).min(64 * 1024);
    let mut offsets = vec![0, (len - n) / 2, len - n];
    offsets.dedup();
    let mut crc = 0;
    for offset in offsets {
        crc = crc32c::crc32c_append(crc, &source.read_at(offset, n as usize).await?);
    }
    Ok(crc)
}

fn parse_server_url(s: &str) -> Result<Uri, Error> {
    let invalid = |why: String| Error::invalid(code::INVALID_URL, why);
    let url = url::Url::parse(s)
        .map_err(|e| invalid(format!("the URL to upload to is invalid: {s:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the URL to upload to is invalid: scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    Uri::try_from(url.as_str())
        .map_err(|e| invalid(format!("the URL to upload to is invalid: {s:?}: {e}")))
}

fn validate_headers(job: &Job) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::new();
    for (name, value) in job.http_header.iter() {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Error::invalid(
                code::INVALID_OPTION,
                format!("invalid header name {name:?}"),
            )
        })?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(Error::invalid(
                code::INVALID_OPTION,
                format!("header {name} is set by the uploader and cannot be replaced"),
            ));
        }
        let value = HeaderValue::from_str(value).map_err(|_| {
            Error::invalid(
                code::INVALID_OPTION,
                format!("header {name} has a value with CR, LF or other bytes that cannot be sent: {value:?}"),
            )
        })?;
        headers.insert(header, value);
    }
    Ok(headers)
}

fn new_upload_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A checked job: where it goes and what it sends.
struct PreparedRun {
    url: Uri,
    headers: HeaderMap,
    sources: Vec<SourcePlan>,
}

struct SourcePlan {
    source: Arc<dyn Source>,
    name: String,
    key: String,
}

struct PreparedSource {
    source: Arc<dyn Source>,
    encoder: Box<dyn SourceEncoder>,
    name: String,
    journal: Option<Arc<Journal>>,
}

/// Tells a running job to stop: a flag workers check before each block, and
/// a wake-up for the task that aborts the requests in flight.
#[derive(Debug, Default)]
struct CancelSignal {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelSignal {
    /// Returns whether this call cancelled the job (false if it already was).
    fn cancel(&self) -> bool {
        let first = !self.cancelled.swap(true, Ordering::SeqCst);
        self.notify.notify_one();
        first
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

struct RunContext {
    job: Job,
    transport: Arc<dyn Transport>,
    sources: Vec<PreparedSource>,
    plan: BlockPlan,
    total_bytes: u64,
    /// Bytes and blocks an earlier run had acknowledged.
    resumed: (u64, u64),
    cancel: Arc<CancelSignal>,
    events: Events,
    retries_left: AtomicU64,
}

impl RunContext {
    /// Takes one retry from the job's budget; false when it is spent.
    fn take_retry(&self) -> bool {
        self.retries_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Counts a request in flight for as long as it lives, aborts included.
#[must_use]
struct InFlight<'a>(&'a JobState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a JobState) -> Self {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts the workers, reports progress, and settles the one outcome.
async fn supervise(ctx: Arc<RunContext>) -> Result<(), Error> {
    let state = &ctx.job.state;
    let total_blocks = ctx.plan.total_blocks();
    state.start(ctx.total_bytes, total_blocks);
    let (resumed_bytes, resumed_blocks) = ctx.resumed;
    state.acked.store(resumed_bytes, Ordering::Relaxed);
    state.blocks_acked.store(resumed_blocks, Ordering::Relaxed);
    state
        .resumed_blocks
        .store(resumed_blocks, Ordering::Relaxed);
    let mut percentage = Percentage::NotStarted;
    ctx.events.percent(&ctx.job, percentage.start());
    if resumed_blocks < total_blocks {
        ctx.events
            .percent(&ctx.job, percentage.advance(resumed_bytes, ctx.total_bytes));
    }

    let (acks, mut acked_rx) = mpsc::unbounded_channel();
    let mut workers = JoinSet::new();
    let width = (ctx.job.thread_num as u64).min(total_blocks - resumed_blocks);
    for _ in 0..width {
        workers.spawn(worker(ctx.clone(), acks.clone()));
    }
    drop(acks);

    let mut acknowledge = |len: u64| {
        let acked = state.acked.fetch_add(len, Ordering::Relaxed) + len;
        state.blocks_acked.fetch_add(1, Ordering::Relaxed);
        ctx.events
            .percent(&ctx.job, percentage.advance(acked, ctx.total_bytes));
    };
    let outcome = loop {
        tokio::select! {
            biased;
            () = ctx.cancel.notify.notified() => break Err(Error::cancelled()),
            Some(len) = acked_rx.recv() => acknowledge(len),
            joined = workers.join_next() => match joined {
                None => break Ok(()),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => break Err(e),
                Some(Err(e)) => break Err(Error::new(
                    ErrorKind::Run,
                    code::FAILED,
                    format!("an upload task failed: {e}"),
                )),
            },
        }
    };
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    outcome?;
    while let Ok(len) = acked_rx.try_recv() {
        acknowledge(len);
    }
    if state.blocks_acked.load(Ordering::Relaxed) < total_blocks {
        // Workers only stop early when told to.
        return Err(Error::cancelled());
    }
    for journal in ctx.sources.iter().filter_map(|s| s.journal.clone()) {
        let removed = tokio::task::spawn_blocking(move || journal.remove()).await;
        if let Ok(Err(e)) = removed {
            tracing::warn!("cannot remove a finished resume journal: {e}");
        }
    }
    ctx.events.percent(&ctx.job, percentage.complete());
    Ok(())
}

/// Takes blocks from the plan until none is left, the job is cancelled, or a
/// block fails for good.
async fn worker(ctx: Arc<RunContext>, acks: mpsc::UnboundedSender<u64>) -> Result<(), Error> {
    while !ctx.cancel.is_cancelled() {
        let Some(block) = ctx.plan.next_block() else {
            break;
        };
        if !send_block(&ctx, &block).await? {
            break;
        }
        if let Some(journal) = ctx.sources[block.source].journal.clone() {
            let index = block.index;
            // A lost journal line only means the block is sent again.
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || journal.ack(index)).await {
                tracing::warn!("cannot record block {index} in the resume journal: {e}");
            }
        }
        // The receiver is gone only when the run already ended.
        let _ = acks.send(block.len);
    }
    Ok(())
}

/// Sends one block until it is acknowledged (true), the job is cancelled
/// (false), or it fails for good. Each attempt reads the block again, so no
/// copy is kept between attempts.
async fn send_block(ctx: &RunContext, block: &Block) -> Result<bool, Error> {
    let state = &ctx.job.state;
    let policy = &ctx.job.retry;
    let source = &ctx.sources[block.source];
    let mut attempt = 1;
    loop {
        let data = BlockData::read(&source.source, block.offset, block.len).await?;
        let mut request = source.encoder.encode(block, data)?;
        request.body_mut().count_sent(state.sent.clone());
        let read_failure = Arc::new(OnceLock::new());
        request.body_mut().keep_read_failure(read_failure.clone());
        if ctx.cancel.is_cancelled() {
            return Ok(false);
        }
        let sent = {
            let _in_flight = InFlight::enter(state);
            ctx.transport.send(request).await
        };
        // A piece of the source that could not be read is the block's
        // error, whatever the transport or the server made of the cut body.
        if let Some(e) = read_failure.get() {
            return Err(e.clone());
        }
        let (error, server_wait) = match sent {
            Ok(response) => {
                state.set_version(response.version());
                match check_status(&response, block, &source.name) {
                    Ok(()) => return Ok(true),
                    Err(e) if retry::is_retryable_status(response.status()) => {
                        (e, retry::retry_after(response.headers(), SystemTime::now()))
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.kind().is_retryable() => (Error::from(e), None),
            Err(e) => return Err(e.into()),
        };
        if attempt >= policy.max_attempts {
            return Err(error.extend_message(&format!(" (gave up after {attempt} attempts)")));
        }
        if server_wait.is_some_and(|w| w > policy.max_retry_after) {
            return Err(
                error.extend_message(" (the server asked to wait longer than max_retry_after)")
            );
        }
        if !ctx.take_retry() {
            return Err(error.extend_message(" (the job's retry budget is spent)"));
        }
        state.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(attempt, %error, "retrying block {} of {:?}", block.index, source.name);
        let wait = policy.backoff(attempt).max(server_wait.unwrap_or_default());
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

fn check_status(response: &Response, block: &Block, name: &str) -> Result<(), Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let mut context = format!(
        " for block {} of {} of {name:?}",
        block.index + 1,
        block.count
    );
    if let Some(location) = response.headers().get(http::header::LOCATION) {
        context += &format!(
            " (redirect to {})",
            String::from_utf8_lossy(location.as_bytes())
        );
    }
    let body = String::from_utf8_lossy(response.body());
    let body = body.trim();
    if !body.is_empty() {
        let short: String = body.chars().take(200).collect();
        context += &format!(": {short}");
    }
    Err(Error::from_status(status, &context))
}

/// A running job: await its outcome, or look at its progress.
#[derive(Debug, Clone)]
pub struct JobHandle {
    job: Job,
    outcome: watch::Receiver<Option<Result<(), Error>>>,
}

impl JobHandle {
    /// The job this run belongs to.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// Waits for the run to end.
    ///
    /// # Errors
    ///
    /// The error the run failed with (the same code and message
    /// `on_run_failure` got); 28 if the runtime running it shut down first.
    pub async fn wait(&self) -> Result<(), Error> {
        let mut rx = self.outcome.clone();
        let settled = rx.wait_for(Option::is_some).await.map(|o| o.clone());
        match settled {
            Ok(outcome) => outcome.unwrap_or(Ok(())),
            Err(_) => Err(Error::new(
                ErrorKind::Run,
                code::ABORTED,
                "aborted: the runtime running the job shut down",
            )),
        }
    }

    /// The outcome, if the run has ended.
    pub fn outcome(&self) -> Option<Result<(), Error>> {
        self.outcome.borrow().clone()
    }
}
