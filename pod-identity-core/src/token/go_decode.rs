//! Go's decoding of a JWT segment, with Go's error texts: `base64.RawURLEncoding` and
//! `encoding/json` into a map, as golang-jwt does it.

use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Go's `base64.RawURLEncoding.DecodeString`: the error text is Go's.
pub(super) fn decode_segment(segment: &[u8]) -> Result<Vec<u8>, String> {
    let corrupt = |at: usize| format!("illegal base64 data at input byte {at}");
    let mut clean = Vec::with_capacity(segment.len());
    for (i, &b) in segment.iter().enumerate() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => clean.push(b),
            b'\r' | b'\n' => {}
            _ => return Err(corrupt(i)),
        }
    }
    if clean.len() % 4 == 1 {
        return Err(corrupt(segment.len().saturating_sub(1)));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    engine.decode(&clean).map_err(|_| corrupt(0))
}

/// A JSON object's entries in document order (`None` for `null`), or Go's error text.
pub(super) type Entries = Vec<(String, Value)>;

pub(super) fn parse_object(bytes: &[u8], go_type: &str) -> Result<Option<Entries>, String> {
    // Go's decoder replaces invalid UTF-8 with U+FFFD instead of failing.
    let text = String::from_utf8_lossy(bytes);
    match serde_json::from_str::<TopLevel>(&text) {
        Ok(TopLevel::Object(entries)) => Ok(Some(entries)),
        Ok(TopLevel::Null) => Ok(None),
        Ok(TopLevel::Other(kind)) => Err(format!(
            "json: cannot unmarshal {kind} into Go value of type {go_type}"
        )),
        Err(e) => Err(go_json_syntax_error(&text, &e)),
    }
}

enum TopLevel {
    Object(Entries),
    Null,
    Other(&'static str),
}

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    entries.push((k, v));
                }
                Ok(TopLevel::Object(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TopLevel::Other("array"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TopLevel, E> {
                Ok(TopLevel::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("bool"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("number"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("string"))
            }
        }
        deserializer.deserialize_any(TopVisitor)
    }
}

/// An approximation of Go's `encoding/json` syntax error text for serde_json's error.
fn go_json_syntax_error(text: &str, err: &serde_json::Error) -> String {
    if err.is_eof() || text.trim().is_empty() {
        return "unexpected end of JSON input".to_owned();
    }
    let message = err.to_string();
    let offending = offending_char(text, err.line(), err.column());
    let context = [
        ("expected value", "looking for beginning of value"),
        ("trailing characters", "after top-level value"),
        (
            "key must be a string",
            "looking for beginning of object key string",
        ),
        ("expected `:`", "after object key"),
        ("expected `,` or `}`", "after object key:value pair"),
        ("expected `,` or `]`", "after array element"),
        ("expected ident", "in literal"),
        ("invalid escape", "in string escape code"),
        ("control character", "in string literal"),
        ("invalid number", "in numeric literal"),
    ]
    .iter()
    .find(|(serde_text, _)| message.starts_with(serde_text))
    .map(|(_, go_text)| *go_text);
    // A trailing comma: Go expects an object key before `}` and a value before `]`.
    let context = context.or(match (message.starts_with("trailing comma"), offending) {
        (true, Some('}')) => Some("looking for beginning of object key string"),
        (true, _) => Some("looking for beginning of value"),
        _ => None,
    });
    match (offending, context) {
        (Some(c), Some(context)) => format!("invalid character {} {context}", go_quote_char(c)),
        _ => match message.split(" at line ").next() {
            Some(m) => m.to_owned(),
            None => message,
        },
    }
}

/// The character at serde_json's 1-based line and column (a byte column).
fn offending_char(text: &str, line: usize, column: usize) -> Option<char> {
    let line_text = text.split('\n').nth(line.checked_sub(1)?)?;
    let at = column.checked_sub(1)?;
    line_text.get(at..).and_then(|s| s.chars().next())
}

/// Go's `quoteChar`.
fn go_quote_char(c: char) -> String {
    match c {
        '\'' => r"'\''".to_owned(),
        '"' => "'\"'".to_owned(),
        c => {
            let quoted = format!("{:?}", c.to_string());
            let inner = quoted
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or(&quoted);
            format!("'{inner}'")
        }
    }
}
