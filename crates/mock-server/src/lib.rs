//! Test support for fileuploader: a mock upload endpoint on wiremock that
//! records every block and scripts faults, a raw listener for mid-body
//! faults, and the conformance suite every transport must pass. It does
//! not depend on the receiver: the suite's protocol scenarios upload to one
//! the caller starts.
//!
//! - [`MockUploadServer`] parses each request's multipart body and records
//!   its source, range, bytes and digest, fields, headers, timing and the
//!   requests in flight; [`Recording`] answers what tests ask (reassembled
//!   files, peak concurrency, order of arrival, requests per block).
//! - [`Fault`]s are scripted and counted, never random: "block 7, first
//!   attempt: 503", "every 5th block: 429 with `Retry-After: 1`". Each one
//!   that fires is recorded.
//! - [`Answers`] make a server answer for its uploads as a receiver that
//!   keeps state does (status queries, discards, landing statements), with
//!   scripted lapses: ranges claimed held, uploads forgotten, landings that
//!   fail.
//! - [`RawFaultServer`] closes, stalls or resets chosen requests mid-body.
//! - [`conformance`] is the suite, as public functions taking a transport
//!   factory.

#![warn(missing_docs)]

mod answers;
pub mod conformance;
mod draft;
mod faults;
mod protocols;
mod raw;
mod record;
mod recording;
mod server;

pub use answers::{Answers, Query};
pub use faults::{Action, Attempt, Fault, FiredFault, Target};
pub use raw::{FiredRawFault, RawFault, RawFaultServer};
pub use record::{Arrival, Range};
pub use recording::Recording;
pub use server::{MockUploadServer, MockUploadServerBuilder};
