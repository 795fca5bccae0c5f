//! The receiver's tus 1.0 and IETF draft doors, request by request.

mod support;
use support::{any, reset, serving, Meddling, Sent};

use bytes::Bytes;
use fileuploader_server::Receiver;
use fileuploader_wire::resumable::ChecksumAlgorithm;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};

type Answer = http::Response<Bytes>;

async fn send(receiver: &Receiver, request: Request<Full<Bytes>>) -> Answer {
    let response = receiver.handle(request).await;
    let (parts, body) = response.into_parts();
    http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn tus(method: &str, uri: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("tus-resumable", "1.0.0")
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap())
}

fn patch(uri: &str, offset: u64, bytes: &'static [u8]) -> Request<Full<Bytes>> {
    tus("PATCH", uri)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", offset)
        .body(Full::new(Bytes::from_static(bytes)))
        .unwrap()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn a_tus_upload_is_created_appended_checked_and_landed() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap().max_upload_size(1 << 20);

    let options = send(
        &receiver,
        Request::options("/files").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(header(&options, "tus-version"), "1.0.0");
    assert!(header(&options, "tus-extension").contains("creation-with-upload"));
    assert_eq!(
        header(&options, "tus-checksum-algorithm"),
        "crc32c,sha256,sha1"
    );
    assert_eq!(header(&options, "tus-max-size"), "1048576");

    let unversioned = Request::post("/files")
        .header("upload-length", "10")
        .body(Full::default())
        .unwrap();
    // Without Tus-Resumable a POST is the segmented door's, which wants a form.
    assert_eq!(
        send(&receiver, unversioned).await.status(),
        StatusCode::BAD_REQUEST
    );
    let old = Request::post("/files")
        .header("tus-resumable", "0.2.2")
        .header("upload-length", "10")
        .body(Full::default())
        .unwrap();
    let old = send(&receiver, old).await;
    assert_eq!(old.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(header(&old, "tus-version"), "1.0.0");
    let huge = tus("POST", "/files")
        .header("upload-length", 2 << 20)
        .body(Full::default())
        .unwrap();
    assert_eq!(
        send(&receiver, huge).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );

    let created = tus("POST", "/files/")
        .header("upload-length", "10")
        .header(
            "upload-metadata",
            format!("filename {},kind", base64(b"t.txt")),
        )
        .body(Full::default())
        .unwrap();
    let created = send(&receiver, created).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(header(&created, "tus-resumable"), "1.0.0");
    let url = header(&created, "location").to_owned();
    assert!(url.starts_with("/files/") && url.len() > 20, "{url}");
    assert!(!header(&created, "upload-expires").is_empty());

    let head = send(&receiver, tus("HEAD", &url).body(Full::default()).unwrap()).await;
    assert_eq!(
        (
            head.status(),
            header(&head, "upload-offset"),
            header(&head, "upload-length")
        ),
        (StatusCode::OK, "0", "10")
    );
    assert_eq!(header(&head, "cache-control"), "no-store");

    let wrong_type = tus("PATCH", &url)
        .header("upload-offset", "0")
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    assert_eq!(
        send(&receiver, wrong_type).await.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let first = send(&receiver, patch(&url, 0, b"abcd")).await;
    assert_eq!(
        (first.status(), header(&first, "upload-offset")),
        (StatusCode::NO_CONTENT, "4")
    );
    let stale = send(&receiver, patch(&url, 0, b"abcd")).await;
    assert_eq!(
        (stale.status(), header(&stale, "upload-offset")),
        (StatusCode::CONFLICT, "4"),
        "a stale offset hears the right one"
    );

    let mut bad_sum = patch(&url, 4, b"efg");
    bad_sum.headers_mut().insert(
        "upload-checksum",
        format!("sha1 {}", base64(&ChecksumAlgorithm::Sha1.digest(b"xxx")))
            .parse()
            .unwrap(),
    );
    assert_eq!(send(&receiver, bad_sum).await.status().as_u16(), 460);
    let mut unknown = patch(&url, 4, b"efg");
    unknown
        .headers_mut()
        .insert("upload-checksum", "md5 AAAA".parse().unwrap());
    assert_eq!(
        send(&receiver, unknown).await.status(),
        StatusCode::BAD_REQUEST
    );
    let head = send(&receiver, tus("HEAD", &url).body(Full::default()).unwrap()).await;
    assert_eq!(
        header(&head, "upload-offset"),
        "4",
        "refused bodies count for nothing"
    );

    let mut good = patch(&url, 4, b"efg");
    good.headers_mut().insert(
        "upload-checksum",
        format!("sha1 {}", base64(&ChecksumAlgorithm::Sha1.digest(b"efg")))
            .parse()
            .unwrap(),
    );
    assert_eq!(send(&receiver, good).await.status(), StatusCode::NO_CONTENT);
    let too_long = send(&receiver, patch(&url, 7, b"hijk")).await;
    assert_eq!(too_long.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let last = send(&receiver, patch(&url, 7, b"hij")).await;
    assert_eq!(
        (last.status(), header(&last, "upload-offset")),
        (StatusCode::NO_CONTENT, "10")
    );
    assert_eq!(
        std::fs::read(dir.path().join("t.txt")).unwrap(),
        b"abcdefghij"
    );

    let head = send(&receiver, tus("HEAD", &url).body(Full::default()).unwrap()).await;
    assert_eq!(
        (
            head.status(),
            header(&head, "upload-offset"),
            header(&head, "upload-length")
        ),
        (StatusCode::OK, "10", "10"),
        "a landed upload reads as complete"
    );
}

#[tokio::test]
async fn tus_creation_with_upload_termination_and_a_cut_body() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    let created = tus("POST", "/files")
        .header("upload-length", "8")
        .header("upload-metadata", format!("filename {}", base64(b"w.bin")))
        .header("content-type", "application/offset+octet-stream")
        .body(Full::new(Bytes::from_static(b"0123")))
        .unwrap();
    let created = send(&receiver, created).await;
    assert_eq!(
        (created.status(), header(&created, "upload-offset")),
        (StatusCode::CREATED, "4")
    );
    let url = header(&created, "location").to_owned();

    // A body that breaks after two bytes keeps them.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"45"))),
        Err(std::io::Error::other("connection reset")),
    ];
    let cut = tus("PATCH", &url)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "4")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    // 408: nothing was wrong with the request, which may come again.
    assert_eq!(
        receiver.handle(cut).await.status(),
        StatusCode::REQUEST_TIMEOUT
    );
    let head = send(&receiver, tus("HEAD", &url).body(Full::default()).unwrap()).await;
    assert_eq!(header(&head, "upload-offset"), "6");

    let end = send(
        &receiver,
        tus("DELETE", &url).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(end.status(), StatusCode::NO_CONTENT);
    let head = send(&receiver, tus("HEAD", &url).body(Full::default()).unwrap()).await;
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        send(&receiver, patch(&url, 6, b"67")).await.status(),
        StatusCode::NOT_FOUND
    );
    assert!(!dir.path().join("w.bin").exists());
}

fn ietf(method: &str, uri: &str, version: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("upload-draft-interop-version", version)
}

#[tokio::test]
async fn an_ietf_upload_lands_in_one_request_or_in_appends() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();

    let whole = ietf("POST", "/up", "6")
        .header("upload-complete", "?1")
        .header("content-length", "5")
        .header(
            "upload-metadata",
            format!("filename {}", base64(b"one.txt")),
        )
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let whole = send(&receiver, whole).await;
    assert_eq!(whole.status(), StatusCode::CREATED);
    assert_eq!(header(&whole, "upload-complete"), "?1");
    assert_eq!(header(&whole, "upload-draft-interop-version"), "6");
    assert_eq!(std::fs::read(dir.path().join("one.txt")).unwrap(), b"hello");

    let begun = ietf("POST", "/up", "6")
        .header("upload-complete", "?0")
        .header("upload-length", "6")
        .header(
            "upload-metadata",
            format!("filename {}", base64(b"two.txt")),
        )
        .body(Full::default())
        .unwrap();
    let begun = send(&receiver, begun).await;
    let url = header(&begun, "location").to_owned();
    let append = |offset: u64, body: &'static [u8], complete: &str| {
        ietf("PATCH", &url, "6")
            .header("content-type", "application/partial-upload")
            .header("upload-offset", offset)
            .header("upload-complete", complete)
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    };
    let first = send(&receiver, append(0, b"wor", "?0")).await;
    assert_eq!(
        (
            first.status(),
            header(&first, "upload-offset"),
            header(&first, "upload-complete")
        ),
        (StatusCode::NO_CONTENT, "3", "?0")
    );
    let head = send(
        &receiver,
        ietf("HEAD", &url, "6").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(
        (
            head.status(),
            header(&head, "upload-offset"),
            header(&head, "upload-complete")
        ),
        (StatusCode::NO_CONTENT, "3", "?0")
    );
    let early = send(&receiver, append(3, b"l", "?1")).await;
    assert_eq!(
        early.status(),
        StatusCode::BAD_REQUEST,
        "complete, but short"
    );
    let last = send(&receiver, append(3, b"lds", "?1")).await;
    assert_eq!(header(&last, "upload-complete"), "?1");
    assert_eq!(
        std::fs::read(dir.path().join("two.txt")).unwrap(),
        b"worlds"
    );

    let version_3 = ietf("POST", "/up", "3")
        .header("upload-incomplete", "?0")
        .header("content-length", "3")
        .body(Full::new(Bytes::from_static(b"old")))
        .unwrap();
    let version_3 = send(&receiver, version_3).await;
    assert_eq!(
        (version_3.status(), header(&version_3, "upload-incomplete")),
        (StatusCode::CREATED, "?0")
    );
    let unknown = ietf("POST", "/up", "99").body(Full::default()).unwrap();
    assert_eq!(
        send(&receiver, unknown).await.status(),
        StatusCode::BAD_REQUEST
    );
}

/// Interop 9 (draft -12), as its text says the server behaves: limits
/// announced on OPTIONS, creation, offset retrieval and 413; the offset by
/// GET as by HEAD; a mismatching offset as a problem with both offsets;
/// the name from Content-Disposition; Content-Digest checked before an
/// append is kept; Repr-Digest of the landed file when wanted. Interop 6
/// names the lifetime `expires`.
#[tokio::test]
async fn interop_9_announces_limits_reads_offsets_by_get_and_explains_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path())
        .unwrap()
        .max_upload_size(1000)
        .expire(std::time::Duration::from_secs(3600));
    let options = Request::options("/up")
        .header("upload-draft-interop-version", "9")
        .body(Full::default())
        .unwrap();
    let options = send(&receiver, options).await;
    assert_eq!(
        header(&options, "accept-patch"),
        "application/partial-upload"
    );
    assert_eq!(
        header(&options, "upload-limit"),
        "max-size=1000, max-age=3600"
    );

    let begun = ietf("POST", "/up", "9")
        .header("upload-complete", "?0")
        .header("upload-length", "6")
        .header(
            "content-disposition",
            "inline; filename=\"x.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt",
        )
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    let begun = send(&receiver, begun).await;
    assert_eq!(begun.status(), StatusCode::CREATED);
    assert_eq!(
        header(&begun, "upload-limit"),
        "max-size=1000, max-age=3600"
    );
    let url = header(&begun, "location").to_owned();
    for method in ["HEAD", "GET"] {
        let asked = send(
            &receiver,
            ietf(method, &url, "9").body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(
            (
                asked.status(),
                header(&asked, "upload-offset"),
                header(&asked, "upload-complete"),
                header(&asked, "upload-length"),
                header(&asked, "upload-limit"),
            ),
            (
                StatusCode::NO_CONTENT,
                "3",
                "?0",
                "6",
                "max-size=1000, max-age=3600"
            ),
            "{method}"
        );
    }
    let append = |offset: u64, body: &'static [u8], digest: Option<&str>| {
        let mut request = ietf("PATCH", &url, "9")
            .header("content-type", "application/partial-upload")
            .header("upload-offset", offset)
            .header("upload-complete", "?1")
            .header("want-repr-digest", "sha-256=5, crc32c=9");
        if let Some(digest) = digest {
            request = request.header("content-digest", digest);
        }
        request.body(Full::new(Bytes::from_static(body))).unwrap()
    };
    let wrong = send(&receiver, append(5, b"def", None)).await;
    assert_eq!(wrong.status(), StatusCode::CONFLICT);
    assert_eq!(header(&wrong, "content-type"), "application/problem+json");
    assert_eq!(header(&wrong, "upload-offset"), "3");
    assert_eq!(
        header(&wrong, "upload-complete"),
        "?0",
        "a refusal is the upload protocol's"
    );
    let problem: serde_json::Value = serde_json::from_slice(wrong.body()).unwrap();
    assert_eq!(
        (
            problem["type"].as_str(),
            problem["expected-offset"].as_u64(),
            problem["provided-offset"].as_u64()
        ),
        (
            Some("https://iana.org/assignments/http-problem-types#mismatching-upload-offset"),
            Some(3),
            Some(5)
        )
    );
    let sha = |bytes: &[u8]| {
        use sha2::Digest as _;
        format!("sha-256=:{}:", base64(&sha2::Sha256::digest(bytes)))
    };
    let damaged = send(&receiver, append(3, b"deX", Some(&sha(b"def")))).await;
    assert_eq!(
        damaged.status(),
        StatusCode::BAD_REQUEST,
        "a digest that does not match"
    );
    let head = send(
        &receiver,
        ietf("HEAD", &url, "9").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(header(&head, "upload-offset"), "3", "nothing of it kept");
    let last = send(&receiver, append(3, b"def", Some(&sha(b"def")))).await;
    assert_eq!(header(&last, "upload-complete"), "?1");
    let crc = crc32c::crc32c(b"abcdef").to_be_bytes();
    assert_eq!(
        header(&last, "repr-digest"),
        format!("crc32c=:{}:", base64(&crc)),
        "the landed file's digests it keeps (a directory keeps no SHA-256 unless it signs receipts)"
    );
    assert_eq!(
        std::fs::read(dir.path().join("résumé.txt")).unwrap(),
        b"abcdef",
        "named by filename*"
    );

    let too_large = ietf("POST", "/up", "9")
        .header("upload-complete", "?0")
        .header("upload-length", "5000")
        .body(Full::default())
        .unwrap();
    let too_large = send(&receiver, too_large).await;
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        header(&too_large, "upload-limit"),
        "max-size=1000, max-age=3600"
    );
    let old = ietf("POST", "/up", "6")
        .header("upload-complete", "?0")
        .header("upload-length", "1")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        header(&send(&receiver, old).await, "upload-limit"),
        "max-size=1000, expires=3600"
    );
}

/// As Apple's URLSession uploads: the whole file in one creation, its
/// connection cut after 40 % of the body. The receiver's `104` told where
/// the upload is before the final answer; the offset read there is what
/// arrived, the rest goes in one append, and the file lands having cost
/// at most 1.1 times its bytes.
#[test]
fn an_optimistic_creation_cut_mid_body_resumes_from_its_104() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (addr, _rt) = serving(dir.path(), "127.0.0.1:0");
    let file: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0usize;
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /files HTTP/1.1\r\nhost: x\r\nupload-draft-interop-version: 9\r\n\
         upload-complete: ?1\r\ncontent-length: {}\r\n\
         content-disposition: inline; filename=\"phone.mov\"\r\n\r\n",
        file.len()
    );
    socket.write_all(head.as_bytes()).unwrap();
    let cut = file.len() * 4 / 10;
    socket.write_all(&file[..cut]).unwrap();
    sent += cut;
    // The interim answer, before any final one.
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        socket.read_exact(&mut byte).unwrap();
        interim.push(byte[0]);
    }
    let interim = String::from_utf8(interim).unwrap();
    assert!(
        interim.starts_with("HTTP/1.1 104 "),
        "the first answer: {interim}"
    );
    let location = interim
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap()
        .to_owned();
    assert!(
        interim.contains("upload-draft-interop-version: 9"),
        "{interim}"
    );
    assert!(interim.contains("upload-limit: max-size="), "{interim}");
    // The connection breaks: no more of the body will come (a FIN, so the
    // receiver has all that was sent; a reset would lose what was in
    // flight, as on any network).
    socket.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = socket.read_to_end(&mut rest);
    drop(socket);

    let ask = |request: String, body: &[u8]| {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        socket.write_all(request.as_bytes()).unwrap();
        socket.write_all(body).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
            let n = socket.read(&mut chunk).unwrap();
            assert!(n > 0, "closed");
            answer.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    };
    let head = std::iter::repeat_with(|| {
        ask(
            format!(
                "HEAD {location} HTTP/1.1\r\nhost: x\r\nupload-draft-interop-version: 9\r\n\r\n"
            ),
            b"",
        )
    })
    .find(|answer| answer.starts_with("HTTP/1.1 204"))
    .unwrap();
    let offset: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("upload-offset: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(offset, cut, "every byte that arrived is kept");
    let rest = &file[offset..];
    let append = ask(
        format!(
            "PATCH {location} HTTP/1.1\r\nhost: x\r\nupload-draft-interop-version: 9\r\n\
             content-type: application/partial-upload\r\nupload-offset: {offset}\r\n\
             upload-complete: ?1\r\ncontent-length: {}\r\n\r\n",
            rest.len()
        ),
        rest,
    );
    sent += rest.len();
    assert!(append.contains("upload-complete: ?1"), "{append}");
    assert_eq!(std::fs::read(dir.path().join("phone.mov")).unwrap(), file);
    assert!(
        sent as f64 <= 1.1 * file.len() as f64,
        "{sent} bytes sent for {}",
        file.len()
    );
}

#[tokio::test]
async fn browsers_of_allowed_origins_get_cors_headers() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path())
        .unwrap()
        .cors(fileuploader_server::Cors::origins(["https://app.example"]).unwrap())
        .access(fileuploader_server::Access::open().token("secret").unwrap());
    let preflight = Request::options("/files")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PATCH")
        .body(Full::default())
        .unwrap();
    let preflight = send(&receiver, preflight).await;
    assert!(
        preflight.status().is_success(),
        "a preflight needs no token"
    );
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        "https://app.example"
    );
    assert!(header(&preflight, "access-control-allow-methods").contains("PATCH"));
    let denied = tus("POST", "/files")
        .header("origin", "https://app.example")
        .header("upload-length", "1")
        .body(Full::default())
        .unwrap();
    let denied = send(&receiver, denied).await;
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&denied, "access-control-expose-headers").contains("upload-offset"));
}

#[tokio::test]
async fn tus_partial_uploads_concatenate_into_one_landed_file() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    let mut urls = Vec::new();
    for part in [&b"first-"[..], b"second-", b"third"] {
        let created = tus("POST", "/files")
            .header("upload-length", part.len())
            .header("upload-concat", "partial")
            .header("content-type", "application/offset+octet-stream")
            .body(Full::new(Bytes::copy_from_slice(part)))
            .unwrap();
        let created = send(&receiver, created).await;
        assert_eq!(created.status(), StatusCode::CREATED);
        urls.push(header(&created, "location").to_owned());
    }
    let head = send(
        &receiver,
        tus("HEAD", &urls[0]).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(header(&head, "upload-concat"), "partial");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.')),
        "complete partial uploads do not land"
    );

    let unfinished = tus("POST", "/files")
        .header("upload-length", "9")
        .header("upload-concat", "partial")
        .body(Full::default())
        .unwrap();
    let unfinished = header(&send(&receiver, unfinished).await, "location").to_owned();
    let refused = tus("POST", "/files")
        .header("upload-concat", format!("final;{} {unfinished}", urls[0]))
        .body(Full::default())
        .unwrap();
    assert_eq!(
        send(&receiver, refused).await.status(),
        StatusCode::BAD_REQUEST
    );

    let absolute = format!("http://receiver.example{}", urls[2]);
    let final_request = || {
        tus("POST", "/files")
            .header(
                "upload-concat",
                format!("final;{} {} {absolute}", urls[0], urls[1]),
            )
            .header(
                "upload-metadata",
                format!("filename {}", base64(b"joined.txt")),
            )
            .body(Full::default())
            .unwrap()
    };
    let fin = send(&receiver, final_request()).await;
    assert_eq!(fin.status(), StatusCode::CREATED);
    let again = send(&receiver, final_request()).await;
    assert_eq!(
        (again.status(), header(&again, "location")),
        (StatusCode::CREATED, header(&fin, "location")),
        "the same final, sent again after its answer was lost, finds its landing"
    );
    assert_eq!(
        std::fs::read(dir.path().join("joined.txt")).unwrap(),
        b"first-second-third"
    );
    let final_url = header(&fin, "location").to_owned();
    let head = send(
        &receiver,
        tus("HEAD", &final_url).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(
        (
            header(&head, "upload-offset"),
            header(&head, "upload-length")
        ),
        ("18", "18")
    );
    let part = send(
        &receiver,
        tus("HEAD", &urls[1]).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(part.status(), StatusCode::NOT_FOUND, "parts go once joined");
}

fn pattern(len: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_lands_files_over_tus_and_the_ietf_draft_in_a_stream_or_by_concatenation() {
    use fileuploader_core::protocol::{IetfDraft, Protocol, Tus};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (addr, rt) = serving(dir.path(), "127.0.0.1:0");
    let manager = fileuploader_core::UploadManager::new(
        fileuploader_transport_hyper::HyperTransport::new().unwrap(),
    );
    let data = pattern(300 * 1024 + 7);
    let cases: [(&str, Arc<dyn Protocol>, usize, usize); 6] = [
        ("tus-stream", Arc::new(Tus), 1, data.len()),
        ("tus-concat", Arc::new(Tus), 4, data.len()),
        ("ietf-6", Arc::new(IetfDraft::default()), 2, data.len()),
        ("ietf-5", Arc::new(IetfDraft::new(5)), 1, data.len()),
        ("ietf-3", Arc::new(IetfDraft::new(3)), 1, 1000),
        ("tus-empty", Arc::new(Tus), 4, 0),
    ];
    for (name, protocol, threads, len) in cases {
        let mut job = manager.create_job();
        job.server_url = format!("http://{addr}/files");
        job.block_size = 16 * 1024;
        job.thread_num = threads;
        job.protocol = Some(protocol);
        job.require_confirmation = true;
        job.source_value.add(
            manager.generate_url_for_upload_data(data[..len].to_vec()),
            name,
            None,
        );
        manager.run(&job).unwrap().wait().await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            &data[..len],
            "{name}"
        );
        assert_eq!(job.progress().landings_confirmed, 1, "{name}");
    }
    rt.shutdown_background();
    let partial = fileuploader_server::partial_dir(dir.path());
    assert_eq!(
        std::fs::read_dir(partial).unwrap().count(),
        0,
        "no part left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tus_upload_rides_through_a_receiver_restart_in_a_stream_and_by_concatenation() {
    for threads in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let (addr, first) = serving(dir.path(), "127.0.0.1:0");
        let manager = fileuploader_core::UploadManager::new(
            fileuploader_transport_hyper::HyperTransport::new().unwrap(),
        );
        let data = pattern(2000 * 1024);
        let mut job = manager.create_job();
        job.server_url = format!("http://{addr}/files");
        // 500 blocks: few enough parts to concatenate with 4 threads.
        job.block_size = 4096;
        job.thread_num = threads;
        job.protocol = Some(std::sync::Arc::new(fileuploader_core::protocol::Tus));
        job.retry.max_attempts = 30;
        job.retry.initial_backoff = std::time::Duration::from_millis(50);
        job.retry.max_backoff = std::time::Duration::from_millis(200);
        job.source_value.add(
            manager.generate_url_for_upload_data(data.clone()),
            "restart.bin",
            None,
        );
        let handle = manager.run(&job).unwrap();
        while job.progress().blocks_acknowledged < 100 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        first.shutdown_background();
        assert!(job.progress().blocks_acknowledged < 500, "mid-upload");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (_, second) = serving(dir.path(), &addr.to_string());
        let outcome = handle.wait().await;
        second.shutdown_background();
        outcome.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("restart.bin")).unwrap(),
            data,
            "{threads} threads"
        );
    }
}

#[tokio::test]
async fn a_signed_creation_url_covers_the_upload_it_creates_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap().access(
        fileuploader_server::Access::open()
            .signing_key(b"k".to_vec())
            .unwrap(),
    );
    let signed = fileuploader_server::sign_url(
        b"k",
        "http://receiver/files",
        4_000_000_000,
        Some(&fileuploader_server::NameRule::Exactly("s.txt".into())),
        None,
        None,
    )
    .unwrap();
    let creation = &signed["http://receiver".len()..];
    let created = tus("POST", creation)
        .header("upload-length", "3")
        .header("upload-metadata", format!("filename {}", base64(b"s.txt")))
        .body(Full::default())
        .unwrap();
    let created = send(&receiver, created).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let url = header(&created, "location").to_owned();
    assert!(
        url.contains("fu_sig="),
        "the upload URL keeps the signature: {url}"
    );
    let bare = url.split('?').next().unwrap().to_owned();
    assert_eq!(
        send(&receiver, patch(&bare, 0, b"abc")).await.status(),
        StatusCode::UNAUTHORIZED,
        "without the signature"
    );
    let other = url.replace("/files/", "/elsewhere/");
    assert_eq!(
        send(&receiver, patch(&other, 0, b"abc")).await.status(),
        StatusCode::UNAUTHORIZED,
        "under another path"
    );
    assert_eq!(
        send(&receiver, patch(&url, 0, b"abc")).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(std::fs::read(dir.path().join("s.txt")).unwrap(), b"abc");
    let renamed = tus("POST", creation)
        .header("upload-length", "3")
        .header(
            "upload-metadata",
            format!("filename {}", base64(b"other.txt")),
        )
        .body(Full::default())
        .unwrap();
    assert_eq!(
        send(&receiver, renamed).await.status(),
        StatusCode::FORBIDDEN
    );
}

/// A file holding `data`.
fn temp_file(data: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, data).unwrap();
    file
}

/// A tus job of 4 KiB blocks sending `file` as `name` to the receiver at
/// `addr`, resumable with its journal in `journals`.
fn resumable_tus_job(
    manager: &fileuploader_core::UploadManager,
    addr: std::net::SocketAddr,
    file: &tempfile::NamedTempFile,
    name: &str,
    journals: &tempfile::TempDir,
    threads: usize,
) -> fileuploader_core::Job {
    let mut job = manager.create_job();
    job.server_url = format!("http://{addr}/files");
    job.block_size = 4096;
    job.thread_num = threads;
    job.protocol = Some(std::sync::Arc::new(fileuploader_core::protocol::Tus));
    job.resume = fileuploader_core::Resume::In(journals.path().to_owned());
    job.source_value.add(file.path(), name, None);
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_tus_upload_the_server_no_longer_knows_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, rt) = serving(dir.path(), "127.0.0.1:0");
    let manager = fileuploader_core::UploadManager::new(
        fileuploader_transport_hyper::HyperTransport::new().unwrap(),
    );
    let journals = tempfile::tempdir().unwrap();
    let data = pattern(512 * 1024);
    let file = temp_file(&data);
    let job = || resumable_tus_job(&manager, addr, &file, "expired.bin", &journals, 1);
    let first = job();
    let handle = manager.run(&first).unwrap();
    while first.progress().blocks_acknowledged < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    handle.cancel();
    let _ = handle.wait().await;
    // The receiver forgets the upload, as expiry would.
    let journal = std::fs::read_dir(journals.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(journal.path()).unwrap();
    // The first block created the upload: its receipt is the URL.
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("ack 0 "))
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned();
    assert!(
        url.contains("/files/"),
        "the journal keeps the upload URL: {text}"
    );
    let path = &url[url.find("/files/").unwrap()..];
    let receiver = Receiver::new(dir.path()).unwrap();
    let ended = send(
        &receiver,
        tus("DELETE", path).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);

    let second = job();
    manager.run(&second).unwrap().wait().await.unwrap();
    assert_eq!(
        second.progress().resumed_blocks,
        0,
        "nothing counts as held"
    );
    assert_eq!(std::fs::read(dir.path().join("expired.bin")).unwrap(), data);
    rt.shutdown_background();
}

/// A server that answers an IETF creation with a 104 interim response
/// before its 201, and a `HEAD` with the upload complete.
fn interim_answering_server() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut head = Vec::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push(line.to_ascii_lowercase());
                    }
                    let len: usize = head
                        .iter()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).unwrap();
                    let answer = if head[0].starts_with("post") {
                        "HTTP/1.1 104 Upload Resumption Supported\r\nlocation: /up/x\r\nupload-draft-interop-version: 6\r\n\r\n\
                         HTTP/1.1 201 Created\r\nlocation: /up/x\r\nupload-offset: 5\r\nupload-complete: ?1\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        "HTTP/1.1 204 No Content\r\nupload-offset: 5\r\nupload-length: 5\r\nupload-complete: ?1\r\n\r\n"
                    };
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_interim_104_answer_to_an_ietf_creation_is_passed_over() {
    let addr = interim_answering_server();
    let manager = fileuploader_core::UploadManager::new(
        fileuploader_transport_hyper::HyperTransport::new().unwrap(),
    );
    let mut job = manager.create_job();
    job.server_url = format!("http://{addr}/up");
    job.protocol = Some(std::sync::Arc::new(
        fileuploader_core::protocol::IetfDraft::default(),
    ));
    job.require_confirmation = true;
    job.source_value.add(
        manager.generate_url_for_upload_data(b"hello".to_vec()),
        "i.txt",
        None,
    );
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(job.progress().landings_confirmed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_concatenation_whose_final_landed_unheard_confirms_the_landing() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, rt) = serving(dir.path(), "127.0.0.1:0");
    // The first final concatenation never leaves: 403.
    let is_final = |(_, headers): &Sent| {
        headers
            .get("upload-concat")
            .is_some_and(|v| v.as_bytes().starts_with(b"final"))
    };
    let transport = Meddling::new(
        move |this, before| {
            (is_final(this) && !before.iter().any(is_final)).then(|| {
                Ok(http::Response::builder()
                    .status(StatusCode::FORBIDDEN)
                    .body(Bytes::new())
                    .unwrap())
            })
        },
        |_, _, answer| Ok(answer),
    );
    let sent = std::sync::Arc::clone(&transport.sent);
    let manager = fileuploader_core::UploadManager::new(transport);
    let journals = tempfile::tempdir().unwrap();
    let data = pattern(64 * 1024 + 3);
    let file = temp_file(&data);
    let job = || resumable_tus_job(&manager, addr, &file, "joined.bin", &journals, 4);
    let first = job();
    assert!(manager.run(&first).unwrap().wait().await.is_err());
    // The final request reaches the receiver and lands the file, which
    // discards the parts; its answer never reaches the client (killed
    // before it heard, its journal listing every part).
    let headers = sent
        .lock()
        .unwrap()
        .iter()
        .find(|s| is_final(s))
        .map(|(_, h)| h.clone())
        .unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    let landed = tus("POST", "/files")
        .header("upload-concat", &headers["upload-concat"])
        .header("upload-metadata", &headers["upload-metadata"])
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&receiver, landed).await.status(), StatusCode::CREATED);

    let second = job();
    manager.run(&second).unwrap().wait().await.unwrap();
    assert_eq!(second.progress().landings_confirmed, 1);
    assert_eq!(second.progress().bytes_sent, 0, "nothing sent again");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(names, ["joined.bin"]);
    assert_eq!(std::fs::read(dir.path().join("joined.bin")).unwrap(), data);
    rt.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_of_an_unknown_upload_answers_404_without_a_body_over_http2() {
    use fileuploader_core::Transport as _;
    let dir = tempfile::tempdir().unwrap();
    let (addr, rt) = serving(dir.path(), "127.0.0.1:0");
    let transport = fileuploader_transport_hyper::HyperTransport::builder()
        .http2(true)
        .build()
        .unwrap();
    for url in [
        format!("http://{addr}/files/0123456789abcdef0123456789abcdef"),
        format!("http://{addr}/files/not-an-id"),
    ] {
        let head = http::Request::head(&url)
            .header("tus-resumable", "1.0.0")
            .body(fileuploader_core::UploadBody::new())
            .unwrap();
        let answer = transport.send(head).await.unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{url}");
        assert!(answer.body().is_empty(), "{url}");
    }
    rt.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_whose_first_question_is_lost_still_resumes_the_journaled_upload() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, rt) = serving(dir.path(), "127.0.0.1:0");
    let journals = tempfile::tempdir().unwrap();
    let data = pattern(256 * 1024);
    let file = temp_file(&data);
    let plain = fileuploader_core::UploadManager::new(
        fileuploader_transport_hyper::HyperTransport::new().unwrap(),
    );
    let first = resumable_tus_job(&plain, addr, &file, "lost.bin", &journals, 1);
    let handle = plain.run(&first).unwrap();
    while first.progress().blocks_acknowledged < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    handle.cancel();
    let _ = handle.wait().await;
    let held = first.progress().blocks_acknowledged;

    // The resume's HEAD meets a connection lost: asked again, it must
    // still look for the journaled upload, not start a new one.
    let lossy = fileuploader_core::UploadManager::new(Meddling::new(
        |(method, _), before| {
            (*method == http::Method::HEAD && !any(before, &http::Method::HEAD)).then(reset)
        },
        |_, _, answer| Ok(answer),
    ));
    let second = resumable_tus_job(&lossy, addr, &file, "lost.bin", &journals, 1);
    lossy.run(&second).unwrap().wait().await.unwrap();
    assert!(
        second.progress().resumed_blocks >= held,
        "{:?}",
        second.progress()
    );
    assert!(second.progress().bytes_sent <= (64 - held) * 4096);
    assert_eq!(std::fs::read(dir.path().join("lost.bin")).unwrap(), data);
    rt.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_draft_upload_its_server_counts_unfinished_is_completed_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, rt) = serving(dir.path(), "127.0.0.1:0");
    let data = pattern(40 * 1024);
    // Every HEAD answer at the full length says the upload is not
    // complete, as a draft server does when the append that completes it
    // never arrived.
    let whole = data.len().to_string();
    let transport = Meddling::new(
        |_, _| None,
        move |(method, _), _, mut answer| {
            let at_end = answer
                .headers()
                .get("upload-offset")
                .is_some_and(|v| v.as_bytes() == whole.as_bytes());
            if *method == http::Method::HEAD && at_end {
                answer
                    .headers_mut()
                    .insert("upload-complete", http::HeaderValue::from_static("?0"));
            }
            Ok(answer)
        },
    );
    let sent = std::sync::Arc::clone(&transport.sent);
    let manager = fileuploader_core::UploadManager::new(transport);
    let mut job = manager.create_job();
    job.server_url = format!("http://{addr}/files");
    job.block_size = 16 * 1024;
    job.protocol = Some(std::sync::Arc::new(
        fileuploader_core::protocol::IetfDraft::default(),
    ));
    job.source_value.add(
        manager.generate_url_for_upload_data(data.clone()),
        "draft.bin",
        None,
    );
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(job.progress().landings_confirmed, 1);
    let sent = sent.lock().unwrap();
    let (method, headers) = sent.last().unwrap();
    assert_eq!(method, http::Method::PATCH, "the last request completes it");
    assert_eq!(headers["upload-complete"], "?1");
    assert_eq!(headers["upload-offset"], data.len().to_string().as_str());
    assert_eq!(headers["content-length"], "0");
    assert_eq!(std::fs::read(dir.path().join("draft.bin")).unwrap(), data);
    rt.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_file_creation_whose_answer_is_lost_finds_its_landing_when_sent_again() {
    use fileuploader_core::protocol::{IetfDraft, Protocol, Tus};
    let dir = tempfile::tempdir().unwrap();
    let (addr, rt) = serving(dir.path(), "127.0.0.1:0");
    let data = pattern(20_000);
    let cases: [(&str, std::sync::Arc<dyn Protocol>); 2] = [
        ("tus.bin", std::sync::Arc::new(Tus)),
        ("ietf.bin", std::sync::Arc::new(IetfDraft::default())),
    ];
    for (name, protocol) in cases {
        // The first creation reaches the receiver; its answer is lost.
        let lossy = Meddling::new(
            |_, _| None,
            |(method, _), before, answer| {
                if *method == http::Method::POST && !any(before, &http::Method::POST) {
                    return reset();
                }
                Ok(answer)
            },
        );
        let manager = fileuploader_core::UploadManager::new(lossy);
        let mut job = manager.create_job();
        job.server_url = format!("http://{addr}/files");
        job.block_size = 64 * 1024;
        job.protocol = Some(protocol);
        job.source_value.add(
            manager.generate_url_for_upload_data(data.clone()),
            name,
            None,
        );
        // The creation carried every byte and landed the file; sent again
        // with the same key, it finds that landing instead of a name taken.
        manager.run(&job).unwrap().wait().await.unwrap();
        assert_eq!(job.progress().landings_confirmed, 1, "{name}");
        assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), data);
    }
    let names = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(names, 2, "no second copy under another name");
    rt.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idempotency_key_of_a_lost_creation_outlives_the_run_in_its_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, rt) = serving(dir.path(), "127.0.0.1:0");
    let journals = tempfile::tempdir().unwrap();
    let data = pattern(3000);
    let file = temp_file(&data);
    // Every creation reaches the receiver; every answer to one is lost.
    let lossy = fileuploader_core::UploadManager::new(Meddling::new(
        |_, _| None,
        |(method, _), _, answer| {
            if *method == http::Method::POST {
                return reset();
            }
            Ok(answer)
        },
    ));
    let mut first = resumable_tus_job(&lossy, addr, &file, "kept.bin", &journals, 1);
    first.retry = fileuploader_core::RetryPolicy::none();
    assert!(lossy.run(&first).unwrap().wait().await.is_err());
    assert_eq!(std::fs::read(dir.path().join("kept.bin")).unwrap(), data);

    let plain = fileuploader_core::UploadManager::new(
        fileuploader_transport_hyper::HyperTransport::new().unwrap(),
    );
    let second = resumable_tus_job(&plain, addr, &file, "kept.bin", &journals, 1);
    plain.run(&second).unwrap().wait().await.unwrap();
    assert_eq!(second.progress().landings_confirmed, 1);
    assert!(!dir.path().join("kept (1).bin").exists());
    rt.shutdown_background();
}

/// Our client as URLSession uploads: the whole file in one creation, the
/// link lost (a proxy stops passing it on, and closes) after 40 % of it
/// went up and the receiver's `104` came down. The 104 told the client
/// where the upload is, so it reads the offset there and appends the
/// rest: what went over the link stays within 1.1 times the file, where
/// sending it all again would cost 1.4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_resumes_a_creation_cut_mid_body_from_its_104() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (addr, rt) = serving(dir.path(), "127.0.0.1:0");
    let data = pattern(4 << 20);
    let file = temp_file(&data);
    let cut_at = data.len() * 4 / 10;
    let up = std::sync::Arc::new(AtomicUsize::new(0));
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let counted = up.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = proxy.accept().await {
            let server = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let cut = std::mem::take(&mut first);
            let counted = counted.clone();
            // Whether an answer (the 104) came down yet, and the order to
            // close the client's side.
            let (answered, mut heard) = tokio::sync::watch::channel(false);
            let (close, mut closing) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    tokio::select! {
                        read = server_read.read(&mut buf) => match read {
                            Ok(n @ 1..) => {
                                if client_write.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                                let _ = answered.send(true);
                            }
                            _ => break,
                        },
                        _ = closing.changed() => {
                            // The receiver's final answer to the body it saw
                            // end is lost with the link: once it is given
                            // (all that arrived is kept by then), the
                            // client's side closes.
                            let mut lost = Vec::new();
                            let given = async {
                                while !lost.windows(4).any(|w| w == b"\r\n\r\n") {
                                    match server_read.read(&mut buf).await {
                                        Ok(n @ 1..) => lost.extend_from_slice(&buf[..n]),
                                        _ => break,
                                    }
                                }
                            };
                            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), given).await;
                            break;
                        }
                    }
                }
                // A FIN: what came down before it is the client's to read.
                let _ = client_write.shutdown().await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                let mut passed = 0;
                let mut linked = true;
                while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                    if !linked {
                        // Lost on the way: the receiver never sees it.
                        continue;
                    }
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    passed += n;
                    counted.fetch_add(n, Ordering::SeqCst);
                    if cut && passed >= cut_at {
                        // Nothing more passes until the receiver's 104 has
                        // come down (a link lost well into a long body).
                        let came = async {
                            while !*heard.borrow_and_update() {
                                if heard.changed().await.is_err() {
                                    break;
                                }
                            }
                        };
                        let _ =
                            tokio::time::timeout(std::time::Duration::from_secs(10), came).await;
                        // The link is lost: the receiver sees the body end
                        // there, the client its connection close.
                        let _ = server_write.shutdown().await;
                        let _ = close.send(true);
                        linked = false;
                    }
                }
            });
        }
    });
    let manager = fileuploader_core::UploadManager::new(
        fileuploader_transport_hyper::HyperTransport::new().unwrap(),
    );
    let mut job = manager.create_job();
    job.server_url = format!("http://{proxy_addr}/files");
    job.block_size = 8 << 20;
    job.protocol = Some(std::sync::Arc::new(
        fileuploader_core::protocol::IetfDraft::default(),
    ));
    job.source_value.add(file.path(), "phone.mov", None);
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("phone.mov")).unwrap(), data);
    let sent = up.load(Ordering::SeqCst) as f64;
    assert!(
        sent <= 1.1 * data.len() as f64,
        "{sent} bytes went over the link for a file of {}",
        data.len()
    );
    rt.shutdown_background();
}

/// A receiver that bounds what one request of the draft carries says so in
/// `Upload-Limit` and refuses more with 413 (a body of unstated length
/// too, keeping none of it); our client, its blocks far larger, is refused
/// once, then sends each block in pieces within the bound, and the file
/// lands whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_cuts_its_appends_to_the_receivers_max_append_size() {
    use std::sync::{Arc, Mutex};
    const MOST: u64 = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path())
        .unwrap()
        .max_append_size(Some(MOST))
        .expire(std::time::Duration::from_secs(3600));
    let options = Request::options("/files")
        .header("upload-draft-interop-version", "9")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        header(&send(&receiver, options).await, "upload-limit"),
        "max-size=17179869184, max-append-size=65536, max-age=3600"
    );
    let unstated = ietf("POST", "/files", "9")
        .header("upload-complete", "?1")
        .header("upload-length", 100 << 10)
        .header("content-disposition", "inline; filename=\"big.bin\"")
        .body(StreamBody::new(futures_util::stream::iter((0..10).map(
            |_| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![7u8; 10 << 10]))),
        ))))
        .unwrap();
    let refused = receiver.handle(unstated).await;
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(refused.headers()["upload-limit"]
        .to_str()
        .unwrap()
        .contains("max-append-size=65536"));
    assert!(!dir.path().join("big.bin").exists());

    let (addr, rt) = support::serve_on(receiver, "127.0.0.1:0", 1);
    let data = pattern(300 << 10 | 17);
    let file = temp_file(&data);
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let seen = statuses.clone();
    let transport = Meddling::new(
        |_, _| None,
        move |_, _, answer| {
            seen.lock().unwrap().push(answer.status().as_u16());
            Ok(answer)
        },
    );
    let sent = transport.sent.clone();
    let manager = fileuploader_core::UploadManager::new(transport);
    let mut job = manager.create_job();
    job.server_url = format!("http://{addr}/files");
    job.block_size = 1 << 20;
    job.protocol = Some(Arc::new(fileuploader_core::protocol::IetfDraft::default()));
    job.source_value.add(file.path(), "bounded.bin", None);
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("bounded.bin")).unwrap(), data);
    let lengths: Vec<(http::Method, u64)> = sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _)| m == http::Method::POST || m == http::Method::PATCH)
        .map(|(m, h)| {
            (
                m.clone(),
                h["content-length"].to_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lengths[0],
        (http::Method::POST, data.len() as u64),
        "the first try, unbounded"
    );
    assert!(
        lengths[1..].iter().all(|(_, len)| *len <= MOST),
        "{lengths:?}"
    );
    assert_eq!(lengths.len(), 1 + data.len().div_ceil(MOST as usize));
    let statuses = statuses.lock().unwrap().clone();
    assert_eq!(
        statuses.iter().filter(|s| **s == 413).count(),
        1,
        "{statuses:?}"
    );
    rt.shutdown_background();
}

/// Over HTTP/2 too, a creation of the draft is answered `104` with its
/// `Location`, interop version and `Upload-Limit` before its body is read
/// (a `HEADERS` frame on its stream), in the request's version. As
/// URLSession over HTTP/2: the link is lost after 40 % of the body; the
/// offset read at the `104`'s `Location` is what arrived (no more than was
/// sent), the rest goes in one append, and the file lands whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_creation_is_answered_104_and_resumes_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, rt) = serving(dir.path(), "127.0.0.1:0");
    let data = Bytes::from(pattern(1 << 20));
    let cut_at = data.len() * 4 / 10;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let creation = |version: &str, name: &str| {
        Request::post(format!("http://{addr}/files"))
            .header("upload-draft-interop-version", version)
            .header("upload-complete", "?1")
            .header("content-length", data.len())
            .header(
                "content-disposition",
                format!("inline; filename=\"{name}\""),
            )
            .body(())
            .unwrap()
    };
    let mut client = client.ready().await.unwrap();
    let (mut answer, mut body) = client.send_request(creation("9", "h2.mov"), false).unwrap();
    body.send_data(data.slice(..cut_at), false).unwrap();
    let interim = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        std::future::poll_fn(|cx| answer.poll_informational(cx)),
    )
    .await
    .expect("an interim answer before the final one")
    .expect("a 104")
    .unwrap();
    assert_eq!(interim.status().as_u16(), 104);
    let of = |name: &str| interim.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(of("upload-draft-interop-version"), "9");
    assert!(of("upload-limit").contains("max-size="));
    let location = of("location");
    // The link is lost once what was sent has arrived: the offset says.
    let client_http = fileuploader_transport_hyper::HyperTransport::builder()
        .http2(true)
        .build()
        .unwrap();
    let url = format!("http://{addr}{location}");
    // What was sent has time to arrive; then the offset is asked for
    // while the stream is alive (the receiver ends it and tells what it
    // kept, whatever that is).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let head = http::Request::head(&url)
        .header("upload-draft-interop-version", "9")
        .body(fileuploader_core::UploadBody::new())
        .unwrap();
    let head = fileuploader_core::Transport::send(&client_http, head)
        .await
        .unwrap();
    let arrived: usize = head.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(arrived <= cut_at, "{arrived} bytes kept of {cut_at} sent");
    body.send_reset(h2::Reason::CANCEL);
    let mut rest = fileuploader_core::UploadBody::new();
    rest.push_data(data.slice(arrived..));
    let append = http::Request::patch(&url)
        .header("upload-draft-interop-version", "9")
        .header("upload-offset", arrived)
        .header("upload-complete", "?1")
        .header("content-type", "application/partial-upload")
        .header("content-length", data.len() - arrived)
        .body(rest)
        .unwrap();
    let appended = fileuploader_core::Transport::send(&client_http, append)
        .await
        .unwrap();
    assert!(appended.status().is_success(), "{}", appended.status());
    assert_eq!(appended.headers()["upload-complete"], "?1");
    assert_eq!(std::fs::read(dir.path().join("h2.mov")).unwrap(), data);

    // Another interop version: its 104 carries that version.
    let (answer, mut body) = client
        .send_request(creation("8", "old.mov"), false)
        .unwrap();
    body.send_data(data.clone(), true).unwrap();
    let mut answer = answer;
    let first = std::future::poll_fn(|cx| answer.poll_informational(cx))
        .await
        .expect("a 104")
        .unwrap();
    assert_eq!(first.headers()["upload-draft-interop-version"], "8");
    let answer = answer.await.unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    rt.shutdown_background();
}

/// An append with content to a landed upload: interop 6 to 8 answer the
/// 400 problem `completed-upload`; interop 9 (whose draft dropped the
/// type) refuses it by its offset, 409 with the length; each says the
/// upload protocol answered (`Upload-Complete: ?0`).
#[tokio::test]
async fn an_append_to_a_completed_upload_is_refused_in_each_versions_terms() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    for (version, status) in [("7", StatusCode::BAD_REQUEST), ("9", StatusCode::CONFLICT)] {
        let created = ietf("POST", "/files", version)
            .header("upload-complete", "?1")
            .header("upload-length", "3")
            .header(
                "content-disposition",
                format!("inline; filename=\"done-{version}.txt\""),
            )
            .body(Full::new(Bytes::from_static(b"abc")))
            .unwrap();
        let created = send(&receiver, created).await;
        assert!(created.status().is_success(), "{}", created.status());
        let url = header(&created, "location").to_owned();
        let more = ietf("PATCH", &url, version)
            .header("content-type", "application/partial-upload")
            .header("upload-offset", "3")
            .header("upload-complete", "?1")
            .body(Full::new(Bytes::from_static(b"d")))
            .unwrap();
        let more = send(&receiver, more).await;
        assert_eq!(more.status(), status, "interop {version}");
        assert_eq!(header(&more, "upload-complete"), "?0", "interop {version}");
        if version == "7" {
            let problem: serde_json::Value = serde_json::from_slice(more.body()).unwrap();
            assert_eq!(
                problem["type"],
                "https://iana.org/assignments/http-problem-types#completed-upload"
            );
        } else {
            assert_eq!(header(&more, "upload-offset"), "3");
        }
        assert_eq!(
            std::fs::read(dir.path().join(format!("done-{version}.txt"))).unwrap(),
            b"abc"
        );
    }
}
