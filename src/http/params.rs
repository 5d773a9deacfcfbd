//! Query-string and body parsing with errors in the JSON error format (axum's own extractor
//! rejections are plain text).

use crate::error::{Error, Result};
use crate::timefmt::{parse_time, TimeSpec};
use std::collections::HashMap;

pub type QueryMap = HashMap<String, String>;

/// More query parameters than any endpoint takes, by far: a request with more is refused before
/// any handler looks at it.
pub const MAX_QUERY_PARAMS: usize = 64;

/// The query string as a map, refusing what no endpoint means: a parameter given twice (which
/// value would count?), more than [`MAX_QUERY_PARAMS`] parameters, or a string that does not
/// decode. Errors are in the JSON error format.
pub struct Params(pub QueryMap);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Params> {
        parse_query(parts.uri.query().unwrap_or("")).map(Params)
    }
}

pub fn parse_query(query: &str) -> Result<QueryMap> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| Error::invalid(format!("the query string does not decode: {e}")))?;
    if pairs.len() > MAX_QUERY_PARAMS {
        return Err(Error::invalid(format!(
            "the query has {} parameters; no endpoint takes more than {MAX_QUERY_PARAMS}",
            pairs.len()
        )));
    }
    let mut map = QueryMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if map.contains_key(&k) {
            return Err(Error::invalid(format!(
                "query parameter '{k}' is given more than once"
            )));
        }
        map.insert(k, v);
    }
    Ok(map)
}

/// A time parameter: RFC 3339, epoch ms, `earliest` or `now` (every time parameter of every
/// endpoint goes through here, so they all take the same forms). Words are resolved by the
/// handler once it knows the stream ([`TimeSpec::resolve`]).
pub fn time(q: &QueryMap, key: &str) -> Result<Option<TimeSpec>> {
    q.get(key).map(|v| parse_time(key, v)).transpose()
}

/// A time parameter that must be given.
pub fn required_time(q: &QueryMap, key: &str) -> Result<TimeSpec> {
    time(q, key)?.ok_or_else(|| {
        Error::invalid(format!(
            "'{key}' is required: an RFC 3339 time like 2026-11-25T17:00:00Z, integer \
             milliseconds since the Unix epoch, 'earliest' or 'now'"
        ))
    })
}

/// Refuses a range whose end is not after its start. Called with the points known so far
/// (before the stream is read, for the errors' order) and again once words are resolved.
pub fn check_order(start_us: Option<i64>, end_us: Option<i64>) -> Result<()> {
    match (start_us, end_us) {
        (Some(s), Some(e)) if e <= s => Err(Error::invalid("'end' must be after 'start'")),
        _ => Ok(()),
    }
}

/// A non-negative integer parameter (unsigned parse, so "-1" is refused).
pub fn int<T: std::str::FromStr>(q: &QueryMap, key: &str) -> Result<Option<T>> {
    if q.get(key).is_some_and(|v| v.trim().starts_with('-')) {
        return Err(Error::invalid(format!(
            "'{key}' must be a non-negative integer; got '{}'",
            q[key]
        )));
    }
    q.get(key)
        .map(|v| {
            v.trim().parse::<T>().map_err(|_| {
                Error::invalid(format!("'{key}' must be a non-negative integer; got '{v}'"))
            })
        })
        .transpose()
}

/// A page size: default when absent, refused when out of range.
pub fn limit(q: &QueryMap, default: u32, max: u32) -> Result<u32> {
    match int::<u32>(q, "limit")? {
        None => Ok(default),
        Some(n) if n >= 1 && n <= max => Ok(n),
        Some(n) => Err(Error::invalid(format!(
            "'limit' must be between 1 and {max}; got {n}"
        ))),
    }
}

pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    if body.is_empty() {
        return Err(Error::invalid("a JSON request body is required"));
    }
    serde_json::from_slice(body).map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        let q = parse_query("start=1&end=2&x=a%20b").unwrap();
        assert_eq!((q["start"].as_str(), q["x"].as_str()), ("1", "a b"));
        assert!(parse_query("").unwrap().is_empty());
        let e = parse_query("a=1&a=2").unwrap_err();
        assert!(e.message.contains("more than once"), "{e}");
        let many: Vec<String> = (0..65).map(|i| format!("p{i}=1")).collect();
        assert!(parse_query(&many.join("&")).is_err());
        let many: Vec<String> = (0..64).map(|i| format!("p{i}=1")).collect();
        assert_eq!(parse_query(&many.join("&")).unwrap().len(), 64);
    }
}
