//! The hyper transport against real servers on 127.0.0.1.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use fileuploader_core::UploadManager;
use fileuploader_transport_hyper::{HyperTransport, Roots};
use http::Version;
use support::{job, ok, send, upload, Action, TestCa, TestServer};

#[tokio::test]
async fn uploads_every_block_and_reuses_connections_across_blocks_and_jobs() {
    let server = TestServer::start(None, ok).await;
    let manager = UploadManager::new(HyperTransport::new().unwrap());
    let first = job(&manager, server.url("http", "127.0.0.1"), 40_000, 1000, 2);
    upload(&manager, &first).await.unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 40);
    assert!(seen
        .iter()
        .all(|s| s.version == Version::HTTP_11 && s.content_range.is_some()));
    let after_first = server.connections.load(Ordering::SeqCst);
    assert!(
        after_first <= 2,
        "{after_first} connections for 40 blocks at 2 in flight"
    );

    let second = job(&manager, server.url("http", "127.0.0.1"), 10_000, 1000, 2);
    upload(&manager, &second).await.unwrap();
    assert_eq!(server.seen().len(), 50);
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        after_first,
        "the pool served the second job"
    );
    assert_eq!(second.http_version(), "1.1");
}

#[tokio::test]
async fn tls_with_a_trusted_ca_works_and_http2_is_negotiated_by_alpn() {
    let ca = TestCa::new();
    let server = TestServer::start(Some(ca.server_config(&["localhost"])), ok).await;
    for (http2, version, label) in [
        (false, Version::HTTP_11, "1.1"),
        (true, Version::HTTP_2, "2"),
    ] {
        let transport = HyperTransport::builder()
            .roots(Roots::None)
            .add_root_pem(ca.pem_file.path())
            .http2(http2)
            .build()
            .unwrap();
        let manager = UploadManager::new(transport);
        let job = job(&manager, server.url("https", "localhost"), 5000, 1000, 3);
        upload(&manager, &job).await.unwrap();
        assert_eq!(job.http_version(), label);
        let seen = server.seen();
        assert!(seen
            .iter()
            .rev()
            .take(5)
            .all(|s| s.version == version && s.body_len > 1000));
    }
}

#[tokio::test]
async fn cleartext_http2_by_prior_knowledge() {
    let server = TestServer::start(None, ok).await;
    let manager = UploadManager::new(HyperTransport::builder().http2(true).build().unwrap());
    let job = job(&manager, server.url("http", "127.0.0.1"), 3000, 1000, 3);
    upload(&manager, &job).await.unwrap();
    assert!(server.seen().iter().all(|s| s.version == Version::HTTP_2));
    assert_eq!(job.http_version(), "2");
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "one multiplexed connection"
    );
}

#[tokio::test]
async fn http2_blocks_spread_over_the_connections_asked_for() {
    let server = TestServer::start(None, ok).await;
    let manager = UploadManager::new(
        HyperTransport::builder()
            .http2(true)
            .http2_connections(2)
            .build()
            .unwrap(),
    );
    let job = job(&manager, server.url("http", "127.0.0.1"), 6000, 1000, 3);
    upload(&manager, &job).await.unwrap();
    assert!(server.seen().iter().all(|s| s.version == Version::HTTP_2));
    assert_eq!(server.seen().len(), 6);
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        2,
        "two multiplexed connections"
    );
}

#[tokio::test]
async fn untrusted_certificate_and_wrong_host_are_refused_with_code_35() {
    let ca = TestCa::new();
    let server = TestServer::start(Some(ca.server_config(&["localhost"])), ok).await;
    let untrusted = UploadManager::new(HyperTransport::new().unwrap());
    let err = upload(
        &untrusted,
        &job(&untrusted, server.url("https", "localhost"), 10, 100, 1),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), 35, "{err}");
    assert!(err.message().contains("localhost"), "{err}");

    let trusting = UploadManager::new(
        HyperTransport::builder()
            .roots(Roots::None)
            .add_root_pem(ca.pem_file.path())
            .build()
            .unwrap(),
    );
    let err = upload(
        &trusting,
        &job(&trusting, server.url("https", "127.0.0.1"), 10, 100, 1),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), 35, "{err}");
    assert!(
        err.message().to_lowercase().contains("certificate"),
        "{err}"
    );
    assert!(
        server.seen().is_empty(),
        "nothing was sent over an untrusted connection"
    );
}

/// An error's text and its causes', in order.
fn causes(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(e) = cause {
        out.push(e.to_string());
        cause = e.source();
    }
    out
}

#[tokio::test]
async fn refused_connection_and_unknown_host_have_their_codes() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let manager = UploadManager::new(HyperTransport::new().unwrap());
    let err = upload(
        &manager,
        &job(&manager, format!("http://127.0.0.1:{port}/u"), 10, 100, 1),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), 4, "{err}");
    assert!(
        err.message().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.message().contains("refused"), "{err}");
    assert!(
        !err.message().contains("gave up"),
        "no retry count without retries: {err}"
    );
    let chain = causes(&err);
    for (i, text) in chain.iter().enumerate() {
        assert!(
            !chain[..i]
                .iter()
                .any(|earlier| earlier.contains(text.as_str())),
            "{text:?} repeats in {chain:?}"
        );
    }
    let cause = std::error::Error::source(&err).expect("the transport's cause is kept");
    assert!(
        cause
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some(),
        "the cause is hyper's own error, not a string: {cause:?}"
    );

    let err = upload(
        &manager,
        &job(&manager, "http://no-such-host.invalid/u".into(), 10, 100, 1),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), 3, "{err}");
    assert!(err.message().contains("no-such-host.invalid"), "{err}");
}

#[tokio::test]
async fn stall_and_request_timeouts_fire_with_code_11_and_say_which() {
    let server = TestServer::start(None, |_| Action::Hang).await;
    let stall = HyperTransport::builder()
        .stall_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let manager = UploadManager::new(stall);
    let err = upload(
        &manager,
        &job(&manager, server.url("http", "127.0.0.1"), 10, 100, 1),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), 11);
    assert!(err.message().starts_with("idle timeout"), "{err}");

    let whole = HyperTransport::builder()
        .stall_timeout(None)
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = send(whole, server.url("http", "127.0.0.1"), 10, 100)
        .await
        .unwrap_err();
    assert_eq!(err.code(), 11);
    assert!(err.message().starts_with("request timeout"), "{err}");
}

#[tokio::test]
async fn a_reply_held_shorter_than_the_stall_timeout_is_not_a_failure() {
    let server = TestServer::start(None, |_| Action::Hold(Duration::from_millis(400))).await;
    let transport = HyperTransport::builder()
        .stall_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    send(transport, server.url("http", "127.0.0.1"), 10, 100)
        .await
        .unwrap();
}

#[tokio::test]
async fn connect_timeout_fires_when_the_peer_never_accepts() {
    // A listener with a one-slot backlog that never accepts: once the queue
    // is full the kernel drops further SYNs, so connecting hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let transport = HyperTransport::builder()
        .connect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = send(transport, format!("http://{addr}/u"), 10, 100)
        .await
        .unwrap_err();
    assert_eq!(err.code(), 11, "{err}");
    assert!(err.message().starts_with("connect timeout"), "{err}");
}

#[tokio::test]
async fn redirects_are_refused_by_default_and_307_and_308_can_be_followed() {
    let server = TestServer::start(None, |s| match s.path.as_str() {
        "/upload" => Action::Status(307, Some("/moved".into())),
        "/permanent" => Action::Status(308, Some("/moved".into())),
        "/found" => Action::Status(302, Some("/moved".into())),
        _ => Action::Status(200, None),
    })
    .await;
    let at = |path: &str| server.url("http", "127.0.0.1").replace("/upload", path);
    for path in ["/upload", "/permanent", "/found"] {
        let err = send(HyperTransport::new().unwrap(), at(path), 10, 100)
            .await
            .unwrap_err();
        assert_eq!(err.code(), 26, "{path}: {err}");
        assert!(err.message().contains("redirect to /moved"), "{err}");
    }
    assert!(server.seen().iter().all(|s| s.path != "/moved"));

    let following = || {
        HyperTransport::builder()
            .follow_redirects(true)
            .build()
            .unwrap()
    };
    send(following(), at("/upload"), 250, 100).await.unwrap();
    send(following(), at("/permanent"), 250, 100).await.unwrap();
    let moved: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|s| s.path == "/moved")
        .collect();
    assert_eq!(moved.len(), 6, "every block re-sent to the new place");
    assert!(moved.iter().all(|s| s.body_len > 100));
    // A 302 may turn a POST into a GET, so it is never followed.
    let err = send(following(), at("/found"), 10, 100).await.unwrap_err();
    assert_eq!(err.code(), 26, "{err}");
}

#[tokio::test]
async fn a_redirect_to_another_origin_drops_credentials() {
    let port = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
    let p = port.clone();
    let server = TestServer::start(None, move |s| match s.path.as_str() {
        "/upload" => Action::Status(
            307,
            Some(format!(
                "http://localhost:{}/moved",
                p.load(std::sync::atomic::Ordering::SeqCst)
            )),
        ),
        "/same" => Action::Status(307, Some("/kept".into())),
        _ => Action::Status(200, None),
    })
    .await;
    port.store(server.addr.port(), std::sync::atomic::Ordering::SeqCst);
    let transport = HyperTransport::builder()
        .follow_redirects(true)
        .build()
        .unwrap();
    let secret = ["authorization", "cookie", "proxy-authorization"];
    for path in ["/upload", "/same"] {
        let mut body = fileuploader_core::UploadBody::new();
        body.push(bytes::Bytes::from_static(b"block"));
        let mut request = fileuploader_core::Request::new(body);
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = server
            .url("http", "127.0.0.1")
            .replace("/upload", path)
            .parse()
            .unwrap();
        for name in secret {
            request
                .headers_mut()
                .insert(name, http::HeaderValue::from_static("secret"));
        }
        request
            .headers_mut()
            .insert("x-other", http::HeaderValue::from_static("kept"));
        let response = fileuploader_core::Transport::send(&transport, request)
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let seen = server.seen();
    let at = |path: &str| seen.iter().find(|s| s.path == path).unwrap();
    for name in secret {
        assert_eq!(at("/upload").headers[name], "secret");
        assert!(
            at("/moved").headers.get(name).is_none(),
            "{name} crossed to another origin"
        );
        assert_eq!(
            at("/kept").headers[name],
            "secret",
            "same origin keeps {name}"
        );
    }
    assert_eq!(at("/moved").headers["x-other"], "kept");
}

#[tokio::test]
async fn https_goes_through_an_explicit_proxy_by_connect() {
    let ca = TestCa::new();
    let server = TestServer::start(Some(ca.server_config(&["localhost"])), ok).await;
    let proxy = support::TestProxy::start().await;
    let transport = HyperTransport::builder()
        .roots(Roots::None)
        .add_root_pem(ca.pem_file.path())
        .proxy(format!("http://user:secret@{}", proxy.addr))
        .build()
        .unwrap();
    send(transport, server.url("https", "localhost"), 3000, 1000)
        .await
        .unwrap();
    assert_eq!(server.seen().len(), 3);
    let seen = proxy.seen();
    assert_eq!(
        seen[0].0,
        format!("CONNECT localhost:{} HTTP/1.1", server.addr.port())
    );
    assert_eq!(
        seen[0].1.as_deref(),
        Some("Basic dXNlcjpzZWNyZXQ="),
        "credentials on the CONNECT"
    );
    assert_eq!(seen.len(), 1, "one tunnel, reused");
}

#[tokio::test]
async fn http_goes_through_the_proxy_in_absolute_form() {
    let server = TestServer::start(None, ok).await;
    let proxy = support::TestProxy::start().await;
    let transport = HyperTransport::builder()
        .proxy(proxy.url())
        .build()
        .unwrap();
    send(transport, server.url("http", "127.0.0.1"), 10, 100)
        .await
        .unwrap();
    // The first request on the proxy's connection is the block, in
    // absolute form (a new upload asks nothing first).
    let line = &proxy.seen()[0].0;
    assert_eq!(
        line,
        &format!(
            "POST http://127.0.0.1:{}/upload HTTP/1.1",
            server.addr.port()
        )
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn an_unreachable_proxy_fails_with_code_2() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let transport = HyperTransport::builder()
        .proxy(format!("http://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let err = send(transport, "https://localhost:1/u".into(), 10, 100)
        .await
        .unwrap_err();
    assert_eq!(err.code(), 2, "{err}");
    assert!(
        err.message().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(HyperTransport::builder().proxy("ftp://x").build().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_early_cannot_unbound_the_blocks_in_flight() {
    let server = TestServer::start(None, ok).await;
    let manager = UploadManager::new(HyperTransport::new().unwrap());
    // Blocks larger than the socket buffers, so a body outlives its answer.
    let source = fileuploader_core::testing::CountedSource::new(64 << 20);
    let mut job = manager.create_job();
    job.server_url = format!("http://127.0.0.1:{}/early", server.addr.port());
    job.block_size = 8 << 20;
    job.thread_num = 2;
    job.source_value
        .add_source(std::sync::Arc::new(source.clone()), "e.bin", None);
    upload(&manager, &job).await.unwrap();
    assert_eq!(source.live(), 0);
    assert!(
        source.peak() <= 2 * (8 << 20),
        "{} bytes of blocks alive at once",
        source.peak()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cut_short_mid_body_fails_the_block_with_the_read_error() {
    let server = TestServer::start(None, ok).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.bin");
    // One block far larger than the socket buffers, read while it is sent.
    std::fs::write(&path, vec![5u8; 32 << 20]).unwrap();
    let manager = UploadManager::new(HyperTransport::new().unwrap());
    let mut job = manager.create_job();
    job.server_url = format!("http://127.0.0.1:{}/slow", server.addr.port());
    job.block_size = 32 << 20;
    job.integrity = fileuploader_core::Integrity::None;
    job.source_value
        .add(path.to_str().unwrap(), "cut.bin", None);
    let handle = manager.run(&job).unwrap();
    while server.connections.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .expect("the upload ends instead of hanging")
        .unwrap_err();
    assert_eq!(err.code(), fileuploader_core::code::READ_FAILED, "{err}");
    assert!(
        err.message().contains("now 1048576"),
        "names the new length: {err}"
    );
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let ca = TestCa::new();
    let server = TestServer::start(Some(ca.mutual_tls_config(&["localhost"])), ok).await;
    let (cert, key) = ca.client_identity();
    let trusting = || {
        HyperTransport::builder()
            .roots(Roots::None)
            .add_root_pem(ca.pem_file.path())
    };
    send(
        trusting()
            .identity_pem(cert.path(), key.path())
            .build()
            .unwrap(),
        server.url("https", "localhost"),
        10,
        100,
    )
    .await
    .unwrap();
    assert_eq!(server.seen().len(), 1);

    let without = UploadManager::new(trusting().build().unwrap());
    let err = upload(
        &without,
        &job(&without, server.url("https", "localhost"), 10, 100, 1),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err.code(), 35 | 7),
        "refused without a client certificate: {err}"
    );
    assert_eq!(server.seen().len(), 1, "nothing more arrived");
    assert!(trusting()
        .identity_pem("/no/cert.pem", key.path())
        .build()
        .is_err());
}

#[tokio::test]
async fn the_transport_refuses_urls_it_cannot_use() {
    use fileuploader_core::{Request, Transport, TransportErrorKind, UploadBody};
    let transport = HyperTransport::new().unwrap();
    for url in ["ftp://127.0.0.1/x", "/relative/only"] {
        let mut request = Request::new(UploadBody::new());
        *request.uri_mut() = url.parse().unwrap();
        let err = transport.send(request).await.unwrap_err();
        assert_eq!(
            err.kind(),
            TransportErrorKind::UnsupportedScheme,
            "{url}: {err}"
        );
        assert_eq!(err.kind().code(), -2);
    }
    assert_eq!(TransportErrorKind::InvalidUrl.code(), 1);
}

/// A TCP relay to `upstream` whose first connection goes dead (nothing
/// passes either way, the sockets left open) once its client has sent
/// `after` bytes; later connections pass everything.
async fn first_link_dies(upstream: std::net::SocketAddr, after: usize) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
            let dies = std::mem::replace(&mut first, false);
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let (dead_tx, dead_rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    let mut dead = dead_rx;
                    let mut buf = [0u8; 4096];
                    loop {
                        tokio::select! {
                            n = sr.read(&mut buf) => match n {
                                Ok(n) if n > 0 && !*dead.borrow() => {
                                    if cw.write_all(&buf[..n]).await.is_err() { return; }
                                }
                                Ok(n) if n > 0 => {}
                                _ => return,
                            },
                            _ = dead.changed() => {}
                        }
                        if *dead.borrow() {
                            // Keep the socket, pass nothing.
                            std::future::pending::<()>().await;
                        }
                    }
                });
                let mut moved = 0;
                let mut buf = [0u8; 4096];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let pass = if dies {
                        n.min(after.saturating_sub(moved))
                    } else {
                        n
                    };
                    moved += n;
                    if sw.write_all(&buf[..pass]).await.is_err() {
                        return;
                    }
                    if dies && moved >= after {
                        let _ = dead_tx.send(true);
                        std::future::pending::<()>().await;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_dead_http2_link_is_dropped_and_the_retry_takes_a_new_one() {
    let server = TestServer::start(None, ok).await;
    let upstream: std::net::SocketAddr = server.url("http", "127.0.0.1")["http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let relay = first_link_dies(upstream, 2000).await;
    let manager = UploadManager::new(
        HyperTransport::builder()
            .http2(true)
            .stall_timeout(Duration::from_millis(400))
            .build()
            .unwrap(),
    );
    let mut job = job(&manager, format!("http://{relay}/upload"), 4000, 1000, 1);
    job.retry = fileuploader_core::RetryPolicy::default();
    // One attempt stalls; one may meet the link's closing; one lands.
    job.retry.max_attempts = 4;
    job.retry.initial_backoff = Duration::from_millis(10);
    job.retry.max_backoff = Duration::from_millis(10);
    upload(&manager, &job).await.unwrap();
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    assert_eq!(server.seen().len(), 4, "every block once the link is new");
}

#[tokio::test]
async fn a_server_that_trickles_its_answer_fails_the_low_speed_limit_with_code_11() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = tcp.read(&mut request).await;
                let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n";
                if tcp.write_all(head).await.is_err() {
                    return;
                }
                // A byte every 50 ms: never idle, 20 bytes/s.
                while tcp.write_all(b"x").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
    });
    let transport = HyperTransport::builder()
        .low_speed_limit(1000, Duration::from_secs(1))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let manager = UploadManager::new(transport);
    let mut job = job(&manager, format!("http://{addr}/upload"), 10, 100, 1);
    job.retry = fileuploader_core::RetryPolicy::none();
    let err = upload(&manager, &job).await.unwrap_err();
    assert_eq!(err.code(), 11, "{err}");
    assert!(err.message().starts_with("too slow"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
