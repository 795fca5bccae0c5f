//! A [`Job`] checked and resolved into what a run needs, before anything
//! is sent.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use fileuploader_wire::UPLOAD_ID_HEADER;

use crate::error::{code, Error};
use crate::job::{Job, SourceRef, MAX_BLOCK_SIZE, MAX_THREAD_NUM};
use crate::source::{MemoryRegistry, Source};

/// Headers the protocol sets; a job may not.
const RESERVED_HEADERS: [&str; 6] = [
    "content-length",
    "content-range",
    "content-type",
    "transfer-encoding",
    "host",
    UPLOAD_ID_HEADER,
];

/// A checked job: where it goes and what it sends.
pub(crate) struct PreparedRun {
    pub(crate) url: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) sources: Vec<SourcePlan>,
}

/// One source, opened and named.
pub(crate) struct SourcePlan {
    pub(crate) source: Arc<dyn Source>,
    pub(crate) name: String,
    pub(crate) key: String,
}

/// Checks a job and resolves its sources.
pub(crate) fn prepare(job: &Job, memory: &MemoryRegistry) -> Result<PreparedRun, Error> {
    if job.block_size == 0 || job.block_size > MAX_BLOCK_SIZE {
        return Err(Error::invalid(
            code::INVALID_OPTION,
            format!(
                "block_size {} is out of range 1..={MAX_BLOCK_SIZE}",
                job.block_size
            ),
        ));
    }
    if job.thread_num == 0 || job.thread_num > MAX_THREAD_NUM {
        return Err(Error::invalid(
            code::INVALID_OPTION,
            format!(
                "thread_num {} is out of range 1..={MAX_THREAD_NUM}",
                job.thread_num
            ),
        ));
    }
    let url = parse_server_url(&job.server_url)?;
    let headers = validate_headers(job)?;
    if job.source_value.is_empty() {
        return Err(Error::invalid(code::NO_SOURCES, "the job has no sources"));
    }
    let mut sources = Vec::with_capacity(job.source_value.len());
    for entry in job.source_value.entries() {
        let source = match &entry.source {
            SourceRef::Url(u) => memory.resolve(u)?,
            SourceRef::Custom(s) => s.clone(),
        };
        let name = [entry.name.as_str(), job.file_name.as_str()]
            .into_iter()
            .find(|n| !n.is_empty())
            .map(str::to_owned)
            .or_else(|| source.default_name())
            .unwrap_or_else(|| "upload.bin".to_owned());
        sources.push(SourcePlan {
            source,
            name,
            key: entry.key.clone(),
        });
    }
    Ok(PreparedRun {
        url,
        headers,
        sources,
    })
}

fn parse_server_url(s: &str) -> Result<Uri, Error> {
    let invalid = |why: String| Error::invalid(code::INVALID_URL, why);
    let url = url::Url::parse(s)
        .map_err(|e| invalid(format!("the URL to upload to is invalid: {s:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the URL to upload to is invalid: scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    Uri::try_from(url.as_str())
        .map_err(|e| invalid(format!("the URL to upload to is invalid: {s:?}: {e}")))
}

fn validate_headers(job: &Job) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::new();
    for (name, value) in job.http_header.iter() {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Error::invalid(
                code::INVALID_OPTION,
                format!("invalid header name {name:?}"),
            )
        })?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(Error::invalid(
                code::INVALID_OPTION,
                format!("header {name} is set by the uploader and cannot be replaced"),
            ));
        }
        let value = HeaderValue::from_str(value).map_err(|_| {
            Error::invalid(
                code::INVALID_OPTION,
                format!("header {name} has a value with CR, LF or other bytes that cannot be sent: {value:?}"),
            )
        })?;
        headers.insert(header, value);
    }
    Ok(headers)
}
