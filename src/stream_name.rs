//! Stream names: `[A-Za-z0-9_.-]{1,256}`, the same rule as Kinesis Video stream names.

use crate::error::{Error, Result};

pub const MAX_STREAM_NAME_LEN: usize = 256;

pub fn validate_stream_name(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if name.is_empty() || name.len() > MAX_STREAM_NAME_LEN || !ok_chars {
        return Err(Error::invalid(format!(
            "invalid stream name '{}': use 1 to {MAX_STREAM_NAME_LEN} characters from A-Z, a-z, 0-9, '_', '.', '-'",
            name.chars().take(300).collect::<String>()
        )));
    }
    if name == "." || name == ".." {
        return Err(Error::invalid(
            "invalid stream name: '.' and '..' are reserved",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["cam1", "a", "front-door_2.hd", &"x".repeat(256)] {
            assert!(validate_stream_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "cam/1", "ü", "..", &"x".repeat(257), "a%20"] {
            assert!(validate_stream_name(bad).is_err(), "{bad}");
        }
    }
}
