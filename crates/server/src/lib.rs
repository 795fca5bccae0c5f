//! The fileuploader reference receiver: one service that answers the
//! segmented multipart convention (`docs/PROTOCOL.md`), tus 1.0 and the
//! IETF resumable-upload draft, and lands each upload whole, once.
//!
//! # What it owns, and what it does not
//!
//! It owns the HTTP side: who may ask (credentials, CORS), how much a
//! client may cost (limits), each protocol's requests and answers, and the
//! one place that decides a file landed. Where bytes and records live is a
//! [`store::Store`]'s business (the trait and its records are in
//! `fileuploader-store`; the embedded directory store, [`store::FsStore`],
//! is here; `fileuploader-store-s3` keeps them in a bucket). The bytes on
//! the wire and the protocols' rules are `fileuploader-wire`'s.
//!
//! # How a request flows
//!
//! - `serve`: the accept loop (TLS, HTTP/1.1 and HTTP/2, connection and
//!   descriptor bounds, graceful stop);
//! - `route`: [`Receiver::handle`], every request's first stop (method
//!   overrides, credentials in `auth`, admission in `limits`, CORS in
//!   `cors`), which picks a door;
//! - `doors`: the segmented door (blocks and whole files in forms, the
//!   status query, the discard) and the resumable door (tus and the draft:
//!   creation, `HEAD`, `PATCH`, concatenation, termination);
//! - `uploads`: the one place an upload is found, begun, acknowledged and
//!   landed, whose outcome every door renders;
//! - `receiver`: the configuration the builder sets; `refusal`: the
//!   answers to what is refused, a store's failures mapped by kind; `fs`:
//!   the embedded store.
//!
//! Blocks a client sends with an `X-Block-CRC32C` (or an `Upload-Checksum`)
//! that their bytes do not match are refused and count for nothing; a
//! completed upload is read back and checked against its acknowledged
//! blocks before it lands; names are reduced to plain names inside the
//! directory, or refused.
//!
//! # Examples
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let receiver = fileuploader_server::Receiver::new("/srv/uploads")?.max_upload_size(1 << 30);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! receiver.serve(listener).await
//! # }
//! ```

#![warn(missing_docs)]

mod appends;
mod auth;
mod cors;
mod doors;
mod fs;
mod hooks;
mod http2;
mod interim;
mod limits;
mod linger;
pub mod receipts;
mod receiver;
mod refusal;
mod request;
mod route;
mod serve;
mod settled;
pub mod store;
mod uploads;

use std::time::Duration;

pub use crate::auth::{sign_url, Access, BlankSecret, NameRule};
pub use crate::cors::{BadCors, Cors};
pub use crate::hooks::{Hook, LEASE as EVENT_LEASE};
pub use crate::limits::Limits;
pub use crate::receiver::{partial_dir, Receiver};
pub use crate::refusal::Refusal;
pub use crate::request::{plain_name, upload_id};
pub use crate::store::{OnConflict, Quota};
pub use fileuploader_wire::{
    ContentRange, RangeSet, Statement, BLOCK_CRC32C_FIELD, DIGEST_MISMATCH, UPLOAD_ID_HEADER,
};

/// How long a partial upload may go untouched before it is discarded.
pub const DEFAULT_EXPIRE: Duration = Duration::from_secs(24 * 3600);
/// The default largest upload: 16 GiB.
pub const DEFAULT_MAX_UPLOAD_SIZE: u64 = 16 << 30;

/// The public types can be shared across threads; checked at compile time.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Receiver>();
    shareable::<Refusal>();
};
