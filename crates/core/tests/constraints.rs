//! A protocol's constraints shape the plan: blocks in order, a bound on
//! blocks in flight per source, and block sizes and counts it accepts.

use std::time::Duration;

use async_trait::async_trait;
use fileuploader_core::protocol::{
    Constraints, Finish, Holding, Protocol, SavedSession, UploadSession, UploadTarget, Verdict,
};
use fileuploader_core::testing::{MemoryTransport, Reply};
use fileuploader_core::{
    Block, BlockData, Error, Request, Response, SegmentedMultipart, Transport, UploadManager,
};

/// The segmented protocol under other constraints.
#[derive(Debug)]
struct Constrained(Constraints);

impl Protocol for Constrained {
    fn open(&self, target: &UploadTarget<'_>) -> Result<Box<dyn UploadSession>, Error> {
        Ok(Box::new(ConstrainedSession {
            inner: SegmentedMultipart.open(target)?,
            limits: self.0,
        }))
    }
}

#[derive(Debug)]
struct ConstrainedSession {
    inner: Box<dyn UploadSession>,
    limits: Constraints,
}

#[async_trait]
impl UploadSession for ConstrainedSession {
    fn constraints(&self) -> Constraints {
        self.limits
    }
    async fn begin(&self, transport: &dyn Transport) -> Result<Holding, Error> {
        self.inner.begin(transport).await
    }
    fn encode(&self, block: &Block, data: BlockData) -> Result<Request, Error> {
        self.inner.encode(block, data)
    }
    fn judge(&self, block: &Block, response: &Response) -> Verdict {
        self.inner.judge(block, response)
    }
    fn idempotent(&self, block: &Block) -> bool {
        self.inner.idempotent(block)
    }
    async fn finish(&self, transport: &dyn Transport) -> Result<Finish, Error> {
        self.inner.finish(transport).await
    }
    async fn abort(&self, transport: &dyn Transport) -> Result<(), Error> {
        self.inner.abort(transport).await
    }
    fn saved(&self) -> SavedSession {
        self.inner.saved()
    }
}

fn manager(limits: Constraints, transport: &MemoryTransport) -> UploadManager {
    UploadManager::builder(transport.clone())
        .protocol(Constrained(limits))
        .build()
}

fn slow() -> MemoryTransport {
    MemoryTransport::scripted(Duration::from_millis(5), |_, _| {
        Reply::Status(http::StatusCode::OK, "")
    })
}

/// The first bytes of each source's blocks, in order of arrival, by upload id.
fn starts_by_source(transport: &MemoryTransport) -> Vec<Vec<u64>> {
    let mut by_id: Vec<(String, Vec<u64>)> = Vec::new();
    for r in transport.requests() {
        let id = r.headers["x-upload-id"].to_str().unwrap().to_owned();
        let start = r
            .content_range()
            .and_then(|c| c.strip_prefix("bytes "))
            .and_then(|c| c.split('-').next())
            .map_or(0, |s| s.parse().unwrap());
        match by_id.iter_mut().find(|(i, _)| *i == id) {
            Some((_, starts)) => starts.push(start),
            None => by_id.push((id, vec![start])),
        }
    }
    by_id.into_iter().map(|(_, s)| s).collect()
}

/// A job of 10-byte blocks, 4 in flight, with a source of `len` bytes
/// under each name.
fn job(manager: &UploadManager, len: usize, names: &[&str]) -> fileuploader_core::Job {
    let mut job = manager.create_job();
    job.server_url = "http://127.0.0.1:9/u".into();
    job.block_size = 10;
    job.thread_num = 4;
    for name in names {
        job.source_value.add(
            manager.generate_url_for_upload_data(vec![1u8; len]),
            *name,
            None,
        );
    }
    job
}

#[tokio::test]
async fn sequential_sources_send_one_block_at_a_time_in_order() {
    let transport = slow();
    let limits = Constraints {
        sequential: true,
        ..Constraints::default()
    };
    let manager = manager(limits, &transport);
    let job = job(&manager, 50, &["a", "b"]);
    manager.run(&job).unwrap().wait().await.unwrap();
    let sources = starts_by_source(&transport);
    assert_eq!(sources, [[0, 10, 20, 30, 40], [0, 10, 20, 30, 40]]);
    assert_eq!(
        transport.peak_in_flight(),
        2,
        "one block per source at a time, both sources at once"
    );
}

#[tokio::test]
async fn blocks_in_flight_per_source_are_bounded() {
    let transport = slow();
    let limits = Constraints {
        max_in_flight: 2,
        ..Constraints::default()
    };
    let manager = manager(limits, &transport);
    let job = job(&manager, 200, &["a"]);
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(transport.requests().len(), 20);
    assert_eq!(transport.peak_in_flight(), 2);
}

#[tokio::test]
async fn block_sizes_and_counts_the_protocol_refuses_fail_with_minus_10() {
    let transport = MemoryTransport::new();
    let limits = Constraints {
        min_block_size: 100,
        max_block_size: 1000,
        max_blocks: 4,
        ..Constraints::default()
    };
    let manager = manager(limits, &transport);
    for (len, block, words) in [
        (500, 50, "below the protocol's minimum of 100"),
        (5000, 2000, "above the protocol's maximum of 1000"),
        (
            5000,
            1000,
            "5 blocks are more than the protocol's maximum of 4",
        ),
    ] {
        let mut job = manager.create_job();
        job.server_url = "http://127.0.0.1:9/u".into();
        job.block_size = block;
        job.source_value.add(
            manager.generate_url_for_upload_data(vec![0u8; len]),
            "a",
            None,
        );
        let err = manager.run(&job).unwrap().wait().await.unwrap_err();
        assert_eq!(err.code(), -10, "{err}");
        assert!(err.message().contains(words), "{words:?} not in {err}");
    }
    let mut small = manager.create_job();
    small.server_url = "http://127.0.0.1:9/u".into();
    small.block_size = 50;
    small.source_value.add(
        manager.generate_url_for_upload_data(vec![0u8; 40]),
        "a",
        None,
    );
    manager.run(&small).unwrap().wait().await.unwrap();
    assert!(
        transport.requests().len() == 1,
        "a single short block is fine"
    );
}
