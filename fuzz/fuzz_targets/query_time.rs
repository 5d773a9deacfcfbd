//! Fuzzes what the HTTP API parses out of URLs and headers: times (`?start=`, `?end=`, `?at=`,
//! `producer_start=`), the follow feed's `start=now|earliest|after:<n>|<time>`, `Range: bytes=`,
//! the request path the auth layer classifies (with its percent-decoding), and `?token=`.
//!
//! The input, when it is UTF-8, is given whole to every parser. Beyond "no panic", it checks what
//! the API documents:
//! - a time that parses formats back (`format_us`, what JSON answers carry) to text that parses to
//!   the same microsecond, so a client can pass a returned time (e.g. a frames page's `next`) back
//!   in;
//! - epoch milliseconds and RFC 3339 agree on every time both can say;
//! - `parse_start` is `parse_time_us` for anything that is not a keyword;
//! - a satisfiable byte range lies inside the body;
//! - a playback token verifies for its own stream until it expires, and for no other stream.
#![no_main]

use http::{header, HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tapedeck::analytics::follow::{parse_start, StartAt};
use tapedeck::config::AuthConfig;
use tapedeck::http::auth::{classify, Auth};
use tapedeck::http::range::{parse_range, ByteRange};
use tapedeck::timefmt::{format_us, parse_time_us};

/// Body lengths to check ranges against: the edges (empty, one byte, the largest) and a typical one.
const RANGE_TOTALS: &[u64] = &[0, 1, 2, 1000, u64::MAX - 1, u64::MAX];

/// A fixed "now" for token checks (2026-11-25T17:00:00Z); tokens are signed to expire after it.
const NOW_MS: u64 = 1_795_626_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    times(text);
    follow_start(text);
    ranges(text);
    paths(text);
    tokens(text);
});

fn times(text: &str) {
    let Ok(us) = parse_time_us("start", text) else {
        return;
    };
    let formatted = format_us(us);
    assert_eq!(
        parse_time_us("start", &formatted).ok(),
        Some(us),
        "{text:?} -> {us} µs -> {formatted:?} does not parse back"
    );
    // A whole millisecond reads the same from its epoch-ms spelling as from RFC 3339.
    if us % 1000 == 0 {
        assert_eq!(
            parse_time_us("start", &(us / 1000).to_string()).ok(),
            Some(us)
        );
    }
}

fn follow_start(text: &str) {
    assert_eq!(parse_start(None).ok(), Some(StartAt::Now));
    let Ok(start) = parse_start(Some(text)) else {
        return;
    };
    let t = text.trim();
    match start {
        StartAt::Now => assert_eq!(t, "now"),
        StartAt::Earliest => assert_eq!(t, "earliest"),
        StartAt::After(n) => {
            assert!(n >= 0, "after:{n}");
            assert!(t.starts_with("after:"));
        }
        StartAt::Time(us) => assert_eq!(parse_time_us("start", t).ok(), Some(us)),
    }
}

fn ranges(text: &str) {
    // As sent, and with the unit in front, so the fuzzer need not find "bytes=" itself.
    for value in [text.to_string(), format!("bytes={text}")] {
        let Ok(value) = HeaderValue::from_str(&value) else {
            continue;
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, value);
        for &total in RANGE_TOTALS {
            match parse_range(&headers, total) {
                ByteRange::Partial { start, end } => {
                    assert!(
                        start <= end && end < total,
                        "{text:?} of {total}: {start}-{end}"
                    )
                }
                ByteRange::Full | ByteRange::Unsatisfiable => {}
            }
        }
    }
}

fn paths(text: &str) {
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let _ = classify(&method, text);
        let _ = classify(&method, &format!("/api/v1/streams/{text}"));
    }
}

fn auth() -> &'static Auth {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    AUTH.get_or_init(|| {
        Auth::new(&AuthConfig {
            token_secret: Some("fuzz".into()),
            ..AuthConfig::default()
        })
    })
}

fn tokens(text: &str) {
    let auth = auth();
    // Arbitrary `?token=` values: refused or accepted, never a panic. Forging one that verifies
    // would need the HMAC key, so any acceptance here would be a bug.
    assert!(
        auth.verify(text, "cam1", NOW_MS).is_err(),
        "{text:?} verified"
    );
    // The input as a stream name: its own token verifies, for it only, until it expires.
    let token = auth.sign(text, NOW_MS + 1);
    assert!(auth.verify(&token, text, NOW_MS).is_ok(), "{text:?}");
    assert!(auth.verify(&token, text, NOW_MS + 1).is_err(), "expired");
    let other = format!("{text}x");
    assert!(
        auth.verify(&token, &other, NOW_MS).is_err(),
        "{text:?} token for {other:?}"
    );
}
