//! The mock upload endpoint on wiremock.

use std::time::Duration;

use fileuploader_wire::sync::lock;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fileuploader_wire::{Statement, STATEMENT_MEDIA_TYPE, UPLOAD_ID_QUERY};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

use crate::answers::{Answers, Ledger, Query};
use crate::faults::{Action, Fault};
use crate::record::Recorder;
use crate::recording::Recording;

/// A wiremock server that accepts block uploads on any path, records each
/// request, and answers as scripted: 200 after an optional delay, or the
/// action of the first matching [`Fault`].
///
/// # Examples
///
/// ```
/// use fileuploader_mock_server::{Action, Fault, MockUploadServer};
///
/// # #[tokio::main] async fn main() {
/// let server = MockUploadServer::builder()
///     .fault(Fault::block_once(7, 1024, Action::Status(503)))
///     .start()
///     .await;
/// assert!(server.url().starts_with("http://127.0.0.1:"));
/// assert!(server.recording().is_empty());
/// # }
/// ```
#[derive(Debug)]
pub struct MockUploadServer {
    server: MockServer,
    recording: Recording,
}

/// Sets up a [`MockUploadServer`].
#[derive(Debug, Default)]
#[must_use]
pub struct MockUploadServerBuilder {
    delay: Duration,
    faults: Vec<Fault>,
    answers: Option<Answers>,
}

impl MockUploadServerBuilder {
    /// Delays every answer by `delay`, so requests overlap observably.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Adds a scripted fault; the first matching one applies.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    /// Answers for its uploads as a receiver that keeps state does: status
    /// queries, discards and statements (see [`Answers`]). Without this the
    /// server answers only with statuses, as a receiver that cannot say what
    /// it holds.
    pub fn answers(mut self, answers: Answers) -> Self {
        self.answers = Some(answers);
        self
    }

    /// Starts the server on 127.0.0.1.
    pub async fn start(self) -> MockUploadServer {
        let ledger = self.answers.map(|a| Arc::new(Mutex::new(Ledger::new(a))));
        let recorder = Recorder {
            faults: self.faults.into(),
            delay: self.delay,
            ledger: ledger.clone(),
            ..Recorder::default()
        };
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(Responder(recorder.clone()))
            .named("fileuploader block endpoint")
            .mount(&server)
            .await;
        if let Some(ledger) = ledger {
            for verb in ["GET", "DELETE"] {
                Mock::given(method(verb))
                    .respond_with(QueryResponder(ledger.clone()))
                    .named("fileuploader status queries")
                    .mount(&server)
                    .await;
            }
        }
        MockUploadServer {
            server,
            recording: Recording(recorder),
        }
    }
}

impl MockUploadServer {
    /// A server answering 200 at once to everything.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A builder for delays and faults.
    pub fn builder() -> MockUploadServerBuilder {
        MockUploadServerBuilder::default()
    }

    /// The URL to upload to.
    pub fn url(&self) -> String {
        format!("{}/upload", self.server.uri())
    }

    /// What arrived so far.
    pub fn recording(&self) -> &Recording {
        &self.recording
    }

    /// The status queries and discards received, in order (only a server
    /// built with [`answers`](MockUploadServerBuilder::answers) takes them).
    pub fn queries(&self) -> Vec<Query> {
        self.recording
            .0
            .ledger
            .as_ref()
            .map(|l| lock(l).queries.clone())
            .unwrap_or_default()
    }
}

fn statement(template: ResponseTemplate, statement: &Statement) -> ResponseTemplate {
    template.set_body_raw(statement.to_json(), STATEMENT_MEDIA_TYPE)
}

struct QueryResponder(Arc<Mutex<Ledger>>);

impl Respond for QueryResponder {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let id = request
            .url
            .query_pairs()
            .find(|(k, _)| k == UPLOAD_ID_QUERY)
            .map(|(_, v)| v.into_owned());
        let Some(id) = id else {
            return ResponseTemplate::new(400);
        };
        let mut ledger = lock(&self.0);
        let answer = if request.method.as_str() == "DELETE" {
            ledger.discard(&id)
        } else {
            ledger.status(&id)
        };
        let status = match answer {
            Statement::Unknown { .. } => 404,
            _ => 200,
        };
        statement(ResponseTemplate::new(status), &answer)
    }
}

struct Responder(Recorder);

impl Respond for Responder {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let (action, _, stated) = self
            .0
            .record(request.headers.clone(), Bytes::from(request.body.clone()));
        let delay = self.0.delay;
        let template = match action {
            Action::Status(s) => ResponseTemplate::new(s).set_delay(delay),
            Action::RetryAfter(s, after) => ResponseTemplate::new(s)
                .insert_header("retry-after", after.as_str())
                .set_delay(delay),
            Action::Redirect(s, to) => ResponseTemplate::new(s)
                .insert_header("location", to.as_str())
                .set_delay(delay),
            Action::Delay(d) => ResponseTemplate::new(200).set_delay(delay + d),
            Action::Hold => ResponseTemplate::new(200).set_delay(Duration::from_secs(3600)),
        };
        match stated {
            Some(s) => statement(template, &s),
            None => template,
        }
    }
}
