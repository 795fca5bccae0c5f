//! One run of a job, a room per concern: `scheduler` (workers, the
//! job-wide bound, the one outcome), `cursor` (where each source stands,
//! its `Phase` moved by one transition function), `begin` (the receiver
//! says what it holds; the journal fills in only what it cannot say),
//! `attempt` (one block: read, encode, send, judge, retry), `hedge` (a
//! slow block sent again beside itself), `pace` (how many blocks may be
//! in flight) and `landing`
//! (the session's finish, checked against the source's length and CRC32C).
//! This module holds what they share: the context, the cancel signal, and
//! the in-flight guard.

pub(crate) mod attempt;
mod begin;
mod cursor;
pub(crate) mod hedge;
mod landing;
pub(crate) mod pace;
pub(crate) mod scheduler;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::events::Events;
use crate::job::{Job, JobState};
use crate::journal::{Journal, JournaledAck};
use crate::plan::BlockPlan;
use crate::protocol::UploadSession;
use crate::rate::RateLimit;
use crate::source::Source;
use crate::transport::Transport;

/// Tells a running job to stop: a flag workers check before each task, and
/// a wake-up for everyone waiting on it (the run, the blocks in flight).
#[derive(Debug, Default)]
pub(crate) struct CancelSignal {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelSignal {
    /// Returns whether this call cancelled the job (false if it already was).
    pub(crate) fn cancel(&self) -> bool {
        let first = !self.cancelled.swap(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        first
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Ready once the job is cancelled (at once if it is already).
    pub(crate) async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is read: a cancel in between
            // still wakes this waiter.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// One source of a run: its bytes, its session, its journal.
pub(crate) struct RunSource {
    pub(crate) source: Arc<dyn Source>,
    pub(crate) session: Box<dyn UploadSession>,
    pub(crate) name: String,
    pub(crate) journal: Option<Arc<Journal>>,
    /// The blocks the journal listed as acknowledged.
    pub(crate) journaled: Vec<JournaledAck>,
}

/// What a run shares.
pub(crate) struct RunContext {
    pub(crate) job: Job,
    pub(crate) transport: Arc<dyn Transport>,
    /// The byte rate every body of the manager shares, if limited.
    pub(crate) rate: Option<Arc<RateLimit>>,
    pub(crate) sources: Vec<RunSource>,
    pub(crate) plan: BlockPlan,
    pub(crate) total_bytes: u64,
    pub(crate) cancel: Arc<CancelSignal>,
    pub(crate) events: Events,
    pub(crate) retries_left: AtomicU64,
    /// When a slow block is sent again beside itself.
    pub(crate) hedging: hedge::Hedging,
    /// How many blocks may be in flight.
    pub(crate) pace: pace::Pace,
}

impl RunContext {
    /// Takes one retry from the job's budget; false when it is spent.
    pub(crate) fn take_retry(&self) -> bool {
        self.retries_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Counts a request in flight for as long as it lives, aborts included.
#[must_use]
pub(crate) struct InFlight<'a>(&'a JobState);

impl<'a> InFlight<'a> {
    pub(crate) fn enter(state: &'a JobState) -> Self {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
