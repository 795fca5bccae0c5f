//! How many blocks may be in flight: `thread_num` always, or, under
//! [`Job::auto_threads`](crate::Job::auto_threads), found by trying. The
//! job begins with four and measures each window of acknowledgements:
//! while doubling pays (a tenth more throughput or better) it doubles;
//! once it does not, it goes back to the last limit that paid. Then every
//! few windows it tries one more (kept if it brings a tenth more) or one
//! fewer (kept if it keeps all but a twentieth of the best seen), in turn,
//! so a limit past what the receiver takes drifts back down. A retried
//! failure halves the limit, and a limit whose requests come to take twice
//! as long as when it was chosen steps back by one: a receiver that slows
//! down is given less to do.
//! `thread_num` stays the ceiling, so memory stays within
//! `thread_num × block_size`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::source::lock;

/// Where an adaptive job begins (the command line's default).
const START: usize = 4;
/// What more blocks in flight must bring to be kept: this much more
/// throughput than before.
const GAIN: f64 = 1.10;
/// A window lasts at least this many requests' time.
const ROUNDS: u32 = 4;
/// How much of the best throughput seen is still believed a window later:
/// a best that was luck, or conditions since changed, fades.
const FADE: f64 = 0.98;
/// Windows spent at a limit before one more is tried.
const PROBE_AFTER: u32 = 4;
/// What one fewer in flight must keep of the best throughput seen to be
/// kept.
const KEEP: f64 = 0.95;
/// How much longer than when their limit was chosen requests may come to
/// take before the limit steps back.
const CLIMB: u32 = 2;

/// A job's limit on blocks in flight.
#[derive(Debug)]
pub(crate) struct Pace {
    max: usize,
    /// The limit now, shared with the job's progress.
    limit: Arc<AtomicU64>,
    /// The measurements that move it; `None` when it is fixed.
    adapt: Option<Mutex<Adapt>>,
}

/// A limit being tried.
#[derive(Debug, Clone, Copy)]
enum Try {
    /// A rise from `from`, where the job moved `then` bytes a second: kept
    /// if it brings [`GAIN`] more.
    More { from: usize, then: f64 },
    /// One fewer than `from`: kept if it keeps [`KEEP`] of the best.
    Fewer { from: usize },
}

/// What an adaptive limit learns from.
#[derive(Debug)]
struct Adapt {
    /// Acknowledgements still to pass over: those of requests sent under
    /// the limit before the last change.
    settling: usize,
    /// When the current window began, and what it has gathered.
    began: Instant,
    bytes: u64,
    times: Vec<Duration>,
    /// Whether the limit is still doubling.
    doubling: bool,
    /// A limit being tried, and what it is judged against.
    trying: Option<Try>,
    /// The best throughput seen since the last failure or slowdown.
    best: f64,
    /// The requests' median time when the current limit was chosen.
    chosen_at: Option<Duration>,
    /// Whether the next probe tries one fewer (probes alternate).
    fewer_next: bool,
    /// Windows measured at the current limit.
    windows: u32,
}

impl Pace {
    /// A limit of `max` (`thread_num`), or one that adapts below it.
    pub(crate) fn new(auto: bool, max: usize, limit: Arc<AtomicU64>) -> Self {
        let max = max.max(1);
        let first = if auto { START.min(max) } else { max };
        limit.store(first as u64, Ordering::Relaxed);
        Pace {
            max,
            limit,
            adapt: auto.then(|| Mutex::new(Adapt::new())),
        }
    }

    /// How many blocks may be in flight now.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed) as usize
    }

    /// Learns from a block of `bytes` acknowledged after `took`.
    pub(crate) fn acked(&self, bytes: u64, took: Duration) {
        let Some(adapt) = &self.adapt else { return };
        let mut a = lock(adapt);
        let now = Instant::now();
        if a.settling > 0 {
            a.settling -= 1;
            a.began = now;
            return;
        }
        a.bytes += bytes;
        a.times.push(took);
        let limit = self.limit();
        let elapsed = now.duration_since(a.began);
        // Long enough to average over: a few requests per slot, and a few
        // requests' time.
        if a.times.len() < (3 * limit).max(6) || elapsed < took * ROUNDS {
            return;
        }
        let elapsed = elapsed.as_secs_f64().max(1e-6);
        let rate = a.bytes as f64 / elapsed;
        a.times.sort_unstable();
        let median = a.times[a.times.len() / 2];
        a.bytes = 0;
        a.times.clear();
        a.began = now;
        let next = a.judge(limit, self.max, rate, median);
        if next != limit {
            a.settling = limit;
            self.limit.store(next as u64, Ordering::Relaxed);
        }
    }

    /// Learns that a request failed and is to be retried: the limit halves.
    pub(crate) fn failed(&self) {
        let Some(adapt) = &self.adapt else { return };
        let mut a = lock(adapt);
        let limit = self.limit();
        let next = (limit / 2).max(1);
        a.doubling = false;
        a.trying = None;
        a.best = 0.0;
        a.chosen_at = None;
        a.windows = 0;
        a.bytes = 0;
        a.times.clear();
        a.settling = limit;
        self.limit.store(next as u64, Ordering::Relaxed);
    }
}

impl Adapt {
    /// Nothing learnt yet: doubling, from a window that begins now.
    fn new() -> Self {
        Adapt {
            settling: 0,
            began: Instant::now(),
            bytes: 0,
            times: Vec::new(),
            doubling: true,
            trying: None,
            best: 0.0,
            chosen_at: None,
            fewer_next: false,
            windows: 0,
        }
    }

    /// The limit after a window at `limit` moved `rate` bytes a second,
    /// its requests taking `median`.
    fn judge(&mut self, limit: usize, max: usize, rate: f64, median: Duration) -> usize {
        match self.trying.take() {
            Some(Try::More { from, then }) if rate < then * GAIN => {
                // The rise did not pay: back to the limit that did.
                self.doubling = false;
                return self.settle(from);
            }
            Some(Try::Fewer { from }) if rate < self.best * KEEP => return self.settle(from),
            Some(_) => {
                // Kept: measured afresh from the next window.
                self.chosen_at = None;
                self.windows = 0;
            }
            None => {}
        }
        self.best = (self.best * FADE).max(rate);
        let chosen = *self.chosen_at.get_or_insert(median);
        self.windows += 1;
        if median > chosen * CLIMB && limit > 1 {
            // Slower at the same limit: the receiver or the path has less
            // to give now.
            self.doubling = false;
            self.best = rate;
            return self.settle(limit - 1);
        }
        if self.doubling && limit < max {
            self.trying = Some(Try::More {
                from: limit,
                then: rate,
            });
            return self.settle((limit * 2).min(max));
        }
        if self.windows < PROBE_AFTER {
            return limit;
        }
        self.fewer_next = !self.fewer_next;
        if (self.fewer_next || limit == max) && limit > 1 {
            self.trying = Some(Try::Fewer { from: limit });
            return self.settle(limit - 1);
        }
        if limit < max {
            self.trying = Some(Try::More {
                from: limit,
                then: rate,
            });
            return self.settle(limit + 1);
        }
        limit
    }

    /// Moves to `limit`, measured afresh.
    fn settle(&mut self, limit: usize) -> usize {
        self.chosen_at = None;
        self.windows = 0;
        limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(10);

    #[test]
    fn doubles_while_it_pays_then_goes_back_and_tries_fewer_and_more_in_turn() {
        let mut a = Adapt::new();
        assert_eq!(a.judge(2, 16, 100.0, MS), 4, "the first window: double");
        assert_eq!(a.judge(4, 16, 190.0, MS), 8, "paid: double again");
        assert_eq!(a.judge(8, 16, 200.0, MS), 4, "did not pay: back");
        for _ in 0..PROBE_AFTER - 1 {
            assert_eq!(a.judge(4, 16, 190.0, MS), 4, "steady");
        }
        assert_eq!(a.judge(4, 16, 190.0, MS), 3, "one fewer is tried");
        assert_eq!(a.judge(3, 16, 150.0, MS), 4, "it lost throughput: back");
        for _ in 0..PROBE_AFTER - 1 {
            assert_eq!(a.judge(4, 16, 190.0, MS), 4);
        }
        assert_eq!(a.judge(4, 16, 190.0, MS), 5, "then one more");
        assert_eq!(a.judge(5, 16, 230.0, MS), 5, "paid: kept");
    }

    /// Where the limit stands after `windows` windows against a receiver
    /// that moves `rate(limit)` bytes a second, and the highest it reached
    /// in the second half.
    fn run(windows: usize, max: usize, rate: impl Fn(usize) -> f64) -> (usize, usize) {
        let mut a = Adapt::new();
        let (mut limit, mut highest) = (START.min(max), 0);
        for w in 0..windows {
            limit = a.judge(limit, max, rate(limit), MS);
            assert!((1..=max).contains(&limit));
            if w >= windows / 2 {
                highest = highest.max(limit);
            }
        }
        (limit, highest)
    }

    #[test]
    fn settles_near_what_the_receiver_takes_and_never_past_the_ceiling() {
        // Five at a time: doubling overshoots to 8, then fewer are tried
        // until one fewer loses throughput.
        let (limit, highest) = run(200, 16, |l| l.min(5) as f64 * 100.0);
        assert!((5..=6).contains(&limit), "{limit}");
        assert!(highest <= 6, "{highest}");
        // Every one more pays: up to the ceiling, never past it.
        let (limit, highest) = run(200, 3, |l| l as f64 * 100.0);
        assert!(limit >= 2 && highest == 3, "{limit} {highest}");
    }

    #[test]
    fn steps_back_when_requests_come_to_take_twice_as_long() {
        let mut a = Adapt::new();
        a.doubling = false;
        assert_eq!(a.judge(6, 16, 100.0, MS), 6);
        assert_eq!(a.judge(6, 16, 100.0, MS * 3), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_halves_the_limit_and_fixed_limits_never_move() {
        let shared = Arc::new(AtomicU64::new(0));
        let pace = Pace::new(true, 16, shared.clone());
        assert_eq!(pace.limit(), START);
        for _ in 0..3 * START {
            tokio::time::advance(MS).await;
            pace.acked(1000, MS);
        }
        assert_eq!(pace.limit(), 2 * START);
        assert_eq!(shared.load(Ordering::Relaxed), 8, "progress sees it");
        pace.failed();
        assert_eq!(pace.limit(), START);
        pace.failed();
        pace.failed();
        pace.failed();
        assert_eq!(pace.limit(), 1, "never below one");

        let fixed = Pace::new(false, 7, shared.clone());
        for _ in 0..100 {
            fixed.acked(1000, MS);
        }
        fixed.failed();
        assert_eq!(fixed.limit(), 7);
    }
}
