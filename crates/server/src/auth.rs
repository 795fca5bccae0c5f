//! Who may use the receiver: bearer tokens, and upload URLs signed with a
//! key the receiver shares with an application backend (HMAC-SHA256).
//!
//! A signed URL carries, in its query: `fu_expires` (Unix seconds),
//! optionally `fu_name` (the one name it may land) or `fu_prefix` (a prefix
//! names must start with), optionally `fu_max` (the largest upload, in
//! bytes), optionally `fu_sub` (whom the backend signed it for), and
//! `fu_sig`, the hex HMAC-SHA256 of `PATH \n EXPIRES \n RULE \n MAX`
//! (RULE `name:N`, `prefix:P` or empty; MAX empty when absent), followed by
//! `\n SUBJECT` when there is one. Other query parameters, such as the
//! client's `upload_id`, are not signed.
//!
//! The credentials' owner, who alone may touch an upload begun with them
//! and whom receipts name, is `token:` and a digest of a bearer token;
//! `subject:` and the subject of a signed URL that has one (so that every
//! URL signed for one subject reaches that subject's uploads: a fresh URL
//! resumes what an expired one began); else `signed:` and the signature's
//! first bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode, Uri};
use sha2::{Digest, Sha256};

use crate::Refusal;

type HmacSha256 = Hmac<Sha256>;

/// Who may use the receiver. Open (the default) lets anyone in; with tokens
/// or a signing key, a request needs one or the other, and an upload answers
/// only to the credentials that began it.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Access {
    tokens: Vec<String>,
    signing_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("tokens", &self.tokens.len())
            .field("signing_key", &self.signing_key.is_some())
            .finish()
    }
}

/// What a request's credentials allow.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Grant {
    /// Who it is, for the uploads it begins ("" when access is open).
    pub(crate) owner: String,
    /// The name, or name prefix, it may land under.
    pub(crate) name: Option<NameRule>,
    /// The largest upload it may send.
    pub(crate) max_size: Option<u64>,
}

impl Grant {
    /// The largest upload these credentials may send, under the
    /// receiver's own `limit`.
    pub(crate) fn largest(&self, limit: u64) -> u64 {
        self.max_size.map_or(limit, |m| m.min(limit))
    }

    /// Refuses (403) a name the credentials do not allow.
    pub(crate) fn check_name(&self, name: &str) -> Result<(), Refusal> {
        match &self.name {
            Some(rule) if !rule.allows(name) => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("the upload URL does not allow the name {name:?}"),
            )),
            _ => Ok(()),
        }
    }
}

/// Which names a signed URL may land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameRule {
    /// Exactly this name.
    Exactly(String),
    /// Names starting with this.
    Prefix(String),
}

impl NameRule {
    fn signed(&self) -> String {
        match self {
            NameRule::Exactly(n) => format!("name:{n}"),
            NameRule::Prefix(p) => format!("prefix:{p}"),
        }
    }

    pub(crate) fn allows(&self, name: &str) -> bool {
        match self {
            NameRule::Exactly(n) => n == name,
            NameRule::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

/// A secret that is empty or blank, refused so that access never fails
/// open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlankSecret(&'static str);

impl std::fmt::Display for BlankSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is empty or blank, which would let anyone in; give a real one",
            self.0
        )
    }
}

impl std::error::Error for BlankSecret {}

fn unauthorized(why: &str) -> Refusal {
    Refusal::new(StatusCode::UNAUTHORIZED, why)
}

fn mac(
    key: &[u8],
    path: &str,
    expires: u64,
    rule: Option<&NameRule>,
    max: Option<u64>,
    subject: Option<&str>,
) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    let rule = rule.map(NameRule::signed).unwrap_or_default();
    let max = max.map(|m| m.to_string()).unwrap_or_default();
    mac.update(format!("{path}\n{expires}\n{rule}\n{max}").as_bytes());
    if let Some(subject) = subject {
        mac.update(format!("\n{subject}").as_bytes());
    }
    mac
}

impl Access {
    /// Anyone may upload (the default).
    pub fn open() -> Self {
        Access::default()
    }

    /// Also lets in requests with `Authorization: Bearer TOKEN`.
    ///
    /// # Errors
    ///
    /// When the token is empty or blank: it would let in anyone who sends
    /// an empty one.
    pub fn token(mut self, token: impl Into<String>) -> Result<Self, BlankSecret> {
        let token = token.into();
        if token.trim().is_empty() {
            return Err(BlankSecret("a bearer token"));
        }
        self.tokens.push(token);
        Ok(self)
    }

    /// Also lets in upload URLs signed with `key` (see the module docs).
    ///
    /// # Errors
    ///
    /// When the key is empty or only white space: anyone could sign with
    /// it.
    pub fn signing_key(mut self, key: impl Into<Vec<u8>>) -> Result<Self, BlankSecret> {
        let key = key.into();
        if key.iter().all(u8::is_ascii_whitespace) {
            return Err(BlankSecret("the signing key"));
        }
        self.signing_key = Some(key);
        Ok(self)
    }

    /// What the request's credentials allow, or 401.
    pub(crate) fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<Grant, Refusal> {
        if self.tokens.is_empty() && self.signing_key.is_none() {
            return Ok(Grant::default());
        }
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = bearer {
            // Every token is compared, so timing says nothing of which.
            let matched = self.tokens.iter().fold(false, |any, t| {
                constant_eq(t.as_bytes(), token.as_bytes()) | any
            });
            if matched {
                let digest = hex::encode(Sha256::digest(token.as_bytes()));
                return Ok(Grant {
                    owner: format!("token:{}", &digest[..32]),
                    ..Grant::default()
                });
            }
            return Err(unauthorized("the token is not valid here"));
        }
        match &self.signing_key {
            Some(key) => signed_grant(key, uri),
            None => Err(unauthorized("a bearer token is needed")),
        }
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn signed_grant(key: &[u8], uri: &Uri) -> Result<Grant, Refusal> {
    let query = uri.query().unwrap_or("");
    let mut expires = None;
    let mut rule = None;
    let mut max = None;
    let mut sig = None;
    let mut subject = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "fu_sub" => subject = Some(v.into_owned()),
            "fu_expires" => expires = v.parse::<u64>().ok(),
            "fu_name" => rule = Some(NameRule::Exactly(v.into_owned())),
            "fu_prefix" => rule = Some(NameRule::Prefix(v.into_owned())),
            "fu_max" => max = v.parse::<u64>().ok(),
            "fu_sig" => sig = hex::decode(v.as_bytes()).ok(),
            _ => {}
        }
    }
    let (Some(expires), Some(sig)) = (expires, sig) else {
        return Err(unauthorized(
            "a bearer token or a signed upload URL is needed",
        ));
    };
    // A signature over a creation URL also covers the uploads made there
    // (tus and IETF upload URLs are the creation path plus an id).
    let path = uri.path();
    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
    let valid = [path, parent].into_iter().any(|p| {
        mac(key, p, expires, rule.as_ref(), max, subject.as_deref())
            .verify_slice(&sig)
            .is_ok()
    });
    if !valid {
        return Err(unauthorized("the upload URL's signature is not valid"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now > expires {
        return Err(unauthorized("the upload URL has expired"));
    }
    Ok(Grant {
        owner: match subject {
            Some(subject) => format!("subject:{subject}"),
            None => format!("signed:{}", hex::encode(&sig[..16.min(sig.len())])),
        },
        name: rule,
        max_size: max,
    })
}

/// Signs `url` (an upload URL of the receiver) with `key`: valid until
/// `expires` (Unix seconds), for the names `rule` allows and uploads of at
/// most `max` bytes, and for `subject` if given (whose uploads every URL
/// signed for it reaches, and whom receipts name).
///
/// ```
/// use fileuploader_server::{sign_url, NameRule};
///
/// let url = sign_url(b"secret", "http://127.0.0.1:8080/upload", 2_000_000_000,
///                    Some(&NameRule::Exactly("scan.pdf".into())), Some(1 << 20), None).unwrap();
/// assert!(url.starts_with("http://127.0.0.1:8080/upload?fu_expires=2000000000&fu_name=scan.pdf&fu_max=1048576&fu_sig="));
/// ```
///
/// # Errors
///
/// When `url` is not a URL.
pub fn sign_url(
    key: &[u8],
    url: &str,
    expires: u64,
    rule: Option<&NameRule>,
    max: Option<u64>,
    subject: Option<&str>,
) -> Result<String, url::ParseError> {
    let mut parsed = url::Url::parse(url)?;
    let sig = mac(key, parsed.path(), expires, rule, max, subject)
        .finalize()
        .into_bytes();
    {
        let mut query = parsed.query_pairs_mut();
        query.append_pair("fu_expires", &expires.to_string());
        match rule {
            Some(NameRule::Exactly(n)) => {
                query.append_pair("fu_name", n);
            }
            Some(NameRule::Prefix(p)) => {
                query.append_pair("fu_prefix", p);
            }
            None => {}
        }
        if let Some(max) = max {
            query.append_pair("fu_max", &max.to_string());
        }
        if let Some(subject) = subject {
            query.append_pair("fu_sub", subject);
        }
        query.append_pair("fu_sig", &hex::encode(sig));
    }
    Ok(parsed.into())
}
