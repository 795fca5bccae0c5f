//! What a manager puts around its transport for all its jobs together: a
//! log line per request and response (`tracing`, target `fileuploader`,
//! level info), and the limits of how many requests are in flight and how
//! fast body bytes leave, shared first come, first served, so no job
//! starves another.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::source::lock;
use crate::transport::{Request, Response, Transport, TransportError};

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

/// A transport under a manager's limits, logging what passes.
#[derive(Debug)]
pub(crate) struct Throttled {
    pub(crate) inner: Arc<dyn Transport>,
    /// One permit per request in flight.
    pub(crate) permits: Option<Arc<Semaphore>>,
    pub(crate) rate: Option<Arc<RateLimit>>,
}

#[async_trait]
impl Transport for Throttled {
    async fn send(&self, mut request: Request) -> Result<Response, TransportError> {
        let _permit = match &self.permits {
            Some(permits) => permits.clone().acquire_owned().await.ok(),
            None => None,
        };
        if let Some(rate) = &self.rate {
            request.body_mut().limit_rate(rate.clone());
        }
        let (method, uri, len) = (
            request.method().clone(),
            request.uri().clone(),
            request.body().len(),
        );
        let range = request
            .headers()
            .get(http::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        tracing::info!(target: "fileuploader", "> {method} {uri}{range}, {len} bytes");
        let started = std::time::Instant::now();
        let answered = self.inner.send(request).await;
        match &answered {
            Ok(response) => tracing::info!(
                target: "fileuploader",
                "< {} {:?} for {method} {uri} in {:?}",
                response.status(),
                response.version(),
                started.elapsed()
            ),
            Err(e) => {
                tracing::info!(target: "fileuploader", "< no answer for {method} {uri}: {e}");
            }
        }
        answered
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
