//! The mock upload endpoint on wiremock.

use std::time::Duration;

use bytes::Bytes;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

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

    /// Starts the server on 127.0.0.1.
    pub async fn start(self) -> MockUploadServer {
        let recorder = Recorder {
            faults: self.faults.into(),
            delay: self.delay,
            ..Recorder::default()
        };
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(Responder(recorder.clone()))
            .named("fileuploader block endpoint")
            .mount(&server)
            .await;
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
}

struct Responder(Recorder);

impl Respond for Responder {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let (action, _) = self
            .0
            .record(request.headers.clone(), Bytes::from(request.body.clone()));
        let delay = self.0.delay;
        match action {
            Action::Status(s) => ResponseTemplate::new(s).set_delay(delay),
            Action::RetryAfter(s, after) => ResponseTemplate::new(s)
                .insert_header("retry-after", after.as_str())
                .set_delay(delay),
            Action::Delay(d) => ResponseTemplate::new(200).set_delay(delay + d),
            Action::Hold => ResponseTemplate::new(200).set_delay(Duration::from_secs(3600)),
        }
    }
}
