//! Times as they appear in URLs and JSON: RFC 3339 (`2026-11-25T17:00:00Z`) or integer
//! milliseconds since the Unix epoch in, RFC 3339 with microseconds out. Internally every time is
//! microseconds since the Unix epoch (`i64`).

use crate::error::{Error, Result};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The first and last microsecond RFC 3339 can write (years 0000 to 9999). Times outside are
/// refused where they enter: stored, they could never be shown back as a time.
const MIN_US: i64 = -62_167_219_200_000_000;
const MAX_US: i64 = 253_402_300_799_999_999;

/// Parses a query-parameter time. `what` names the parameter for the error message.
///
/// Only times RFC 3339 can write are accepted, epoch milliseconds included: every time the API
/// accepts is then echoed back by [`format_us`] as text this function parses to the same value, so
/// a client can pass a returned time (a frames page's `next`, a timeline span) straight back in.
pub fn parse_time_us(what: &str, text: &str) -> Result<i64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        let ms: i64 = text.parse().map_err(|_| bad_time(what, text))?;
        return from_epoch_ms(what, ms);
    }
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| bad_time(what, text))?;
    let us = t.unix_timestamp_nanos() / 1000;
    i64::try_from(us)
        .ok()
        .filter(|us| (MIN_US..=MAX_US).contains(us))
        .ok_or_else(|| out_of_range(what, text))
}

/// Milliseconds since the epoch as microseconds, refused outside years 0000 to 9999.
pub fn from_epoch_ms(what: &str, ms: i64) -> Result<i64> {
    ms.checked_mul(1000)
        .filter(|us| (MIN_US..=MAX_US).contains(us))
        .ok_or_else(|| out_of_range(what, &ms.to_string()))
}

fn out_of_range(what: &str, text: &str) -> Error {
    Error::invalid(format!(
        "'{what}' must be between years 0000 and 9999 (RFC 3339); got '{text}'"
    ))
}

fn bad_time(what: &str, text: &str) -> Error {
    Error::invalid(format!(
        "'{what}' must be an RFC 3339 time like 2026-11-25T17:00:00Z or integer milliseconds \
         since the Unix epoch; got '{text}'"
    ))
}

/// Formats microseconds since the epoch as RFC 3339 UTC with microsecond precision. A time RFC 3339
/// cannot write (outside the years 0000 to 9999; never one [`parse_time_us`] returned) comes out
/// as the bare number of microseconds.
pub fn format_us(us: i64) -> String {
    let nanos = i128::from(us) * 1000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => t.format(&Rfc3339).unwrap_or_else(|_| us.to_string()),
        Err(_) => us.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_and_epoch_ms() {
        assert_eq!(
            parse_time_us("start", "1970-01-01T00:00:01Z").unwrap(),
            1_000_000
        );
        assert_eq!(
            parse_time_us("start", "2026-11-25T17:00:00.5+01:00").unwrap(),
            parse_time_us("start", "2026-11-25T16:00:00.500Z").unwrap()
        );
        assert_eq!(parse_time_us("start", "1500").unwrap(), 1_500_000);
    }

    #[test]
    fn rejects_garbage_with_named_parameter() {
        let e = parse_time_us("end", "yesterday").unwrap_err();
        assert!(e.message.contains("'end'"), "{}", e.message);
        assert!(parse_time_us("end", "99999999999999999999").is_err());
        assert!(parse_time_us("end", "").is_err());
    }

    #[test]
    fn refuses_times_rfc3339_cannot_write() {
        assert_eq!(
            format_us(parse_time_us("t", "253402300799999").unwrap()),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            format_us(parse_time_us("t", "-62167219200000").unwrap()),
            "0000-01-01T00:00:00Z"
        );
        for bad in [
            // Found by the `query_time` fuzz target: past year 9999, it used to parse but come
            // back as bare microseconds (1000 times too far out when read back as milliseconds).
            "1764400900000200",
            "253402300800000",
            "-62167219200001",
            "-1125899906842625",
            "0000-01-01T00:00:00+01:00",
        ] {
            let e = parse_time_us("start", bad).unwrap_err();
            assert!(e.message.contains("'start'"), "{bad}: {}", e.message);
        }
        assert!(from_epoch_ms("end", i64::MAX).is_err());
    }

    #[test]
    fn formats_round_trip() {
        let us = 1_764_090_000_123_456;
        assert_eq!(parse_time_us("t", &format_us(us)).unwrap(), us);
        assert_eq!(format_us(0), "1970-01-01T00:00:00Z");
    }
}
