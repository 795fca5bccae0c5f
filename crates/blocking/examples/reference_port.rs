//! The reference documentation's JavaScript examples, step by step, in Rust:
//! initialise, create a job, set the server URL, add a source, set the
//! callbacks, run, and cancel from the progress callback.
//!
//! It starts the reference receiver on 127.0.0.1 first, so it runs as is:
//! `cargo run -p fileuploader-blocking --example reference_port`.

use std::sync::mpsc;

use fileuploader_blocking::{init, UploadManager};

/// The reference receiver on an ephemeral port, on a thread of its own.
fn start_receiver(dir: &std::path::Path) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let url = format!(
        "http://{}/upload",
        listener.local_addr().expect("an address")
    );
    let receiver = fileuploader_server::Receiver::new(dir).expect("a receiving directory");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            listener.set_nonblocking(true).expect("non-blocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            receiver.serve(listener).await
        })
    });
    url
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server_url = start_receiver(dir.path());

    // var dsUploadManager;
    // Dynamsoft.FileUploader.Init("", function (obj) { dsUploadManager = obj; }, function () {});
    let (tx, rx) = mpsc::channel();
    init(
        move |obj: UploadManager| tx.send(obj).expect("main is waiting"),
        |code, message| eprintln!("Init failed: {code} {message}"),
    );
    let ds_upload_manager = rx.recv().expect("the manager");

    // var job = dsUploadManager.CreateJob();
    let mut job = ds_upload_manager.create_job();
    // job.ServerUrl = '…/SaveToFile.aspx';
    job.server_url = server_url.clone();
    // job.FormField.Add("customField", "FormFieldValue");
    job.form_field.add("customField", "FormFieldValue");
    // job.SourceValue.Add(url, fileName);
    let url = ds_upload_manager.generate_url_for_upload_data(vec![42u8; 256 * 1024]);
    job.source_value.add(url, "scan.bin", None);
    job.block_size = 16 * 1024;

    // job.OnUploadTransferPercentage = FileUpload_OnUploadTransferPercentage;
    // function FileUpload_OnUploadTransferPercentage(job, iPercentage) {
    //     console.log("job cancelled!");
    //     dsUploadManager.Cancel(job);
    // }
    let manager = ds_upload_manager.clone();
    job.on_upload_transfer_percentage(move |job, percentage| {
        println!("{percentage}%");
        if percentage >= 50 {
            println!("job cancelled!");
            manager.cancel(job);
        }
    });
    // job.OnRunSuccess = function (job) { alert(" upload completed "); };
    job.on_run_success(|_job| println!(" upload completed "));
    // job.OnRunFailure = function (job, errorCode, errorString) { alert(errorString); };
    job.on_run_failure(|_job, error_code, error_string| println!("{error_code}: {error_string}"));

    // dsUploadManager.Run(job);
    ds_upload_manager.run(&job);
    let outcome = ds_upload_manager.wait(&job);
    println!("outcome: {outcome:?}");

    // The same job again, this time left to finish.
    job.on_upload_transfer_percentage(|_job, percentage| println!("{percentage}%"));
    ds_upload_manager.run(&job);
    let outcome = ds_upload_manager.wait(&job);
    println!(
        "outcome: {outcome:?}; landed: {}",
        dir.path().join("scan.bin").exists()
    );
}
