//! What went wrong in a store, by kind: the receiver's doors choose the
//! answer (a status, a header), the store only says what happened.

use std::fmt;

/// What kind of failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// What was asked for is not there (an upload, its bytes).
    NotFound,
    /// Someone else holds it for now (a byte range being written, a file
    /// being landed): try again shortly.
    Busy,
    /// It contradicts what is stored: a name taken, bytes that differ from
    /// acknowledged ones, a length that disagrees.
    Conflict,
    /// No room: a quota, or the disk or bucket is full.
    Full,
    /// The storage cannot be reached or refuses for now.
    Unavailable,
    /// The request cannot be stored as asked (a name that cannot be a
    /// file, say).
    Invalid,
    /// The stored bytes do not match what was acknowledged of them.
    Corrupt,
    /// It belongs to other credentials (an upload id another landed).
    Forbidden,
    /// Anything else the storage failed at.
    Io,
}

/// A store's failure: its kind and a message that says what happened and,
/// where it can, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    kind: ErrorKind,
    message: String,
}

impl StoreError {
    /// A failure of this kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    /// An [`ErrorKind::Io`] failure: `what` failed because of `e`.
    pub fn io(what: &str, e: impl fmt::Display) -> Self {
        StoreError::new(ErrorKind::Io, format!("{what}: {e}"))
    }

    /// An [`ErrorKind::Forbidden`] failure: upload id `id` belongs to
    /// other credentials (landed, or in progress).
    pub fn others_id(id: &str) -> Self {
        StoreError::new(
            ErrorKind::Forbidden,
            format!(
                "upload id {id} belongs to other credentials; send the upload under another id"
            ),
        )
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What happened.
    pub fn message(&self) -> &str {
        &self.message
    }
}
