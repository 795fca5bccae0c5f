//! Straight to an S3 bucket in multipart parts, on URLs a
//! Companion-compatible backend signs (Uppy's Companion, or the
//! fileuploader receiver's `/s3` routes): `POST multipart` creates the
//! upload, `GET multipart/ID/batch` signs the parts to send, each part is
//! a `PUT` to the bucket, `POST multipart/ID/complete` lands it.
//!
//! The bucket is the judge: a resumed run asks the backend which parts the
//! bucket holds (`GET multipart/ID`, S3's `ListParts`), and sends only the
//! others; the journal keeps the upload id and key to ask with. A part URL
//! that expired (403) or an upload the bucket no longer has (404) begins
//! the session again, signing afresh.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::{json, Value};

use crate::body::{BlockData, UploadBody};
use crate::error::{code, Error};
use crate::plan::Block;
use crate::protocol::{
    Constraints, Finish, Handle, Holding, Landing, Protocol, Receipt, SavedSession, UploadSession,
    UploadTarget, Verdict,
};
use crate::retry;
use crate::source::lock;
use crate::transport::{Request, Response, Transport};

/// S3's smallest part but the last.
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART: u64 = 5 << 30;
/// S3's most parts of one upload.
pub const MAX_PARTS: u64 = 10_000;
/// Parts signed per request.
const SIGN_BATCH: usize = 100;

/// The Companion protocol: the job's URL is the backend's (such as
/// `https://app.example/s3`); the bytes go to the bucket.
#[derive(Debug, Clone, Copy, Default)]
pub struct Companion;

/// The part size S3's rules allow for a file of `largest` bytes, from
/// `requested`: 5 MiB at least, large enough for 10 000 parts (in whole
/// MiB), 5 GiB at most.
pub fn part_size_for(requested: u64, largest: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let fits = largest.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    requested.max(MIN_PART).max(fits).min(MAX_PART)
}

impl Protocol for Companion {
    fn block_size_for(&self, requested: u64, largest: u64) -> u64 {
        part_size_for(requested, largest)
    }

    fn open(&self, target: &UploadTarget<'_>) -> Result<Box<dyn UploadSession>, Error> {
        let upload = match target.saved.map(|s| &s.handle) {
            Some(Handle::Multipart { upload_id, key }) => Some(Started {
                id: upload_id.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let mut headers = target.base_headers();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(Box::new(Session {
            base: target.url.to_string().trim_end_matches('/').to_owned(),
            headers,
            name: target.name.to_owned(),
            total: target.total,
            block_size: target.block_size,
            state: Mutex::new(State {
                upload,
                ..State::default()
            }),
        }))
    }
}

/// A multipart upload the backend created.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Started {
    id: String,
    key: String,
}

#[derive(Debug, Default)]
struct State {
    upload: Option<Started>,
    /// Signed part URLs, by block index.
    urls: HashMap<u64, Uri>,
    /// The bucket's tag for each part it holds, by block index.
    etags: BTreeMap<u64, String>,
}

#[derive(Debug)]
struct Session {
    /// The backend's URL, without a trailing `/`.
    base: String,
    /// For the backend's requests (the job's own, such as a token).
    headers: HeaderMap,
    name: String,
    total: u64,
    block_size: u64,
    state: Mutex<State>,
}

/// `s` as a URL query value.
fn escaped(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Session {
    fn blocks(&self) -> u64 {
        self.total.div_ceil(self.block_size).max(1)
    }

    /// Bytes `start..end` of block `index`.
    fn range(&self, index: u64) -> (u64, u64) {
        let start = index * self.block_size;
        (start, (start + self.block_size).min(self.total))
    }

    /// A request to the backend: `path` below its URL.
    async fn ask(
        &self,
        transport: &dyn Transport,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<(Response, Value), Error> {
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
        let response = transport.send(request).await?;
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

    async fn create(&self, transport: &dyn Transport) -> Result<Started, Error> {
        let kind = mime_guess::from_path(&self.name)
            .first_raw()
            .unwrap_or("application/octet-stream");
        let body = json!({
            "filename": self.name,
            "type": kind,
            "metadata": { "name": self.name, "type": kind },
            "size": self.total,
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
            (Some(id), Some(key)) => Ok(Started {
                id: id.to_owned(),
                key: key.to_owned(),
            }),
            _ => Err(self.violation(format!(
                "the creation was answered without uploadId and key: {created}"
            ))),
        }
    }

    /// The parts the bucket holds of `upload`, as block indexes and tags;
    /// `None` when the upload is gone (completed, aborted, expired).
    async fn held(
        &self,
        transport: &dyn Transport,
        upload: &Started,
    ) -> Result<Option<BTreeMap<u64, String>>, Error> {
        let path = format!("/multipart/{}?key={}", upload.id, escaped(&upload.key));
        let listed = match self
            .ask(transport, Method::GET, &path, None, "the list of parts")
            .await
        {
            Ok((_, listed)) => listed,
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => return Ok(None),
            Err(e) => return Err(e),
        };
        let parts = listed
            .as_array()
            .ok_or_else(|| self.violation(format!("the list of parts is not a list: {listed}")))?;
        let mut held = BTreeMap::new();
        for part in parts {
            let (Some(number), Some(etag), Some(size)) = (
                part["PartNumber"].as_u64(),
                part["ETag"].as_str(),
                part["Size"].as_u64(),
            ) else {
                return Err(self.violation(format!(
                    "a listed part lacks its number, tag or size: {part}"
                )));
            };
            // A part of another size than this run's block there is sent
            // again: the plan, not the bucket, says where parts start.
            let index = number.wrapping_sub(1);
            if index < self.blocks() {
                let (start, end) = self.range(index);
                if size == end - start {
                    held.insert(index, etag.to_owned());
                }
            }
        }
        Ok(Some(held))
    }

    /// Signs the parts of block indexes `wanted`.
    async fn sign(
        &self,
        transport: &dyn Transport,
        upload: &Started,
        wanted: &[u64],
    ) -> Result<HashMap<u64, Uri>, Error> {
        let mut urls = HashMap::new();
        for batch in wanted.chunks(SIGN_BATCH) {
            let numbers: Vec<String> = batch.iter().map(|i| (i + 1).to_string()).collect();
            let path = format!(
                "/multipart/{}/batch?key={}&partNumbers={}",
                upload.id,
                escaped(&upload.key),
                numbers.join(",")
            );
            let (_, signed) = self
                .ask(transport, Method::GET, &path, None, "the part signatures")
                .await?;
            for (index, number) in batch.iter().zip(&numbers) {
                let url = signed["presignedUrls"][number]
                    .as_str()
                    .and_then(|u| u.parse::<Uri>().ok())
                    .ok_or_else(|| {
                        self.violation(format!("no URL for part {number} in {signed}"))
                    })?;
                urls.insert(*index, url);
            }
        }
        Ok(urls)
    }

    /// The one block of an empty file: a look at the upload's parts on
    /// the backend, which completes it with none.
    fn look(&self) -> Result<Request, Error> {
        let upload = lock(&self.state).upload.clone();
        let upload = upload.ok_or_else(|| self.violation("no upload begun".into()))?;
        let path = format!(
            "{}/multipart/{}?key={}",
            self.base,
            upload.id,
            escaped(&upload.key)
        );
        let mut request = Request::new(UploadBody::new());
        *request.uri_mut() = path
            .parse()
            .map_err(|e| Error::invalid(code::INVALID_URL, format!("cannot ask at {path}: {e}")))?;
        *request.headers_mut() = self.headers.clone();
        request.headers_mut().remove(CONTENT_TYPE);
        Ok(request)
    }

    fn violation(&self, what: String) -> Error {
        Error::new(
            crate::ErrorKind::Status,
            code::PROTOCOL_VIOLATION,
            format!(
                "the signing backend broke the Companion protocol for {:?}: {what}",
                self.name
            ),
        )
    }

    fn context(&self, block: &Block) -> String {
        format!(
            " for part {} of {} of {:?}",
            block.index + 1,
            block.count,
            self.name
        )
    }
}

#[async_trait]
impl UploadSession for Session {
    fn constraints(&self) -> Constraints {
        Constraints {
            min_block_size: MIN_PART,
            max_block_size: MAX_PART,
            max_blocks: MAX_PARTS,
            ..Constraints::default()
        }
    }

    async fn begin(&self, transport: &dyn Transport) -> Result<Holding, Error> {
        let known = lock(&self.state).upload.clone();
        let (upload, held) = match known {
            Some(upload) => match self.held(transport, &upload).await? {
                Some(held) => (upload, held),
                None => (self.create(transport).await?, BTreeMap::new()),
            },
            None => (self.create(transport).await?, BTreeMap::new()),
        };
        // An empty file sends no part (not every bucket takes an empty
        // one): its one block only looks at the upload, see `look`.
        let wanted: Vec<u64> = (0..self.blocks())
            .filter(|i| !held.contains_key(i) && self.total > 0)
            .collect();
        let urls = self.sign(transport, &upload, &wanted).await?;
        let ranges = held.keys().map(|&i| self.range(i)).collect();
        let mut state = lock(&self.state);
        state.upload = Some(upload);
        state.urls = urls;
        state.etags = held;
        Ok(Holding::Ranges(ranges))
    }

    fn encode(&self, block: &Block, data: BlockData) -> Result<Request, Error> {
        if self.total == 0 {
            return self.look();
        }
        let url = lock(&self.state).urls.get(&block.index).cloned();
        let url = url.ok_or_else(|| {
            Error::new(
                crate::ErrorKind::Run,
                code::FAILED,
                format!(
                    "part {} of {:?} was never signed",
                    block.index + 1,
                    self.name
                ),
            )
        })?;
        let mut body = UploadBody::new();
        body.push_block(data);
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

    fn judge(&self, block: &Block, response: &Response) -> Verdict {
        let status = response.status();
        if status.is_success() && self.total == 0 {
            return Verdict::Ack(Receipt::default());
        }
        if status.is_success() {
            let etag = response.headers().get(ETAG).and_then(|v| v.to_str().ok());
            return match etag {
                Some(etag) => {
                    lock(&self.state).etags.insert(block.index, etag.to_owned());
                    Verdict::Ack(Receipt(Some(etag.to_owned())))
                }
                None => Verdict::Fail(self.violation(format!(
                    "the bucket answered part {} with no ETag",
                    block.index + 1
                ))),
            };
        }
        let error = crate::error::status_error(response, &self.context(block));
        match status {
            // The URL expired, or the upload is gone: sign afresh.
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => Verdict::Resync(error),
            _ if retry::is_retryable_status(status) => {
                let after = error.retry_after();
                Verdict::Retry { error, after }
            }
            _ => Verdict::Fail(error),
        }
    }

    fn idempotent(&self, _block: &Block) -> bool {
        // A part sent again replaces itself.
        true
    }

    async fn finish(&self, transport: &dyn Transport) -> Result<Finish, Error> {
        let (upload, etags) = {
            let state = lock(&self.state);
            (state.upload.clone(), state.etags.clone())
        };
        let upload = upload.ok_or_else(|| self.violation("no upload to complete".into()))?;
        let parts: Vec<Value> = match self.total {
            // An empty file: no part (not every bucket takes an empty one).
            0 => Vec::new(),
            _ => (0..self.blocks())
                .map(|i| match etags.get(&i) {
                    Some(etag) => Ok(json!({ "PartNumber": i + 1, "ETag": etag })),
                    None => Err(i),
                })
                .collect::<Result<_, _>>()
                .map_err(|i| self.violation(format!("part {} was never acknowledged", i + 1)))?,
        };
        let path = format!(
            "/multipart/{}/complete?key={}",
            upload.id,
            escaped(&upload.key)
        );
        let (response, done) = self
            .ask(
                transport,
                Method::POST,
                &path,
                Some(json!({ "parts": parts })),
                "the completion",
            )
            .await?;
        let name = done["name"]
            .as_str()
            .or_else(|| done["key"].as_str())
            .map(str::to_owned);
        Ok(Finish::Landed(
            Landing::confirmed(name, None, None).answered(&response),
        ))
    }

    async fn abort(&self, transport: &dyn Transport) -> Result<(), Error> {
        let upload = lock(&self.state).upload.clone();
        if let Some(upload) = upload {
            let path = format!("/multipart/{}?key={}", upload.id, escaped(&upload.key));
            self.ask(transport, Method::DELETE, &path, None, "the abort")
                .await?;
        }
        Ok(())
    }

    fn saved(&self) -> SavedSession {
        let state = lock(&self.state);
        let handle = match &state.upload {
            Some(upload) => Handle::Multipart {
                upload_id: upload.id.clone(),
                key: upload.key.clone(),
            },
            None => Handle::Id { id: String::new() },
        };
        SavedSession {
            handle,
            receipts: state.etags.iter().map(|(&i, e)| (i, e.clone())).collect(),
        }
    }

    fn location(&self) -> Option<String> {
        lock(&self.state).upload.as_ref().map(|u| u.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_to_s3s_rules() {
        const MIB: u64 = 1 << 20;
        assert_eq!(part_size_for(1 << 20, 10 * MIB), MIN_PART, "5 MiB at least");
        assert_eq!(
            part_size_for(8 * MIB, 10 * MIB),
            8 * MIB,
            "a larger one is kept"
        );
        // 100 GiB in 10 000 parts: 10.24 MiB each, rounded up to 11 MiB.
        assert_eq!(part_size_for(8 * MIB, 100 << 30), 11 * MIB);
        assert_eq!(part_size_for(8 * MIB, 5 << 40), 525 * MIB);
        assert_eq!(part_size_for(8 * MIB, 100 << 40), MAX_PART, "5 GiB at most");
        assert_eq!(part_size_for(MIN_PART, 0), MIN_PART);
    }
}
