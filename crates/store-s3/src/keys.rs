//! Where the store keeps what, below the bucket's prefix:
//!
//! - `NAME`: a landed file, one object, its metadata naming its upload;
//! - `.fileuploader-state/u/ID/meta-TOTAL`: upload `ID` as begun (JSON);
//! - `.fileuploader-state/u/ID/a/START.END.CRC.DATA.NONCE`: an
//!   acknowledged block; its name says which bytes, their CRC32C, and
//!   where they are (see [`Layout::source`]): in the data object
//!   `d/DATA/NONCE`, in this object itself when DATA is empty (a small
//!   block, stored and acknowledged by one `PUT`), or, when NONCE has dots
//!   in it, in upload DATA's acknowledgement `u/DATA/a/NONCE` (a part of a
//!   concatenation that was such a small block);
//! - `.fileuploader-state/u/ID/l/HEX`: a multipart upload begun for the
//!   landing, its id in hex; the object's key in the body;
//! - `.fileuploader-state/u/ID/direct-DECLARED`: direct upload `ID` as
//!   begun (JSON; see `direct.rs`);
//! - `.fileuploader-state/u/ID/error`: why the last landing failed;
//! - `.fileuploader-state/d/ID/NONCE`: bytes received for upload `ID`;
//! - `.fileuploader-state/landed/ID`: the landing statement (JSON);
//! - `.fileuploader-state/events/DUE.KEY`: a landing's event not yet
//!   delivered (JSON), and `.fileuploader-state/claims/KEY/UNTIL.NONCE`,
//!   a receiver's claim on delivering it (see `events.rs`).
//!
//! The receiver refuses names with a `.fileuploader-` part, so no landed
//! file can be among these.

/// Marks a landed object: which upload it is.
pub(crate) const UPLOAD_METADATA: &str = "fileuploader-upload";

/// An acknowledged block as its key says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) crc32c: Option<u32>,
    /// The upload whose data folder holds the bytes; empty when the
    /// acknowledgement's own object does.
    pub(crate) data: String,
    pub(crate) nonce: String,
}

impl Ack {
    /// The block it acknowledges.
    pub(crate) fn block(&self) -> fileuploader_store::Block {
        fileuploader_store::Block {
            start: self.start,
            end: self.end,
            crc32c: self.crc32c,
        }
    }

    /// This block's bytes, held in its own acknowledgement (`nonce` names
    /// it among others of its range).
    pub(crate) fn inline(start: u64, end: u64, crc32c: u32, nonce: String) -> Self {
        Ack {
            start,
            end,
            crc32c: Some(crc32c),
            data: String::new(),
            nonce,
        }
    }

    /// The same bytes as a block `at` bytes past their place in upload
    /// `from` (a part of a concatenation, moved into its final upload):
    /// they stay where they are, and the block names them there.
    pub(crate) fn moved(&self, from: &str, at: u64) -> Self {
        let (data, nonce) = if self.data.is_empty() {
            (from.to_owned(), Layout::ack_name(self))
        } else {
            (self.data.clone(), self.nonce.clone())
        };
        Ack {
            start: self.start + at,
            end: self.end + at,
            crc32c: self.crc32c,
            data,
            nonce,
        }
    }
}

/// The keys of one store, all below its prefix.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Empty, or ending in `/`.
    prefix: String,
}

impl Layout {
    pub(crate) fn new(prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        Layout {
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where a file named `name` lands.
    pub(crate) fn landed_file(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn state(&self) -> String {
        format!("{}.fileuploader-state/", self.prefix)
    }

    /// Every upload's records.
    pub(crate) fn uploads(&self) -> String {
        format!("{}u/", self.state())
    }

    /// Upload `id`'s records.
    pub(crate) fn upload(&self, id: &str) -> String {
        format!("{}{id}/", self.uploads())
    }

    pub(crate) fn meta(&self, id: &str, total: u64) -> String {
        format!("{}meta-{total}", self.upload(id))
    }

    pub(crate) fn acks(&self, id: &str) -> String {
        format!("{}a/", self.upload(id))
    }

    pub(crate) fn ack(&self, id: &str, ack: &Ack) -> String {
        format!("{}{}", self.acks(id), Layout::ack_name(ack))
    }

    /// An acknowledgement's key below [`Layout::acks`].
    fn ack_name(ack: &Ack) -> String {
        let crc = ack
            .crc32c
            .map_or_else(|| "x".to_owned(), |c| format!("{c:08x}"));
        format!(
            "{:020}.{:020}.{crc}.{}.{}",
            ack.start, ack.end, ack.data, ack.nonce
        )
    }

    /// The object holding the bytes upload `id`'s acknowledgement `ack`
    /// names.
    pub(crate) fn source(&self, id: &str, ack: &Ack) -> String {
        if ack.data.is_empty() {
            self.ack(id, ack)
        } else if ack.nonce.contains('.') {
            format!("{}{}", self.acks(&ack.data), ack.nonce)
        } else {
            self.data_object(&ack.data, &ack.nonce)
        }
    }

    /// Direct upload `id`'s record, `declared` bytes long (0 when it
    /// declared no length).
    pub(crate) fn direct(&self, id: &str, declared: u64) -> String {
        format!("{}direct-{declared}", self.upload(id))
    }

    /// A direct upload's declared length, if `rest` (below `u/ID/`) is
    /// its record.
    pub(crate) fn parse_direct(rest: &str) -> Option<u64> {
        rest.strip_prefix("direct-")?.parse().ok()
    }

    /// The record of multipart upload `upload_id`, begun to land `id`.
    pub(crate) fn landing(&self, id: &str, upload_id: &str) -> String {
        format!("{}l/{}", self.upload(id), hex(upload_id.as_bytes()))
    }

    /// The multipart upload a landing record (below `u/ID/`) names.
    pub(crate) fn parse_landing(rest: &str) -> Option<String> {
        let hex = rest.strip_prefix("l/")?;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        String::from_utf8(bytes).ok()
    }

    pub(crate) fn error(&self, id: &str) -> String {
        format!("{}error", self.upload(id))
    }

    /// Every upload's bytes.
    pub(crate) fn all_data(&self) -> String {
        format!("{}d/", self.state())
    }

    pub(crate) fn data(&self, id: &str) -> String {
        format!("{}{id}/", self.all_data())
    }

    pub(crate) fn data_object(&self, id: &str, nonce: &str) -> String {
        format!("{}{nonce}", self.data(id))
    }

    pub(crate) fn landed(&self, id: &str) -> String {
        format!("{}landed/{id}", self.state())
    }

    /// Every watch for a file clients place themselves.
    pub(crate) fn watches(&self) -> String {
        format!("{}w/", self.state())
    }

    /// The watch for a file at `key`.
    pub(crate) fn watch(&self, key: &str) -> String {
        format!("{}{}", self.watches(), hex(key.as_bytes()))
    }

    /// Every event of the outbox.
    pub(crate) fn events(&self) -> String {
        format!("{}events/", self.state())
    }

    /// Event `key`, due at `due` (ms since the Unix epoch): a landing
    /// the application is to hear of.
    pub(crate) fn event(&self, key: &str, due: u64) -> String {
        format!("{}{due:020}.{key}", self.events())
    }

    /// When an event's object is due, and its key.
    pub(crate) fn parse_event<'k>(&self, object: &'k str) -> Option<(u64, &'k str)> {
        let (due, key) = object.strip_prefix(&self.events())?.split_once('.')?;
        Some((due.parse().ok()?, key))
    }

    /// The claims on event `key`.
    pub(crate) fn claims(&self, key: &str) -> String {
        format!("{}claims/{key}/", self.state())
    }

    /// What a key below [`Layout::uploads`] says: its upload, and the rest.
    pub(crate) fn split_upload_key<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        key.strip_prefix(&self.uploads())?.split_once('/')
    }

    /// Upload `id`'s total, if `key` is its meta record.
    pub(crate) fn parse_meta(rest: &str) -> Option<u64> {
        rest.strip_prefix("meta-")?.parse().ok()
    }

    /// The block an acknowledgement key (below [`Layout::acks`]) names.
    pub(crate) fn parse_ack(name: &str) -> Option<Ack> {
        let mut parts = name.splitn(5, '.');
        let start = parts.next()?.parse().ok()?;
        let end = parts.next()?.parse().ok()?;
        let crc32c = match parts.next()? {
            "x" => None,
            hex => Some(u32::from_str_radix(hex, 16).ok()?),
        };
        let data = parts.next()?.to_owned();
        let nonce = parts.next()?.to_owned();
        (start <= end && !nonce.contains('/')).then_some(Ack {
            start,
            end,
            crc32c,
            data,
            nonce,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh name for a data object: random, so writers never meet.
pub(crate) fn nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgement_keys_sort_by_first_byte_and_round_trip() {
        let layout = Layout::new("/incoming/");
        let ack = Ack {
            start: 5,
            end: 1 << 40,
            crc32c: Some(0xdead_beef),
            data: "up-1_x".into(),
            nonce: "00ff".into(),
        };
        let key = layout.ack("up-1_x", &ack);
        assert_eq!(
            key,
            "incoming/.fileuploader-state/u/up-1_x/a/00000000000000000005.00000001099511627776.deadbeef.up-1_x.00ff"
        );
        let name = key.strip_prefix(&layout.acks("up-1_x")).unwrap();
        assert_eq!(Layout::parse_ack(name), Some(ack.clone()));
        let later = layout.ack(
            "up-1_x",
            &Ack {
                start: 10,
                crc32c: None,
                ..ack.clone()
            },
        );
        assert!(later > key);
        assert!(Layout::parse_ack("1.2.zz.d.n").is_none());
        assert_eq!(Layout::new("").landed_file("a/b.txt"), "a/b.txt");
        assert_eq!(
            layout.split_upload_key(&layout.meta("u1", 42)),
            Some(("u1", "meta-42"))
        );
        assert_eq!(Layout::parse_meta("meta-42"), Some(42));
        // A small block's bytes are its acknowledgement; moved into a
        // concatenation, they are still found there.
        let small = Ack::inline(0, 10, 7, "00aa".into());
        let own = layout.ack("part", &small);
        assert!(own.ends_with("/a/00000000000000000000.00000000000000000010.00000007..00aa"));
        assert_eq!(
            Layout::parse_ack(own.strip_prefix(&layout.acks("part")).unwrap()),
            Some(small.clone())
        );
        assert_eq!(layout.source("part", &small), own);
        let moved = small.moved("part", 100);
        assert_eq!((moved.start, moved.end, moved.crc32c), (100, 110, Some(7)));
        let name = layout.ack("final", &moved);
        let parsed = Layout::parse_ack(name.strip_prefix(&layout.acks("final")).unwrap());
        assert_eq!(parsed.as_ref(), Some(&moved));
        assert_eq!(layout.source("final", &moved), own);
        // A block in a data object stays in it, wherever it is moved.
        assert_eq!(
            layout.source("final", &ack.moved("up-1_x", 3)),
            layout.data_object("up-1_x", "00ff")
        );
        let landing = layout.landing("u1", "a.B~1/x");
        let (_, rest) = layout.split_upload_key(&landing).unwrap();
        assert_eq!(Layout::parse_landing(rest).as_deref(), Some("a.B~1/x"));
    }
}
