//! Signed receipts: the receiver vouches, with an Ed25519 key of its own,
//! for what landed, in the form of [`fileuploader_wire::receipt`].
//!
//! A receiver given a [`ReceiptKey`] ([`Receiver::receipts`]) has its
//! store digest each landing (SHA-256, kept on the landing's record) and
//! signs a receipt into every answer that reports a landing. [`verify`]
//! checks one later against the public key and, given them, the bytes.
//!
//! [`Receiver::receipts`]: crate::Receiver::receipts

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};

use crate::store::Landed;
use fileuploader_wire::receipt::{Receipt, Signed};

/// What an Ed25519 public key's DER (`SubjectPublicKeyInfo`) holds before
/// the key's 32 bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The receiver's signing key: Ed25519, read from a PKCS#8 PEM file (as
/// `openssl genpkey -algorithm ed25519` or `fileuploader receipt-key`
/// writes it). Cheap to clone.
#[derive(Clone)]
pub struct ReceiptKey(Arc<Ed25519KeyPair>);

impl fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReceiptKey")
            .field(&STANDARD.encode(self.public_key()))
            .finish()
    }
}

impl ReceiptKey {
    /// The key in PEM file `path`.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or holds no Ed25519 private key.
    pub fn from_pem_file(path: &Path) -> Result<Self, String> {
        let der = PrivatePkcs8KeyDer::from_pem_file(path).map_err(|e| {
            format!(
                "{}: not a PEM private key ({e}); make one with `fileuploader receipt-key FILE`",
                path.display()
            )
        })?;
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map(|pair| ReceiptKey(Arc::new(pair)))
            .map_err(|e| format!("{}: not an Ed25519 private key ({e})", path.display()))
    }

    /// A new key: its private half and its public half, each as a PEM
    /// file's text (PKCS#8 and `SubjectPublicKeyInfo`).
    ///
    /// # Errors
    ///
    /// When the system's random source fails.
    pub fn generate() -> Result<(String, String), String> {
        let random = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&random)
            .map_err(|_| "the system's random source failed".to_owned())?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())?;
        let spki = [&ED25519_SPKI_PREFIX[..], pair.public_key().as_ref()].concat();
        Ok((pem("PRIVATE KEY", pkcs8.as_ref()), pem("PUBLIC KEY", &spki)))
    }

    /// The public key's 32 bytes.
    pub fn public_key(&self) -> &[u8] {
        self.0.public_key().as_ref()
    }

    /// The signed receipt of `landed`, issued now; `None` when its store
    /// did not digest it.
    pub(crate) fn sign(&self, landed: &Landed) -> Option<String> {
        let sha256 = landed.sha256?;
        let receipt = Receipt {
            v: 1,
            upload_id: landed.id.clone(),
            name: landed.name.clone(),
            length: landed.length,
            crc32c: fileuploader_wire::format_crc32c(landed.crc32c?),
            sha256: hex::encode(sha256),
            subject: landed.owner.clone(),
            issued_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        Some(receipt.sign(self.public_key(), |input| {
            self.0.sign(input).as_ref().to_vec()
        }))
    }
}

/// `der` as PEM text with this label.
fn pem(label: &str, der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap_or(""))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The Ed25519 public key in PEM file `path` (`SubjectPublicKeyInfo`, as
/// `openssl pkey -pubout` or `fileuploader receipt-key` writes it).
///
/// # Errors
///
/// A file that cannot be read or holds no Ed25519 public key.
pub fn public_key_from_pem_file(path: &Path) -> Result<Vec<u8>, String> {
    let der = SubjectPublicKeyInfoDer::from_pem_file(path)
        .map_err(|e| format!("{}: not a PEM public key ({e})", path.display()))?;
    match der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(key) if key.len() == 32 => Ok(key.to_vec()),
        _ => Err(format!("{}: not an Ed25519 public key", path.display())),
    }
}

/// Why a receipt does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unverified {
    /// The text is not a receipt.
    #[error("{0}")]
    Malformed(String),
    /// Signed by another key than the one given.
    #[error("the receipt was signed by another key ({signed_by}), not the one given")]
    WrongKey {
        /// The key the receipt names, base64.
        signed_by: String,
    },
    /// The signature does not cover what the receipt says: it was changed.
    #[error(
        "the receipt's signature does not match what it says: it was changed after it was signed"
    )]
    Tampered,
    /// The receipt holds, but not for these bytes.
    #[error("the receipt holds, but not for this file: {0}")]
    OtherBytes(String),
}

/// Checks a receipt in compact form against public `key` and, when
/// `bytes` are given (their length, CRC32C and SHA-256), that it vouches
/// for them; returns what it says.
///
/// # Errors
///
/// What does not hold, in that order: the form, the key, the signature,
/// the bytes.
pub fn verify(
    compact: &str,
    key: &[u8],
    bytes: Option<(u64, u32, [u8; 32])>,
) -> Result<Receipt, Unverified> {
    let signed = Signed::parse(compact).map_err(|e| Unverified::Malformed(e.to_string()))?;
    if signed.key != key {
        return Err(Unverified::WrongKey {
            signed_by: STANDARD.encode(&signed.key),
        });
    }
    UnparsedPublicKey::new(&ED25519, key)
        .verify(signed.signing_input.as_bytes(), &signed.signature)
        .map_err(|_| Unverified::Tampered)?;
    if let Some((length, crc32c, sha256)) = bytes {
        signed
            .receipt
            .check(length, crc32c, &sha256)
            .map_err(Unverified::OtherBytes)?;
    }
    Ok(signed.receipt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn receipts_verify_and_every_kind_of_tampering_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = ReceiptKey::generate().unwrap();
        let (key_file, pub_file) = (dir.path().join("k"), dir.path().join("k.pub"));
        std::fs::write(&key_file, private).unwrap();
        std::fs::write(&pub_file, public).unwrap();
        let key = ReceiptKey::from_pem_file(&key_file).unwrap();
        let public = public_key_from_pem_file(&pub_file).unwrap();
        assert_eq!(public, key.public_key());

        let bytes = b"the scanned page";
        let sha: [u8; 32] = sha2::Sha256::digest(bytes).into();
        let crc = crc32c::crc32c(bytes);
        let landed =
            Landed::new("u1", "token:alice", "claims/7.pdf", 16, Some(crc)).with_sha256(Some(sha));
        let compact = key.sign(&landed).unwrap();
        let receipt = verify(&compact, &public, Some((16, crc, sha))).unwrap();
        assert_eq!(
            (receipt.name.as_str(), receipt.subject.as_str()),
            ("claims/7.pdf", "token:alice")
        );
        assert_eq!(key.sign(&landed.clone().with_sha256(None)), None);

        let (other, _) = ReceiptKey::generate().unwrap();
        std::fs::write(&key_file, other).unwrap();
        let other = ReceiptKey::from_pem_file(&key_file).unwrap();
        assert!(matches!(
            verify(&compact, other.public_key(), None),
            Err(Unverified::WrongKey { .. })
        ));
        // A payload changed, its signature kept.
        let [header, _, signature] = compact.split('.').collect::<Vec<_>>()[..] else {
            panic!("{compact}")
        };
        let mut forged = Signed::parse(&compact).unwrap().receipt;
        forged.length = 15;
        let forged_payload = forged.sign(&public, |_| Vec::new());
        let payload = forged_payload.split('.').nth(1).unwrap();
        let changed = format!("{header}.{payload}.{signature}");
        assert_eq!(verify(&changed, &public, None), Err(Unverified::Tampered));
        assert!(matches!(
            verify(&compact, &public, Some((15, crc, sha))),
            Err(Unverified::OtherBytes(why)) if why.contains("16 bytes")
        ));
        assert!(matches!(
            verify("garbage", &public, None),
            Err(Unverified::Malformed(_))
        ));
        std::fs::write(&pub_file, "not a key").unwrap();
        assert!(public_key_from_pem_file(&pub_file).is_err());
        assert!(ReceiptKey::from_pem_file(&pub_file).is_err());
    }
}
