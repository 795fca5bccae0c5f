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
     upload-incomplete, upload-draft-interop-version, x-landed-name, upload-receipt";
const ALLOW_METHODS: &str = "GET, HEAD, POST, PATCH, DELETE, OPTIONS";

/// Which origins may upload from a browser (default: none; the CORS
/// headers are then never sent), and which request headers beyond the
/// protocols' own their pages may send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    /// `None`: any origin; otherwise exactly these (`https://app.example`).
    origins: Option<Vec<String>>,
    enabled: bool,
    /// `ALLOW_HEADERS` and the ones added.
    allow_headers: Option<HeaderValue>,
}

/// A CORS setting that could never match what a browser sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCors(String);

impl std::fmt::Display for BadCors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadCors {}

/// `origin` as a browser's `Origin` header gives it (`scheme://host[:port]`,
/// lower case, no default port), or why it never could be.
fn origin_of(origin: &str) -> Result<String, BadCors> {
    let parsed = url::Url::parse(origin).map_err(|e| {
        BadCors(format!(
            "CORS origin {origin:?} is not a URL ({e}); give one like https://app.example"
        ))
    })?;
    let serialized = parsed.origin().ascii_serialization();
    if !matches!(parsed.scheme(), "http" | "https") || serialized == "null" {
        return Err(BadCors(format!(
            "CORS origin {origin:?} is not an http or https origin; give one like https://app.example"
        )));
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(BadCors(format!(
            "CORS origin {origin:?} has a path; browsers send the origin alone: {serialized}"
        )));
    }
    if origin.ends_with('/') {
        return Err(BadCors(format!(
            "CORS origin {origin:?} ends with a slash, which no browser sends; give {serialized}"
        )));
    }
    Ok(serialized)
}

impl Cors {
    /// Pages of any origin may upload.
    pub fn any() -> Self {
        Cors {
            origins: None,
            enabled: true,
            allow_headers: None,
        }
    }

    /// Pages of these origins (`https://app.example`, as browsers send
    /// them) may upload.
    ///
    /// # Errors
    ///
    /// When an origin is not an http or https origin, or has a path or a
    /// trailing slash (no browser would ever match it); the message gives
    /// the origin to write instead.
    pub fn origins<I: IntoIterator<Item = S>, S: AsRef<str>>(origins: I) -> Result<Self, BadCors> {
        let origins = origins
            .into_iter()
            .map(|o| origin_of(o.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Cors {
            origins: Some(origins),
            enabled: true,
            allow_headers: None,
        })
    }

    /// Also lets pages send these request headers (an application's own,
    /// such as `X-Tenant`, or those given to the command line's `-H`).
    ///
    /// # Errors
    ///
    /// When a name is not a valid header name.
    pub fn allow_headers<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        names: I,
    ) -> Result<Self, BadCors> {
        let mut list = ALLOW_HEADERS.to_owned();
        for name in names {
            let name = http::HeaderName::from_bytes(name.as_ref().trim().as_bytes())
                .map_err(|_| BadCors(format!("{:?} is not a header name", name.as_ref())))?;
            list.push_str(", ");
            list.push_str(name.as_str());
        }
        self.allow_headers = Some(
            HeaderValue::from_str(&list)
                .map_err(|_| BadCors("the allowed headers do not fit in a header".into()))?,
        );
        Ok(self)
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
                self.allow_headers
                    .clone()
                    .unwrap_or(HeaderValue::from_static(ALLOW_HEADERS)),
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
        let cors = Cors::origins(["https://app.example"]).unwrap();
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

    #[test]
    fn origins_are_written_as_browsers_send_them_or_refused_with_the_right_one() {
        let cors = Cors::origins(["HTTPS://App.Example:443"]).unwrap();
        let mut out = HeaderMap::new();
        let app = HeaderValue::from_static("https://app.example");
        cors.decorate(Some(&app), false, &mut out);
        assert_eq!(out["access-control-allow-origin"], "https://app.example");
        for (given, hint) in [
            ("http://127.0.0.1:8080/", "give http://127.0.0.1:8080"),
            ("https://app.example/upload", "https://app.example"),
            ("app.example", "not a URL"),
            ("file:///x", "not an http or https origin"),
        ] {
            let e = Cors::origins([given]).unwrap_err().to_string();
            assert!(e.contains(hint), "{given}: {e}");
        }
    }

    #[test]
    fn a_page_may_send_the_headers_it_is_allowed() {
        let cors = Cors::any().allow_headers(["X-Tenant"]).unwrap();
        let mut out = HeaderMap::new();
        let app = HeaderValue::from_static("https://app.example");
        cors.decorate(Some(&app), true, &mut out);
        let allowed = out["access-control-allow-headers"].to_str().unwrap();
        assert!(allowed.ends_with(", x-tenant") && allowed.contains("upload-offset"));
        assert!(Cors::any().allow_headers(["bad header"]).is_err());
    }
}
