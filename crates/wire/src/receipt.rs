//! Signed receipts: what a receiver vouches it holds, in a form anyone can
//! check later.
//!
//! A receipt is a JWS in compact form (RFC 7515), signed with Ed25519
//! (`"alg":"EdDSA"`, RFC 8037): `HEADER.PAYLOAD.SIGNATURE`, each part
//! base64url without padding. The header names the signing key (`"key"`:
//! its 32 bytes, base64url) so that a check with the wrong key can say so;
//! the payload is a [`Receipt`] as JSON. It travels in the
//! [`RECEIPT_HEADER`] of the answer that reports a landing, in every
//! protocol. This module reads and writes the form; signing and checking
//! signatures is the receiver's and the command's, which hold the keys.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The response header that carries a landing's receipt.
pub const RECEIPT_HEADER: &str = "upload-receipt";

/// The JWS `typ` of a receipt.
pub const RECEIPT_TYPE: &str = "fileuploader-receipt+jws";

/// What a receipt says: which upload landed, as what, with which bytes,
/// sent by whom, and when the receiver said so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The form's version: 1.
    pub v: u32,
    /// The upload (empty for a whole file sent without an id).
    pub upload_id: String,
    /// The name it landed under.
    pub name: String,
    /// Its length in bytes.
    pub length: u64,
    /// The CRC32C of the landed bytes, 8 hex digits.
    pub crc32c: String,
    /// The SHA-256 of the landed bytes, 64 hex digits.
    pub sha256: String,
    /// Whose credentials sent it: a token's or a signed URL's subject
    /// (empty on an open receiver).
    pub subject: String,
    /// When the receiver signed it, in seconds since the Unix epoch.
    pub issued_at: u64,
}

/// The JWS header of a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    key: String,
}

/// A receipt as it was read, with what its signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// What it says.
    pub receipt: Receipt,
    /// The public key its header names (not yet trusted: check it against
    /// the one you hold).
    pub key: Vec<u8>,
    /// The bytes the signature covers: `HEADER.PAYLOAD` as sent.
    pub signing_input: String,
    /// The signature.
    pub signature: Vec<u8>,
}

/// Why a text is not a receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a fileuploader receipt: {0}")]
pub struct NotAReceipt(String);

impl Receipt {
    /// The receipt in compact form, signed by `sign` (which returns the
    /// Ed25519 signature of the bytes it is given) with public key `key`.
    pub fn sign(&self, key: &[u8], sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
        let header = Header {
            alg: "EdDSA".to_owned(),
            typ: RECEIPT_TYPE.to_owned(),
            key: URL_SAFE_NO_PAD.encode(key),
        };
        let part = |json: Vec<u8>| URL_SAFE_NO_PAD.encode(json);
        let input = format!(
            "{}.{}",
            part(serde_json::to_vec(&header).expect("a header serializes")),
            part(serde_json::to_vec(self).expect("a receipt serializes")),
        );
        let signature = URL_SAFE_NO_PAD.encode(sign(input.as_bytes()));
        format!("{input}.{signature}")
    }

    /// Whether the receipt vouches for these bytes: their length, CRC32C
    /// and SHA-256. `Err` names the first that differs.
    pub fn check(&self, length: u64, crc32c: u32, sha256: &[u8; 32]) -> Result<(), String> {
        if self.length != length {
            return Err(format!(
                "the receipt says {} bytes; the file has {length}",
                self.length
            ));
        }
        if self.crc32c != crate::format_crc32c(crc32c) {
            return Err(format!(
                "the receipt says CRC32C {}; the file has {}",
                self.crc32c,
                crate::format_crc32c(crc32c)
            ));
        }
        let ours: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
        if self.sha256 != ours {
            return Err(format!(
                "the receipt says SHA-256 {}; the file has {ours}",
                self.sha256
            ));
        }
        Ok(())
    }
}

impl Signed {
    /// Reads a receipt in compact form (surrounding white space ignored).
    ///
    /// # Errors
    ///
    /// A text that is not three base64url parts, whose header is not an
    /// Ed25519 receipt's, or whose payload is not a receipt.
    pub fn parse(compact: &str) -> Result<Signed, NotAReceipt> {
        let compact = compact.trim();
        let bad = |why: &str| NotAReceipt(why.to_owned());
        let mut parts = compact.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it is not three parts joined by dots"));
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| bad(&format!("its {what} is not base64url")))
        };
        let header: Header = serde_json::from_slice(&decode(header, "header")?)
            .map_err(|e| bad(&format!("its header: {e}")))?;
        if header.alg != "EdDSA" || header.typ != RECEIPT_TYPE {
            return Err(bad(&format!(
                "its header says {} {}, not EdDSA {RECEIPT_TYPE}",
                header.alg, header.typ
            )));
        }
        let receipt: Receipt = serde_json::from_slice(&decode(payload, "payload")?)
            .map_err(|e| bad(&format!("its payload: {e}")))?;
        Ok(Signed {
            receipt,
            key: decode(&header.key, "key")?,
            signing_input: compact[..compact.len() - signature.len() - 1].to_owned(),
            signature: decode(signature, "signature")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt() -> Receipt {
        Receipt {
            v: 1,
            upload_id: "u1".into(),
            name: "claims/7.pdf".into(),
            length: 3,
            crc32c: crate::format_crc32c(crc32c::crc32c(b"abc")),
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
            subject: "token:alice".into(),
            issued_at: 1_765_000_000,
        }
    }

    #[test]
    fn a_receipt_reads_back_as_it_was_signed() {
        let compact = receipt().sign(&[9; 32], |input| input.len().to_be_bytes().to_vec());
        let signed = Signed::parse(&format!(" {compact}\n")).unwrap();
        assert_eq!(signed.receipt, receipt());
        assert_eq!(signed.key, [9; 32]);
        assert_eq!(
            signed.signature,
            signed.signing_input.len().to_be_bytes().to_vec()
        );
        assert!(compact.starts_with(&signed.signing_input));
        for not in ["", "a.b", "a.b.c.d", "!.!.!", &compact.replace('.', "x.")] {
            assert!(Signed::parse(not).is_err(), "{not}");
        }
    }

    #[test]
    fn a_receipt_vouches_only_for_its_bytes() {
        let sha: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(b"abc").into()
        };
        let crc = crc32c::crc32c(b"abc");
        assert_eq!(receipt().check(3, crc, &sha), Ok(()));
        assert!(receipt()
            .check(2, crc, &sha)
            .unwrap_err()
            .contains("3 bytes"));
        assert!(receipt()
            .check(3, crc ^ 1, &sha)
            .unwrap_err()
            .contains("CRC32C"));
        assert!(receipt()
            .check(3, crc, &[0; 32])
            .unwrap_err()
            .contains("SHA-256"));
    }
}
