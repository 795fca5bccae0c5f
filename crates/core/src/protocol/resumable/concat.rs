//! tus concatenation: each block a partial upload, created with its bytes
//! in one `POST`, joined at the end by a final `POST` naming the parts in
//! order. A resumed run asks the server (`HEAD`) which parts it holds whole
//! and sends only the others.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use http::{Method, StatusCode, Uri};

use fileuploader_wire::resumable::{Concat, UPLOAD_CONCAT, UPLOAD_METADATA};

use super::saved::{Part, Resumed};
use super::{Held, PartPieces, Session};
use crate::body::UploadBody;
use crate::error::Error;
use crate::plan::Block;
use crate::protocol::{header_value, FinalAnswer, Finish, Holding, Landing, Receipt, Verdict};
use crate::source::lock;
use crate::transport::{Response, Transport};

/// Whether `parts` cover `0..total` exactly, one after another.
fn covers(parts: &[Part], total: u64) -> bool {
    let mut spans: Vec<(u64, u64)> = parts.iter().map(|p| (p.start, p.end)).collect();
    spans.sort_unstable();
    let mut next = 0;
    spans.iter().all(|&(start, end)| {
        let follows = start == next;
        next = end;
        follows
    }) && next == total
}

impl Session {
    /// Begins an upload sent as partial uploads: finds which parts of
    /// `saved` (or of this run) the server holds whole, or the landing of
    /// the final upload they made.
    pub(super) async fn begin_parts(
        &self,
        transport: &dyn Transport,
        saved: Option<Resumed>,
    ) -> Result<Holding, Error> {
        let known: Vec<Part> = match &saved {
            Some(Resumed::Concatenated(parts)) => parts.clone(),
            _ => lock(&self.state).parts.values().cloned().collect(),
        };
        let mut parts = BTreeMap::new();
        let mut held = Vec::new();
        for part in &known {
            let Ok(uri) = part.url.parse::<Uri>() else {
                continue;
            };
            if let Some(Held {
                offset,
                length: Some(length),
                ..
            }) = self.held(transport, &uri).await?
            {
                if offset == length && length == part.end - part.start {
                    held.push((part.start, part.end));
                    parts.insert(part.start, part.clone());
                }
            }
        }
        if held.len() < known.len() && covers(&known, self.total) {
            // A server may delete parts once they make a final upload:
            // gone parts that made the whole file may have landed. The
            // same final request says so where it did.
            if let Some(landing) = self.landed_from(transport, &known).await? {
                return Ok(Holding::Landed(landing));
            }
        }
        let state = &mut *lock(&self.state);
        state.parts = parts;
        state.part_pieces.clear();
        Ok(Holding::Ranges(held))
    }

    /// What the server made of a block sent as a partial upload: the
    /// part, acknowledged with its range and URL as its receipt, once the
    /// server kept all of it.
    ///
    /// A part that goes in pieces (a front end bounds what one request
    /// carries) is created with the first and appended to (`PATCH`) with
    /// the others, each answered before the next.
    pub(super) fn judge_part(&self, block: &Block, response: &Response, what: &str) -> Verdict {
        let offset = match self.offset_of(what, response) {
            Ok(offset) => offset,
            Err(e) => return Verdict::Fail(e),
        };
        let pieces = self.part_pieces(block);
        let sent = match pieces.sent_end {
            0 => block.len,
            end => end,
        };
        if offset > sent {
            return Verdict::Fail(self.violation(&format!(
                "{what} was kept as {offset} bytes, but only {sent} were sent"
            )));
        }
        let url = match &pieces.url {
            Some(url) => Ok(url.clone()),
            None => self.location(response),
        };
        if offset < block.len && offset == sent && offset > pieces.held {
            // One more piece of a part taken in pieces.
            return match url {
                Ok(url) => {
                    let held = PartPieces {
                        url: Some(url),
                        held: offset,
                        sent_end: offset,
                    };
                    lock(&self.state).part_pieces.insert(block.offset, held);
                    Verdict::More
                }
                Err(e) => Verdict::Fail(e),
            };
        }
        if offset != block.len {
            // Sent again from what the server holds: of a part created
            // already, by appending; else by creating it again.
            let state = &mut *lock(&self.state);
            match state.part_pieces.get_mut(&block.offset) {
                Some(held) if held.url.is_some() => held.held = offset,
                _ => {
                    state.part_pieces.remove(&block.offset);
                }
            }
            return Verdict::Retry {
                error: self.stranger(
                    &format!("{what} (kept {offset} of {} bytes)", block.len),
                    response,
                ),
                after: None,
            };
        }
        lock(&self.state).part_pieces.remove(&block.offset);
        match url {
            Ok(url) => {
                let part = Part {
                    start: block.offset,
                    end: block.offset + block.len,
                    url: url.to_string(),
                };
                let receipt = part.receipt();
                lock(&self.state).parts.insert(block.offset, part);
                Verdict::Ack(Receipt(Some(receipt)))
            }
            Err(e) => Verdict::Fail(e),
        }
    }

    /// Joins the parts by the final `POST`: the final upload's URL
    /// ([`ControlFlow::Continue`]), or a resync when a part is gone.
    pub(super) async fn join(
        &self,
        transport: &dyn Transport,
    ) -> Result<ControlFlow<Finish, Uri>, Error> {
        let parts: Vec<Part> = lock(&self.state).parts.values().cloned().collect();
        let response = self.final_request(transport, &parts).await?;
        if response.status() == StatusCode::BAD_REQUEST
            || response.status() == StatusCode::NOT_FOUND
        {
            // A part expired or is gone: find out which and resend.
            return Ok(ControlFlow::Break(Finish::Resync(
                crate::error::status_error(&response, &self.context("final concatenation")),
            )));
        }
        if !response.status().is_success() {
            return Err(self.refused("final concatenation", &response));
        }
        let url = self.location(&response)?;
        lock(&self.state).completed_by = Some(FinalAnswer::of(&response));
        Ok(ControlFlow::Continue(url))
    }

    /// Asks for the final upload of `parts`, in their order.
    async fn final_request(
        &self,
        transport: &dyn Transport,
        parts: &[Part],
    ) -> Result<Response, Error> {
        let urls = parts.iter().map(|p| self.shortest(&p.url)).collect();
        let mut request = self.request(Method::POST, &self.url, UploadBody::new());
        let headers = request.headers_mut();
        headers.insert(
            UPLOAD_CONCAT,
            header_value(&Concat::Final(urls).to_string())?,
        );
        headers.insert(UPLOAD_METADATA, header_value(&self.metadata)?);
        Ok(transport.send(request).await?)
    }
    /// The landing of the final upload of `parts` when the server has it
    /// whole already; `None` when it does not (it refuses the request, or
    /// the upload it names is short).
    async fn landed_from(
        &self,
        transport: &dyn Transport,
        parts: &[Part],
    ) -> Result<Option<Landing>, Error> {
        let mut parts = parts.to_vec();
        parts.sort_by_key(|p| p.start);
        let response = self.final_request(transport, &parts).await?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let Ok(url) = self.location(&response) else {
            return Ok(None);
        };
        Ok(match self.held(transport, &url).await? {
            Some(held) if held.offset == self.total => {
                lock(&self.state).landed_at = Some(url.to_string());
                Some(self.landed(&held))
            }
            _ => None,
        })
    }
    /// A part's URL as the final upload names it: its path when it is on
    /// the creation URL's server, keeping the header short.
    fn shortest(&self, url: &str) -> String {
        match url.parse::<Uri>() {
            Ok(uri)
                if uri.authority() == self.url.authority() && uri.scheme() == self.url.scheme() =>
            {
                uri.path_and_query()
                    .map_or_else(|| url.to_owned(), |p| p.as_str().to_owned())
            }
            _ => url.to_owned(),
        }
    }
}
