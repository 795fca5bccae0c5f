//! Hooks: the receiver asks the application before an upload is created,
//! and tells it what landed.
//!
//! Before creation ([`Receiver::before_creation`]), the hook is asked
//! about each upload that is to land (not the parts of a later
//! concatenation) before any of its bytes are stored: its answer may refuse
//! it with a status and message the client sees, settle another name, or
//! attach metadata that travels with the landing's event. A hook that does
//! not answer in time, fails, or answers what the receiver cannot use
//! fails closed: the upload is refused (503, or 502 for an answer that is
//! not of the form), never let in unasked.
//!
//! After landing, each landing leaves an event in the store's outbox in the landing's own
//! commit ([`Store::keep_events`]); a delivery task of [`serve`] takes the
//! events that are due and hands each to the hook: a `POST` of its JSON to
//! a URL (answered 2xx), or a command run with the JSON on standard input
//! (exiting 0). A delivery that fails is tried again after a backoff that
//! doubles up to a minute, for as long as it takes; an event goes from the
//! outbox only once delivered. So an event is delivered at least once,
//! across crashes of the receiver and a hook that is down, and carries its
//! `key` (the upload id) so that a consumer can drop a repeat.
//!
//! [`serve`]: crate::Receiver::serve
//! [`Receiver::before_creation`]: crate::Receiver::before_creation

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::refusal::Refusal;
use crate::store::{Event, Landed, Store};
use crate::uploads::Via;

/// How long one delivery may take before it counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a hook asked while a request waits may take to answer: past
/// it, an upload is refused (503) before creation, and a landing answered
/// with the receiver's own word.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest answer a hook may give.
const MAX_ANSWER: usize = 64 * 1024;
/// The longest wait between two tries of one event.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How many events one receiver claims at a time: one, claimed just
/// before it is told, so that its claim need outlast one delivery only.
const AT_ONCE: usize = 1;
/// How long a claimed event is kept from other receivers: longer than its
/// delivery may take, so that only a receiver that died holding it makes
/// the others wait, that long (on a directory, not even that: see
/// `FsStore`).
pub const LEASE: Duration = Duration::from_secs(DELIVERY_TIMEOUT.as_secs() + 5);
const _: () = assert!(LEASE.as_secs() > DELIVERY_TIMEOUT.as_secs() * AT_ONCE as u64);
/// How soon the outbox is looked at again when it was empty, doubling
/// while it stays so, up to [`MAX_IDLE`].
const IDLE: Duration = Duration::from_millis(250);
const MAX_IDLE: Duration = Duration::from_secs(2);

/// Where the receiver tells the application what landed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hook {
    /// `POST` each event's JSON to this `http://` or `https://` URL (after
    /// landing with an `Idempotency-Key` header); a 2xx answer is a
    /// delivery. An `https://` hook's certificate is checked against the
    /// system's roots and any the receiver was given
    /// ([`Receiver::hook_ca`](crate::Receiver::hook_ca)).
    Url(http::Uri),
    /// Run this command with `sh -c`, each event's JSON on its standard
    /// input; exit status 0 is a delivery.
    Command(String),
}

impl Hook {
    /// A hook from its flag: an `http://` or `https://` URL, or a command.
    ///
    /// # Errors
    ///
    /// A URL that does not parse, or an empty command.
    pub fn parse(text: &str) -> Result<Hook, String> {
        if text.starts_with("http://") || text.starts_with("https://") {
            return text
                .parse()
                .map(Hook::Url)
                .map_err(|e| format!("hook {text}: {e}"));
        }
        if text.trim().is_empty() {
            return Err("the hook is empty: give an http:// URL or a command".to_owned());
        }
        Ok(Hook::Command(text.to_owned()))
    }
}

type HttpClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A hook with the client that reaches it: cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Teller {
    hook: Hook,
    /// The client, or why there is none (each telling then fails so).
    client: Result<HttpClient, String>,
}

impl Teller {
    /// A teller of `hook`, trusting the system's roots and `roots` for an
    /// `https://` hook.
    pub(crate) fn new(hook: Hook, roots: &[CertificateDer<'static>]) -> Self {
        let mut store = rustls::RootCertStore::empty();
        // Roots the system cannot read are left out; a hook whose
        // certificate they would have vouched for is then refused, and
        // each telling says so.
        store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        store.add_parsable_certificates(roots.iter().cloned());
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|config| {
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config.with_root_certificates(store).with_no_client_auth())
                    .https_or_http()
                    .enable_http1()
                    .build();
                Client::builder(TokioExecutor::new()).build(connector)
            })
            .map_err(|e| format!("cannot set up TLS: {e}"));
        Teller { hook, client }
    }

    pub(crate) fn hook(&self) -> &Hook {
        &self.hook
    }
}

/// What the before-creation hook is asked about: an upload about to be
/// created.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Creating<'a> {
    /// Its upload id, if the protocol has one.
    pub(crate) id: Option<&'a str>,
    /// The name the client asks for.
    pub(crate) name: &'a str,
    /// Its length, when declared.
    pub(crate) length: Option<u64>,
    /// Whose credentials ask.
    pub(crate) owner: &'a str,
    pub(crate) via: Via,
}

impl Creating<'_> {
    fn to_json(self) -> String {
        serde_json::json!({
            "type": "creating",
            "upload_id": self.id,
            "name": self.name,
            "length": self.length,
            "owner": self.owner,
            "protocol": self.via.to_string(),
        })
        .to_string()
    }
}

/// What the before-creation hook let in: the name the upload lands under
/// and the metadata it carries (a JSON object, `{}` when none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admission {
    pub(crate) name: String,
    pub(crate) metadata: String,
}

/// The before-creation hook's answer, as it may write it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Verdict {
    #[serde(default)]
    refuse: Option<Refuse>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Refuse {
    status: u16,
    message: String,
}

/// Asks the hook of `teller` about `creating`: `Ok` with the name and
/// metadata it settles, or the refusal the client gets, whether the hook
/// refused or could not be asked.
pub(crate) async fn admit(teller: &Teller, creating: Creating<'_>) -> Result<Admission, Refusal> {
    let json = creating.to_json();
    let asking = Asking {
        key: None,
        answer: true,
    };
    let asked = tokio::time::timeout(ASK_TIMEOUT, tell(teller, &json, asking));
    let unavailable = |why: String| {
        tracing::warn!(
            "the before-creation hook could not be asked about {:?} ({why}): refused",
            creating.name
        );
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the receiver cannot ask its application about this upload now; try again later",
        )
    };
    let answer = match asked.await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(Untold::Unusable(why))) => Err(why),
        Ok(Err(Untold::Unreachable(why))) => return Err(unavailable(why)),
        Err(_) => return Err(unavailable(format!("no answer in {ASK_TIMEOUT:?}"))),
    };
    answer.and_then(|answer| read_word(&answer.body, creating.name)).map_err(|why| {
        tracing::warn!(
            "the before-creation hook's answer about {:?} cannot be used: {why}",
            creating.name
        );
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            format!("the receiver's application gave an answer it cannot use ({why}); the upload was not created"),
        )
    })?
}

/// Reads the hook's answer about an upload asked for as `asked`: an empty
/// answer (or `{}`) lets it in as it is. `Err` says why the answer cannot
/// be used; `Ok(Err)` is the hook's refusal.
fn read_word(answer: &[u8], asked: &str) -> Result<Result<Admission, Refusal>, String> {
    let word: Verdict = if answer.iter().all(u8::is_ascii_whitespace) {
        Verdict::default()
    } else {
        serde_json::from_slice(answer).map_err(|e| format!("not the JSON of a hook answer: {e}"))?
    };
    if let Some(refuse) = word.refuse {
        let status = StatusCode::from_u16(refuse.status)
            .ok()
            .filter(StatusCode::is_client_error)
            .ok_or_else(|| format!("a refusal's status must be 4xx, not {}", refuse.status))?;
        return Ok(Err(Refusal::new(status, refuse.message)));
    }
    let name = match word.name {
        Some(name) => match crate::request::plain_name(&name) {
            Ok(plain) if plain == name => name,
            _ => return Err(format!("{name:?} is not a safe file name")),
        },
        None => asked.to_owned(),
    };
    let metadata = serde_json::Value::Object(word.metadata.unwrap_or_default()).to_string();
    Ok(Ok(Admission { name, metadata }))
}

/// Asks the landing-answer hook of `teller` what to answer for `landed`,
/// which has landed: its word, or `None` (logged) when it fails or takes
/// over [`ASK_TIMEOUT`]; the landing stands either way.
pub(crate) async fn word_on(teller: &Teller, landed: &Landed) -> Option<Word> {
    let event = Event {
        key: landed.id.clone(),
        landed: landed.clone(),
        attempts: 0,
    };
    let asking = Asking {
        key: Some(&event.key)
            .filter(|key| !key.is_empty())
            .map(String::as_str),
        answer: true,
    };
    let json = event.to_json();
    let why = match tokio::time::timeout(ASK_TIMEOUT, tell(teller, &json, asking)).await {
        Ok(Ok(word)) => return Some(word),
        Ok(Err(why)) => why.to_string(),
        Err(_) => format!("no answer in {ASK_TIMEOUT:?}"),
    };
    tracing::warn!(
        "the landing-answer hook gave no word on {:?} ({why}); the receiver's own answer goes out",
        landed.name
    );
    None
}

/// Delivers the store's due events to the hook of `teller`, for as long
/// as it runs: one at a time, claimed for [`LEASE`] so that no other
/// receiver sharing the store delivers them meanwhile.
pub(crate) async fn deliver(store: std::sync::Arc<dyn Store>, teller: Teller) {
    let mut idle = IDLE;
    loop {
        let events = match store.claim_events(AT_ONCE, LEASE).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!("cannot read the events to deliver: {e}");
                Vec::new()
            }
        };
        if events.is_empty() {
            // An outbox in a bucket costs a request a look: look less
            // often while it stays empty.
            tokio::time::sleep(idle).await;
            idle = (idle * 2).min(MAX_IDLE);
            continue;
        }
        idle = IDLE;
        // One after another: a command hook appending to a log writes
        // each event whole.
        for event in &events {
            deliver_one(&*store, &teller, event).await;
        }
    }
}

/// Tells the hook of `event` once, and records how that went.
async fn deliver_one(store: &dyn Store, teller: &Teller, event: &Event) {
    let json = event.to_json();
    let asking = Asking {
        key: Some(&event.key),
        answer: false,
    };
    let told = match tokio::time::timeout(DELIVERY_TIMEOUT, tell(teller, &json, asking)).await {
        Ok(told) => told,
        Err(_) => Err(format!("no answer in {DELIVERY_TIMEOUT:?}").into()),
    };
    let result = match told {
        Ok(_) => store.event_delivered(&event.key).await,
        Err(why) => {
            let wait = backoff(event.attempts);
            tracing::warn!(
                "the hook did not take the event of {:?} ({why}); trying again in {wait:?}",
                event.landed.name
            );
            store.event_failed(&event.key, wait).await
        }
    };
    if let Err(e) = result {
        tracing::warn!("cannot record the delivery of {:?}: {e}", event.key);
    }
}

/// How long to wait before trying an event again after `attempts` failed
/// deliveries: a second, doubling, at most [`MAX_BACKOFF`].
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(6)).min(MAX_BACKOFF)
}

/// Why a hook did not take what it was told.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Untold {
    /// It could not be reached, failed, or refused (asking again may do).
    Unreachable(String),
    /// It answered more than [`MAX_ANSWER`] bytes.
    Unusable(String),
}

impl std::fmt::Display for Untold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Untold::Unreachable(why) | Untold::Unusable(why) => f.write_str(why),
        }
    }
}

impl From<String> for Untold {
    fn from(why: String) -> Self {
        Untold::Unreachable(why)
    }
}

/// How a hook is asked: with what idempotency key, and whether its answer
/// is read (else a command's output goes where the receiver's goes).
#[derive(Debug, Clone, Copy)]
struct Asking<'a> {
    key: Option<&'a str>,
    answer: bool,
}

/// What a hook answered: a 2xx answer's body and its `Content-Type`, or a
/// command's standard output (its type then said by [`Word::content_type`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) body: Bytes,
    content_type: Option<String>,
}

impl Word {
    /// The type of the body: as the hook said it, else text when it is
    /// UTF-8, else bytes.
    pub(crate) fn content_type(&self) -> &str {
        match &self.content_type {
            Some(given) => given,
            None if std::str::from_utf8(&self.body).is_ok() => "text/plain; charset=utf-8",
            None => "application/octet-stream",
        }
    }
}

/// Hands `json` to the hook once: its answer (at most [`MAX_ANSWER`]
/// bytes, when asked for), or why it was not taken.
async fn tell(teller: &Teller, json: &str, asking: Asking<'_>) -> Result<Word, Untold> {
    match &teller.hook {
        Hook::Url(url) => {
            let mut request = http::Request::post(url.clone())
                .header(http::header::CONTENT_TYPE, "application/json");
            if let Some(key) = asking.key {
                request = request.header("idempotency-key", key);
            }
            let request = request
                .body(Full::new(Bytes::from(json.to_owned())))
                .map_err(|e| e.to_string())?;
            let client = teller
                .client
                .as_ref()
                .map_err(|e| Untold::from(e.clone()))?;
            let answer = client.request(request).await.map_err(|e| e.to_string())?;
            if !answer.status().is_success() {
                return Err(format!("{url} answered {}", answer.status()).into());
            }
            if !asking.answer {
                return Ok(Word::default());
            }
            let content_type = answer
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = Limited::new(answer.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| {
                    let why = format!("{url}: its answer: {e}");
                    match e.is::<http_body_util::LengthLimitError>() {
                        true => Untold::Unusable(format!("{why} (at most {MAX_ANSWER} bytes)")),
                        false => Untold::Unreachable(why),
                    }
                })?
                .to_bytes();
            Ok(Word { body, content_type })
        }
        Hook::Command(command) => {
            let mut child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .stdin(Stdio::piped())
                .stdout(match asking.answer {
                    true => Stdio::piped(),
                    false => Stdio::inherit(),
                })
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run {command:?}: {e}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                // A command that does not read its input is its own affair.
                let _ = stdin.write_all(json.as_bytes()).await;
            }
            let mut out = Vec::new();
            if let Some(stdout) = child.stdout.take() {
                let mut bounded = stdout.take(MAX_ANSWER as u64 + 1);
                bounded
                    .read_to_end(&mut out)
                    .await
                    .map_err(|e| format!("{command:?}: its output: {e}"))?;
            }
            if out.len() > MAX_ANSWER {
                return Err(Untold::Unusable(format!(
                    "{command:?} wrote more than {MAX_ANSWER} bytes"
                )));
            }
            let status = child.wait().await.map_err(|e| e.to_string())?;
            match status.success() {
                true => Ok(Word {
                    body: Bytes::from(out),
                    content_type: None,
                }),
                false => Err(format!("{command:?} exited with {status}").into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_are_read_from_their_flag() {
        assert!(matches!(
            Hook::parse("http://127.0.0.1:9/landed"),
            Ok(Hook::Url(_))
        ));
        assert_eq!(
            Hook::parse("cat >> log"),
            Ok(Hook::Command("cat >> log".into()))
        );
        assert!(matches!(
            Hook::parse("https://app/landed"),
            Ok(Hook::Url(_))
        ));
        assert!(Hook::parse("http://[::1/x").is_err());
        assert!(Hook::parse(" ").is_err());
    }

    #[test]
    fn the_before_creation_hooks_answer_is_read_strictly() {
        let word = |text: &str| read_word(text.as_bytes(), "a.pdf");
        let admitted = |name: &str, metadata: &str| {
            Ok(Ok(Admission {
                name: name.into(),
                metadata: metadata.into(),
            }))
        };
        assert_eq!(word(""), admitted("a.pdf", "{}"));
        assert_eq!(word(" {}\n"), admitted("a.pdf", "{}"));
        assert_eq!(
            word(r#"{"name":"claims/7.pdf","metadata":{"claim":7}}"#),
            admitted("claims/7.pdf", r#"{"claim":7}"#)
        );
        let refused = word(r#"{"refuse":{"status":451,"message":"not here"}}"#);
        let refusal = refused.unwrap().unwrap_err();
        assert_eq!(
            (refusal.status().as_u16(), refusal.message()),
            (451, "not here")
        );
        for bad in [
            "yes",
            r#"{"refuse":{"status":200,"message":"ok?"}}"#,
            r#"{"refuse":{"status":503,"message":"busy"}}"#,
            r#"{"name":"../x"}"#,
            r#"{"name":"a/../../x"}"#,
            r#"{"name":"/etc/passwd"}"#,
            r#"{"name":""}"#,
            r#"{"metadata":[1]}"#,
            r#"{"rename":"x"}"#,
        ] {
            assert!(word(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retries_back_off_to_a_minute() {
        let waits: Vec<u64> = [0, 1, 2, 5, 6, 30].map(|n| backoff(n).as_secs()).into();
        assert_eq!(waits, [1, 2, 4, 32, 60, 60]);
    }
}
