//! The receiver: refusals at the handler, and whole uploads landing through
//! the real client over 127.0.0.1.

use std::time::Duration;

use bytes::Bytes;
use fileuploader_core::UploadManager;
use fileuploader_server::Receiver;
use fileuploader_transport_hyper::HyperTransport;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

const BOUNDARY: &str = "XyZ";

fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file, data) in parts {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(f) = file {
            body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn post(
    receiver: &Receiver,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, String) {
    let mut req = Request::post("/upload").header(
        "content-type",
        format!("multipart/form-data; boundary={BOUNDARY}"),
    );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = receiver
        .handle(req.body(Full::new(Bytes::from(body))).unwrap())
        .await;
    let status = response.status();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&text).into_owned())
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn segments_in_any_order_land_once_complete() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    let id = [("x-upload-id", "abc")];
    let seg = |r: &'static str| [("content-range", r), id[0]];
    let (s, _) = post(
        &receiver,
        &seg("bytes 6-9/10"),
        form(&[("RemoteFile", Some("a.txt"), b"ghij")]),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        listing(dir.path()).is_empty(),
        "nothing lands before it is whole"
    );
    let (total, ranges) = receiver.status("abc").unwrap();
    assert_eq!((total, ranges.ranges()), (10, &[(6, 10)][..]));
    post(
        &receiver,
        &seg("bytes 0-2/10"),
        form(&[("RemoteFile", Some("a.txt"), b"abc")]),
    )
    .await;
    let (s, text) = post(
        &receiver,
        &seg("bytes 3-5/10"),
        form(&[("RemoteFile", Some("a.txt"), b"def")]),
    )
    .await;
    assert_eq!(
        (s, text.as_str()),
        (StatusCode::OK, "complete: a.txt (10 bytes)\n")
    );
    assert_eq!(
        std::fs::read(dir.path().join("a.txt")).unwrap(),
        b"abcdefghij"
    );
    assert!(receiver.status("abc").is_none());
    assert_eq!(
        std::fs::read_dir(fileuploader_server::partial_dir(dir.path()))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn bad_requests_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap().max_upload_size(100);
    let file = |name: &'static str| form(&[("RemoteFile", Some(name), b"data")]);
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("content-range", "bytes 0-9/10")],
            file("a"),
            StatusCode::BAD_REQUEST,
            "Content-Range says 10",
        ),
        (
            vec![("content-range", "bytes 0-1/10")],
            file("a"),
            StatusCode::BAD_REQUEST,
            "longer than its Content-Range",
        ),
        (
            vec![("content-range", "bytes 5-1/10")],
            file("a"),
            StatusCode::BAD_REQUEST,
            "malformed Content-Range",
        ),
        (
            vec![("content-range", "bytes 0-3/1000")],
            file("a"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "maximum of 100",
        ),
        (
            vec![],
            form(&[("RemoteFile", Some("big"), &[0u8; 101])]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "maximum",
        ),
        (vec![], file(".."), StatusCode::BAD_REQUEST, "refused"),
        (
            vec![],
            form(&[("f", Some("a\u{1}b"), b"x")]),
            StatusCode::BAD_REQUEST,
            "malformed multipart",
        ),
        (
            vec![],
            form(&[("field", None, b"v")]),
            StatusCode::BAD_REQUEST,
            "no file part",
        ),
        (
            vec![("x-upload-id", "../../x")],
            file("a"),
            StatusCode::BAD_REQUEST,
            "upload identifier",
        ),
        (
            vec![],
            b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"t\"\r\n\r\nabc"
                .to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed multipart",
        ),
    ];
    for (headers, body, status, words) in cases {
        let (s, text) = post(&receiver, &headers, body).await;
        assert_eq!(s, status, "{words}: {text}");
        assert!(text.contains(words), "{words:?} not in {text:?}");
    }
    let (s, text) = post(&receiver, &[], b"not multipart".to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert!(listing(dir.path()).is_empty());
}

#[tokio::test]
async fn path_tricks_land_as_plain_names_inside_the_directory() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("uploads");
    let receiver = Receiver::new(&dir).unwrap();
    let (s, _) = post(
        &receiver,
        &[],
        form(&[("RemoteFile", Some("../../escape.txt"), b"x")]),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = post(
        &receiver,
        &[],
        form(&[
            ("filename", None, b"../renamed.txt"),
            ("RemoteFile", Some("b"), b"y"),
        ]),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(listing(&dir), ["escape.txt", "renamed.txt"]);
    assert_eq!(listing(outer.path()), ["uploads"]);
}

#[tokio::test]
async fn a_restarted_receiver_keeps_what_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let hdr = |r: &'static str| [("content-range", r), ("x-upload-id", "r1")];
    {
        let receiver = Receiver::new(dir.path()).unwrap();
        post(
            &receiver,
            &hdr("bytes 0-3/8"),
            form(&[("RemoteFile", Some("r.bin"), b"0123")]),
        )
        .await;
    }
    let receiver = Receiver::new(dir.path()).unwrap();
    let (s, text) = post(
        &receiver,
        &hdr("bytes 4-7/8"),
        form(&[("RemoteFile", Some("r.bin"), b"4567")]),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.starts_with("complete"), "{text}");
    assert_eq!(
        std::fs::read(dir.path().join("r.bin")).unwrap(),
        b"01234567"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_the_same_name_stay_apart_and_land_whole() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/upload", listener.local_addr().unwrap());
    tokio::spawn(receiver.serve(listener));

    let manager = UploadManager::new(HyperTransport::new().unwrap());
    let sizes = [300_000usize, 1, 0, 123_457];
    let mut handles = Vec::new();
    for (i, size) in sizes.into_iter().enumerate() {
        let data: Vec<u8> = (0..size).map(|b| (b * (i + 3) % 256) as u8).collect();
        let mut job = manager.create_job();
        job.server_url = url.clone();
        job.block_size = 10_000;
        job.thread_num = 4;
        job.source_value.add(
            manager.generate_url_for_upload_data(data.clone()),
            format!("f{i}.bin"),
            None,
        );
        handles.push((manager.run(&job).unwrap(), data, i));
    }
    for (handle, data, i) in handles {
        tokio::time::timeout(Duration::from_secs(30), handle.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(format!("f{i}.bin"))).unwrap(),
            data,
            "file {i}"
        );
    }
}
