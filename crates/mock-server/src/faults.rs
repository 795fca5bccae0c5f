//! Scripted, counted faults: which block, which attempt, what happens.

use std::time::Duration;

use crate::record::Range;

/// Which requests a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every block.
    Any,
    /// The block whose range starts at this byte (0 for single-block files).
    RangeStart(u64),
    /// Every `n`th distinct block, counted in order of first arrival from 0
    /// (blocks 0, n, 2n, …).
    EveryNth(usize),
}

/// Which attempts of a matching block a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Only attempt `k` (1 is the first).
    Nth(usize),
    /// Attempts 1 to `k`.
    UpTo(usize),
    /// Every attempt.
    Always,
}

/// What the server does instead of answering 200 at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer with this status.
    Status(u16),
    /// Answer with this status and a `Retry-After` header.
    RetryAfter(u16, String),
    /// Answer with this status (a redirect) and a `Location` header.
    Redirect(u16, String),
    /// Answer 200 after this long.
    Delay(Duration),
    /// Hold the connection without answering (for an hour).
    Hold,
}

/// A scripted fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Which blocks.
    pub target: Target,
    /// Which attempts.
    pub attempt: Attempt,
    /// What happens.
    pub action: Action,
}

impl Fault {
    /// A fault on `target`, attempt `attempt`, doing `action`.
    pub fn new(target: Target, attempt: Attempt, action: Action) -> Self {
        Fault {
            target,
            attempt,
            action,
        }
    }

    /// Block `index` of a file cut into `block_size` blocks, on its first
    /// attempt only.
    pub fn block_once(index: u64, block_size: u64, action: Action) -> Self {
        Fault::new(
            Target::RangeStart(index * block_size),
            Attempt::Nth(1),
            action,
        )
    }

    pub(crate) fn matches(&self, start: u64, nth_block: usize, attempt: usize) -> bool {
        let target = match self.target {
            Target::Any => true,
            Target::RangeStart(s) => s == start,
            Target::EveryNth(n) => n > 0 && nth_block % n == 0,
        };
        let attempt = match self.attempt {
            Attempt::Nth(k) => attempt == k,
            Attempt::UpTo(k) => attempt <= k,
            Attempt::Always => true,
        };
        target && attempt
    }
}

/// A fault that fired, in the order they fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredFault {
    /// The arrival it fired on.
    pub seq: usize,
    /// That request's range.
    pub range: Option<Range>,
    /// That request's attempt number for its block.
    pub attempt: usize,
    /// What was done.
    pub action: Action,
}
