//! After-landing hooks: the receiver tells the application what landed.
//!
//! Each landing leaves an event in the store's outbox in the landing's own
//! commit ([`Store::keep_events`]); a delivery task of [`serve`] takes the
//! events that are due and hands each to the hook: a `POST` of its JSON to
//! a URL (answered 2xx), or a command run with the JSON on standard input
//! (exiting 0). A delivery that fails is tried again after a backoff that
//! doubles up to a minute, for as long as it takes; an event goes from the
//! outbox only once delivered. So an event is delivered at least once,
//! across crashes of the receiver and a hook that is down, and carries its
//! `key` (the upload id) so that a consumer can drop a repeat.
//!
//! [`serve`]: crate::Receiver::serve

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;

use crate::store::{Event, Store};

/// How long one delivery may take before it counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between two tries of one event.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the outbox is looked at when it was empty.
const IDLE: Duration = Duration::from_millis(250);

/// Where the receiver tells the application what landed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hook {
    /// `POST` each event's JSON to this `http://` URL, with an
    /// `Idempotency-Key` header; a 2xx answer is a delivery.
    Url(http::Uri),
    /// Run this command with `sh -c`, each event's JSON on its standard
    /// input; exit status 0 is a delivery.
    Command(String),
}

impl Hook {
    /// A hook from its flag: an `http://` URL, or a command.
    ///
    /// # Errors
    ///
    /// An `https://` URL (not supported yet) or one that does not parse.
    pub fn parse(text: &str) -> Result<Hook, String> {
        if text.starts_with("https://") {
            return Err(format!(
                "hook {text}: https hooks are not supported yet; use http:// on a trusted network, or a command"
            ));
        }
        if text.starts_with("http://") {
            return text
                .parse()
                .map(Hook::Url)
                .map_err(|e| format!("hook {text}: {e}"));
        }
        if text.trim().is_empty() {
            return Err("the hook is empty: give an http:// URL or a command".to_owned());
        }
        Ok(Hook::Command(text.to_owned()))
    }
}

/// Delivers the store's due events to `hook`, for as long as it runs.
pub(crate) async fn deliver(store: std::sync::Arc<dyn Store>, hook: Hook) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    loop {
        let events = match store.pending_events(32).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!("cannot read the events to deliver: {e}");
                Vec::new()
            }
        };
        if events.is_empty() {
            tokio::time::sleep(IDLE).await;
            continue;
        }
        for event in events {
            let told =
                match tokio::time::timeout(DELIVERY_TIMEOUT, tell(&client, &hook, &event)).await {
                    Ok(told) => told,
                    Err(_) => Err(format!("no answer in {DELIVERY_TIMEOUT:?}")),
                };
            let result = match told {
                Ok(()) => store.event_delivered(&event.key).await,
                Err(why) => {
                    let wait = backoff(event.attempts);
                    tracing::warn!(
                        "the hook did not take the event of {:?} ({why}); trying again in {wait:?}",
                        event.landed.name
                    );
                    store.event_failed(&event.key, wait).await
                }
            };
            if let Err(e) = result {
                tracing::warn!("cannot record the delivery of {:?}: {e}", event.key);
            }
        }
    }
}

/// How long to wait before trying an event again after `attempts` failed
/// deliveries: a second, doubling, at most [`MAX_BACKOFF`].
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(6)).min(MAX_BACKOFF)
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Hands `event` to `hook` once: `Err` says why it was not taken.
async fn tell(client: &HttpClient, hook: &Hook, event: &Event) -> Result<(), String> {
    let json = event.to_json();
    match hook {
        Hook::Url(url) => {
            let request = http::Request::post(url.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("idempotency-key", &event.key)
                .body(Full::new(Bytes::from(json)))
                .map_err(|e| e.to_string())?;
            let answer = client.request(request).await.map_err(|e| e.to_string())?;
            match answer.status() {
                s if s.is_success() => Ok(()),
                s => Err(format!("{url} answered {s}")),
            }
        }
        Hook::Command(command) => {
            let mut child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .stdin(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run {command:?}: {e}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                // A command that does not read its input is its own affair.
                let _ = stdin.write_all(json.as_bytes()).await;
            }
            let status = child.wait().await.map_err(|e| e.to_string())?;
            match status.success() {
                true => Ok(()),
                false => Err(format!("{command:?} exited with {status}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_are_read_from_their_flag() {
        assert!(matches!(
            Hook::parse("http://127.0.0.1:9/landed"),
            Ok(Hook::Url(_))
        ));
        assert_eq!(
            Hook::parse("cat >> log"),
            Ok(Hook::Command("cat >> log".into()))
        );
        assert!(Hook::parse("https://app/landed")
            .unwrap_err()
            .contains("not supported yet"));
        assert!(Hook::parse(" ").is_err());
    }

    #[test]
    fn retries_back_off_to_a_minute() {
        let waits: Vec<u64> = [0, 1, 2, 5, 6, 30].map(|n| backoff(n).as_secs()).into();
        assert_eq!(waits, [1, 2, 4, 32, 60, 60]);
    }
}
