//! An example of a custom transport: plain HTTP/1.1 over a tokio socket, one
//! connection per request, written by hand in about a page. It passes the
//! same conformance suite as the hyper transport.

use async_trait::async_trait;
use bytes::Bytes;
use fileuploader_core::{Request, Response, Transport, TransportError, TransportErrorKind as Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use std::time::Duration;

/// The most response bytes kept.
const MAX_RESPONSE: usize = 64 * 1024;

/// HTTP/1.1 without TLS or pooling: `Connection: close` on every request.
/// A request fails with a timeout when no byte moves for the stall timeout.
#[derive(Debug, Clone, Copy)]
pub struct RawHttp1Transport {
    stall: Duration,
}

impl RawHttp1Transport {
    /// A transport whose requests fail once no byte moved for `stall`.
    pub fn with_stall_timeout(stall: Duration) -> Self {
        RawHttp1Transport { stall }
    }

    /// Runs one read or write, failing with a timeout once it stalls.
    async fn timed<T>(
        &self,
        io: impl std::future::Future<Output = std::io::Result<T>>,
        what: &str,
    ) -> Result<T, TransportError> {
        match tokio::time::timeout(self.stall, io).await {
            Ok(done) => done.map_err(io_error(Kind::Reset, what.to_owned())),
            Err(_) => Err(TransportError::new(
                Kind::Timeout,
                format!("stall timeout: {what}: no byte moved for {:?}", self.stall),
            )),
        }
    }
}

fn io_error(kind: Kind, what: String) -> impl FnOnce(std::io::Error) -> TransportError {
    move |e| TransportError::new(kind, format!("{what}: {e}")).with_source(e)
}

#[async_trait]
impl Transport for RawHttp1Transport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        let uri = request.uri().clone();
        if uri.scheme_str() != Some("http") {
            return Err(TransportError::new(
                Kind::UnsupportedScheme,
                format!("{uri}: only http is supported"),
            ));
        }
        let host = uri
            .host()
            .ok_or_else(|| TransportError::new(Kind::InvalidUrl, format!("no host in {uri}")))?;
        let authority = format!("{host}:{}", uri.port_u16().unwrap_or(80));
        let addrs: Vec<_> = tokio::net::lookup_host(&authority)
            .await
            .map_err(io_error(Kind::Dns, format!("cannot resolve host {host}")))?
            .collect();
        let mut stream = TcpStream::connect(&addrs[..])
            .await
            .map_err(io_error(Kind::Connect, format!("connect to {authority}")))?;

        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut head = format!(
            "{} {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n",
            parts.method
        );
        for (name, value) in &parts.headers {
            head.push_str(&format!(
                "{name}: {}\r\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        head.push_str("\r\n");
        let what = format!("connection to {authority}");
        self.timed(stream.write_all(head.as_bytes()), &what).await?;
        let mut body = body;
        while let Some(chunk) = body.next_chunk().await {
            let chunk = chunk.map_err(|e| TransportError::new(Kind::Other, e.to_string()))?;
            self.timed(stream.write_all(&chunk), &what).await?;
        }

        let mut raw = Vec::new();
        let mut piece = [0u8; 16 * 1024];
        while raw.len() < MAX_RESPONSE {
            match self.timed(stream.read(&mut piece), &what).await? {
                0 => break,
                n => raw.extend_from_slice(&piece[..n]),
            }
        }
        // Interim answers (1xx: the draft's 104) come before the final one.
        let mut raw = &raw[..];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut interim = httparse::Response::new(&mut headers);
            match interim.parse(raw) {
                Ok(httparse::Status::Complete(len))
                    if interim.code.is_some_and(|c| c / 100 == 1) =>
                {
                    raw = &raw[len..];
                }
                _ => break,
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = parsed.parse(raw) else {
            return Err(TransportError::new(
                Kind::Reset,
                format!("{authority} closed without a whole response"),
            ));
        };
        let mut response = Response::new(Bytes::copy_from_slice(&raw[head_len..]));
        *response.status_mut() =
            http::StatusCode::from_u16(parsed.code.unwrap_or(0)).map_err(|e| {
                TransportError::new(Kind::Other, format!("bad status from {authority}: {e}"))
            })?;
        for h in parsed.headers.iter() {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(h.name.as_bytes()),
                http::HeaderValue::from_bytes(h.value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        Ok(response)
    }
}
