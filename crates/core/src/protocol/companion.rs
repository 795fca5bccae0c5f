//! The Companion contract: S3 multipart uploads signed by a backend over
//! HTTP (Uppy's Companion, or the fileuploader receiver's `/s3` routes).
//! `POST multipart` creates the upload, `GET multipart/ID/batch` signs the
//! parts to send, each part is a `PUT` straight to the bucket, `GET
//! multipart/ID` lists what the bucket holds, `POST multipart/ID/complete`
//! lands it, `DELETE multipart/ID` aborts it. The session is
//! [`Parts`](super::Parts)'.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::{json, Value};

use crate::body::UploadBody;
use crate::error::{code, Error};
use crate::protocol::parts::{violation, Completion, HeldPart, Parts, PartsBackend, PartsUpload};
use crate::protocol::{Landing, Protocol, UploadSession, UploadTarget};
use crate::source::lock;
use crate::transport::{Request, Response, Transport};

/// Parts signed per request.
const SIGN_BATCH: usize = 100;

/// The Companion protocol: the job's URL is the backend's (such as
/// `https://app.example/s3`); the bytes go to the bucket.
#[derive(Debug, Clone, Copy, Default)]
pub struct Companion;

impl Protocol for Companion {
    fn block_size_for(&self, requested: u64, largest: u64) -> u64 {
        super::parts::part_size_for(requested, largest)
    }

    fn open(&self, target: &UploadTarget<'_>) -> Result<Box<dyn UploadSession>, Error> {
        let mut headers = target.base_headers();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let backend = Backend {
            base: target.url.to_string().trim_end_matches('/').to_owned(),
            headers,
            name: target.name.to_owned(),
            urls: Mutex::default(),
        };
        Parts::new(Arc::new(backend)).open(target)
    }
}

/// One source's backend: its URL and headers, and the part URLs it
/// signed.
#[derive(Debug)]
struct Backend {
    /// The backend's URL, without a trailing `/`.
    base: String,
    /// For the backend's requests (the job's own, such as a token).
    headers: HeaderMap,
    name: String,
    /// Signed part URLs, by part number.
    urls: Mutex<HashMap<u32, Uri>>,
}

/// `s` as a URL query value.
fn escaped(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Backend {
    /// `path` below the backend's URL, naming `upload`.
    fn path(&self, upload: &PartsUpload, rest: &str) -> String {
        format!(
            "/multipart/{}{rest}?key={}",
            upload.id,
            escaped(&upload.key)
        )
    }

    fn request(&self, method: Method, path: &str, body: Option<Value>) -> Result<Request, Error> {
        let uri: Uri = format!("{}{path}", self.base).parse().map_err(|e| {
            Error::invalid(
                code::INVALID_URL,
                format!("cannot ask the signing backend at {}{path}: {e}", self.base),
            )
        })?;
        let mut payload = UploadBody::new();
        let mut headers = self.headers.clone();
        if let Some(body) = body {
            payload.push(Bytes::from(body.to_string()));
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(payload.len()));
        let mut request = Request::new(payload);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Asks the backend; its answer, and the JSON in it.
    async fn ask(
        &self,
        transport: &dyn Transport,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<(Response, Value), Error> {
        let response = transport.send(self.request(method, path, body)?).await?;
        if !response.status().is_success() {
            return Err(crate::error::status_error(
                &response,
                &format!(" to {what} for {:?}", self.name),
            ));
        }
        let value = serde_json::from_slice(response.body()).map_err(|e| {
            Error::new(
                crate::ErrorKind::Status,
                code::PROTOCOL_VIOLATION,
                format!(
                    "the signing backend's answer to {what} for {:?} is not JSON ({e}); is the URL a Companion backend's (such as https://host/s3)?",
                    self.name
                ),
            )
        })?;
        Ok((response, value))
    }
}

#[async_trait]
impl PartsBackend for Backend {
    async fn create(
        &self,
        transport: &dyn Transport,
        name: &str,
        total: u64,
    ) -> Result<PartsUpload, Error> {
        let kind = mime_guess::from_path(name)
            .first_raw()
            .unwrap_or("application/octet-stream");
        let body = json!({
            "filename": name,
            "type": kind,
            "metadata": { "name": name, "type": kind },
            "size": total,
        });
        let (_, created) = self
            .ask(
                transport,
                Method::POST,
                "/multipart",
                Some(body),
                "the creation",
            )
            .await?;
        match (created["uploadId"].as_str(), created["key"].as_str()) {
            (Some(id), Some(key)) => Ok(PartsUpload {
                id: id.to_owned(),
                key: key.to_owned(),
            }),
            _ => Err(violation(
                name,
                format!("the creation was answered without uploadId and key: {created}"),
            )),
        }
    }

    async fn held(
        &self,
        transport: &dyn Transport,
        upload: &PartsUpload,
    ) -> Result<Option<Vec<HeldPart>>, Error> {
        let path = self.path(upload, "");
        let listed = match self
            .ask(transport, Method::GET, &path, None, "the list of parts")
            .await
        {
            Ok((_, listed)) => listed,
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => return Ok(None),
            Err(e) => return Err(e),
        };
        let parts = listed.as_array().ok_or_else(|| {
            violation(
                &self.name,
                format!("the list of parts is not a list: {listed}"),
            )
        })?;
        parts
            .iter()
            .map(|part| {
                match (
                    part["PartNumber"]
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok()),
                    part["ETag"].as_str(),
                    part["Size"].as_u64(),
                ) {
                    (Some(number), Some(etag), Some(size)) => Ok(HeldPart {
                        number,
                        etag: etag.to_owned(),
                        size,
                    }),
                    _ => Err(violation(
                        &self.name,
                        format!("a listed part lacks its number, tag or size: {part}"),
                    )),
                }
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    async fn prepare(
        &self,
        transport: &dyn Transport,
        upload: &PartsUpload,
        numbers: &[u32],
    ) -> Result<(), Error> {
        let mut urls = HashMap::new();
        for batch in numbers.chunks(SIGN_BATCH) {
            let list: Vec<String> = batch.iter().map(u32::to_string).collect();
            let path = format!(
                "/multipart/{}/batch?key={}&partNumbers={}",
                upload.id,
                escaped(&upload.key),
                list.join(",")
            );
            let (_, signed) = self
                .ask(transport, Method::GET, &path, None, "the part signatures")
                .await?;
            for (number, text) in batch.iter().zip(&list) {
                let url = signed["presignedUrls"][text]
                    .as_str()
                    .and_then(|u| u.parse::<Uri>().ok())
                    .ok_or_else(|| {
                        violation(&self.name, format!("no URL for part {text} in {signed}"))
                    })?;
                urls.insert(*number, url);
            }
        }
        *lock(&self.urls) = urls;
        Ok(())
    }

    fn part(
        &self,
        _upload: &PartsUpload,
        number: u32,
        body: UploadBody,
        _crc32c: Option<u32>,
    ) -> Result<Request, Error> {
        let url = lock(&self.urls)
            .get(&number)
            .cloned()
            .ok_or_else(|| violation(&self.name, format!("part {number} was never signed")))?;
        let mut headers = HeaderMap::new();
        // Only what the signature covers: the job's headers (a token for
        // the backend) are not the bucket's business.
        if let Some(agent) = self.headers.get(http::header::USER_AGENT) {
            headers.insert(http::header::USER_AGENT, agent.clone());
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut request = Request::new(body);
        *request.method_mut() = Method::PUT;
        *request.uri_mut() = url;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// A look at the upload's parts on the backend, which completes it
    /// with none.
    fn empty(&self, upload: &PartsUpload) -> Result<Request, Error> {
        let mut request = self.request(Method::GET, &self.path(upload, ""), None)?;
        request.headers_mut().remove(CONTENT_TYPE);
        Ok(request)
    }

    async fn complete(
        &self,
        transport: &dyn Transport,
        upload: &PartsUpload,
        parts: &[(u32, String)],
        _total: u64,
    ) -> Result<Completion, Error> {
        let parts: Vec<Value> = parts
            .iter()
            .map(|(number, etag)| json!({ "PartNumber": number, "ETag": etag }))
            .collect();
        let path = self.path(upload, "/complete");
        let asked = self
            .ask(
                transport,
                Method::POST,
                &path,
                Some(json!({ "parts": parts })),
                "the completion",
            )
            .await;
        let (response, done) = match asked {
            // The bucket's own refusal of parts it lists, passed on: the
            // parts go again, in a new upload.
            Err(e)
                if e.status() == Some(StatusCode::BAD_REQUEST)
                    && e.message().contains("InvalidPart") =>
            {
                return Ok(Completion::PartsRefused(e))
            }
            asked => asked?,
        };
        // Our receiver names the landed file; Companion, the key.
        let name = done["name"]
            .as_str()
            .or_else(|| done["key"].as_str())
            .map(str::to_owned);
        Ok(Completion::Landed(
            Landing::confirmed(name, None, None).answered(&response),
        ))
    }

    async fn abort(&self, transport: &dyn Transport, upload: &PartsUpload) -> Result<(), Error> {
        self.ask(
            transport,
            Method::DELETE,
            &self.path(upload, ""),
            None,
            "the abort",
        )
        .await
        .map(|_| ())
    }
}
