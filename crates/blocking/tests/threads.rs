//! Dropping the manager joins its threads: none is left behind. (Alone in
//! its own test binary, so no other test's threads are counted.)

use fileuploader_blocking::UploadManager;

/// Names of this process's threads that the facade starts.
fn facade_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| n.starts_with("fu-"))
        .collect()
}

#[test]
fn no_thread_outlives_the_manager() {
    assert!(facade_threads().is_empty());
    let manager = UploadManager::new().unwrap();
    let clone = manager.clone();
    let mut job = manager.create_job();
    job.server_url = "http://127.0.0.1:9/u".into();
    job.source_value.add(
        manager.generate_url_for_upload_data(vec![1u8; 10]),
        "a",
        None,
    );
    let _ = manager.run_to_end(&job);
    let running = facade_threads();
    assert!(
        running.contains(&"fu-runtime".to_owned()) && running.contains(&"fu-callbacks".to_owned()),
        "{running:?}"
    );
    drop(manager);
    assert!(!facade_threads().is_empty(), "a clone keeps it running");
    drop(clone);
    assert_eq!(facade_threads(), Vec::<String>::new());
}
