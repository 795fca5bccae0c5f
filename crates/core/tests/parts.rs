//! S3 multipart sessions (`Parts`), whoever signs them, judged by what a
//! bucket in memory holds: parts of S3's sizes, resume from the parts the
//! bucket lists, a refused signature signed afresh, an empty file, and an
//! abort when nothing could resume (a cancel during the creation too). The bucket's own rules are checked
//! against real stores in `cargo xtask interop companion`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use fileuploader_core::protocol::parts::{
    Completion, HeldPart, PartsBackend, PartsUpload, MIN_PART,
};
use fileuploader_core::protocol::{Landing, Parts};
use fileuploader_core::{
    Error, ErrorKind, Request, Response, Transport, TransportError, UploadBody, UploadManager,
};
use http::{Method, StatusCode};
use http_body_util::BodyExt;

const MIB: usize = 1 << 20;

/// A bucket in memory, and the backend that signs for it: parts arrive as
/// `PUT http://bucket/ID/N` through the transport.
#[derive(Debug, Default)]
struct Bucket {
    /// Parts by upload id and number.
    parts: Mutex<BTreeMap<(String, u32), Bytes>>,
    /// Objects completed, by key.
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Part numbers to refuse once with 403 (an expired signature).
    refuse_once: Mutex<Vec<u32>>,
    /// Part numbers to refuse for good with 400.
    refuse_always: Mutex<Vec<u32>>,
    /// Part numbers whose first request never ends.
    stall_once: Mutex<Vec<u32>>,
    /// Requests per part number, all runs together.
    tries: Mutex<BTreeMap<u32, u32>>,
    /// Every signing round, and aborts.
    prepared: Mutex<Vec<Vec<u32>>>,
    aborted: Mutex<u32>,
    created: Mutex<u32>,
    /// Parts sent, all runs together.
    sent: Mutex<u32>,
    /// Completions to refuse as naming parts it does not hold.
    refuse_completions: Mutex<u32>,
    /// Completions whose answer is lost on the way back.
    lose_completions: Mutex<u32>,
    /// Uploads completed, by id: no longer open.
    completed: Mutex<Vec<String>>,
    /// Whether a creation waits for `release` (told by `creating`).
    hold_create: Mutex<bool>,
    creating: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}

#[async_trait]
impl PartsBackend for Bucket {
    async fn create(
        &self,
        _transport: &dyn Transport,
        name: &str,
        _total: u64,
    ) -> Result<PartsUpload, Error> {
        let number = {
            let mut created = lock(&self.created);
            *created += 1;
            *created
        };
        let held = *lock(&self.hold_create);
        if held {
            self.creating.notify_one();
            self.release.notified().await;
        }
        Ok(PartsUpload {
            id: format!("up{number}"),
            key: format!("in/{name}"),
        })
    }

    async fn held(
        &self,
        _transport: &dyn Transport,
        upload: &PartsUpload,
    ) -> Result<Option<Vec<HeldPart>>, Error> {
        if lock(&self.completed).contains(&upload.id) {
            return Ok(None);
        }
        Ok(Some(
            lock(&self.parts)
                .iter()
                .filter(|((id, _), _)| *id == upload.id)
                .map(|((_, number), bytes)| HeldPart {
                    number: *number,
                    etag: format!("\"{number}-{}\"", bytes.len()),
                    size: bytes.len() as u64,
                })
                .collect(),
        ))
    }

    async fn prepare(
        &self,
        _transport: &dyn Transport,
        _upload: &PartsUpload,
        numbers: &[u32],
    ) -> Result<(), Error> {
        lock(&self.prepared).push(numbers.to_vec());
        Ok(())
    }

    fn part(
        &self,
        upload: &PartsUpload,
        number: u32,
        body: UploadBody,
        _crc32c: Option<u32>,
    ) -> Result<Request, Error> {
        let mut request = Request::new(body);
        *request.method_mut() = Method::PUT;
        *request.uri_mut() = format!("http://bucket/{}/{number}", upload.id)
            .parse()
            .unwrap();
        Ok(request)
    }

    fn empty(&self, upload: &PartsUpload) -> Result<Request, Error> {
        let mut request = Request::new(UploadBody::new());
        *request.method_mut() = Method::PUT;
        *request.uri_mut() = format!("http://bucket/{}/empty", upload.id)
            .parse()
            .unwrap();
        Ok(request)
    }

    async fn complete(
        &self,
        _transport: &dyn Transport,
        upload: &PartsUpload,
        parts: &[(u32, String)],
        total: u64,
    ) -> Result<Completion, Error> {
        {
            let mut refuse = lock(&self.refuse_completions);
            if *refuse > 0 {
                *refuse -= 1;
                let why = Error::from_status(StatusCode::BAD_REQUEST, ": InvalidPart");
                return Ok(Completion::PartsRefused(why));
            }
        }
        let landing = Completion::Landed(Landing::confirmed(
            Some(upload.key.clone()),
            Some(total),
            None,
        ));
        if lock(&self.completed).contains(&upload.id) {
            // Asked again: the backend says it landed.
            return Ok(landing);
        }
        let held = lock(&self.parts);
        let mut object = Vec::new();
        for (number, etag) in parts {
            let bytes = &held[&(upload.id.clone(), *number)];
            assert_eq!(
                etag,
                &format!("\"{number}-{}\"", bytes.len()),
                "the tag given"
            );
            object.extend_from_slice(bytes);
        }
        assert_eq!(object.len() as u64, total);
        lock(&self.objects).insert(upload.key.clone(), object);
        lock(&self.completed).push(upload.id.clone());
        let mut lose = lock(&self.lose_completions);
        if *lose > 0 {
            *lose -= 1;
            return Err(Error::new(
                ErrorKind::Status,
                fileuploader_core::code::UPLOAD_FAILED,
                "the completion's answer was lost",
            ));
        }
        Ok(landing)
    }

    async fn abort(&self, _transport: &dyn Transport, _upload: &PartsUpload) -> Result<(), Error> {
        *lock(&self.aborted) += 1;
        Ok(())
    }
}

/// The bucket's side of the wire: takes parts, answers with their tags.
#[derive(Debug, Clone)]
struct Wire(Arc<Bucket>);

#[async_trait]
impl Transport for Wire {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        let path = request.uri().path().to_owned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let mut segments = path.trim_start_matches('/').split('/');
        let (id, part) = (segments.next().unwrap(), segments.next().unwrap());
        let answer = |status: StatusCode| {
            let mut response = Response::new(Bytes::new());
            *response.status_mut() = status;
            response
        };
        if part == "empty" {
            return Ok(answer(StatusCode::OK));
        }
        let number: u32 = part.parse().unwrap();
        *lock(&self.0.tries).entry(number).or_default() += 1;
        let stalled = {
            let mut stall = lock(&self.0.stall_once);
            let at = stall.iter().position(|n| *n == number);
            at.map(|at| stall.remove(at))
        };
        if stalled.is_some() {
            std::future::pending::<()>().await;
        }
        if lock(&self.0.refuse_always).contains(&number) {
            return Ok(answer(StatusCode::BAD_REQUEST));
        }
        let mut once = lock(&self.0.refuse_once);
        if let Some(at) = once.iter().position(|n| *n == number) {
            once.remove(at);
            return Ok(answer(StatusCode::FORBIDDEN));
        }
        *lock(&self.0.sent) += 1;
        let etag = format!("\"{number}-{}\"", body.len());
        lock(&self.0.parts).insert((id.to_owned(), number), body);
        let mut response = answer(StatusCode::OK);
        response.headers_mut().insert("etag", etag.parse().unwrap());
        Ok(response)
    }
}

fn file(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Uploads `bytes` as `a.bin` in blocks of `block` bytes through `bucket`.
async fn upload(
    bucket: &Arc<Bucket>,
    bytes: Vec<u8>,
    block: u64,
) -> (Result<(), Error>, Vec<String>) {
    let manager = manager(bucket);
    let mut job = manager.create_job();
    job.server_url = "http://bucket/".into();
    job.block_size = block;
    job.thread_num = 3;
    job.source_value
        .add(manager.generate_url_for_upload_data(bytes), "a.bin", None);
    let outcome = manager.run(&job).unwrap().wait().await;
    (outcome, job.notices())
}

/// A run of `source` as `a.bin` in parts of 5 MiB, one at a time, without
/// retries, resumed from `journals`.
async fn resumed_run(
    bucket: &Arc<Bucket>,
    source: &tempfile::NamedTempFile,
    journals: &tempfile::TempDir,
) -> Result<(), Error> {
    let manager = manager(bucket);
    let mut job = manager.create_job();
    job.server_url = "http://bucket/".into();
    job.block_size = MIN_PART;
    job.thread_num = 1;
    job.retry = fileuploader_core::RetryPolicy::none();
    job.resume = fileuploader_core::Resume::In(journals.path().to_owned());
    job.source_value.add(source.path(), "a.bin", None);
    manager.run(&job).unwrap().wait().await
}

fn manager(bucket: &Arc<Bucket>) -> UploadManager {
    UploadManager::builder(Wire(bucket.clone()))
        .protocol(Parts::new(bucket.clone()))
        .build()
}

#[tokio::test]
async fn a_file_lands_in_parts_of_five_mib_and_the_block_size_grows_to_fit() {
    let bucket = Arc::new(Bucket::default());
    let bytes = file(11 * MIB + 3);
    let (outcome, notices) = upload(&bucket, bytes.clone(), 1 << 20).await;
    outcome.unwrap();
    assert_eq!(lock(&bucket.objects)["in/a.bin"], bytes);
    let sizes: Vec<usize> = lock(&bucket.parts).values().map(Bytes::len).collect();
    assert_eq!(sizes, [MIN_PART as usize, MIN_PART as usize, MIB + 3]);
    assert!(
        notices
            .iter()
            .any(|n| n.contains("block size raised from 1048576 to 5242880")),
        "{notices:?}"
    );
}

#[tokio::test]
async fn a_resumed_upload_sends_only_the_parts_the_bucket_lacks() {
    let bucket = Arc::new(Bucket::default());
    let bytes = file(3 * MIN_PART as usize);
    let mut source = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut source, &bytes).unwrap();
    let journals = tempfile::tempdir().unwrap();
    let run = || resumed_run(&bucket, &source, &journals);
    // The bucket refuses part 3 for good: the run fails, the upload is
    // kept for the next run (not aborted), parts 1 and 2 are in the bucket.
    lock(&bucket.refuse_always).push(3);
    run().await.unwrap_err();
    assert_eq!(*lock(&bucket.aborted), 0, "kept for the next run");
    assert_eq!(*lock(&bucket.sent), 2);
    lock(&bucket.refuse_always).clear();
    run().await.unwrap();
    assert_eq!(lock(&bucket.objects)["in/a.bin"], bytes);
    assert_eq!(*lock(&bucket.sent), 3, "only part 3 was sent again");
    assert_eq!(
        *lock(&bucket.created),
        1,
        "the same upload, found by its saved id"
    );
}

#[tokio::test]
async fn a_completion_whose_answer_was_lost_is_found_landed_by_the_next_run() {
    let bucket = Arc::new(Bucket::default());
    *lock(&bucket.lose_completions) = 1;
    let bytes = file(2 * MIN_PART as usize + 1);
    let mut source = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut source, &bytes).unwrap();
    let journals = tempfile::tempdir().unwrap();
    let run = || resumed_run(&bucket, &source, &journals);
    run().await.unwrap_err();
    run().await.unwrap();
    assert_eq!(lock(&bucket.objects)["in/a.bin"], bytes);
    assert_eq!(*lock(&bucket.created), 1, "no fresh upload");
    assert_eq!(*lock(&bucket.sent), 3, "no part sent again");
}

#[tokio::test]
async fn a_refused_signature_begins_again_and_signs_afresh() {
    let bucket = Arc::new(Bucket::default());
    lock(&bucket.refuse_once).push(2);
    let bytes = file(2 * MIN_PART as usize + 10);
    let (outcome, _) = upload(&bucket, bytes.clone(), MIN_PART).await;
    outcome.unwrap();
    assert_eq!(lock(&bucket.objects)["in/a.bin"], bytes);
    let prepared = lock(&bucket.prepared).clone();
    assert_eq!(prepared.len(), 2, "signed once, then again: {prepared:?}");
    assert!(
        prepared[1].contains(&2) && !prepared[1].contains(&1),
        "{prepared:?}"
    );
}

#[tokio::test]
async fn an_empty_file_sends_no_part() {
    let bucket = Arc::new(Bucket::default());
    let (outcome, _) = upload(&bucket, Vec::new(), MIN_PART).await;
    outcome.unwrap();
    assert_eq!(lock(&bucket.objects)["in/a.bin"], Vec::<u8>::new());
    assert!(lock(&bucket.parts).is_empty());
}

#[tokio::test]
async fn a_failed_upload_without_resume_is_aborted() {
    let bucket = Arc::new(Bucket::default());
    lock(&bucket.refuse_always).push(2);
    let (outcome, _) = upload(&bucket, file(2 * MIN_PART as usize), MIN_PART).await;
    let error = outcome.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Status, "{error}");
    assert_eq!(*lock(&bucket.aborted), 1);
    assert!(lock(&bucket.objects).is_empty());
}

#[tokio::test]
async fn parts_refused_at_completion_are_sent_again_in_a_fresh_upload() {
    let bucket = Arc::new(Bucket::default());
    *lock(&bucket.refuse_completions) = 1;
    let bytes = file(2 * MIN_PART as usize + 10);
    let (outcome, _) = upload(&bucket, bytes.clone(), MIN_PART).await;
    outcome.unwrap();
    assert_eq!(lock(&bucket.objects)["in/a.bin"], bytes);
    assert_eq!(*lock(&bucket.created), 2, "a fresh upload");
    assert_eq!(*lock(&bucket.aborted), 1, "the refused one aborted");
    assert_eq!(*lock(&bucket.sent), 6, "every part sent again");
}

#[tokio::test]
async fn a_cancel_while_the_bucket_creates_the_upload_aborts_what_it_created() {
    let bucket = Arc::new(Bucket::default());
    *lock(&bucket.hold_create) = true;
    let manager = manager(&bucket);
    let mut job = manager.create_job();
    job.server_url = "http://bucket/".into();
    job.block_size = MIN_PART;
    let bytes = manager.generate_url_for_upload_data(file(2 * MIN_PART as usize));
    job.source_value.add(bytes, "a.bin", None);
    let handle = manager.run(&job).unwrap();
    bucket.creating.notified().await;
    assert!(handle.cancel());
    // The bucket answers the creation after the cancel.
    bucket.release.notify_one();
    let error = handle.wait().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Cancelled, "{error}");
    assert_eq!(*lock(&bucket.created), 1);
    assert_eq!(
        *lock(&bucket.aborted),
        1,
        "the upload the creation made is aborted, not left open"
    );
    assert_eq!(*lock(&bucket.sent), 0, "no part is sent after the cancel");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_part_is_waited_for_never_sent_beside_itself() {
    // With hedging on, 20 parts, the 18th stalled: a copy abandoned mid-body
    // could be the attempt a bucket completes from.
    let bucket = Arc::new(Bucket::default());
    lock(&bucket.stall_once).push(18);
    let manager = manager(&bucket);
    let mut job = manager.create_job();
    job.server_url = "http://bucket/".into();
    job.block_size = MIN_PART;
    job.thread_num = 1;
    job.retry = fileuploader_core::RetryPolicy::default().with_hedging(true);
    job.source_value.add(
        manager.generate_url_for_upload_data(file(20 * MIN_PART as usize)),
        "a.bin",
        None,
    );
    let running = manager.run(&job).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    assert!(running.outcome().is_none(), "still waiting");
    assert_eq!(lock(&bucket.tries).get(&18), Some(&1), "sent once");
    assert_eq!(job.progress().hedges, 0);
    assert!(manager.cancel(&job));
}
