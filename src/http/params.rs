//! Query-string and body parsing with errors in the JSON error format (axum's own extractor
//! rejections are plain text).

use crate::error::{Error, Result};
use crate::timefmt::parse_time_us;
use std::collections::HashMap;

pub type QueryMap = HashMap<String, String>;

pub fn time(q: &QueryMap, key: &str) -> Result<Option<i64>> {
    q.get(key).map(|v| parse_time_us(key, v)).transpose()
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
