//! HTTP/2, served with the h2 crate rather than through hyper, whose
//! server gives a handler no way to send interim answers: here each
//! stream's handle goes with its request ([`Interim::Http2`]), so a
//! creation of the draft is answered `104` with its `Location` before its
//! body is read, as over HTTP/1.1. The same windows, frame and header
//! bounds, stream limit, idle close and graceful stop as the HTTP/1.1
//! side; request bodies are read as the handler asks (the window refills
//! only as it reads), answers are sent as the peer's window allows.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use fileuploader_wire::sync::lock;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{header, Method, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::interim::Interim;
use crate::serve::{Activity, H2_MAX_FRAME, H2_STREAM_WINDOW};
use crate::Receiver;

/// Serves one HTTP/2 connection until it ends, the receiver stops, or no
/// request has been in flight for the header timeout (then gracefully).
pub(crate) async fn serve<I>(
    receiver: Receiver,
    io: I,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = receiver.limits;
    let handshake = h2::server::Builder::new()
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_streams)
        .initial_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_STREAM_WINDOW * 4)
        .max_frame_size(H2_MAX_FRAME)
        .handshake::<_, Bytes>(io);
    let mut connection = match tokio::time::timeout(limits.header_timeout, handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => return tracing::debug!("HTTP/2 handshake failed: {e}"),
        Err(_) => return tracing::debug!("HTTP/2 handshake timed out"),
    };
    let activity = Arc::new(Activity::new());
    let mut closing = false;
    loop {
        let next = tokio::select! {
            next = connection.accept() => next,
            _ = stopping.wait_for(|stop| *stop), if !closing => {
                connection.graceful_shutdown();
                closing = true;
                continue;
            }
            () = activity.idle_for(limits.header_timeout), if !closing => {
                // A connection without requests stays open for good (its
                // pings answer); close it as HTTP/1.1 keep-alive is.
                connection.graceful_shutdown();
                closing = true;
                continue;
            }
        };
        match next {
            Some(Ok((request, respond))) => {
                tokio::spawn(stream(receiver.clone(), activity.clone(), request, respond));
            }
            Some(Err(e)) => {
                tracing::debug!("HTTP/2 connection ended: {e}");
                break;
            }
            None => break,
        }
    }
}

/// Answers one stream: the request, its handle for interim answers, the
/// final answer sent as the peer's window allows.
async fn stream(
    receiver: Receiver,
    activity: Arc<Activity>,
    request: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let _in_flight = activity.begin();
    let respond = Arc::new(Mutex::new(respond));
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(Interim::Http2(respond.clone()));
    let head_only = parts.method == Method::HEAD;
    let answer = receiver
        .handle(http::Request::from_parts(parts, Incoming(body)))
        .await;
    let (mut head, body) = answer.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let bodiless = head_only
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED;
    if !bodiless && !head.headers.contains_key(header::CONTENT_LENGTH) {
        head.headers
            .insert(header::CONTENT_LENGTH, bytes.len().into());
    }
    let bytes = if bodiless { Bytes::new() } else { bytes };
    let sent = lock(&respond).send_response(http::Response::from_parts(head, ()), bytes.is_empty());
    match sent {
        Ok(mut send) if !bytes.is_empty() => {
            if let Err(e) = send_all(&mut send, bytes).await {
                tracing::debug!("an HTTP/2 answer was cut: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!("an HTTP/2 answer could not be sent: {e}"),
    }
}

/// Sends `bytes` and ends the stream, each piece as the window allows.
async fn send_all(send: &mut SendStream<Bytes>, mut bytes: Bytes) -> Result<(), h2::Error> {
    while !bytes.is_empty() {
        send.reserve_capacity(bytes.len());
        let granted = std::future::poll_fn(|cx| send.poll_capacity(cx)).await;
        let granted = match granted {
            Some(granted) => granted?,
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        let piece = bytes.split_to(granted.min(bytes.len()));
        send.send_data(piece, bytes.is_empty())?;
    }
    Ok(())
}

/// A stream's request body: each piece read gives the peer its window
/// back, so it sends no further ahead than the handler reads.
struct Incoming(RecvStream);

impl http_body::Body for Incoming {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let recv = &mut self.get_mut().0;
        if !recv.is_end_stream() {
            match ready!(recv.poll_data(cx)) {
                Some(Ok(piece)) => {
                    let _ = recv.flow_control().release_capacity(piece.len());
                    return Poll::Ready(Some(Ok(Frame::data(piece))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {}
            }
        }
        match ready!(recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}
