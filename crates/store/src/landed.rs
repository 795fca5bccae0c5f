//! A landing as a store records it, in a form of its own: not any
//! protocol's answer, which the receiver's doors make from it.

use fileuploader_wire::{format_crc32c, parse_crc32c};
use serde::{Deserialize, Serialize};

/// A file that landed: which upload, whose, under what name, its length
/// and digests. Only its owner hears of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Landed {
    /// The upload (empty for a whole file sent without an id).
    pub id: String,
    /// Who began the upload (empty for anyone, where the receiver is
    /// open).
    pub owner: String,
    /// The name it landed under.
    pub name: String,
    /// Its length in bytes.
    pub length: u64,
    /// Its CRC32C, when the store knows it.
    pub crc32c: Option<u32>,
    /// What the receiver's before-creation hook attached (a JSON object).
    pub metadata: Option<String>,
    /// The SHA-256 of the landed bytes, when the store digests landings
    /// ([`Store::keep_digests`](crate::Store::keep_digests)).
    pub sha256: Option<[u8; 32]>,
}

/// The record's form: version 2, one JSON object.
#[derive(Serialize, Deserialize)]
struct Record {
    v: u32,
    id: String,
    #[serde(default)]
    owner: String,
    name: String,
    length: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crc32c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

/// The form before version 2: the segmented protocol's landing statement,
/// alone or with its owner beside it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Before {
    Owned { owner: String, statement: Statement },
    Bare(Statement),
}

#[derive(Deserialize)]
struct Statement {
    state: String,
    #[serde(default)]
    upload_id: String,
    name: String,
    length: u64,
    #[serde(default)]
    crc32c: Option<String>,
}

impl Landed {
    /// A landing of upload `id` by `owner` as `name`.
    pub fn new(id: &str, owner: &str, name: &str, length: u64, crc32c: Option<u32>) -> Self {
        Landed {
            id: id.to_owned(),
            owner: owner.to_owned(),
            name: name.to_owned(),
            length,
            crc32c,
            metadata: None,
            sha256: None,
        }
    }

    /// The same landing with the SHA-256 of its bytes.
    #[must_use]
    pub fn with_sha256(mut self, sha256: Option<[u8; 32]>) -> Self {
        self.sha256 = sha256;
        self
    }

    /// The same landing with the before-creation hook's `metadata`.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Option<String>) -> Self {
        self.metadata = metadata;
        self
    }

    /// The record a store keeps: a JSON object that says its version.
    pub fn to_record(&self) -> String {
        let record = Record {
            v: 2,
            id: self.id.clone(),
            owner: self.owner.clone(),
            name: self.name.clone(),
            length: self.length,
            crc32c: self.crc32c.map(format_crc32c),
            metadata: self.metadata.clone(),
            sha256: self.sha256.map(hex::encode),
        };
        serde_json::to_string(&record).expect("a record serializes")
    }

    /// Reads a record [`to_record`](Self::to_record) wrote, or one of the
    /// form before it (the landing statement, alone or as
    /// `{"owner":…,"statement":…}`); `owner` is whose it is where the store
    /// keeps that apart from the record. `None` for anything else.
    pub fn from_record(text: &str, owner: Option<&str>) -> Option<Self> {
        let crc = |c: Option<String>| c.and_then(|c| parse_crc32c(&c).ok());
        if let Ok(record) = serde_json::from_str::<Record>(text) {
            return Some(Landed {
                owner: owner.map_or(record.owner, str::to_owned),
                id: record.id,
                name: record.name,
                length: record.length,
                crc32c: crc(record.crc32c),
                metadata: record.metadata,
                sha256: record.sha256.and_then(|h| {
                    let mut digest = [0; 32];
                    hex::decode_to_slice(h, &mut digest).ok().map(|()| digest)
                }),
            });
        }
        let (kept_owner, statement) = match serde_json::from_str::<Before>(text).ok()? {
            Before::Owned { owner, statement } => (owner, statement),
            Before::Bare(statement) => (String::new(), statement),
        };
        (statement.state == "landed").then(|| Landed {
            owner: owner.map_or(kept_owner, str::to_owned),
            id: statement.upload_id,
            name: statement.name,
            length: statement.length,
            crc32c: crc(statement.crc32c),
            metadata: None,
            sha256: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_in_this_form_and_the_one_before() {
        let landed = Landed::new("u1", "alice", "a b.pdf", 25, Some(0x1a2b3c4d));
        let text = landed.to_record();
        assert!(text.contains("\"v\":2"), "{text}");
        assert_eq!(Landed::from_record(&text, None).as_ref(), Some(&landed));
        let tagged = landed
            .clone()
            .with_metadata(Some(r#"{"claim":7}"#.into()))
            .with_sha256(Some([7; 32]));
        let read = Landed::from_record(&tagged.to_record(), None);
        assert_eq!(read.as_ref(), Some(&tagged));
        assert_eq!(
            Landed::from_record(&text, Some("bob")).unwrap().owner,
            "bob",
            "the store's owner column decides"
        );

        let bare = r#"{"state":"landed","upload_id":"u1","name":"a b.pdf","length":25,"crc32c":"1a2b3c4d"}"#;
        let read = Landed::from_record(bare, Some("alice")).unwrap();
        assert_eq!(read, landed);
        let owned = format!(r#"{{"owner":"alice","statement":{bare}}}"#);
        assert_eq!(Landed::from_record(&owned, None).unwrap(), landed);
        let whole = r#"{"state":"landed","name":"w","length":0}"#;
        assert_eq!(
            Landed::from_record(whole, None).unwrap(),
            Landed::new("", "", "w", 0, None)
        );

        for not in [
            r#"{"state":"partial","upload_id":"u","name":"x","length":1}"#,
            "{}",
            "not json",
        ] {
            assert_eq!(Landed::from_record(not, None), None, "{not}");
        }
    }
}
