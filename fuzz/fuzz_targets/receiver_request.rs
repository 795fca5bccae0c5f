//! Arbitrary block requests against the receiver: it answers every one with
//! a deliberate status, never an internal error, and writes nothing outside
//! its directory.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    content_type: Option<&'a str>,
    content_range: Option<&'a str>,
    upload_id: Option<&'a str>,
    crc: Option<&'a str>,
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("in");
    let receiver = fileuploader_server::Receiver::new(&dir)
        .unwrap()
        .max_upload_size(1 << 20);
    let mut request = http::Request::post("/upload");
    for (name, value) in [
        (
            "content-type",
            input
                .content_type
                .or(Some("multipart/form-data; boundary=B")),
        ),
        ("content-range", input.content_range),
        ("x-upload-id", input.upload_id),
        ("x-block-crc32c", input.crc),
    ] {
        if let Some(value) = value.and_then(|v| http::HeaderValue::from_str(v).ok()) {
            request = request.header(name, value);
        }
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(input.body)))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(receiver.handle(request)).status().as_u16();
    assert!(
        matches!(status, 200 | 400 | 409 | 413 | 422 | 460),
        "status {status} for {input:?}"
    );
    let outside: Vec<_> = std::fs::read_dir(outer.path()).unwrap().collect();
    assert_eq!(outside.len(), 1, "only the receiver's own directory");
});
