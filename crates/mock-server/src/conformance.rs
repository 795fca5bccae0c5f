//! The conformance suite: public scenarios that upload through a transport to
//! a [`MockUploadServer`] and check what arrived. Each panics with a clear
//! message on failure; [`run_all`] runs them all and reports each.
//!
//! # Examples
//!
//! Checking a transport from your own crate's tests (here the hyper one);
//! the protocol scenarios upload to a receiver you start, such as
//! `fileuploader_server::Receiver` (a dev-dependency of yours, not of this
//! crate):
//!
//! ```no_run
//! use std::sync::Arc;
//! use fileuploader_core::Transport;
//! use fileuploader_mock_server::conformance;
//! use fileuploader_transport_hyper::HyperTransport;
//! # async fn serve(_: std::path::PathBuf, _: tokio::net::TcpListener) -> std::io::Result<()> { Ok(()) }
//!
//! # #[tokio::main] async fn main() {
//! let factory: conformance::TransportFactory =
//!     Arc::new(|| Arc::new(HyperTransport::new().unwrap()) as Arc<dyn Transport>);
//! // `serve` runs the receiver: for the reference one,
//! // `fileuploader_server::Receiver::new(dir)?.serve(listener).await`.
//! let receiver = conformance::receiver(serve);
//! conformance::assert_all_passed(&conformance::run_all(factory, Some(receiver)).await);
//! # }
//! ```

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fileuploader_core::testing::{CountedSource, EventLog};
use fileuploader_core::{Job, RetryPolicy, Transport, UploadManager};

use crate::answers::{Answers, Query};
use crate::draft::{
    draft9_104_only_in_the_requests_version, draft9_a_cancelled_upload_is_gone,
    draft9_a_mismatching_offset_is_a_409_with_the_offset,
    draft9_an_interrupted_append_is_not_complete,
    draft9_an_offset_told_during_a_hung_append_is_accepted,
    draft9_creation_names_the_upload_and_records_its_length,
    draft9_inconsistent_lengths_are_refused, draft9_offset_retrieval_by_head_and_get,
    draft9_options_announces_limits, draft9_our_client_keeps_the_clients_musts,
    draft9_the_completing_append_says_complete, draft9_the_offset_never_passes_the_length,
};
use crate::faults::{Action, Attempt, Fault, Target};
use crate::protocols::{
    protocol_ietf_lands_every_size, protocol_ietf_resumes_after_cancel,
    protocol_segmented_lands_every_size, protocol_segmented_resumes_after_cancel,
    protocol_tus_lands_every_size, protocol_tus_resumes_after_cancel,
};
pub use crate::protocols::{receiver, ReceiverFactory, Served};
use crate::raw::{RawFault, RawFaultServer};
use crate::server::MockUploadServer;

/// Makes a fresh transport for each scenario.
pub type TransportFactory = Arc<dyn Fn() -> Arc<dyn Transport> + Send + Sync>;

type ScenarioFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One named check.
#[derive(Clone)]
pub struct Scenario {
    /// Its name, as printed in reports.
    pub name: &'static str,
    run: fn(TransportFactory, Option<ReceiverFactory>) -> ScenarioFuture,
}

/// A protocol scenario run without a receiver: it fails saying how to
/// give one.
fn needs_a_receiver() -> ScenarioFuture {
    Box::pin(async {
        panic!(
            "this scenario uploads to a receiver of all three protocols: pass one to run_all, \
             as conformance::receiver(|dir, listener| async move {{ \
             fileuploader_server::Receiver::new(dir)?.serve(listener).await }})"
        )
    })
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// How one scenario went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario's name.
    pub name: &'static str,
    /// `Err` with the failure message.
    pub result: Result<(), String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Scenarios may not run longer than this.
const LIMIT: Duration = Duration::from_secs(60);

macro_rules! scenarios {
    ($($name:ident),* $(,)?; with a receiver: $($with:ident),* $(,)?) => {
        /// Every scenario of the suite, in order: those of the transport
        /// alone, then those that upload to a receiver.
        pub fn scenarios() -> Vec<Scenario> {
            vec![
                $(Scenario { name: stringify!($name), run: |t, _| Box::pin($name(t)) },)*
                $(Scenario {
                    name: stringify!($with),
                    run: |t, r| match r {
                        Some(r) => Box::pin($with(t, r)),
                        None => needs_a_receiver(),
                    },
                },)*
            ]
        }
    };
}

scenarios![
    one_block_file,
    multi_block_file,
    several_sources,
    custom_key_and_file_name,
    form_fields_with_unusual_characters,
    headers_added_and_replacing_defaults,
    thread_num_respected,
    progress_rules,
    exactly_one_terminal_event,
    status_code_mapping,
    cancel_mid_run,
    cancel_from_progress_callback,
    cancel_all_upload_with_several_jobs,
    zero_byte_file,
    many_blocks_with_bounded_memory,
    large_blocks_streamed_from_disk,
    in_memory_source,
    retries_503_on_a_fifth_of_first_attempts,
    retry_after_429_is_honoured,
    a_held_reply_is_not_a_failure,
    retries_stop_at_the_budget,
    thousands_of_blocks_with_ten_percent_failures,
    session_landing_confirmed_by_the_receiver,
    session_begins_with_the_ranges_the_receiver_holds,
    session_resyncs_when_the_receiver_loses_the_upload,
    session_finish_failing_fails_the_job,
    session_aborts_on_cancel_when_nothing_can_resume,
    transport_aborts_a_request_when_dropped,
    transport_follows_no_redirect_by_default,
    transport_reports_the_version_it_used,
    transport_mid_body_close_is_retried,
    transport_reset_is_retried,
    transport_stall_ends_in_a_timeout_and_is_retried;
    with a receiver:
    protocol_segmented_lands_every_size,
    protocol_tus_lands_every_size,
    protocol_ietf_lands_every_size,
    protocol_segmented_resumes_after_cancel,
    protocol_tus_resumes_after_cancel,
    protocol_ietf_resumes_after_cancel,
    draft9_options_announces_limits,
    draft9_creation_names_the_upload_and_records_its_length,
    draft9_offset_retrieval_by_head_and_get,
    draft9_a_mismatching_offset_is_a_409_with_the_offset,
    draft9_inconsistent_lengths_are_refused,
    draft9_the_offset_never_passes_the_length,
    draft9_the_completing_append_says_complete,
    draft9_an_interrupted_append_is_not_complete,
    draft9_an_offset_told_during_a_hung_append_is_accepted,
    draft9_104_only_in_the_requests_version,
    draft9_a_cancelled_upload_is_gone,
    draft9_our_client_keeps_the_clients_musts,
];

/// Runs one scenario on its own task, catching its panic as a failure;
/// the protocol scenarios upload to receivers from `receiver`.
pub async fn run(
    scenario: &Scenario,
    factory: TransportFactory,
    receiver: Option<ReceiverFactory>,
) -> Outcome {
    let start = Instant::now();
    let task = tokio::spawn(tokio::time::timeout(
        LIMIT,
        (scenario.run)(factory, receiver),
    ));
    let result = match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(format!("did not finish within {LIMIT:?}")),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            Err(payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()))
        }
        Err(e) => Err(e.to_string()),
    };
    Outcome {
        name: scenario.name,
        result,
        elapsed: start.elapsed(),
    }
}

/// Runs every scenario against transports from `factory`, the protocol
/// scenarios against receivers from `receiver` (each fails, saying so,
/// without one).
pub async fn run_all(factory: TransportFactory, receiver: Option<ReceiverFactory>) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for scenario in scenarios() {
        outcomes.push(run(&scenario, factory.clone(), receiver.clone()).await);
    }
    outcomes
}

/// Panics listing every failed scenario, if any failed.
///
/// # Panics
///
/// When any outcome is a failure.
pub fn assert_all_passed(outcomes: &[Outcome]) {
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| format!("{}: {e}", o.name)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failed.len(),
        outcomes.len(),
        failed.join("\n")
    );
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn temp_file(data: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("a temporary file");
    f.write_all(data).expect("write the temporary file");
    f
}

fn new_job(
    manager: &UploadManager,
    server: &MockUploadServer,
    block: u64,
    threads: usize,
    log: &EventLog,
) -> Job {
    let mut job = manager.create_job();
    job.server_url = server.url();
    job.block_size = block;
    job.thread_num = threads;
    job.retry = RetryPolicy::default().with_initial_backoff(Duration::from_millis(10));
    log.attach(&mut job);
    job
}

/// Adds `len` pattern bytes, registered in memory, as a source named `name`.
fn add_memory(job: &mut Job, manager: &UploadManager, len: usize, seed: u8, name: &str) -> Vec<u8> {
    let data = pattern(len, seed);
    job.source_value.add(
        manager.generate_url_for_upload_data(data.clone()),
        name,
        None,
    );
    data
}

/// Uploads `data` from a file on disk as `name` to a fresh server, which
/// it returns with what arrived.
async fn upload_from_disk(
    transport: TransportFactory,
    (block, threads): (u64, usize),
    data: &[u8],
    name: &str,
    log: &EventLog,
) -> MockUploadServer {
    let server = MockUploadServer::start().await;
    let manager = UploadManager::new(transport());
    let file = temp_file(data);
    let mut job = new_job(&manager, &server, block, threads, log);
    job.source_value.add(file.path(), name, None);
    finish(&manager, &job).await.expect("upload succeeds");
    server
}

async fn finish(manager: &UploadManager, job: &Job) -> Result<(), fileuploader_core::Error> {
    manager.run(job)?.wait().await
}

/// A file within one block: one request, no `Content-Range`, exact bytes.
pub async fn one_block_file(transport: TransportFactory) {
    let data = pattern(1000, 1);
    let server = upload_from_disk(
        transport,
        (10240, 1),
        &data,
        "one.bin",
        &EventLog::default(),
    )
    .await;
    let arrivals = server.recording().arrivals();
    assert_eq!(arrivals.len(), 1, "one request for a one-block file");
    let a = &arrivals[0];
    assert!(
        a.well_formed,
        "the body parses as multipart with one file part"
    );
    assert!(a.range.is_none(), "no Content-Range on a single-block file");
    assert_eq!(a.key.as_deref(), Some("RemoteFile"));
    assert_eq!(a.file_name.as_deref(), Some("one.bin"));
    assert_eq!(&a.data[..], &data[..], "the exact bytes");
}

/// A file of many blocks: every range exact, the file reassembles.
pub async fn multi_block_file(transport: TransportFactory) {
    let data = pattern(100_000, 2);
    let server = upload_from_disk(
        transport,
        (7000, 3),
        &data,
        "multi.bin",
        &EventLog::default(),
    )
    .await;
    let arrivals = server.recording().arrivals();
    assert_eq!(arrivals.len(), 15, "ceil(100000 / 7000) requests");
    let mut ranges: Vec<(u64, u64, u64)> = arrivals
        .iter()
        .map(|a| {
            a.range
                .map(|r| (r.first, r.last, r.total))
                .expect("every block has Content-Range")
        })
        .collect();
    ranges.sort_unstable();
    let expected: Vec<(u64, u64, u64)> = (0..15u64)
        .map(|i| (i * 7000, ((i + 1) * 7000).min(100_000) - 1, 100_000))
        .collect();
    assert_eq!(ranges, expected, "every range exact");
    assert!(
        arrivals.iter().all(|a| a.well_formed),
        "every body is well-formed multipart"
    );
    assert_eq!(
        server
            .recording()
            .reassembled("multi.bin")
            .expect("reassembles"),
        data
    );
}

/// Several sources in one job each arrive whole under their own upload id.
pub async fn several_sources(transport: TransportFactory) {
    let server = MockUploadServer::start().await;
    let manager = UploadManager::new(transport());
    let files: Vec<(Vec<u8>, &str)> = vec![
        (pattern(25_000, 3), "a.bin"),
        (pattern(5, 4), "b.bin"),
        (pattern(12_001, 5), "c.bin"),
    ];
    let temps: Vec<_> = files.iter().map(|(d, _)| temp_file(d)).collect();
    let mut job = new_job(&manager, &server, 4096, 2, &EventLog::default());
    for (temp, (_, name)) in temps.iter().zip(&files) {
        job.source_value.add(temp.path(), *name, None);
    }
    finish(&manager, &job).await.expect("upload succeeds");
    for (data, name) in &files {
        assert_eq!(
            &server.recording().reassembled(name).expect("reassembles"),
            data,
            "{name}"
        );
    }
    let ids: std::collections::BTreeSet<_> = server
        .recording()
        .arrivals()
        .iter()
        .map(|a| a.upload_id.clone())
        .collect();
    assert_eq!(ids.len(), 3, "one upload id per source");
}

/// The key and the remote name given to `source_value.add`, and the job's
/// `file_name` for a source added without one.
pub async fn custom_key_and_file_name(transport: TransportFactory) {
    let server = MockUploadServer::start().await;
    let manager = UploadManager::new(transport());
    let file = temp_file(b"png bytes");
    let mut job = new_job(&manager, &server, 10240, 1, &EventLog::default());
    job.file_name = "fallback.dat".into();
    job.source_value.add(file.path(), "scan 1.png", "image");
    job.source_value
        .add(manager.generate_url_for_upload_data(&b"x"[..]), "", None);
    finish(&manager, &job).await.expect("upload succeeds");
    let arrivals = server.recording().arrivals();
    let named = arrivals
        .iter()
        .find(|a| a.file_name.as_deref() == Some("scan 1.png"))
        .expect("the named source arrived");
    assert_eq!(named.key.as_deref(), Some("image"));
    let fallback = arrivals
        .iter()
        .find(|a| a.file_name.as_deref() == Some("fallback.dat"))
        .expect("the job's file_name was used");
    assert_eq!(fallback.key.as_deref(), Some("RemoteFile"));
}

/// Field names and values with quotes, line breaks and non-ASCII arrive
/// intact (names escaped as browsers do) and forge no part.
pub async fn form_fields_with_unusual_characters(transport: TransportFactory) {
    let server = MockUploadServer::start().await;
    let manager = UploadManager::new(transport());
    let mut job = new_job(&manager, &server, 10240, 1, &EventLog::default());
    job.form_field.add("customField", "FormFieldValue");
    job.form_field.add("naïve key", "välue ✓");
    job.form_field
        .add("quote\"d", "line1\r\nline2\r\n--not-a-boundary");
    job.form_field.add("empty", "");
    job.source_value.add(
        manager.generate_url_for_upload_data(&b"data"[..]),
        "f.txt",
        None,
    );
    finish(&manager, &job).await.expect("upload succeeds");
    let a = &server.recording().arrivals()[0];
    assert!(a.well_formed);
    let expected = [
        ("customField", "FormFieldValue"),
        ("naïve key", "välue ✓"),
        ("quote%22d", "line1\r\nline2\r\n--not-a-boundary"),
        ("empty", ""),
    ];
    let got: Vec<(&str, &str)> = a
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(got, expected, "fields arrive in order, intact");
    assert_eq!(&a.data[..], b"data");
}

/// `http_header` entries are added, and replace a default of the same name.
pub async fn headers_added_and_replacing_defaults(transport: TransportFactory) {
    let server = MockUploadServer::start().await;
    let manager = UploadManager::new(transport());
    let mut job = new_job(&manager, &server, 10240, 1, &EventLog::default());
    job.http_header.insert("X-Custom", "custom value");
    job.http_header.insert("User-Agent", "scanner/2.0");
    job.source_value.add(
        manager.generate_url_for_upload_data(&b"data"[..]),
        "f.txt",
        None,
    );
    finish(&manager, &job).await.expect("upload succeeds");
    let a = &server.recording().arrivals()[0];
    assert_eq!(
        a.headers.get("x-custom").map(|v| v.as_bytes()),
        Some(&b"custom value"[..])
    );
    let agents: Vec<_> = a.headers.get_all("user-agent").iter().collect();
    assert_eq!(
        agents,
        ["scanner/2.0"],
        "the default User-Agent was replaced, not doubled"
    );
}

/// Peak concurrency equals `thread_num` when blocks are plenty, never more.
pub async fn thread_num_respected(transport: TransportFactory) {
    for threads in [1, 2, 4] {
        let server = MockUploadServer::builder()
            .delay(Duration::from_millis(40))
            .start()
            .await;
        let manager = UploadManager::new(transport());
        let mut job = new_job(&manager, &server, 1000, threads, &EventLog::default());
        add_memory(&mut job, &manager, 16_000, 6, "c.bin");
        finish(&manager, &job).await.expect("upload succeeds");
        assert_eq!(server.recording().len(), 16);
        assert_eq!(
            server.recording().max_concurrency(),
            threads,
            "peak concurrency with thread_num {threads}"
        );
    }
}

/// 0 first, never down, on change only, 100 last, then success.
pub async fn progress_rules(transport: TransportFactory) {
    let server = MockUploadServer::start().await;
    let manager = UploadManager::new(transport());
    let log = EventLog::default();
    let mut job = new_job(&manager, &server, 1000, 3, &log);
    add_memory(&mut job, &manager, 250_000, 7, "p.bin");
    finish(&manager, &job).await.expect("upload succeeds");
    let p = log.percents();
    assert_eq!(p.first(), Some(&0), "0 first: {p:?}");
    assert!(
        p.windows(2).all(|w| w[0] < w[1]),
        "rising, on change only: {p:?}"
    );
    assert_eq!(p.last(), Some(&100), "100 last: {p:?}");
    assert_eq!(
        log.all().last().map(String::as_str),
        Some("success"),
        "success right after 100"
    );
}

/// One terminal event per run, success or failure.
pub async fn exactly_one_terminal_event(transport: TransportFactory) {
    let server = MockUploadServer::builder()
        .fault(Fault::new(
            Target::RangeStart(2000),
            Attempt::Always,
            Action::Status(404),
        ))
        .start()
        .await;
    let manager = UploadManager::new(transport());
    for (len, ok) in [(1500, true), (10_000, false)] {
        let log = EventLog::default();
        let mut job = new_job(&manager, &server, 1000, 2, &log);
        add_memory(&mut job, &manager, len, 8, "t.bin");
        let outcome = finish(&manager, &job).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(outcome.is_ok(), ok);
        assert_eq!(
            log.terminals().len(),
            1,
            "one terminal event: {:?}",
            log.all()
        );
    }
}

/// Each non-success status maps to its reference code.
pub async fn status_code_mapping(transport: TransportFactory) {
    for (status, code) in [
        (404, 12),
        (500, 13),
        (503, 14),
        (502, 24),
        (403, 26),
        (413, 32),
        (301, 26),
    ] {
        let server = MockUploadServer::builder()
            .fault(Fault::new(
                Target::RangeStart(1000),
                Attempt::Always,
                Action::Status(status),
            ))
            .start()
            .await;
        let manager = UploadManager::new(transport());
        let log = EventLog::default();
        let mut job = new_job(&manager, &server, 1000, 1, &log);
        job.retry = RetryPolicy::none();
        add_memory(&mut job, &manager, 3000, 9, "s.bin");
        let err = finish(&manager, &job).await.expect_err("the job fails");
        assert_eq!(err.code(), code, "HTTP {status}: {err}");
        assert_eq!(
            log.terminals(),
            [format!("failure {code} {}", err.message())]
        );
    }
}

/// After `cancel` returns no block starts; the job fails with -3.
pub async fn cancel_mid_run(transport: TransportFactory) {
    let server = MockUploadServer::builder()
        .delay(Duration::from_millis(150))
        .start()
        .await;
    let manager = UploadManager::new(transport());
    let log = EventLog::default();
    let mut job = new_job(&manager, &server, 1000, 2, &log);
    add_memory(&mut job, &manager, 50_000, 10, "x.bin");
    let handle = manager.run(&job).expect("the job starts");
    while server.recording().len() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(manager.cancel(&job), "cancel finds the running job");
    let at_cancel = server.recording().len();
    let err = handle.wait().await.expect_err("cancelled");
    assert_eq!((err.code(), err.message()), (-3, "Upload cancelled."));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = server.recording().len();
    assert!(
        after <= at_cancel + 2,
        "{} blocks arrived after cancel beyond the 2 in flight",
        after - at_cancel
    );
    assert_eq!(log.terminals(), ["failure -3 Upload cancelled."]);
}

/// `cancel` from inside the progress callback works and does not deadlock.
pub async fn cancel_from_progress_callback(transport: TransportFactory) {
    let server = MockUploadServer::builder()
        .delay(Duration::from_millis(20))
        .start()
        .await;
    let manager = UploadManager::new(transport());
    let log = EventLog::default();
    let mut job = new_job(&manager, &server, 1000, 2, &log);
    add_memory(&mut job, &manager, 100_000, 11, "x.bin");
    let m = manager.clone();
    let l = log.clone();
    job.on_upload_transfer_percentage(move |job, p| {
        l.push(p.to_string());
        if p >= 1 {
            m.cancel(job);
        }
    });
    let err = finish(&manager, &job).await.expect_err("cancelled");
    assert_eq!(err.code(), -3);
    assert_eq!(log.terminals(), ["failure -3 Upload cancelled."]);
    assert!(server.recording().len() < 100, "the job stopped early");
}

/// `cancel_all_upload` stops every running job.
pub async fn cancel_all_upload_with_several_jobs(transport: TransportFactory) {
    let server = MockUploadServer::builder()
        .fault(Fault::new(Target::Any, Attempt::Always, Action::Hold))
        .start()
        .await;
    let manager = UploadManager::new(transport());
    let log = EventLog::default();
    let mut handles = Vec::new();
    for i in 0..3 {
        let mut job = new_job(&manager, &server, 1000, 1, &log);
        add_memory(&mut job, &manager, 5000, i, &format!("{i}.bin"));
        handles.push(manager.run(&job).expect("the job starts"));
    }
    while server.recording().len() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(manager.cancel_all_upload());
    for handle in handles {
        let err = handle.wait().await.expect_err("cancelled");
        assert_eq!(err.code(), -3);
    }
    assert_eq!(log.terminals().len(), 3);
}

/// A zero-byte file is one request with an empty part.
pub async fn zero_byte_file(transport: TransportFactory) {
    let log = EventLog::default();
    let server = upload_from_disk(transport, (1000, 1), b"", "empty.bin", &log).await;
    let arrivals = server.recording().arrivals();
    assert_eq!(arrivals.len(), 1);
    assert!(arrivals[0].well_formed && arrivals[0].range.is_none() && arrivals[0].data.is_empty());
    assert_eq!(log.all(), ["0", "100", "success"]);
}

/// Many blocks, with the block buffers alive never above
/// `thread_num × block_size`.
pub async fn many_blocks_with_bounded_memory(transport: TransportFactory) {
    let server = MockUploadServer::start().await;
    let manager = UploadManager::new(transport());
    let source = CountedSource::new(2 << 20);
    let mut job = new_job(&manager, &server, 8192, 4, &EventLog::default());
    job.source_value
        .add_source(Arc::new(source.clone()), "big.bin", None);
    finish(&manager, &job).await.expect("upload succeeds");
    assert_eq!(server.recording().len(), 256);
    let peak = source.peak();
    assert!(
        peak <= 4 * 8192,
        "{peak} bytes of blocks alive at once, bound {}",
        4 * 8192
    );
    assert_eq!(source.live(), 0, "the transport kept no block");
    let file = server
        .recording()
        .reassembled("big.bin")
        .expect("reassembles");
    assert!(
        file.iter()
            .enumerate()
            .all(|(i, &b)| b == CountedSource::byte_at(i as u64)),
        "bytes intact"
    );
}

/// Blocks of several read pieces, from a file: each body is read from disk
/// while it is sent, arrives exact, and is followed by the CRC32C of its
/// bytes.
pub async fn large_blocks_streamed_from_disk(transport: TransportFactory) {
    let block = 3 * fileuploader_core::READ_PIECE as u64 + 1000;
    let data = pattern(3 * block as usize + 12_345, 5);
    let server = upload_from_disk(
        transport,
        (block, 2),
        &data,
        "large.bin",
        &EventLog::default(),
    )
    .await;
    let arrivals = server.recording().arrivals();
    assert_eq!(arrivals.len(), 4, "three whole blocks and a short one");
    for a in &arrivals {
        let range = a.range.expect("every block has Content-Range");
        let expected = &data[range.first as usize..=range.last as usize];
        assert!(a.data[..] == *expected, "block at {} exact", range.first);
        assert_eq!(
            a.crc32c,
            Some(format!("{:08x}", crc32c::crc32c(expected))),
            "block at {} is followed by its CRC32C",
            range.first
        );
    }
    assert_eq!(
        server
            .recording()
            .reassembled("large.bin")
            .expect("reassembles"),
        data
    );
}

/// Bytes registered in memory upload like a file.
pub async fn in_memory_source(transport: TransportFactory) {
    let server = MockUploadServer::start().await;
    let manager = UploadManager::new(transport());
    let data = pattern(30_000, 12);
    let url = manager.generate_url_for_upload_data(data.clone());
    let mut job = new_job(&manager, &server, 10240, 2, &EventLog::default());
    job.source_value.add(url.clone(), "mem.bin", None);
    finish(&manager, &job).await.expect("upload succeeds");
    assert_eq!(
        server
            .recording()
            .reassembled("mem.bin")
            .expect("reassembles"),
        data
    );
    assert!(manager.release_upload_data(&url));
}

/// 503 on the first attempt of every fifth block: each is retried once,
/// and the file lands whole.
pub async fn retries_503_on_a_fifth_of_first_attempts(transport: TransportFactory) {
    let server = MockUploadServer::builder()
        .fault(Fault::new(
            Target::EveryNth(5),
            Attempt::Nth(1),
            Action::Status(503),
        ))
        .start()
        .await;
    let manager = UploadManager::new(transport());
    let log = EventLog::default();
    let mut job = new_job(&manager, &server, 1000, 3, &log);
    let data = add_memory(&mut job, &manager, 50_000, 13, "r.bin");
    finish(&manager, &job)
        .await
        .expect("the retries carry the upload");
    assert_eq!(server.recording().fired_faults().len(), 10);
    assert_eq!(job.progress().retries, 10);
    assert_eq!(
        server
            .recording()
            .reassembled("r.bin")
            .expect("reassembles"),
        data
    );
    let p = log.percents();
    assert!(p.windows(2).all(|w| w[0] < w[1]), "never backwards: {p:?}");
}

/// 429 with `Retry-After: 1`: the block is sent again no sooner than a
/// second later.
pub async fn retry_after_429_is_honoured(transport: TransportFactory) {
    let server = MockUploadServer::builder()
        .fault(Fault::block_once(
            2,
            1000,
            Action::RetryAfter(429, "1".into()),
        ))
        .start()
        .await;
    let manager = UploadManager::new(transport());
    let mut job = new_job(&manager, &server, 1000, 1, &EventLog::default());
    let data = add_memory(&mut job, &manager, 4000, 14, "w.bin");
    finish(&manager, &job).await.expect("upload succeeds");
    let tries = server.recording().requests_for_block("w.bin", 2000);
    assert_eq!(
        tries.iter().map(|a| a.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let waited = tries[1].arrived - tries[0].arrived;
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert_eq!(
        server
            .recording()
            .reassembled("w.bin")
            .expect("reassembles"),
        data
    );
}

/// A reply held for a second and a half is slow, not failed: no retry.
pub async fn a_held_reply_is_not_a_failure(transport: TransportFactory) {
    let server = MockUploadServer::builder()
        .fault(Fault::block_once(
            1,
            1000,
            Action::Delay(Duration::from_millis(1500)),
        ))
        .start()
        .await;
    let manager = UploadManager::new(transport());
    let mut job = new_job(&manager, &server, 1000, 2, &EventLog::default());
    let data = add_memory(&mut job, &manager, 3000, 15, "h.bin");
    finish(&manager, &job).await.expect("upload succeeds");
    assert_eq!(job.progress().retries, 0);
    assert_eq!(server.recording().len(), 3);
    assert_eq!(
        server
            .recording()
            .reassembled("h.bin")
            .expect("reassembles"),
        data
    );
}

/// A server that always answers 503 exhausts the job's retry budget, and
/// the job fails with 14.
pub async fn retries_stop_at_the_budget(transport: TransportFactory) {
    let server = MockUploadServer::builder()
        .fault(Fault::new(
            Target::Any,
            Attempt::Always,
            Action::Status(503),
        ))
        .start()
        .await;
    let manager = UploadManager::new(transport());
    let log = EventLog::default();
    let mut job = new_job(&manager, &server, 1000, 1, &log);
    job.retry.budget = Some(3);
    add_memory(&mut job, &manager, 10_000, 16, "b.bin");
    let err = finish(&manager, &job)
        .await
        .expect_err("the budget runs out");
    assert_eq!(err.code(), 14, "{err}");
    assert!(err.message().contains("retry budget"), "{err}");
    assert_eq!(server.recording().len(), 4, "one attempt and three retries");
    assert_eq!(log.terminals().len(), 1);
}

/// Thousands of blocks with a tenth failing once: the job completes.
pub async fn thousands_of_blocks_with_ten_percent_failures(transport: TransportFactory) {
    let server = MockUploadServer::builder()
        .fault(Fault::new(
            Target::EveryNth(10),
            Attempt::Nth(1),
            Action::Status(500),
        ))
        .start()
        .await;
    let manager = UploadManager::new(transport());
    let mut job = new_job(&manager, &server, 256, 4, &EventLog::default());
    let data = add_memory(&mut job, &manager, 2000 * 256, 17, "k.bin");
    finish(&manager, &job).await.expect("upload succeeds");
    assert_eq!(server.recording().fired_faults().len(), 200);
    assert_eq!(job.progress().retries, 200);
    assert_eq!(
        server
            .recording()
            .reassembled("k.bin")
            .expect("reassembles"),
        data
    );
}

/// A server that answers for its uploads, and a job of `len` pattern bytes
/// to it in `block`-byte blocks, one at a time.
async fn answering(
    transport: &TransportFactory,
    answers: Answers,
    len: usize,
    block: u64,
) -> (MockUploadServer, UploadManager, Job, Vec<u8>) {
    let server = MockUploadServer::builder().answers(answers).start().await;
    let manager = UploadManager::new(transport());
    let mut job = new_job(&manager, &server, block, 1, &EventLog::default());
    let data = add_memory(&mut job, &manager, len, 21, "s.bin");
    (server, manager, job, data)
}

/// The first bytes of each block that arrived, sorted.
fn starts(server: &MockUploadServer) -> Vec<u64> {
    let mut starts = server.recording().order();
    starts.sort_unstable();
    starts
}

/// A receiver that answers confirms the landing in its answer to the last
/// block; a new upload is asked nothing (its id is new: nothing to hold).
pub async fn session_landing_confirmed_by_the_receiver(transport: TransportFactory) {
    let (server, manager, job, data) = answering(&transport, Answers::truthful(), 5000, 1000).await;
    finish(&manager, &job).await.expect("upload succeeds");
    let p = job.progress();
    assert_eq!(
        (p.landings_confirmed, p.landings_unconfirmed),
        (1, 0),
        "the landing is confirmed"
    );
    let queries = server.queries();
    assert!(queries.is_empty(), "no status query: {queries:?}");
    assert_eq!(
        server
            .recording()
            .reassembled("s.bin")
            .expect("reassembles"),
        data
    );
}

/// A receiver that already holds part of an interrupted upload gets only
/// the rest when the upload resumes: the run after one stopped asks what
/// it holds under the id the journal kept.
pub async fn session_begins_with_the_ranges_the_receiver_holds(transport: TransportFactory) {
    let answers = Answers::truthful().holding(10_000, vec![(0, 4000), (7000, 8000)]);
    let server = MockUploadServer::builder()
        .delay(Duration::from_millis(100))
        .answers(answers)
        .start()
        .await;
    let manager = UploadManager::new(transport());
    let journals = tempfile::tempdir().expect("a temporary directory");
    let data = pattern(10_000, 21);
    let file = temp_file(&data);
    let job_of = || {
        let mut job = new_job(&manager, &server, 1000, 1, &EventLog::default());
        job.source_value.add(file.path(), "s.bin", None);
        job.resume = fileuploader_core::Resume::In(journals.path().to_owned());
        job
    };
    // Stopped after its first block (one the receiver holds anyway).
    let stopped = manager.run(&job_of()).expect("the job starts");
    while server.recording().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stopped.cancel();
    let _ = stopped.wait().await;
    let before = server.recording().len();
    let job = job_of();
    finish(&manager, &job).await.expect("upload succeeds");
    let arrivals = server.recording().arrivals();
    let mut starts: Vec<u64> = arrivals[before..]
        .iter()
        .map(|a| a.range.expect("ranged").first)
        .collect();
    starts.sort_unstable();
    assert_eq!(
        starts,
        [4000, 5000, 6000, 8000, 9000],
        "only the blocks the receiver lacked"
    );
    for a in &arrivals[before..] {
        let first = a.range.expect("ranged").first as usize;
        assert_eq!(
            &a.data[..],
            &data[first..first + a.data.len()],
            "exact bytes"
        );
    }
    let p = job.progress();
    assert_eq!((p.resumed_blocks, p.blocks_acknowledged), (5, 10));
    assert_eq!(p.landings_confirmed, 1);
}

/// A receiver that loses the upload mid-run is asked at the end and gets
/// what it lacks, and the job succeeds only once it landed.
pub async fn session_resyncs_when_the_receiver_loses_the_upload(transport: TransportFactory) {
    let answers = Answers::truthful().forgetting_after(5);
    let (server, manager, job, _) = answering(&transport, answers, 10_000, 1000).await;
    finish(&manager, &job).await.expect("upload succeeds");
    let mut expected: Vec<u64> = (0..10).map(|b| b * 1000).collect();
    expected.extend((0..4).map(|b| b * 1000));
    expected.sort_unstable();
    assert_eq!(
        starts(&server),
        expected,
        "blocks 0-3, forgotten with the 5th, were sent again"
    );
    let gets = server
        .queries()
        .iter()
        .filter(|q| q.method == "GET")
        .count();
    assert!(gets >= 2, "asked at finish and at resync: {gets}");
    assert_eq!(job.progress().landings_confirmed, 1);
}

/// A receiver that holds every byte but cannot land the file fails the job
/// with 29 and its reason; no success is reported.
pub async fn session_finish_failing_fails_the_job(transport: TransportFactory) {
    let answers = Answers::truthful().failing_to_land("the disk is read-only");
    let (server, manager, mut job, _) = answering(&transport, answers, 3000, 1000).await;
    let log = EventLog::default();
    log.attach(&mut job);
    let err = finish(&manager, &job)
        .await
        .expect_err("the landing failed");
    assert_eq!(err.code(), 29, "{err}");
    assert!(err.message().contains("the disk is read-only"), "{err}");
    assert_eq!(log.terminals(), [format!("failure 29 {}", err.message())]);
    assert_eq!(server.recording().len(), 3, "each block once");
}

/// A cancelled job discards what the receiver holds when nothing could
/// resume it, and keeps it when it could.
pub async fn session_aborts_on_cancel_when_nothing_can_resume(transport: TransportFactory) {
    for resume in [false, true] {
        let server = MockUploadServer::builder()
            .delay(Duration::from_millis(100))
            .answers(Answers::truthful())
            .start()
            .await;
        let manager = UploadManager::new(transport());
        let mut job = new_job(&manager, &server, 1000, 1, &EventLog::default());
        let journals = tempfile::tempdir().expect("a temporary directory");
        let file = temp_file(&pattern(20_000, 22));
        job.source_value.add(file.path(), "c.bin", None);
        if resume {
            job.resume = fileuploader_core::Resume::In(journals.path().to_owned());
        }
        let handle = manager.run(&job).expect("the job starts");
        while server.recording().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(handle.cancel(), "the handle cancels the run");
        assert_eq!(handle.wait().await.expect_err("cancelled").code(), -3);
        let discards: Vec<Query> = server
            .queries()
            .into_iter()
            .filter(|q| q.method == "DELETE")
            .collect();
        let id = server.recording().arrivals()[0]
            .upload_id
            .clone()
            .expect("an upload id");
        if resume {
            assert!(discards.is_empty(), "a resumable upload is kept");
        } else {
            assert_eq!(
                discards,
                [Query {
                    method: "DELETE".into(),
                    upload_id: id
                }],
                "the upload is discarded"
            );
        }
    }
}

/// Dropping a request in flight (here: cancelling the job) aborts it: the
/// server sees the request abandoned, not left open.
pub async fn transport_aborts_a_request_when_dropped(transport: TransportFactory) {
    let server = RawFaultServer::start([(1, RawFault::StallAfter(100))]).await;
    let manager = UploadManager::new(transport());
    let mut job = manager.create_job();
    job.server_url = server.url();
    job.block_size = 1000;
    add_memory(&mut job, &manager, 3000, 23, "d.bin");
    let handle = manager.run(&job).expect("the job starts");
    while server.fired().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    manager.cancel(&job);
    assert_eq!(handle.wait().await.expect_err("cancelled").code(), -3);
    let waited = Instant::now();
    while server.abandoned() == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the stalled request was never aborted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A redirect is not followed unless asked: the job fails with 26 naming
/// where it pointed, and nothing is sent there.
pub async fn transport_follows_no_redirect_by_default(transport: TransportFactory) {
    let server = MockUploadServer::builder()
        .fault(Fault::new(
            Target::Any,
            Attempt::Always,
            Action::Redirect(307, "/elsewhere".into()),
        ))
        .start()
        .await;
    let manager = UploadManager::new(transport());
    let mut job = new_job(&manager, &server, 1000, 1, &EventLog::default());
    add_memory(&mut job, &manager, 500, 24, "r.bin");
    let err = finish(&manager, &job).await.expect_err("a redirect fails");
    assert_eq!(err.code(), 26, "{err}");
    assert!(err.message().contains("/elsewhere"), "{err}");
    assert_eq!(server.recording().len(), 1, "one request, not followed");
}

/// The job's HTTP version is the one the server saw.
pub async fn transport_reports_the_version_it_used(transport: TransportFactory) {
    let server = RawFaultServer::start([]).await;
    let manager = UploadManager::new(transport());
    let mut job = manager.create_job();
    job.server_url = server.url();
    add_memory(&mut job, &manager, 100, 25, "v.bin");
    finish(&manager, &job).await.expect("upload succeeds");
    let seen = server.versions();
    let expected = match seen.first() {
        Some(&http::Version::HTTP_2) => "2",
        Some(&http::Version::HTTP_10) => "1.0",
        _ => "1.1",
    };
    assert_eq!(seen.len(), 1);
    assert_eq!(job.http_version(), expected, "the server saw {seen:?}");
}

/// A connection closed mid-body fails that request as a reset; the block
/// is sent again and the file lands whole.
pub async fn transport_mid_body_close_is_retried(transport: TransportFactory) {
    fault_is_retried(transport, RawFault::CloseAfter(300)).await;
}

/// A connection reset as the request arrives is retried.
pub async fn transport_reset_is_retried(transport: TransportFactory) {
    fault_is_retried(transport, RawFault::Reset).await;
}

/// A request the server stops reading ends in the transport's stall
/// timeout (code 11) and is retried; this takes as long as that timeout.
pub async fn transport_stall_ends_in_a_timeout_and_is_retried(transport: TransportFactory) {
    fault_is_retried(transport, RawFault::StallAfter(100)).await;
}

async fn fault_is_retried(transport: TransportFactory, fault: RawFault) {
    let server = RawFaultServer::start([(2, fault)]).await;
    let manager = UploadManager::new(transport());
    let mut job = manager.create_job();
    job.server_url = server.url();
    job.block_size = 1000;
    job.retry = RetryPolicy::default().with_initial_backoff(Duration::from_millis(10));
    let data = add_memory(&mut job, &manager, 4000, 26, "f.bin");
    finish(&manager, &job).await.expect("upload succeeds");
    assert_eq!(server.fired().len(), 1, "the fault fired");
    assert_eq!(job.progress().retries, 1, "one retry");
    assert_eq!(
        server
            .recording()
            .reassembled("f.bin")
            .expect("reassembles"),
        data
    );
}
