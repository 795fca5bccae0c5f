//! What a manager puts around its transport for all its jobs together: a
//! log line per request and response (`tracing`, target `fileuploader`,
//! level info), and the limit of how many requests are in flight, shared
//! first come, first served, so no job starves another. (How fast body
//! bytes leave is each body's [`Meter`](crate::body::Meter), sharing one
//! rate.)

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::transport::{Request, Response, Transport, TransportError};

/// A transport under a manager's limits, logging what passes.
#[derive(Debug)]
pub(crate) struct Throttled {
    pub(crate) inner: Arc<dyn Transport>,
    /// One permit per request in flight.
    pub(crate) permits: Option<Arc<Semaphore>>,
}

#[async_trait]
impl Transport for Throttled {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        let _permit = match &self.permits {
            Some(permits) => permits.clone().acquire_owned().await.ok(),
            None => None,
        };
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
