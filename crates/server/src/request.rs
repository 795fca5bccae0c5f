//! Reading what a block request says about itself: its upload identifier
//! and its file name, each checked before anything is written (its range
//! and digest are parsed by `fileuploader-wire`).

use http::{HeaderMap, StatusCode};

use crate::Refusal;

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
