//! Every request's first stop: method overrides, credentials, admission,
//! then the door of the protocol it speaks; CORS and `Retry-After` on the
//! way out.

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::linger;
use crate::uploads::{Terms, Via};
use crate::Receiver;

impl Receiver {
    /// Handles one request, in whichever protocol it speaks: the segmented
    /// multipart convention (`POST` uploads, `GET ?upload_id=` asks what the
    /// receiver holds of an upload, `DELETE ?upload_id=` discards it), tus
    /// 1.0 (requests with `Tus-Resumable`, and `HEAD`/`PATCH`), or the IETF
    /// draft (requests with `Upload-Draft-Interop-Version`); `OPTIONS` says
    /// what it speaks. Mount it in any hyper-compatible service, on a tokio
    /// runtime with its time driver enabled (the idle timeout needs it).
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // A body left unread by an early answer is drained, so the client
        // hears the answer rather than a reset.
        let mut request = request.map(linger::Lingering::new);
        let origin = request.headers().get(header::ORIGIN).cloned();
        let preflight = *request.method() == Method::OPTIONS;
        let head = *request.method() == Method::HEAD;
        let override_to = (*request.method() == Method::POST)
            .then(|| request.headers().get("x-http-method-override"))
            .flatten()
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok());
        if let Some(method) = override_to {
            *request.method_mut() = method;
        }
        let mut response = if preflight {
            let dialect = crate::doors::resumable::version_of(request.headers(), request.method())
                .and_then(Result::ok);
            crate::doors::resumable::options(self.upload_limit(None), dialect)
                .into_response(Some(fileuploader_wire::resumable::Version::Tus))
        } else {
            let grant = self.access.check(request.headers(), request.uri());
            let admitted = grant
                .as_ref()
                .ok()
                .map(|g| self.requests.admit(&g.owner, &self.limits));
            let (grant, _admitted) = match admitted {
                Some(Err(busy)) => (Err(busy), None),
                Some(Ok(admitted)) => (grant, Some(admitted)),
                None => (grant, None),
            };
            let direct = self.is_companion(request.uri().path());
            match crate::doors::resumable::version_of(request.headers(), request.method()) {
                _ if direct => self.companion(request, grant).await,
                Some(Ok(dialect)) => self.resumable_response(request, grant, dialect).await,
                Some(Err(refusal)) => {
                    crate::doors::resumable::Answer::refused(&refusal).into_response(None)
                }
                None => self.segmented(request, grant).await,
            }
        };
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            // Busy or waiting on its store: the client may come back soon.
            response
                .headers_mut()
                .entry(header::RETRY_AFTER)
                .or_insert(header::HeaderValue::from_static("1"));
        }
        if head {
            // No answer to HEAD has a body: HTTP/2 peers reset a stream
            // whose HEAD answer carries one (a refusal's message).
            response.headers_mut().remove(header::CONTENT_LENGTH);
            *response.body_mut() = Full::default();
        }
        self.cors
            .decorate(origin.as_ref(), preflight, response.headers_mut());
        response
    }

    /// How a request over `via` lands what it completes.
    pub(crate) fn terms(&self, via: impl Into<Via>) -> Terms<'_> {
        Terms {
            policy: self.on_conflict,
            via: via.into(),
            answerer: self.landing_answer.as_ref(),
            told: &self.told,
        }
    }
}
