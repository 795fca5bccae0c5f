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
