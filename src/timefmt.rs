//! Times as they appear in URLs and JSON: RFC 3339 (`2026-11-25T17:00:00Z`), integer
//! milliseconds since the Unix epoch, or the words `earliest` and `now` in ([`parse_time`], the
//! one parser for every time a request gives); RFC 3339 with microseconds out. Internally every
//! time is microseconds since the Unix epoch (`i64`).

use crate::error::{Error, Result};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The first and last microsecond RFC 3339 can write (years 0000 to 9999). Times outside are
/// refused where they enter: stored, they could never be shown back as a time.
const MIN_US: i64 = -62_167_219_200_000_000;
const MAX_US: i64 = 253_402_300_799_999_999;

/// A time as a request gives it: a point, or a word that only means a point where the request
/// is served (the stream's oldest media, the server clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSpec {
    /// Microseconds since the Unix epoch.
    At(i64),
    /// The oldest media the stream still holds.
    Earliest,
    /// The server clock when the request is served.
    Now,
}

impl TimeSpec {
    /// The point, when the request gave one (not a word).
    pub fn point(self) -> Option<i64> {
        match self {
            TimeSpec::At(t) => Some(t),
            TimeSpec::Earliest | TimeSpec::Now => None,
        }
    }

    /// The point this means for a stream whose oldest media starts at `earliest_us` (`None`:
    /// it holds none, and `earliest` is `now`), served at `now_us`.
    pub fn resolve(self, earliest_us: Option<i64>, now_us: i64) -> i64 {
        match self {
            TimeSpec::At(t) => t,
            TimeSpec::Now => now_us,
            TimeSpec::Earliest => earliest_us.unwrap_or(now_us),
        }
    }

    /// Whether the same text means another point later (a word): answers that used it must
    /// not be cached as if they were fixed.
    pub fn is_relative(self) -> bool {
        self.point().is_none()
    }
}

/// Parses any time a request gives (query parameter or JSON string): RFC 3339, integer epoch
/// milliseconds, `earliest` or `now`. `what` names the parameter for the error message.
pub fn parse_time(what: &str, text: &str) -> Result<TimeSpec> {
    match text.trim() {
        "earliest" => Ok(TimeSpec::Earliest),
        "now" => Ok(TimeSpec::Now),
        t => parse_point(what, t, bad_time_or_word).map(TimeSpec::At),
    }
}

/// Parses a time that must be a point (RFC 3339 or epoch ms, no word). `what` names the
/// parameter for the error message. Requests go through [`parse_time`].
///
/// Only times RFC 3339 can write are accepted, epoch milliseconds included: every time the API
/// accepts is then echoed back by [`format_us`] as text this function parses to the same value, so
/// a client can pass a returned time (a frames page's `next`, a timeline span) straight back in.
pub fn parse_time_us(what: &str, text: &str) -> Result<i64> {
    parse_point(what, text, bad_time)
}

/// RFC 3339 or epoch ms; `bad` makes the error for text that is neither.
fn parse_point(what: &str, text: &str, bad: fn(&str, &str) -> Error) -> Result<i64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        let ms: i64 = text.parse().map_err(|_| bad(what, text))?;
        return from_epoch_ms(what, ms);
    }
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| bad(what, text))?;
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

fn bad_time_or_word(what: &str, text: &str) -> Error {
    Error::invalid(format!(
        "'{what}' must be an RFC 3339 time like 2026-11-25T17:00:00Z, integer milliseconds \
         since the Unix epoch, 'earliest' or 'now'; got '{text}'"
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
    fn words_and_points() {
        assert_eq!(
            parse_time("start", " earliest ").unwrap(),
            TimeSpec::Earliest
        );
        assert_eq!(parse_time("start", "now").unwrap(), TimeSpec::Now);
        assert_eq!(
            parse_time("start", "1500").unwrap(),
            TimeSpec::At(1_500_000)
        );
        let e = parse_time("end", "yesterday").unwrap_err();
        assert!(
            e.message.contains("'end'") && e.message.contains("'now'"),
            "{e}"
        );
        let e = parse_time("end", "253402300800000").unwrap_err();
        assert!(e.message.contains("years 0000 and 9999"), "{e}");
        assert!(parse_time("end", "Now").is_err(), "words are lower case");
        assert_eq!(TimeSpec::Earliest.resolve(Some(5), 9), 5);
        assert_eq!(TimeSpec::Earliest.resolve(None, 9), 9);
        assert_eq!(TimeSpec::Now.resolve(Some(5), 9), 9);
        assert_eq!(TimeSpec::At(7).resolve(Some(5), 9), 7);
        assert!(TimeSpec::Now.is_relative() && !TimeSpec::At(1).is_relative());
    }

    #[test]
    fn formats_round_trip() {
        let us = 1_764_090_000_123_456;
        assert_eq!(parse_time_us("t", &format_us(us)).unwrap(), us);
        assert_eq!(format_us(0), "1970-01-01T00:00:00Z");
    }
}
