//! Our client straight to a bucket: the [`PartsBackend`] of
//! `fileuploader upload --protocol s3 s3://BUCKET/KEY`, with the keys the
//! client holds (from the same places as the receiver's: the AWS SDK's).
//!
//! The multipart upload is created, listed, completed and aborted through
//! the SDK; each part is a `PUT` the client's transport sends (so progress,
//! rate limits and retries are the core's), signed here with Signature
//! Version 4 over its `x-amz-checksum-crc32c`, which the bucket checks.
//! The upload asks for a full-object CRC32C at creation, names each part's
//! at completion with the whole file's (combined from the parts'), which
//! the bucket checks; success is the object there with the expected length
//! and, where the bucket keeps it, that CRC32C (a `HEAD` after completion).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::ProvideCredentials as _;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
};
use aws_sdk_s3::Client;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use fileuploader_core::protocol::parts::{Completion, HeldPart, PartsBackend, PartsUpload};
use fileuploader_core::protocol::Landing;
use fileuploader_core::UploadBody;
use fileuploader_core::{code, Error, ErrorKind};
use fileuploader_core::{Request, Transport, TransportError, TransportErrorKind};
use fileuploader_wire::sync::lock;
use http::header::USER_AGENT;
use http::{HeaderValue, Method, StatusCode};

use crate::sigv4::{sign_s3, Signed};
use crate::{bucket_url, escape_key, missing, ConnectError, S3Options, Sdk};

/// `s3://BUCKET/KEY`: where a file goes. A key that ends in `/` (or none)
/// is a folder: the file's name follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    /// The bucket.
    pub bucket: String,
    /// The object's key, or a folder's ending in `/`.
    pub key: String,
}

impl std::str::FromStr for S3Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (bucket, key) = crate::split_s3(s, "s3://BUCKET/KEY address")?;
        Ok(S3Target {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

impl S3Target {
    /// The key a file named `name` lands at.
    pub fn key_for(&self, name: &str) -> String {
        if self.key.is_empty() || self.key.ends_with('/') {
            format!("{}{name}", self.key)
        } else {
            self.key.clone()
        }
    }
}

/// The bucket as our client's backend: see the [module](self).
#[derive(Debug)]
pub struct BucketParts {
    client: Client,
    target: S3Target,
    /// The bucket's address, for the parts' URLs.
    url: String,
    region: String,
    credentials: aws_sdk_s3::config::SharedCredentialsProvider,
    /// The credentials as last resolved, for signing parts.
    resolved: Mutex<Option<aws_credential_types::Credentials>>,
    /// Each part's CRC32C and length, by number, for the completion.
    crcs: Mutex<HashMap<u32, (u32, u64)>>,
}

/// The SDK's failure to `what`, as the run judges it: a bucket that did
/// not answer is a transport's failure, an answer is its status (so an
/// overloaded bucket is asked again, a refusal is not).
fn failed<E: std::error::Error + ProvideErrorMetadata + 'static>(
    what: &str,
    e: &SdkError<E, HttpResponse>,
) -> Error {
    let said = e
        .as_service_error()
        .map(|s| {
            format!(
                "{}: {}",
                s.code().unwrap_or("an error"),
                s.message().unwrap_or_default()
            )
        })
        .unwrap_or_else(|| DisplayErrorContext(e).to_string());
    let transport = |kind| Error::from(TransportError::new(kind, format!("{what}: {said}")));
    match (e, e.raw_response()) {
        (SdkError::TimeoutError(_), _) => transport(TransportErrorKind::Timeout),
        (SdkError::DispatchFailure(_), _) => transport(TransportErrorKind::Reset),
        (_, Some(raw)) => match StatusCode::from_u16(raw.status().as_u16()) {
            Ok(status) => Error::from_status(status, &format!(" to {what}: {said}")),
            Err(_) => Error::new(ErrorKind::Status, code::FAILED, format!("{what}: {said}")),
        },
        _ => Error::new(
            ErrorKind::Status,
            code::UPLOAD_FAILED,
            format!("{what}: the bucket refused: {said}"),
        ),
    }
}

fn crc_text(crc: u32) -> String {
    STANDARD.encode(crc.to_be_bytes())
}

impl BucketParts {
    /// The backend for files going to `target`, reached as `options` say;
    /// checks that the bucket answers.
    ///
    /// # Errors
    ///
    /// When the bucket cannot be reached, does not exist, refuses the
    /// credentials, or no credentials are found.
    pub async fn connect(target: &S3Target, options: &S3Options) -> Result<Self, ConnectError> {
        let sdk = Sdk::new(options).await;
        let client = sdk.control();
        let region = client
            .config()
            .region()
            .map_or_else(|| "us-east-1".to_owned(), |r| r.to_string());
        let credentials = sdk.credentials.ok_or_else(|| {
            ConnectError("no credentials for the bucket: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE".into())
        })?;
        client
            .head_bucket()
            .bucket(&target.bucket)
            .send()
            .await
            .map_err(|e| {
                ConnectError(format!(
                    "cannot use bucket {}: {}",
                    target.bucket,
                    DisplayErrorContext(&e)
                ))
            })?;
        Ok(BucketParts {
            url: bucket_url(options.endpoint.as_deref(), &target.bucket, &region),
            client,
            target: target.clone(),
            region,
            credentials,
            resolved: Mutex::default(),
            crcs: Mutex::default(),
        })
    }

    /// The `http(s)://` address of `key`, for the job's URL.
    pub fn object_url(&self, key: &str) -> String {
        format!("{}/{}", self.url, escape_key(key))
    }

    /// A `PUT` of `body` to `key` (with `query`), its CRC32C in a header,
    /// signed with the credentials last resolved.
    fn signed_put(
        &self,
        key: &str,
        query: &str,
        body: UploadBody,
        crc32c: u32,
    ) -> Result<Request, Error> {
        let unsigned = |why: String| {
            Error::new(
                ErrorKind::Run,
                code::FAILED,
                format!("cannot sign a part: {why}"),
            )
        };
        let credentials = lock(&self.resolved)
            .clone()
            .ok_or_else(|| unsigned("no credentials resolved".into()))?;
        let uri = format!("{}{query}", self.object_url(key));
        let length = body.len().to_string();
        let checksum = crc_text(crc32c);
        let headers = [
            ("content-length", length.as_str()),
            ("x-amz-checksum-crc32c", checksum.as_str()),
        ];
        let Signed::Headers(signature) =
            sign_s3(credentials, &self.region, "PUT", &uri, &headers, None).map_err(unsigned)?
        else {
            return Err(unsigned("no signature headers".into()));
        };
        let mut request = Request::new(body);
        *request.method_mut() = Method::PUT;
        *request.uri_mut() = uri.parse().map_err(|e| unsigned(format!("{uri}: {e}")))?;
        let out = request.headers_mut();
        out.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("fileuploader/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in headers
            .iter()
            .copied()
            .chain(signature.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| unsigned(e.to_string()))?;
            out.insert(
                name,
                HeaderValue::from_str(value).map_err(|e| unsigned(e.to_string()))?,
            );
        }
        Ok(request)
    }
}

#[async_trait]
impl PartsBackend for BucketParts {
    async fn create(
        &self,
        _transport: &dyn Transport,
        name: &str,
        _total: u64,
    ) -> Result<PartsUpload, Error> {
        let key = self.target.key_for(name);
        let kind = mime_guess::from_path(name).first_raw();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .checksum_type(ChecksumType::FullObject)
            .set_content_type(kind.map(str::to_owned))
            .send()
            .await
            .map_err(|e| failed("begin the multipart upload", &e))?;
        let id = created.upload_id().ok_or_else(|| {
            Error::new(
                ErrorKind::Status,
                code::PROTOCOL_VIOLATION,
                "the bucket began a multipart upload without an id",
            )
        })?;
        lock(&self.crcs).clear();
        Ok(PartsUpload {
            id: id.to_owned(),
            key,
        })
    }

    async fn held(
        &self,
        _transport: &dyn Transport,
        upload: &PartsUpload,
    ) -> Result<Option<Vec<HeldPart>>, Error> {
        let mut held = Vec::new();
        let mut crcs = HashMap::new();
        let mut marker = None;
        loop {
            let page = self
                .client
                .list_parts()
                .bucket(&self.target.bucket)
                .key(&upload.key)
                .upload_id(&upload.id)
                .set_part_number_marker(marker)
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) if missing(&e) || e.code() == Some("NoSuchUpload") => return Ok(None),
                Err(e) => return Err(failed("list the parts", &e)),
            };
            for part in page.parts() {
                let number = part.part_number().unwrap_or_default().max(0) as u32;
                let crc = part
                    .checksum_crc32_c()
                    .and_then(|c| STANDARD.decode(c).ok())
                    .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
                    .map(u32::from_be_bytes);
                // A part without its CRC32C cannot be named at completion:
                // it is sent again.
                if let Some(crc) = crc {
                    let size = part.size().unwrap_or_default().max(0) as u64;
                    crcs.insert(number, (crc, size));
                    held.push(HeldPart {
                        number,
                        etag: part.e_tag().unwrap_or_default().to_owned(),
                        size,
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            marker = page.next_part_number_marker().map(str::to_owned);
        }
        *lock(&self.crcs) = crcs;
        Ok(Some(held))
    }

    async fn prepare(
        &self,
        _transport: &dyn Transport,
        _upload: &PartsUpload,
        _numbers: &[u32],
    ) -> Result<(), Error> {
        let credentials = self.credentials.provide_credentials().await.map_err(|e| {
            Error::new(
                ErrorKind::Run,
                code::ACCESS_DENIED,
                format!("no credentials for the bucket: {e}"),
            )
        })?;
        *lock(&self.resolved) = Some(credentials);
        Ok(())
    }

    fn digests_parts(&self) -> bool {
        true
    }

    fn part(
        &self,
        upload: &PartsUpload,
        number: u32,
        body: UploadBody,
        crc32c: Option<u32>,
    ) -> Result<Request, Error> {
        let crc32c = crc32c.ok_or_else(|| {
            Error::new(
                ErrorKind::Run,
                code::FAILED,
                "a part came without its CRC32C",
            )
        })?;
        lock(&self.crcs).insert(number, (crc32c, body.len()));
        let query = format!(
            "?partNumber={number}&uploadId={}",
            crate::direct::query_value(&upload.id)
        );
        self.signed_put(&upload.key, &query, body, crc32c)
    }

    fn empty(&self, upload: &PartsUpload) -> Result<Request, Error> {
        self.signed_put(&upload.key, "", UploadBody::new(), 0)
    }

    async fn complete(
        &self,
        _transport: &dyn Transport,
        upload: &PartsUpload,
        parts: &[(u32, String)],
        total: u64,
    ) -> Result<Completion, Error> {
        // The whole file's CRC32C, from the parts' in order.
        let whole = if parts.is_empty() {
            // The empty object is in place: its multipart upload goes.
            self.abort(_transport, upload).await?;
            0
        } else {
            let crcs = lock(&self.crcs).clone();
            let mut whole = 0;
            let mut completed = Vec::with_capacity(parts.len());
            for (number, etag) in parts {
                let &(crc, size) = crcs.get(number).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Run,
                        code::FAILED,
                        format!("part {number} is to be completed without its CRC32C"),
                    )
                })?;
                whole = crc32c::crc32c_combine(whole, crc, size as usize);
                completed.push(
                    CompletedPart::builder()
                        .part_number(*number as i32)
                        .e_tag(etag)
                        .checksum_crc32_c(crc_text(crc))
                        .build(),
                );
            }
            let completed = self
                .client
                .complete_multipart_upload()
                .bucket(&self.target.bucket)
                .key(&upload.key)
                .upload_id(&upload.id)
                .checksum_crc32_c(crc_text(whole))
                .checksum_type(ChecksumType::FullObject)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(completed))
                        .build(),
                )
                .send()
                .await;
            match completed {
                Ok(_) => {}
                // Listed, yet refused: a part of the same number is still
                // being written by an attempt given up on (Garage 2.5
                // completes from the newest attempt, finished or not), or
                // an attempt cut off just after the part was recorded
                // (Garage 2.5's clean-up of it drops the part's bytes).
                Err(e) if e.code() == Some("InvalidPart") => {
                    return Ok(Completion::PartsRefused(failed(
                        "complete the multipart upload",
                        &e,
                    )))
                }
                Err(e) => return Err(failed("complete the multipart upload", &e)),
            }
            whole
        };
        let head = self
            .client
            .head_object()
            .bucket(&self.target.bucket)
            .key(&upload.key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| failed("look at the landed object", &e))?;
        let length = head.content_length().unwrap_or_default().max(0) as u64;
        if length != total {
            return Err(Error::new(
                ErrorKind::Status,
                code::PARTIAL_FILE,
                format!(
                    "the bucket holds {length} bytes at {}, {total} were sent",
                    upload.key
                ),
            ));
        }
        // A bucket that keeps no full-object checksum (or an empty object,
        // put whole) says nothing here; the length above still holds.
        if let Some(held) = head.checksum_crc32_c() {
            if head.checksum_type() == Some(&ChecksumType::FullObject) && held != crc_text(whole) {
                return Err(Error::new(
                    ErrorKind::Status,
                    code::PARTIAL_FILE,
                    format!(
                        "the bucket holds {} with CRC32C {held}, the file sent has {}",
                        upload.key,
                        crc_text(whole)
                    ),
                ));
            }
        }
        Ok(Completion::Landed(Landing::confirmed(
            Some(upload.key.clone()),
            Some(length),
            Some(whole),
        )))
    }

    async fn abort(&self, _transport: &dyn Transport, upload: &PartsUpload) -> Result<(), Error> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&upload.key)
            .upload_id(&upload.id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if missing(&e) => Ok(()),
            Err(e) => Err(failed("abort the multipart upload", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_names_an_object_or_a_folder() {
        let folder: S3Target = "s3://uploads/in/".parse().unwrap();
        assert_eq!(folder.key_for("a/b.bin"), "in/a/b.bin");
        let object: S3Target = "s3://uploads/in/x.bin".parse().unwrap();
        assert_eq!(object.key_for("a.bin"), "in/x.bin");
        let bare: S3Target = "s3://uploads".parse().unwrap();
        assert_eq!(bare.key_for("a.bin"), "a.bin");
        assert!("s3:///x".parse::<S3Target>().is_err());
        assert!("http://uploads/x".parse::<S3Target>().is_err());
    }
}
