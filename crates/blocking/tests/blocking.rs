//! The blocking facade against the mock server.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fileuploader_blocking::{init, Job, UploadManager};
use fileuploader_core::testing::EventLog;
use fileuploader_mock_server::{Action, Attempt, Fault, MockUploadServer, Target};

/// A mock server with the runtime that hosts it.
fn server(
    builder: fileuploader_mock_server::MockUploadServerBuilder,
) -> (tokio::runtime::Runtime, MockUploadServer) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(builder.start());
    (rt, server)
}

fn job(
    manager: &UploadManager,
    url: String,
    len: usize,
    block: u64,
    log: &EventLog,
) -> (Job, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i % 249) as u8).collect();
    let mut job = manager.create_job();
    job.server_url = url;
    job.block_size = block;
    log.attach(&mut job);
    job.source_value.add(
        manager.generate_url_for_upload_data(data.clone()),
        "b.bin",
        None,
    );
    (job, data)
}

/// Runs `f` on another thread and fails the test if it takes over 20 s.
fn within_20s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(f()));
    rx.recv_timeout(Duration::from_secs(20))
        .expect("finished without deadlock")
}

#[test]
fn success_path_reports_in_order_and_lands_the_bytes() {
    let (_rt, server) = server(MockUploadServer::builder());
    let log = EventLog::default();
    let mut outcome = None;
    init(
        |manager| {
            let (job, data) = job(&manager, server.url(), 50_000, 4096, &log);
            assert!(manager.run(&job), "run starts the job and returns");
            outcome = Some((manager.wait(&job), data));
        },
        |code, message| panic!("init failed: {code} {message}"),
    );
    let (result, data) = outcome.unwrap();
    result.unwrap();
    assert_eq!(server.recording().reassembled("b.bin").unwrap(), data);
    let p = log.percents();
    assert_eq!((p.first(), p.last()), (Some(&0), Some(&100)));
    assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
    assert_eq!(log.all().last().unwrap(), "success");
}

#[test]
fn failure_path_reports_the_code() {
    let (_rt, server) = server(MockUploadServer::builder().fault(Fault::new(
        Target::RangeStart(4096),
        Attempt::Always,
        Action::Status(500),
    )));
    let manager = UploadManager::new().unwrap();
    let log = EventLog::default();
    let (job, _) = job(&manager, server.url(), 50_000, 4096, &log);
    assert!(manager.run(&job));
    let err = manager.wait(&job).unwrap_err();
    assert_eq!(err.code(), 13);
    assert_eq!(log.terminals(), [format!("failure 13 {}", err.message())]);
}

#[test]
fn a_job_that_cannot_start_returns_false_and_reports() {
    let manager = UploadManager::new().unwrap();
    let log = EventLog::default();
    let mut job = manager.create_job();
    job.server_url = "http://127.0.0.1:9/u".into();
    log.attach(&mut job);
    assert!(!manager.run(&job));
    assert_eq!(log.all(), ["failure -4 the job has no sources"]);
    assert_eq!(manager.wait(&job).unwrap_err().code(), -5, "never ran");
    assert_eq!(manager.run_to_end(&job).unwrap_err().code(), -4);
}

#[test]
fn wait_returns_a_finished_jobs_outcome_after_other_jobs_ran() {
    let (_rt, server) = server(MockUploadServer::builder());
    let manager = UploadManager::new().unwrap();
    let log = EventLog::default();
    let (a, _) = job(&manager, server.url(), 3000, 1000, &log);
    let (b, _) = job(&manager, server.url(), 3000, 1000, &EventLog::default());
    assert!(manager.run(&a));
    let started = Instant::now();
    while log.terminals().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "a ended");
        thread::sleep(Duration::from_millis(5));
    }
    assert!(manager.run(&b));
    assert_eq!(
        manager.wait(&a).map_err(|e| e.code()),
        Ok(()),
        "a's outcome is kept"
    );
    manager.wait(&b).unwrap();
    assert_eq!(log.terminals(), ["success"]);
}

#[test]
fn running_a_running_job_is_refused_with_minus_9_and_no_event() {
    let (_rt, server) = server(MockUploadServer::builder().delay(Duration::from_millis(200)));
    let manager = UploadManager::new().unwrap();
    let log = EventLog::default();
    let (a, _) = job(&manager, server.url(), 3000, 1000, &log);
    assert!(manager.run(&a));
    assert_eq!(manager.try_run(&a).unwrap_err().code(), -9);
    manager.wait(&a).unwrap();
    assert_eq!(
        log.terminals(),
        ["success"],
        "only the running run reported"
    );
}

#[test]
fn cancel_and_cancel_all_from_inside_callbacks() {
    let (_rt, server) = server(MockUploadServer::builder().delay(Duration::from_millis(5)));
    let url = server.url();
    let (cancelled, cancelled_all) = within_20s(move || {
        let manager = UploadManager::new().unwrap();
        let log = EventLog::default();
        let (mut a, _) = job(&manager, url.clone(), 200_000, 1000, &log);
        let m = manager.clone();
        a.on_upload_transfer_percentage(move |job, p| {
            if p >= 2 {
                m.cancel(job);
            }
        });
        let first = manager.run_to_end(&a).unwrap_err().code();
        let (mut b, _) = job(&manager, url, 200_000, 1000, &log);
        let m = manager.clone();
        b.on_upload_transfer_percentage(move |_, p| {
            if p >= 2 {
                m.cancel_all_upload();
            }
        });
        (first, manager.run_to_end(&b).unwrap_err().code())
    });
    assert_eq!((cancelled, cancelled_all), (-3, -3));
}

#[test]
fn a_slow_callback_does_not_stall_transfers() {
    let (_rt, server) = server(MockUploadServer::builder());
    let manager = UploadManager::new().unwrap();
    let (tx, rx) = mpsc::channel();
    let (mut job, _) = job(&manager, server.url(), 40_000, 1000, &EventLog::default());
    job.on_upload_transfer_percentage(move |_, p| {
        if p == 0 {
            thread::sleep(Duration::from_millis(1500));
        }
        let _ = tx.send((p, Instant::now()));
    });
    let started = Instant::now();
    assert!(manager.run(&job));
    // All 40 blocks reach the server while the first callback still sleeps.
    while server.recording().len() < 40 {
        assert!(
            started.elapsed() < Duration::from_millis(1400),
            "transfers waited for the callback"
        );
        thread::sleep(Duration::from_millis(10));
    }
    manager.wait(&job).unwrap();
    let reported: Vec<u8> = rx.try_iter().map(|(p, _)| p).collect();
    assert_eq!(reported.first(), Some(&0));
    assert_eq!(
        reported.last(),
        Some(&100),
        "every event still arrives, in order: {reported:?}"
    );
    assert!(reported.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn dropping_the_manager_cancels_running_jobs_without_hanging() {
    let (_rt, server) = server(MockUploadServer::builder().fault(Fault::new(
        Target::Any,
        Attempt::Always,
        Action::Hold,
    )));
    let log = EventLog::default();
    let manager = UploadManager::new().unwrap();
    let (job, _) = job(&manager, server.url(), 10_000, 1000, &log);
    assert!(manager.run(&job));
    while server.recording().is_empty() {
        thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    within_20s(move || drop(manager));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(log.terminals(), ["failure -3 Upload cancelled."]);
}

#[tokio::test]
#[should_panic(expected = "cannot be called from inside an async runtime")]
async fn blocking_calls_inside_a_runtime_panic_clearly() {
    let manager = UploadManager::new().unwrap();
    let job = manager.create_job();
    let _ = manager.wait(&job);
}

#[test]
fn the_run_success_callback_sees_the_receivers_final_answer() {
    let (_rt, server) = server(MockUploadServer::builder());
    let log = EventLog::default();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let mut outcome = None;
    init(
        |manager| {
            let (mut job, _) = job(&manager, server.url(), 10_000, 4096, &log);
            let kept = seen.clone();
            job.on_run_success(move |job| {
                let landing = job.landings().into_iter().next();
                *kept.lock().unwrap() = landing.and_then(|l| l.answer);
            });
            assert!(manager.run(&job));
            outcome = Some(manager.wait(&job));
        },
        |code, message| panic!("init failed: {code} {message}"),
    );
    outcome.unwrap().unwrap();
    let answer: Option<fileuploader_blocking::FinalAnswer> = seen.lock().unwrap().take();
    let answer = answer.expect("the callback saw the final answer");
    assert_eq!(answer.status.as_u16(), 200, "the last block's answer");
}

#[test]
fn the_run_failure_callback_can_read_the_answer_the_run_failed_on() {
    let (_rt, server) = server(MockUploadServer::builder().fault(Fault::new(
        Target::RangeStart(0),
        Attempt::Always,
        Action::Status(403),
    )));
    let manager = UploadManager::new().unwrap();
    let log = EventLog::default();
    let (mut job, _) = job(&manager, server.url(), 10_000, 4096, &log);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let kept = seen.clone();
    job.on_run_failure(move |job, code, _| {
        *kept.lock().unwrap() = Some((code, job.failure_answer().map(|a| a.status.as_u16())));
    });
    assert!(manager.run(&job));
    let err = manager.wait(&job).unwrap_err();
    assert_eq!(err.answer().map(|a| a.status.as_u16()), Some(403));
    assert_eq!(*seen.lock().unwrap(), Some((err.code(), Some(403))));
}
