//! Quoted names in multipart part headers.

/// Appends `s` as the inside of a quoted multipart parameter: `"`, CR and LF
/// as browsers send them (`%22`, `%0D`, `%0A`), so a name can neither end
/// its quotes nor start a line of its own; `\` as `%5C`, since parsers that
/// read quoted-pairs would take a trailing one as escaping the closing quote;
/// and every other control byte but tab (`%1F`), since ordinary parsers
/// refuse part headers holding them.
///
/// ```
/// let mut out = Vec::new();
/// fileuploader_wire::put_escaped(&mut out, "a\"b\\c\r\n");
/// assert_eq!(out, b"a%22b%5Cc%0D%0A");
/// ```
pub fn put_escaped(buf: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        if b == b'"' || b == b'\\' || (b.is_ascii_control() && b != b'\t') {
            buf.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            buf.push(b);
        }
    }
}
