//! Hooks over HTTPS: a hook server whose certificate chains to a private
//! CA the receiver was given is asked before creation and told after
//! landing.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fileuploader_core::UploadManager;
use fileuploader_server::{Hook, Receiver};
use fileuploader_transport_hyper::HyperTransport;
use http_body_util::{BodyExt, Full};

/// An HTTPS hook server for `localhost` on 127.0.0.1, with a certificate
/// of its own: its port, the certificate's PEM, and every body it took.
async fn tls_hook_server() -> (u16, String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, kept) = (acceptor.clone(), kept.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let kept = kept.clone();
                        async move {
                            let body = request.into_body().collect().await?.to_bytes();
                            let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            let answer = match event["type"].as_str() {
                                Some("creating") => r#"{"name":"over-tls/landed.bin"}"#,
                                _ => "",
                            };
                            kept.lock().unwrap().push(event);
                            Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from(
                                answer,
                            ))))
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (port, cert.pem(), seen)
}

#[tokio::test]
async fn https_hooks_are_asked_and_told_through_a_private_ca() {
    let (port, ca, seen) = tls_hook_server().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("hook-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let hook = |path: &str| Hook::parse(&format!("https://localhost:{port}/{path}")).unwrap();
    let landing = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(landing.path())
        .unwrap()
        .before_creation(hook("admit"))
        .hook_ca(&ca_file)
        .unwrap()
        .after_landing(hook("landed"))
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { receiver.serve(listener).await });

    let manager = UploadManager::new(HyperTransport::new().unwrap());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), b"over TLS both ways").unwrap();
    let mut job = manager.create_job();
    job.server_url = format!("http://{addr}/upload");
    job.source_value.add(file.path(), "asked.bin", None);
    manager.run(&job).unwrap().wait().await.unwrap();
    assert_eq!(
        job.landings()[0].name.as_deref(),
        Some("over-tls/landed.bin")
    );
    let landed = std::fs::read(landing.path().join("over-tls/landed.bin")).unwrap();
    assert_eq!(landed, b"over TLS both ways");
    let started = std::time::Instant::now();
    loop {
        let types: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("").to_owned())
            .collect();
        if types == ["creating", "landed"] {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{types:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_before_creation_hook_that_says_too_much_or_cannot_be_asked_refuses_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ask = |hook: &str| {
        let receiver = Receiver::new(dir.path())
            .unwrap()
            .before_creation(Hook::parse(hook).unwrap());
        async move {
            let body = "--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\r\nabc\r\n--B--\r\n";
            let request = http::Request::post("/upload")
                .header("content-type", "multipart/form-data; boundary=B")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let answer = receiver.handle(request).await;
            let status = answer.status().as_u16();
            let retry = answer.headers().contains_key("retry-after");
            let text = answer.into_body().collect().await.unwrap().to_bytes();
            (status, retry, String::from_utf8_lossy(&text).into_owned())
        }
    };
    let (status, _, text) = ask("yes | head -c 70000").await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("answer it cannot use"), "{text}");
    let (status, retry, text) = ask("exit 3").await;
    assert_eq!((status, retry), (503, true), "{text}");
    assert!(text.contains("try again later"), "{text}");
    let (status, _, text) = ask(r#"echo '{"refuse":{"status":451,"message":"not here"}}'"#).await;
    assert_eq!((status, text.trim()), (451, "not here"));
    assert!(!dir.path().join("a.txt").exists());
    let (status, _, text) = ask("cat > /dev/null").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"abc");
}
