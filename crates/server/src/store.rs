//! Where the receiver keeps uploads: the [`Store`] interface (from
//! `fileuploader-store`, re-exported here) and its embedded default,
//! [`FsStore`] (a directory on disk, in the `fs` module).

pub use fileuploader_store::*;

pub use crate::fs::FsStore;
