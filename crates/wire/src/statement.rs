//! What a receiver that can answer says about an upload, as JSON.

use serde::{Deserialize, Serialize};

use crate::{format_crc32c, parse_crc32c};

/// A receiver's statement about one upload: the body of its answer to a
/// status query, and of its answer to a block. A client trusts these, not
/// its own bookkeeping, to decide what to send and whether a file landed.
///
/// On the wire each is one JSON object whose `state` says which it is:
///
/// ```json
/// {"state":"unknown","upload_id":"4f…"}
/// {"state":"partial","upload_id":"4f…","total":25,"received":[[0,10],[20,25]]}
/// {"state":"received","upload_id":"4f…","start":10,"end":20}
/// {"state":"landed","upload_id":"4f…","name":"scan.pdf","length":25,"crc32c":"1a2b3c4d"}
/// ```
///
/// Ranges are half-open byte ranges. `crc32c` is the CRC32C of the landed
/// file, when the receiver knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Statement {
    /// The receiver holds nothing of this upload (never began, discarded,
    /// or lost).
    Unknown {
        /// The upload.
        upload_id: String,
    },
    /// The receiver holds these ranges and has not landed the file.
    Partial {
        /// The upload.
        upload_id: String,
        /// The file's length.
        total: u64,
        /// The ranges held, sorted and disjoint.
        received: Vec<(u64, u64)>,
        /// Why a complete upload has not landed, when it failed to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// One block was stored; the upload is not complete yet.
    Received {
        /// The upload.
        upload_id: String,
        /// The block's first byte.
        start: u64,
        /// One past its last byte.
        end: u64,
    },
    /// The file landed whole under `name`.
    Landed {
        /// The upload (empty for a client that sent no identifier).
        #[serde(default)]
        upload_id: String,
        /// The name it landed under.
        name: String,
        /// Its length.
        length: u64,
        /// Its CRC32C, 8 hex digits, when the receiver knows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        crc32c: Option<String>,
    },
}

impl Statement {
    /// A landing statement.
    pub fn landed(upload_id: &str, name: &str, length: u64, crc32c: Option<u32>) -> Self {
        Statement::Landed {
            upload_id: upload_id.to_owned(),
            name: name.to_owned(),
            length,
            crc32c: crc32c.map(format_crc32c),
        }
    }

    /// The upload the statement is about.
    pub fn upload_id(&self) -> &str {
        match self {
            Statement::Unknown { upload_id }
            | Statement::Partial { upload_id, .. }
            | Statement::Received { upload_id, .. }
            | Statement::Landed { upload_id, .. } => upload_id,
        }
    }

    /// For a landing statement, its CRC32C, if it has a well-formed one.
    pub fn landed_crc32c(&self) -> Option<u32> {
        match self {
            Statement::Landed {
                crc32c: Some(c), ..
            } => parse_crc32c(c).ok(),
            _ => None,
        }
    }

    /// The statement as one line of JSON.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string(self).unwrap_or_default();
        json.push('\n');
        json
    }

    /// Reads a statement; `None` for a body that is not one (a receiver
    /// that cannot answer sends something else).
    pub fn from_json(body: &[u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_round_trip_and_others_are_not_statements() {
        let all = [
            Statement::Unknown {
                upload_id: "a".into(),
            },
            Statement::Partial {
                upload_id: "a".into(),
                total: 25,
                received: vec![(0, 10), (20, 25)],
                error: None,
            },
            Statement::Received {
                upload_id: "a".into(),
                start: 10,
                end: 20,
            },
            Statement::landed("a", "x.bin", 25, Some(7)),
        ];
        for s in all {
            assert_eq!(Statement::from_json(s.to_json().as_bytes()), Some(s));
        }
        assert_eq!(
            Statement::from_json(
                br#"{"state":"partial","upload_id":"a","total":3,"received":[[0,1]]}"#
            )
            .map(|s| s.upload_id().to_owned()),
            Some("a".into())
        );
        for other in [&b"ok\n"[..], b"<html>", b"{}", br#"{"state":"maybe"}"#, b""] {
            assert_eq!(Statement::from_json(other), None);
        }
        assert_eq!(
            Statement::landed("a", "x", 1, Some(0xdead_beef)).landed_crc32c(),
            Some(0xdead_beef)
        );
    }
}
