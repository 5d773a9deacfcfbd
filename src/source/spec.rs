//! What a source is: where tapedeck pulls a stream's media from (today: an RTSP camera), as the
//! API and the config file give it. Credentials live here and nowhere else: [`RtspSpec::redacted`]
//! is the only form that leaves the server, and the URL handed to the RTSP client never carries
//! them (so no client error message can).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// How RTP travels from the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Interleaved on the RTSP TCP connection: passes NAT and firewalls, no loss on a LAN.
    #[default]
    Tcp,
    /// Separate UDP ports (lower latency, but loss shows as dropped GOPs).
    Udp,
}

/// `{"rtsp": {...}}`: the one kind of source so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub rtsp: RtspSpec,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtspSpec {
    /// `rtsp://host[:port]/path`; credentials in it are moved to `username`/`password`.
    pub url: String,
    #[serde(default)]
    pub transport: Transport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// Never prints the password (specs end up in `tracing` fields and panics).
impl std::fmt::Debug for RtspSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspSpec")
            .field("url", &self.url)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Longest URL accepted (cameras' paths with query strings are well under this).
const MAX_URL_LEN: usize = 2048;
const MAX_CREDENTIAL_LEN: usize = 256;

impl SourceSpec {
    /// Checks and normalizes a source as given by a client: a parseable `rtsp://` URL with a
    /// host; credentials written in the URL are moved out of it.
    pub fn validated(self) -> Result<SourceSpec> {
        Ok(SourceSpec {
            rtsp: self.rtsp.validated()?,
        })
    }

    /// What the API shows: the password replaced, the username kept.
    pub fn redacted(&self) -> serde_json::Value {
        let r = &self.rtsp;
        serde_json::json!({"rtsp": {
            "url": r.url,
            "transport": r.transport,
            "username": r.username,
            "password": r.password.as_ref().map(|_| "<redacted>"),
        }})
    }
}

impl RtspSpec {
    fn validated(mut self) -> Result<RtspSpec> {
        if self.url.len() > MAX_URL_LEN {
            return Err(Error::invalid(format!(
                "'source.rtsp.url' is at most {MAX_URL_LEN} bytes"
            )));
        }
        // The message never repeats the URL: it may hold a password.
        let mut url = url::Url::parse(&self.url).map_err(|e| {
            Error::invalid(format!(
                "'source.rtsp.url' is not a URL ({e}); expected rtsp://host[:port]/path"
            ))
        })?;
        if url.scheme() != "rtsp" {
            return Err(Error::invalid(format!(
                "'source.rtsp.url' must start with rtsp:// (got '{}:'); rtsps and http \
                 tunnelling are not supported",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Error::invalid("'source.rtsp.url' has no host"));
        }
        if !url.username().is_empty() {
            let user = percent_decode(url.username());
            if self.username.as_ref().is_some_and(|u| *u != user) {
                return Err(Error::invalid(
                    "'source.rtsp.url' names a user and 'username' names another; give one",
                ));
            }
            self.username = Some(user);
        }
        if let Some(p) = url.password() {
            let p = percent_decode(p);
            if self.password.as_ref().is_some_and(|x| *x != p) {
                return Err(Error::invalid(
                    "'source.rtsp.url' holds a password and 'password' another; give one",
                ));
            }
            self.password = Some(p);
        }
        let _ = url.set_username("");
        let _ = url.set_password(None);
        self.url = url.to_string();
        for (field, v) in [("username", &self.username), ("password", &self.password)] {
            if v.as_ref().is_some_and(|v| v.len() > MAX_CREDENTIAL_LEN) {
                return Err(Error::invalid(format!(
                    "'source.rtsp.{field}' is at most {MAX_CREDENTIAL_LEN} bytes"
                )));
            }
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(Error::invalid(
                "'source.rtsp.password' needs a 'username' too",
            ));
        }
        Ok(self)
    }

    /// The URL without credentials (what the RTSP client gets).
    pub fn url(&self) -> Result<url::Url> {
        url::Url::parse(&self.url)
            .map_err(|e| Error::invalid(format!("the source URL is not a URL: {e}")))
    }

    /// Removes the password (and its URL-encoded form) from a message that came from outside
    /// (the RTSP client, the camera), in case it was ever echoed there.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        if let Some(p) = self.password.as_deref().filter(|p| !p.is_empty()) {
            out = out.replace(p, "<redacted>");
            let encoded: String = url::form_urlencoded::byte_serialize(p.as_bytes()).collect();
            out = out.replace(&encoded, "<redacted>");
        }
        out
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> SourceSpec {
        SourceSpec {
            rtsp: RtspSpec {
                url: url.into(),
                transport: Transport::Tcp,
                username: None,
                password: None,
            },
        }
    }

    #[test]
    fn credentials_move_out_of_the_url() {
        let s = spec("rtsp://admin:p%40ss@cam.local:554/Streaming/101")
            .validated()
            .unwrap();
        assert_eq!(s.rtsp.url, "rtsp://cam.local:554/Streaming/101");
        assert_eq!(s.rtsp.username.as_deref(), Some("admin"));
        assert_eq!(s.rtsp.password.as_deref(), Some("p@ss"));
        let shown = s.redacted().to_string();
        assert!(
            !shown.contains("p@ss") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!format!("{:?}", s).contains("p@ss"));
        assert_eq!(
            s.rtsp.scrub("bad p@ss and p%40ss"),
            "bad <redacted> and <redacted>"
        );
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for (url, want) in [
            ("http://cam/x", "rtsp://"),
            ("not a url", "not a URL"),
            ("rtsp://", "host"),
        ] {
            let e = spec(url).validated().unwrap_err();
            assert!(e.message.contains(want), "{url}: {}", e.message);
        }
        let e = spec("rtsp://u:hunter2@/x").validated().unwrap_err();
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        let mut s = spec("rtsp://cam/x");
        s.rtsp.password = Some("x".into());
        assert!(s.validated().is_err(), "a password without a user");
    }
}
