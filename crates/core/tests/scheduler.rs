//! Block plan on the wire, concurrency, progress, terminal events, cancel,
//! error codes and memory bounds, over the in-memory transport.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fileuploader_core::testing::{
    CountedSource, EventLog, MemoryTransport, RecordedRequest, Reply,
};
use fileuploader_core::{code, Job, UploadManager};
use futures_util::stream;
use http::StatusCode;

const URL: &str = "http://127.0.0.1:9/upload";

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn temp_file(data: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(data).unwrap();
    f
}

/// Parses a recorded request with multer: (name, filename, bytes) per part.
async fn parts(r: &RecordedRequest) -> Vec<(String, Option<String>, Bytes)> {
    let ct = r.headers["content-type"].to_str().unwrap();
    let boundary = multer::parse_boundary(ct).unwrap();
    let body = stream::iter([Ok::<_, std::io::Error>(r.body.clone())]);
    let mut form = multer::Multipart::new(body, boundary);
    let mut out = Vec::new();
    while let Some(f) = form.next_field().await.unwrap() {
        let name = f.name().unwrap().to_owned();
        let file = f.file_name().map(str::to_owned);
        out.push((name, file, f.bytes().await.unwrap()));
    }
    out
}

fn job(manager: &UploadManager, events: &EventLog) -> Job {
    let mut job = manager.create_job();
    job.server_url = URL.into();
    // Retries have their own tests; here each failure must surface at once.
    job.retry = fileuploader_core::RetryPolicy::none();
    events.attach(&mut job);
    job
}

#[tokio::test]
async fn multi_block_file_arrives_in_exact_ranges_and_reassembles() {
    let data = pattern(25_000);
    let file = temp_file(&data);
    let transport = MemoryTransport::new();
    let manager = UploadManager::new(transport.clone());
    let events = EventLog::default();
    let mut job = job(&manager, &events);
    job.block_size = 10_000;
    job.form_field.add("customField", "FormFieldValue");
    job.source_value
        .add(file.path().to_str().unwrap(), "scan.bin", None);
    manager.run(&job).unwrap().wait().await.unwrap();

    let requests = transport.requests();
    let ranges: Vec<_> = requests
        .iter()
        .map(|r| r.content_range().unwrap().to_owned())
        .collect();
    assert_eq!(
        ranges,
        [
            "bytes 0-9999/25000",
            "bytes 10000-19999/25000",
            "bytes 20000-24999/25000"
        ]
    );
    let mut rebuilt = Vec::new();
    for r in &requests {
        assert_eq!(r.method, http::Method::POST);
        assert_eq!(r.uri, URL);
        let cl: usize = r.headers["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(cl, r.body.len());
        let p = parts(r).await;
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].0.as_str(), &p[0].2[..]),
            ("customField", &b"FormFieldValue"[..])
        );
        assert_eq!(
            (p[1].0.as_str(), p[1].1.as_deref()),
            ("RemoteFile", Some("scan.bin"))
        );
        let crc = format!("{:08x}", crc32c::crc32c(&p[1].2));
        assert_eq!(
            (p[2].0.as_str(), &p[2].2[..]),
            (fileuploader_core::BLOCK_CRC32C_FIELD, crc.as_bytes()),
            "the block's CRC32C follows it"
        );
        rebuilt.extend_from_slice(&p[1].2);
    }
    assert_eq!(rebuilt, data);
    let ids: Vec<_> = requests
        .iter()
        .map(|r| r.headers["x-upload-id"].clone())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one upload id per source"
    );
    assert_eq!(events.terminals(), ["success"]);
    assert_eq!(*events.percents().last().unwrap(), 100);
}

#[tokio::test]
async fn single_block_and_empty_sources_are_sent_whole() {
    let transport = MemoryTransport::new();
    let manager = UploadManager::new(transport.clone());
    let events = EventLog::default();
    let mut job = job(&manager, &events);
    job.block_size = 100;
    let small = manager.generate_url_for_upload_data(pattern(100));
    let empty = temp_file(b"");
    job.source_value.add(small, "small.bin", "doc");
    job.source_value
        .add(empty.path().to_str().unwrap(), "", None);
    job.file_name = "fallback.txt".into();
    manager.run(&job).unwrap().wait().await.unwrap();

    let requests = transport.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.content_range().is_none()));
    let p0 = parts(&requests[0]).await;
    assert_eq!(
        (p0[0].0.as_str(), p0[0].1.as_deref(), p0[0].2.len()),
        ("doc", Some("small.bin"), 100)
    );
    let p1 = parts(&requests[1]).await;
    assert_eq!(
        (p1[0].0.as_str(), p1[0].1.as_deref(), p1[0].2.len()),
        ("RemoteFile", Some("fallback.txt"), 0)
    );
    assert_ne!(
        requests[0].headers["x-upload-id"],
        requests[1].headers["x-upload-id"]
    );
    // All bytes are acknowledged after the first request, but the empty
    // source is still outstanding: 99, not 100.
    assert_eq!(events.all(), ["0", "99", "100", "success"]);
}

#[tokio::test]
async fn thread_num_bounds_requests_in_flight() {
    for threads in [1usize, 3, 4] {
        let transport = MemoryTransport::scripted(Duration::from_millis(15), |_, _| {
            Reply::Status(StatusCode::OK, "")
        });
        let manager = UploadManager::new(transport.clone());
        let mut job = job(&manager, &EventLog::default());
        job.block_size = 1000;
        job.thread_num = threads;
        job.source_value.add(
            manager.generate_url_for_upload_data(pattern(20_000)),
            "a",
            None,
        );
        manager.run(&job).unwrap().wait().await.unwrap();
        assert_eq!(transport.requests().len(), 20);
        assert_eq!(transport.peak_in_flight(), threads, "thread_num {threads}");
    }
}

#[tokio::test]
async fn progress_starts_at_zero_rises_on_change_and_ends_at_100() {
    let transport = MemoryTransport::new();
    let manager = UploadManager::new(transport);
    let events = EventLog::default();
    let mut job = job(&manager, &events);
    job.block_size = 7;
    job.thread_num = 3;
    job.source_value.add(
        manager.generate_url_for_upload_data(pattern(1000)),
        "a",
        None,
    );
    manager.run(&job).unwrap().wait().await.unwrap();
    let p = events.percents();
    assert_eq!(p[0], 0);
    assert!(p.windows(2).all(|w| w[0] < w[1]), "strictly rising: {p:?}");
    assert_eq!(*p.last().unwrap(), 100);
    assert_eq!(events.all().last().unwrap(), "success");
    let progress = job.progress();
    assert_eq!(
        (progress.bytes_acknowledged, progress.total_bytes),
        (1000, 1000)
    );
    assert_eq!(
        (progress.blocks_acknowledged, progress.total_blocks),
        (143, 143)
    );
    assert_eq!(progress.bytes_sent, 1000);
    assert_eq!(job.http_version(), "1.1");
}

#[tokio::test]
async fn status_failures_map_to_reference_codes_with_one_terminal_event() {
    let cases = [
        (404, 12),
        (500, 13),
        (503, 14),
        (502, 24),
        (403, 26),
        (301, 26),
        (413, 32),
    ];
    for (status, expected) in cases {
        let transport = MemoryTransport::scripted(Duration::ZERO, move |r, _| {
            if r.content_range() == Some("bytes 30-39/100") {
                Reply::Status(StatusCode::from_u16(status).unwrap(), "nope")
            } else {
                Reply::Status(StatusCode::OK, "")
            }
        });
        let manager = UploadManager::new(transport);
        let events = EventLog::default();
        let mut job = job(&manager, &events);
        job.block_size = 10;
        job.thread_num = 2;
        job.source_value.add(
            manager.generate_url_for_upload_data(pattern(100)),
            "f.bin",
            None,
        );
        let err = manager.run(&job).unwrap().wait().await.unwrap_err();
        assert_eq!(err.code(), expected, "status {status}: {err}");
        assert!(err.message().contains(&status.to_string()), "{err}");
        assert!(err.message().contains("block 4 of 10"), "{err}");
        assert_eq!(
            events.terminals(),
            [format!("failure {expected} {}", err.message())]
        );
        assert!(!events.percents().contains(&100));
    }
}

#[tokio::test]
async fn transport_errors_map_to_codes() {
    use fileuploader_core::TransportErrorKind as K;
    for (kind, expected) in [
        (K::Connect, 4),
        (K::Dns, 3),
        (K::Timeout, 11),
        (K::Tls, 35),
        (K::Reset, 7),
    ] {
        let transport = MemoryTransport::scripted(Duration::ZERO, move |_, _| Reply::Fail(kind));
        let manager = UploadManager::new(transport);
        let mut job = job(&manager, &EventLog::default());
        job.source_value
            .add(manager.generate_url_for_upload_data(pattern(10)), "f", None);
        let err = manager.run(&job).unwrap().wait().await.unwrap_err();
        assert_eq!(err.code(), expected, "{kind:?}");
    }
}

#[tokio::test]
async fn invalid_jobs_are_refused_with_codes_and_send_nothing() {
    let transport = MemoryTransport::new();
    let manager = UploadManager::new(transport.clone());
    let dir = tempfile::tempdir().unwrap();
    let file = temp_file(b"x");
    let path = file.path().to_str().unwrap().to_owned();
    type Edit = Box<dyn Fn(&mut Job)>;
    let cases: Vec<(i32, &str, Edit)> = vec![
        (-4, "no sources", Box::new(|_| {})),
        (-7, "empty", Box::new(|j| j.source_value.add("", "a", None))),
        (
            27,
            "cannot",
            Box::new(|j| j.source_value.add("/no/such/file", "a", None)),
        ),
        (27, "not a regular file", {
            let d = dir.path().to_str().unwrap().to_owned();
            Box::new(move |j| j.source_value.add(d.clone(), "a", None))
        }),
        (-2, "invalid", {
            let p = path.clone();
            Box::new(move |j| {
                j.source_value.add(p.clone(), "a", None);
                j.server_url = "not a url".into();
            })
        }),
        (-2, "ftp", {
            let p = path.clone();
            Box::new(move |j| {
                j.source_value.add(p.clone(), "a", None);
                j.server_url = "ftp://127.0.0.1/x".into();
            })
        }),
        (-10, "block_size 0", Box::new(|j| j.block_size = 0)),
        (-10, "thread_num 0", Box::new(|j| j.thread_num = 0)),
        (-10, "thread_num 17", Box::new(|j| j.thread_num = 17)),
        (-10, "CR, LF", {
            let p = path.clone();
            Box::new(move |j| {
                j.source_value.add(p.clone(), "a", None);
                j.http_header.insert("X-Evil", "a\r\nInjected: 1");
            })
        }),
        (-10, "invalid header name", {
            let p = path.clone();
            Box::new(move |j| {
                j.source_value.add(p.clone(), "a", None);
                j.http_header.insert("Bad Name", "1");
            })
        }),
        (-10, "set by the uploader", {
            let p = path.clone();
            Box::new(move |j| {
                j.source_value.add(p.clone(), "a", None);
                j.http_header.insert("Content-Length", "1");
            })
        }),
        (-10, "header Content-Type is set by the uploader", {
            // It would replace the multipart boundary and break every block.
            let p = path.clone();
            Box::new(move |j| {
                j.source_value.add(p.clone(), "a", None);
                j.http_header.insert("Content-Type", "multipart/form-data");
            })
        }),
    ];
    for (expected, words, edit) in cases {
        let events = EventLog::default();
        let mut job = job(&manager, &events);
        edit(&mut job);
        let err = manager.run(&job).unwrap_err();
        assert_eq!(err.code(), expected, "{words}: {err}");
        assert!(err.message().contains(words), "{words:?} not in {err}");
        assert_eq!(
            events.all(),
            [format!("failure {expected} {}", err.message())]
        );
    }
    assert!(transport.requests().is_empty());
}

#[test]
fn run_outside_a_runtime_is_an_error_not_a_panic() {
    let manager = UploadManager::new(MemoryTransport::new());
    let mut job = manager.create_job();
    job.server_url = URL.into();
    job.source_value
        .add(manager.generate_url_for_upload_data(&b"x"[..]), "a", None);
    assert_eq!(
        manager.run(&job).unwrap_err().code(),
        code::CANNOT_CREATE_JOB
    );
}

#[tokio::test]
async fn a_running_job_cannot_run_twice() {
    let manager = UploadManager::new(MemoryTransport::scripted(Duration::ZERO, |_, _| {
        Reply::Hang
    }));
    let mut job = job(&manager, &EventLog::default());
    job.source_value
        .add(manager.generate_url_for_upload_data(&b"x"[..]), "a", None);
    let handle = manager.run(&job).unwrap();
    assert_eq!(manager.run(&job).unwrap_err().code(), code::ALREADY_RUNNING);
    assert!(manager.cancel(&job));
    assert_eq!(handle.wait().await.unwrap_err().code(), code::CANCELLED);
}

#[tokio::test]
async fn cancel_aborts_in_flight_and_starts_nothing_after() {
    let transport = MemoryTransport::scripted(Duration::from_secs(3600), |_, _| {
        Reply::Status(StatusCode::OK, "")
    });
    let manager = UploadManager::new(transport.clone());
    let events = EventLog::default();
    let mut job = job(&manager, &events);
    job.block_size = 10;
    job.thread_num = 3;
    job.source_value.add(
        manager.generate_url_for_upload_data(pattern(1000)),
        "a",
        None,
    );
    let handle = manager.run(&job).unwrap();
    while transport.in_flight() < 3 {
        tokio::task::yield_now().await;
    }
    assert!(manager.cancel(&job));
    let sent_at_cancel = transport.requests().len();
    let err = handle.wait().await.unwrap_err();
    assert_eq!((err.code(), err.message()), (-3, "Upload cancelled."));
    assert_eq!(transport.in_flight(), 0, "in-flight requests were aborted");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(transport.requests().len(), sent_at_cancel);
    assert_eq!(sent_at_cancel, 3);
    assert_eq!(events.all(), ["0", "failure -3 Upload cancelled."]);
    assert!(!manager.cancel(&job), "no longer running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_inside_the_progress_callback() {
    let transport = MemoryTransport::scripted(Duration::from_millis(2), |_, _| {
        Reply::Status(StatusCode::OK, "")
    });
    let manager = UploadManager::new(transport.clone());
    let events = EventLog::default();
    let mut job = job(&manager, &events);
    job.block_size = 10;
    job.source_value.add(
        manager.generate_url_for_upload_data(pattern(1000)),
        "a",
        None,
    );
    let (m, log, t) = (manager.clone(), events.clone(), transport.clone());
    let at_cancel = Arc::new(AtomicUsize::new(0));
    let seen = at_cancel.clone();
    job.on_upload_transfer_percentage(move |job, p| {
        log.push(format!("{p}"));
        if p > 0 {
            assert!(m.cancel(job));
            seen.store(t.requests().len(), Ordering::SeqCst);
        }
    });
    let err = tokio::time::timeout(Duration::from_secs(10), async {
        manager.run(&job).unwrap().wait().await
    })
    .await
    .expect("no deadlock")
    .unwrap_err();
    assert_eq!(err.code(), -3);
    assert_eq!(events.all(), ["0", "1", "failure -3 Upload cancelled."]);
    // The one worker may have passed its last check the instant before the
    // flag was set; after that, nothing starts.
    let at_cancel = at_cancel.load(Ordering::SeqCst);
    assert!(at_cancel < 100);
    assert!(
        transport.requests().len() <= at_cancel + 1,
        "started after cancel"
    );
}

#[tokio::test]
async fn cancel_all_upload_stops_every_job() {
    let transport = MemoryTransport::scripted(Duration::ZERO, |_, _| Reply::Hang);
    let manager = UploadManager::new(transport);
    assert!(!manager.cancel_all_upload(), "nothing to cancel");
    let all = EventLog::default();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let mut job = job(&manager, &all);
            job.source_value
                .add(manager.generate_url_for_upload_data(&b"abc"[..]), "a", None);
            manager.run(&job).unwrap()
        })
        .collect();
    let m = manager.clone();
    let mut trigger = job(&manager, &EventLog::default());
    trigger
        .source_value
        .add(manager.generate_url_for_upload_data(&b"abc"[..]), "a", None);
    trigger.on_upload_transfer_percentage(move |_, _| {
        assert!(m.cancel_all_upload());
    });
    let trigger = manager.run(&trigger).unwrap();
    for h in handles.iter().chain([&trigger]) {
        assert_eq!(h.wait().await.unwrap_err().code(), -3);
    }
    assert_eq!(all.terminals().len(), 3);
    assert!(!manager.cancel_all_upload());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_bounded_by_threads_times_block_size() {
    let transport = MemoryTransport::scripted(Duration::from_millis(1), |_, _| {
        Reply::Status(StatusCode::OK, "")
    });
    let manager = UploadManager::new(transport.clone());
    let source = CountedSource::new(8 << 20);
    let mut job = job(&manager, &EventLog::default());
    job.block_size = 64 << 10;
    job.thread_num = 4;
    job.source_value
        .add_source(Arc::new(source.clone()), "big.bin", None);
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(source.reads(), 128, "each block read once, as it is sent");
    assert_eq!(source.live(), 0, "every block buffer freed");
    let peak = source.peak();
    assert!(peak <= 4 * (64 << 10), "peak {peak} bytes of blocks alive");
    assert!(peak >= 2 * (64 << 10), "blocks really overlapped: {peak}");
    let total: usize = transport.requests().iter().map(|r| r.body.len()).sum();
    assert!(total > 8 << 20);
}

#[tokio::test]
async fn a_panicking_callback_does_not_break_the_job() {
    let transport = MemoryTransport::new();
    let manager = UploadManager::new(transport.clone());
    let events = EventLog::default();
    let mut job = job(&manager, &events);
    job.block_size = 10;
    job.source_value.add(
        manager.generate_url_for_upload_data(pattern(100)),
        "a",
        None,
    );
    job.on_upload_transfer_percentage(|_, p| assert!(p < 50, "a user callback panics at {p}"));
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(transport.requests().len(), 10);
    assert_eq!(events.terminals(), ["success"]);
}

fn retrying(attempts: u32) -> fileuploader_core::RetryPolicy {
    fileuploader_core::RetryPolicy::default()
        .with_max_attempts(attempts)
        .with_initial_backoff(Duration::from_millis(1))
}

#[tokio::test]
async fn a_retry_reads_the_block_again_and_succeeds() {
    let transport = MemoryTransport::scripted(Duration::ZERO, |r, attempt| {
        match (r.content_range(), attempt) {
            (Some("bytes 10-19/30"), 1 | 2) => Reply::Status(StatusCode::SERVICE_UNAVAILABLE, ""),
            (Some("bytes 20-29/30"), 1) => {
                Reply::Fail(fileuploader_core::TransportErrorKind::Reset)
            }
            _ => Reply::Status(StatusCode::OK, ""),
        }
    });
    let manager = UploadManager::new(transport.clone());
    let events = EventLog::default();
    let mut job = job(&manager, &events);
    job.block_size = 10;
    job.retry = retrying(3);
    let source = CountedSource::new(30);
    job.source_value
        .add_source(Arc::new(source.clone()), "r.bin", None);
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(transport.requests().len(), 6);
    assert_eq!(source.reads(), 6, "every attempt re-read its block");
    assert_eq!(source.live(), 0);
    assert_eq!(job.progress().retries, 3);
    assert_eq!(job.progress().bytes_sent, 60, "sent counts retries");
    assert_eq!(events.terminals(), ["success"]);
}

#[tokio::test]
async fn attempts_per_block_are_capped_and_other_4xx_fail_fast() {
    for (status, attempts, expected) in [(503, 3, 14), (429, 2, 26), (404, 1, 12), (400, 1, 26)] {
        let transport = MemoryTransport::scripted(Duration::ZERO, move |_, _| {
            Reply::Status(StatusCode::from_u16(status).unwrap(), "")
        });
        let manager = UploadManager::new(transport.clone());
        let mut job = job(&manager, &EventLog::default());
        job.retry = retrying(attempts);
        job.source_value
            .add(manager.generate_url_for_upload_data(pattern(5)), "a", None);
        let err = manager.run(&job).unwrap().wait().await.unwrap_err();
        assert_eq!(err.code(), expected, "{status}");
        assert_eq!(
            transport.requests().len(),
            attempts as usize,
            "{status}: {err}"
        );
        if attempts > 1 {
            assert!(
                err.message()
                    .ends_with(&format!("(gave up after {attempts} attempts)")),
                "{err}"
            );
        }
    }
}

#[tokio::test]
async fn a_retry_after_beyond_the_limit_fails_the_block() {
    let transport = MemoryTransport::scripted(Duration::ZERO, |_, _| {
        Reply::RetryAfter(StatusCode::SERVICE_UNAVAILABLE, "120")
    });
    let manager = UploadManager::new(transport.clone());
    let mut job = job(&manager, &EventLog::default());
    job.retry = retrying(5).with_max_retry_after(Duration::from_secs(60));
    job.source_value
        .add(manager.generate_url_for_upload_data(pattern(5)), "a", None);
    let err = manager.run(&job).unwrap().wait().await.unwrap_err();
    assert_eq!(err.code(), 14);
    assert!(
        err.message().contains("wait longer than max_retry_after"),
        "{err}"
    );
    assert_eq!(
        transport.requests().len(),
        1,
        "no retry once the server asks for too long"
    );
}

#[tokio::test]
async fn a_file_that_grows_during_the_upload_fails_instead_of_landing_wrong() {
    let file = temp_file(&pattern(100));
    let path = file.path().to_owned();
    let transport = MemoryTransport::scripted(Duration::ZERO, move |r, _| {
        if r.content_range() == Some("bytes 30-39/100") {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"more").unwrap();
        }
        Reply::Status(StatusCode::OK, "")
    });
    let manager = UploadManager::new(transport.clone());
    let events = EventLog::default();
    let mut job = job(&manager, &events);
    job.block_size = 10;
    job.source_value
        .add(file.path().to_str().unwrap(), "g.bin", None);
    let err = manager.run(&job).unwrap().wait().await.unwrap_err();
    assert_eq!(err.code(), code::READ_FAILED);
    assert!(err.message().contains("changed during upload"), "{err}");
    assert_eq!(
        transport.requests().len(),
        4,
        "nothing after the change was sent"
    );
    assert_eq!(events.terminals(), [format!("failure 8 {}", err.message())]);
}

#[tokio::test]
async fn header_values_with_invisible_bytes_are_refused() {
    let manager = UploadManager::new(MemoryTransport::new());
    for value in ["a\u{1}b", "tab\tok\u{7f}", "nul\0"] {
        let mut job = job(&manager, &EventLog::default());
        job.source_value
            .add(manager.generate_url_for_upload_data(pattern(3)), "a", None);
        job.http_header.insert("X-Thing", value);
        assert_eq!(
            manager.run(&job).unwrap_err().code(),
            code::INVALID_OPTION,
            "{value:?}"
        );
    }
}

/// Takes bodies piece by piece and cuts the file short once the first
/// piece of a large block is out; a body that then fails is reported as a
/// reset connection, which the core would normally retry.
#[derive(Debug)]
struct TruncatesMidBody {
    path: std::path::PathBuf,
    bodies: AtomicUsize,
}

#[async_trait::async_trait]
impl fileuploader_core::Transport for TruncatesMidBody {
    async fn send(
        &self,
        request: fileuploader_core::Request,
    ) -> Result<fileuploader_core::Response, fileuploader_core::TransportError> {
        if request.method() == http::Method::POST {
            self.bodies.fetch_add(1, Ordering::SeqCst);
        }
        let mut body = request.into_body();
        let mut taken = 0;
        while let Some(chunk) = body.next_chunk().await {
            let chunk = chunk.map_err(|e| {
                fileuploader_core::TransportError::new(
                    fileuploader_core::TransportErrorKind::Reset,
                    e.to_string(),
                )
            })?;
            taken += chunk.len();
            if taken > fileuploader_core::READ_PIECE {
                std::fs::File::options()
                    .write(true)
                    .open(&self.path)
                    .unwrap()
                    .set_len(100)
                    .unwrap();
            }
        }
        Ok(fileuploader_core::Response::new(Bytes::new()))
    }
}

#[tokio::test]
async fn a_file_cut_short_while_a_large_block_streams_fails_with_the_read_error() {
    let len = 3 * fileuploader_core::READ_PIECE + 10;
    let file = temp_file(&pattern(len));
    let transport = Arc::new(TruncatesMidBody {
        path: file.path().to_owned(),
        bodies: AtomicUsize::new(0),
    });
    let manager = UploadManager::new(transport.clone());
    let events = EventLog::default();
    let mut job = job(&manager, &events);
    job.retry = fileuploader_core::RetryPolicy::default();
    // No checksum pass, so only the streaming read can see the change.
    job.integrity = fileuploader_core::Integrity::None;
    job.block_size = len as u64;
    job.source_value
        .add(file.path().to_str().unwrap(), "cut.bin", None);
    let err = manager.run(&job).unwrap().wait().await.unwrap_err();
    assert_eq!(err.code(), code::READ_FAILED, "{err}");
    assert!(err.message().contains("changed during upload"), "{err}");
    assert_eq!(
        transport.bodies.load(Ordering::SeqCst),
        1,
        "a source that changed is not sent again"
    );
    assert_eq!(events.terminals(), [format!("failure 8 {}", err.message())]);
}

/// Answers 422 (the receiver discarded the upload) to the last of five
/// blocks on its first `times` attempts.
fn discarding(times: usize) -> MemoryTransport {
    MemoryTransport::scripted(Duration::ZERO, move |r, attempt| match r.content_range() {
        Some(range) if range.starts_with("bytes 40-") && attempt <= times => {
            Reply::Status(StatusCode::UNPROCESSABLE_ENTITY, "discarded")
        }
        _ => Reply::Status(StatusCode::OK, ""),
    })
}

#[tokio::test]
async fn a_discarded_upload_is_sent_again_from_the_start() {
    let transport = discarding(1);
    let manager = UploadManager::new(transport.clone());
    let events = EventLog::default();
    let mut job = job(&manager, &events);
    job.block_size = 10;
    let data = pattern(50);
    job.source_value.add(
        manager.generate_url_for_upload_data(data.clone()),
        "d.bin",
        None,
    );
    manager.run(&job).unwrap().wait().await.unwrap();
    let ranges: Vec<String> = transport
        .requests()
        .iter()
        .map(|r| r.content_range().unwrap().to_owned())
        .collect();
    assert_eq!(ranges.len(), 10, "every block twice: {ranges:?}");
    assert_eq!(ranges[4], "bytes 40-49/50");
    assert_eq!(ranges[5], "bytes 0-9/50", "the second pass starts over");
    assert_eq!(
        transport.queries().len(),
        1,
        "asked at the resync only (a new upload id has nothing to ask about)"
    );
    assert_eq!(job.progress().bytes_acknowledged, 50);
    assert_eq!(events.terminals(), ["success"]);
}

#[tokio::test]
async fn a_receiver_that_keeps_discarding_fails_the_job_after_three_fresh_starts() {
    let transport = discarding(usize::MAX);
    let manager = UploadManager::new(transport.clone());
    let events = EventLog::default();
    let mut job = job(&manager, &events);
    job.block_size = 10;
    job.source_value.add(
        manager.generate_url_for_upload_data(pattern(50)),
        "d.bin",
        None,
    );
    let err = manager.run(&job).unwrap().wait().await.unwrap_err();
    assert_eq!(err.code(), code::HTTP_OTHER, "{err}");
    assert!(
        err.message().contains("422")
            && err
                .message()
                .ends_with("(the receiver lost the upload again after 3 fresh starts)"),
        "{err}"
    );
    assert_eq!(transport.requests().len(), 20, "four passes of five blocks");
    assert_eq!(events.terminals().len(), 1);
}

/// Takes every body whole, then reports the connection reset, as when the
/// answer is lost after the request arrived.
#[derive(Debug, Default)]
struct LosesEveryAnswer {
    bodies: AtomicUsize,
}

#[async_trait::async_trait]
impl fileuploader_core::Transport for LosesEveryAnswer {
    async fn send(
        &self,
        request: fileuploader_core::Request,
    ) -> Result<fileuploader_core::Response, fileuploader_core::TransportError> {
        if request.method() != http::Method::POST {
            let mut response = fileuploader_core::Response::new(Bytes::new());
            *response.status_mut() = StatusCode::NOT_FOUND;
            return Ok(response);
        }
        request.into_body().into_bytes().await.unwrap();
        self.bodies.fetch_add(1, Ordering::SeqCst);
        Err(fileuploader_core::TransportError::new(
            fileuploader_core::TransportErrorKind::Reset,
            "connection reset after the body",
        ))
    }
}

#[tokio::test]
async fn a_whole_file_whose_answer_was_lost_is_not_sent_twice_to_a_receiver_that_cannot_say() {
    let transport = Arc::new(LosesEveryAnswer::default());
    let manager = UploadManager::new(transport.clone());
    let events = EventLog::default();
    let mut job = job(&manager, &events);
    job.retry = retrying(5);
    job.source_value.add(
        manager.generate_url_for_upload_data(pattern(100)),
        "once.bin",
        None,
    );
    let err = manager.run(&job).unwrap().wait().await.unwrap_err();
    assert_eq!(err.code(), code::UPLOAD_FAILED, "{err}");
    assert!(err.message().contains("could land it twice"), "{err}");
    assert_eq!(transport.bodies.load(Ordering::SeqCst), 1, "sent once");
}

#[tokio::test]
async fn a_block_whose_answer_was_lost_is_sent_again_since_ranges_are_idempotent() {
    let transport = Arc::new(LosesEveryAnswer::default());
    let manager = UploadManager::new(transport.clone());
    let mut job = job(&manager, &EventLog::default());
    job.retry = retrying(3);
    job.block_size = 50;
    job.source_value.add(
        manager.generate_url_for_upload_data(pattern(100)),
        "r.bin",
        None,
    );
    let err = manager.run(&job).unwrap().wait().await.unwrap_err();
    assert_eq!(err.code(), code::UPLOAD_FAILED);
    assert!(
        err.message().ends_with("(gave up after 3 attempts)"),
        "{err}"
    );
    assert_eq!(transport.bodies.load(Ordering::SeqCst), 3, "retried");
}

/// A new upload id someone else took before any block of ours arrived
/// (403, "belongs to other credentials"): the upload begins again under
/// another id and lands; nothing of it stays under the taken one.
#[tokio::test]
async fn a_new_upload_id_taken_by_someone_else_is_replaced() {
    let taken = std::sync::Mutex::new(None::<String>);
    let transport = MemoryTransport::scripted(Duration::ZERO, move |r, _| {
        let id = r.headers["x-upload-id"].to_str().unwrap().to_owned();
        let first = taken.lock().unwrap().get_or_insert(id.clone()).clone();
        if id == first {
            Reply::Status(
                StatusCode::FORBIDDEN,
                "this upload id belongs to other credentials",
            )
        } else {
            Reply::Status(StatusCode::OK, "")
        }
    });
    let manager = UploadManager::new(transport.clone());
    let events = EventLog::default();
    let mut job = job(&manager, &events);
    job.block_size = 10;
    job.thread_num = 1;
    job.source_value.add(
        manager.generate_url_for_upload_data(pattern(50)),
        "t.bin",
        None,
    );
    manager.run(&job).unwrap().wait().await.unwrap();
    let ids: Vec<String> = transport
        .requests()
        .iter()
        .map(|r| r.headers["x-upload-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 6, "one refused block, then five: {ids:?}");
    assert!(ids[1..].iter().all(|id| *id == ids[1] && *id != ids[0]));
    assert_eq!(events.terminals(), ["success"]);
}

/// The script for the hedging tests: blocks answer after the transport's
/// delay, but the first request for block 30 never answers.
fn stalls_block_30(r: &RecordedRequest, attempt: usize) -> Reply {
    let stalled = r.content_range() == Some("bytes 300-309/500");
    if stalled && attempt == 1 {
        Reply::Hang
    } else {
        Reply::Status(StatusCode::OK, "")
    }
}

/// A job of 50 blocks of 10 bytes, two in flight, to a transport that
/// answers after 10 ms but stalls block 30's first request; hedging as
/// `hedge` says. The temporary file must outlive the job.
fn stalling_job(hedge: bool) -> (MemoryTransport, UploadManager, Job, tempfile::NamedTempFile) {
    let file = temp_file(&pattern(500));
    let transport = MemoryTransport::scripted(Duration::from_millis(10), stalls_block_30);
    let manager = UploadManager::new(transport.clone());
    let mut job = job(&manager, &EventLog::default());
    job.retry = fileuploader_core::RetryPolicy::default().with_hedging(hedge);
    job.block_size = 10;
    job.thread_num = 2;
    job.source_value
        .add(file.path().to_str().unwrap(), "stall.bin", None);
    (transport, manager, job, file)
}

#[tokio::test(start_paused = true)]
async fn a_block_stalled_far_past_the_recent_ones_is_sent_again_beside_itself() {
    let (transport, manager, job, _file) = stalling_job(true);
    let started = tokio::time::Instant::now();
    manager.run(&job).unwrap().wait().await.unwrap();
    // 50 blocks of 10 ms, two at a time, and one wait of 4 × the recent
    // 95th percentile (10 ms), at least 250 ms, before the hedge.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let requests = transport.requests();
    let stalled: Vec<_> = requests
        .iter()
        .filter(|r| r.content_range() == Some("bytes 300-309/500"))
        .collect();
    assert_eq!(stalled.len(), 2, "the stalled block went twice");
    assert_eq!(stalled[1].body, stalled[0].body, "the same bytes");
    assert_eq!(requests.len(), 51);
    assert_eq!(job.progress().hedges, 1);
    assert_eq!(job.progress().bytes_acknowledged, 500);
}

#[tokio::test(start_paused = true)]
async fn without_hedging_a_stalled_block_is_waited_for() {
    let (_transport, manager, job, _file) = stalling_job(false);
    let running = manager.run(&job).unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(running.outcome().is_none(), "still waiting");
    assert_eq!(job.progress().hedges, 0);
    assert_eq!(
        job.progress().bytes_acknowledged,
        490,
        "all but the stalled block"
    );
    assert!(manager.cancel(&job));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_block_is_not_hedged_while_the_job_retries_failures() {
    // Block 30 stalls while block 31 is refused once (503): the receiver
    // is failing, not straggling, and a hedge would only add to its load.
    let file = temp_file(&pattern(500));
    let transport = MemoryTransport::scripted(Duration::from_millis(10), |r, attempt| {
        match (r.content_range(), attempt) {
            (Some("bytes 300-309/500"), 1) => Reply::Hang,
            (Some("bytes 310-319/500"), 1) => Reply::Status(StatusCode::SERVICE_UNAVAILABLE, ""),
            _ => Reply::Status(StatusCode::OK, ""),
        }
    });
    let manager = UploadManager::new(transport.clone());
    let mut job = job(&manager, &EventLog::default());
    job.retry = fileuploader_core::RetryPolicy::default().with_hedging(true);
    job.block_size = 10;
    job.thread_num = 2;
    job.source_value
        .add(file.path().to_str().unwrap(), "stall.bin", None);
    let running = manager.run(&job).unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(running.outcome().is_none(), "still waiting for block 30");
    let progress = job.progress();
    assert_eq!((progress.retries, progress.hedges), (1, 0));
    assert_eq!(progress.bytes_acknowledged, 490);
    assert!(manager.cancel(&job));
}

/// A job of 400 blocks of 10 bytes, at most 16 in flight, to a receiver
/// that works on five requests at once, 10 ms each.
fn saturating_job(auto: bool) -> (MemoryTransport, UploadManager, Job, tempfile::NamedTempFile) {
    let file = temp_file(&pattern(4000));
    let transport = MemoryTransport::saturating(Duration::from_millis(10), 5);
    let manager = UploadManager::new(transport.clone());
    let mut job = job(&manager, &EventLog::default());
    job.block_size = 10;
    job.thread_num = 16;
    job.auto_threads = auto;
    job.source_value
        .add(file.path().to_str().unwrap(), "paced.bin", None);
    (transport, manager, job, file)
}

#[tokio::test(start_paused = true)]
async fn auto_threads_grow_to_what_the_receiver_takes_and_no_further() {
    let (transport, manager, job, _file) = saturating_job(true);
    let started = tokio::time::Instant::now();
    manager.run(&job).unwrap().wait().await.unwrap();
    let took = started.elapsed();
    let progress = job.progress();
    assert_eq!(progress.bytes_acknowledged, 4000);
    // Five at a time, 10 ms each: 800 ms at best; the search costs a little.
    assert!(took < Duration::from_millis(1000), "{took:?}");
    // All its requests answer at the same instants, so its throughput
    // reads a little off either way: near five, not at the ceiling.
    let limit = progress.thread_limit;
    assert!((4..=10).contains(&limit), "settled at {limit}");
    let late = &transport.requests()[200..];
    let most = late.iter().map(|r| r.in_flight).max().unwrap();
    assert!(most <= 10, "{most} in flight after the search; 16 allowed");
}

#[tokio::test(start_paused = true)]
async fn fixed_threads_keep_every_one_in_flight() {
    let (transport, manager, job, _file) = saturating_job(false);
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(job.progress().thread_limit, 16);
    assert_eq!(transport.peak_in_flight(), 16);
}

#[tokio::test(start_paused = true)]
async fn auto_threads_halve_on_a_failure() {
    let file = temp_file(&pattern(2000));
    let transport = MemoryTransport::scripted(Duration::from_millis(10), |r, attempt| {
        match (r.content_range(), attempt) {
            (Some("bytes 1500-1509/2000"), 1) => Reply::Status(StatusCode::SERVICE_UNAVAILABLE, ""),
            _ => Reply::Status(StatusCode::OK, ""),
        }
    });
    let manager = UploadManager::new(transport.clone());
    let mut job = manager.create_job();
    job.server_url = URL.into();
    job.block_size = 10;
    job.thread_num = 16;
    job.auto_threads = true;
    job.source_value
        .add(file.path().to_str().unwrap(), "failing.bin", None);
    let mut limits = Vec::new();
    let running = manager.run(&job).unwrap();
    while running.outcome().is_none() {
        limits.extend(Some(job.progress().thread_limit).filter(|&l| l > 0));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    running.wait().await.unwrap();
    assert_eq!(job.progress().retries, 1);
    assert_eq!(limits[0], 4, "begins with four");
    // No limit to the receiver: it doubles to the ceiling, then halves once.
    let top = limits.iter().position(|&l| l == 16).expect("reached 16");
    assert!(limits[top..].contains(&8), "{limits:?}");
}
