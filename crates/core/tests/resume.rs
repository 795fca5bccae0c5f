//! Resuming an interrupted job against a receiver that cannot say what it
//! holds: only the blocks the journal does not list are sent again, under
//! the same upload id, and the run says it trusted the journal; a changed
//! source starts over with a notice.

use std::io::Write;
use std::time::Duration;

use fileuploader_core::testing::{EventLog, MemoryTransport, Reply};
use fileuploader_core::{Job, Resume, RetryPolicy, UploadManager};
use http::StatusCode;

fn job(
    manager: &UploadManager,
    file: &std::path::Path,
    journals: &std::path::Path,
    log: &EventLog,
) -> Job {
    let mut job = manager.create_job();
    job.server_url = "http://127.0.0.1:9/upload".into();
    job.block_size = 10;
    job.retry = RetryPolicy::none();
    job.resume = Resume::In(journals.to_owned());
    log.attach(&mut job);
    job.source_value.add(file, "r.bin", None);
    job
}

fn journals(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// Fails every request for the block at byte 60 with 404.
fn failing_at_60() -> MemoryTransport {
    MemoryTransport::scripted(Duration::ZERO, |r, _| match r.content_range() {
        Some(range) if range.starts_with("bytes 60-") => Reply::Status(StatusCode::NOT_FOUND, ""),
        _ => Reply::Status(StatusCode::OK, ""),
    })
}

#[tokio::test]
async fn a_resumed_run_sends_only_what_was_not_acknowledged() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&[3u8; 100]).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let first = failing_at_60();
    let manager = UploadManager::new(first.clone());
    let job1 = job(&manager, file.path(), dir.path(), &EventLog::default());
    assert_eq!(
        manager.run(&job1).unwrap().wait().await.unwrap_err().code(),
        12
    );
    assert_eq!(first.requests().len(), 7);
    assert_eq!(journals(dir.path()), 1, "the journal stays after a failure");
    let id = first.requests()[0].headers["x-upload-id"].clone();

    let second = MemoryTransport::new();
    let manager = UploadManager::new(second.clone());
    let log = EventLog::default();
    let job2 = job(&manager, file.path(), dir.path(), &log);
    manager.run(&job2).unwrap().wait().await.unwrap();
    let ranges: Vec<_> = second
        .requests()
        .iter()
        .map(|r| r.content_range().unwrap().to_owned())
        .collect();
    assert_eq!(
        ranges,
        [
            "bytes 60-69/100",
            "bytes 70-79/100",
            "bytes 80-89/100",
            "bytes 90-99/100"
        ]
    );
    assert!(
        second
            .requests()
            .iter()
            .all(|r| r.headers["x-upload-id"] == id),
        "the same upload id"
    );
    let progress = job2.progress();
    assert_eq!(progress.resumed_blocks, 6);
    assert_eq!(progress.blocks_acknowledged, 10);
    assert!(progress.journal_trusted);
    assert_eq!(
        (progress.landings_confirmed, progress.landings_unconfirmed),
        (0, 1)
    );
    assert_eq!(
        log.percents()[..2],
        [0, 60],
        "the resumed share shows at once"
    );
    assert_eq!(log.all().last().unwrap(), "success");
    assert_eq!(journals(dir.path()), 0, "the journal is removed on success");
    let notices = job2.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains("cannot say what it holds")
            && notices[0].contains("6 blocks on the word of the local journal"),
        "{notices:?}"
    );
}

#[tokio::test]
async fn a_source_that_changed_starts_over_with_a_notice() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&[3u8; 100]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manager = UploadManager::new(failing_at_60());
    let job1 = job(&manager, file.path(), dir.path(), &EventLog::default());
    assert!(manager.run(&job1).unwrap().wait().await.is_err());

    // Same size, different bytes in the middle sample.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(file.path())
        .unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(40)).unwrap();
    f.write_all(&[9u8; 20]).unwrap();
    drop(f);

    let second = MemoryTransport::new();
    let manager = UploadManager::new(second.clone());
    let job2 = job(&manager, file.path(), dir.path(), &EventLog::default());
    manager.run(&job2).unwrap().wait().await.unwrap();
    assert_eq!(second.requests().len(), 10, "every block again");
    assert_eq!(job2.progress().resumed_blocks, 0);
    let notices = job2.notices();
    assert_eq!(notices.len(), 1);
    assert!(
        notices[0].contains("changed since the interrupted upload"),
        "{notices:?}"
    );
}

#[tokio::test]
async fn without_resume_or_for_memory_sources_no_journal_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&[1u8; 30]).unwrap();
    let manager = UploadManager::new(failing_at_60());
    let mut off = job(&manager, file.path(), dir.path(), &EventLog::default());
    off.resume = Resume::Off;
    manager.run(&off).unwrap().wait().await.unwrap();
    let mut memory = job(&manager, file.path(), dir.path(), &EventLog::default());
    memory.source_value = Default::default();
    memory.source_value.add(
        manager.generate_url_for_upload_data(vec![1u8; 100]),
        "m",
        None,
    );
    assert!(manager.run(&memory).unwrap().wait().await.is_err());
    assert_eq!(journals(dir.path()), 0);
}
