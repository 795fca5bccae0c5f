//! An example of a custom transport: plain HTTP/1.1 over a tokio socket, one
//! connection per request, written by hand in about a page. It passes the
//! same conformance suite as the hyper transport.

use async_trait::async_trait;
use bytes::Bytes;
use fileuploader_core::{Request, Response, Transport, TransportError, TransportErrorKind as Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most response bytes kept.
const MAX_RESPONSE: usize = 64 * 1024;

/// HTTP/1.1 without TLS or pooling: `Connection: close` on every request.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawHttp1Transport;

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
        let reset = || io_error(Kind::Reset, format!("connection to {authority}"));
        stream.write_all(head.as_bytes()).await.map_err(reset())?;
        let mut body = body;
        while let Some(chunk) = body.next_chunk().await {
            let chunk = chunk.map_err(|e| TransportError::new(Kind::Other, e.to_string()))?;
            stream.write_all(&chunk).await.map_err(reset())?;
        }

        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE as u64)
            .read_to_end(&mut raw)
            .await
            .map_err(reset())?;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = parsed.parse(&raw) else {
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
