//! The connector for plain-HTTP endpoints (a store on the local network):
//! hyper over TCP with delayed acknowledgements off.
//!
//! A server that sends a response's head and body in two writes without
//! `TCP_NODELAY` (Garage 2.5 does) holds the body back until the head is
//! acknowledged, and Linux delays that acknowledgement by up to 40 ms: every
//! listing and every small read waited that long. Asking for quick
//! acknowledgements before each read removes the wait.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use fileuploader_wire::sync::lock;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector as TcpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An HTTP client for the AWS SDK on plain-HTTP endpoints. The SDK asks
/// it for a connector on every request: one is made per connect timeout
/// and kept, so that requests share its pool of connections (a connector
/// made per request opened a connection per request).
pub(crate) fn client() -> SharedHttpClient {
    let made = Connectors::default();
    aws_smithy_runtime_api::client::http::http_client_fn(
        move |settings: &HttpConnectorSettings, _| made.within(settings.connect_timeout()),
    )
}

/// The connectors made so far, by connect timeout.
#[derive(Default)]
struct Connectors(Mutex<HashMap<Option<Duration>, SharedHttpConnector>>);

impl Connectors {
    /// The connector that connects within `timeout`, with its pool.
    fn within(&self, timeout: Option<Duration>) -> SharedHttpConnector {
        let made = |timeout| {
            let mut tcp = TcpConnector::new();
            tcp.set_nodelay(true);
            tcp.set_connect_timeout(timeout);
            let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(QuickAckConnector(tcp));
            SharedHttpConnector::new(Plain(client))
        };
        lock(&self.0)
            .entry(timeout)
            .or_insert_with(|| made(timeout))
            .clone()
    }
}

#[derive(Clone, Debug)]
struct Plain(hyper_util::client::legacy::Client<QuickAckConnector, SdkBody>);

impl HttpConnector for Plain {
    fn call(
        &self,
        request: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
    ) -> HttpConnectorFuture {
        let client = self.0.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?;
            let response = client
                .request(request)
                .await
                .map_err(|e| ConnectorError::io(e.into()))?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// Connects as hyper does, handing back streams that ask for quick
/// acknowledgements.
#[derive(Clone, Debug)]
struct QuickAckConnector(TcpConnector);

impl tower_service::Service<http::Uri> for QuickAckConnector {
    type Response = QuickAck;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<QuickAck, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { Ok(QuickAck(connecting.await?)) })
    }
}

/// A TCP stream that turns delayed acknowledgements off before each read
/// (Linux turns them back on by itself).
struct QuickAck(TokioIo<TcpStream>);

fn quick_ack(stream: &TcpStream) {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a pointer to an int of the given size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl Read for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        quick_ack(self.0.inner());
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl Connection for QuickAck {
    fn connected(&self) -> Connected {
        self.0.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
    use std::io::{BufRead, BufReader, Write as _};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A server on 127.0.0.1 answering every request 200 on the
    /// connection it came on; counts the connections it accepted.
    fn counting_server() -> (String, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut stream = stream;
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 {
                        if line == "\r\n" {
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                            if stream.write_all(answer).is_err() {
                                return;
                            }
                        }
                        line.clear();
                    }
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn requests_to_one_store_share_a_connection() {
        let (url, accepted) = counting_server();
        let made = Connectors::default();
        for _ in 0..3 {
            let request = http::Request::get(&url).body(SdkBody::empty()).unwrap();
            let request = HttpRequest::try_from(request).unwrap();
            let response = made.within(None).call(request).await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
