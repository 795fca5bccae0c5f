//! Browser uploads straight to the bucket in one request: S3's
//! `PostObject`, a `multipart/form-data` `POST` whose fields carry a
//! policy (what the form may do, until when) and its AWS Signature Version
//! 4. The SDK presigns requests but writes no POST policy; this does, once.

use std::time::{Duration, SystemTime};

use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a form may upload: one object, at most so large, for so long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostPolicy {
    /// The bucket.
    pub bucket: String,
    /// The object's key: the form can land nothing else.
    pub key: String,
    /// The largest body the form may carry, in bytes.
    pub max_size: u64,
    /// How long the form is good for, from `now`.
    pub valid_for: Duration,
    /// The object's media type, if the form sets one (a field of its own).
    pub content_type: Option<String>,
    /// The status the store answers a posted form with (201 answers with
    /// the object's location, as browsers' uploaders expect), if not its
    /// default (204).
    pub success_status: Option<u16>,
}

/// Who signs: an access key, and the region its signature is for.
#[derive(Clone, PartialEq, Eq)]
pub struct Signer {
    /// The access key's id.
    pub key_id: String,
    /// Its secret.
    pub secret: String,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
    /// The region.
    pub region: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// A signed form: where to `POST` it, and the fields to send before the
/// file part (named `file`, last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostForm {
    /// The bucket's URL.
    pub url: String,
    /// The form's fields, in order.
    pub fields: Vec<(String, String)>,
}

impl PostPolicy {
    /// The form for this policy, signed by `signer` at `now`, to be posted
    /// to `bucket_url` (the bucket's address: `https://BUCKET.s3…` or, on
    /// stores addressed by path, `ENDPOINT/BUCKET`).
    pub fn form(&self, bucket_url: &str, signer: &Signer, now: SystemTime) -> PostForm {
        // Whole seconds: the date is `YYYYMMDDTHHMMSSZ`, no fraction.
        let secs = |t: SystemTime| {
            let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            DateTime::from_secs(since.as_secs() as i64)
        };
        let (when, expires) = (secs(now), secs(now + self.valid_for));
        // `2026-12-06T02:00:00Z` becomes `20261206T020000Z`.
        let stamp: String = when
            .fmt(Format::DateTime)
            .unwrap_or_default()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        let date = &stamp[..stamp.len().min(8)];
        let credential = format!("{}/{date}/{}/s3/aws4_request", signer.key_id, signer.region);
        // Every field is bound by a condition of its own: stores check that
        // each condition has its field (Garage, the bucket's too).
        let mut fixed = vec![
            ("bucket", self.bucket.clone()),
            ("key", self.key.clone()),
            ("x-amz-algorithm", "AWS4-HMAC-SHA256".to_owned()),
            ("x-amz-credential", credential),
            ("x-amz-date", stamp.clone()),
        ];
        if let Some(token) = &signer.session_token {
            fixed.push(("x-amz-security-token", token.clone()));
        }
        if let Some(kind) = &self.content_type {
            fixed.push(("Content-Type", kind.clone()));
        }
        if let Some(status) = self.success_status {
            fixed.push(("success_action_status", status.to_string()));
        }
        let mut conditions: Vec<serde_json::Value> = fixed
            .iter()
            .map(|(name, value)| serde_json::json!({ *name: value }))
            .collect();
        conditions.push(serde_json::json!([
            "content-length-range",
            0,
            self.max_size
        ]));
        let policy = serde_json::json!({
            "expiration": expires.fmt(Format::DateTime).unwrap_or_default(),
            "conditions": conditions,
        });
        let policy = STANDARD.encode(policy.to_string());
        let signature = sign(&policy, &signer.secret, date, &signer.region, "s3");
        let mut fields: Vec<(String, String)> = fixed
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        fields.push(("policy".to_owned(), policy));
        fields.push(("x-amz-signature".to_owned(), signature));
        PostForm {
            url: bucket_url.to_owned(),
            fields,
        }
    }
}

/// The Signature Version 4 of `policy` (base64, as sent): HMAC-SHA256 of it
/// under the key derived from `secret` for `date` (YYYYMMDD), `region` and
/// `service`, in hex.
fn sign(policy: &str, secret: &str, date: &str, region: &str, service: &str) -> String {
    let hmac = |key: &[u8], data: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    let key = [date, region, service, "aws4_request"]
        .into_iter()
        .fold(format!("AWS4{secret}").into_bytes(), |key, part| {
            hmac(&key, part)
        });
    hex::encode(hmac(&key, policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_known_vectors() {
        // The derivation step by step with plain words, and a policy
        // signed with the documentation's example key.
        assert_eq!(
            sign("YWxwaGE=", "bravo", "charlie", "delta", "echo"),
            "7b9d11447e7bba48ef0d530f49d82de8adfd7b7ae064b144e6ac60d82166e4a6"
        );
        let policy = "eyJleHBpcmF0aW9uIjoiMjAxMy0wOC0wNlQxMjowMDowMC4wMDBaIiwiY29uZGl0aW9ucyI6W3siYWNsIjoicHVibGljLXJlYWQifSxbInN0YXJ0cy13aXRoIiwiJENvbnRlbnQtVHlwZSIsImltYWdlLyJdLFsic3RhcnRzLXdpdGgiLCIka2V5IiwidXNlci91c2VyMS8iXSxbInN0YXJ0cy13aXRoIiwiJHgtYW16LW1ldGEtdGFnIiwiIl0seyJ4LWFtei1tZXRhLXV1aWQiOiIxNDM2NTEyMzY1MTI3NCJ9LHsiYnVja2V0IjoiZXhhbXBsZWJ1Y2tldCJ9LHsieC1hbXotYWxnb3JpdGhtIjoiQVdTNC1ITUFDLVNIQTI1NiJ9LHsieC1hbXotY3JlZGVudGlhbCI6IkFLSUFJT1NGT0ROTjdFWEFNUExFLzIwMTMwODA2L3VzLWVhc3QtMS9zMy9hd3M0X3JlcXVlc3QifSx7IngtYW16LWRhdGUiOiIyMDEzMDgwNlQxMjAwMDBaIn1dfQ==";
        assert_eq!(
            sign(
                policy,
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "20130806",
                "us-east-1",
                "s3"
            ),
            "5bc8a7be4a6fc6445b94d0f4096f8cf3dfa00303529f8a68ea7dc0c23bb83cd9"
        );
    }

    #[test]
    fn a_form_binds_its_key_size_time_and_credential() {
        let policy = PostPolicy {
            bucket: "uploads".into(),
            key: "in/a.pdf".into(),
            max_size: 1 << 20,
            valid_for: Duration::from_secs(600),
            content_type: None,
            success_status: None,
        };
        let signer = Signer {
            key_id: "GK1".into(),
            secret: "s".into(),
            session_token: None,
            region: "garage".into(),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_522_400_250);
        let form = policy.form("http://127.0.0.1:3900/uploads", &signer, now);
        let field = |name: &str| {
            form.fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(field("key"), "in/a.pdf");
        assert_eq!(field("x-amz-date"), "20261206T020000Z");
        assert_eq!(
            field("x-amz-credential"),
            "GK1/20261206/garage/s3/aws4_request"
        );
        let decoded = STANDARD.decode(field("policy")).unwrap();
        let said: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(said["expiration"], "2026-12-06T02:10:00Z");
        let conditions = said["conditions"].to_string();
        assert!(
            conditions.contains(r#"["content-length-range",0,1048576]"#),
            "{conditions}"
        );
        assert!(conditions.contains(r#"{"key":"in/a.pdf"}"#), "{conditions}");
        assert!(
            conditions.contains(r#"{"bucket":"uploads"}"#),
            "{conditions}"
        );
        assert_eq!(field("bucket"), "uploads");
        assert_eq!(
            field("x-amz-signature"),
            sign(&field("policy"), "s", "20261206", "garage", "s3")
        );
    }
}
