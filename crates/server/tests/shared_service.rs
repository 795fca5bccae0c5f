//! A receiver many strangers share: what one client does (an attacker, or
//! an honest one that is slow or resumes) must not take the service from
//! the others, nor lose anyone's upload. Each test runs a receiver on
//! 127.0.0.1 and speaks to it over raw TCP, as the attacks did.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A receiver serving a directory from its own runtime, stopped when
/// dropped (from a test's async context too).
struct Served {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Served {
    fn new(receiver: fileuploader_server::Receiver) -> Self {
        let (addr, runtime) = support::serve_on(receiver, "127.0.0.1:0", 2);
        Served {
            addr,
            runtime: Some(runtime),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// An answer's status and head, lower-cased header names.
#[derive(Debug)]
struct Head {
    status: u16,
    text: String,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `head` (without its blank line) and `body` on a new connection.
async fn open(addr: SocketAddr, head: &str, body: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tcp.write_all(body).await.unwrap();
    tcp
}

/// Reads an answer's head (and drops its body), within `within`.
async fn answer(tcp: &mut TcpStream, within: Duration) -> Head {
    let read = async {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            got.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Head { status, text }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("an answer in time")
}

/// A whole request: its answer's head.
async fn ask(addr: SocketAddr, head: &str, body: &[u8]) -> Head {
    let mut tcp = open(addr, head, body).await;
    answer(&mut tcp, Duration::from_secs(10)).await
}

/// Creates a tus upload of `len` bytes; its path.
async fn tus_create(addr: SocketAddr, len: u64, name: &str) -> String {
    let meta = format!("filename {}", base64(name.as_bytes()));
    let created = ask(
        addr,
        &format!(
            "POST /files HTTP/1.1\r\nhost: x\r\ntus-resumable: 1.0.0\r\nupload-length: {len}\r\nupload-metadata: {meta}\r\ncontent-length: 0"
        ),
        b"",
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    created.header("location").unwrap().to_owned()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn tus_patch(path: &str, offset: u64, len: u64) -> String {
    format!(
        "PATCH {path} HTTP/1.1\r\nhost: x\r\ntus-resumable: 1.0.0\r\ncontent-type: application/offset+octet-stream\r\nupload-offset: {offset}\r\ncontent-length: {len}"
    )
}

fn tus_head(path: &str) -> String {
    format!("HEAD {path} HTTP/1.1\r\nhost: x\r\ntus-resumable: 1.0.0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumer_ends_the_broken_off_append_and_hears_the_true_offset_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::new(fileuploader_server::Receiver::new(dir.path()).unwrap());
    let addr = served.addr;
    let path = tus_create(addr, 1000, "resumed.bin").await;
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    // A page paused (or reloaded) while its PATCH was on its way: 600 of
    // its 1 000 bytes arrived, and the connection is still open.
    let mut old = open(addr, &tus_patch(&path, 0, 1000), &data[..600]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let head = ask(addr, &tus_head(&path), b"").await;
    assert_eq!(head.status, 200, "{}", head.text);
    assert_eq!(
        head.header("upload-offset"),
        Some("600"),
        "the bytes that arrived are kept and told"
    );
    let rest = ask(addr, &tus_patch(&path, 600, 400), &data[600..]).await;
    assert_eq!(rest.status, 204, "{}", rest.text);
    assert_eq!(std::fs::read(dir.path().join("resumed.bin")).unwrap(), data);
    let ended = answer(&mut old, Duration::from_secs(5)).await;
    assert_eq!(
        ended.status, 409,
        "the old append was ended: {}",
        ended.text
    );
}

/// The head of a segmented block (or, without `range`, a whole file) with
/// a form body of `len` bytes.
fn segmented(id: &str, range: Option<(u64, u64, u64)>, len: usize) -> String {
    let range = range.map_or(String::new(), |(start, end, total)| {
        format!("\r\ncontent-range: bytes {start}-{}/{total}", end - 1)
    });
    format!(
        "POST /upload HTTP/1.1\r\nhost: x\r\nx-upload-id: {id}\r\ncontent-type: multipart/form-data; boundary={}\r\ncontent-length: {len}{range}",
        support::BOUNDARY
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_holding_part_of_a_complete_upload_delays_its_landing_boundedly() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::new(fileuploader_server::Receiver::new(dir.path()).unwrap());
    let addr = served.addr;
    let (a, b) = ([1u8; 100], [2u8; 100]);
    let first = support::form(&[("file", Some("held.bin"), &a)]);
    let id = "held-upload-0001";
    let ok = ask(
        addr,
        &segmented(id, Some((0, 100, 200)), first.len()),
        &first,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    // The same block again, its form trickling a text field after the file
    // part: it holds the block's range of the file for as long as it likes.
    let mut held = support::form(&[("file", Some("held.bin"), &a), ("note", None, b"slow")]);
    let tail = held.split_off(held.len() - 20);
    let len = held.len() + tail.len();
    let mut holder = open(addr, &segmented(id, Some((0, 100, 200)), len), &held).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = support::form(&[("file", Some("held.bin"), &b)]);
    let started = std::time::Instant::now();
    let busy = ask(
        addr,
        &segmented(id, Some((100, 200, 200)), last.len()),
        &last,
    )
    .await;
    assert_eq!(busy.status, 503, "{}", busy.text);
    assert!(busy.header("retry-after").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered in time"
    );
    // The holder goes; the block sent again lands the file.
    holder.write_all(&tail).await.unwrap();
    let _ = answer(&mut holder, Duration::from_secs(5)).await;
    second_block_lands(addr, dir.path(), id, "held.bin", [a, b]).await;
}

/// Sends the second of the two 100-byte blocks of upload `id` (`blocks`),
/// and checks that it lands `name` holding both.
async fn second_block_lands(
    addr: SocketAddr,
    dir: &std::path::Path,
    id: &str,
    name: &str,
    blocks: [[u8; 100]; 2],
) {
    let last = support::form(&[("file", Some(name), &blocks[1])]);
    let landed = ask(
        addr,
        &segmented(id, Some((100, 200, 200)), last.len()),
        &last,
    )
    .await;
    assert_eq!(landed.status, 200, "{}", landed.text);
    let file = std::fs::read(dir.join(name)).unwrap();
    assert_eq!(file, blocks.concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_sent_again_ends_the_request_that_stalled_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::new(fileuploader_server::Receiver::new(dir.path()).unwrap());
    let addr = served.addr;
    let (a, b) = ([3u8; 100], [4u8; 100]);
    let first = support::form(&[("file", Some("retried.bin"), &a)]);
    let id = "retried-upload-01";
    // The first block's request stalls half way (a connection a network
    // dropped without a word): it holds the block's range.
    let head = segmented(id, Some((0, 100, 200)), first.len());
    let mut stalled = open(addr, &head, &first[..first.len() / 2]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The client sends the block again: the newer request takes its place.
    let started = std::time::Instant::now();
    let again = ask(addr, &head, &first).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert!(started.elapsed() < Duration::from_secs(5), "at once");
    let ended = answer(&mut stalled, Duration::from_secs(5)).await;
    assert_eq!(ended.status, 503, "the stalled one ended: {}", ended.text);
    assert!(ended.header("retry-after").is_some(), "{}", ended.text);
    second_block_lands(addr, dir.path(), id, "retried.bin", [a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_honest_uploads_outlive_expiry_and_the_orphan_sweep_while_their_bytes_flow() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = fileuploader_server::Receiver::new(dir.path())
        .unwrap()
        .expire(Duration::from_millis(800));
    let served = Served::new(receiver);
    let addr = served.addr;
    let data: Vec<u8> = (0..40u8).collect();
    // A tus upload whose one PATCH streams for longer than the expiry, and
    // a whole-file form that takes as long.
    let path = tus_create(addr, 40, "slow-tus.bin").await;
    let mut patch = open(addr, &tus_patch(&path, 0, 40), b"").await;
    let mut form = support::form(&[("file", Some("slow-whole.bin"), &data)]);
    let form_tail = form.split_off(form.len() - 40);
    let mut whole = open(
        addr,
        &segmented("slow-whole-0001", None, form.len() + 40),
        &form,
    )
    .await;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        patch.write_all(&data[i * 2..i * 2 + 2]).await.unwrap();
        whole.write_all(&form_tail[i * 2..i * 2 + 2]).await.unwrap();
    }
    let patched = answer(&mut patch, Duration::from_secs(5)).await;
    assert_eq!(patched.status, 204, "{}", patched.text);
    let formed = answer(&mut whole, Duration::from_secs(5)).await;
    assert_eq!(formed.status, 200, "{}", formed.text);
    assert_eq!(
        std::fs::read(dir.path().join("slow-tus.bin")).unwrap(),
        data
    );
    assert_eq!(
        std::fs::read(dir.path().join("slow-whole.bin")).unwrap(),
        data
    );
}

/// A receiver on `dir` with `limits` changed by `set`.
fn limited(dir: &std::path::Path, set: impl FnOnce(&mut fileuploader_server::Limits)) -> Served {
    let mut limits = fileuploader_server::Limits::default();
    set(&mut limits);
    Served::new(
        fileuploader_server::Receiver::new(dir)
            .unwrap()
            .limits(limits),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_minimum_rate_is_cut_off_keeping_what_came() {
    let dir = tempfile::tempdir().unwrap();
    let served = limited(dir.path(), |l| {
        l.min_rate = 100;
        l.rate_window = Duration::from_secs(1);
    });
    let addr = served.addr;
    let path = tus_create(addr, 1000, "trickled.bin").await;
    // A byte every 200 ms: never idle for the idle timeout, yet 5 bytes/s.
    let mut slow = open(addr, &tus_patch(&path, 0, 1000), b"").await;
    let started = std::time::Instant::now();
    let trickle = async {
        for _ in 0..50 {
            if slow.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(3), trickle)
        .await
        .ok();
    let cut = answer(&mut slow, Duration::from_secs(3)).await;
    assert_eq!(cut.status, 408, "{}", cut.text);
    assert!(started.elapsed() < Duration::from_secs(5));
    let head = ask(addr, &tus_head(&path), b"").await;
    let kept: u64 = head.header("upload-offset").unwrap().parse().unwrap();
    assert!((1..=10).contains(&kept), "what came is kept: {kept}");
    // A form trickled the same way is cut off too.
    let form = support::form(&[("file", Some("f.bin"), &[7u8; 1000])]);
    let mut slow = open(
        addr,
        &segmented("trickled-form-01", None, form.len()),
        &form[..50],
    )
    .await;
    for b in &form[50..60] {
        let _ = slow.write_all(&[*b]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cut = answer(&mut slow, Duration::from_secs(3)).await;
    assert_eq!(cut.status, 408, "{}", cut.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_loses_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let served = limited(dir.path(), |l| {
        l.max_connections = 1;
        l.send_timeout = Duration::from_secs(1);
    });
    let addr = served.addr;
    // Status queries pipelined by the thousand, none of the answers read:
    // they fill the socket's buffers both ways.
    let one = "GET /upload?upload_id=nobody-0000001 HTTP/1.1\r\nhost: x\r\n\r\n";
    let many = one.repeat(60_000);
    // A small receive buffer fills after a few answers, not tens of
    // thousands.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut hog = socket.connect(addr).await.unwrap();
    let hogging = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(20), hog.write_all(many.as_bytes())).await;
        hog
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Another client is turned away while the hog holds the one
    // connection, then served once the send timeout has closed it.
    let served_in_time = async {
        loop {
            let status = ask(
                addr,
                "GET /upload?upload_id=other-00000001 HTTP/1.1\r\nhost: x",
                b"",
            )
            .await;
            if status.status == 404 {
                return;
            }
            assert_eq!(status.status, 503, "{}", status.text);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), served_in_time)
        .await
        .expect("the other client is served once the hog's connection is closed");
    drop(hogging);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_credential_cannot_take_every_request_slot_nor_many_streams_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = fileuploader_server::Limits::default();
    limits.max_requests_per_credential = 3;
    let receiver = fileuploader_server::Receiver::new(dir.path())
        .unwrap()
        .limits(limits)
        .access(
            fileuploader_server::Access::open()
                .token("hog")
                .unwrap()
                .token("honest")
                .unwrap(),
        );
    let served = Served::new(receiver);
    let addr = served.addr;
    let form = support::form(&[("file", Some("x.bin"), &[1u8; 100])]);
    let with = |token: &str, id: &str| as_token(&segmented(id, None, form.len()), token);
    // Three whole-file uploads from one token, their bodies held back.
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(
            open(
                addr,
                &with("hog", &format!("hog-upload-{i:05}")),
                &form[..10],
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fourth = ask(addr, &with("hog", "hog-upload-00003"), &form).await;
    assert_eq!(fourth.status, 503, "{}", fourth.text);
    assert!(fourth.header("retry-after").is_some());
    let other = ask(addr, &with("honest", "honest-upload-01"), &form).await;
    assert_eq!(
        other.status, 200,
        "another credential is served: {}",
        other.text
    );
    assert!(dir.path().join("x.bin").exists());
    drop(held);

    // HTTP/2: the receiver says how many streams a connection may open.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (_client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let settled = std::future::poll_fn(|cx| {
        let _ = std::future::Future::poll(std::pin::Pin::new(&mut connection), cx);
        if connection.max_concurrent_send_streams() == 16 {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    });
    tokio::time::timeout(Duration::from_secs(5), settled)
        .await
        .expect("SETTINGS_MAX_CONCURRENT_STREAMS is 16");
}

/// `head` with a bearer token.
fn as_token(head: &str, token: &str) -> String {
    head.replacen(
        "host: x",
        &format!("host: x\r\nauthorization: Bearer {token}"),
        1,
    )
}

fn tus_creation(len: u64, extra: &str) -> String {
    format!(
        "POST /files HTTP/1.1\r\nhost: x\r\ntus-resumable: 1.0.0\r\nupload-length: {len}\r\ncontent-length: 0{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_per_credential_atomically_and_for_whole_files_and_finals() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let receiver = fileuploader_server::Receiver::new(dir.path())
        .unwrap()
        .quota(10 * MIB)
        .quota_per_credential(4 * MIB)
        .access(
            fileuploader_server::Access::open()
                .token("greedy")
                .unwrap()
                .token("honest")
                .unwrap(),
        );
    let served = Served::new(receiver);
    let addr = served.addr;
    // One credential declares all it may and sends nothing: it cannot
    // declare more, and the others are untouched.
    let hoard = ask(addr, &as_token(&tus_creation(4 * MIB, ""), "greedy"), b"").await;
    assert_eq!(hoard.status, 201, "{}", hoard.text);
    let more = ask(addr, &as_token(&tus_creation(1, ""), "greedy"), b"").await;
    assert_eq!(more.status, 507, "{}", more.text);
    // Many creations at once: exactly as many as fit are let in.
    let racing = (0..12).map(|_| async {
        ask(addr, &as_token(&tus_creation(MIB, ""), "honest"), b"")
            .await
            .status
    });
    let statuses = futures_util::future::join_all(racing).await;
    let admitted = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!(admitted, 4, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 507),
        "{statuses:?}"
    );
    // A whole file is charged as its bytes arrive: 5 MiB does not fit the
    // 2 MiB left of the receiver's 10.
    let big = vec![3u8; 5 * MIB as usize];
    let form = support::form(&[("file", Some("whole.bin"), &big)]);
    let head = as_token(&segmented("whole-file-00001", None, form.len()), "greedy");
    let mut whole = open(addr, &head, b"").await;
    let _ = whole.write_all(&form).await;
    let refused = answer(&mut whole, Duration::from_secs(10)).await;
    assert_eq!(refused.status, 507, "{}", refused.text);
    assert!(!dir.path().join("whole.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_names_each_part_once_and_its_length_is_checked_before_copying() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = fileuploader_server::Receiver::new(dir.path())
        .unwrap()
        .max_upload_size(1500);
    let served = Served::new(receiver);
    let addr = served.addr;
    let part = ask(addr, &tus_creation(1000, "\r\nupload-concat: partial"), b"").await;
    assert_eq!(part.status, 201, "{}", part.text);
    let path = part.header("location").unwrap().to_owned();
    let filled = ask(addr, &tus_patch(&path, 0, 1000), &[5u8; 1000]).await;
    assert_eq!(filled.status, 204, "{}", filled.text);
    let final_of = |urls: &str| {
        format!(
            "POST /files HTTP/1.1\r\nhost: x\r\ntus-resumable: 1.0.0\r\nupload-concat: final;{urls}\r\ncontent-length: 0"
        )
    };
    let twice = ask(addr, &final_of(&format!("{path} {path}")), b"").await;
    assert_eq!(twice.status, 400, "{}", twice.text);
    let other = ask(addr, &tus_creation(1000, "\r\nupload-concat: partial"), b"").await;
    let other = other.header("location").unwrap().to_owned();
    let filled = ask(addr, &tus_patch(&other, 0, 1000), &[6u8; 1000]).await;
    assert_eq!(filled.status, 204, "{}", filled.text);
    let partial_dir = dir.path().join(".fileuploader-partial");
    let files = || std::fs::read_dir(&partial_dir).unwrap().count();
    let before = files();
    let too_long = ask(addr, &final_of(&format!("{path} {other}")), b"").await;
    assert_eq!(too_long.status, 413, "{}", too_long.text);
    assert_eq!(files(), before, "nothing was copied");
    let once = ask(addr, &final_of(&path), b"").await;
    assert_eq!(once.status, 201, "{}", once.text);
    let landed = once.header("location").unwrap().rsplit('/').next().unwrap();
    assert_eq!(std::fs::read(dir.path().join(landed)).unwrap(), [5u8; 1000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_long_and_blocked_names_are_refused_as_the_client_can_act_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("taken.bin"), b"first").unwrap();
    std::fs::write(dir.path().join("a-file"), b"not a folder").unwrap();
    let served = Served::new(fileuploader_server::Receiver::new(dir.path()).unwrap());
    let addr = served.addr;
    let named = |name: &str| {
        let meta = format!("\r\nupload-metadata: filename {}", base64(name.as_bytes()));
        tus_creation(10, &meta)
    };
    // Browser tus clients retry 409 and 423: a taken name is 422, at once.
    let taken = ask(addr, &named("taken.bin"), b"").await;
    assert_eq!(taken.status, 422, "{}", taken.text);
    let through = ask(addr, &named("a-file/inside.bin"), b"").await;
    assert_eq!(through.status, 422, "a file in the way: {}", through.text);
    let long = ask(addr, &named(&format!("{}/x.bin", "d".repeat(250))), b"").await;
    assert_eq!(long.status, 400, "{}", long.text);
    let deep = ask(addr, &named(&vec!["f".repeat(200); 6].join("/")), b"").await;
    assert_eq!(deep.status, 400, "{}", deep.text);
    // The segmented door says 409 for the same: its clients do not retry it.
    let form = support::form(&[("file", Some("a-file/inside.bin"), b"data")]);
    let segmented_through = ask(
        addr,
        &segmented("through-file-001", None, form.len()),
        &form,
    )
    .await;
    assert_eq!(segmented_through.status, 409, "{}", segmented_through.text);
    assert_eq!(
        std::fs::read(dir.path().join("a-file")).unwrap(),
        b"not a folder"
    );
}
