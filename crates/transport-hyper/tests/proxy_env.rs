//! The proxy variables, read from the environment. This binary has one
//! test, so setting the variables races no other thread.

mod support;

use fileuploader_core::UploadManager;
use fileuploader_transport_hyper::HyperTransport;
use support::{job, ok, send, upload, TestServer};

#[tokio::test]
async fn proxies_from_the_environment_honour_no_proxy() {
    let server = TestServer::start(None, ok).await;
    let proxy = support::TestProxy::start().await;
    std::env::set_var("HTTP_PROXY", proxy.url());
    std::env::set_var("NO_PROXY", "");
    let via_env = HyperTransport::builder()
        .proxy_from_env(true)
        .build()
        .unwrap();
    std::env::set_var("NO_PROXY", "127.0.0.1");
    let bypassing = HyperTransport::builder()
        .proxy_from_env(true)
        .build()
        .unwrap();
    std::env::remove_var("HTTP_PROXY");
    std::env::remove_var("NO_PROXY");

    let manager = UploadManager::new(via_env);
    upload(
        &manager,
        &job(&manager, server.url("http", "127.0.0.1"), 10, 100, 1),
    )
    .await
    .unwrap();
    assert_eq!(proxy.seen().len(), 1, "HTTP_PROXY was used");
    send(bypassing, server.url("http", "127.0.0.1"), 10, 100)
        .await
        .unwrap();
    assert_eq!(proxy.seen().len(), 1, "NO_PROXY bypassed it");
    assert_eq!(server.seen().len(), 2);
}
