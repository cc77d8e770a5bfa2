//! Timestamps on the wire.
//!
//! Contract:
//! - [`format_rfc3339`] writes what Go's `time.RFC3339Nano` writes for a UTC time, which is what
//!   the reference agent sends in `Expiration`: `2023-11-14T22:13:20Z`,
//!   `1996-03-27T07:45:23.123456789Z` (fraction only when non-zero, trailing zeros trimmed).
//! - [`parse_rfc3339`] accepts what the Rust SDK accepts for a container-credentials
//!   `Expiration`: `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with an upper-case `Z` (offsets and a
//!   lower-case `z` are rejected; `T` or `t` separates date and time; any number of fraction
//!   digits, nanoseconds kept; `23:59:60` on the last day of a month reads as `23:59:59.999999999`).
//! - EKS Auth sends `expiration` as JSON epoch seconds, possibly fractional:
//!   [`parse_epoch_seconds`] reads the number's text exactly, [`format_epoch_seconds`] writes it
//!   back exactly, and [`from_epoch_seconds_f64`] converts an already-parsed `f64`.
//!
//! Parsing RFC 3339 is the `time` crate's (the one the SDK uses), behind the SDK's own checks.
//! Formatting RFC 3339 and both directions of epoch seconds are hand-written on purpose, for Go's
//! output and exact nanoseconds; the calendar arithmetic is Howard Hinnant's `civil_from_days`
//! (proleptic Gregorian, valid for every `SystemTime`).

use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const NANOS_PER_SEC: u32 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// A timestamp that is not RFC 3339 in the form the SDKs accept. Its text never repeats the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 date-time: {reason}")]
pub struct TimeParseError {
    reason: &'static str,
}

impl TimeParseError {
    const fn new(reason: &'static str) -> Self {
        Self { reason }
    }

    /// What is wrong with the input.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Splits a time into whole seconds since the epoch (floor) and nanoseconds (`0..1e9`).
pub fn to_epoch(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(before) => {
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (secs.saturating_neg(), 0),
                n => (secs.saturating_neg().saturating_sub(1), NANOS_PER_SEC - n),
            }
        }
    }
}

/// The time `secs` seconds and `nanos` nanoseconds after the epoch (`secs` may be negative);
/// `None` when `nanos` is not below one second or the time does not fit a `SystemTime`.
pub fn from_epoch(secs: i64, nanos: u32) -> Option<SystemTime> {
    if nanos >= NANOS_PER_SEC {
        return None;
    }
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))?
            .checked_add(Duration::from_nanos(u64::from(nanos)))
    }
}

/// The first second RFC 3339 can write: `0000-01-01T00:00:00Z`, as epoch seconds. Earlier
/// times have no RFC 3339 form (the SDKs cannot parse them, Go's encoder refuses them).
pub const MIN_RFC3339_EPOCH_SECS: i64 = -62_167_219_200;

/// The last second RFC 3339 can write: `9999-12-31T23:59:59Z`, as epoch seconds. Later
/// times have no RFC 3339 form (the SDKs cannot parse them, Go's encoder refuses them), so
/// credentials expiring later are malformed.
pub const MAX_RFC3339_EPOCH_SECS: i64 = 253_402_300_799;

/// Formats `t` as Go's `time.RFC3339Nano` does in UTC: `2023-11-14T22:13:20Z`,
/// `1996-03-27T07:45:23.123456789Z`, `2024-01-01T00:00:00.5Z`.
///
/// Hand-written on purpose: date-time crates print a fixed number of fraction digits or refuse
/// years outside 0000–9999, while the reference agent's Go formatter trims trailing zeros and
/// prints any year; this keeps the served `Expiration` byte-identical.
pub fn format_rfc3339(t: SystemTime) -> String {
    GoRfc3339(t).to_string()
}

/// [`format_rfc3339`] as a `Display`, to write the timestamp without an intermediate `String`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GoRfc3339(pub(crate) SystemTime);

impl fmt::Display for GoRfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (secs, nanos) = to_epoch(self.0);
        let days = secs.div_euclid(SECS_PER_DAY);
        let second_of_day = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        // Go pads the year to four digits and puts a minus sign before negative years. The
        // largest year of a `SystemTime` has 12 digits; the rest is 26 bytes at most.
        let mut buf = [0u8; 48];
        let mut len = 0;
        let mut push = |bytes: &[u8]| {
            buf[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        if year < 0 {
            push(b"-");
        }
        push_digits(&mut push, year.unsigned_abs(), 4);
        push(b"-");
        push_digits(&mut push, u64::from(month), 2);
        push(b"-");
        push_digits(&mut push, u64::from(day), 2);
        push(b"T");
        push_digits(&mut push, second_of_day.unsigned_abs() / 3600, 2);
        push(b":");
        push_digits(&mut push, (second_of_day.unsigned_abs() % 3600) / 60, 2);
        push(b":");
        push_digits(&mut push, second_of_day.unsigned_abs() % 60, 2);
        push_fraction_digits(&mut push, nanos);
        push(b"Z");
        // Only ASCII digits and separators were written.
        f.write_str(std::str::from_utf8(&buf[..len]).unwrap_or_default())
    }
}

/// Pushes `n` in decimal, zero-padded to `width` digits.
fn push_digits(push: &mut impl FnMut(&[u8]), n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    let mut n = n;
    while n > 0 || digits.len() - at < width {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    push(&digits[at..]);
}

/// Pushes `.` and the fraction with trailing zeros trimmed, or nothing for zero.
fn push_fraction_digits(push: &mut impl FnMut(&[u8]), nanos: u32) {
    if nanos == 0 {
        return;
    }
    let mut digits = [b'.'; 10];
    let mut n = nanos;
    for d in digits[1..].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let end = digits.iter().rposition(|&d| d != b'0').map_or(1, |p| p + 1);
    push(&digits[..end]);
}

/// Parses an RFC 3339 UTC timestamp as the Rust SDK does for container credentials.
///
/// ```
/// use pod_identity_core::time::{format_rfc3339, parse_rfc3339};
///
/// let t = parse_rfc3339("1996-03-27T07:45:23.123456789Z").unwrap();
/// assert_eq!(format_rfc3339(t), "1996-03-27T07:45:23.123456789Z");
/// assert!(parse_rfc3339("2023-11-14T22:13:20+00:00").is_err());
/// assert!(parse_rfc3339("2023-11-14T22:13:20z").is_err());
/// ```
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, TimeParseError> {
    let b = s.as_bytes();
    // The SDK rejects anything not ending in an upper-case `Z` before parsing further.
    if b.last() != Some(&b'Z') {
        return Err(TimeParseError::new(
            "must end in an upper-case `Z` (offsets are not accepted)",
        ));
    }
    // The `time` crate takes any separator here; the SDKs' parsers take only these.
    if b.len() > 10 && !matches!(b[10], b'T' | b't') {
        return Err(TimeParseError::new(
            "date and time must be separated by `T`",
        ));
    }
    let parsed = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| TimeParseError::new(parse_error_reason(&e)))?;
    let nanos = parsed.nanosecond();
    from_epoch(parsed.unix_timestamp(), nanos)
        .ok_or(TimeParseError::new("out of range for this platform"))
}

/// Says what is wrong without the input (the `time` crate's texts are not used as they are).
fn parse_error_reason(e: &time::error::Parse) -> &'static str {
    use time::error::{Parse, ParseFromDescription, TryFromParsed};
    match e {
        Parse::ParseFromDescription(ParseFromDescription::InvalidComponent(component)) => {
            match *component {
                "year" => "invalid year",
                "month" => "invalid month",
                "day" => "invalid day",
                "hour" => "invalid hour",
                "minute" => "invalid minute",
                "second" => "invalid second",
                "subsecond" => "invalid fractional seconds",
                _ => "invalid date-time",
            }
        }
        Parse::ParseFromDescription(ParseFromDescription::InvalidLiteral { .. }) => {
            "misplaced separator"
        }
        Parse::ParseFromDescription(ParseFromDescription::UnexpectedTrailingCharacters {
            ..
        }) => "unexpected characters after the seconds",
        Parse::TryFromParsed(TryFromParsed::ComponentRange(range)) => match range.name() {
            "month" => "month out of range",
            "day" => "day out of range",
            "hour" => "hour out of range",
            "minute" => "minute out of range",
            "second" => "second out of range (a leap second only ends a month)",
            _ => "out of range",
        },
        _ => "invalid date-time",
    }
}

/// Converts EKS Auth's `expiration` (epoch seconds, possibly fractional) already parsed as an
/// `f64`; `None` for a non-finite or unrepresentable value. Nanoseconds are rounded.
pub fn from_epoch_seconds_f64(secs: f64) -> Option<SystemTime> {
    if !secs.is_finite() {
        return None;
    }
    let whole = secs.floor();
    // i64 holds every whole number in this open range; outside it no SystemTime exists anyway.
    if !(-9.2e18..9.2e18).contains(&whole) {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    let mut whole_secs = whole as i64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let mut nanos = ((secs - whole) * f64::from(NANOS_PER_SEC)).round() as u32;
    if nanos >= NANOS_PER_SEC {
        whole_secs = whole_secs.checked_add(1)?;
        nanos = 0;
    }
    from_epoch(whole_secs, nanos)
}

/// Parses the text of a JSON number of epoch seconds (`1700000000`, `1700000000.25`,
/// `1.7E9`) exactly, to the nanosecond (further digits are truncated).
///
/// Hand-written on purpose: going through `f64` (as serde_json and date-time crates do) loses
/// the nanoseconds of a 10-digit epoch, so a fractional `expiration` would not be served exactly.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use pod_identity_core::time::parse_epoch_seconds;
///
/// assert_eq!(parse_epoch_seconds("1.7E9"), Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
/// assert_eq!(parse_epoch_seconds("0.000000001"), Some(UNIX_EPOCH + Duration::from_nanos(1)));
/// assert_eq!(parse_epoch_seconds("soon"), None);
/// ```
pub fn parse_epoch_seconds(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (unsigned.get(..i)?, unsigned.get(i + 1..)?),
        None => (unsigned, ""),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) if !f.is_empty() => (i, f),
        Some(_) => return None,
        None => (mantissa, ""),
    };
    if int_part.is_empty()
        || !int_part.bytes().all(|c| c.is_ascii_digit())
        || !frac_part.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let exponent: i64 = if exponent.is_empty() {
        0
    } else {
        let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        // Any exponent beyond this either overflows or leaves nothing above a nanosecond.
        let magnitude: i64 = digits.parse().unwrap_or(i64::MAX).min(10_000);
        if exponent.starts_with('-') {
            -magnitude
        } else {
            magnitude
        }
    };

    // The digits of integer and fraction as one sequence, without copying them.
    let (int_digits, frac_digits) = (int_part.as_bytes(), frac_part.as_bytes());
    let all = || int_digits.iter().chain(frac_digits);
    let len = i64::try_from(int_digits.len() + frac_digits.len()).ok()?;
    let point = i64::try_from(int_digits.len()).ok()? + exponent;
    let digit_at = |i: i64| -> u8 {
        let Ok(i) = usize::try_from(i) else {
            return 0;
        };
        let d = match i.checked_sub(int_digits.len()) {
            None => int_digits.get(i),
            Some(j) => frac_digits.get(j),
        };
        d.map_or(0, |d| d - b'0')
    };
    // Digits left of the point that are non-zero must fit an i64.
    let mut whole: i64 = 0;
    let first_nonzero = all().position(|&d| d != b'0').map_or(len, |p| p as i64);
    for i in first_nonzero.min(point)..point {
        whole = whole.checked_mul(10)?.checked_add(i64::from(digit_at(i)))?;
    }
    let mut nanos: u32 = 0;
    for i in point..point + 9 {
        nanos = nanos * 10 + u32::from(digit_at(i));
    }
    if negative {
        match nanos {
            0 => from_epoch(whole.checked_neg()?, 0),
            n => from_epoch(whole.checked_neg()?.checked_sub(1)?, NANOS_PER_SEC - n),
        }
    } else {
        from_epoch(whole, nanos)
    }
}

/// Writes `t` as JSON epoch seconds, exactly: `1700000000`, `1700000000.25`, `-0.5`.
pub fn format_epoch_seconds(t: SystemTime) -> String {
    let (secs, nanos) = to_epoch(t);
    let mut out = String::with_capacity(21);
    if secs < 0 && nanos > 0 {
        // -2 s + 0.5 s is -1.5 s: print the magnitude of the next whole second up.
        let _ = write!(out, "-{}", (secs + 1).unsigned_abs());
        push_fraction(&mut out, NANOS_PER_SEC - nanos);
    } else {
        let _ = write!(out, "{secs}");
        push_fraction(&mut out, nanos);
    }
    out
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of `civil_from_days`).
#[cfg(test)]
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // doy < 366 and mp < 12, so both fit in u32.
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends `.` and the fraction with trailing zeros trimmed, or nothing for zero.
fn push_fraction(out: &mut String, nanos: u32) {
    if nanos == 0 {
        return;
    }
    let mut digits = format!("{nanos:09}");
    while digits.ends_with('0') {
        digits.pop();
    }
    out.push('.');
    out.push_str(&digits);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: u32) -> SystemTime {
        from_epoch(secs, nanos).unwrap()
    }

    #[test]
    fn reference_vectors_format() {
        assert_eq!(
            format_rfc3339(at(827_912_723, 123_456_789)),
            "1996-03-27T07:45:23.123456789Z"
        );
        assert_eq!(format_rfc3339(at(1_700_000_000, 0)), "2023-11-14T22:13:20Z");
        assert_eq!(format_rfc3339(at(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(at(0, 500_000_000)), "1970-01-01T00:00:00.5Z");
        assert_eq!(format_rfc3339(at(-1, 0)), "1969-12-31T23:59:59Z");
        assert_eq!(
            format_rfc3339(at(-1, 999_999_999)),
            "1969-12-31T23:59:59.999999999Z"
        );
        assert_eq!(format_rfc3339(at(951_782_400, 0)), "2000-02-29T00:00:00Z");
        assert_eq!(
            format_rfc3339(at(253_402_300_799, 0)),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            format_rfc3339(at(253_402_300_800, 10)),
            "10000-01-01T00:00:00.00000001Z"
        );
        assert_eq!(
            format_rfc3339(at(-62_135_596_800, 0)),
            "0001-01-01T00:00:00Z"
        );
        assert_eq!(
            format_rfc3339(at(-62_167_219_200 - 1, 0)),
            "-0001-12-31T23:59:59Z"
        );
    }

    #[test]
    fn reference_vectors_parse() {
        assert_eq!(
            parse_rfc3339("1996-03-27T07:45:23.123456789Z"),
            Ok(at(827_912_723, 123_456_789))
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20Z"),
            Ok(at(1_700_000_000, 0))
        );
        assert_eq!(
            parse_rfc3339("2023-11-14t22:13:20Z"),
            Ok(at(1_700_000_000, 0))
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.5Z"),
            Ok(at(1_700_000_000, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.1234567891234Z"),
            Ok(at(1_700_000_000, 123_456_789))
        );
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            Ok(at(1_483_228_799, 999_999_999))
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00Z"),
            Ok(at(951_782_400, 0))
        );
        assert_eq!(
            parse_rfc3339("0000-01-01T00:00:00Z"),
            Ok(at(-62_167_219_200, 0))
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "Z",
            "2023-11-14T22:13:20z",
            "2023-11-14T22:13:20+00:00",
            "2023-11-14T22:13:20-02:00",
            "2023-11-14T22:13:20",
            "2023-11-14 22:13:20Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.5xZ",
            "2023-11-14T22:13Z",
            "2023-13-14T22:13:20Z",
            "2023-00-14T22:13:20Z",
            "2023-02-29T22:13:20Z",
            "1900-02-29T00:00:00Z",
            "2023-11-31T22:13:20Z",
            "2023-11-00T22:13:20Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T23:60:00Z",
            "2023-11-14T23:59:60Z",
            "2023-11-14T23:59:61Z",
            "+023-11-14T22:13:20Z",
            "2023/11/14T22:13:20Z",
            "２023-11-14T22:13:20Z",
            "2023-11-14T22:13:20ZZ",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn error_text_does_not_echo_input() {
        let err = parse_rfc3339("secret-value-Z").unwrap_err();
        assert!(!err.to_string().contains("secret"));
        assert!(err.to_string().starts_with("invalid RFC 3339 date-time: "));
    }

    #[test]
    fn civil_round_trip_over_wide_range() {
        for days in (-800_000..800_000).step_by(997).chain(-1000..1000) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn epoch_seconds_text() {
        let cases: [(&str, Option<(i64, u32)>); 16] = [
            ("1700000000", Some((1_700_000_000, 0))),
            ("1700000000.25", Some((1_700_000_000, 250_000_000))),
            ("1.7E9", Some((1_700_000_000, 0))),
            ("1.7e+9", Some((1_700_000_000, 0))),
            ("17000000005e-1", Some((1_700_000_000, 500_000_000))),
            ("0.000000001", Some((0, 1))),
            ("0.0000000019", Some((0, 1))),
            ("-0.5", Some((-1, 500_000_000))),
            ("-1", Some((-1, 0))),
            ("1e-400", Some((0, 0))),
            ("0e99999999999999999999", Some((0, 0))),
            ("1e400", None),
            ("", None),
            ("1.", None),
            (".5", None),
            ("0x10", None),
        ];
        for (text, want) in cases {
            let want = want.map(|(s, n)| at(s, n));
            assert_eq!(parse_epoch_seconds(text), want, "{text}");
        }
    }

    #[test]
    fn epoch_seconds_format_round_trips() {
        for (secs, nanos, text) in [
            (1_700_000_000, 0, "1700000000"),
            (1_700_000_000, 250_000_000, "1700000000.25"),
            (-1, 500_000_000, "-0.5"),
            (-2, 0, "-2"),
            (-2, 1, "-1.999999999"),
        ] {
            assert_eq!(format_epoch_seconds(at(secs, nanos)), text);
            assert_eq!(parse_epoch_seconds(text), Some(at(secs, nanos)));
        }
    }

    #[test]
    fn epoch_seconds_f64() {
        assert_eq!(from_epoch_seconds_f64(1.7e9), Some(at(1_700_000_000, 0)));
        assert_eq!(
            from_epoch_seconds_f64(1_700_000_000.5),
            Some(at(1_700_000_000, 500_000_000))
        );
        assert_eq!(from_epoch_seconds_f64(-0.25), Some(at(-1, 750_000_000)));
        assert_eq!(from_epoch_seconds_f64(f64::NAN), None);
        assert_eq!(from_epoch_seconds_f64(f64::INFINITY), None);
        assert_eq!(from_epoch_seconds_f64(1e300), None);
    }
}
