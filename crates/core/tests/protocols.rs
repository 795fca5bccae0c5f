//! Sessions facing servers that do not speak their protocol, or answer no
//! questions.

use std::sync::Arc;

use fileuploader_core::protocol::{IetfDraft, Protocol, Tus};
use fileuploader_core::testing::MemoryTransport;
use fileuploader_core::{code, UploadManager};

#[tokio::test]
async fn a_server_that_is_not_tus_or_ietf_gets_a_clear_error_37() {
    let cases: [(Arc<dyn Protocol>, usize, &str); 3] = [
        // OPTIONS refused (404) is taken as a tus server without
        // discovery; its creation's answer tells it is none.
        (Arc::new(Tus), 1, "did not answer as a tus 1.0 server: creating the upload (no Location) got 200 OK"),
        (Arc::new(Tus), 4, "did not answer as a tus 1.0 server: creating the upload (no Location) got 200 OK"),
        (
            Arc::new(IetfDraft::default()),
            1,
            "did not answer as an IETF resumable-upload (interop version 9) server: creating the upload (no Location) got 200 OK",
        ),
    ];
    for (protocol, threads, message) in cases {
        let transport = MemoryTransport::new();
        let manager = UploadManager::new(transport.clone());
        let mut job = manager.create_job();
        job.server_url = "http://127.0.0.1:9/files".into();
        job.thread_num = threads;
        job.protocol = Some(protocol);
        job.source_value.add(
            manager.generate_url_for_upload_data(vec![7; 100]),
            "a.bin",
            None,
        );
        let error = manager.run(&job).unwrap().wait().await.unwrap_err();
        assert_eq!(error.code(), code::PROTOCOL_MISMATCH, "{error}");
        assert!(error.message().contains(message), "{error}");
    }
}

#[tokio::test]
async fn a_receiver_found_silent_is_not_asked_again_by_the_other_files_of_the_manager() {
    let transport = MemoryTransport::new();
    let manager = UploadManager::new(transport.clone());
    let mut job = manager.create_job();
    job.server_url = "http://127.0.0.1:9/upload".into();
    job.thread_num = 1;
    for i in 0..5u8 {
        job.source_value.add(
            manager.generate_url_for_upload_data(vec![i; 100]),
            format!("f{i}.bin"),
            None,
        );
    }
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(transport.requests().len(), 5, "one block per file");
    // The first file's closing status query finds the receiver answers
    // none; the other four files ask nothing more.
    assert_eq!(transport.queries().len(), 1, "{:?}", transport.queries());

    // Another manager knows nothing of it: it asks again.
    let fresh = UploadManager::new(transport.clone());
    let mut job = fresh.create_job();
    job.server_url = "http://127.0.0.1:9/upload".into();
    job.source_value.add(
        fresh.generate_url_for_upload_data(vec![9; 100]),
        "g.bin",
        None,
    );
    fresh.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(transport.queries().len(), 2);
}
