//! The receiver's final answer, as a landing or an error keeps it.

use http::HeaderMap;

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
    /// The answer `response` gives.
    pub fn of(response: &http::Response<bytes::Bytes>) -> Self {
        FinalAnswer {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.body().clone(),
            cut_from: None,
        }
    }

    /// The answer with its body cut to `limit` bytes, saying so.
    pub fn bounded(mut self, limit: usize) -> Self {
        if self.body.len() > limit {
            self.cut_from = Some(self.body.len());
            self.body.truncate(limit);
        }
        self
    }

    /// The body as text, when it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
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
}
