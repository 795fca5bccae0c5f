//! The Companion door: the routes a browser's `@uppy/aws-s3` (or our
//! client's `companion` protocol) asks to sign uploads that go straight to
//! the bucket, answered as Uppy's Companion answers them, under the
//! receiver's rules. Served below a prefix (`/s3` by default) when the
//! store takes direct uploads:
//!
//! | route | answer |
//! |---|---|
//! | `GET params?filename=&type=` | `{method, url, fields, expires}`: a signed form for a small file |
//! | `POST multipart` `{filename, type, metadata, size?}` | `{key, uploadId, bucket}` |
//! | `GET multipart/ID?key=` | `[{PartNumber, ETag, Size}]`, the parts the bucket holds |
//! | `GET multipart/ID/N?key=` | `{url, expires}`: part `N` signed |
//! | `GET multipart/ID/batch?key=&partNumbers=1,2` | `{presignedUrls: {"1": url, …}}` |
//! | `POST multipart/ID/complete?key=` `{parts: [{PartNumber, ETag}]}` | `{location, key, bucket}`: landed |
//! | `DELETE multipart/ID?key=` | `{}` |
//! | `POST sign` `{method, key, uploadId?, partNumber?, expiresIn?}` | `{url, key}`: one request of `@uppy/aws-s3`'s `signRequest`, signed |
//!
//! Failures answer `{"error": "s3: …"}` with the status the receiver's
//! other doors would give. The `uploadId` handed out is the receiver's own
//! upload id (status queries and hooks know the upload by it); the `key`
//! a client sends back must be the one it was given, never a path of its
//! choosing.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fileuploader_wire::receipt::RECEIPT_HEADER;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Grant;
use crate::receiver::Receiver;
use crate::refusal::Refusal;
use crate::request::{plain_name, RequestBody};
use crate::store::{ClaimedPart, Direct, DirectUpload, NewDirect, Store, StoreRequest, Watch};
use crate::uploads::{self, Allowance, Via};

/// Where the routes are served unless the receiver is told otherwise.
pub const DEFAULT_PREFIX: &str = "/s3";

/// How long a signed part URL or form is good for: Companion's default.
const SIGNED_FOR: Duration = Duration::from_secs(800);

/// The largest JSON body a route reads (a completion of 10 000 parts).
const MAX_JSON: usize = 1 << 20;

/// A route's answer: JSON, or a refusal.
type Answered = Result<Value, Refusal>;

/// One route, as its path says it.
enum Route<'a> {
    Params,
    Create,
    Parts(&'a str),
    Sign(&'a str, &'a str),
    Batch(&'a str),
    Complete(&'a str),
    SignRequest,
    Sts,
}

impl<'a> Route<'a> {
    fn of(method: &Method, rest: &'a str) -> Option<Self> {
        let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
        Some(match (method, segments.as_slice()) {
            (&Method::GET, ["params"]) => Route::Params,
            (&Method::GET, ["sts"]) => Route::Sts,
            (&Method::POST, ["multipart"]) => Route::Create,
            (&Method::POST, ["sign"]) => Route::SignRequest,
            (&Method::GET | &Method::DELETE, ["multipart", id]) => Route::Parts(id),
            (&Method::GET, ["multipart", id, "batch"]) => Route::Batch(id),
            (&Method::POST, ["multipart", id, "complete"]) => Route::Complete(id),
            (&Method::GET, ["multipart", id, part]) => Route::Sign(id, part),
            _ => return None,
        })
    }
}

/// What `POST multipart` carries.
#[derive(Deserialize)]
struct Create {
    filename: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    /// The file's length, when the client declares it (Uppy does not).
    size: Option<u64>,
}

/// What `POST sign` carries: one request `@uppy/aws-s3` is to make of
/// the bucket.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToSign {
    method: String,
    key: String,
    upload_id: Option<String>,
    part_number: Option<u32>,
    expires_in: Option<u64>,
    /// A new file's type, for its `PUT`.
    content_type: Option<String>,
}

/// What `POST multipart/ID/complete` carries.
#[derive(Deserialize)]
struct Complete {
    parts: Option<Value>,
}

/// A signed form's fields as the answer carries them.
fn form_fields(fields: Vec<(String, String)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

fn bad(message: &str) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, format!("s3: {message}"))
}

const KEY_REQUIRED: &str =
    "the object key must be passed as a query parameter. For example: \"?key=abc.jpg\"";

impl Receiver {
    /// Whether `path` is one of the Companion routes' and the store signs
    /// direct uploads.
    pub(crate) fn is_companion(&self, path: &str) -> bool {
        self.store.direct().is_some()
            && path
                .strip_prefix(self.companion_prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Serves one Companion request.
    pub(crate) async fn companion<B: RequestBody>(
        &self,
        request: Request<B>,
        grant: Result<Grant, Refusal>,
    ) -> Response<Full<Bytes>> {
        let answered = match grant {
            Ok(grant) => self.companion_route(request, &grant).await,
            Err(refusal) => Err(refusal),
        };
        let (status, body) = match answered {
            Ok(value) => (StatusCode::OK, value),
            Err(refusal) => {
                let message = refusal.message();
                let message = if message.starts_with("s3: ") {
                    message.to_owned()
                } else {
                    format!("s3: {message}")
                };
                (refusal.status(), json!({ "error": message }))
            }
        };
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        // A landing's receipt travels where our client reads every
        // protocol's: in its header too.
        if let Some(receipt) = body["receipt"].as_str() {
            if let Ok(value) = header::HeaderValue::from_str(receipt) {
                response.headers_mut().insert(RECEIPT_HEADER, value);
            }
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json; charset=utf-8"),
        );
        response
    }

    async fn companion_route<B: RequestBody>(
        &self,
        request: Request<B>,
        grant: &Grant,
    ) -> Answered {
        let Some(direct) = self.store.direct() else {
            return Err(bad("this receiver's store takes no direct uploads"));
        };
        let rest = request.uri().path()[self.companion_prefix.len()..].to_owned();
        let query: Vec<(String, String)> = request
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let asked = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let Some(route) = Route::of(request.method(), &rest) else {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!(
                    "s3: no route {} {}{rest}",
                    request.method(),
                    self.companion_prefix
                ),
            ));
        };
        let allowance = Allowance {
            owner: &grant.owner,
            terms: self.terms(Via::Direct),
            quota: self.quota,
            gate: self.before_creation.as_ref(),
        };
        match route {
            Route::SignRequest => {
                let asked: ToSign = read_json(request).await?;
                let valid_for =
                    SIGNED_FOR.min(Duration::from_secs(asked.expires_in.unwrap_or(u64::MAX)));
                let new_name =
                    |key: &str| -> Result<String, Refusal> { self.direct_name(grant, key, None) };
                let store_request = match (asked.method.as_str(), asked.upload_id, asked.part_number) {
                    ("PUT" | "POST", None, _) => {
                        let name = new_name(&asked.key)?;
                        let name = match allowance.admit(None, &name, None).await? {
                            Some(admitted) => admitted.name,
                            None => name,
                        };
                        uploads::check_name(self.store.as_ref(), &name, self.on_conflict, None).await?;
                        match asked.method.as_str() {
                            "PUT" => StoreRequest::PutObject { name },
                            _ => StoreRequest::CreateMultipart { name },
                        }
                    }
                    ("PUT", Some(upload_id), Some(number)) => StoreRequest::UploadPart {
                        key: asked.key,
                        upload_id,
                        number,
                    },
                    ("GET", Some(upload_id), None) => StoreRequest::ListParts { key: asked.key, upload_id },
                    ("POST", Some(upload_id), None) => {
                        // Sizes a signature cannot bind are checked here:
                        // what the parts hold when their completion is
                        // signed.
                        let held: u64 = direct
                            .parts_at(&asked.key, &upload_id)
                            .await?
                            .iter()
                            .map(|p| p.size)
                            .sum();
                        let largest = grant.largest(self.max_upload_size);
                        if held > largest {
                            return Err(Refusal::new(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                format!("s3: the parts of this upload hold {held} bytes, more than the {largest} this receiver takes; abort it"),
                            ));
                        }
                        // The client completes it with the bucket: watched
                        // until it lands, to be recorded then.
                        self.watch(direct, grant, &asked.key, valid_for).await?;
                        StoreRequest::Complete { key: asked.key, upload_id }
                    }
                    ("DELETE", Some(upload_id), None) => StoreRequest::Abort { key: asked.key, upload_id },
                    ("DELETE", None, _) => {
                        return Err(Refusal::new(
                            StatusCode::FORBIDDEN,
                            "s3: this receiver signs no deletion of a file",
                        ))
                    }
                    (method, ..) => {
                        return Err(bad(&format!(
                            "cannot sign {method} with these fields: a new file is PUT or POST with a key, a part PUT with uploadId and partNumber, a list GET, a completion POST and an abort DELETE with uploadId"
                        )))
                    }
                };
                if let StoreRequest::PutObject { name } | StoreRequest::CreateMultipart { name } =
                    &store_request
                {
                    self.watch(direct, grant, &direct.key_of(name), valid_for)
                        .await?;
                }
                if let StoreRequest::PutObject { name } = &store_request {
                    // A whole file goes as a form, whose policy binds its
                    // size (a signed PUT cannot): @uppy/aws-s3 posts it.
                    let form = direct
                        .sign_form(
                            name,
                            asked.content_type.as_deref(),
                            grant.largest(self.max_upload_size),
                            valid_for,
                        )
                        .await?;
                    return Ok(json!({
                        "url": form.url,
                        "fields": form_fields(form.fields),
                        "key": direct.key_of(name),
                    }));
                }
                let key = match &store_request {
                    StoreRequest::CreateMultipart { name } => Some(direct.key_of(name)),
                    _ => None,
                };
                let signed = direct.sign_request(&store_request, valid_for).await?;
                Ok(match key {
                    Some(key) => json!({ "url": signed.url, "key": key }),
                    None => json!({ "url": signed.url }),
                })
            }
            Route::Sts => Err(bad(
                "this receiver signs each request and hands out no credentials",
            )),
            Route::Params => {
                let name = asked("filename").filter(|f| !f.is_empty()).ok_or_else(|| {
                    bad("the \"filename\" query parameter is required and must be a non-empty string")
                })?;
                let name = self.direct_name(grant, name, None)?;
                let max_size = grant.largest(self.max_upload_size);
                let name = match allowance.admit(None, &name, None).await? {
                    Some(admitted) => admitted.name,
                    None => name,
                };
                uploads::check_name(self.store.as_ref(), &name, self.on_conflict, None).await?;
                self.watch(direct, grant, &direct.key_of(&name), SIGNED_FOR)
                    .await?;
                let form = direct
                    .sign_form(&name, asked("type"), max_size, SIGNED_FOR)
                    .await?;
                Ok(json!({
                    "method": "POST",
                    "url": form.url,
                    "fields": form_fields(form.fields),
                    "expires": seconds_until(form.expires),
                }))
            }
            Route::Create => {
                let create: Create = read_json(request).await?;
                let filename = match &create.filename {
                    Some(Value::String(f)) if !f.is_empty() => f.clone(),
                    _ => {
                        return Err(bad(
                            "the \"filename\" field is required and must be a non-empty string",
                        ))
                    }
                };
                let kind = match &create.kind {
                    Some(Value::String(kind)) => kind.clone(),
                    _ => return Err(bad("content type must be a string")),
                };
                let relative = create
                    .metadata
                    .as_ref()
                    .and_then(|m| m.get("relativePath"))
                    .and_then(Value::as_str)
                    .filter(|p| p.contains('/'));
                let name = self.direct_name(grant, &filename, relative)?;
                if let Some(size) = create.size {
                    let max = grant.largest(self.max_upload_size);
                    if size > max {
                        return Err(crate::refusal::too_large(max));
                    }
                }
                let id = crate::doors::resumable::fresh_id();
                let mut new = NewDirect {
                    id: id.clone(),
                    name,
                    owner: grant.owner.clone(),
                    declared: create.size,
                    content_type: (!kind.is_empty()).then_some(kind),
                    metadata: None,
                };
                if let Some(admitted) = allowance.admit(Some(&id), &new.name, new.declared).await? {
                    new.name = admitted.name;
                    new.metadata = Some(admitted.metadata);
                }
                let upload = direct
                    .begin_direct(new, self.quota, self.on_conflict)
                    .await?;
                Ok(json!({
                    "key": upload.key,
                    "uploadId": upload.begun.id,
                    "bucket": upload.bucket,
                }))
            }
            Route::Parts(id) => {
                let upload = self.owned_direct(direct, grant, id, asked("key")).await?;
                if request.method() == Method::DELETE {
                    direct.abort_direct(&upload).await?;
                    return Ok(json!({}));
                }
                let parts: Vec<Value> = direct
                    .stored_parts(&upload)
                    .await?
                    .into_iter()
                    .map(|p| json!({ "PartNumber": p.number, "ETag": p.etag, "Size": p.size }))
                    .collect();
                Ok(Value::Array(parts))
            }
            Route::Sign(id, part) => {
                let upload = self.owned_direct(direct, grant, id, asked("key")).await?;
                let signed = direct
                    .sign_part(&upload, part_number(part)?, SIGNED_FOR)
                    .await?;
                Ok(json!({ "url": signed.url, "expires": seconds_until(signed.expires) }))
            }
            Route::Batch(id) => {
                let upload = self.owned_direct(direct, grant, id, asked("key")).await?;
                let numbers = asked("partNumbers").ok_or_else(|| {
                    bad("the part numbers must be passed as a comma separated query parameter. For example: \"?partNumbers=4,6,7,21\"")
                })?;
                let mut urls = serde_json::Map::new();
                for number in numbers.split(',') {
                    let signed = direct
                        .sign_part(&upload, part_number(number)?, SIGNED_FOR)
                        .await?;
                    urls.insert(number.to_owned(), Value::String(signed.url));
                }
                Ok(json!({ "presignedUrls": urls }))
            }
            Route::Complete(id) => {
                let key = asked("key").map(str::to_owned);
                let complete: Complete = read_json(request).await?;
                let parts = claimed_parts(complete.parts)?;
                let store: &dyn Store = self.store.as_ref();
                let upload = match self.owned_direct(direct, grant, id, key.as_deref()).await {
                    Ok(upload) => upload,
                    Err(refusal) if refusal.status() == StatusCode::NOT_FOUND => {
                        // Landed by a request before this one, its answer lost.
                        let landed = uploads::landed_for(store, id, &grant.owner)
                            .await?
                            .ok_or(refusal)?;
                        let key = direct.key_of(&landed.name);
                        return Ok(self.completion_answer(&landed, &key));
                    }
                    Err(refusal) => return Err(refusal),
                };
                let max_size = Some(grant.largest(self.max_upload_size));
                let (landed, _word) =
                    uploads::land_direct(store, &upload, parts, max_size, allowance.terms).await?;
                let mut answer = self.completion_answer(&landed, &upload.key);
                answer["location"] = Value::String(upload.location);
                answer["bucket"] = Value::String(upload.bucket);
                Ok(answer)
            }
        }
    }

    /// Watches for the file a client is to place at `key` itself, on a
    /// signature valid for `valid_for`: its landing is recorded when it
    /// arrives (see [`Receiver::settle_watches_now`]).
    async fn watch(
        &self,
        direct: &dyn Direct,
        grant: &Grant,
        key: &str,
        valid_for: Duration,
    ) -> Result<(), Refusal> {
        let watch = Watch {
            id: crate::doors::resumable::fresh_id(),
            key: key.to_owned(),
            owner: grant.owner.clone(),
            max_size: grant.largest(self.max_upload_size),
            valid_for,
        };
        direct.watch(watch).await?;
        Ok(())
    }

    /// What a completion answers for `landed` at `key`, however often it is
    /// asked: the key, the upload, the landed name and the receipt.
    fn completion_answer(&self, landed: &fileuploader_store::Landed, key: &str) -> Value {
        let mut answer = json!({
            "key": key,
            "uploadId": landed.id,
            "name": landed.name,
        });
        if let Some(receipt) = self.receipt_of(landed) {
            answer["receipt"] = Value::String(receipt);
        }
        answer
    }

    /// The name a direct upload of `filename` (or `relative`, a path below
    /// a folder) lands under, as the receiver's names are made and the
    /// credentials allow.
    fn direct_name(
        &self,
        grant: &Grant,
        filename: &str,
        relative: Option<&str>,
    ) -> Result<String, Refusal> {
        let name = plain_name(relative.unwrap_or(filename))?;
        grant.check_name(&name)?;
        Ok(name)
    }

    /// Direct upload `id` in progress, if these credentials began it and
    /// `key` is the one it was given.
    async fn owned_direct(
        &self,
        direct: &dyn Direct,
        grant: &Grant,
        id: &str,
        key: Option<&str>,
    ) -> Result<DirectUpload, Refusal> {
        let key = key.ok_or_else(|| bad(KEY_REQUIRED))?;
        let gone = || {
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("s3: upload {id} is not here: never begun, aborted, landed or expired"),
            )
        };
        fileuploader_wire::check_upload_id(id).map_err(|_| gone())?;
        let upload = direct
            .direct_upload(id)
            .await?
            .filter(|u| u.begun.owner == grant.owner)
            .ok_or_else(gone)?;
        if upload.key != key {
            return Err(bad(&format!(
                "upload {id} lands at key {:?}, not {key:?}",
                upload.key
            )));
        }
        Ok(upload)
    }
}

/// A part number as a route names it: 1 to 10 000.
fn part_number(text: &str) -> Result<u32, Refusal> {
    text.parse::<u32>()
        .ok()
        .filter(|n| (1..=crate::store::direct::MAX_PARTS).contains(n))
        .ok_or_else(|| bad("the part number must be a number between 1 and 10000."))
}

/// The parts a completion names, each `{PartNumber, ETag}`.
fn claimed_parts(parts: Option<Value>) -> Result<Vec<ClaimedPart>, Refusal> {
    let refused = || bad("`parts` must be an array of {ETag, PartNumber} objects.");
    parts
        .as_ref()
        .and_then(Value::as_array)
        .ok_or_else(refused)?
        .iter()
        .map(|part| {
            let number = part.get("PartNumber").and_then(Value::as_u64);
            let etag = part.get("ETag").and_then(Value::as_str);
            match (number, etag) {
                (Some(number), Some(etag)) => Ok(ClaimedPart {
                    number: u32::try_from(number).map_err(|_| refused())?,
                    etag: etag.to_owned(),
                }),
                _ => Err(refused()),
            }
        })
        .collect()
}

/// A request's JSON body, at most [`MAX_JSON`] bytes.
async fn read_json<B: RequestBody, T: for<'de> Deserialize<'de>>(
    request: Request<B>,
) -> Result<T, Refusal> {
    let body = Limited::new(request.into_body(), MAX_JSON)
        .collect()
        .await
        .map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("s3: the request body could not be read (at most {MAX_JSON} bytes): {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| bad(&format!("the body is not the JSON asked for: {e}")))
}

/// Whole seconds from now to `then`.
fn seconds_until(then: SystemTime) -> u64 {
    then.duration_since(SystemTime::now())
        .map_or(0, |d| d.as_secs_f64().round() as u64)
}
