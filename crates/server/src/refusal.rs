//! What the receiver says when it will not take a request: a status and
//! a message, made from a store's failure by its kind in one place.

use std::fmt;

use http::StatusCode;

use crate::store::{ErrorKind as StoreErrorKind, StoreError};

/// A refused request: the status and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Refusal {
    status: StatusCode,
    message: String,
    /// The upload's offset, told with a conflict over it.
    offset: Option<u64>,
}

impl Refusal {
    /// A refusal with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            offset: None,
        }
    }

    /// A 500: `what` failed because of `e`.
    pub fn internal(what: &str, e: impl fmt::Display) -> Self {
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
    }

    /// The same, telling the upload's offset (`Upload-Offset`).
    pub(crate) fn with_offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    pub(crate) fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The HTTP status sent back.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message sent back.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<StoreError> for Refusal {
    /// The answer to a store's failure: 404 not found, 503 busy or
    /// unavailable (the client tries again), 409 conflict, 507 full, 400
    /// invalid, 422 corrupt (the bytes were discarded), 403 another's, 500
    /// otherwise.
    fn from(e: StoreError) -> Self {
        let status = match e.kind() {
            StoreErrorKind::NotFound => StatusCode::NOT_FOUND,
            StoreErrorKind::Busy | StoreErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            StoreErrorKind::Conflict => StatusCode::CONFLICT,
            StoreErrorKind::Full => StatusCode::INSUFFICIENT_STORAGE,
            StoreErrorKind::Invalid => StatusCode::BAD_REQUEST,
            StoreErrorKind::Corrupt => StatusCode::UNPROCESSABLE_ENTITY,
            StoreErrorKind::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal::new(status, e.message())
    }
}

pub(crate) fn too_large(max: u64) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("upload is larger than the maximum of {max} bytes"),
    )
}

/// A request body the connection ended early (closed one way, reset):
/// nothing is wrong with the request, which may come again (408).
pub(crate) fn broke_off(cause: impl fmt::Display) -> Refusal {
    Refusal::new(
        StatusCode::REQUEST_TIMEOUT,
        format!("the request body broke off: {cause}"),
    )
}
