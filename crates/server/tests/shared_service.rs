//! A receiver many strangers share: what one client does (an attacker, or
//! an honest one that is slow or resumes) must not take the service from
//! the others, nor lose anyone's upload. Each test runs a receiver on
//! 127.0.0.1 and speaks to it over raw TCP, as the attacks did.

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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            receiver
                .serve(tokio::net::TcpListener::from_std(listener).unwrap())
                .await
        });
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
