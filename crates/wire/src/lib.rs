//! The bytes and the rules both ends follow, defined once for the client
//! (`fileuploader-core`), the receiver (`fileuploader-server`), the stores
//! and the mock server, so they can never disagree: the segmented
//! convention's header and field names, `Content-Range`, sets of byte
//! ranges, the receiver's JSON statements and how names are escaped in
//! multipart headers; in [`resumable`], tus's and the IETF draft's headers
//! and the rules that differ by [`resumable::Version`] (completion
//! header and flag, append media type) and one incremental digest per
//! checksum algorithm; CRC32C arithmetic; and [`sync::lock`], the one way
//! the workspace takes a mutex. `docs/PROTOCOL.md` describes the same
//! bytes in prose.
//!
//! It owns no I/O and no HTTP client or server: it parses and formats.
//!
//! # Examples
//!
//! ```
//! use fileuploader_wire::{ContentRange, Statement};
//!
//! let range = ContentRange::parse("bytes 0-9/25").unwrap();
//! assert_eq!((range.start, range.end, range.total), (0, 10, 25));
//! assert_eq!(range.to_string(), "bytes 0-9/25");
//!
//! let landed = Statement::landed("abc", "scan.pdf", 25, Some(0x1234_abcd));
//! let json = landed.to_json();
//! assert_eq!(Statement::from_json(json.as_bytes()), Some(landed));
//! ```

#![warn(missing_docs)]

mod crc;
pub mod draft;
mod escape;
mod ranges;
pub mod receipt;
pub mod resumable;
mod statement;
pub mod sync;

use std::fmt;

pub use crc::{crc32c_join, CrcShift};
pub use escape::{put_escaped, unescape_name};
pub use ranges::RangeSet;
pub use statement::Statement;

/// The request header carrying a source's upload identifier: a receiver uses
/// it to tell apart concurrent uploads of files with the same name.
pub const UPLOAD_ID_HEADER: &str = "x-upload-id";
/// The query parameter of a status query (`GET url?upload_id=ID`) and of a
/// discard (`DELETE url?upload_id=ID`).
pub const UPLOAD_ID_QUERY: &str = "upload_id";
/// The form field carrying the CRC32C of the block's bytes, as 8 lowercase
/// hex digits. It follows the file part, so the CRC is computed as the bytes
/// are sent and a block is read from its source only once.
pub const BLOCK_CRC32C_FIELD: &str = "X-Block-CRC32C";
/// The status a receiver answers for a block whose bytes do not match its
/// `X-Block-CRC32C`: nothing of it counts, and the client sends it again.
pub const DIGEST_MISMATCH: u16 = 460;
/// The media type of a receiver's statements.
pub const STATEMENT_MEDIA_TYPE: &str = "application/json";
/// The response header that carries a receiver's statement (its JSON,
/// escaped as [`resumable::encode_text`] does) when the body is the
/// application's word instead; a client reads it before the body.
pub const STATEMENT_HEADER: &str = "upload-statement";

/// Bytes on the wire that do not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(String);

/// `Content-Range: bytes first-last/total`, held as a half-open range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The whole file's length.
    pub total: u64,
}

impl ContentRange {
    /// Parses the header value.
    ///
    /// # Errors
    ///
    /// When it is not `bytes first-last/total` with decimal digits only and
    /// `first <= last < total`.
    pub fn parse(value: &str) -> Result<Self, WireError> {
        let bad = || WireError(format!("malformed Content-Range {value:?}"));
        let spec = value.trim().strip_prefix("bytes ").ok_or_else(bad)?;
        let (range, total) = spec.split_once('/').ok_or_else(bad)?;
        let (first, last) = range.split_once('-').ok_or_else(bad)?;
        let num = |s: &str| -> Result<u64, WireError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse().map_err(|_| bad())
        };
        let (first, last, total) = (num(first)?, num(last)?, num(total)?);
        if first > last || last >= total {
            return Err(bad());
        }
        Ok(ContentRange {
            start: first,
            end: last + 1,
            total,
        })
    }

    /// The number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range is empty (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

impl fmt::Display for ContentRange {
    /// The header value, `bytes first-last/total` (last inclusive).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bytes {}-{}/{}",
            self.start,
            self.end.saturating_sub(1),
            self.total
        )
    }
}

/// The value of an `X-Block-CRC32C` field: exactly 8 hex digits.
///
/// # Errors
///
/// For anything else.
pub fn parse_crc32c(text: &str) -> Result<u32, WireError> {
    let malformed = || WireError(format!("malformed CRC32C {text:?}"));
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    u32::from_str_radix(text, 16).map_err(|_| malformed())
}

/// A CRC32C as it travels: 8 lowercase hex digits.
pub fn format_crc32c(crc: u32) -> String {
    format!("{crc:08x}")
}

/// The upload identifier in a header value or query, if well formed: 1 to
/// 64 ASCII letters, digits, `-` or `_`.
///
/// # Errors
///
/// For anything else.
pub fn check_upload_id(id: &str) -> Result<&str, WireError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(id)
    } else {
        Err(WireError("malformed upload identifier".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_strict_and_round_trips() {
        let r = ContentRange::parse("bytes 0-9/25").unwrap();
        assert_eq!(
            r,
            ContentRange {
                start: 0,
                end: 10,
                total: 25
            }
        );
        assert_eq!(r.to_string(), "bytes 0-9/25");
        for bad in [
            "bytes 9-0/25",
            "bytes 0-25/25",
            "0-9/25",
            "bytes 0-9",
            "bytes -1-9/25",
            "bytes 0-9/*",
            "bytes +1-9/25",
            "bytes 0-99999999999999999999/1",
        ] {
            assert!(ContentRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn crc_and_upload_id_forms() {
        assert_eq!(parse_crc32c("0000abCD"), Ok(0xabcd));
        assert_eq!(format_crc32c(0xabcd), "0000abcd");
        for bad in ["abc", "0000abcg", "+000abcd", "0000abcd0"] {
            assert!(parse_crc32c(bad).is_err(), "{bad}");
        }
        assert_eq!(check_upload_id("a-Z_9"), Ok("a-Z_9"));
        for bad in ["", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_upload_id(bad).is_err(), "{bad:?}");
        }
    }
}
