//! One byte rate shared by every request body of a manager.

use std::sync::Mutex;
use std::time::Duration;

use fileuploader_wire::sync::lock;
use tokio::time::Instant;

/// How far ahead of the rate a sender may run: a burst this long.
const BURST: Duration = Duration::from_millis(50);

/// A byte rate shared by many request bodies: each chunk a body hands out
/// books its bytes on one clock, and the body waits until the clock says
/// the link is free again.
#[derive(Debug)]
pub(crate) struct RateLimit {
    bytes_per_second: f64,
    /// When the bytes booked so far will have left at the rate.
    free_at: Mutex<Instant>,
}

impl RateLimit {
    pub(crate) fn new(bytes_per_second: u64) -> Self {
        RateLimit {
            bytes_per_second: bytes_per_second.max(1) as f64,
            free_at: Mutex::new(Instant::now()),
        }
    }

    /// Books `bytes` that are leaving now; returns when the next bytes may
    /// leave, if that is later than now plus the burst allowance.
    pub(crate) fn book(&self, bytes: usize) -> Option<Instant> {
        let now = Instant::now();
        let mut free_at = lock(&self.free_at);
        let start = (*free_at).max(now);
        *free_at = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second);
        let wait_until = *free_at - BURST;
        (wait_until > now).then_some(wait_until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_shared_rate_spaces_bytes_by_their_count() {
        let rate = RateLimit::new(1000);
        assert_eq!(rate.book(40), None, "within the burst");
        let start = Instant::now();
        let next = rate.book(1000).expect("past the burst");
        assert_eq!(next - start, Duration::from_millis(1040) - BURST);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(rate.book(10), None, "an idle link has room again");
    }
}
