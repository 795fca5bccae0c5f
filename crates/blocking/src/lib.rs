//! The synchronous front-end of fileuploader, shaped like the reference
//! FileUploader API so plain sequential code with callbacks ports line by line.
//! It owns a runtime thread and the calls across to it; every upload is the
//! core's, through the hyper transport.
//!
//! ```no_run
//! use fileuploader_blocking::{init, UploadManager};
//!
//! init(
//!     |manager: UploadManager| {
//!         let mut job = manager.create_job();
//!         job.server_url = "http://127.0.0.1:8080/upload".into();
//!         job.source_value.add("scan.pdf", "scan.pdf", None);
//!         let m = manager.clone();
//!         job.on_upload_transfer_percentage(move |job, percent| {
//!             println!("{percent}%");
//!             if percent > 50 {
//!                 m.cancel(job);
//!             }
//!         });
//!         job.on_run_success(|_job| println!("upload completed"));
//!         job.on_run_failure(|_job, code, message| eprintln!("error {code}: {message}"));
//!         manager.run(&job);
//!         let _ = manager.wait(&job);
//!     },
//!     |code, message| eprintln!("init failed: {code} {message}"),
//! );
//! ```
//!
//! One named thread (`fu-runtime`) runs a current-thread tokio runtime that
//! drives the transfers; another (`fu-callbacks`) runs every job's callbacks
//! in the order their events happened, so a slow callback never stalls a
//! transfer, and callbacks may call [`UploadManager::cancel`] or
//! [`UploadManager::cancel_all_upload`] freely. Dropping the last clone of the
//! manager cancels its jobs, waits for them to end, and joins both threads.

#![warn(missing_docs)]

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

pub use fileuploader_core::{
    code, Bytes, Error, ErrorKind, FileSource, FinalAnswer, Integrity, Job, Progress, Resume,
    RetryPolicy, SourceLanding,
};
use fileuploader_core::{EventDispatcher, JobHandle, JobId, Transport};
pub use fileuploader_transport_hyper::{HyperTransport, HyperTransportBuilder};
use fileuploader_wire::sync::lock;

/// How long dropping the manager waits for cancelled jobs to report.
const DRAIN: Duration = Duration::from_secs(5);
/// How many jobs' latest runs [`UploadManager::wait`] remembers once they
/// ended; the oldest ended ones are forgotten past this.
const KEPT_OUTCOMES: usize = 1024;

/// `Dynamsoft.FileUploader.Init`: builds a manager with the default
/// transport and hands it to `success`, or calls `failure` with a code and a
/// message. (The reference's URL argument has no counterpart: nothing needs
/// to be fetched.) [`UploadManager::new`] is the same with a `Result`.
pub fn init(success: impl FnOnce(UploadManager), failure: impl FnOnce(i32, &str)) {
    match UploadManager::new() {
        Ok(manager) => success(manager),
        Err(e) => failure(e.code(), e.message()),
    }
}

/// Runs upload jobs from synchronous code (`UploadManager`). Cheap to clone;
/// the last clone dropped shuts the manager down.
#[derive(Clone, Debug)]
pub struct UploadManager {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    core: fileuploader_core::UploadManager,
    runtime: tokio::runtime::Handle,
    /// The latest run of each job, with the order it started in.
    handles: Mutex<HashMap<JobId, (u64, JobHandle)>>,
    runs: std::sync::atomic::AtomicU64,
    stop_runtime: Option<tokio::sync::oneshot::Sender<()>>,
    runtime_thread: Option<JoinHandle<()>>,
    callbacks: mpsc::Sender<Callback>,
    callback_thread: Option<JoinHandle<()>>,
}

enum Callback {
    Call(Box<dyn FnOnce() + Send>),
    Stop,
}

fn setup_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Run,
        code::FAILED,
        format!("cannot set up the upload manager: {what}: {e}"),
    )
}

impl UploadManager {
    /// A manager over the default [`HyperTransport`].
    ///
    /// # Errors
    ///
    /// Code 23 when the transport or the threads cannot be set up.
    pub fn new() -> Result<Self, Error> {
        let transport = HyperTransport::new().map_err(|e| setup_error("transport", e))?;
        Self::with_transport(transport)
    }

    /// A manager over the transport `builder` builds.
    ///
    /// # Errors
    ///
    /// Code 23 when the transport or the threads cannot be set up.
    pub fn with_transport_builder(builder: HyperTransportBuilder) -> Result<Self, Error> {
        Self::with_transport(builder.build().map_err(|e| setup_error("transport", e))?)
    }

    /// A manager over any transport.
    ///
    /// # Errors
    ///
    /// Code 23 when the runtime or its threads cannot be started; the error
    /// comes back before this returns.
    pub fn with_transport(transport: impl Transport) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("fu-io")
            .build()
            .map_err(|e| setup_error("runtime", e))?;
        let handle = runtime.handle().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let runtime_thread = thread::Builder::new()
            .name("fu-runtime".into())
            .spawn(move || {
                let _ = runtime.block_on(stop_rx);
            })
            .map_err(|e| setup_error("runtime thread", e))?;
        let (callbacks, queue) = mpsc::channel::<Callback>();
        let callback_thread = thread::Builder::new()
            .name("fu-callbacks".into())
            .spawn(move || {
                while let Ok(Callback::Call(call)) = queue.recv() {
                    call();
                }
            })
            .map_err(|e| setup_error("callback thread", e))?;
        let to_thread = callbacks.clone();
        let dispatch: EventDispatcher = Arc::new(move |call| {
            // The callback thread outlives every job; a failed send means the
            // manager is shutting down and the event has nobody to go to.
            let _ = to_thread.send(Callback::Call(call));
        });
        let core = fileuploader_core::UploadManager::builder(transport)
            .event_dispatcher(dispatch)
            .build();
        Ok(UploadManager {
            shared: Arc::new(Shared {
                core,
                runtime: handle,
                handles: Mutex::default(),
                runs: std::sync::atomic::AtomicU64::new(0),
                stop_runtime: Some(stop_tx),
                runtime_thread: Some(runtime_thread),
                callbacks,
                callback_thread: Some(callback_thread),
            }),
        })
    }

    /// `CreateJob`: a new job with the reference defaults.
    pub fn create_job(&self) -> Job {
        self.shared.core.create_job()
    }

    /// `GenerateURLForUploadData`: registers bytes and returns their `mem://` URL.
    pub fn generate_url_for_upload_data(&self, data: impl Into<Bytes>) -> String {
        self.shared.core.generate_url_for_upload_data(data)
    }

    /// `Run`: starts the job and returns at once: `true` if it started. A job
    /// that cannot start has reported why through `on_run_failure` by the
    /// time this returns (and [`try_run`](Self::try_run) returns the error),
    /// except a job that is already running: it is refused with -9 and no
    /// event, since its running run will report.
    pub fn run(&self, job: &Job) -> bool {
        self.try_run(job).is_ok()
    }

    /// Starts the job and returns at once.
    ///
    /// # Errors
    ///
    /// The reference code of a job that cannot start (see
    /// [`fileuploader_core::UploadManager::run`]).
    pub fn try_run(&self, job: &Job) -> Result<(), Error> {
        let handle = {
            let _runtime = self.shared.runtime.enter();
            self.shared.core.run(job)
        };
        let handle = handle.inspect_err(|_| self.shared.flush_callbacks())?;
        let seq = self
            .shared
            .runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut handles = lock(&self.shared.handles);
        handles.insert(job.id(), (seq, handle));
        if handles.len() > KEPT_OUTCOMES {
            let mut ended: Vec<(u64, JobId)> = handles
                .iter()
                .filter(|(_, (_, h))| h.outcome().is_some())
                .map(|(id, (seq, _))| (*seq, *id))
                .collect();
            ended.sort_unstable();
            let excess = handles.len() - KEPT_OUTCOMES;
            for (_, id) in ended.into_iter().take(excess) {
                handles.remove(&id);
            }
        }
        Ok(())
    }

    /// Blocks until the job's latest run ends and its callbacks have run, and
    /// returns its outcome, however many other jobs ran since (the outcomes
    /// of the last 1024 jobs that ended are kept).
    ///
    /// # Errors
    ///
    /// The run's error; -5 if the job was never run by this manager.
    ///
    /// # Panics
    ///
    /// If called from inside an async runtime, where blocking would stall
    /// it: use [`fileuploader_core::UploadManager`] there.
    pub fn wait(&self, job: &Job) -> Result<(), Error> {
        assert_not_async("wait");
        let handle = lock(&self.shared.handles)
            .get(&job.id())
            .map(|(_, h)| h.clone());
        let handle = handle.ok_or_else(|| {
            Error::new(
                ErrorKind::Run,
                code::INVALID_JOB,
                format!("invalid upload job id: {} was not run", job.id()),
            )
        })?;
        let outcome = self.shared.runtime.block_on(handle.wait());
        self.shared.flush_callbacks();
        outcome
    }

    /// Starts the job and blocks until it ends.
    ///
    /// # Errors
    ///
    /// As [`try_run`](Self::try_run), then as [`wait`](Self::wait).
    ///
    /// # Panics
    ///
    /// If called from inside an async runtime.
    pub fn run_to_end(&self, job: &Job) -> Result<(), Error> {
        assert_not_async("run_to_end");
        self.try_run(job)?;
        self.wait(job)
    }

    /// `Cancel`: cancels the job if it is running; returns whether it was.
    /// Works from inside any callback.
    pub fn cancel(&self, job: &Job) -> bool {
        self.shared.core.cancel(job)
    }

    /// `CancelAllUpload`: cancels every running job; returns whether any was
    /// running. Works from inside any callback.
    pub fn cancel_all_upload(&self) -> bool {
        self.shared.core.cancel_all_upload()
    }
}

impl Shared {
    /// Returns once every callback queued so far has run, so a caller sees
    /// their effects; from the callback thread itself, at once.
    fn flush_callbacks(&self) {
        let on_callback_thread =
            self.callback_thread.as_ref().map(|t| t.thread().id()) == Some(thread::current().id());
        if on_callback_thread {
            return;
        }
        let (done, ran) = mpsc::channel();
        if self
            .callbacks
            .send(Callback::Call(Box::new(move || {
                let _ = done.send(());
            })))
            .is_ok()
        {
            let _ = ran.recv();
        }
    }
}

fn assert_not_async(call: &str) {
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "fileuploader_blocking::UploadManager::{call} blocks and cannot be called from inside an async runtime; \
         use fileuploader_core::UploadManager there"
    );
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.core.cancel_all_upload();
        let here = thread::current().id();
        let on = |t: &Option<JoinHandle<()>>| t.as_ref().map(|t| t.thread().id()) == Some(here);
        let on_runtime = on(&self.runtime_thread);
        if !on_runtime && tokio::runtime::Handle::try_current().is_err() {
            let handles: Vec<JobHandle> =
                lock(&self.handles).drain().map(|(_, (_, h))| h).collect();
            self.runtime.block_on(async {
                for h in handles {
                    let _ = tokio::time::timeout(DRAIN, h.wait()).await;
                }
            });
        }
        drop(self.stop_runtime.take());
        join_unless_current(self.runtime_thread.take(), here);
        let _ = self.callbacks.send(Callback::Stop);
        join_unless_current(self.callback_thread.take(), here);
    }
}

/// Joins `thread` unless it is the one running this code, which ends by
/// itself once the current callback or task returns.
fn join_unless_current(thread: Option<JoinHandle<()>>, here: ThreadId) {
    if let Some(t) = thread {
        if t.thread().id() != here {
            let _ = t.join();
        }
    }
}

/// The public types can be shared across threads; checked at compile time.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<UploadManager>();
};
