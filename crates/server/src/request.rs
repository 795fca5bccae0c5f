//! Reading what a block request says about itself: its range, its upload
//! identifier and its file name, each checked before anything is written.

use http::{HeaderMap, StatusCode};

use crate::Refusal;

/// `Content-Range: bytes first-last/total`, as a half-open range.
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
    /// 400 when it is not `bytes first-last/total` with
    /// `first <= last < total`.
    pub fn parse(value: &str) -> Result<Self, Refusal> {
        let bad = || {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("malformed Content-Range {value:?}"),
            )
        };
        let spec = value.trim().strip_prefix("bytes ").ok_or_else(bad)?;
        let (range, total) = spec.split_once('/').ok_or_else(bad)?;
        let (first, last) = range.split_once('-').ok_or_else(bad)?;
        let num = |s: &str| -> Result<u64, Refusal> {
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

/// The upload identifier header, if present and well formed: 1 to 64 ASCII
/// letters, digits, `-` or `_`.
///
/// # Errors
///
/// 400 for a present but malformed identifier.
pub fn upload_id(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some(value) = headers.get(crate::UPLOAD_ID_HEADER) else {
        return Ok(None);
    };
    let id = value.to_str().unwrap_or("");
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "malformed upload identifier",
        ));
    }
    Ok(Some(id.to_owned()))
}

/// The value of an `X-Block-CRC32C` field: exactly 8 hex digits.
///
/// # Errors
///
/// 400 for anything else.
pub fn parse_crc32c(text: &str) -> Result<u32, Refusal> {
    let malformed = || Refusal::new(StatusCode::BAD_REQUEST, "malformed X-Block-CRC32C");
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    u32::from_str_radix(text, 16).map_err(|_| malformed())
}

/// Reduces a client's file name to a plain name: the part after the last
/// `/` or `\`. Refuses (400) what is left if it is empty, `.`, `..`, starts
/// with a dot-dot, or holds NUL or other control characters.
///
/// # Errors
///
/// 400 with the reason.
pub fn plain_name(name: &str) -> Result<String, Refusal> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let refuse = |why: &str| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("file name {name:?} refused: {why}"),
        )
    };
    if base.is_empty() || base == "." || base == ".." {
        return Err(refuse("no plain file name in it"));
    }
    if base.chars().any(char::is_control) {
        return Err(refuse("control characters"));
    }
    if base.len() > 255 {
        return Err(refuse("longer than 255 bytes"));
    }
    Ok(base.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_strict() {
        assert_eq!(
            ContentRange::parse("bytes 0-9/25").unwrap(),
            ContentRange {
                start: 0,
                end: 10,
                total: 25
            }
        );
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
    fn names_are_reduced_or_refused() {
        assert_eq!(plain_name("scan.pdf").unwrap(), "scan.pdf");
        assert_eq!(plain_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(plain_name("C:\\Users\\a\\doc.txt").unwrap(), "doc.txt");
        assert_eq!(plain_name("/abs/path.bin").unwrap(), "path.bin");
        for bad in ["", "..", "a/..", "dir/", ".", "a\0b", "x\ny"] {
            assert!(plain_name(bad).is_err(), "{bad:?}");
        }
    }
}
