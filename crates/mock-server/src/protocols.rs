//! Conformance scenarios of the three protocols against a receiver that
//! speaks them all (the caller's: `fileuploader-server` serves the
//! segmented convention, tus 1.0 and the IETF draft at one URL): a
//! transport must carry every size of upload of each, landing byte for
//! byte, and an upload cancelled halfway must resume and send only what the
//! receiver lacks.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fileuploader_core::protocol::{IetfDraft, Protocol, SegmentedMultipart, Tus};
use fileuploader_core::UploadManager;

use crate::conformance::TransportFactory;

/// A receiver the protocol scenarios upload to, fresh for each: where it
/// takes uploads, and what landed.
pub struct Served {
    /// Its upload URL (the creation URL of tus and the draft, the
    /// segmented convention's URL).
    pub url: String,
    /// The directory files land in.
    pub dir: PathBuf,
    /// Kept for as long as the scenario runs: the receiver, its directory.
    pub guard: Box<dyn Send + Sync>,
}

/// Starts a fresh receiver for a protocol scenario.
pub type ReceiverFactory =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Served> + Send>> + Send + Sync>;

/// A [`ReceiverFactory`] that runs `start` on a listener of 127.0.0.1 and
/// a fresh temporary directory, the URL `http://ADDRESS/files`:
///
/// ```
/// # fn f() -> fileuploader_mock_server::conformance::ReceiverFactory {
/// fileuploader_mock_server::conformance::receiver(|dir, listener| async move {
///     // fileuploader_server::Receiver::new(dir)?.serve(listener).await
///     # let _ = (dir, listener);
///     Ok(())
/// })
/// # }
/// ```
pub fn receiver<F, Fut>(start: F) -> ReceiverFactory
where
    F: Fn(PathBuf, tokio::net::TcpListener) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let start = Arc::new(start);
    Arc::new(move || {
        let start = start.clone();
        Box::pin(async move {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a port");
            let url = format!(
                "http://{}/files",
                listener.local_addr().expect("an address")
            );
            let task = tokio::spawn(start(dir.path().to_owned(), listener));
            Served {
                url,
                dir: dir.path().to_owned(),
                guard: Box::new(Stops { task, _dir: dir }),
            }
        })
    })
}

/// Stops the receiver and removes its directory when dropped.
struct Stops {
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Stops {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// Every size around the block size lands, with 1 and 3 blocks in flight.
async fn lands_every_size(
    transport: TransportFactory,
    receiver: ReceiverFactory,
    protocol: Arc<dyn Protocol>,
    what: &str,
) {
    let served = receiver().await;
    let manager = UploadManager::new(transport());
    const BLOCK: usize = 4096;
    for (i, len) in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 10 * BLOCK + 7]
        .into_iter()
        .enumerate()
    {
        for threads in [1, 3] {
            let name = format!("{what}-{len}-{threads}.bin");
            let data = pattern(len, i as u32);
            let sent = Sent {
                protocol: protocol.clone(),
                block: BLOCK as u64,
                threads,
            };
            if let Err(e) = land(&manager, &served, &sent, &name, &data).await {
                panic!("{what}: {len} bytes, {threads} in flight: {e}");
            }
        }
    }
}

/// How a scenario's file goes: its protocol, block size, blocks in flight.
pub(crate) struct Sent {
    pub(crate) protocol: Arc<dyn Protocol>,
    pub(crate) block: u64,
    pub(crate) threads: usize,
}

/// Uploads `data` from memory as `name` to `served` as `sent` says,
/// requiring the receiver's confirmation; the job's error, or that the
/// landed file differs or is missing.
pub(crate) async fn land(
    manager: &UploadManager,
    served: &Served,
    sent: &Sent,
    name: &str,
    data: &[u8],
) -> Result<(), String> {
    let mut job = manager.create_job();
    job.server_url = served.url.clone();
    job.block_size = sent.block;
    job.thread_num = sent.threads;
    job.protocol = Some(sent.protocol.clone());
    job.require_confirmation = true;
    job.source_value.add(
        manager.generate_url_for_upload_data(data.to_vec()),
        name,
        None,
    );
    let outcome = manager.run(&job).expect("the job starts").wait().await;
    outcome.map_err(|e| e.to_string())?;
    match std::fs::read(served.dir.join(name)) {
        Ok(landed) if landed == data => Ok(()),
        _ => Err("the landed file differs or is missing".into()),
    }
}

/// An upload cancelled halfway resumes: the second run sends at most the
/// rest and a block in flight, and the file lands whole.
async fn resumes_after_cancel(
    transport: TransportFactory,
    receiver: ReceiverFactory,
    protocol: Arc<dyn Protocol>,
    what: &str,
) {
    let served = receiver().await;
    let manager = UploadManager::new(transport());
    let journals = tempfile::tempdir().expect("a temporary directory");
    let data = pattern(256 * 1024, 7);
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::io::Write::write_all(&mut file, &data).expect("the file is written");
    let job = || {
        let mut job = manager.create_job();
        job.server_url = served.url.clone();
        job.block_size = 4096;
        job.thread_num = 2;
        job.protocol = Some(protocol.clone());
        job.resume = fileuploader_core::Resume::In(journals.path().to_owned());
        job.source_value.add(file.path(), "resumed.bin", None);
        job
    };
    let first = job();
    let handle = manager.run(&first).expect("the job starts");
    while first.progress().blocks_acknowledged < 20 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    handle.cancel();
    let _ = handle.wait().await;
    let before = first.progress().blocks_acknowledged;
    assert!(
        before < 64,
        "{what}: the cancel came too late ({before} of 64 blocks)"
    );

    let second = job();
    manager
        .run(&second)
        .expect("the job starts")
        .wait()
        .await
        .unwrap_or_else(|e| panic!("{what}: the resumed run failed: {e}"));
    let progress = second.progress();
    assert!(
        progress.resumed_blocks >= before.saturating_sub(2),
        "{what}: {} blocks resumed, {before} were acknowledged",
        progress.resumed_blocks
    );
    assert!(
        progress.bytes_sent <= (64 - progress.resumed_blocks + 2) * 4096,
        "{what}: the resumed run sent {} bytes",
        progress.bytes_sent
    );
    let landed = std::fs::read(served.dir.join("resumed.bin"));
    assert!(
        landed.as_ref().is_ok_and(|l| *l == data),
        "{what}: the landed file differs or is missing"
    );
}

pub(crate) async fn protocol_segmented_lands_every_size(t: TransportFactory, r: ReceiverFactory) {
    lands_every_size(t, r, Arc::new(SegmentedMultipart), "segmented").await;
}

pub(crate) async fn protocol_tus_lands_every_size(t: TransportFactory, r: ReceiverFactory) {
    lands_every_size(t, r, Arc::new(Tus), "tus").await;
}

pub(crate) async fn protocol_ietf_lands_every_size(t: TransportFactory, r: ReceiverFactory) {
    lands_every_size(t, r, Arc::new(IetfDraft::default()), "ietf").await;
}

pub(crate) async fn protocol_segmented_resumes_after_cancel(
    t: TransportFactory,
    r: ReceiverFactory,
) {
    resumes_after_cancel(t, r, Arc::new(SegmentedMultipart), "segmented").await;
}

pub(crate) async fn protocol_tus_resumes_after_cancel(t: TransportFactory, r: ReceiverFactory) {
    resumes_after_cancel(t, r, Arc::new(Tus), "tus").await;
}

pub(crate) async fn protocol_ietf_resumes_after_cancel(t: TransportFactory, r: ReceiverFactory) {
    resumes_after_cancel(t, r, Arc::new(IetfDraft::default()), "ietf").await;
}
