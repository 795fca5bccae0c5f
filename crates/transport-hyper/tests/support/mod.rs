//! A hyper test server on 127.0.0.1 (HTTP/1.1 and HTTP/2, cleartext or TLS
//! with a throwaway CA) that counts connections and records requests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use fileuploader_core::{Job, UploadManager};
use fileuploader_transport_hyper::HyperTransport;

pub fn ok(_: &Seen) -> Action {
    Action::Status(200, None)
}

pub fn job(manager: &UploadManager, url: String, len: usize, block: u64, threads: usize) -> Job {
    let mut job = manager.create_job();
    job.server_url = url;
    job.block_size = block;
    job.thread_num = threads;
    // These tests are about how each failure is reported, not retried.
    job.retry = fileuploader_core::RetryPolicy::none();
    let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
    job.source_value
        .add(manager.generate_url_for_upload_data(data), "f.bin", None);
    job
}

pub async fn upload(manager: &UploadManager, job: &Job) -> Result<(), fileuploader_core::Error> {
    manager.run(job)?.wait().await
}

/// Uploads `len` bytes in `block`-byte blocks, one at a time, through a
/// fresh manager over `transport`.
pub async fn send(
    transport: HyperTransport,
    url: String,
    len: usize,
    block: u64,
) -> Result<(), fileuploader_core::Error> {
    let manager = UploadManager::new(transport);
    upload(&manager, &job(&manager, url, len, block, 1)).await
}

/// What the server does with a request once it has read the body.
#[derive(Debug, Clone)]
pub enum Action {
    Status(u16, Option<String>),
    Hold(Duration),
    Hang,
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub version: Version,
    pub path: String,
    pub headers: http::HeaderMap,
    pub content_range: Option<String>,
    pub body_len: usize,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    pub async fn start(
        tls: Option<Arc<rustls::ServerConfig>>,
        act: impl Fn(&Seen) -> Action + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let act = Arc::new(act);
        let (c, s) = (connections.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (s, act, tls) = (s.clone(), act.clone(), tls.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| handle(req, s.clone(), act.clone()));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                        Some(cfg) => {
                            let Ok(stream) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        TestServer {
            addr,
            connections,
            seen,
        }
    }

    pub fn url(&self, scheme: &str, host: &str) -> String {
        format!("{scheme}://{host}:{}/upload", self.addr.port())
    }

    /// The block requests received (status queries left out).
    pub fn seen(&self) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.method == http::Method::POST)
            .cloned()
            .collect()
    }
}

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    act: Arc<dyn Fn(&Seen) -> Action + Send + Sync>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let method = req.method().clone();
    let version = req.version();
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    if path == "/early" {
        // Answer at once and read the body afterwards, slowly, as a busy
        // server that answers early does.
        let mut body = req.into_body();
        tokio::spawn(async move {
            while let Some(Ok(_)) = body.frame().await {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        return Ok(Response::new(Full::new(Bytes::from_static(b"early"))));
    }
    if path == "/slow" {
        // Read the body a frame at a time, slowly, then answer.
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            frame?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    let content_range = req
        .headers()
        .get("content-range")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = req.into_body().collect().await?.to_bytes();
    let entry = Seen {
        method,
        version,
        path,
        headers,
        content_range,
        body_len: body.len(),
    };
    let action = act(&entry);
    seen.lock().unwrap().push(entry);
    let (status, location) = match action {
        Action::Status(s, l) => (s, l),
        Action::Hold(d) => {
            tokio::time::sleep(d).await;
            (200, None)
        }
        Action::Hang => std::future::pending().await,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    if let Some(l) = location {
        response
            .headers_mut()
            .insert("location", l.parse().unwrap());
    }
    Ok(response)
}

/// A throwaway certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem_file: tempfile::NamedTempFile,
    der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(pem_file.path(), cert.pem()).unwrap();
        TestCa {
            issuer: Issuer::new(params, key),
            pem_file,
            der: cert.der().to_vec(),
        }
    }

    /// A server config with a certificate for `names`, offering h2 and http/1.1.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        self.config(names, false)
    }

    /// The same, demanding a client certificate issued by this CA.
    pub fn mutual_tls_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        self.config(names, true)
    }

    /// A client certificate and key issued by this CA, as PEM files.
    pub fn client_identity(&self) -> (tempfile::NamedTempFile, tempfile::NamedTempFile) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let (cert_file, key_file) = (
            tempfile::NamedTempFile::new().unwrap(),
            tempfile::NamedTempFile::new().unwrap(),
        );
        std::fs::write(cert_file.path(), cert.pem()).unwrap();
        std::fs::write(key_file.path(), key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }

    fn config(&self, names: &[&str], mutual: bool) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if mutual {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from(self.der.clone())).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A forward HTTP proxy on 127.0.0.1: CONNECT opens a tunnel; any other
/// request is piped to the host its absolute-form target names. It records
/// each connection's first request line and `Proxy-Authorization`.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<ProxyRequest>>>,
}

/// A proxied connection's first request line and `Proxy-Authorization`.
pub type ProxyRequest = (String, Option<String>);

impl TestProxy {
    pub async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if client.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let line = text.lines().next().unwrap_or("").to_owned();
                    let auth = text
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("proxy-authorization: ")
                                .or_else(|| l.strip_prefix("Proxy-Authorization: "))
                        })
                        .map(str::to_owned);
                    log.lock().unwrap().push((line.clone(), auth));
                    let target = line.split(' ').nth(1).unwrap_or("").to_owned();
                    if line.starts_with("CONNECT ") {
                        let Ok(mut upstream) =
                            tokio::net::TcpStream::connect(target.as_str()).await
                        else {
                            return;
                        };
                        client
                            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                            .await
                            .unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    } else {
                        let uri: http::Uri = target.parse().unwrap();
                        let Ok(mut upstream) =
                            tokio::net::TcpStream::connect(uri.authority().unwrap().as_str()).await
                        else {
                            return;
                        };
                        upstream.write_all(&head).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        TestProxy { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<ProxyRequest> {
        self.seen.lock().unwrap().clone()
    }
}
