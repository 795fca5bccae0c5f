//! Cross-origin requests, so a page on another origin (Uppy, tus-js-client
//! in a browser) can upload: which origins may, and the headers that tell
//! the browser so.

use http::{HeaderMap, HeaderValue};

/// Headers a browser may send to the receiver.
const ALLOW_HEADERS: &str = "authorization, content-type, content-range, x-upload-id, \
     x-requested-with, x-request-id, x-http-method-override, tus-resumable, upload-length, \
     upload-offset, upload-metadata, upload-checksum, upload-concat, upload-defer-length, \
     upload-complete, upload-incomplete, upload-draft-interop-version, idempotency-key";
/// Headers of the receiver's answers a page may read.
const EXPOSE_HEADERS: &str = "location, tus-resumable, tus-version, tus-extension, tus-max-size, \
     tus-checksum-algorithm, upload-offset, upload-length, upload-expires, upload-complete, \
     upload-incomplete, upload-draft-interop-version, x-landed-name";
const ALLOW_METHODS: &str = "GET, HEAD, POST, PATCH, DELETE, OPTIONS";

/// Which origins may upload from a browser (default: none; the CORS
/// headers are then never sent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    /// `None`: any origin; otherwise exactly these (`https://app.example`).
    origins: Option<Vec<String>>,
    enabled: bool,
}

impl Cors {
    /// Pages of any origin may upload.
    pub fn any() -> Self {
        Cors {
            origins: None,
            enabled: true,
        }
    }

    /// Pages of these origins may upload.
    pub fn origins<I: IntoIterator<Item = S>, S: Into<String>>(origins: I) -> Self {
        Cors {
            origins: Some(origins.into_iter().map(Into::into).collect()),
            enabled: true,
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.enabled
            && self
                .origins
                .as_ref()
                .is_none_or(|list| list.iter().any(|o| o == origin))
    }

    /// Adds the CORS headers to an answer to a request from `origin`;
    /// `preflight` for the browser's `OPTIONS` check.
    pub(crate) fn decorate(
        &self,
        origin: Option<&HeaderValue>,
        preflight: bool,
        out: &mut HeaderMap,
    ) {
        let Some(origin) = origin.filter(|o| o.to_str().is_ok_and(|o| self.allows(o))) else {
            return;
        };
        out.insert("access-control-allow-origin", origin.clone());
        out.append("vary", HeaderValue::from_static("origin"));
        if preflight {
            out.insert(
                "access-control-allow-methods",
                HeaderValue::from_static(ALLOW_METHODS),
            );
            out.insert(
                "access-control-allow-headers",
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            out.insert("access-control-max-age", HeaderValue::from_static("86400"));
        } else {
            out.insert(
                "access-control-expose-headers",
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_origins_get_headers() {
        let cors = Cors::origins(["https://app.example"]);
        let mut out = HeaderMap::new();
        let stranger = HeaderValue::from_static("https://evil.example");
        cors.decorate(Some(&stranger), false, &mut out);
        assert!(out.is_empty());
        let app = HeaderValue::from_static("https://app.example");
        cors.decorate(Some(&app), true, &mut out);
        assert_eq!(out["access-control-allow-origin"], "https://app.example");
        assert!(out["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("upload-offset"));
        let mut none = HeaderMap::new();
        Cors::default().decorate(Some(&app), false, &mut none);
        assert!(none.is_empty(), "off by default");
    }
}
