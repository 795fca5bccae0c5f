//! Arbitrary form fields, names, keys and headers through a job: a job is
//! either refused with -10 before anything is sent, or its request parses
//! with multer into exactly the parts that were set.
#![no_main]

use arbitrary::Arbitrary;
use fileuploader_core::testing::MemoryTransport;
use fileuploader_core::UploadManager;
use futures_util::stream;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    fields: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    name: String,
    key: String,
    data: Vec<u8>,
}

/// How a quoted name travels: `"`, `\` and control bytes but tab as `%XX`.
fn escaped(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => "%22".to_owned(),
            '\\' => "%5C".to_owned(),
            c if c.is_ascii_control() && c != '\t' => format!("%{:02X}", c as u8),
            c => c.to_string(),
        })
        .collect()
}

fuzz_target!(|input: Input| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let transport = MemoryTransport::new();
        let manager = UploadManager::new(transport.clone());
        let mut job = manager.create_job();
        job.server_url = "http://127.0.0.1:9/upload".into();
        job.block_size = 1 << 20;
        for (k, v) in &input.fields {
            job.form_field.add(k, v);
        }
        for (k, v) in &input.headers {
            job.http_header.insert(k, v);
        }
        let name = if input.name.is_empty() {
            "x".to_owned()
        } else {
            input.name.clone()
        };
        job.source_value.add(
            manager.generate_url_for_upload_data(input.data.clone()),
            name.as_str(),
            input.key.as_str(),
        );
        let handle = match manager.run(&job) {
            Ok(handle) => handle,
            Err(e) => {
                assert_eq!(e.code(), -10, "{e}");
                assert!(transport.requests().is_empty());
                return;
            }
        };
        handle.wait().await.unwrap();
        let request = &transport.requests()[0];
        let ct = request.headers["content-type"].to_str().unwrap();
        let boundary = multer::parse_boundary(ct).unwrap();
        let body = stream::iter([Ok::<_, std::io::Error>(request.body.clone())]);
        let mut form = multer::Multipart::new(body, boundary);
        let mut parts = Vec::new();
        while let Some(field) = form.next_field().await.unwrap() {
            let n = field.name().unwrap_or("").to_owned();
            let f = field.file_name().map(str::to_owned);
            parts.push((n, f, field.bytes().await.unwrap()));
        }
        assert_eq!(
            parts.len(),
            input.fields.len() + 1,
            "no forged or lost part"
        );
        for ((k, v), (n, f, bytes)) in input.fields.iter().zip(&parts) {
            assert_eq!(
                (n.as_str(), f, &bytes[..]),
                (escaped(k).as_str(), &None, v.as_bytes())
            );
        }
        let (n, f, bytes) = parts.last().unwrap();
        assert_eq!(n, &escaped(&input.key));
        assert_eq!(f.as_deref(), Some(escaped(&name).as_str()));
        assert_eq!(&bytes[..], &input.data[..]);
    });
});
