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

/// A quoted multipart name as the sender meant it: `%22`, `%0D` and `%0A`
/// decoded to `"`, CR and LF, as the HTML form-data rules have browsers
/// escape them (and [`put_escaped`] does). Nothing else is decoded: a `%`
/// of the name itself travels as it is, so only these three can be read
/// back without guessing.
///
/// ```
/// assert_eq!(fileuploader_wire::unescape_name("say %22hi%22.txt"), "say \"hi\".txt");
/// assert_eq!(fileuploader_wire::unescape_name("100%.txt"), "100%.txt");
/// ```
pub fn unescape_name(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') {
        return s.into();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3).unwrap_or("");
        let decoded = match code.to_ascii_uppercase().as_str() {
            "22" => Some('"'),
            "0D" => Some('\r'),
            "0A" => Some('\n'),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out.into()
}
