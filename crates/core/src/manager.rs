//! `UploadManager`: the public API and the job registry (create, run,
//! cancel). Validation, scheduling, attempts and resume live in their own
//! modules.

use crate::rate::RateLimit;
use crate::throttle::Throttled;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use crate::error::{code, Error, ErrorKind};
use crate::events::{EventDispatcher, Events};
use crate::job::{Job, JobId};
use crate::plan::BlockPlan;
use crate::protocol::{
    Constraints, Endpoints, Protocol, SavedSession, SegmentedMultipart, UploadTarget,
};
use crate::resume::open_journal;
use crate::run::scheduler::supervise;
use crate::run::{CancelSignal, RunContext, RunSource};
use crate::source::{lock, MemoryRegistry};
use crate::transport::Transport;
use crate::validate::{prepare, PreparedRun};

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
    /// The byte rate every body shares, if limited.
    rate: Option<Arc<RateLimit>>,
    protocol: Arc<dyn Protocol>,
    /// What the sessions of its jobs learnt of their endpoints.
    endpoints: Arc<Endpoints>,
    events: Events,
    memory: MemoryRegistry,
    running: Mutex<HashMap<JobId, Arc<CancelSignal>>>,
}

impl fmt::Debug for UploadManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadManager")
            .field("transport", &self.inner.transport)
            .field("protocol", &self.inner.protocol)
            .field("running", &lock(&self.inner.running).len())
            .finish()
    }
}

/// Builds an [`UploadManager`].
#[must_use]
pub struct UploadManagerBuilder {
    transport: Arc<dyn Transport>,
    protocol: Arc<dyn Protocol>,
    dispatch: Option<EventDispatcher>,
    max_in_flight: Option<usize>,
    limit_rate: Option<u64>,
}

impl fmt::Debug for UploadManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadManagerBuilder")
            .field("transport", &self.transport)
            .field("protocol", &self.protocol)
            .field("dispatch", &self.dispatch.is_some())
            .field("max_in_flight", &self.max_in_flight)
            .field("limit_rate", &self.limit_rate)
            .finish()
    }
}

impl UploadManagerBuilder {
    /// Speaks another wire protocol (default: [`SegmentedMultipart`]).
    pub fn protocol(mut self, protocol: impl Protocol) -> Self {
        self.protocol = Arc::new(protocol);
        self
    }

    /// Runs callbacks through `dispatch` instead of inline.
    pub fn event_dispatcher(mut self, dispatch: EventDispatcher) -> Self {
        self.dispatch = Some(dispatch);
        self
    }

    /// Sends at most `n` requests at once across all jobs of the manager,
    /// whatever each job's `thread_num` (default: no bound but theirs).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n.max(1));
        self
    }

    /// Sends request bodies no faster than `bytes_per_second` across all
    /// jobs of the manager together; each chunk waits its turn, so no job
    /// starves another (default: no limit).
    pub fn limit_rate(mut self, bytes_per_second: u64) -> Self {
        self.limit_rate = Some(bytes_per_second);
        self
    }

    /// The manager.
    pub fn build(self) -> UploadManager {
        let transport: Arc<dyn Transport> = Arc::new(Throttled {
            inner: self.transport,
            permits: self
                .max_in_flight
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
        });
        UploadManager {
            inner: Arc::new(Inner {
                transport,
                rate: self.limit_rate.map(|r| Arc::new(RateLimit::new(r))),
                protocol: self.protocol,
                endpoints: Arc::default(),
                events: Events::new(self.dispatch),
                memory: MemoryRegistry::default(),
                running: Mutex::default(),
            }),
        }
    }
}

impl UploadManager {
    /// A manager sending over `transport` in the segmented multipart
    /// protocol, calling callbacks inline.
    pub fn new(transport: impl Transport) -> Self {
        Self::builder(transport).build()
    }

    /// A builder, to choose the wire protocol or where callbacks run.
    pub fn builder(transport: impl Transport) -> UploadManagerBuilder {
        UploadManagerBuilder {
            transport: Arc::new(transport),
            protocol: Arc::new(SegmentedMultipart),
            dispatch: None,
            max_in_flight: None,
            limit_rate: None,
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
            .and_then(|runtime| Ok((runtime, prepare(job, &self.inner.memory)?)));
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
        let signal = cancel.clone();
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
        Ok(JobHandle {
            job,
            outcome: rx,
            cancel: signal,
        })
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

    /// Readies a checked job to send: opens resume journals and each
    /// source's session with what its journal kept.
    async fn start(
        &self,
        job: &Job,
        run: PreparedRun,
        cancel: Arc<CancelSignal>,
    ) -> Result<Arc<RunContext>, Error> {
        job.state.clear_notices();
        let lens: Vec<u64> = run.sources.iter().map(|s| s.source.len()).collect();
        let total_bytes = lens.iter().sum();
        let protocol = job.protocol.as_ref().unwrap_or(&self.inner.protocol);
        let largest = lens.iter().copied().max().unwrap_or(0);
        let block_size = protocol.block_size_for(job.block_size, largest);
        let mut job = job.clone();
        if block_size != job.block_size {
            job.state.notice(format!(
                "block size raised from {} to {block_size} bytes: the protocol's parts must be so large for these files",
                job.block_size
            ));
            job.block_size = block_size;
        }
        let job = &job;
        let plan = BlockPlan::new(lens, job.block_size);
        let mut sources = Vec::with_capacity(run.sources.len());
        for (i, s) in run.sources.into_iter().enumerate() {
            // Asked only for a journal: a file's identity is its canonical
            // path, which costs a look-up.
            let resumed = match job.resume.dir().map(|dir| (dir, s.source.identity())) {
                Some((dir, Some(identity))) => open_journal(job, dir, &*s.source, identity).await,
                _ => None,
            };
            let saved = resumed.as_ref().and_then(|r| {
                let mut saved = SavedSession::of(r.handle.clone()?);
                saved.receipts = r
                    .acked
                    .iter()
                    .filter_map(|a| Some((a.index, a.receipt.clone()?)))
                    .collect();
                Some(saved)
            });
            let session = protocol.open(&UploadTarget {
                url: &run.url,
                headers: &run.headers,
                fields: &job.form_field,
                key: &s.key,
                name: &s.name,
                total: s.source.len(),
                integrity: job.integrity,
                threads: job.thread_num,
                block_size: job.block_size,
                saved: saved.as_ref(),
                endpoints: &self.inner.endpoints,
            })?;
            let constraints = session.constraints();
            check_constraints(&constraints, &plan, i, job.block_size, &s.name)?;
            let (journal, journaled) = match resumed {
                Some(r) => (Some(Arc::new(r.journal)), r.acked),
                None => (None, Vec::new()),
            };
            sources.push(RunSource {
                source: s.source,
                session,
                name: s.name,
                journal,
                journaled,
            });
        }
        *lock(&job.state.journals) = sources.iter().filter_map(|s| s.journal.clone()).collect();
        Ok(Arc::new(RunContext {
            job: job.clone(),
            transport: self.inner.transport.clone(),
            rate: self.inner.rate.clone(),
            retries_left: AtomicU64::new(job.retry.budget_for(plan.total_blocks())),
            hedging: crate::run::hedge::Hedging::new(job.retry.hedge, plan.total_blocks()),
            pace: crate::run::pace::Pace::new(
                job.auto_threads,
                job.thread_num,
                job.state.threads.clone(),
            ),
            sources,
            plan,
            total_bytes,
            cancel,
            events: self.inner.events.clone(),
        }))
    }
}

/// Refuses (-10) a block size or count the source's protocol cannot take.
fn check_constraints(
    limits: &Constraints,
    plan: &BlockPlan,
    source: usize,
    block_size: u64,
    name: &str,
) -> Result<(), Error> {
    let count = plan.count(source);
    let refuse = |why: String| Error::invalid(code::INVALID_OPTION, format!("{name:?}: {why}"));
    if block_size > limits.max_block_size {
        return Err(refuse(format!(
            "block_size {block_size} is above the protocol's maximum of {}",
            limits.max_block_size
        )));
    }
    if count > 1 && block_size < limits.min_block_size {
        return Err(refuse(format!(
            "block_size {block_size} is below the protocol's minimum of {}",
            limits.min_block_size
        )));
    }
    if count > limits.max_blocks {
        return Err(refuse(format!(
            "{count} blocks are more than the protocol's maximum of {}; use larger blocks",
            limits.max_blocks
        )));
    }
    Ok(())
}

/// A running job: await its outcome, look at its progress, or cancel it.
/// Dropping the handle does not stop the job.
#[derive(Debug, Clone)]
#[must_use = "a job runs on; wait for its outcome or keep the handle to cancel it"]
pub struct JobHandle {
    job: Job,
    outcome: watch::Receiver<Option<Result<(), Error>>>,
    cancel: Arc<CancelSignal>,
}

impl JobHandle {
    /// Cancels the run, as [`UploadManager::cancel`] does; returns whether
    /// this call cancelled it (false once it ended or was cancelled).
    pub fn cancel(&self) -> bool {
        self.outcome.borrow().is_none() && self.cancel.cancel()
    }

    /// The job this run belongs to.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// Where each source of the run landed so far, with the receiver's
    /// final answer for each ([`Job::landings`]).
    pub fn landings(&self) -> Vec<crate::SourceLanding> {
        self.job.landings()
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
