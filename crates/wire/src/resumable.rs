//! The bytes of tus 1.0 and of the IETF resumable-upload draft, which share
//! most of them: header names, `Upload-Metadata`, `Upload-Checksum`,
//! `Upload-Concat`, offsets and structured booleans.

use std::fmt;

use base64::Engine as _;

use crate::WireError;

/// The tus version header, sent on every tus request and response but
/// `OPTIONS` requests.
pub const TUS_RESUMABLE: &str = "tus-resumable";
/// The one tus version spoken.
pub const TUS_V1: &str = "1.0.0";
/// The versions a tus server speaks (in its `OPTIONS` answer).
pub const TUS_VERSION: &str = "tus-version";
/// The extensions a tus server supports, comma-separated.
pub const TUS_EXTENSION: &str = "tus-extension";
/// The largest upload a tus server takes.
pub const TUS_MAX_SIZE: &str = "tus-max-size";
/// The checksum algorithms a tus server takes, comma-separated.
pub const TUS_CHECKSUM_ALGORITHM: &str = "tus-checksum-algorithm";
/// How many bytes of an upload the server holds, or where an append starts.
pub const UPLOAD_OFFSET: &str = "upload-offset";
/// The length of the whole upload.
pub const UPLOAD_LENGTH: &str = "upload-length";
/// tus metadata: `key base64(value)` pairs, comma-separated.
pub const UPLOAD_METADATA: &str = "upload-metadata";
/// A digest of one request's body: `algorithm base64(digest)`.
pub const UPLOAD_CHECKSUM: &str = "upload-checksum";
/// `partial`, or `final;URL URL …` (the concatenation extension).
pub const UPLOAD_CONCAT: &str = "upload-concat";
/// When an unfinished upload expires (an HTTP date).
pub const UPLOAD_EXPIRES: &str = "upload-expires";
/// A tus upload whose length comes later (not supported here: refused).
pub const UPLOAD_DEFER_LENGTH: &str = "upload-defer-length";
/// fileuploader's own: the name a finished upload landed under, on the
/// answer that says it finished (percent-encoded as [`encode_text`] does).
pub const LANDED_NAME: &str = "x-landed-name";
/// The media type of a tus append.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// The IETF draft's interop version header: its presence marks a request
/// of the draft.
pub const INTEROP_VERSION: &str = "upload-draft-interop-version";
/// Whether a request carries the upload's end (`?1`) or not (`?0`); interop
/// versions 4 and later.
pub const UPLOAD_COMPLETE: &str = "upload-complete";
/// A key the client picks for one upload and sends with every creation of
/// it (the HTTP API working group's `Idempotency-Key`, a quoted string): a
/// creation sent again after its answer was lost finds the same upload, or
/// its landing, instead of beginning another.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The inverse of [`UPLOAD_COMPLETE`], in interop version 3.
pub const UPLOAD_INCOMPLETE: &str = "upload-incomplete";
/// The media type of an IETF append from interop version 6.
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";
/// The interop versions of the IETF draft spoken here, oldest first: 3
/// (draft -01), 5 (-03), 6 (-04 and -05), 7 (-06 to -08), 8 (-09 to -11)
/// and 9 (-12); tus-js-client's `ietf-draft-03` and `ietf-draft-05` modes
/// send 5 and 6. `docs/PROTOCOL.md` tabulates what changed.
pub const INTEROP_VERSIONS: [u32; 6] = [3, 5, 6, 7, 8, 9];
/// The newest interop version spoken here: what our client sends first.
pub const NEWEST_INTEROP_VERSION: u32 = INTEROP_VERSIONS[INTEROP_VERSIONS.len() - 1];

/// Which resumable protocol a request speaks, and the rules that differ
/// between them: the one place a new interop version of the IETF draft is
/// taught to the client, the receiver and the mock server alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// tus 1.0.
    Tus,
    /// The IETF resumable-upload draft at this interop version (one of
    /// [`INTEROP_VERSIONS`]).
    Ietf(u32),
}

impl Version {
    /// The draft at the interop version `value` names, if spoken here.
    ///
    /// # Errors
    ///
    /// A version not in [`INTEROP_VERSIONS`], saying which are.
    pub fn ietf(value: &str) -> Result<Self, WireError> {
        value
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|v| INTEROP_VERSIONS.contains(v))
            .map(Version::Ietf)
            .ok_or_else(|| {
                WireError(format!(
                    "unsupported Upload-Draft-Interop-Version {value:?}; this receiver speaks {INTEROP_VERSIONS:?}"
                ))
            })
    }

    /// Its name for people: "tus 1.0", "IETF resumable-upload (interop
    /// version 6)".
    pub fn name(self) -> String {
        match self {
            Version::Tus => "tus 1.0".to_owned(),
            Version::Ietf(v) => format!("IETF resumable-upload (interop version {v})"),
        }
    }

    /// The header that says whether a request carries the upload's end,
    /// or a response that the upload is complete, and the flag it takes
    /// for `complete` (interop 3 said it inverted, as `Upload-Incomplete`);
    /// `None` for tus, which has none.
    pub fn completion(self, complete: bool) -> Option<(&'static str, &'static str)> {
        match self {
            Version::Tus => None,
            Version::Ietf(3) => Some((UPLOAD_INCOMPLETE, format_flag(!complete))),
            Version::Ietf(_) => Some((UPLOAD_COMPLETE, format_flag(complete))),
        }
    }

    /// Whether the upload is complete, as a message's completion header
    /// says (`header` looks one up by name); `None` when it says nothing.
    ///
    /// # Errors
    ///
    /// A completion header that is not a structured-field boolean.
    pub fn complete_in<'a>(
        self,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<bool>, WireError> {
        let (name, inverted) = match self {
            Version::Tus => return Ok(None),
            Version::Ietf(3) => (UPLOAD_INCOMPLETE, true),
            Version::Ietf(_) => (UPLOAD_COMPLETE, false),
        };
        header(name)
            .map(|v| parse_flag(v).map(|flag| flag != inverted))
            .transpose()
    }

    /// The name `Upload-Limit` gives the upload's remaining lifetime
    /// (`expires` in interop 6, `max-age` from 7), or `None` where the
    /// version has no `Upload-Limit` (tus, and the draft before interop 6).
    pub fn limit_age_key(self) -> Option<&'static str> {
        match self {
            Version::Ietf(v) if v >= 7 => Some("max-age"),
            Version::Ietf(6) => Some("expires"),
            _ => None,
        }
    }

    /// Whether errors carry the draft's problem types (from interop 6).
    pub fn has_problem_types(self) -> bool {
        matches!(self, Version::Ietf(v) if v >= 6)
    }

    /// Whether an append to a completed upload is the 400 problem
    /// `completed-upload` (interop 6 to 8; -12 dropped the type, and the
    /// append is refused by its offset).
    pub fn has_completed_problem(self) -> bool {
        matches!(self, Version::Ietf(6..=8))
    }

    /// Whether the offset may be read with `GET` as well as `HEAD` (from
    /// interop 9).
    pub fn offset_by_get(self) -> bool {
        matches!(self, Version::Ietf(v) if v >= 9)
    }

    /// The interop version one older than this one that is spoken here,
    /// to fall back to when a server refuses this one.
    pub fn older(self) -> Option<Self> {
        match self {
            Version::Tus => None,
            Version::Ietf(v) => INTEROP_VERSIONS
                .iter()
                .rev()
                .find(|&&older| older < v)
                .map(|&older| Version::Ietf(older)),
        }
    }

    /// The media type of an append's body.
    pub fn append_type(self) -> &'static str {
        match self {
            Version::Ietf(v) if v >= 6 => PARTIAL_UPLOAD,
            _ => OFFSET_OCTET_STREAM,
        }
    }
}

/// Parses an offset or length: decimal digits only.
///
/// # Errors
///
/// Anything else, or a number above `u64::MAX`.
pub fn parse_offset(value: &str) -> Result<u64, WireError> {
    let bad = || WireError(format!("malformed offset {value:?}"));
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

/// Parses a structured-field boolean: `?1` or `?0`.
///
/// # Errors
///
/// Anything else.
pub fn parse_flag(value: &str) -> Result<bool, WireError> {
    match value.trim() {
        "?1" => Ok(true),
        "?0" => Ok(false),
        other => Err(WireError(format!("malformed boolean {other:?}"))),
    }
}

/// A structured-field boolean: `?1` or `?0`.
pub fn format_flag(on: bool) -> &'static str {
    if on {
        "?1"
    } else {
        "?0"
    }
}

/// tus `Upload-Metadata`: keys with optional values, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(pub Vec<(String, Option<Vec<u8>>)>);

impl Metadata {
    /// Parses the header value.
    ///
    /// # Errors
    ///
    /// An empty or spaced key, a key given twice, or a value that is not
    /// base64.
    pub fn parse(value: &str) -> Result<Self, WireError> {
        let mut pairs: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut words = pair.split(' ').filter(|w| !w.is_empty());
            let key = words.next().unwrap_or("");
            let encoded = words.next();
            if key.is_empty() || words.next().is_some() {
                return Err(WireError(format!(
                    "malformed Upload-Metadata pair {pair:?}"
                )));
            }
            if pairs.iter().any(|(k, _)| k == key) {
                return Err(WireError(format!(
                    "Upload-Metadata key {key:?} given twice"
                )));
            }
            let decoded = encoded
                .map(|v| {
                    base64::engine::general_purpose::STANDARD
                        .decode(v)
                        .map_err(|_| WireError(format!("Upload-Metadata {key:?} is not base64")))
                })
                .transpose()?;
            pairs.push((key.to_owned(), decoded));
        }
        Ok(Metadata(pairs))
    }

    /// The value of `key` as text, if present and UTF-8.
    pub fn text(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| String::from_utf8(v.clone()?).ok())
    }
}

impl fmt::Display for Metadata {
    /// The header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(key)?;
            if let Some(value) = value {
                let encoded = base64::engine::general_purpose::STANDARD.encode(value);
                write!(f, " {encoded}")?;
            }
        }
        Ok(())
    }
}

/// A checksum algorithm of the tus checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// SHA-1, which every tus server with the extension must take.
    Sha1,
    /// SHA-256.
    Sha256,
    /// CRC32C, its 4 bytes big-endian.
    Crc32c,
}

impl ChecksumAlgorithm {
    /// Every algorithm, in order of preference.
    pub const ALL: [ChecksumAlgorithm; 3] = [Self::Crc32c, Self::Sha256, Self::Sha1];

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Crc32c => "crc32c",
        }
    }

    /// The algorithm called `name`, if known.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name.trim()))
    }
}

impl ChecksumAlgorithm {
    /// An incremental digest of this algorithm.
    pub fn hasher(self) -> Hasher {
        Hasher(match self {
            Self::Sha1 => Running::Sha1(sha1::Sha1::default()),
            Self::Sha256 => Running::Sha256(sha2::Sha256::default()),
            Self::Crc32c => Running::Crc32c(0),
        })
    }

    /// The digest of `bytes`.
    pub fn digest(self, bytes: &[u8]) -> Vec<u8> {
        let mut hasher = self.hasher();
        hasher.update(bytes);
        hasher.finish()
    }
}

/// A digest being computed as bytes pass, for `Upload-Checksum`.
#[derive(Debug, Clone)]
pub struct Hasher(Running);

#[derive(Debug, Clone)]
enum Running {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Crc32c(u32),
}

impl Hasher {
    /// Takes the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        use sha1::Digest as _;
        match &mut self.0 {
            Running::Sha1(h) => h.update(bytes),
            Running::Sha256(h) => h.update(bytes),
            Running::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, bytes),
        }
    }

    /// The digest's bytes (CRC32C: 4 bytes, big-endian).
    pub fn finish(self) -> Vec<u8> {
        use sha1::Digest as _;
        match self.0 {
            Running::Sha1(h) => h.finalize().to_vec(),
            Running::Sha256(h) => h.finalize().to_vec(),
            Running::Crc32c(crc) => crc.to_be_bytes().to_vec(),
        }
    }
}

/// An `Upload-Checksum` value: an algorithm and a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm's name as sent (it may be one not known here).
    pub algorithm: String,
    /// The digest's bytes.
    pub digest: Vec<u8>,
}

impl Checksum {
    /// Parses the header value.
    ///
    /// # Errors
    ///
    /// Not two words, or a digest that is not base64.
    pub fn parse(value: &str) -> Result<Self, WireError> {
        let bad = || WireError(format!("malformed Upload-Checksum {value:?}"));
        let (algorithm, encoded) = value.trim().split_once(' ').ok_or_else(bad)?;
        let digest = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad())?;
        Ok(Checksum {
            algorithm: algorithm.to_owned(),
            digest,
        })
    }
}

impl fmt::Display for Checksum {
    /// The header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let encoded = base64::engine::general_purpose::STANDARD.encode(&self.digest);
        write!(f, "{} {encoded}", self.algorithm)
    }
}

/// An `Upload-Concat` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concat {
    /// A partial upload, to be concatenated later.
    Partial,
    /// The concatenation of these partial uploads' URLs, in order.
    Final(Vec<String>),
}

impl Concat {
    /// Parses the header value.
    ///
    /// # Errors
    ///
    /// Neither `partial` nor `final;` with at least one URL.
    pub fn parse(value: &str) -> Result<Self, WireError> {
        let value = value.trim();
        if value == "partial" {
            return Ok(Concat::Partial);
        }
        let urls: Vec<String> = value
            .strip_prefix("final;")
            .ok_or_else(|| WireError(format!("malformed Upload-Concat {value:?}")))?
            .split(' ')
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err(WireError("Upload-Concat final names no upload".into()));
        }
        Ok(Concat::Final(urls))
    }
}

impl fmt::Display for Concat {
    /// The header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Concat::Partial => f.write_str("partial"),
            Concat::Final(urls) => write!(f, "final;{}", urls.join(" ")),
        }
    }
}

/// `text` as a header value: bytes outside visible ASCII, and `%`,
/// percent-encoded, so any UTF-8 name travels and comes back whole.
///
/// ```
/// use fileuploader_wire::resumable::{decode_text, encode_text};
/// assert_eq!(encode_text("a b%ü.txt"), "a%20b%25%C3%BC.txt");
/// assert_eq!(decode_text("a%20b%25%C3%BC.txt"), "a b%ü.txt");
/// assert_eq!(decode_text("100%"), "100%");
/// ```
pub fn encode_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text [`encode_text`] encoded; a `%` not followed by two hex digits
/// is kept as it is, and bytes that are not UTF-8 are replaced.
pub fn decode_text(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_says_and_reads_completion_in_its_own_header() {
        let read = |v: Version, name: &'static str, value: &'static str| {
            v.complete_in(|n| (n == name).then_some(value))
        };
        assert_eq!(Version::Tus.completion(true), None);
        assert_eq!(read(Version::Tus, UPLOAD_COMPLETE, "?1"), Ok(None));
        assert_eq!(
            Version::Ietf(3).completion(true),
            Some((UPLOAD_INCOMPLETE, "?0"))
        );
        assert_eq!(
            read(Version::Ietf(3), UPLOAD_INCOMPLETE, "?0"),
            Ok(Some(true))
        );
        for v in [5, 6, 7, 8, 9] {
            assert_eq!(
                Version::Ietf(v).completion(false),
                Some((UPLOAD_COMPLETE, "?0"))
            );
            assert_eq!(
                read(Version::Ietf(v), UPLOAD_COMPLETE, "?1"),
                Ok(Some(true))
            );
            assert_eq!(read(Version::Ietf(v), UPLOAD_INCOMPLETE, "?1"), Ok(None));
            assert!(read(Version::Ietf(v), UPLOAD_COMPLETE, "yes").is_err());
        }
        assert_eq!(Version::Tus.append_type(), OFFSET_OCTET_STREAM);
        assert_eq!(Version::Ietf(5).append_type(), OFFSET_OCTET_STREAM);
        assert_eq!(Version::Ietf(6).append_type(), PARTIAL_UPLOAD);
        assert_eq!(Version::ietf(" 6 "), Ok(Version::Ietf(6)));
        assert!(Version::ietf("4")
            .unwrap_err()
            .to_string()
            .contains("[3, 5, 6, 7, 8, 9]"));
        // What each version adds, and where a refused one falls back to.
        assert_eq!(Version::Ietf(5).limit_age_key(), None);
        assert_eq!(Version::Ietf(6).limit_age_key(), Some("expires"));
        assert_eq!(Version::Ietf(7).limit_age_key(), Some("max-age"));
        assert!(!Version::Ietf(5).has_problem_types() && Version::Ietf(6).has_problem_types());
        assert!(!Version::Ietf(8).offset_by_get() && Version::Ietf(9).offset_by_get());
        assert_eq!(Version::Ietf(NEWEST_INTEROP_VERSION), Version::Ietf(9));
        assert_eq!(Version::Ietf(9).older(), Some(Version::Ietf(8)));
        assert_eq!(Version::Ietf(5).older(), Some(Version::Ietf(3)));
        assert_eq!(Version::Ietf(3).older(), None);
        assert_eq!(Version::Tus.older(), None);
    }

    #[test]
    fn digests_taken_in_pieces_equal_those_taken_at_once() {
        let data = b"the quick brown fox";
        for algorithm in ChecksumAlgorithm::ALL {
            let mut hasher = algorithm.hasher();
            for piece in data.chunks(4) {
                hasher.update(piece);
            }
            assert_eq!(
                hasher.finish(),
                algorithm.digest(data),
                "{}",
                algorithm.name()
            );
        }
        assert_eq!(
            ChecksumAlgorithm::Crc32c.digest(data),
            crc32c::crc32c(data).to_be_bytes()
        );
        assert_eq!(ChecksumAlgorithm::Sha1.digest(b"").len(), 20);
        assert_eq!(ChecksumAlgorithm::Sha256.digest(b"").len(), 32);
    }

    #[test]
    fn metadata_round_trips_and_refuses_what_is_malformed() {
        let m = Metadata::parse("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .unwrap();
        assert_eq!(m.text("filename").unwrap(), "world_domination_plan.pdf");
        assert_eq!(m.0[1], ("is_confidential".to_owned(), None));
        assert_eq!(Metadata::parse(&m.to_string()).unwrap(), m);
        assert_eq!(Metadata::parse("").unwrap(), Metadata::default());
        for bad in ["a !!!", "a b c", "a YQ==,a YQ==", " YQ== x y"] {
            assert!(Metadata::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn checksums_concat_offsets_and_flags_parse_as_sent() {
        let c = Checksum::parse("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        assert_eq!((c.algorithm.as_str(), c.digest.len()), ("sha1", 20));
        assert_eq!(c.to_string(), "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=");
        assert!(Checksum::parse("sha1").is_err());
        assert_eq!(
            ChecksumAlgorithm::from_name("SHA256"),
            Some(ChecksumAlgorithm::Sha256)
        );
        assert_eq!(ChecksumAlgorithm::from_name("md5"), None);

        assert_eq!(Concat::parse("partial").unwrap(), Concat::Partial);
        let f = Concat::parse("final;/files/a http://x/files/b").unwrap();
        assert_eq!(
            f,
            Concat::Final(vec!["/files/a".into(), "http://x/files/b".into()])
        );
        assert_eq!(f.to_string(), "final;/files/a http://x/files/b");
        assert!(Concat::parse("final;").is_err());
        assert!(Concat::parse("whole").is_err());

        assert_eq!(parse_offset("0").unwrap(), 0);
        assert_eq!(parse_offset("18446744073709551615").unwrap(), u64::MAX);
        for bad in ["", "-1", "1e3", " 1", "18446744073709551616"] {
            assert!(parse_offset(bad).is_err(), "{bad:?}");
        }
        assert!(parse_flag("?1").unwrap() && !parse_flag("?0").unwrap());
        assert!(parse_flag("true").is_err());
        assert_eq!(format_flag(true), "?1");
    }
}
