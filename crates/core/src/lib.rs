//! The transport-agnostic core of fileuploader: jobs, upload sessions,
//! scheduling, progress and resume, behind a [`Transport`] trait.
//!
//! It owns the client's side of every upload: the reference API
//! ([`UploadManager`], [`Job`]), the protocols' sessions ([`protocol`]),
//! when a block is sent, retried or asked about, and what the receiver's
//! answers are checked against. It does not open sockets (a [`Transport`]
//! does: `fileuploader-transport-hyper` by default), block a thread
//! (`fileuploader-blocking` does, for sequential code), nor know the
//! bytes of a header name (`fileuploader-wire` does).
//!
//! Each source of a job travels in an upload session of a [`protocol`]
//! (the segmented multipart convention by default): the receiver is asked
//! what it already holds before the first block, and a source counts as
//! uploaded when the receiver confirms it landed, not when the client has
//! sent everything. [`Progress`] says which landings were confirmed.
//!
//! A job's sources are cut into blocks of `block_size` bytes; each block is
//! one `multipart/form-data` `POST` (with `Content-Range` when a source has
//! more than one block), and up to `thread_num` blocks are in flight at once.
//! Blocks are read from their source as they are sent, a block larger than
//! [`READ_PIECE`] piece by piece, so a running job holds at most about
//! `thread_num × block_size` bytes, whatever the file size, and far less with
//! large blocks.
//!
//! # The reference API in Rust
//!
//! | reference (FileUploader API) | here |
//! | --- | --- |
//! | `Dynamsoft.FileUploader.Init(URL, ok, err)` | [`UploadManager::new`] with a transport (the blocking crate has `init` with both callbacks) |
//! | `UploadManager.CreateJob()` | [`UploadManager::create_job`] |
//! | `UploadManager.Run(job)` | [`UploadManager::run`] → [`JobHandle`]; [`JobHandle::wait`] awaits the outcome |
//! | `UploadManager.Cancel(job)` | [`UploadManager::cancel`] |
//! | `UploadManager.CancelAllUpload()` | [`UploadManager::cancel_all_upload`] |
//! | `GenerateURLForUploadData()` | [`UploadManager::generate_url_for_upload_data`] (`mem://` URLs) |
//! | `Job.BlockSize` | [`Job::block_size`] (default 8 MiB; the reference's 10240 is [`REFERENCE_BLOCK_SIZE`]) |
//! | `Job.FileName` | [`Job::file_name`] |
//! | `Job.FormField.Add(key, value)` | [`Job::form_field`]`.`[`add`](FormField::add) |
//! | `Job.HttpHeader[name] = value` | [`Job::http_header`]`.`[`insert`](HttpHeader::insert) |
//! | `Job.HttpVersion` (read-only) | [`Job::http_version`] |
//! | `Job.ServerUrl` | [`Job::server_url`] |
//! | `Job.SourceValue.Add(source, name, key?)` | [`Job::source_value`]`.`[`add`](SourceValue::add) |
//! | `Job.ThreadNum` | [`Job::thread_num`] (default 1, at most [`MAX_THREAD_NUM`]; with [`Job::auto_threads`] the ceiling of a limit the job finds itself) |
//! | `Job.Version` (read-only) | [`Job::version`] |
//! | `Job.OnUploadTransferPercentage` | [`Job::on_upload_transfer_percentage`]; [`Job::progress`] for bytes and rate |
//! | `Job.OnRunSuccess` | [`Job::on_run_success`] |
//! | `Job.OnRunFailure` | [`Job::on_run_failure`] with a code of [`code`] |
//!
//! # Where things are
//!
//! The manager (`manager.rs`) validates a job (`validate.rs`) and hands it
//! to the scheduler (`scheduler.rs`: workers, per-source cursors, begin and
//! finish), which sends each block in an attempt (`attempt.rs`: one
//! request, its verdict, its retries). Resume journals (`journal.rs`,
//! `resume.rs`) only cache session state. Test doubles are in `testing`,
//! behind the `testing` feature.
//!
//! # Examples
//!
//! A file uploaded to the reference receiver (`fileuploader serve`, here
//! run in the same process on 127.0.0.1) in blocks of 1 MiB, 4 at a time,
//! over the default transport:
//!
//! ```
//! use fileuploader_core::UploadManager;
//! use fileuploader_transport_hyper::HyperTransport;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let landing = tempfile::tempdir()?;
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let url = format!("http://{}/upload", listener.local_addr()?);
//! # tokio::spawn(fileuploader_server::Receiver::new(landing.path())?.serve(listener));
//! # let source = tempfile::NamedTempFile::new()?;
//! # std::fs::write(source.path(), vec![7u8; 3 << 20])?;
//! # let path = source.path();
//! let manager = UploadManager::new(HyperTransport::new()?);
//! let mut job = manager.create_job();
//! job.server_url = url; // the receiver's upload URL
//! job.block_size = 1 << 20;
//! job.thread_num = 4;
//! job.source_value.add(path, "scan.bin", None);
//! job.on_upload_transfer_percentage(|_job, percent| println!("{percent}%"));
//! manager.run(&job)?.wait().await?;
//! assert_eq!(job.progress().landings_confirmed, 1, "the receiver said it landed");
//! # assert_eq!(std::fs::read(landing.path().join("scan.bin"))?.len(), 3 << 20);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod answer;
mod body;
mod error;
mod events;
mod form;
mod job;
mod journal;
mod manager;
mod plan;
mod progress;
pub mod protocol;
mod rate;
mod resume;
mod retry;
mod run;
mod source;
#[cfg(feature = "testing")]
pub mod testing;
mod throttle;
mod transport;
mod validate;

pub use answer::{FinalAnswer, DEFAULT_ANSWER_LIMIT};
pub use body::{BlockData, UploadBody};
/// The shared byte buffer type of block data and registered memory.
pub use bytes::Bytes;
pub use error::{code, Error, ErrorKind};
pub use events::EventDispatcher;
pub use fileuploader_wire::{BLOCK_CRC32C_FIELD, UPLOAD_ID_HEADER};
pub use job::{
    FormField, HttpHeader, Job, JobId, Progress, SourceEntry, SourceLanding, SourceRef,
    SourceValue, DEFAULT_BLOCK_SIZE, DEFAULT_KEY, MAX_BLOCK_SIZE, MAX_THREAD_NUM,
    REFERENCE_BLOCK_SIZE,
};
pub use journal::{default_journal_dir, Resume};
pub use manager::{JobHandle, UploadManager, UploadManagerBuilder};
pub use plan::{Block, BlockPlan};
pub use protocol::{Integrity, SegmentedMultipart};
pub use retry::RetryPolicy;
pub use source::READ_PIECE;
pub use source::{FileSource, MemorySource, Source, SourceIdentity, MEMORY_URL_PREFIX};
pub use transport::{
    InterimAnswers, Request, Response, Transport, TransportError, TransportErrorKind,
};

/// The public types can be shared across threads (and a body, which one
/// task drives, sent to another); checked at compile time.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    const fn sendable<T: Send>() {}
    shareable::<UploadManager>();
    shareable::<Job>();
    shareable::<JobHandle>();
    shareable::<Error>();
    shareable::<Progress>();
    shareable::<RetryPolicy>();
    shareable::<Resume>();
    shareable::<Integrity>();
    shareable::<TransportError>();
    sendable::<UploadBody>();
    shareable::<Box<dyn protocol::UploadSession>>();
};
