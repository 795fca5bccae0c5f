//! The mock server itself: faults fire as scripted and are counted, the raw
//! listener breaks requests mid-body, and reassembly catches holes.

use std::time::Duration;

use fileuploader_core::testing::EventLog;
use fileuploader_core::{Job, UploadManager};
use fileuploader_mock_server::{
    Action, Attempt, Fault, MockUploadServer, RawFault, RawFaultServer, Target,
};
use fileuploader_transport_hyper::HyperTransport;

fn manager() -> UploadManager {
    UploadManager::new(HyperTransport::new().unwrap())
}

/// A job sending `len` bytes from memory to `url` in `block`-byte blocks.
fn job(manager: &UploadManager, url: String, block: u64, len: usize, name: &str) -> Job {
    let mut job = manager.create_job();
    job.server_url = url;
    job.block_size = block;
    job.source_value.add(
        manager.generate_url_for_upload_data(vec![7u8; len]),
        name,
        None,
    );
    job
}

#[tokio::test]
async fn scripted_faults_fire_on_their_block_and_attempt_and_are_logged() {
    let server = MockUploadServer::builder()
        .fault(Fault::block_once(
            7,
            100,
            Action::RetryAfter(503, "1".into()),
        ))
        .start()
        .await;
    let manager = manager();
    let job = job(&manager, server.url(), 100, 1000, "f.bin");
    let err = manager.run(&job).unwrap().wait().await.unwrap_err();
    assert_eq!(err.code(), 14);
    let fired = server.recording().fired_faults();
    assert_eq!(fired.len(), 1);
    assert_eq!((fired[0].range.unwrap().first, fired[0].attempt), (700, 1));
    assert_eq!(fired[0].action, Action::RetryAfter(503, "1".into()));
    assert_eq!(
        server.recording().order(),
        [0, 100, 200, 300, 400, 500, 600, 700]
    );
    assert_eq!(
        server.recording().requests_for_block("f.bin", 700)[0].status,
        503
    );
    let err = server.recording().reassembled("f.bin").unwrap_err();
    assert!(err.contains("byte 700"), "{err}");
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
    let job = job(&manager, server.url(), 10, 100, "f.bin");
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
async fn raw_faults_break_requests_mid_body() {
    for (fault, code) in [(RawFault::CloseAfter(500), 7), (RawFault::Reset, 7)] {
        let server = RawFaultServer::start([(2, fault)]).await;
        let manager = manager();
        let log = EventLog::default();
        let mut job = job(&manager, server.url(), 1000, 3000, "r.bin");
        log.attach(&mut job);
        let err = manager.run(&job).unwrap().wait().await.unwrap_err();
        assert_eq!(err.code(), code, "{fault:?}: {err}");
        assert_eq!(server.fired().len(), 1);
        assert_eq!(
            server.recording().len(),
            1,
            "only the first block arrived whole"
        );
    }
}

#[tokio::test]
async fn a_raw_stall_trips_the_stall_timeout() {
    let server = RawFaultServer::start([(1, RawFault::StallAfter(100))]).await;
    let manager = UploadManager::new(
        HyperTransport::builder()
            .stall_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let job = job(&manager, server.url(), 10240, 3000, "s.bin");
    let err = manager.run(&job).unwrap().wait().await.unwrap_err();
    assert_eq!(err.code(), 11);
    assert!(err.message().starts_with("stall timeout"), "{err}");
}
