//! The platform certificate store, pointed at a test bundle through
//! SSL_CERT_FILE. This binary has one test, so setting the variable races
//! no other thread.

mod support;

use fileuploader_transport_hyper::{HyperTransport, Roots};
use support::{ok, send, TestCa, TestServer};

#[tokio::test]
async fn platform_roots_come_from_the_platform_store() {
    let (ca, other) = (TestCa::new(), TestCa::new());
    let server = TestServer::start(Some(ca.server_config(&["localhost"])), ok).await;
    let native_with = |bundle: &std::path::Path| {
        std::env::set_var("SSL_CERT_FILE", bundle);
        let transport = HyperTransport::builder().roots(Roots::Native).build();
        std::env::remove_var("SSL_CERT_FILE");
        transport.unwrap()
    };
    let (trusting, other_store) = (
        native_with(ca.pem_file.path()),
        native_with(other.pem_file.path()),
    );
    let url = server.url("https", "localhost");
    send(trusting, url.clone(), 300, 100).await.unwrap();
    assert_eq!(server.seen().len(), 3);
    let err = send(other_store, url, 10, 100).await.unwrap_err();
    assert_eq!(err.code(), 35, "{err}");
}
