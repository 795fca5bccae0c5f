//! When a failed block is sent again, and after how long.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use rand::Rng;

/// How a job retries failed blocks: exponential backoff with full jitter, a
/// cap on attempts per block and a budget of retries per job, and the
/// server's `Retry-After` honoured.
///
/// Retried: transport errors whose kind
/// [is retryable](crate::TransportErrorKind::is_retryable) (connection
/// refused or reset, timeouts and stalls), and the statuses 408, 429, 460
/// (block digest mismatch), 500, 502, 503 and 504. Every other status fails
/// the job at once with its reference code.
///
/// ```
/// use std::time::Duration;
/// use fileuploader_core::RetryPolicy;
///
/// let mut job = fileuploader_core::Job::default();
/// job.retry = RetryPolicy::default()
///     .with_max_attempts(8)
///     .with_initial_backoff(Duration::from_millis(50));
/// job.retry.max_retry_after = Duration::from_secs(5);
/// job.retry = RetryPolicy::none();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts per block, the first included; 1 disables retries. Default 5.
    pub max_attempts: u32,
    /// Retries per job, across all blocks; `None` (the default) allows 10
    /// plus a quarter of the job's blocks.
    pub budget: Option<u64>,
    /// The backoff ceiling for the first retry; it doubles per attempt and
    /// the wait is drawn uniformly below it. Default 200 ms.
    pub initial_backoff: Duration,
    /// The largest backoff ceiling. Default 10 s.
    pub max_backoff: Duration,
    /// The longest `Retry-After` waited for; a longer one fails the block.
    /// Default 60 s.
    pub max_retry_after: Duration,
    /// Whether a block whose request runs far past the job's recent ones
    /// is sent again beside it, on another connection, the first answer
    /// winning: only blocks the protocol may send twice (ranged blocks, not
    /// appends at an offset), one at a time per job, one block in twenty at
    /// most (at least two), and none while the job is retrying failures.
    /// Default false: two copies of a block in flight at once are more
    /// than some receivers take (a bucket's receivers may tile their
    /// landing from different copies), so it is asked for.
    pub hedge: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            budget: None,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            hedge: false,
        }
    }
}

impl RetryPolicy {
    /// No retries: the first failure fails the job, as in the reference.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            budget: Some(0),
            hedge: false,
            ..RetryPolicy::default()
        }
    }

    /// With slow blocks sent again beside themselves, or not.
    #[must_use]
    pub fn with_hedging(mut self, hedge: bool) -> Self {
        self.hedge = hedge;
        self
    }

    /// With `n` attempts per block, the first included.
    #[must_use]
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// With a job-wide budget of `n` retries.
    #[must_use]
    pub fn with_budget(mut self, n: u64) -> Self {
        self.budget = Some(n);
        self
    }

    /// With this backoff ceiling for the first retry.
    #[must_use]
    pub fn with_initial_backoff(mut self, wait: Duration) -> Self {
        self.initial_backoff = wait;
        self
    }

    /// With this largest backoff ceiling.
    #[must_use]
    pub fn with_max_backoff(mut self, wait: Duration) -> Self {
        self.max_backoff = wait;
        self
    }

    /// With this longest `Retry-After` waited for.
    #[must_use]
    pub fn with_max_retry_after(mut self, wait: Duration) -> Self {
        self.max_retry_after = wait;
        self
    }

    /// The job-wide budget for a job of `blocks` blocks.
    pub(crate) fn budget_for(&self, blocks: u64) -> u64 {
        self.budget.unwrap_or(10 + blocks / 4)
    }

    /// The wait before retry number `retry` (1 for the first): uniform in
    /// `0..=min(max_backoff, initial_backoff × 2^(retry-1))`.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .initial_backoff
            .saturating_mul(1 << retry.saturating_sub(1).min(20))
            .min(self.max_backoff);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Whether a block answered with `status` may be sent again.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 460 | 500 | 502 | 503 | 504)
}

/// The `Retry-After` header as a wait from `now`: delta-seconds or an HTTP
/// date (a date in the past waits nothing).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_full_jitter_up_to_the_cap() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..RetryPolicy::default()
        };
        for (retry, ceiling) in [(1, 100), (2, 200), (3, 350), (30, 350)] {
            let waits: Vec<Duration> = (0..200).map(|_| p.backoff(retry)).collect();
            assert!(
                waits.iter().all(|w| *w <= Duration::from_millis(ceiling)),
                "retry {retry}"
            );
            assert!(
                waits
                    .iter()
                    .any(|w| *w > Duration::from_millis(ceiling / 2)),
                "jitter spans the range"
            );
            assert!(
                waits
                    .iter()
                    .any(|w| *w < Duration::from_millis(ceiling / 2)),
                "full jitter reaches low"
            );
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Tue, 24 Nov 2026 15:00:00 GMT").unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        h.insert(
            "retry-after",
            "Tue, 24 Nov 2026 15:00:07 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            "Tue, 24 Nov 2026 14:00:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn retried_statuses() {
        let retried: Vec<u16> = (100..600)
            .filter(|&s| is_retryable_status(StatusCode::from_u16(s).unwrap()))
            .collect();
        assert_eq!(retried, [408, 429, 460, 500, 502, 503, 504]);
        assert_eq!(RetryPolicy::default().budget_for(1000), 260);
        assert_eq!(RetryPolicy::none().budget_for(1000), 0);
    }
}
