//! Calling a job's callbacks: inline by default, or wherever an
//! [`EventDispatcher`] sends them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::error::Error;
use crate::job::Job;
use crate::source::lock;

/// Runs a job's callbacks somewhere: it is handed each callback, already
/// bound to its arguments, in the order the events happen. Without one,
/// callbacks run inline on the task that drives the job.
///
/// A dispatcher that sends the calls to one thread of its own keeps slow
/// callbacks off the transfer path and keeps each job's events in order.
pub type EventDispatcher = Arc<dyn Fn(Box<dyn FnOnce() + Send>) + Send + Sync>;

#[derive(Clone, Default)]
pub(crate) struct Events {
    dispatch: Option<EventDispatcher>,
}

impl Events {
    pub(crate) fn new(dispatch: Option<EventDispatcher>) -> Self {
        Events { dispatch }
    }

    /// Runs `call` where callbacks run; a panic in it is logged, not spread
    /// into the job.
    fn emit(&self, call: impl FnOnce() + Send + 'static) {
        let guarded = move || {
            if catch_unwind(AssertUnwindSafe(call)).is_err() {
                tracing::error!("an upload job callback panicked");
            }
        };
        match &self.dispatch {
            None => guarded(),
            Some(dispatch) => dispatch(Box::new(guarded)),
        }
    }

    pub(crate) fn percent(&self, job: &Job, percent: Option<u8>) {
        if let (Some(p), Some(f)) = (percent, job.callbacks.percent.clone()) {
            let job = job.clone();
            self.emit(move || f(&job, p));
        }
    }

    pub(crate) fn success(&self, job: &Job) {
        if let Some(f) = job.callbacks.success.clone() {
            let job = job.clone();
            self.emit(move || f(&job));
        }
    }

    /// Tells the job's failure callback, once the answer the run failed on
    /// is kept on the job ([`Job::failure_answer`]).
    pub(crate) fn failure(&self, job: &Job, e: &Error) {
        *lock(&job.state.failed_on) = e.answer().cloned().map(|a| a.bounded(job.answer_limit));
        if let Some(f) = job.callbacks.failure.clone() {
            let (job, e) = (job.clone(), e.clone());
            self.emit(move || f(&job, e.code(), e.message()));
        }
    }
}
