//! One truth for every door: no request, of any protocol, shape or
//! credential, is told a file landed that did not, or touches an upload
//! other credentials began.

mod support;
use support::{form, Meddling, BOUNDARY};

use std::sync::Arc;

use bytes::Bytes;
use fileuploader_core::protocol::{IetfDraft, Protocol, Tus};
use fileuploader_core::{code, UploadManager};
use fileuploader_server::{Access, OnConflict, Receiver};
use fileuploader_transport_hyper::HyperTransport;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

type Answer = http::Response<Bytes>;

/// A request to `receiver`: method, URI, headers, body; its whole answer.
async fn send(
    receiver: &Receiver,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = receiver
        .handle(request.body(Full::new(Bytes::from(body))).unwrap())
        .await;
    let (parts, body) = response.into_parts();
    http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap())
}

fn text(answer: &Answer) -> String {
    String::from_utf8_lossy(answer.body()).into_owned()
}

const MULTIPART: &str = "multipart/form-data; boundary=XyZ";

/// The version headers of the tus dialect, or of the IETF draft at 6.
fn dialect(ietf: bool) -> Vec<(&'static str, &'static str)> {
    if ietf {
        vec![("upload-draft-interop-version", "6")]
    } else {
        vec![("tus-resumable", "1.0.0")]
    }
}

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

/// Creates a tus or IETF upload of `len` bytes named `name`; its URL.
async fn create(receiver: &Receiver, ietf: bool, auth: &[(&str, &str)], len: u64) -> String {
    let mut headers = with(&dialect(ietf), auth);
    let len = len.to_string();
    headers.push(("upload-length", &len));
    headers.push(("upload-metadata", "filename bi50eHQ=")); // n.txt
    if ietf {
        headers.push(("upload-complete", "?0"));
    }
    let created = send(receiver, "POST", "/files", &headers, vec![]).await;
    assert_eq!(created.status(), StatusCode::CREATED, "{}", text(&created));
    header(&created, "location").to_owned()
}

/// Appends `bytes` at `offset` to the upload at `url`.
async fn append(
    receiver: &Receiver,
    ietf: bool,
    auth: &[(&str, &str)],
    url: &str,
    offset: u64,
    bytes: &[u8],
    last: bool,
) -> Answer {
    let offset = offset.to_string();
    let mut headers = with(&dialect(ietf), auth);
    headers.push(("upload-offset", &offset));
    if ietf {
        headers.push(("content-type", "application/partial-upload"));
        headers.push(("upload-complete", if last { "?1" } else { "?0" }));
    } else {
        headers.push(("content-type", "application/offset+octet-stream"));
    }
    send(receiver, "PATCH", url, &headers, bytes.to_vec()).await
}

#[tokio::test]
async fn a_landing_that_fails_is_never_answered_as_complete_and_is_tried_again() {
    for ietf in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver::new(dir.path()).unwrap();
        let url = create(&receiver, ietf, &[], 4).await;
        assert_eq!(
            append(&receiver, ietf, &[], &url, 0, b"ab", false)
                .await
                .status(),
            StatusCode::NO_CONTENT
        );
        // Something takes the name while the upload is under way.
        std::fs::create_dir(dir.path().join("n.txt")).unwrap();
        let last = append(&receiver, ietf, &[], &url, 2, b"cd", true).await;
        assert_eq!(last.status(), StatusCode::UNPROCESSABLE_ENTITY, "{ietf}");
        assert!(text(&last).contains("did not land"), "{}", text(&last));
        assert_eq!(
            header(&last, "upload-offset"),
            "",
            "no offset says complete"
        );
        let head = send(&receiver, "HEAD", &url, &dialect(ietf), vec![]).await;
        assert_eq!(head.status(), StatusCode::UNPROCESSABLE_ENTITY, "{ietf}");
        assert_eq!(header(&head, "upload-offset"), "");

        // The name freed, asking again lands it.
        std::fs::remove_dir(dir.path().join("n.txt")).unwrap();
        let head = send(&receiver, "HEAD", &url, &dialect(ietf), vec![]).await;
        assert!(head.status().is_success(), "{}", head.status());
        assert_eq!(header(&head, "upload-offset"), "4");
        assert_eq!(header(&head, "x-landed-name"), "n.txt");
        assert_eq!(std::fs::read(dir.path().join("n.txt")).unwrap(), b"abcd");
    }
}

/// Serves `receiver` on 127.0.0.1 from the test's runtime; its address.
async fn serve(receiver: Receiver) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { receiver.serve(listener).await });
    addr
}

fn sample(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_sending_one_name_at_once_one_lands_and_the_other_is_told_it_did_not() {
    let protocols: [Arc<dyn Protocol>; 2] = [Arc::new(Tus), Arc::new(IetfDraft::default())];
    for protocol in protocols {
        let dir = tempfile::tempdir().unwrap();
        let addr = serve(Receiver::new(dir.path()).unwrap()).await;
        let manager = UploadManager::new(HyperTransport::new().unwrap());
        let sources: Vec<(tempfile::NamedTempFile, Vec<u8>)> = (0..2)
            .map(|seed| {
                let data = sample(256 * 1024, seed);
                let file = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(file.path(), &data).unwrap();
                (file, data)
            })
            .collect();
        let jobs: Vec<_> = sources
            .iter()
            .map(|(file, _)| {
                let mut job = manager.create_job();
                job.server_url = format!("http://{addr}/files");
                job.block_size = 16 * 1024;
                job.protocol = Some(protocol.clone());
                job.source_value.add(file.path(), "same.bin", None);
                job
            })
            .collect();
        let handles: Vec<_> = jobs.iter().map(|j| manager.run(j).unwrap()).collect();
        let mut outcomes = Vec::new();
        for handle in handles {
            outcomes.push(handle.wait().await);
        }
        let landed: Vec<usize> = (0..2).filter(|&i| outcomes[i].is_ok()).collect();
        assert_eq!(landed.len(), 1, "{protocol:?}: {outcomes:?}");
        assert_eq!(
            std::fs::read(dir.path().join("same.bin")).unwrap(),
            sources[landed[0]].1,
            "{protocol:?}: the file there is the one told it landed"
        );
    }
}

/// A whole file `name` sent by the stranger under upload id `id`.
async fn whole_as_stranger(receiver: &Receiver, id: &str, name: &str) -> Answer {
    let headers = [
        ("content-type", MULTIPART),
        ("authorization", "Bearer stranger"),
        ("x-upload-id", id),
    ];
    let body = form(&[("RemoteFile", Some(name), b"evil")]);
    send(receiver, "POST", "/upload", &headers, body).await
}

/// An upload id is its credentials' own: under the id another client
/// named, a stranger asks about, discards, sends blocks and whole files to
/// nothing but its own uploads, before and after the other's lands, and
/// reaches no upload of another door.
#[tokio::test]
async fn an_upload_answers_only_to_the_credentials_that_began_it_at_every_door() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap().access(
        Access::open()
            .token("victim")
            .unwrap()
            .token("stranger")
            .unwrap(),
    );
    let victim = [("authorization", "Bearer victim")];
    let stranger = [("authorization", "Bearer stranger")];
    let block = |range: &'static str, bytes: &'static [u8], auth: &'static str| {
        move || {
            let headers = vec![
                ("content-type", MULTIPART),
                ("content-range", range),
                ("x-upload-id", "v1"),
                ("authorization", auth),
            ];
            (headers, form(&[("RemoteFile", Some("seg.txt"), bytes)]))
        }
    };
    let first = block("bytes 0-1/4", b"ab", "Bearer victim")();
    assert_eq!(
        send(&receiver, "POST", "/upload", &first.0, first.1)
            .await
            .status(),
        StatusCode::OK
    );
    let tus_url = create(&receiver, false, &victim, 4).await;
    let ietf_url = create(&receiver, true, &victim, 4).await;
    let tus_id = tus_url.rsplit('/').next().unwrap().to_owned();

    // Every door, every kind of request, by the stranger.
    for id in ["v1", tus_id.as_str()] {
        let status = format!("/upload?upload_id={id}");
        let answer = send(&receiver, "GET", &status, &stranger, vec![]).await;
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "status of {id}");
        send(&receiver, "DELETE", &status, &stranger, vec![]).await;
    }
    // A block under the victim's id begins the stranger's own upload.
    let theirs = block("bytes 2-3/4", b"EV", "Bearer stranger")();
    let answer = send(&receiver, "POST", "/upload", &theirs.0, theirs.1).await;
    assert_eq!(answer.status(), StatusCode::OK, "{}", text(&answer));
    assert!(text(&answer).contains("\"received\""), "{}", text(&answer));
    for (ietf, url) in [(false, &tus_url), (true, &ietf_url)] {
        let head = send(
            &receiver,
            "HEAD",
            url,
            &with(&dialect(ietf), &stranger),
            vec![],
        )
        .await;
        assert_eq!(head.status(), StatusCode::NOT_FOUND, "HEAD {url}");
        let patch = append(&receiver, ietf, &stranger, url, 0, b"wxyz", true).await;
        assert_eq!(patch.status(), StatusCode::NOT_FOUND, "PATCH {url}");
        let delete = send(
            &receiver,
            "DELETE",
            url,
            &with(&dialect(ietf), &stranger),
            vec![],
        )
        .await;
        assert_eq!(delete.status(), StatusCode::NOT_FOUND, "DELETE {url}");
    }
    let concat = format!("final;{tus_url}");
    let fin = with(
        &dialect(false),
        &[
            ("authorization", "Bearer stranger"),
            ("upload-concat", &concat),
        ],
    );
    let answer = send(&receiver, "POST", "/files", &fin, vec![]).await;
    assert_eq!(
        answer.status(),
        StatusCode::NOT_FOUND,
        "a final of their part"
    );

    // The owner's uploads are as they were, and land whole.
    let last = block("bytes 2-3/4", b"cd", "Bearer victim")();
    let answer = send(&receiver, "POST", "/upload", &last.0, last.1).await;
    assert_eq!(answer.status(), StatusCode::OK, "{}", text(&answer));
    assert!(text(&answer).contains("\"landed\""), "{}", text(&answer));
    assert_eq!(std::fs::read(dir.path().join("seg.txt")).unwrap(), b"abcd");
    let answer = append(&receiver, false, &victim, &tus_url, 0, b"wxyz", true).await;
    assert_eq!(answer.status(), StatusCode::NO_CONTENT, "{}", text(&answer));
    assert_eq!(std::fs::read(dir.path().join("n.txt")).unwrap(), b"wxyz");

    // Landed, they are still no one else's to read or write over: a whole
    // file under their ids is the stranger's own, and says so.
    for (i, id) in ["v1", tus_id.as_str()].into_iter().enumerate() {
        let status = format!("/upload?upload_id={id}");
        let answer = send(&receiver, "GET", &status, &victim, vec![]).await;
        assert!(text(&answer).contains("\"landed\""), "{}", text(&answer));
        let name = format!("taken-{i}.txt");
        let answer = whole_as_stranger(&receiver, id, &name).await;
        assert_eq!(
            answer.status(),
            StatusCode::OK,
            "whole file under landed {id}"
        );
        assert!(text(&answer).contains(&name), "{}", text(&answer));
        let answer = send(&receiver, "GET", &status, &stranger, vec![]).await;
        let said = text(&answer);
        assert!(said.contains(&name) && !said.contains("seg.txt"), "{said}");
        assert_eq!(std::fs::read(dir.path().join(&name)).unwrap(), b"evil");
    }
    assert_eq!(std::fs::read(dir.path().join("seg.txt")).unwrap(), b"abcd");
    assert_eq!(std::fs::read(dir.path().join("n.txt")).unwrap(), b"wxyz");
    let head = send(
        &receiver,
        "HEAD",
        &tus_url,
        &with(&dialect(false), &stranger),
        vec![],
    )
    .await;
    assert_eq!(
        head.status(),
        StatusCode::NOT_FOUND,
        "HEAD of a landed upload"
    );
}

#[tokio::test]
async fn a_form_with_several_file_parts_is_refused_and_lands_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    let three = form(&[
        ("files[]", Some("a.txt"), b"aaa"),
        ("files[]", Some("b.txt"), b"bbb"),
        ("files[]", Some("c.txt"), b"ccc"),
    ]);
    let answer = send(
        &receiver,
        "POST",
        "/upload",
        &[("content-type", MULTIPART)],
        three,
    )
    .await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert!(
        text(&answer).contains("more than one file part"),
        "{}",
        text(&answer)
    );
    let two_blocks = form(&[
        ("RemoteFile", Some("a.txt"), b"aa"),
        ("RemoteFile", Some("b.txt"), b"bb"),
    ]);
    let headers = [
        ("content-type", MULTIPART),
        ("content-range", "bytes 0-1/4"),
        ("x-upload-id", "m1"),
    ];
    let answer = send(&receiver, "POST", "/upload", &headers, two_blocks).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let listed: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(listed.is_empty(), "{listed:?}");
    let status = send(&receiver, "GET", "/upload?upload_id=m1", &[], vec![]).await;
    assert!(!text(&status).contains("[[0,2]]"), "{}", text(&status));
}

#[tokio::test]
async fn an_offset_past_what_was_sent_is_a_protocol_violation_not_progress() {
    for ietf in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let addr = serve(Receiver::new(dir.path()).unwrap()).await;
        let total = 3 * 1024 * 1024;
        // The server's answer to the first append claims the whole file.
        let liar = Meddling::new(
            |_, _| None,
            move |(method, _), before, mut answer| {
                let first = !before.iter().any(|(m, _)| m == http::Method::PATCH);
                if *method == http::Method::PATCH && first {
                    answer
                        .headers_mut()
                        .insert("upload-offset", http::HeaderValue::from(total));
                }
                Ok(answer)
            },
        );
        let manager = UploadManager::new(liar);
        let data = sample(total as usize, 7);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &data).unwrap();
        let mut job = manager.create_job();
        job.server_url = format!("http://{addr}/files");
        job.block_size = 1024 * 1024;
        job.protocol = Some(if ietf {
            Arc::new(IetfDraft::default()) as Arc<dyn Protocol>
        } else {
            Arc::new(Tus)
        });
        job.source_value.add(file.path(), "lied.bin", None);
        let error = manager.run(&job).unwrap().wait().await.unwrap_err();
        assert_eq!(error.code(), code::PROTOCOL_VIOLATION, "{error}");
        assert!(error.message().contains("cannot be true"), "{error}");
        assert!(job.landings().is_empty());
    }
}

#[tokio::test]
async fn a_concatenation_cut_off_while_joining_lands_when_its_final_comes_again() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    let mut urls = Vec::new();
    for part in [&b"first-"[..], b"second"] {
        let len = part.len().to_string();
        let headers = with(
            &dialect(false),
            &[
                ("upload-length", &len),
                ("upload-concat", "partial"),
                ("content-type", "application/offset+octet-stream"),
            ],
        );
        let created = send(&receiver, "POST", "/files", &headers, part.to_vec()).await;
        assert_eq!(created.status(), StatusCode::CREATED);
        urls.push(header(&created, "location").to_owned());
    }
    // The second part's bytes go missing as the final joins them, as when
    // the receiver stops halfway: the final is begun, not built.
    let second = dir.path().join(format!(
        ".fileuploader-partial/id-{}.part",
        urls[1].rsplit('/').next().unwrap()
    ));
    std::fs::rename(&second, dir.path().join(".fileuploader-partial/aside")).unwrap();
    let concat = format!("final;{} {}", urls[0], urls[1]);
    let fin = with(
        &dialect(false),
        &[
            ("upload-concat", &concat),
            ("upload-metadata", "filename ai50eHQ="),
        ],
    );
    let cut = send(&receiver, "POST", "/files", &fin, vec![]).await;
    assert!(cut.status().is_server_error(), "{}", cut.status());
    std::fs::rename(dir.path().join(".fileuploader-partial/aside"), &second).unwrap();
    let again = send(&receiver, "POST", "/files", &fin, vec![]).await;
    assert_eq!(again.status(), StatusCode::CREATED, "{}", text(&again));
    assert_eq!(header(&again, "x-landed-name"), "j.txt");
    assert_eq!(
        std::fs::read(dir.path().join("j.txt")).unwrap(),
        b"first-second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_land_as_browsers_meant_them_and_the_landed_name_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(dir.path()).unwrap();
    let body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"RemoteFile\"; filename=\"say %22hi%22.txt\"\r\n\r\nhi\r\n--{BOUNDARY}--\r\n"
    );
    let answer = send(
        &receiver,
        "POST",
        "/upload",
        &[("content-type", MULTIPART)],
        body.into_bytes(),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK, "{}", text(&answer));
    assert!(
        text(&answer).contains(r#""name":"say \"hi\".txt""#),
        "{}",
        text(&answer)
    );
    assert_eq!(
        std::fs::read(dir.path().join("say \"hi\".txt")).unwrap(),
        b"hi"
    );

    // Our client, each protocol, a name the receiver renames: each job
    // says where its file went.
    let dir = tempfile::tempdir().unwrap();
    let renaming = Receiver::new(dir.path())
        .unwrap()
        .on_conflict(OnConflict::Rename);
    let addr = serve(renaming).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), b"quoted").unwrap();
    let manager = UploadManager::new(HyperTransport::new().unwrap());
    let protocols: [Option<Arc<dyn Protocol>>; 3] = [
        None,
        Some(Arc::new(Tus)),
        Some(Arc::new(IetfDraft::default())),
    ];
    let mut landed = Vec::new();
    for protocol in protocols {
        let mut job = manager.create_job();
        job.server_url = format!("http://{addr}/files");
        job.protocol = protocol;
        job.source_value.add(file.path(), "say \"hi\".txt", None);
        manager.run(&job).unwrap().wait().await.unwrap();
        let landing = job.landings().pop().unwrap();
        assert_eq!(landing.source, "say \"hi\".txt");
        landed.push(landing.name.unwrap());
    }
    assert_eq!(
        landed,
        ["say \"hi\".txt", "say \"hi\" (1).txt", "say \"hi\" (2).txt"]
    );
    for name in &landed {
        assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), b"quoted");
    }
}

/// A receiver that signs receipts, with the key's public half.
fn signing(dir: &std::path::Path) -> (Receiver, Vec<u8>) {
    use fileuploader_server::receipts::{public_key_from_pem_file, ReceiptKey};
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = ReceiptKey::generate().unwrap();
    std::fs::write(keys.path().join("k"), private).unwrap();
    std::fs::write(keys.path().join("k.pub"), public).unwrap();
    let key = ReceiptKey::from_pem_file(&keys.path().join("k")).unwrap();
    let public = public_key_from_pem_file(&keys.path().join("k.pub")).unwrap();
    let receiver = Receiver::new(dir).unwrap().receipts(key).unwrap();
    (receiver, public)
}

/// The three protocols, and the path each is served at.
fn protocols() -> [(Option<Arc<dyn Protocol>>, &'static str); 3] {
    [
        (None, "upload"),
        (Some(Arc::new(Tus)), "files"),
        (Some(Arc::new(IetfDraft::default())), "files"),
    ]
}

#[tokio::test]
async fn every_protocol_carries_a_receipt_that_verifies_for_the_bytes_sent() {
    use sha2::Digest;
    // An empty file too: tus and the draft land it with its creation.
    for (protocol, path) in protocols() {
        for len in [3 * 1024 * 1024 + 5, 0] {
            let dir = tempfile::tempdir().unwrap();
            let (receiver, public) = signing(dir.path());
            let addr = serve(receiver).await;
            let manager = UploadManager::new(HyperTransport::new().unwrap());
            let data = sample(len, 3);
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &data).unwrap();
            let mut job = manager.create_job();
            job.server_url = format!("http://{addr}/{path}");
            job.block_size = 1024 * 1024;
            job.protocol = protocol.clone();
            job.source_value.add(file.path(), "vouched.bin", None);
            manager.run(&job).unwrap().wait().await.unwrap();
            let landing = &job.landings()[0];
            let receipt = landing.receipt.clone().unwrap_or_else(|| {
                panic!("{protocol:?}, {len} B: no receipt");
            });
            let bytes = (
                data.len() as u64,
                crc32c::crc32c(&data),
                sha2::Sha256::digest(&data).into(),
            );
            let said =
                fileuploader_server::receipts::verify(&receipt, &public, Some(bytes)).unwrap();
            assert_eq!((said.name.as_str(), said.length), ("vouched.bin", bytes.0));
        }
    }
}

#[tokio::test]
async fn a_receipt_for_other_bytes_fails_the_upload_in_every_protocol() {
    use fileuploader_wire::receipt::{Signed, RECEIPT_HEADER};
    for (protocol, path) in protocols() {
        let dir = tempfile::tempdir().unwrap();
        let (receiver, public) = signing(dir.path());
        let addr = serve(receiver).await;
        // The answer's receipt swapped for one that vouches for other bytes.
        let liar = Meddling::new(
            |_, _| None,
            move |_, _, mut answer| {
                if let Some(real) = answer.headers().get(RECEIPT_HEADER) {
                    let mut receipt = Signed::parse(real.to_str().unwrap()).unwrap().receipt;
                    receipt.sha256 = "00".repeat(32);
                    let forged = receipt.sign(&public, |_| vec![0; 64]);
                    answer
                        .headers_mut()
                        .insert(RECEIPT_HEADER, forged.parse().unwrap());
                }
                Ok(answer)
            },
        );
        let manager = UploadManager::new(liar);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), sample(70_000, 9)).unwrap();
        let mut job = manager.create_job();
        job.server_url = format!("http://{addr}/{path}");
        job.block_size = 32 * 1024;
        job.protocol = protocol;
        job.source_value.add(file.path(), "doubted.bin", None);
        let error = manager.run(&job).unwrap().wait().await.unwrap_err();
        assert_eq!(error.code(), code::RECEIPT_MISMATCH, "{error}");
        assert!(error.message().contains("SHA-256"), "{error}");
        assert!(job.landings().is_empty());
    }
}
