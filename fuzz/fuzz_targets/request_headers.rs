//! The receiver's header parsers: whatever they accept is well formed.
#![no_main]

use fileuploader_server::{plain_name, ContentRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(r) = ContentRange::parse(text) {
        assert!(r.start < r.end && r.end <= r.total, "{text:?} gave {r:?}");
    }
    if let Ok(name) = plain_name(text) {
        assert!(
            !name.is_empty() && name != "." && name != "..",
            "{text:?} gave {name:?}"
        );
        assert!(
            !name.contains(['/', '\\']) && !name.chars().any(char::is_control),
            "{text:?} gave {name:?}"
        );
    }
});
