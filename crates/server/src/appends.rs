//! Appends in flight in this process, so that a newer request for the same
//! upload (a client resuming after a pause, a page reload or a broken
//! connection) ends the old one instead of waiting behind it: the old
//! append keeps what it delivered, durably, and the newer request answers
//! with the true offset at once. A segmented block is registered the same
//! way under [`block_key`]: the same block sent again (a retry after a
//! connection that stalled) ends the request still holding its range,
//! which keeps nothing of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fileuploader_wire::sync::lock;
use tokio::sync::{watch, OwnedMutexGuard};

/// How long a newer request waits for an ended append to acknowledge what
/// it delivered.
const HANDOVER: Duration = Duration::from_secs(10);

/// Numbers every append.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The registry's key for the block of upload `id` at `start..end`: apart
/// from every upload's own key (a line break is in no header's value).
pub(crate) fn block_key(id: &str, start: u64, end: u64) -> String {
    format!("{id}\n{start}-{end}")
}

/// The appends in flight, by upload id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Appends(Arc<Mutex<HashMap<String, Entry>>>);

#[derive(Debug)]
struct Entry {
    owner: String,
    /// Told `true` when a newer request takes over.
    stop: watch::Sender<bool>,
    /// Held by the append until it has acknowledged what it took.
    done: Arc<tokio::sync::Mutex<()>>,
    /// Which append this is, so an ended one removes only itself.
    generation: u64,
}

/// One append in flight; it leaves the registry when dropped.
#[derive(Debug)]
pub(crate) struct Appending {
    appends: Appends,
    id: String,
    generation: u64,
    stop: watch::Receiver<bool>,
    _done: OwnedMutexGuard<()>,
}

impl Appending {
    /// Completes when a newer request for the upload takes over.
    pub(crate) async fn taken_over(&mut self) {
        let _ = self.stop.wait_for(|stop| *stop).await;
    }
}

impl Drop for Appending {
    fn drop(&mut self) {
        let mut map = lock(&self.appends.0);
        if map
            .get(&self.id)
            .is_some_and(|e| e.generation == self.generation)
        {
            map.remove(&self.id);
        }
    }
}

impl Appends {
    /// Ends the append in flight for upload `id` if `owner` began it, and
    /// waits (boundedly) until what it took is acknowledged.
    pub(crate) async fn take_over(&self, id: &str, owner: &str) {
        let done = {
            let map = lock(&self.0);
            match map.get(id) {
                Some(entry) if entry.owner == owner => {
                    let _ = entry.stop.send(true);
                    entry.done.clone()
                }
                _ => return,
            }
        };
        if tokio::time::timeout(HANDOVER, done.lock()).await.is_err() {
            tracing::warn!("upload {id}: an ended append did not finish in {HANDOVER:?}");
        }
    }

    /// Registers an append to upload `id` by `owner`, ending any in flight.
    pub(crate) async fn begin(&self, id: &str, owner: &str) -> Appending {
        self.take_over(id, owner).await;
        let done = Arc::new(tokio::sync::Mutex::new(()));
        let guard = done.clone().try_lock_owned().expect("a new lock is free");
        let (stop, stopped) = watch::channel(false);
        let mut map = lock(&self.0);
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = map.insert(
            id.to_owned(),
            Entry {
                owner: owner.to_owned(),
                stop,
                done,
                generation,
            },
        ) {
            // Registered meanwhile by a request of the same owner: it ends.
            let _ = old.stop.send(true);
        }
        Appending {
            appends: self.clone(),
            id: id.to_owned(),
            generation,
            stop: stopped,
            _done: guard,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_newer_request_ends_the_append_in_flight_and_waits_for_it() {
        let appends = Appends::default();
        let mut old = appends.begin("u", "me").await;
        // A stranger's request ends nothing.
        appends.take_over("u", "stranger").await;
        assert!(!*old.stop.borrow());
        let (ended, mut told) = tokio::sync::oneshot::channel();
        let appending = tokio::spawn(async move {
            old.taken_over().await;
            let _ = ended.send(());
            // Acknowledging what it took takes a while.
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(old);
        });
        let start = tokio::time::Instant::now();
        let new = appends.begin("u", "me").await;
        assert!(told.try_recv().is_ok(), "the old append was told to end");
        assert_eq!(start.elapsed(), Duration::from_secs(1), "and waited for");
        appending.await.unwrap();
        assert!(
            appends.0.lock().unwrap().contains_key("u"),
            "the new one stays"
        );
        drop(new);
        assert!(appends.0.lock().unwrap().is_empty());
    }
}
