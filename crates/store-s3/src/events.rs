//! The S3 store's outbox and digests: what lets a receiver on a bucket
//! tell the application what landed, once per fleet, and sign receipts.
//!
//! An event is an object, `events/DUE.KEY` (`DUE` when it is due, in ms,
//! 20 digits: listing the outbox lists the most due first), written after
//! its file is in place and before its landing is recorded, so a recorded
//! landing always has one (a landing done again after a crash writes it
//! again: the same key). A receiver claims an event by writing
//! `claims/KEY/UNTIL.NONCE` and listing the claims: of those not run out,
//! the first in key order (the earliest `UNTIL`) holds it, so two receivers
//! that claim at once agree on one, as long as their clocks agree within a
//! lease. Delivered, the event and its claims go; failed, it is written
//! again under its next due time, the old object and the claim go.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fileuploader_store::{Event, Landed, StoreError};
use fileuploader_wire::sync::lock;
use serde::{Deserialize, Serialize};

use crate::{keys, S3Store};

/// An event as its object keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    /// The landing's record ([`Landed::to_record`]).
    landed: String,
    attempts: u32,
}

/// An event this receiver holds a claim on: its object and its claim.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    object: String,
    claim: String,
    landed: String,
    attempts: u32,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl S3Store {
    /// Leaves the event of `landed` in the outbox, when events are kept:
    /// under its upload id, or a key of its own for a file sent whole
    /// without one.
    pub(crate) async fn leave_event(&self, landed: &Landed) -> Result<(), StoreError> {
        if !self.s().events.load(Ordering::Relaxed) {
            return Ok(());
        }
        let key = match landed.id.as_str() {
            "" => format!("whole-{}", keys::nonce()),
            id => id.to_owned(),
        };
        self.put_event(&key, landed.to_record(), 0, 0).await
    }

    async fn put_event(
        &self,
        key: &str,
        landed: String,
        attempts: u32,
        due: u64,
    ) -> Result<(), StoreError> {
        let kept = Kept { landed, attempts };
        let json = serde_json::to_vec(&kept).map_err(|e| StoreError::io("an event", e))?;
        self.put_small("leave an event", &self.s().layout.event(key, due), json)
            .await
    }

    /// The events due now, claimed for `lease`, at most `limit`.
    pub(crate) async fn claim(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Event>, StoreError> {
        let layout = &self.s().layout;
        let now = now_ms();
        let mut claimed = Vec::new();
        for listed in self.list_first(&layout.events(), 1000).await? {
            let Some((due, key)) = layout.parse_event(&listed.key) else {
                continue;
            };
            if claimed.len() >= limit || due > now {
                break;
            }
            let Some(bytes) = self.get_small(&listed.key).await? else {
                continue;
            };
            let read = serde_json::from_slice::<Kept>(&bytes).ok();
            let Some((kept, landed)) = read.and_then(|kept| {
                let landed = Landed::from_record(&kept.landed, None)?;
                Some((kept, landed))
            }) else {
                tracing::warn!("event {key} cannot be read; it is left where it is");
                continue;
            };
            let until = now + lease.as_millis() as u64;
            let mine = format!("{}{until:020}.{}", layout.claims(key), keys::nonce());
            self.put_small("claim an event", &mine, Bytes::new())
                .await?;
            let claims = self.list(&layout.claims(key)).await?;
            let holder = claims
                .iter()
                .filter(|c| until_of(&c.key).is_some_and(|until| until > now))
                .map(|c| c.key.as_str())
                .min();
            if holder != Some(mine.as_str()) {
                self.delete(vec![mine]).await?;
                continue;
            }
            let held = Held {
                object: listed.key.clone(),
                claim: mine,
                landed: kept.landed,
                attempts: kept.attempts,
            };
            lock(&self.s().claims).insert(key.to_owned(), held);
            claimed.push(Event {
                key: key.to_owned(),
                landed,
                attempts: kept.attempts,
            });
        }
        Ok(claimed)
    }

    /// Event `key` was delivered: it goes, and its claims.
    pub(crate) async fn delivered(&self, key: &str) -> Result<(), StoreError> {
        let layout = &self.s().layout;
        let held = lock(&self.s().claims).remove(key);
        if let Some(held) = held {
            self.delete(vec![held.object]).await?;
        }
        self.delete_below(&layout.claims(key)).await
    }

    /// Event `key` could not be delivered: due again after `retry_in`, one
    /// more attempt counted; its old object and this receiver's claim go.
    pub(crate) async fn undelivered(
        &self,
        key: &str,
        retry_in: Duration,
    ) -> Result<(), StoreError> {
        let held = lock(&self.s().claims).remove(key);
        let Some(held) = held else {
            return Ok(());
        };
        let due = now_ms() + retry_in.as_millis() as u64;
        self.put_event(key, held.landed, held.attempts + 1, due)
            .await?;
        self.delete(vec![held.object, held.claim]).await
    }

    /// The SHA-256 of the object at `key`, read through, when landings are
    /// digested.
    pub(crate) async fn digest(&self, key: &str) -> Result<Option<[u8; 32]>, StoreError> {
        if !self.s().digests.load(Ordering::Relaxed) {
            return Ok(None);
        }
        Ok(Some(self.read_back(key).await?.sha256))
    }
}

/// The `UNTIL` of a claim's key.
fn until_of(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn claims_sort_by_when_they_run_out() {
        let early = format!("x/claims/k/{:020}.ab", 5);
        let late = format!("x/claims/k/{:020}.aa", 40);
        assert!(early < late);
        assert_eq!(super::until_of(&early), Some(5));
        assert_eq!(super::until_of("x/claims/k/junk"), None);
    }
}
