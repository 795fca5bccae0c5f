//! The receiver: refusals at the handler, and whole uploads landing through
//! the real client over 127.0.0.1.

mod support;
use support::{form, serving, BOUNDARY};

use std::time::Duration;

use bytes::Bytes;
use fileuploader_core::UploadManager;
use fileuploader_server::{Receiver, BLOCK_CRC32C_FIELD};
use fileuploader_transport_hyper::HyperTransport;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

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
    let (s, text) = post(
        &receiver,
        &seg("bytes 6-9/10"),
        form(&[("RemoteFile", Some("a.txt"), b"ghij")]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert!(
        listing(dir.path()).is_empty(),
        "nothing lands before it is whole"
    );
    let (total, ranges) = receiver.status("abc").await.unwrap().unwrap();
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
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        text, "{\"state\":\"landed\",\"upload_id\":\"abc\",\"name\":\"a.txt\",\"length\":10}\n",
        "no CRC32C is stated for blocks that carried none"
    );
    assert_eq!(
        std::fs::read(dir.path().join("a.txt")).unwrap(),
        b"abcdefghij"
    );
    assert!(receiver.status("abc").await.unwrap().is_none());
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
            vec![("content-range", "bytes 0-9/10"), ("x-upload-id", "b1")],
            file("a"),
            StatusCode::BAD_REQUEST,
            "Content-Range says 10",
        ),
        (
            vec![("content-range", "bytes 0-1/10"), ("x-upload-id", "b2")],
            file("a"),
            StatusCode::BAD_REQUEST,
            "longer than its Content-Range",
        ),
        (
            vec![("content-range", "bytes 0-3/10")],
            file("a"),
            StatusCode::BAD_REQUEST,
            "needs an X-Upload-Id",
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
    assert!(text.contains("\"state\":\"landed\""), "{text}");
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

/// The headers of a block.
fn segment<'a>(range: &'a str, id: &'a str) -> [(&'a str, &'a str); 2] {
    [("content-range", range), ("x-upload-id", id)]
}

/// A form of one file part followed by the CRC32C field, as the client sends.
fn checked(file: &str, data: &[u8], crc: &str) -> Vec<u8> {
    form(&[
        ("RemoteFile", Some(file), data),
        (BLOCK_CRC32C_FIELD, None, crc.as_bytes()),
    ])
}

fn crc_hex(data: &[u8]) -> String {
    format!("{:08x}", crc32c::crc32c(data))
}

#[tokio::test]
async fn blocks_failing_their_crc_are_refused_with_460_and_count_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    let good = crc_hex(b"abcd");
    let send = |range: &'static str, crc: String, data: &'static [u8]| {
        let receiver = receiver.clone();
        async move {
            post(
                &receiver,
                &segment(range, "c1"),
                checked("c.bin", data, &crc),
            )
            .await
        }
    };
    let (s, text) = send("bytes 0-3/8", good.clone(), b"abXd").await;
    assert_eq!(s.as_u16(), 460, "{text}");
    assert!(text.contains("digest mismatch"), "{text}");
    assert!(
        receiver
            .status("c1")
            .await
            .unwrap()
            .unwrap()
            .1
            .ranges()
            .is_empty(),
        "nothing counted"
    );
    assert_eq!(
        send("bytes 0-3/8", good.clone(), b"abcd").await.0,
        StatusCode::OK
    );
    // A duplicate of an acknowledged range is accepted only if identical;
    // a different one is refused and never written.
    assert_eq!(
        send("bytes 0-3/8", good.clone(), b"abcd").await.0,
        StatusCode::OK
    );
    let (s, text) = send("bytes 0-3/8", crc_hex(b"WXYZ"), b"WXYZ").await;
    assert_eq!(s, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("differs"), "{text}");
    let (s, text) = send("bytes 2-5/8", crc_hex(b"cdEF"), b"cdEF").await;
    assert_eq!(
        (s, text.as_str()),
        (
            StatusCode::OK,
            "{\"state\":\"received\",\"upload_id\":\"c1\",\"start\":2,\"end\":6}\n"
        ),
        "an overlap identical where acknowledged is accepted"
    );
    assert_eq!(
        send("bytes 0-3/8", good.clone(), b"ab!d").await.0.as_u16(),
        460
    );
    let (s, text) = send("bytes 4-7/8", crc_hex(b"EFgh"), b"EFgh").await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(
        std::fs::read(dir.path().join("c.bin")).unwrap(),
        b"abcdEFgh"
    );
    for (crc, why) in [
        ("nothex!!", "malformed X-Block-CRC32C"),
        ("+1234567", "malformed X-Block-CRC32C"),
        ("1234567", "malformed X-Block-CRC32C"),
    ] {
        let (s, text) = post(&receiver, &[], checked("z", b"z", crc)).await;
        assert_eq!((s, text.trim()), (StatusCode::BAD_REQUEST, why), "{crc}");
    }
    let twice = form(&[
        (BLOCK_CRC32C_FIELD, None, crc_hex(b"z").as_bytes()),
        ("RemoteFile", Some("z"), b"z"),
        (BLOCK_CRC32C_FIELD, None, crc_hex(b"z").as_bytes()),
    ]);
    let (s, text) = post(&receiver, &[], twice).await;
    assert_eq!(
        (s, text.trim()),
        (StatusCode::BAD_REQUEST, "X-Block-CRC32C given twice")
    );
    assert_eq!(listing(dir.path()), ["c.bin"], "no refused file landed");
}

#[tokio::test]
async fn a_completed_upload_is_checked_against_its_blocks_before_it_lands() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    let (first, second) = (crc_hex(b"abcd"), crc_hex(b"efgh"));
    post(
        &receiver,
        &segment("bytes 0-3/8", "d1"),
        checked("d.bin", b"abcd", &first),
    )
    .await;
    // Something damages the stored bytes between blocks.
    let part = fileuploader_server::partial_dir(dir.path()).join("id-d1.part");
    std::fs::write(&part, b"abXd").unwrap();
    let (s, text) = post(
        &receiver,
        &segment("bytes 4-7/8", "d1"),
        checked("d.bin", b"efgh", &second),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert!(
        text.contains("do not match the acknowledged blocks"),
        "{text}"
    );
    assert!(listing(dir.path()).is_empty(), "nothing damaged lands");
    assert!(!part.exists(), "the damaged upload was discarded");
}

/// A transport that flips one byte of the block starting at `at`, the first
/// time it is sent, keeping the CRC32C field the client computed.
#[derive(Debug)]
struct Corrupting {
    inner: HyperTransport,
    at: &'static str,
    done: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl fileuploader_core::Transport for Corrupting {
    async fn send(
        &self,
        request: fileuploader_core::Request,
    ) -> Result<fileuploader_core::Response, fileuploader_core::TransportError> {
        let hit = request
            .headers()
            .get("content-range")
            .is_some_and(|r| r.to_str().unwrap().starts_with(self.at));
        if !hit || self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return self.inner.send(request).await;
        }
        let (parts, mut body) = request.into_parts();
        let mut corrupted = fileuploader_core::UploadBody::new();
        let mut next = async || body.next_chunk().await.unwrap().unwrap();
        corrupted.push(next().await);
        let mut data = next().await.to_vec();
        data[0] ^= 0xff;
        corrupted.push_data(data.into());
        while let Some(rest) = body.next_chunk().await {
            corrupted.push(rest.unwrap());
        }
        self.inner
            .send(fileuploader_core::Request::from_parts(parts, corrupted))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_corrupted_in_flight_is_refused_resent_and_lands_intact() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/upload", listener.local_addr().unwrap());
    tokio::spawn(Receiver::new(dir.path()).unwrap().serve(listener));
    let transport = Corrupting {
        inner: HyperTransport::new().unwrap(),
        at: "bytes 2000-",
        done: Default::default(),
    };
    let manager = UploadManager::new(transport);
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 241) as u8).collect();
    let mut job = manager.create_job();
    job.server_url = url;
    job.block_size = 1000;
    job.retry.initial_backoff = Duration::from_millis(10);
    job.source_value.add(
        manager.generate_url_for_upload_data(data.clone()),
        "x.bin",
        None,
    );
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(
        job.progress().retries,
        1,
        "the corrupted block was sent again"
    );
    assert_eq!(std::fs::read(dir.path().join("x.bin")).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_restarting_mid_upload_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, first) = serving(dir.path(), "127.0.0.1:0");
    let manager = UploadManager::new(HyperTransport::new().unwrap());
    let data: Vec<u8> = (0..3000 * 1024u32).map(|i| (i % 239) as u8).collect();
    let mut job = manager.create_job();
    job.server_url = format!("http://{addr}/upload");
    job.block_size = 1024;
    job.retry.max_attempts = 30;
    job.retry.initial_backoff = Duration::from_millis(50);
    job.retry.max_backoff = Duration::from_millis(200);
    job.source_value.add(
        manager.generate_url_for_upload_data(data.clone()),
        "restart.bin",
        None,
    );
    let handle = manager.run(&job).unwrap();

    while job.progress().blocks_acknowledged < 200 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.shutdown_background();
    let at_restart = job.progress().blocks_acknowledged;
    assert!(at_restart < 3000, "the restart came mid-upload");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, second) = serving(dir.path(), &addr.to_string());
    let outcome = handle.wait().await;
    second.shutdown_background();
    outcome.unwrap();
    assert!(
        job.progress().retries >= 1,
        "the client rode through the restart"
    );
    assert_eq!(std::fs::read(dir.path().join("restart.bin")).unwrap(), data);
    let partial = fileuploader_server::partial_dir(dir.path());
    assert_eq!(
        std::fs::read_dir(partial).unwrap().count(),
        0,
        "nothing partial left behind"
    );
}

#[tokio::test]
async fn the_status_query_answers_which_ranges_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    post(
        &receiver,
        &[("content-range", "bytes 0-3/10"), ("x-upload-id", "q1")],
        form(&[("RemoteFile", Some("q.bin"), b"abcd")]),
    )
    .await;
    post(
        &receiver,
        &[("content-range", "bytes 8-9/10"), ("x-upload-id", "q1")],
        form(&[("RemoteFile", Some("q.bin"), b"ij")]),
    )
    .await;
    let get = |query: &'static str| {
        let receiver = receiver.clone();
        async move {
            let response = receiver
                .handle(Request::get(query).body(Full::new(Bytes::new())).unwrap())
                .await;
            let status = response.status();
            (
                status,
                String::from_utf8(
                    response
                        .into_body()
                        .collect()
                        .await
                        .unwrap()
                        .to_bytes()
                        .to_vec(),
                )
                .unwrap(),
            )
        }
    };
    let (s, text) = get("/upload?upload_id=q1").await;
    assert_eq!(
        (s, text.as_str()),
        (
            StatusCode::OK,
            "{\"state\":\"partial\",\"upload_id\":\"q1\",\"total\":10,\"received\":[[0,4],[8,10]]}\n"
        )
    );
    assert_eq!(
        get("/upload?upload_id=nope").await,
        (
            StatusCode::NOT_FOUND,
            "{\"state\":\"unknown\",\"upload_id\":\"nope\"}\n".into()
        )
    );
    assert_eq!(get("/upload").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        get("/upload?upload_id=a/b").await.0,
        StatusCode::BAD_REQUEST
    );

    // After a restart the query reads what is on disk.
    let restarted = Receiver::new(dir.path()).unwrap();
    let (total, ranges) = restarted.status("q1").await.unwrap().unwrap();
    assert_eq!((total, ranges.ranges()), (10, &[(0, 4), (8, 10)][..]));

    // A discard forgets it.
    let response = receiver
        .handle(
            Request::delete("/upload?upload_id=q1")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(get("/upload?upload_id=q1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        std::fs::read_dir(fileuploader_server::partial_dir(dir.path()))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn a_discarding_receiver_reads_everything_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap().discard(true);
    let (s, _) = post(
        &receiver,
        &[("content-range", "bytes 0-3/10")],
        form(&[("RemoteFile", Some("d.bin"), b"abcd")]),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(listing(dir.path()).is_empty());
    assert_eq!(
        std::fs::read_dir(fileuploader_server::partial_dir(dir.path()))
            .unwrap()
            .count(),
        0
    );
}

/// Counts the block requests it passes on, by first byte, and fails every
/// block from `fail_from` on with an error that is not retried.
#[derive(Debug)]
struct Counting {
    inner: HyperTransport,
    starts: std::sync::Mutex<Vec<u64>>,
    fail_from: u64,
}

#[async_trait::async_trait]
impl fileuploader_core::Transport for Counting {
    async fn send(
        &self,
        request: fileuploader_core::Request,
    ) -> Result<fileuploader_core::Response, fileuploader_core::TransportError> {
        if let Some(range) = request.headers().get("content-range") {
            let range = fileuploader_server::ContentRange::parse(range.to_str().unwrap()).unwrap();
            if range.start >= self.fail_from {
                return Err(fileuploader_core::TransportError::new(
                    fileuploader_core::TransportErrorKind::Other,
                    "interrupted",
                ));
            }
            self.starts.lock().unwrap().push(range.start);
        }
        self.inner.send(request).await
    }
}

/// A job sending `path` to `url` in blocks of `block_size`, journaled in
/// `journals`, through a [`Counting`] transport that fails every block
/// from `fail_from` on.
fn counted_job(
    url: &str,
    journals: &std::path::Path,
    path: &std::path::Path,
    block_size: u64,
    fail_from: u64,
) -> (
    UploadManager,
    fileuploader_core::Job,
    std::sync::Arc<Counting>,
) {
    let transport = std::sync::Arc::new(Counting {
        inner: HyperTransport::new().unwrap(),
        starts: Default::default(),
        fail_from,
    });
    let manager = UploadManager::new(transport.clone());
    let mut job = manager.create_job();
    job.server_url = url.to_owned();
    job.block_size = block_size;
    job.resume = fileuploader_core::Resume::In(journals.to_owned());
    job.source_value.add(path.to_str().unwrap(), "", None);
    (manager, job, transport)
}

/// The one resume journal in `journals`, and what it says.
fn the_journal(journals: &std::path::Path) -> (std::path::PathBuf, String) {
    let mut found = std::fs::read_dir(journals).unwrap();
    let path = found.next().unwrap().unwrap().path();
    assert!(found.next().is_none(), "one journal");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_sends_exactly_what_the_receiver_lacks_whatever_the_journal_says() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/upload", listener.local_addr().unwrap());
    tokio::spawn(Receiver::new(dir.path()).unwrap().serve(listener));
    let journals = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("lacks.bin");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 247) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let run = |fail_from: u64| counted_job(&url, journals.path(), &path, 1000, fail_from);

    let (manager, first, _) = run(60_000);
    let err = manager.run(&first).unwrap().wait().await.unwrap_err();
    assert_eq!(err.message(), "interrupted");

    // The journal now claims too little (blocks 0-9) and too much (90-99).
    let (journal, text) = the_journal(journals.path());
    let header = text.lines().next().unwrap();
    let mut edited = format!("{header}\n");
    for index in (0..10).chain(90..100) {
        edited += &format!("ack {index}\n");
    }
    std::fs::write(&journal, edited).unwrap();

    let (manager, second, transport) = run(u64::MAX);
    manager.run(&second).unwrap().wait().await.unwrap();
    let mut starts = transport.starts.lock().unwrap().clone();
    starts.sort_unstable();
    assert_eq!(
        starts,
        (60..100).map(|b| b * 1000).collect::<Vec<u64>>(),
        "exactly the 40 blocks the receiver lacked"
    );
    let progress = second.progress();
    assert_eq!(progress.resumed_blocks, 60);
    assert_eq!(
        (progress.landings_confirmed, progress.journal_trusted),
        (1, false)
    );
    assert!(
        second
            .notices()
            .iter()
            .any(|n| n.contains("the receiver holds 60 of the blocks")),
        "{:?}",
        second.notices()
    );
    assert_eq!(std::fs::read(dir.path().join("lacks.bin")).unwrap(), data);
    assert_eq!(std::fs::read_dir(journals.path()).unwrap().count(), 0);
}

/// A journal keeps a new upload id before its first block arrives; other
/// credentials that learn it then can land a file of theirs under it. The
/// next run asks, hears the receiver knows nothing of ours under that id,
/// and so takes the refusal of its block as the id being taken: the upload
/// begins again under another id and lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journaled_id_someone_else_took_before_any_block_arrived_is_replaced() {
    use fileuploader_server::Access;
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/upload", listener.local_addr().unwrap());
    let access = || {
        Access::open()
            .token("ours")
            .unwrap()
            .token("theirs")
            .unwrap()
    };
    let receiver = Receiver::new(dir.path()).unwrap().access(access());
    tokio::spawn(receiver.serve(listener));
    let (journals, src) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let path = src.path().join("ours.bin");
    let data: Vec<u8> = (0..30_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let run = |fail_from: u64| {
        let (manager, mut job, _) = counted_job(&url, journals.path(), &path, 10_000, fail_from);
        job.http_header.insert("Authorization", "Bearer ours");
        (manager, job)
    };
    let (manager, first) = run(0);
    let err = manager.run(&first).unwrap().wait().await.unwrap_err();
    assert_eq!(err.message(), "interrupted");
    let (_, text) = the_journal(journals.path());
    let id = text.split('"').rev().nth(1).unwrap().to_owned();
    assert_eq!(id.len(), 32, "{text}");

    let other = Receiver::new(dir.path()).unwrap().access(access());
    let theirs = [
        ("x-upload-id", id.as_str()),
        ("authorization", "Bearer theirs"),
    ];
    let body = form(&[("RemoteFile", Some("theirs.bin"), b"theirs")]);
    assert_eq!(
        ask(&other, "POST", "/upload", &theirs, body).await,
        StatusCode::OK
    );

    let (manager, second) = run(u64::MAX);
    manager.run(&second).unwrap().wait().await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("ours.bin")).unwrap(), data);
    assert_eq!(
        std::fs::read(dir.path().join("theirs.bin")).unwrap(),
        b"theirs"
    );
    assert_eq!(std::fs::read_dir(journals.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_resumed_after_a_later_source_failed_asks_about_the_one_that_landed() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/upload", listener.local_addr().unwrap());
    tokio::spawn(Receiver::new(dir.path()).unwrap().serve(listener));
    let (journals, src) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, two) = (src.path().join("one.bin"), src.path().join("two.bin"));
    std::fs::write(&one, vec![1u8; 30_000]).unwrap();
    std::fs::write(&two, vec![2u8; 30_000]).unwrap();
    // Someone else's file holds the second name: the first run fails there.
    std::fs::write(dir.path().join("two.bin"), b"in the way").unwrap();
    let transport = std::sync::Arc::new(HyperTransport::new().unwrap());
    let manager = UploadManager::new(transport);
    let mut job = manager.create_job();
    job.server_url = url.clone();
    job.block_size = 10_000;
    job.resume = fileuploader_core::Resume::In(journals.path().to_owned());
    job.source_value.add(&one, "", None);
    job.source_value.add(&two, "", None);

    let err = manager.run(&job).unwrap().wait().await.unwrap_err();
    assert!(err.message().contains("two.bin"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("one.bin")).unwrap(),
        vec![1u8; 30_000]
    );
    assert_eq!(
        std::fs::read_dir(journals.path()).unwrap().count(),
        2,
        "the landed source's journal stays while the job has not succeeded"
    );

    std::fs::remove_file(dir.path().join("two.bin")).unwrap();
    manager.run(&job).unwrap().wait().await.unwrap();
    let progress = job.progress();
    assert_eq!(progress.landings_confirmed, 2);
    assert_eq!(
        progress.resumed_blocks, 3,
        "one.bin is held, not sent again"
    );
    assert_eq!(
        std::fs::read(dir.path().join("two.bin")).unwrap(),
        vec![2u8; 30_000]
    );
    assert_eq!(std::fs::read_dir(journals.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_file_whose_answer_was_lost_is_confirmed_by_asking_not_by_sending_again() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/upload", listener.local_addr().unwrap());
    tokio::spawn(Receiver::new(dir.path()).unwrap().serve(listener));
    // The first block reaches the receiver; its answer is lost.
    let transport = std::sync::Arc::new(support::Meddling::new(
        |_, _| None,
        |(method, _), before, answer| {
            if *method == http::Method::POST && !support::any(before, &http::Method::POST) {
                return support::reset();
            }
            Ok(answer)
        },
    ));
    let manager = UploadManager::new(transport.clone());
    let mut job = manager.create_job();
    job.server_url = url;
    job.block_size = 1 << 20;
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 13) as u8).collect();
    job.source_value.add(
        manager.generate_url_for_upload_data(data.clone()),
        "once.bin",
        None,
    );
    manager.run(&job).unwrap().wait().await.unwrap();
    let posts = transport
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(method, _)| method == http::Method::POST)
        .count();
    assert_eq!(posts, 1, "the file was sent once");
    assert_eq!(job.progress().landings_confirmed, 1);
    assert_eq!(std::fs::read(dir.path().join("once.bin")).unwrap(), data);
}

#[tokio::test]
async fn a_taken_name_is_refused_renamed_or_overwritten_as_told() {
    use fileuploader_server::OnConflict;
    let whole = |data: &'static [u8]| form(&[("RemoteFile", Some("n.txt"), data)]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("n.txt"), b"first").unwrap();

    let refusing = Receiver::new(dir.path()).unwrap();
    let (s, text) = post(&refusing, &[], whole(b"second")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{text}");
    let (s, _) = post(
        &refusing,
        &[("content-range", "bytes 0-1/4"), ("x-upload-id", "t1")],
        form(&[("RemoteFile", Some("n.txt"), b"ab")]),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "refused before the first byte");
    assert!(
        refusing.status("t1").await.unwrap().is_none(),
        "nothing begun"
    );

    let renaming = Receiver::new(dir.path())
        .unwrap()
        .on_conflict(OnConflict::Rename);
    for _ in 0..2 {
        let (s, text) = post(&renaming, &[], whole(b"again")).await;
        assert_eq!(s, StatusCode::OK, "{text}");
    }
    assert_eq!(listing(dir.path()), ["n (1).txt", "n (2).txt", "n.txt"]);
    assert_eq!(std::fs::read(dir.path().join("n.txt")).unwrap(), b"first");

    let overwriting = Receiver::new(dir.path())
        .unwrap()
        .on_conflict(OnConflict::Overwrite);
    let (s, _) = post(&overwriting, &[], whole(b"third")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(std::fs::read(dir.path().join("n.txt")).unwrap(), b"third");
}

/// A request to `receiver` with these headers and query.
async fn ask(
    receiver: &Receiver,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> StatusCode {
    let mut req = Request::builder().method(method).uri(uri).header(
        "content-type",
        format!("multipart/form-data; boundary={BOUNDARY}"),
    );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    receiver
        .handle(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .status()
}

#[tokio::test]
async fn without_valid_credentials_every_request_kind_gets_401_and_changes_nothing() {
    use fileuploader_server::{sign_url, Access, NameRule};
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap().access(
        Access::open()
            .token("s3cret")
            .unwrap()
            .signing_key(&b"key"[..])
            .unwrap(),
    );
    let block = || form(&[("RemoteFile", Some("t.bin"), b"ab")]);
    let seg = [("content-range", "bytes 0-1/4"), ("x-upload-id", "a1")];
    let owner = [seg[0], seg[1], ("authorization", "Bearer s3cret")];
    assert_eq!(
        ask(&receiver, "POST", "/upload", &owner, block()).await,
        StatusCode::OK
    );

    for auth in [None, Some("Bearer wrong"), Some("Basic czNjcmV0")] {
        let mut h = seg.to_vec();
        h.extend(auth.map(|a| ("authorization", a)));
        assert_eq!(
            ask(&receiver, "POST", "/upload", &h, block()).await,
            StatusCode::UNAUTHORIZED
        );
        let q = "/upload?upload_id=a1";
        assert_eq!(
            ask(&receiver, "GET", q, &h[2..], vec![]).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ask(&receiver, "DELETE", q, &h[2..], vec![]).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let forged = "/upload?fu_expires=9999999999&fu_sig=00";
    assert_eq!(
        ask(&receiver, "POST", forged, &seg, block()).await,
        StatusCode::UNAUTHORIZED
    );
    let expired = sign_url(b"key", "http://x/upload", 1, None, None, None).unwrap();
    let expired = &expired["http://x".len()..];
    assert_eq!(
        ask(&receiver, "POST", expired, &seg, block()).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        owners_view(&receiver)
            .await
            .contains("\"received\":[[0,2]]"),
        "nothing changed: {}",
        owners_view(&receiver).await
    );

    // A signed URL lets in only its name, size and uploads.
    let signed = sign_url(
        b"key",
        "http://x/upload",
        u64::MAX / 2,
        Some(&NameRule::Exactly("t.bin".into())),
        Some(4),
        None,
    )
    .unwrap();
    let signed = &signed["http://x".len()..];
    assert_eq!(
        ask(&receiver, "POST", signed, &seg, block()).await,
        StatusCode::OK,
        "under another's upload id, an upload of its own"
    );
    let mine = [("content-range", "bytes 0-1/4"), ("x-upload-id", "b1")];
    assert_eq!(
        ask(&receiver, "POST", signed, &mine, block()).await,
        StatusCode::OK
    );
    let other_name = form(&[("RemoteFile", Some("u.bin"), b"ab")]);
    let fresh = [("content-range", "bytes 0-1/4"), ("x-upload-id", "b2")];
    assert_eq!(
        ask(&receiver, "POST", signed, &fresh, other_name).await,
        StatusCode::FORBIDDEN
    );
    let big = [("content-range", "bytes 0-1/5"), ("x-upload-id", "b3")];
    assert_eq!(
        ask(&receiver, "POST", signed, &big, block()).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // The owner's status query sees its upload; another's sees only its
    // own under the same id, and its discard takes only that.
    let owner_status = "/upload?upload_id=a1";
    let token = [("authorization", "Bearer s3cret")];
    assert_eq!(
        ask(&receiver, "GET", owner_status, &token, vec![]).await,
        StatusCode::OK
    );
    let others = format!("{signed}&upload_id=a1");
    assert_eq!(
        ask(&receiver, "GET", &others, &[], vec![]).await,
        StatusCode::OK
    );
    assert_eq!(
        ask(&receiver, "DELETE", &others, &[], vec![]).await,
        StatusCode::NOT_FOUND
    );
    assert!(
        owners_view(&receiver)
            .await
            .contains("\"received\":[[0,2]]"),
        "not discarded by another: {}",
        owners_view(&receiver).await
    );
}

/// What the token `s3cret`'s status query says of its upload `a1`.
async fn owners_view(receiver: &Receiver) -> String {
    let request = Request::get("/upload?upload_id=a1")
        .header("authorization", "Bearer s3cret")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = receiver.handle(request).await;
    let text = answer.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn every_url_signed_for_one_subject_reaches_its_uploads_and_no_others() {
    use fileuploader_server::{sign_url, Access};
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path())
        .unwrap()
        .access(Access::open().signing_key(&b"key"[..]).unwrap());
    let url = |expires: u64, subject: &str| {
        let signed = sign_url(
            b"key",
            "http://x/upload",
            expires,
            None,
            None,
            Some(subject),
        );
        signed.unwrap()["http://x".len()..].to_owned()
    };
    let block = |range: &'static str, bytes: &'static [u8]| {
        let headers = [("content-range", range), ("x-upload-id", "s1")];
        (headers, form(&[("RemoteFile", Some("s.bin"), bytes)]))
    };
    let (first, body) = block("bytes 0-1/4", b"ab");
    let alice = url(u64::MAX / 2, "alice");
    assert_eq!(
        ask(&receiver, "POST", &alice, &first, body).await,
        StatusCode::OK
    );
    // Another URL for bob reaches nothing of alice's: under the same id,
    // it begins bob's own upload.
    let (second, body) = block("bytes 2-3/4", b"XY");
    let bob = url(u64::MAX / 2, "bob");
    assert_eq!(
        ask(&receiver, "POST", &bob, &second, body).await,
        StatusCode::OK
    );
    // A fresh URL for alice (another expiry, another signature) finishes
    // what the first began.
    let (second, body) = block("bytes 2-3/4", b"cd");
    assert_eq!(
        ask(
            &receiver,
            "POST",
            &url(u64::MAX / 3, "alice"),
            &second,
            body
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(std::fs::read(dir.path().join("s.bin")).unwrap(), b"abcd");
    // The subject is signed: changed, the URL is refused.
    let forged = alice.replace("fu_sub=alice", "fu_sub=bob");
    let (third, body) = block("bytes 0-1/4", b"ab");
    assert_eq!(
        ask(&receiver, "POST", &forged, &third, body).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn partial_uploads_expire_and_a_quota_refuses_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path())
        .unwrap()
        .expire(Duration::from_millis(300))
        .quota(10);
    let block = |id: &'static str, range: &'static str| {
        let receiver = receiver.clone();
        async move {
            post(
                &receiver,
                &[("content-range", range), ("x-upload-id", id)],
                form(&[("RemoteFile", Some("q.bin"), b"ab")]),
            )
            .await
            .0
        }
    };
    assert_eq!(block("q1", "bytes 0-1/8").await, StatusCode::OK);
    assert_eq!(
        block("q2", "bytes 0-1/8").await,
        StatusCode::INSUFFICIENT_STORAGE,
        "8 + 8 bytes are over the quota of 10"
    );
    assert!(
        receiver.status("q2").await.unwrap().is_none(),
        "nothing stored"
    );
    assert_eq!(receiver.expire_now().await.unwrap(), 0, "q1 is fresh");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.expire_now().await.unwrap(), 1);
    assert!(receiver.status("q1").await.unwrap().is_none());
    assert_eq!(
        std::fs::read_dir(fileuploader_server::partial_dir(dir.path()))
            .unwrap()
            .count(),
        0,
        "its partial file is gone"
    );
    assert_eq!(
        block("q2", "bytes 0-1/8").await,
        StatusCode::OK,
        "expiry freed the quota"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_on_one_directory_see_the_same_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (
        Receiver::new(dir.path()).unwrap(),
        Receiver::new(dir.path()).unwrap(),
    );
    let data = b"0123456789abcdef";
    let block = |r: &Receiver, range: &'static str, bytes: &'static [u8]| {
        let r = r.clone();
        async move {
            post(
                &r,
                &segment(range, "shared"),
                checked("s.bin", bytes, &crc_hex(bytes)),
            )
            .await
        }
    };
    assert_eq!(
        block(&one, "bytes 0-3/16", &data[..4]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        block(&two, "bytes 8-11/16", &data[8..12]).await.0,
        StatusCode::OK
    );
    for r in [&one, &two] {
        let (total, ranges) = r.status("shared").await.unwrap().unwrap();
        assert_eq!((total, ranges.ranges()), (16, &[(0, 4), (8, 12)][..]));
    }

    // A range one receiver is writing is refused by the other, and free again
    // once the writer is gone.
    let upload = one.store().upload("shared").await.unwrap().unwrap();
    let range = fileuploader_server::ContentRange::parse("bytes 4-7/16").unwrap();
    let mut writer = one.store().write_block(&upload, range, true).await.unwrap();
    writer.write(Bytes::from_static(b"4")).await.unwrap();
    writer.finish().await.unwrap();
    let (s, text) = block(&two, "bytes 2-5/16", b"2345").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    drop(writer);
    assert_eq!(
        block(&two, "bytes 4-7/16", &data[4..8]).await.0,
        StatusCode::OK
    );

    // The last block lands through one; the other knows it landed.
    let (s, text) = block(&one, "bytes 12-15/16", &data[12..]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("\"landed\""), "{text}");
    assert_eq!(std::fs::read(dir.path().join("s.bin")).unwrap(), data);
    assert!(two.status("shared").await.unwrap().is_none());
    let (s, late) = block(&two, "bytes 0-3/16", &data[..4]).await;
    assert_eq!(
        (s, late),
        (StatusCode::OK, text),
        "a late block hears of the landing"
    );

    // An upload begun through one is discarded through the other.
    block(&one, "bytes 0-3/16", &data[..4]).await;
    let gone = |r: &Receiver| {
        let r = r.clone();
        async move {
            let request = Request::delete("/upload?upload_id=shared")
                .body(Full::new(Bytes::new()))
                .unwrap();
            r.handle(request).await.status()
        }
    };
    assert_eq!(gone(&two).await, StatusCode::NOT_FOUND);
    assert!(one.status("shared").await.unwrap().is_none());
}

#[tokio::test]
async fn an_http2_connection_without_requests_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = fileuploader_server::Limits::default();
    limits.header_timeout = Duration::from_millis(300);
    let receiver = Receiver::new(dir.path()).unwrap().limits(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(receiver.serve(listener));

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get(format!("http://{addr}/upload?upload_id=none"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = sender.send_request(request).await.unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(closed.is_ok(), "the idle connection stayed open");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_completing_an_upload_at_once_both_hear_it_landed() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    for round in 0..200 {
        let id = format!("race{round}");
        let name = format!("race{round}.bin");
        let halves = [("bytes 0-3/8", b"abcd"), ("bytes 4-7/8", b"efgh")];
        let sends = halves.map(|(range, bytes)| {
            let (receiver, id, name) = (receiver.clone(), id.clone(), name.clone());
            tokio::spawn(async move {
                post(
                    &receiver,
                    &segment(range, &id),
                    checked(&name, bytes, &crc_hex(bytes)),
                )
                .await
            })
        });
        for send in sends {
            let (status, text) = send.await.unwrap();
            assert!(
                status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                "round {round}: {status} {text}"
            );
        }
        assert_eq!(std::fs::read(dir.path().join(&name)).unwrap(), b"abcdefgh");
    }
}

#[tokio::test]
async fn relative_paths_land_in_folders_that_cannot_lead_outside() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path())
        .unwrap()
        .on_conflict(fileuploader_server::OnConflict::Rename);
    let send = |name: &'static str, bytes: &'static [u8]| {
        let receiver = receiver.clone();
        async move { post(&receiver, &[], form(&[("RemoteFile", Some(name), bytes)])).await }
    };
    let (s, text) = send("photos/2024/a.jpg", b"one").await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(
        std::fs::read(dir.path().join("photos/2024/a.jpg")).unwrap(),
        b"one"
    );
    assert_eq!(send("photos/2024/a.jpg", b"two").await.0, StatusCode::OK);
    assert_eq!(
        std::fs::read(dir.path().join("photos/2024/a (1).jpg")).unwrap(),
        b"two",
        "renamed in its own folder"
    );
    std::fs::write(dir.path().join("plain"), b"a file").unwrap();
    let (s, text) = send("plain/b.txt", b"x").await;
    assert_eq!(s, StatusCode::CONFLICT, "{text}");
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    let (s, text) = send("link/escape.txt", b"x").await;
    assert_eq!(s, StatusCode::CONFLICT, "{text}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    let (s, _) = send(".fileuploader-state/uploads.sqlite", b"x").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(send("../up/c.txt", b"c").await.0, StatusCode::OK);
    assert_eq!(
        std::fs::read(dir.path().join("c.txt")).unwrap(),
        b"c",
        "a path that climbs lands as its plain name"
    );
}

/// Upload `id` of "hello", as `five.txt`, every byte acknowledged through
/// the store alone: nothing landed it, as when the receiver stopped between
/// the block that completed it and its landing, or a store's listing was
/// behind that block.
async fn acknowledged_not_landed(receiver: &Receiver, dir: &std::path::Path, id: &str) {
    use fileuploader_server::store::NewUpload;
    let store = receiver.store();
    let new = NewUpload {
        id: id.into(),
        total: 5,
        name: "five.txt".into(),
        owner: String::new(),
        partial: false,
        metadata: None,
    };
    let upload = store
        .begin(new, fileuploader_server::Quota::none())
        .await
        .unwrap();
    let range = fileuploader_server::ContentRange::parse("bytes 0-4/5").unwrap();
    let mut writer = store.write_block(&upload, range, true).await.unwrap();
    writer.write(Bytes::from_static(b"hello")).await.unwrap();
    assert!(writer.finish().await.unwrap());
    let held = writer
        .acknowledge(5, Some(crc32c::crc32c(b"hello")))
        .await
        .unwrap();
    assert!(held.complete());
    assert!(!dir.join("five.txt").exists());
}

#[tokio::test]
async fn a_complete_upload_that_has_not_landed_lands_when_its_status_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    acknowledged_not_landed(&receiver, dir.path(), "behind").await;

    let request = Request::get("/upload?upload_id=behind")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = receiver.handle(request).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let text = answer.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("\"landed\"") && text.contains("five.txt"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("five.txt")).unwrap(),
        b"hello"
    );
}

#[tokio::test]
async fn a_landing_cut_off_after_its_file_was_placed_is_recorded_not_refused() {
    use fileuploader_server::OnConflict;
    for (policy, placed_as, there_before) in [
        (OnConflict::Refuse, "five.txt", None),
        (OnConflict::Rename, "five (1).txt", Some("five.txt")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver::new(dir.path()).unwrap().on_conflict(policy);
        acknowledged_not_landed(&receiver, dir.path(), "placed").await;
        if let Some(other) = there_before {
            std::fs::write(dir.path().join(other), b"other").unwrap();
        }
        // The receiver stopped between putting the file in place (a link
        // to the partial file) and recording the landing.
        std::fs::hard_link(
            dir.path().join(".fileuploader-partial/id-placed.part"),
            dir.path().join(placed_as),
        )
        .unwrap();
        let request = Request::get("/upload?upload_id=placed")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = receiver.handle(request).await;
        let status = answer.status();
        let text = answer.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, StatusCode::OK, "{policy:?}: {text}");
        assert!(
            text.contains("\"landed\"") && text.contains(&format!("\"name\":\"{placed_as}\"")),
            "{policy:?}: {text}"
        );
        assert_eq!(std::fs::read(dir.path().join(placed_as)).unwrap(), b"hello");
        assert_eq!(
            listing(dir.path()).len(),
            1 + usize::from(there_before.is_some())
        );
    }
}

#[tokio::test]
async fn a_complete_upload_that_has_not_landed_lands_before_a_head_says_its_offset() {
    for (dialect, version) in [
        ("tus-resumable", "1.0.0"),
        ("upload-draft-interop-version", "6"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver::new(dir.path()).unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        acknowledged_not_landed(&receiver, dir.path(), id).await;

        let request = Request::head(format!("/files/{id}"))
            .header(dialect, version)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = receiver.handle(request).await;
        assert!(
            answer.status().is_success(),
            "{dialect}: {}",
            answer.status()
        );
        assert_eq!(answer.headers()["upload-offset"], "5", "{dialect}");
        assert_eq!(
            std::fs::read(dir.path().join("five.txt")).unwrap(),
            b"hello",
            "{dialect}: landed before the offset was told"
        );
    }
}

#[tokio::test]
async fn a_block_whose_body_breaks_off_is_answered_408_and_counts_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    let body = form(&[("file", Some("cut.bin"), b"0123456789")]);
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = vec![
        Ok(http_body::Frame::data(Bytes::copy_from_slice(&body[..40]))),
        Err(std::io::Error::other("connection closed one way")),
    ];
    let request = Request::post("/upload")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("x-upload-id", "cut0")
        .header("content-range", "bytes 0-9/10")
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(
            chunks,
        )))
        .unwrap();
    let answer = receiver.handle(request).await;
    // Nothing wrong with the request: 408 tells the client to send it again.
    assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT);
    let (status, _) = post(
        &receiver,
        &[("x-upload-id", "cut0"), ("content-range", "bytes 0-9/10")],
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        std::fs::read(dir.path().join("cut.bin")).unwrap(),
        b"0123456789"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_before_its_body_arrived_gets_its_answer_not_a_reset() {
    use fileuploader_server::Access;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path())
        .unwrap()
        .access(Access::open().token("right").unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { receiver.serve(listener).await });
    let body = form(&[("RemoteFile", Some("w.bin"), &vec![7u8; 600_000])]);
    for (auth, expected) in [("Bearer wrong", "401"), ("Bearer right", "200")] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\nconnection: close\r\ncontent-type: multipart/form-data; boundary={BOUNDARY}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        // The refusal is ready as soon as the head is read; the body is
        // on its way by then, most of it not yet read.
        tcp.write_all(head.as_bytes()).await.unwrap();
        let _ = tcp.write_all(&body).await;
        let mut answer = Vec::new();
        let read = tcp.read_to_end(&mut answer);
        let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{auth}: {answer:?}"
        );
    }
}
