//! The mock server's faults fire as scripted and are counted, and the client
//! rides through each of them: nothing is lost, the file reassembles.

use std::time::Duration;

use fileuploader_core::testing::EventLog;
use fileuploader_core::{Job, RetryPolicy, UploadManager};
use fileuploader_mock_server::{
    Action, Attempt, Fault, MockUploadServer, RawFault, RawFaultServer, Target,
};
use fileuploader_transport_hyper::HyperTransport;

fn manager() -> UploadManager {
    UploadManager::new(HyperTransport::new().unwrap())
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy::default().with_initial_backoff(Duration::from_millis(10))
}

/// A job sending `len` pattern bytes from memory to `url` in `block`-byte blocks.
fn job(manager: &UploadManager, url: String, block: u64, len: usize, name: &str) -> (Job, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i * 13 % 256) as u8).collect();
    let mut job = manager.create_job();
    job.server_url = url;
    job.block_size = block;
    job.retry = fast_retries();
    job.source_value.add(
        manager.generate_url_for_upload_data(data.clone()),
        name,
        None,
    );
    (job, data)
}

#[tokio::test]
async fn a_scripted_503_fires_once_is_logged_and_the_block_is_retried() {
    let server = MockUploadServer::builder()
        .fault(Fault::block_once(
            7,
            100,
            Action::RetryAfter(503, "1".into()),
        ))
        .start()
        .await;
    let manager = manager();
    let (job, data) = job(&manager, server.url(), 100, 1000, "f.bin");
    manager.run(&job).unwrap().wait().await.unwrap();
    let fired = server.recording().fired_faults();
    assert_eq!(fired.len(), 1);
    assert_eq!((fired[0].range.unwrap().first, fired[0].attempt), (700, 1));
    assert_eq!(fired[0].action, Action::RetryAfter(503, "1".into()));
    let attempts = server.recording().requests_for_block("f.bin", 700);
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.attempt, a.status))
            .collect::<Vec<_>>(),
        [(1, 503), (2, 200)]
    );
    assert!(
        attempts[1].arrived - attempts[0].arrived >= Duration::from_secs(1),
        "Retry-After: 1 honoured"
    );
    assert_eq!(server.recording().reassembled("f.bin").unwrap(), data);
    assert_eq!(job.progress().retries, 1);
}

#[tokio::test]
async fn every_nth_block_matches_blocks_by_first_arrival() {
    let server = MockUploadServer::builder()
        .fault(Fault::new(
            Target::EveryNth(3),
            Attempt::Always,
            Action::Delay(Duration::from_millis(1)),
        ))
        .start()
        .await;
    let manager = manager();
    let (job, _) = job(&manager, server.url(), 10, 100, "f.bin");
    manager.run(&job).unwrap().wait().await.unwrap();
    let starts: Vec<u64> = server
        .recording()
        .fired_faults()
        .iter()
        .map(|f| f.range.unwrap().first)
        .collect();
    assert_eq!(starts, [0, 30, 60, 90]);
}

#[tokio::test]
async fn connections_closed_or_reset_mid_body_are_retried_and_nothing_is_lost() {
    let script = [
        (2, RawFault::CloseAfter(500)),
        (3, RawFault::Reset),
        (6, RawFault::CloseAfter(10)),
    ];
    let server = RawFaultServer::start(script).await;
    let manager = manager();
    let log = EventLog::default();
    let (mut job, data) = job(&manager, server.url(), 1000, 5000, "r.bin");
    log.attach(&mut job);
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(server.fired().len(), 3, "every scripted fault fired");
    assert_eq!(server.recording().reassembled("r.bin").unwrap(), data);
    assert_eq!(job.progress().retries, 3);
    let p = log.percents();
    assert!(
        p.windows(2).all(|w| w[0] < w[1]),
        "the percentage never goes back on a retry: {p:?}"
    );
}

#[tokio::test]
async fn a_stall_is_aborted_by_the_stall_timeout_and_retried() {
    let server = RawFaultServer::start([(1, RawFault::StallAfter(100))]).await;
    let transport = HyperTransport::builder()
        .stall_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let manager = UploadManager::new(transport);
    // Ranged blocks, which may be sent twice: a stall after the body left
    // leaves the outcome unknown, and only an idempotent request is retried.
    let (job, data) = job(&manager, server.url(), 1000, 3000, "s.bin");
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(server.fired().len(), 1);
    assert_eq!(server.recording().reassembled("s.bin").unwrap(), data);
    assert_eq!(job.progress().retries, 1);
}

#[tokio::test]
async fn without_retries_a_mid_body_close_fails_with_code_7() {
    let server = RawFaultServer::start([(2, RawFault::CloseAfter(500))]).await;
    let manager = manager();
    let (mut job, _) = job(&manager, server.url(), 1000, 3000, "r.bin");
    job.retry = RetryPolicy::none();
    let err = manager.run(&job).unwrap().wait().await.unwrap_err();
    assert_eq!(err.code(), 7, "{err}");
    assert_eq!(
        server.recording().len(),
        1,
        "only the first block arrived whole"
    );
}
