//! JSON written byte for byte as Go's `encoding/json` writes it, through serde_json.
//!
//! serde_json already writes compact JSON with the escapes Go uses for `"`, `\`, `\b`, `\f`,
//! `\n`, `\r`, `\t` and the other control characters (`\u00XX`, lower-case hex). Go's encoder
//! also escapes `<`, `>` and `&` (`\u003c`, `\u003e`, `\u0026`, its HTML-safe default) and
//! U+2028 and U+2029 (`\u2028`, `\u2029`); [`GoFormatter`] adds those.

use std::io;

use memchr::{memchr, memchr3};
use serde::Serialize;
use serde_json::ser::Formatter;

/// Whether Go might escape this byte where serde_json does not: `<`, `>`, `&`, or any byte of a
/// non-ASCII character (U+2028 and U+2029 among them).
fn needs_a_look(b: u8) -> bool {
    matches!(b, b'<' | b'>' | b'&') | (b >= 0x80)
}

/// A compact serde_json formatter that escapes strings as Go's `encoding/json` does.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let bytes = fragment.as_bytes();
        // Most text needs no escape of Go's own: one branch-free pass (vectorised by the
        // compiler) says so, and the searches below run only when it finds a candidate.
        if !bytes.iter().fold(false, |any, &b| any | needs_a_look(b)) {
            return writer.write_all(bytes);
        }
        // `memchr` scans with SIMD; U+2028 and U+2029 (`E2 80 A8`, `E2 80 A9`) are only looked
        // for in text that is not all ASCII, which keys and tokens are.
        let find_html = |from: usize| memchr3(b'<', b'>', b'&', &bytes[from..]).map(|p| p + from);
        let find_e2 = |from: usize| memchr(0xE2, &bytes[from..]).map(|p| p + from);
        let mut next_html = find_html(0);
        let mut next_e2 = if fragment.is_ascii() {
            None
        } else {
            find_e2(0)
        };
        let mut start = 0;
        loop {
            let i = match (next_html, next_e2) {
                (None, None) => break,
                (Some(h), None) => h,
                (None, Some(e)) => e,
                (Some(h), Some(e)) => h.min(e),
            };
            let escape: Option<(&[u8], usize)> = match bytes[i] {
                b'<' => Some((b"\\u003c", 1)),
                b'>' => Some((b"\\u003e", 1)),
                b'&' => Some((b"\\u0026", 1)),
                _ => match bytes.get(i + 1..i + 3) {
                    Some([0x80, 0xA8]) => Some((b"\\u2028", 3)),
                    Some([0x80, 0xA9]) => Some((b"\\u2029", 3)),
                    // Another character starting with 0xE2: written as it is.
                    _ => None,
                },
            };
            if let Some((escape, len)) = escape {
                writer.write_all(&bytes[start..i])?;
                writer.write_all(escape)?;
                start = i + len;
            }
            if next_html == Some(i) {
                next_html = find_html(i + 1);
            }
            if next_e2 == Some(i) {
                next_e2 = find_e2(i + 1);
            }
        }
        writer.write_all(&bytes[start..])
    }
}

/// Appends `value` to `out` as Go's `encoding/json.Marshal` writes it.
pub(crate) fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mut serializer = serde_json::Serializer::with_formatter(out, GoFormatter);
    // Writing to a `Vec` cannot fail, and the crate's wire types have no failing
    // `Serialize` (no maps with non-string keys, no custom errors).
    let _ = value.serialize(&mut serializer);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(s: &str) -> String {
        let mut out = Vec::new();
        write(&mut out, s);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn escapes_as_go_does() {
        assert_eq!(go("plain"), r#""plain""#);
        assert_eq!(go("<a&b>"), r#""\u003ca\u0026b\u003e""#);
        assert_eq!(go("\u{2028}x\u{2029}"), r#""\u2028x\u2029""#);
        // Other characters starting with 0xE2 stay as they are.
        assert_eq!(go("€\u{2027}\u{202a}"), "\"€\u{2027}\u{202a}\"");
        assert_eq!(
            go("\"\\\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}/é"),
            "\"\\\"\\\\\\n\\r\\t\\b\\f\\u0001\\u001f\u{7f}/é\""
        );
        assert_eq!(go(""), r#""""#);
        assert_eq!(go("\u{2028}"), r#""\u2028""#);
    }

    #[test]
    fn every_escape_is_found_at_any_length() {
        // Around the widths the compiler vectorises the first pass with, and long text.
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000] {
            let pad = "a".repeat(len);
            assert_eq!(go(&pad), format!("\"{pad}\""));
            for (text, go_writes) in [
                ("<", r"\u003c"),
                (">", r"\u003e"),
                ("&", r"\u0026"),
                ("\u{2028}", r"\u2028"),
                ("\u{2029}", r"\u2029"),
                ("é", "é"),
            ] {
                assert_eq!(
                    go(&format!("{pad}{text}")),
                    format!("\"{pad}{go_writes}\""),
                    "{len}"
                );
            }
        }
    }
}
