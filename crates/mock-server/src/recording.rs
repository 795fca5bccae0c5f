//! Answers to the questions tests ask of what arrived.

use std::collections::BTreeSet;

use crate::faults::FiredFault;
use crate::record::{Arrival, Recorder};
use fileuploader_wire::sync::lock;

/// A read-only view of everything a mock server received.
#[derive(Debug, Clone)]
pub struct Recording(pub(crate) Recorder);

impl Recording {
    /// Every request, in order of arrival.
    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.0.state).arrivals.clone()
    }

    /// How many requests arrived.
    pub fn len(&self) -> usize {
        lock(&self.0.state).arrivals.len()
    }

    /// Whether nothing arrived.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most requests in flight at once.
    pub fn max_concurrency(&self) -> usize {
        lock(&self.0.state)
            .arrivals
            .iter()
            .map(|a| a.in_flight)
            .max()
            .unwrap_or(0)
    }

    /// The first byte of each request's range, in order of arrival.
    pub fn order(&self) -> Vec<u64> {
        lock(&self.0.state)
            .arrivals
            .iter()
            .map(|a| a.range.map_or(0, |r| r.first))
            .collect()
    }

    /// Every request for the block starting at `first` of the source named
    /// `file_name`, attempts included.
    pub fn requests_for_block(&self, file_name: &str, first: u64) -> Vec<Arrival> {
        lock(&self.0.state)
            .arrivals
            .iter()
            .filter(|a| {
                a.file_name.as_deref() == Some(file_name) && a.range.map_or(0, |r| r.first) == first
            })
            .cloned()
            .collect()
    }

    /// The distinct file names that arrived.
    pub fn file_names(&self) -> BTreeSet<String> {
        lock(&self.0.state)
            .arrivals
            .iter()
            .filter_map(|a| a.file_name.clone())
            .collect()
    }

    /// The faults that fired, in order.
    pub fn fired_faults(&self) -> Vec<FiredFault> {
        lock(&self.0.state).fired.clone()
    }

    /// The file named `file_name` as reassembled from the blocks answered
    /// with 2xx, or an error saying what is missing or inconsistent.
    ///
    /// # Errors
    ///
    /// When no block of it was acknowledged, the blocks disagree on the
    /// total or the upload id, or some bytes never arrived.
    pub fn reassembled(&self, file_name: &str) -> Result<Vec<u8>, String> {
        let state = lock(&self.0.state);
        let blocks: Vec<&Arrival> = state
            .arrivals
            .iter()
            .filter(|a| a.file_name.as_deref() == Some(file_name) && (200..300).contains(&a.status))
            .collect();
        let Some(first) = blocks.first() else {
            return Err(format!("no acknowledged block of {file_name:?}"));
        };
        let Some(total) = first.range.map(|r| r.total) else {
            return match blocks.len() {
                1 => Ok(first.data.to_vec()),
                n => Err(format!("{n} whole-file requests for {file_name:?}")),
            };
        };
        let mut file = vec![0u8; total as usize];
        let mut covered = vec![false; total as usize];
        for b in &blocks {
            let r = b
                .range
                .ok_or("a block without Content-Range among ranged ones")?;
            if r.total != total || b.upload_id != first.upload_id {
                return Err(format!(
                    "block at {} disagrees on total or upload id",
                    r.first
                ));
            }
            if r.last - r.first + 1 != b.data.len() as u64 {
                return Err(format!(
                    "block at {} has {} bytes for range {r:?}",
                    r.first,
                    b.data.len()
                ));
            }
            file[r.first as usize..=r.last as usize].copy_from_slice(&b.data);
            covered[r.first as usize..=r.last as usize].fill(true);
        }
        match covered.iter().position(|c| !c) {
            Some(hole) => Err(format!("byte {hole} of {file_name:?} never arrived")),
            None => Ok(file),
        }
    }
}
