//! Reading what a block request says about itself: its upload identifier
//! and its file name, each checked before anything is written (its range
//! and digest are parsed by `fileuploader-wire`).

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::refusal::Refusal;

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
    let id = fileuploader_wire::check_upload_id(value.to_str().unwrap_or(""))
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Some(id.to_owned()))
}

/// Reduces a client's file name to a name inside the receiver's directory.
/// A clean relative path (`photos/2024/a.jpg`: `/`-separated, no empty,
/// `.` or `..` part, not absolute) is kept, so a folder lands with its
/// structure; anything else is reduced to its last part (after the last `/`
/// or `\\`). Refuses (400) a part that is empty, `.` or `..`, holds NUL or
/// other control characters, is longer than 255 bytes, or starts with
/// `.fileuploader-` (the receiver's own folders); and more than 32 parts.
///
/// # Errors
///
/// 400 with the reason.
pub fn plain_name(name: &str) -> Result<String, Refusal> {
    /// The longest name, folders included: well within `PATH_MAX` below
    /// the receiver's directory.
    const MAX_NAME: usize = 1024;
    /// The longest folder or file name: 255 on common file systems, less
    /// the room of a rename's " (NNNN)".
    const MAX_PART: usize = 240;
    let refuse = |why: &str| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("file name {name:?} refused: {why}"),
        )
    };
    let parts: Vec<&str> = name.split('/').collect();
    let clean = !name.contains('\\')
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != "..");
    let parts = if clean {
        parts
    } else {
        vec![name.rsplit(['/', '\\']).next().unwrap_or("")]
    };
    if parts.len() > 32 {
        return Err(refuse("more than 32 folders deep"));
    }
    if name.len() > MAX_NAME {
        return Err(refuse(&format!("longer than {MAX_NAME} bytes")));
    }
    for part in &parts {
        if part.is_empty() || *part == "." || *part == ".." {
            return Err(refuse("no plain file name in it"));
        }
        if part.chars().any(char::is_control) {
            return Err(refuse("control characters"));
        }
        if part.len() > MAX_PART {
            return Err(refuse(&format!(
                "a part longer than {MAX_PART} bytes (file systems take 255, and a renamed copy adds a number)"
            )));
        }
        if part.starts_with(".fileuploader-") {
            return Err(refuse("the receiver's own folders cannot be written"));
        }
    }
    Ok(parts.join("/"))
}

/// A request body the receiver reads: hyper's, or any like it.
pub(crate) trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_reduced_or_refused() {
        assert_eq!(plain_name("scan.pdf").unwrap(), "scan.pdf");
        assert_eq!(plain_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(plain_name("C:\\Users\\a\\doc.txt").unwrap(), "doc.txt");
        assert_eq!(plain_name("/abs/path.bin").unwrap(), "path.bin");
        assert_eq!(
            plain_name("photos/2024/a.jpg").unwrap(),
            "photos/2024/a.jpg"
        );
        assert_eq!(
            plain_name("a/./b.txt").unwrap(),
            "b.txt",
            "not clean: reduced"
        );
        assert_eq!(plain_name("a//b.txt").unwrap(), "b.txt");
        let deep = vec!["d"; 40].join("/") + "/f";
        for bad in [
            "",
            "..",
            "a/..",
            "dir/",
            ".",
            "a\0b",
            "x\ny",
            ".fileuploader-partial/id-x.part",
            "sub/.fileuploader-state",
            &deep,
        ] {
            assert!(plain_name(bad).is_err(), "{bad:?}");
        }
    }
}
