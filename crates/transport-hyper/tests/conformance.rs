//! The hyper transport passes the whole conformance suite, over HTTP/1.1
//! and over HTTP/2 by prior knowledge; the protocol scenarios upload to
//! the reference receiver.

use std::sync::Arc;
use std::time::Duration;

use fileuploader_core::Transport;
use fileuploader_mock_server::conformance::{self, ReceiverFactory, TransportFactory};
use fileuploader_transport_hyper::HyperTransport;

fn factory(http2: bool) -> TransportFactory {
    Arc::new(move || {
        // A short stall timeout keeps the stall scenario short.
        let transport = HyperTransport::builder()
            .http2(http2)
            .stall_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        Arc::new(transport) as Arc<dyn Transport>
    })
}

fn receiver() -> Option<ReceiverFactory> {
    Some(conformance::receiver(|dir, listener| async move {
        fileuploader_server::Receiver::new(dir)?
            .serve(listener)
            .await
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_http1_passes_the_suite() {
    conformance::assert_all_passed(&conformance::run_all(factory(false), receiver()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_http2_passes_the_suite() {
    conformance::assert_all_passed(&conformance::run_all(factory(true), receiver()).await);
}
