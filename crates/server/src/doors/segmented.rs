//! The segmented multipart door (docs/PROTOCOL.md): blocks and whole
//! files in forms, the status query and the discard, answered from the one
//! place uploads land.

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::appends;
use crate::auth::Grant;
use crate::hooks::Word;
use crate::limits::{Cut, Guarded};
use crate::receiver::Receiver;
use crate::refusal::Refusal;
use crate::refusal::{broke_off, too_large};
use crate::request::RequestBody;
pub use crate::request::{plain_name, upload_id};
use crate::settled::SettledEnd;
use crate::store::{BlockWriter, Landed, NewUpload, WholeWriter};
use crate::uploads;
use crate::uploads::{Allowance, Chunks, Outcome, Via};
use fileuploader_wire::receipt::RECEIPT_HEADER;
use fileuploader_wire::resumable::encode_text;
use fileuploader_wire::STATEMENT_HEADER;
use fileuploader_wire::{parse_crc32c, STATEMENT_MEDIA_TYPE, UPLOAD_ID_QUERY};
pub use fileuploader_wire::{ContentRange, Statement, BLOCK_CRC32C_FIELD, DIGEST_MISMATCH};
use http::HeaderValue;

impl Receiver {
    /// Serves one request of the segmented multipart convention.
    pub(crate) async fn segmented<B: RequestBody>(
        &self,
        request: Request<B>,
        grant: Result<Grant, Refusal>,
    ) -> Response<Full<Bytes>> {
        let result = match grant {
            Err(refusal) => Err(refusal),
            Ok(grant) => match *request.method() {
                Method::POST if self.discard => self.sink(request).await,
                Method::POST => self.receive(request, &grant).await,
                Method::GET if !self.discard => self.status_of(request.uri(), &grant).await,
                Method::DELETE if !self.discard => self.discard_upload(request.uri(), &grant).await,
                _ => Err(Refusal::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use POST to upload",
                )),
            },
        };
        let mut headers = http::HeaderMap::new();
        let (status, content_type, body) = match result {
            Ok(said) => {
                let (statement, word) = match said {
                    Some(said) => {
                        let value = said.receipt.and_then(|r| HeaderValue::from_str(&r).ok());
                        headers.extend(
                            value.map(|v| (header::HeaderName::from_static(RECEIPT_HEADER), v)),
                        );
                        (Some(said.statement), said.word)
                    }
                    None => (None, None),
                };
                let status = match statement {
                    Some(Statement::Unknown { .. }) => StatusCode::NOT_FOUND,
                    _ => StatusCode::OK,
                };
                let json = statement.map_or_else(|| "ok\n".to_owned(), |s| s.to_json());
                match word {
                    // The application's word is the body; the statement
                    // moves to its header.
                    Some(word) => {
                        let escaped = HeaderValue::from_str(&encode_text(&json)).ok();
                        headers.extend(
                            escaped.map(|v| (header::HeaderName::from_static(STATEMENT_HEADER), v)),
                        );
                        (status, word.content_type().to_owned(), word.body)
                    }
                    None => (status, STATEMENT_MEDIA_TYPE.to_owned(), Bytes::from(json)),
                }
            }
            Err(refusal) => {
                tracing::debug!(%refusal, "refused");
                let body = format!("{}\n", refusal.message());
                (
                    refusal.status(),
                    "text/plain; charset=utf-8".to_owned(),
                    Bytes::from(body),
                )
            }
        };
        if let Ok(value) = HeaderValue::from_str(&content_type) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }

    /// What the segmented protocol says of a landed file, to the client
    /// that named its upload `id`, with its receipt and the application's
    /// word on it, if it spoke.
    fn said_landed(&self, landed: &Landed, id: &str, word: Option<Word>) -> Said {
        // The receipt names the upload as its client did.
        let mut named = landed.clone();
        named.id = id.to_owned();
        Said {
            statement: uploads::landed_statement(landed, id),
            receipt: self.receipt_of(&named),
            word,
        }
    }

    /// The upload a status query or discard names.
    fn queried_id(uri: &http::Uri) -> Result<&str, Refusal> {
        let id = uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix(UPLOAD_ID_QUERY)?.strip_prefix('='))
            .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "ask with ?upload_id=ID"))?;
        fileuploader_wire::check_upload_id(id)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))
    }

    /// Where a status query or a discard of upload `id` looks for
    /// `grant`'s upload: where this door keeps it (see
    /// [`uploads::kept_as`]), then under `id` itself, for an upload of
    /// another door (tus, the draft, Companion), whose id the receiver
    /// gave. Either answers only to the credentials that began it.
    fn reached(grant: &Grant, id: &str) -> Vec<String> {
        let kept = uploads::kept_as(&grant.owner, id);
        match kept == id {
            true => vec![kept],
            false => vec![kept, id.to_owned()],
        }
    }

    async fn status_of(&self, uri: &http::Uri, grant: &Grant) -> Result<Option<Said>, Refusal> {
        let id = Self::queried_id(uri)?;
        let mut outcome = Outcome::Unknown;
        for key in Self::reached(grant, id) {
            self.appends.take_over(&key, &grant.owner).await;
            let store = self.store.as_ref();
            outcome =
                uploads::settle(store, &key, &grant.owner, self.terms(Via::Segmented)).await?;
            if !matches!(outcome, Outcome::Unknown) {
                break;
            }
        }
        Ok(Some(match outcome {
            Outcome::Landed(landed, word) => self.said_landed(&landed, id, word),
            outcome => outcome.statement(id).into(),
        }))
    }

    async fn discard_upload(
        &self,
        uri: &http::Uri,
        grant: &Grant,
    ) -> Result<Option<Said>, Refusal> {
        let id = Self::queried_id(uri)?;
        for key in Self::reached(grant, id) {
            self.appends.take_over(&key, &grant.owner).await;
            if uploads::find_owned(self.store.as_ref(), &key, &grant.owner)
                .await?
                .is_some()
            {
                self.store.discard(&key).await?;
                break;
            }
        }
        Ok(Some(
            Statement::Unknown {
                upload_id: id.to_owned(),
            }
            .into(),
        ))
    }

    /// Reads a whole body and keeps nothing (discard mode).
    async fn sink<B: RequestBody>(&self, request: Request<B>) -> Result<Option<Said>, Refusal> {
        let mut body = std::pin::pin!(request.into_body());
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| {
                Refusal::new(StatusCode::BAD_REQUEST, format!("body: {}", e.into()))
            })?;
        }
        Ok(None)
    }

    async fn receive<B: RequestBody>(
        &self,
        request: Request<B>,
        grant: &Grant,
    ) -> Result<Option<Said>, Refusal> {
        let headers = request.headers();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let boundary = multer::parse_boundary(content_type)
            .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "not multipart/form-data"))?;
        let range = headers
            .get(header::CONTENT_RANGE)
            .map(|v| ContentRange::parse(v.to_str().unwrap_or("")))
            .transpose()
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        let id = upload_id(headers)?;
        let key = id.as_deref().map(|id| uploads::kept_as(&grant.owner, id));
        let id = id.unwrap_or_default();
        let max_size = grant.largest(self.max_upload_size);
        let limit = range.map_or(max_size, |r| r.total);
        if limit > max_size {
            return Err(too_large(max_size));
        }
        let allowance = Allowance {
            owner: &grant.owner,
            terms: self.terms(Via::Segmented),
            quota: self.quota,
            gate: self.before_creation.as_ref(),
        };
        let stream = SettledEnd::new(Guarded::new(
            Box::pin(request.into_body().into_data_stream().map_err(Into::into)),
            &boundary,
            &self.limits,
        ));
        let mut form = multer::Multipart::new(stream, boundary);
        // Registered before its range is reserved, and dropped after its
        // writer: the same block sent again ends this request while its
        // bytes are on their way, and waits for its range to be free.
        let mut sending = match (&key, range) {
            (Some(key), Some(r)) => {
                let block = appends::block_key(key, r.start, r.end);
                Some(self.appends.begin(&block, &grant.owner).await)
            }
            _ => None,
        };
        let mut file: Option<(Part, uploads::Poured)> = None;
        let mut name_field = None;
        let mut expected_crc = None;
        let mut fields = 0;
        while let Some(mut field) = form.next_field().await.map_err(malformed)? {
            match (field.file_name(), &file) {
                (Some(part_name), None) => {
                    let name = plain_name(&fileuploader_wire::unescape_name(part_name))?;
                    grant.check_name(&name)?;
                    let mut part = match self.part(key.as_deref(), name, range, allowance).await? {
                        Ok(part) => part,
                        Err(landed) => {
                            while field.chunk().await.map_err(malformed)?.is_some() {}
                            return Ok(Some(self.said_landed(&landed, &id, None)));
                        }
                    };
                    let max = range.map_or(max_size, |r| r.len());
                    let poured = match &mut part {
                        Part::Block(writer) => {
                            let pour = uploads::pour(&mut field, writer.as_mut(), max, || {
                                Refusal::new(
                                    StatusCode::BAD_REQUEST,
                                    "file part is longer than its Content-Range",
                                )
                            });
                            let taken_over = async {
                                match &mut sending {
                                    Some(sending) => sending.taken_over().await,
                                    None => std::future::pending().await,
                                }
                            };
                            tokio::select! {
                                poured = pour => poured?,
                                // Answered as busy: a client that still
                                // waits for it (another run under the same
                                // id) tries again and finds the block held.
                                () = taken_over => return Err(Refusal::new(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "the same block came again in a newer request, which takes its place; none of this one was kept; try again",
                                )),
                            }
                        }
                        Part::Whole(writer, ..) => {
                            uploads::pour(&mut field, writer.as_mut(), max, || too_large(max))
                                .await?
                        }
                    };
                    file = Some((part, poured));
                }
                (Some(_), Some(_)) => {
                    // Refused before anything lands: the first part's
                    // writer goes with this answer, keeping nothing.
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "the form has more than one file part; send each file in its own request (none of these was kept)",
                    ));
                }
                (None, _) => {
                    fields += 1;
                    if fields > self.limits.max_fields {
                        return Err(Refusal::new(
                            StatusCode::BAD_REQUEST,
                            format!("more than {} form fields", self.limits.max_fields),
                        ));
                    }
                    let key = field.name().unwrap_or("").to_owned();
                    let text = read_small(field, self.limits.max_field_bytes).await?;
                    match key.as_str() {
                        "filename" => {
                            let name = plain_name(&text)?;
                            grant.check_name(&name)?;
                            name_field = Some(name);
                        }
                        BLOCK_CRC32C_FIELD if expected_crc.is_some() => {
                            return Err(Refusal::new(
                                StatusCode::BAD_REQUEST,
                                "X-Block-CRC32C given twice",
                            ))
                        }
                        BLOCK_CRC32C_FIELD => {
                            expected_crc = Some(parse_crc32c(&text).map_err(|_| {
                                Refusal::new(StatusCode::BAD_REQUEST, "malformed X-Block-CRC32C")
                            })?)
                        }
                        _ => {}
                    }
                }
            }
        }
        let (part, poured) =
            file.ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "no file part in the form"))?;
        let crc = poured.crc32c;
        if expected_crc.is_some_and(|expected| expected != crc) {
            return Err(Refusal::new(
                StatusCode::from_u16(DIGEST_MISMATCH).unwrap_or(StatusCode::BAD_REQUEST),
                format!(
                    "block digest mismatch: X-Block-CRC32C says {:08x}, the bytes have {crc:08x}",
                    expected_crc.unwrap_or(0)
                ),
            ));
        }
        match (part, range) {
            (Part::Whole(writer, part_name, metadata), _) => {
                // A name the hook settled stays; else a later field may name another.
                let name = match &metadata {
                    Some(_) => part_name,
                    None => name_field.unwrap_or(part_name),
                };
                let store = self.store.as_ref();
                uploads::land_whole(store, writer, &name, key.as_deref(), allowance, metadata)
                    .await
                    .map(|(landed, word)| Some(self.said_landed(&landed, &id, word)))
            }
            (Part::Block(writer), Some(r)) => {
                if poured.len != r.len() {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "file part has {} bytes but Content-Range says {}",
                            poured.len,
                            r.len()
                        ),
                    ));
                }
                let outcome = uploads::acknowledge(
                    self.store.as_ref(),
                    writer,
                    r.len(),
                    expected_crc,
                    name_field,
                    self.terms(Via::Segmented),
                )
                .await?;
                match outcome {
                    Outcome::Landed(landed, word) => Ok(Some(self.said_landed(&landed, &id, word))),
                    Outcome::InProgress(_) => Ok(Some(
                        Statement::Received {
                            upload_id: id,
                            start: r.start,
                            end: r.end,
                        }
                        .into(),
                    )),
                    Outcome::Failed(_, refusal) => Err(refusal),
                    Outcome::Unknown => Err(Refusal::internal("receive", "the upload vanished")),
                }
            }
            (Part::Block(_), None) => Err(Refusal::internal("receive", "a block without a range")),
        }
    }

    /// Where a request's file part goes: a block of an upload (found or
    /// begun, its range reserved) or a whole file; or, when the upload it
    /// names has landed already, the statement of its landing.
    async fn part(
        &self,
        id: Option<&str>,
        name: String,
        range: Option<ContentRange>,
        allowance: Allowance<'_>,
    ) -> Result<Result<Part, Landed>, Refusal> {
        let Some(range) = range else {
            let store = self.store.as_ref();
            if let Some(landed) = uploads::open_whole(store, id, &name, allowance).await? {
                return Ok(Err(landed));
            }
            let (name, metadata) = match allowance.admit(id, &name, None).await? {
                Some(admitted) => {
                    uploads::check_name(store, &admitted.name, allowance.terms.policy, id).await?;
                    (admitted.name, Some(admitted.metadata))
                }
                None => (name, None),
            };
            let writer = store.write_whole(allowance.owner, allowance.quota).await?;
            return Ok(Ok(Part::Whole(writer, name, metadata)));
        };
        let id = id.ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "an upload in blocks needs an X-Upload-Id, so it cannot meet another client's",
            )
        })?;
        let new = NewUpload {
            id: id.to_owned(),
            total: range.total,
            name,
            owner: allowance.owner.to_owned(),
            partial: false,
            metadata: None,
        };
        match uploads::open(self.store.as_ref(), new, allowance).await? {
            Outcome::Landed(landed, _) => Ok(Err(landed)),
            Outcome::InProgress(upload) => Ok(Ok(Part::Block(
                self.store.write_block(&upload, range, true).await?,
            ))),
            Outcome::Failed(..) | Outcome::Unknown => {
                Err(Refusal::internal("open upload", "neither begun nor landed"))
            }
        }
    }
}

/// What a request is answered: a statement, with the receipt of the
/// landing it reports, if any, and the application's word on it.
struct Said {
    statement: Statement,
    receipt: Option<String>,
    /// The application's word: the body in the statement's place (which
    /// then travels in the `Upload-Statement` header).
    word: Option<Word>,
}

impl From<Statement> for Said {
    fn from(statement: Statement) -> Self {
        Said {
            statement,
            receipt: None,
            word: None,
        }
    }
}

/// A request's file part on its way into the store.
enum Part {
    Block(Box<dyn BlockWriter>),
    /// A whole file, the name its part gave (or the before-creation hook
    /// settled), and the hook's metadata if it was asked.
    Whole(Box<dyn WholeWriter>, String, Option<String>),
}

fn malformed(e: multer::Error) -> Refusal {
    if let multer::Error::StreamReadFailed(cause) = &e {
        return match cause.downcast_ref::<Cut>() {
            Some(cut @ (Cut::Idle(_) | Cut::Slow { .. })) => {
                Refusal::new(StatusCode::REQUEST_TIMEOUT, cut.to_string())
            }
            Some(cut) => Refusal::new(StatusCode::BAD_REQUEST, cut.to_string()),
            None => broke_off(cause),
        };
    }
    Refusal::new(StatusCode::BAD_REQUEST, format!("malformed multipart: {e}"))
}

async fn read_small(mut field: multer::Field<'_>, max: usize) -> Result<String, Refusal> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        if text.len() + chunk.len() > max {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("form field larger than {max} bytes"),
            ));
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text)
        .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "form field is not UTF-8"))
}

#[async_trait::async_trait]
impl Chunks for multer::Field<'_> {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Refusal> {
        self.chunk().await.map_err(malformed)
    }
}
