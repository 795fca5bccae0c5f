//! The receiver's final answer, as a landing or an error keeps it.

use http::{HeaderMap, HeaderValue};

/// How many bytes of a receiver's final answer a job keeps by default
/// ([`Job::answer_limit`](crate::Job::answer_limit)): 64 KiB.
pub const DEFAULT_ANSWER_LIMIT: usize = 64 * 1024;

/// The receiver's answer that reported a landing, or that a failure came
/// of: its status, its headers and its body (up to the job's
/// [`answer_limit`](crate::Job::answer_limit) once the core has it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FinalAnswer {
    /// The status.
    pub status: http::StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, or its first bytes when it was longer than the bound.
    pub body: bytes::Bytes,
    /// How long the body was, when it was cut to the bound.
    pub cut_from: Option<usize>,
}

impl FinalAnswer {
    /// The answer `response` gives, in memory of its own. A transport may
    /// hand out headers and a body that share the buffer it read them
    /// into (hyper does); a job keeps its answers after the exchange, one
    /// for each file, so sharing would keep a whole read buffer alive for
    /// every file of a folder.
    pub fn of(response: &http::Response<bytes::Bytes>) -> Self {
        FinalAnswer {
            status: response.status(),
            headers: response
                .headers()
                .iter()
                .map(|(name, value)| (name.clone(), owned(value)))
                .collect(),
            body: bytes::Bytes::copy_from_slice(response.body()),
            cut_from: None,
        }
    }

    /// The answer with its body cut to `limit` bytes, saying so.
    pub fn bounded(mut self, limit: usize) -> Self {
        if self.body.len() > limit {
            self.cut_from = Some(self.body.len());
            self.body = bytes::Bytes::copy_from_slice(&self.body[..limit]);
        }
        self
    }

    /// The body as text, when it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

/// `value` in memory of its own, sensitive if it was.
fn owned(value: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    copy.set_sensitive(value.is_sensitive());
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &'static [u8]) -> FinalAnswer {
        let response = http::Response::builder()
            .status(201)
            .header("x-app", "filed")
            .body(bytes::Bytes::from_static(body))
            .unwrap();
        FinalAnswer::of(&response)
    }

    #[test]
    fn a_body_over_the_bound_is_cut_and_says_how_long_it_was() {
        let long = answer(b"0123456789").bounded(4);
        assert_eq!(
            (&long.body[..], long.cut_from, long.status.as_u16()),
            (&b"0123"[..], Some(10), 201)
        );
        assert_eq!(long.headers["x-app"], "filed");
        let short = answer(b"ok").bounded(4);
        assert_eq!((short.text(), short.cut_from), (Some("ok"), None));
        assert_eq!(answer(b"\xff\xfe").text(), None, "not UTF-8");
    }

    #[test]
    fn an_answer_keeps_nothing_of_the_buffer_it_was_read_into() {
        let read = bytes::Bytes::from(vec![b'a'; 64 * 1024]);
        let value = HeaderValue::from_maybe_shared(read.slice(0..8)).unwrap();
        let response = http::Response::builder()
            .header("x-app", value)
            .body(read.slice(100..200))
            .unwrap();
        let kept = FinalAnswer::of(&response);
        let cut = FinalAnswer::of(&response).bounded(10);
        drop(response);
        assert!(read.is_unique(), "the read buffer is still shared");
        assert_eq!(
            (
                kept.headers["x-app"].as_bytes(),
                kept.body.len(),
                cut.body.len()
            ),
            (&b"aaaaaaaa"[..], 100, 10)
        );
    }
}
