//! The IETF resumable-upload draft's own fields, beyond what it shares
//! with tus ([`crate::resumable`]): `Upload-Limit`, its problem types
//! (RFC 9457 `application/problem+json`), the file name in
//! `Content-Disposition` (RFC 6266), and the digest fields of RFC 9530
//! (`Content-Digest`, `Repr-Digest`, `Want-Repr-Digest`). Which interop
//! version speaks which of them is [`Version`](crate::resumable::Version)'s
//! to say.

use base64::Engine as _;
use sfv::{BareItem, Dictionary, ListEntry, Parser};

use crate::resumable::{decode_text, ChecksumAlgorithm};
use crate::WireError;

/// The limits a server announces for an upload.
pub const UPLOAD_LIMIT: &str = "upload-limit";
/// A digest of one request's content (RFC 9530).
pub const CONTENT_DIGEST: &str = "content-digest";
/// A digest of the whole representation (RFC 9530).
pub const REPR_DIGEST: &str = "repr-digest";
/// The digests of the whole representation a client asks for (RFC 9530).
pub const WANT_REPR_DIGEST: &str = "want-repr-digest";
/// The media type of a problem's details (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The limits of `Upload-Limit`, each as the draft defines it; `None`
/// where the server sets none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadLimit {
    /// The largest representation, in bytes.
    pub max_size: Option<u64>,
    /// The smallest representation that may be resumable, in bytes.
    pub min_size: Option<u64>,
    /// The most content one creation or append may carry.
    pub max_append_size: Option<u64>,
    /// The least content one creation or append may carry (but the one
    /// that completes the upload).
    pub min_append_size: Option<u64>,
    /// The seconds the upload resource has left.
    pub max_age: Option<u64>,
}

impl UploadLimit {
    /// The header value, the lifetime under `age_key` (`max-age`, or
    /// `expires` before interop version 7); `None` when no limit is set.
    pub fn format(&self, age_key: &str) -> Option<String> {
        let members: Vec<String> = [
            ("max-size", self.max_size),
            ("min-size", self.min_size),
            ("max-append-size", self.max_append_size),
            ("min-append-size", self.min_append_size),
            (age_key, self.max_age),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| format!("{key}={v}")))
        .collect();
        (!members.is_empty()).then(|| members.join(", "))
    }

    /// The limits a header value sets, as the draft reads it: unknown
    /// keys are ignored; a value that is not a structured dictionary, or
    /// a known key whose value is not a non-negative integer, makes the
    /// whole field ignored (`None`). `expires`, the lifetime's name before
    /// interop version 7, is read too.
    pub fn parse(value: &str) -> Option<Self> {
        let dictionary: Dictionary = Parser::new(value).parse().ok()?;
        let mut limits = UploadLimit::default();
        for (key, entry) in &dictionary {
            let slot = match key.as_str() {
                "max-size" => &mut limits.max_size,
                "min-size" => &mut limits.min_size,
                "max-append-size" => &mut limits.max_append_size,
                "min-append-size" => &mut limits.min_append_size,
                "max-age" | "expires" => &mut limits.max_age,
                _ => continue,
            };
            let ListEntry::Item(item) = entry else {
                return None;
            };
            let BareItem::Integer(n) = item.bare_item else {
                return None;
            };
            *slot = Some(u64::try_from(i64::from(n)).ok()?);
        }
        Some(limits)
    }
}

/// The draft's problem types (its section "Problem Types").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// An append's `Upload-Offset` is not the upload's offset (409).
    MismatchingOffset {
        /// The upload's offset.
        expected: u64,
        /// The one the request gave.
        provided: u64,
    },
    /// The upload is complete: nothing more may be appended (400).
    CompletedUpload,
    /// The lengths a request or the upload gave disagree (400).
    InconsistentLength,
}

impl Problem {
    /// The problem type's URI.
    pub fn type_uri(&self) -> &'static str {
        match self {
            Problem::MismatchingOffset { .. } => {
                "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
            }
            Problem::CompletedUpload => {
                "https://iana.org/assignments/http-problem-types#completed-upload"
            }
            Problem::InconsistentLength => {
                "https://iana.org/assignments/http-problem-types#inconsistent-upload-length"
            }
        }
    }

    /// The `application/problem+json` body, with `detail` for people.
    pub fn to_json(&self, detail: &str) -> String {
        let title = match self {
            Problem::MismatchingOffset { .. } => {
                "offset from request does not match offset of resource"
            }
            Problem::CompletedUpload => "upload is already completed",
            Problem::InconsistentLength => "inconsistent length values for upload",
        };
        let mut body = serde_json::json!({
            "type": self.type_uri(),
            "title": title,
            "detail": detail,
        });
        if let Problem::MismatchingOffset { expected, provided } = self {
            body["expected-offset"] = (*expected).into();
            body["provided-offset"] = (*provided).into();
        }
        body.to_string()
    }

    /// The problem an `application/problem+json` body names, if one of
    /// the draft's.
    pub fn from_json(body: &[u8]) -> Option<Self> {
        let body: serde_json::Value = serde_json::from_slice(body).ok()?;
        let kind = body["type"].as_str()?;
        let offset = |key: &str| body[key].as_u64();
        [
            Problem::MismatchingOffset {
                expected: offset("expected-offset").unwrap_or_default(),
                provided: offset("provided-offset").unwrap_or_default(),
            },
            Problem::CompletedUpload,
            Problem::InconsistentLength,
        ]
        .into_iter()
        .find(|p| p.type_uri() == kind)
    }
}

/// `Content-Disposition` naming a file, as the draft recommends it:
/// `inline`, the name as a quoted ASCII `filename` (anything else a `_`)
/// and, exactly, as `filename*` in UTF-8 (RFC 8187).
pub fn disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let mut exact = String::new();
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            exact.push(b as char);
        } else {
            exact.push_str(&format!("%{b:02X}"));
        }
    }
    format!("inline; filename=\"{ascii}\"; filename*=UTF-8''{exact}")
}

/// The file name a `Content-Disposition` value gives: `filename*` (UTF-8)
/// before `filename`; `None` without either.
pub fn disposition_name(value: &str) -> Option<String> {
    let mut plain = None;
    let mut exact = None;
    for param in split_params(value).into_iter().skip(1) {
        let Some((key, raw)) = param.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let raw = raw.trim();
                if let Some(encoded) = raw
                    .strip_prefix("UTF-8''")
                    .or_else(|| raw.strip_prefix("utf-8''"))
                {
                    exact = Some(decode_text(encoded));
                }
            }
            "filename" => plain = Some(unquote(raw.trim())),
            _ => {}
        }
    }
    exact.or(plain).filter(|n| !n.is_empty())
}

/// `value` split at the semicolons outside quoted strings.
fn split_params(value: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// A quoted string's text (its escapes undone), or a token as it is.
fn unquote(raw: &str) -> String {
    let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return raw.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    out
}

/// The name RFC 9530 gives `algorithm`, where it has one.
pub fn digest_name(algorithm: ChecksumAlgorithm) -> Option<&'static str> {
    match algorithm {
        ChecksumAlgorithm::Sha256 => Some("sha-256"),
        // Listed as deprecated by the IANA registry, and spoken here all
        // the same: it is the digest every block already has.
        ChecksumAlgorithm::Crc32c => Some("crc32c"),
        ChecksumAlgorithm::Sha1 => None,
    }
}

fn digest_algorithm(name: &str) -> Option<ChecksumAlgorithm> {
    [ChecksumAlgorithm::Sha256, ChecksumAlgorithm::Crc32c]
        .into_iter()
        .find(|&a| digest_name(a) == Some(name))
}

/// The digests of a `Content-Digest` or `Repr-Digest` value whose
/// algorithm is spoken here (others are skipped).
///
/// # Errors
///
/// A value that is not a dictionary of byte sequences.
pub fn parse_digests(value: &str) -> Result<Vec<(ChecksumAlgorithm, Vec<u8>)>, WireError> {
    let dictionary: Dictionary = Parser::new(value)
        .parse()
        .map_err(|e| WireError(format!("malformed digest field {value:?}: {e}")))?;
    let mut digests = Vec::new();
    for (key, entry) in &dictionary {
        let ListEntry::Item(item) = entry else {
            return Err(WireError(format!("digest {key} is not a byte sequence")));
        };
        let BareItem::ByteSequence(bytes) = &item.bare_item else {
            return Err(WireError(format!("digest {key} is not a byte sequence")));
        };
        if let Some(algorithm) = digest_algorithm(key.as_str()) {
            digests.push((algorithm, bytes.clone()));
        }
    }
    Ok(digests)
}

/// A `Repr-Digest` (or `Content-Digest`) value of `digests`.
pub fn format_digests(digests: &[(ChecksumAlgorithm, Vec<u8>)]) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    digests
        .iter()
        .filter_map(|(a, bytes)| Some(format!("{}=:{}:", digest_name(*a)?, engine.encode(bytes))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The algorithms a `Want-Repr-Digest` value asks for (a positive
/// preference), spoken here, most wanted first; none for a malformed
/// value.
pub fn wanted_digests(value: &str) -> Vec<ChecksumAlgorithm> {
    let Ok(dictionary) = Parser::new(value).parse::<Dictionary>() else {
        return Vec::new();
    };
    let mut wanted: Vec<(i64, ChecksumAlgorithm)> = dictionary
        .iter()
        .filter_map(|(key, entry)| {
            let ListEntry::Item(item) = entry else {
                return None;
            };
            let BareItem::Integer(weight) = item.bare_item else {
                return None;
            };
            let weight = i64::from(weight);
            (weight > 0).then_some((weight, digest_algorithm(key.as_str())?))
        })
        .collect();
    wanted.sort_by_key(|(weight, _)| std::cmp::Reverse(*weight));
    wanted.into_iter().map(|(_, a)| a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_as_the_draft_says_and_write_back() {
        let limits = UploadLimit::parse("max-size=1234567890, max-age=3600, x-other=?1").unwrap();
        assert_eq!(limits.max_size, Some(1_234_567_890));
        assert_eq!(limits.max_age, Some(3600));
        assert_eq!(
            limits.format("max-age").as_deref(),
            Some("max-size=1234567890, max-age=3600")
        );
        assert_eq!(
            UploadLimit::parse("expires=60").unwrap().max_age,
            Some(60),
            "interop 6's name"
        );
        // A known key of another type, or a negative size: all ignored.
        assert_eq!(UploadLimit::parse("max-size=\"big\", max-age=1"), None);
        assert_eq!(UploadLimit::parse("max-append-size=-1"), None);
        assert_eq!(UploadLimit::parse("max-size=1,"), None, "not a dictionary");
        assert_eq!(UploadLimit::default().format("max-age"), None);
    }

    #[test]
    fn problems_name_their_type_and_offsets() {
        let problem = Problem::MismatchingOffset {
            expected: 12_500_000,
            provided: 25_000_000,
        };
        let json = problem.to_json("the upload holds 12500000 bytes");
        assert!(json.contains("#mismatching-upload-offset"), "{json}");
        assert_eq!(Problem::from_json(json.as_bytes()), Some(problem));
        let done = Problem::CompletedUpload.to_json("");
        assert_eq!(
            Problem::from_json(done.as_bytes()),
            Some(Problem::CompletedUpload)
        );
        assert_eq!(Problem::from_json(br#"{"type":"about:blank"}"#), None);
    }

    #[test]
    fn a_name_travels_in_content_disposition_both_ways() {
        for name in ["file name.jpg", "rapport été \"final\".pdf", "a;b.txt"] {
            assert_eq!(disposition_name(&disposition(name)).as_deref(), Some(name));
        }
        assert_eq!(
            disposition_name("attachment; filename=\"a \\\"b\\\".txt\"").as_deref(),
            Some("a \"b\".txt")
        );
        assert_eq!(
            disposition_name("inline; filename=plain.bin").as_deref(),
            Some("plain.bin")
        );
        assert_eq!(disposition_name("inline"), None);
    }

    #[test]
    fn digests_of_the_algorithms_spoken_here() {
        let digests = parse_digests("sha-256=:AAAA:, md5=:AAAA:, crc32c=:AAAAAA==:").unwrap();
        assert_eq!(
            digests.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            [ChecksumAlgorithm::Sha256, ChecksumAlgorithm::Crc32c]
        );
        assert_eq!(
            format_digests(&digests),
            "sha-256=:AAAA:, crc32c=:AAAAAA==:"
        );
        assert!(parse_digests("sha-256=abc").is_err());
        assert_eq!(
            wanted_digests("sha-256=3, crc32c=10, md5=9, sha-512=0"),
            [ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Sha256]
        );
    }
}
