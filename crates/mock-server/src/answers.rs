//! A mock server that answers for its uploads, as a receiver that keeps
//! state does (`docs/PROTOCOL.md`): status queries, discards, and the
//! statement of each block's answer, with scripted lapses.

use std::collections::HashMap;

use fileuploader_wire::{RangeSet, Statement};

/// How a mock server answers for uploads. Without one it answers nothing
/// but the status of each request, like a receiver that cannot say what it
/// holds.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    claims: Option<(u64, Vec<(u64, u64)>)>,
    forget_after: Option<usize>,
    landing_error: Option<String>,
}

impl Answers {
    /// Answers truthfully: what arrived, and the landing once all of it did.
    pub fn truthful() -> Self {
        Answers::default()
    }

    /// Claims to hold `ranges` of every upload of `total` bytes before any
    /// block of it arrived, as after an interrupted run.
    #[must_use]
    pub fn holding(mut self, total: u64, ranges: Vec<(u64, u64)>) -> Self {
        self.claims = Some((total, ranges));
        self
    }

    /// Forgets every upload once, when block number `n` (from 1) arrives,
    /// as a receiver that lost its disk.
    #[must_use]
    pub fn forgetting_after(mut self, n: usize) -> Self {
        self.forget_after = Some(n);
        self
    }

    /// Never lands: a complete upload stays partial with this error.
    #[must_use]
    pub fn failing_to_land(mut self, error: impl Into<String>) -> Self {
        self.landing_error = Some(error.into());
        self
    }
}

/// A query that is not a block: a status query or a discard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `GET` or `DELETE`.
    pub method: String,
    /// The upload it names.
    pub upload_id: String,
}

#[derive(Debug)]
struct Held {
    total: u64,
    received: RangeSet,
    name: String,
    landed: bool,
}

/// What an answering mock server holds.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    answers: Answers,
    uploads: HashMap<String, Held>,
    blocks: usize,
    pub(crate) queries: Vec<Query>,
}

impl Ledger {
    pub(crate) fn new(answers: Answers) -> Self {
        Ledger {
            answers,
            ..Ledger::default()
        }
    }

    fn held(&mut self, id: &str, total: u64, name: &str) -> &mut Held {
        let claims = self.answers.claims.clone();
        self.uploads.entry(id.to_owned()).or_insert_with(|| {
            let mut received = RangeSet::default();
            if let Some((claimed_total, ranges)) = claims.filter(|(t, _)| *t == total) {
                for (s, e) in ranges.into_iter().filter(|&(_, e)| e <= claimed_total) {
                    received.insert(s, e);
                }
            }
            Held {
                total,
                received,
                name: name.to_owned(),
                landed: false,
            }
        })
    }

    /// Records a stored block (`range` `None` for a whole file of `len`
    /// bytes) and states what the upload now is.
    pub(crate) fn stored(
        &mut self,
        id: Option<&str>,
        name: &str,
        range: Option<(u64, u64, u64)>,
        len: u64,
    ) -> Statement {
        self.blocks += 1;
        if self.answers.forget_after == Some(self.blocks) {
            self.uploads.clear();
        }
        let id = id.unwrap_or("");
        let (start, end, total) = range.unwrap_or((0, len, len));
        let error = self.answers.landing_error.clone();
        let held = self.held(id, total, name);
        held.received.insert(start, end);
        if held.received.covered() == held.total && error.is_none() {
            held.landed = true;
            return Statement::landed(id, &held.name, held.total, None);
        }
        Statement::Received {
            upload_id: id.to_owned(),
            start,
            end,
        }
    }

    /// Answers a status query.
    pub(crate) fn status(&mut self, id: &str) -> Statement {
        self.queries.push(Query {
            method: "GET".into(),
            upload_id: id.to_owned(),
        });
        if !self.uploads.contains_key(id) {
            if let Some((total, _)) = self.answers.claims.clone() {
                self.held(id, total, "");
            }
        }
        let error = self.answers.landing_error.clone();
        match self.uploads.get(id) {
            None => Statement::Unknown {
                upload_id: id.to_owned(),
            },
            Some(h) if h.landed => Statement::landed(id, &h.name, h.total, None),
            Some(h) => Statement::Partial {
                upload_id: id.to_owned(),
                total: h.total,
                received: h.received.ranges().to_vec(),
                error: error.filter(|_| h.received.covered() == h.total),
            },
        }
    }

    /// Discards an upload.
    pub(crate) fn discard(&mut self, id: &str) -> Statement {
        self.queries.push(Query {
            method: "DELETE".into(),
            upload_id: id.to_owned(),
        });
        self.uploads.remove(id);
        Statement::Unknown {
            upload_id: id.to_owned(),
        }
    }
}
