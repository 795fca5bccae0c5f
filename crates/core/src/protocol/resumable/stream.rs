//! One stream: the upload is created (alone, or carrying the first block
//! where the server allows), then appended to in order with `PATCH` at
//! `Upload-Offset`; `HEAD` says where a resumed upload goes on. The same in
//! tus 1.0 and the draft; what differs is the dialect's
//! ([`Version`](fileuploader_wire::resumable::Version)).

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Uri};

use fileuploader_wire::resumable::{
    IDEMPOTENCY_KEY, UPLOAD_LENGTH, UPLOAD_METADATA, UPLOAD_OFFSET,
};

use super::saved::Resumed;
use super::{Mode, Session};
use crate::body::UploadBody;
use crate::error::{code, Error, ErrorKind};
use crate::plan::Block;
use crate::protocol::{header_value, FinalAnswer, Finish, Holding, Receipt, Verdict};
use crate::retry;
use crate::source::lock;
use crate::transport::{Response, Transport};

impl Session {
    /// Begins an upload sent as one stream: finds the one `saved` names
    /// (or this run began) and what the server holds of it, or creates one
    /// (now, or with its first block).
    pub(super) async fn begin_stream(
        &self,
        transport: &dyn Transport,
        saved: Option<Resumed>,
    ) -> Result<Holding, Error> {
        let resumed = saved
            .as_ref()
            .and_then(|s| s.url().map(str::to_owned))
            .or_else(|| match &lock(&self.state).mode {
                Mode::Stream(url) => Some(url.to_string()),
                _ => None,
            })
            .and_then(|u| u.parse::<Uri>().ok());
        if let Some(url) = resumed {
            if let Some(held) = self.held(transport, &url).await? {
                let (offset, length) = (held.offset, held.length);
                if length.is_some_and(|l| l != self.total) {
                    return Err(Error::new(
                        ErrorKind::Status,
                        code::HTTP_OTHER,
                        format!(
                            "the server holds {url} as {} bytes, but {:?} has {}",
                            length.unwrap_or(0),
                            self.name,
                            self.total
                        ),
                    ));
                }
                let state = &mut *lock(&self.state);
                if offset > self.total {
                    return Err(self.violation(&format!(
                        "it holds {offset} bytes of {url}, but {:?} has {}",
                        self.name, self.total
                    )));
                }
                state.mode = Mode::Stream(url.clone());
                state.offset = offset;
                if offset == self.total && held.complete != Some(false) {
                    state.landed_at = Some(url.to_string());
                    return Ok(Holding::Landed(self.landed(&held)));
                }
                return Ok(Holding::Ranges(vec![(0, offset)]));
            }
        }
        {
            let state = &mut *lock(&self.state);
            if self.total > 0 && state.creates_with_upload {
                state.mode = Mode::Creating;
                state.offset = 0;
                return Ok(Holding::Ranges(Vec::new()));
            }
        }
        let (url, created) = self.create(transport).await?;
        let state = &mut *lock(&self.state);
        state.mode = Mode::Stream(url.clone());
        state.offset = 0;
        // An empty upload is whole once created, where the server counts it
        // finished: its creation's answer reports the landing (name,
        // receipt). One the server holds unfinished is completed at the
        // finish, as any other.
        if self.total == 0 && self.complete_of(&created) != Some(false) {
            state.landed_at = Some(url.to_string());
            return Ok(Holding::Landed(self.landed_by(&created)));
        }
        Ok(Holding::Ranges(Vec::new()))
    }

    /// What the server made of the first block, sent with the creation:
    /// the upload's URL, its receipt, once the server kept all of it.
    pub(super) fn judge_created(&self, block: &Block, response: &Response, what: &str) -> Verdict {
        let end = block.offset + block.len;
        let sent = self.sent_end(block);
        let created = self
            .location(response)
            .and_then(|url| Ok((url, self.offset_after(what, response, sent)?)));
        let (url, offset) = match created {
            Ok(created) => created,
            Err(e) => return Verdict::Fail(e),
        };
        let state = &mut *lock(&self.state);
        if offset > sent && !(state.resent && offset <= self.total) {
            return Verdict::Fail(self.violation(&format!(
                "{what} was created holding {offset} bytes, but only {sent} were sent"
            )));
        }
        state.mode = Mode::Stream(url.clone());
        state.offset = offset;
        if offset > sent {
            // A creation sent again under its key: an earlier one (its
            // answer lost, or a run stopped) delivered more. Where the
            // upload goes on is the server's to say.
            return Verdict::Resync(Error::new(
                ErrorKind::Status,
                code::NOT_FINISHED,
                format!(
                    "the server holds {offset} bytes of {:?}, more than this creation carried: an earlier one under the same key delivered them; going on from there",
                    self.name
                ),
            ));
        }
        if offset < end && offset == sent && offset > block.offset {
            // The first piece of a block the server takes in pieces.
            return Verdict::More;
        }
        if offset < end {
            return Verdict::Resync(self.stranger(
                &format!("{what} (the server kept {offset} bytes, the block ends at {end})"),
                response,
            ));
        }
        if end == self.total {
            state.completed_by = Some(FinalAnswer::of(response));
        }
        Verdict::Ack(Receipt(Some(url.to_string())))
    }

    /// What the server made of an append: acknowledged once the offset
    /// reaches the block's end.
    pub(super) fn judge_append(&self, block: &Block, response: &Response, what: &str) -> Verdict {
        let end = block.offset + block.len;
        let sent = self.sent_end(block);
        let offset = match self.offset_after(what, response, sent) {
            Ok(offset) => offset,
            Err(e) => return Verdict::Fail(e),
        };
        if offset > sent {
            return Verdict::Fail(self.violation(&format!(
                "{what} moved the offset to {offset}, but only {sent} bytes were sent"
            )));
        }
        let state = &mut *lock(&self.state);
        let before = state.offset;
        state.offset = offset;
        if offset < end && offset == sent && offset > before {
            // One more piece of a block the server takes in pieces.
            return Verdict::More;
        }
        if offset < end {
            return Verdict::Resync(self.stranger(
                &format!("{what} (the server holds {offset} bytes, the block ends at {end})"),
                response,
            ));
        }
        if end == self.total {
            state.completed_by = Some(FinalAnswer::of(response));
        }
        // The first block's receipt is the upload's URL, however it went
        // (created with it, or in pieces after its creation): a later run
        // finds the upload by it.
        match &state.mode {
            Mode::Stream(url) if block.offset == 0 => Verdict::Ack(Receipt(Some(url.to_string()))),
            _ => Verdict::Ack(Receipt::default()),
        }
    }

    /// Creates a streamed upload: its URL, and the server's answer.
    async fn create(&self, transport: &dyn Transport) -> Result<(Uri, Response), Error> {
        loop {
            let mut request = self.request(Method::POST, &self.url, UploadBody::new());
            let headers = request.headers_mut();
            headers.insert(UPLOAD_LENGTH, HeaderValue::from(self.total));
            headers.insert(UPLOAD_METADATA, header_value(&self.metadata)?);
            headers.insert(IDEMPOTENCY_KEY, self.key_value()?);
            self.name_it(headers)?;
            self.mark_complete(headers, self.total == 0);
            let response = transport.send(request).await?;
            self.learn_limits(response.headers())?;
            if response.status().is_success() {
                return Ok((self.location(&response)?, response));
            }
            if !self.step_down(&response) {
                return Err(self.refused("creation", &response));
            }
        }
    }
    /// Sends the empty append that completes an upload whose every byte the
    /// server holds but which it does not count finished (the append that
    /// said so never reached it).
    pub(super) async fn complete(
        &self,
        transport: &dyn Transport,
        url: &Uri,
    ) -> Result<Finish, Error> {
        let mut request = self.request(Method::PATCH, url, UploadBody::new());
        let headers = request.headers_mut();
        headers.insert(UPLOAD_OFFSET, HeaderValue::from(self.total));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type()));
        self.mark_complete(headers, true);
        let response = transport.send(request).await?;
        let status = response.status();
        if status.is_success() && self.complete_of(&response) != Some(false) {
            lock(&self.state).landed_at = Some(url.to_string());
            return Ok(Finish::Landed(self.landed_by(&response)));
        }
        if status.is_success() || retry::is_retryable_status(status) {
            return Ok(Finish::Resync(Error::new(
                ErrorKind::Status,
                code::NOT_FINISHED,
                format!(
                    "the server holds every byte of {:?} but did not count it complete",
                    self.name
                ),
            )));
        }
        Err(self.refused("completing append", &response))
    }
}
