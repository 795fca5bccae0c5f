//! What a resumable session saved for a later run, read back by kind.

use crate::protocol::{Handle, SavedSession};

/// What a resumable session saved for a later run, read from its
/// [`SavedSession`] in this one place: the handle says which kind, the
/// receipts fill it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resumed {
    /// An upload at this URL, appended to in order.
    Stream(String),
    /// An upload its first block creates under an idempotency key: that
    /// block's receipt, when it was acknowledged, is the upload's URL.
    FirstBlock { key: String, url: Option<String> },
    /// Parts sent apart (concatenation), each with its range and URL.
    Concatenated(Vec<Part>),
}

impl Resumed {
    /// What `saved` says, unless another protocol saved it.
    pub(super) fn from_saved(saved: &SavedSession) -> Option<Self> {
        Some(match &saved.handle {
            Handle::Parts => Resumed::Concatenated(
                saved
                    .receipts
                    .iter()
                    .filter_map(|(_, r)| Part::from_receipt(r))
                    .collect(),
            ),
            Handle::FirstRequest { key } => Resumed::FirstBlock {
                key: key.clone(),
                url: saved
                    .receipts
                    .iter()
                    .find(|(i, _)| *i == 0)
                    .map(|(_, url)| url.clone()),
            },
            Handle::Url { url } | Handle::Id { id: url } => Resumed::Stream(url.clone()),
            Handle::Multipart { .. } => return None,
        })
    }

    /// The URL to ask the server about, when there is one.
    pub(super) fn url(&self) -> Option<&str> {
        match self {
            Resumed::Stream(url) => Some(url),
            Resumed::FirstBlock { url, .. } => url.as_deref(),
            Resumed::Concatenated(_) => None,
        }
    }
}

/// A block sent as a partial upload: its byte range and its URL. Its
/// receipt, `START END URL`, is what a resumed run finds it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) url: String,
}

impl Part {
    pub(super) fn receipt(&self) -> String {
        format!("{} {} {}", self.start, self.end, self.url)
    }

    pub(super) fn from_receipt(receipt: &str) -> Option<Self> {
        let mut words = receipt.splitn(3, ' ');
        let start = words.next()?.parse().ok()?;
        let end = words.next()?.parse().ok()?;
        let url = words.next()?.to_owned();
        Some(Part { start, end, url })
    }
}
