//! Hedged requests: a block whose request runs far past the job's recent
//! ones is sent again beside it, on another connection, and the first good
//! answer wins. A stalled connection or a slow receiver behind a balancer
//! then costs one more request instead of the whole wait.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::source::lock;

/// How many recent requests the threshold is drawn from.
const WINDOW: usize = 64;
/// How many must have been timed before any block is hedged.
const MIN_SAMPLES: usize = 16;
/// "Far past": this many times the recent 95th percentile...
const FACTOR: u32 = 4;
/// ...and never sooner than this.
const FLOOR: Duration = Duration::from_millis(250);

/// A job's hedging: the times of its recent acknowledged requests, whether
/// a hedge is out (one at a time, so memory stays within one block more
/// than the job's bound), and how many hedges are left (one block in
/// twenty, at least two: hedges are for stragglers, not for a receiver
/// that is failing, and they leave the retry budget to failures).
#[derive(Debug)]
pub(crate) struct Hedging {
    enabled: bool,
    recent: Mutex<VecDeque<Duration>>,
    out: AtomicBool,
    left: AtomicU64,
}

/// A hedge out; the next may go once it is dropped.
pub(crate) struct Slot<'a>(&'a AtomicBool);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Hedging {
    /// Hedging for a job of `blocks` blocks, or none.
    pub(crate) fn new(enabled: bool, blocks: u64) -> Self {
        Hedging {
            enabled,
            recent: Mutex::new(VecDeque::with_capacity(WINDOW)),
            out: AtomicBool::new(false),
            left: AtomicU64::new((blocks / 20).max(2)),
        }
    }

    /// Records how long an acknowledged request took.
    pub(crate) fn record(&self, took: Duration) {
        if !self.enabled {
            return;
        }
        let mut recent = lock(&self.recent);
        if recent.len() == WINDOW {
            recent.pop_front();
        }
        recent.push_back(took);
    }

    /// How long a request may run before its block is sent again beside
    /// it: `None` while hedging is off or too few requests were timed.
    pub(crate) fn after(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        let mut times: Vec<Duration> = lock(&self.recent).iter().copied().collect();
        if times.len() < MIN_SAMPLES {
            return None;
        }
        times.sort_unstable();
        let p95 = times[(times.len() * 95).div_ceil(100) - 1];
        Some((p95 * FACTOR).max(FLOOR))
    }

    /// The one hedge slot, if it is free and the job has hedges left.
    pub(crate) fn take(&self) -> Option<Slot<'_>> {
        self.out
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let slot = Slot(&self.out);
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .ok()
            .map(|_| slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hedges_wait_for_enough_requests_then_go_far_past_their_95th_percentile() {
        let h = Hedging::new(true, 60);
        for _ in 0..MIN_SAMPLES - 1 {
            h.record(Duration::from_millis(100));
        }
        assert_eq!(h.after(), None, "too few requests timed");
        h.record(Duration::from_millis(100));
        assert_eq!(h.after(), Some(Duration::from_millis(400)));
        for _ in 0..WINDOW {
            h.record(Duration::from_millis(10));
        }
        assert_eq!(h.after(), Some(FLOOR), "never sooner than the floor");
        let slot = h.take().expect("free");
        assert!(h.take().is_none(), "one hedge at a time");
        drop(slot);
        assert!(h.take().is_some(), "60 blocks: 3 hedges");
        assert!(h.take().is_some());
        assert!(h.take().is_none(), "no more than one block in twenty");
        assert_eq!(Hedging::new(false, 60).after(), None);
    }
}
