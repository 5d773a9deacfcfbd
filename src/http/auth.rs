//! Who may do what: API keys with a role and stream patterns (`[auth] keys`), and playback
//! tokens (HMAC-signed, expiring, for one stream) that let a plain `<video src>` or VLC play
//! with a single URL.
//!
//! One middleware decides every request before its handler runs, from the method and the route
//! the router matched ([`classify`]): `/healthz`, the UI and the OpenAPI document are open; `/metrics`,
//! stream create/update/delete, holds changes, retention and the all-streams event feed are for
//! admins; ingest is for producers of the stream; reads and playback are for viewers of the
//! stream, or for anyone with a valid playback token for it (`?token=`). Stream lists are
//! filtered to the key's streams. With no keys configured nothing is checked (only allowed on
//! loopback, see [`check_exposure`]).
//!
//! Keys arrive as `Authorization: Bearer <key>` or HTTP Basic (the password is the key; the
//! user name is ignored, or is the key when the password is empty). Keys are held only as
//! SHA-256 digests and compared in constant time (`subtle`); tokens are HMAC-SHA256 (`hmac`)
//! under a secret from the config or, without one, from the OS (`getrandom`). Expiry is read
//! from the server's injectable clock.

use super::params;
use super::route::{Matched, RouteKind};
use super::AppState;
use crate::clock::SharedClock;
use crate::config::{AuthConfig, Config, Role};
use crate::error::{Error, Kind, Result};
use crate::stream_name::validate_stream_name;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, request::Parts, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation for token signatures (a token can never be mistaken for another MAC).
const TOKEN_CONTEXT: &[u8] = b"tapedeck playback token v1|";

struct Key {
    digest: [u8; 32],
    role: Role,
    /// Empty: every stream.
    streams: Vec<String>,
    label: String,
}

impl Key {
    fn covers(&self, stream: &str) -> bool {
        self.streams.is_empty() || self.streams.iter().any(|p| glob_match(p, stream))
    }

    fn describe(&self) -> String {
        let role = match self.role {
            Role::Admin => "admin",
            Role::Producer => "producer",
            Role::Viewer => "viewer",
        };
        if self.streams.is_empty() {
            format!("key {} (role {role})", self.label)
        } else {
            format!(
                "key {} (role {role}, streams {})",
                self.label,
                self.streams.join(", ")
            )
        }
    }
}

/// The keys and the token secret, built once per server from `[auth]`.
pub struct Auth {
    keys: Vec<Key>,
    /// Refused producers, logged at most once per peer and reason per window.
    refusals: super::refusal_log::RefusalLog,
    secret: Vec<u8>,
    default_secs: u64,
    max_secs: u64,
    /// Token expiry is judged, and set, by this clock (the store's).
    clock: SharedClock,
}

/// What a request needs, decided from its method and route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    Open,
    Admin,
    /// The stream list: any key; the answer is filtered to the key's streams.
    List,
    /// Describe: viewers and producers of the stream (and playback tokens for it).
    Describe(String),
    /// A read of the stream's media or index: viewers (and playback tokens for it).
    Read(String),
    /// Ingest: producers of the stream.
    Ingest(String),
    /// Creating a playback token: viewers of the stream.
    MintToken(String),
}

/// A verified playback token on this request, carried into the playlists it generates.
#[derive(Clone, Debug)]
pub struct PlaybackToken(pub String);

/// The query to append to every URI of a playlist: `?token=...` when the request came with a
/// valid playback token, else empty.
pub struct PlaybackQuery(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PlaybackQuery {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PlaybackQuery(
            parts
                .extensions
                .get::<PlaybackToken>()
                .map(|t| format!("?token={}", t.0))
                .unwrap_or_default(),
        ))
    }
}

impl Auth {
    pub fn new(config: &AuthConfig, clock: SharedClock) -> Auth {
        let keys = config
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| Key {
                digest: match (&k.key, &k.key_sha256) {
                    (Some(key), _) => Sha256::digest(key.as_bytes()).into(),
                    (None, Some(hex)) => parse_hex32(hex).unwrap_or([0; 32]),
                    // Refused by `AuthConfig::validate`; a digest no key hashes to.
                    (None, None) => [0; 32],
                },
                role: k.role,
                streams: if k.streams.iter().any(|p| p == "*") {
                    Vec::new()
                } else {
                    k.streams.clone()
                },
                label: k.name.clone().unwrap_or_else(|| format!("#{}", i + 1)),
            })
            .collect::<Vec<_>>();
        let secret = match &config.token_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                if !keys.is_empty() {
                    tracing::warn!(
                        "auth.token_secret is not set: playback tokens are signed with a random \
                         key made at startup and stop working when tapedeck restarts"
                    );
                }
                random_secret()
            }
        };
        Auth {
            keys,
            refusals: Default::default(),
            secret,
            default_secs: config.token_default_secs.min(config.token_max_secs),
            max_secs: config.token_max_secs,
            clock,
        }
    }

    /// Now, in Unix milliseconds (0 before the epoch).
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now_us() / 1000).unwrap_or(0)
    }

    /// Whether requests are checked at all (keys are configured).
    pub fn enforced(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The key these headers present: `Ok(None)` when there are none, 401 when they name no key.
    fn key_of(&self, headers: &HeaderMap) -> Result<Option<&Key>> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let unauth = |m: &str| Error::new(Kind::Unauthenticated, m);
        let value = value
            .to_str()
            .map_err(|_| unauth("unreadable Authorization header"))?;
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let presented: Vec<u8> = if scheme.eq_ignore_ascii_case("bearer") {
            rest.trim().as_bytes().to_vec()
        } else if scheme.eq_ignore_ascii_case("basic") {
            let raw = STANDARD
                .decode(rest.trim())
                .map_err(|_| unauth("malformed Basic credentials"))?;
            match raw.iter().position(|&b| b == b':') {
                // `curl -u KEY:` puts the key in the user name.
                Some(i) if i + 1 == raw.len() => raw[..i].to_vec(),
                Some(i) => raw[i + 1..].to_vec(),
                None => raw,
            }
        } else {
            return Err(unauth(
                "unsupported Authorization scheme; use 'Bearer <key>' or Basic with the key as password",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(&presented).into();
        // Every key is compared (no early exit), each comparison in constant time.
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.digest.ct_eq(&digest)) && found.is_none() {
                found = Some(k);
            }
        }
        found.map(Some).ok_or_else(|| unauth("unknown API key"))
    }

    /// Signs a token for `stream` valid until `expires_ms` (Unix milliseconds).
    pub fn sign(&self, stream: &str, expires_ms: u64) -> String {
        let payload = format!("{stream}|{expires_ms}");
        let mac = self.mac(payload.as_bytes()).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The MAC of `TOKEN_CONTEXT` followed by the payload.
    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any size");
        mac.update(TOKEN_CONTEXT);
        mac.update(payload);
        mac
    }

    /// Checks a token against the stream it is used on; 403 naming why when it is no good.
    pub fn verify(&self, token: &str, stream: &str, now_ms: u64) -> Result<()> {
        let denied = |m: String| Error::new(Kind::PermissionDenied, m);
        let forged = || denied("invalid playback token (not issued by this server)".into());
        let (payload, mac) = token.split_once('.').ok_or_else(forged)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| forged())?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| forged())?;
        // `verify_slice` compares in constant time.
        if self.mac(&payload).verify_slice(&mac).is_err() {
            return Err(forged());
        }
        let payload = String::from_utf8(payload).map_err(|_| forged())?;
        let (token_stream, expires) = payload.rsplit_once('|').ok_or_else(forged)?;
        let expires: u64 = expires.parse().map_err(|_| forged())?;
        if token_stream != stream {
            return Err(denied(format!(
                "this playback token is for stream '{token_stream}', not '{stream}'"
            )));
        }
        if now_ms >= expires {
            return Err(denied(format!(
                "this playback token expired at {}; ask for a new one",
                crate::timefmt::format_us(expires as i64 * 1000)
            )));
        }
        Ok(())
    }

    /// Decides a request. `Ok` carries a verified playback token to pass on and, for lists,
    /// the key whose streams the answer is filtered to.
    fn decide(
        &self,
        need: &Need,
        headers: &HeaderMap,
        token: Option<&str>,
    ) -> Result<(Option<PlaybackToken>, Option<&Key>)> {
        if *need == Need::Open {
            return Ok((None, None));
        }
        // A token applies to reads of its own stream only.
        let token_check = match (need, token) {
            (Need::Read(s) | Need::Describe(s), Some(t)) => Some(
                self.verify(t, s, self.now_ms())
                    .map(|()| PlaybackToken(t.to_string())),
            ),
            _ => None,
        };
        if !self.enforced() {
            return Ok((token_check.and_then(|r| r.ok()), None));
        }
        let key = match self.key_of(headers) {
            Ok(k) => k,
            // Stale credentials beside a good token: the token decides.
            Err(e) => match token_check {
                Some(Ok(t)) => return Ok((Some(t), None)),
                _ => return Err(e),
            },
        };
        let Some(key) = key else {
            return match token_check {
                Some(r) => r.map(|t| (Some(t), None)),
                None => Err(Error::new(
                    Kind::Unauthenticated,
                    "an API key is required: send 'Authorization: Bearer <key>' or HTTP Basic \
                     credentials with the key as password (or use a playback token)",
                )),
            };
        };
        let allowed = match (key.role, need) {
            (_, Need::Open) => true,
            (Role::Admin, _) => true,
            (_, Need::Admin) => false,
            (_, Need::List) => true,
            (Role::Producer, Need::Ingest(s) | Need::Describe(s)) => key.covers(s),
            (Role::Viewer, Need::Read(s) | Need::Describe(s) | Need::MintToken(s)) => key.covers(s),
            _ => false,
        };
        let token = token_check.and_then(|r| r.ok());
        if allowed {
            let filter = (*need == Need::List && key.role != Role::Admin).then_some(key);
            return Ok((token, filter));
        }
        if let Some(t) = token {
            return Ok((Some(t), None));
        }
        Err(Error::new(
            Kind::PermissionDenied,
            format!("{} may not {}", key.describe(), need.what()),
        ))
    }
}

impl Need {
    fn what(&self) -> String {
        match self {
            Need::Open | Need::List => "do this".into(),
            Need::Admin => "do this (admin only)".into(),
            Need::Describe(s) => format!("describe stream '{s}'"),
            Need::Read(s) => format!("read stream '{s}'"),
            Need::Ingest(s) => format!("ingest into stream '{s}'"),
            Need::MintToken(s) => format!("create playback tokens for stream '{s}'"),
        }
    }
}

/// What a request needs, from its method and the route it matched. A path under `/api/v1` that
/// no route takes is for admins (everyone else learns nothing from it), and so is any route
/// or method not placed here: a new route is closed until it is given a place.
/// A stream route whose `{name}` does not decode is for admins too (no handler takes it).
pub fn classify(method: &Method, route: &Matched) -> Need {
    use RouteKind as K;
    let read = method == Method::GET || method == Method::HEAD;
    let of_stream = |need: fn(String) -> Need| route.stream.clone().map_or(Need::Admin, need);
    match route.kind {
        K::Health | K::Ready | K::UiPage | K::UiAsset | K::Unknown => Need::Open,
        K::Metrics | K::AllEvents | K::Retention | K::RetentionSweep => Need::Admin,
        // A mistyped API path: any valid key gets the 404 that names the route meant (it tells
        // only what the OpenAPI document already does), so a viewer's typo is not a 403.
        K::UnknownApi => Need::List,
        K::OpenApi if read => Need::Open,
        K::Streams if read => Need::List,
        K::OpenApi | K::Streams => Need::Admin,
        K::Stream if read => of_stream(Need::Describe),
        K::Ingest | K::IngestFile => of_stream(Need::Ingest),
        K::PlaybackTokens => of_stream(Need::MintToken),
        // Reads of the stream's media and index.
        K::Sessions
        | K::Fragments
        | K::Fragment
        | K::Init
        | K::Timeline
        | K::Holds
        | K::Hold
        | K::Follow
        | K::StreamEvents
        | K::Clip
        | K::FrameJpg
        | K::FramePng
        | K::LatestJpg
        | K::Frames
        | K::HlsInit
        | K::HlsSegment
        | K::HlsPart
        | K::MasterPlaylist
        | K::LivePlaylist
        | K::ArchivePlaylist
            if read =>
        {
            of_stream(Need::Read)
        }
        // Changes to a stream (update, delete, holds): admins.
        _ => Need::Admin,
    }
}

/// The header that marks a request as the web UI's own (`X-Requested-With: tapedeck-ui`; any
/// value counts, as for the XMLHttpRequest convention it follows). Its 401s carry no
/// `WWW-Authenticate`, so the browser does not raise its Basic login dialog over the page's
/// own key form.
const REQUESTED_WITH: &str = "x-requested-with";

/// The middleware: decides, then runs the handler (filtering stream lists for non-admins).
pub async fn middleware(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let need = match req.extensions().get::<Matched>() {
        Some(route) => classify(req.method(), route),
        // Not attached: a router built without route::attach; closed rather than open.
        None => Need::Admin,
    };
    let token = req.uri().query().and_then(|q| query_param(q, "token"));
    let from_script = req.headers().contains_key(REQUESTED_WITH);
    let (token, filter) = match auth.decide(&need, req.headers(), token.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(%path, method = %req.method(), error = %e, "request refused");
            if let Need::Ingest(stream) = &need {
                auth.log_refused_producer(&req, stream, &e);
            }
            return without_challenge_if(from_script, e.into_response());
        }
    };
    if let Some(t) = token {
        req.extensions_mut().insert(t);
    }
    req.extensions_mut().insert(auth.clone());
    let resp = next.run(req).await;
    let resp = match filter {
        Some(key) if resp.status().is_success() => filter_list(resp, key).await,
        _ => resp,
    };
    without_challenge_if(from_script, resp)
}

/// Drops the Basic challenge from a script's 401 (see [`REQUESTED_WITH`]); producers and
/// players, which send no such header, keep it (ffmpeg and curl answer it with the
/// credentials from the URL).
fn without_challenge_if(from_script: bool, mut resp: Response) -> Response {
    if from_script {
        resp.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    resp
}

impl Auth {
    /// Logs a refused ingest (see refusal_log.rs). A request without credentials that asked
    /// for `100 Continue` is how ffmpeg learns the auth scheme before sending credentials from
    /// its URL: the challenge is the normal first step there, not a refusal worth a warning.
    fn log_refused_producer(&self, req: &Request, stream: &str, e: &Error) {
        let probing = e.kind == Kind::Unauthenticated
            && !req.headers().contains_key(header::AUTHORIZATION)
            && req
                .headers()
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<super::PeerInfo>>()
            .map(|c| c.0.addr.ip());
        if probing {
            tracing::debug!(
                stream,
                ?peer,
                "ingest challenged for credentials (Expect: 100-continue)"
            );
            return;
        }
        self.refusals
            .refused(peer, stream, e.kind.code(), &e.message);
    }
}

/// Keeps only the key's streams in a stream-list answer (`next` still pages the full list).
async fn filter_list(resp: Response, key: &Key) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return Error::internal("stream list too large to filter").into_response();
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Error::internal("stream list is not JSON").into_response();
    };
    if let Some(list) = v.get_mut("streams").and_then(|s| s.as_array_mut()) {
        list.retain(|s| s["name"].as_str().is_some_and(|n| key.covers(n)));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(v.to_string()))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    expires_in: Option<u64>,
}

/// `POST /api/v1/streams/{name}/playback-tokens {"expires_in": secs}`.
pub async fn create_token(
    State(state): State<AppState>,
    Extension(auth): Extension<Arc<Auth>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    validate_stream_name(&name)?;
    let req: TokenRequest = if body.iter().all(|b| b.is_ascii_whitespace()) {
        TokenRequest { expires_in: None }
    } else {
        params::json_body(&body)?
    };
    let secs = req.expires_in.unwrap_or(auth.default_secs);
    if secs == 0 || secs > auth.max_secs {
        return Err(Error::invalid(format!(
            "'expires_in' must be between 1 and {} seconds (auth.token_max_secs); got {secs}",
            auth.max_secs
        )));
    }
    state.store.require_stream(&name).await?;
    let expires_ms = auth.now_ms() + secs * 1000;
    let token = auth.sign(&name, expires_ms);
    Ok((
        axum::http::StatusCode::CREATED,
        Json(serde_json::json!({
            "stream": name,
            "expires": crate::timefmt::format_us(expires_ms as i64 * 1000),
            "query": format!("token={token}"),
            "token": token,
        })),
    )
        .into_response())
}

/// Refuses a configuration that would serve without keys on a non-loopback address.
pub fn check_exposure(config: &Config) -> Result<()> {
    if !config.auth.keys.is_empty() || config.auth.insecure {
        return Ok(());
    }
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = match config.listen.to_socket_addrs() {
        Ok(a) => a.collect(),
        // Binding will fail with its own message.
        Err(_) => return Ok(()),
    };
    if !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()) {
        return Ok(());
    }
    Err(Error::precondition(format!(
        "refusing to listen on {} without API keys: anyone who can reach it could watch, change \
         and delete the recordings. Add keys to the config file, e.g.\n\n\
         [auth]\n\
         keys = [\n  {{ key_sha256 = \"<output of: printf %s YOUR_KEY | sha256sum>\", role = \"admin\" }},\n  \
         {{ key = \"another-long-random-key\", role = \"producer\", streams = [\"cam*\"] }},\n]\n\n\
         or listen on a loopback address (127.0.0.1), or pass --insecure (auth.insecure = true) \
         to serve without authentication anyway",
        config.listen
    )))
}

/// Bytes of the token secret drawn when the config sets none: HMAC-SHA256's block-sized key
/// is longer than needed; 32 bytes is the hash's own strength.
const RANDOM_SECRET_BYTES: usize = 32;

/// A token secret from the OS. Without the OS's random source there is no safe secret, and
/// tokens signed without one could be forged: the server does not start.
fn random_secret() -> Vec<u8> {
    let mut buf = vec![0u8; RANDOM_SECRET_BYTES];
    getrandom::fill(&mut buf).expect("the OS random source is unavailable");
    buf
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// One parameter of a query string, form-decoded (`+` is a space); empty when its value does
/// not decode to UTF-8.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8()
                .map(|s| s.into_owned())
                .unwrap_or_default()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SimulatedClock;
    use crate::http::route::matched_for_test;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(msg);
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn hmac_matches_rfc4231() {
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    /// Tokens signed before the move to the `hmac` crate still verify: the same bytes are
    /// signed the same way (this value is from an independent HMAC implementation).
    #[test]
    fn token_text_is_stable() {
        let auth = Auth::new(
            &AuthConfig {
                token_secret: Some("0123456789abcdef".into()),
                ..AuthConfig::default()
            },
            Arc::new(SimulatedClock::new(0)),
        );
        assert_eq!(
            auth.sign("cam1", 10_000),
            "Y2FtMXwxMDAwMA.izOoDwoGVt9Jzs62BoMMbKc_PpxKqXdyeMbJtSwrAPk"
        );
    }

    /// Expiry is judged by the server's clock, not the system's.
    #[test]
    fn expiry_reads_the_injected_clock() {
        let clock = Arc::new(SimulatedClock::new(9_000_000));
        let auth = Auth::new(
            &AuthConfig {
                token_secret: Some("0123456789abcdef".into()),
                ..AuthConfig::default()
            },
            clock.clone(),
        );
        let t = auth.sign("cam1", 10_000);
        let need = Need::Read("cam1".into());
        assert!(auth
            .decide(&need, &HeaderMap::new(), Some(&t))
            .unwrap()
            .0
            .is_some());
        clock.advance_us(1_000_000);
        assert!(auth
            .decide(&need, &HeaderMap::new(), Some(&t))
            .unwrap()
            .0
            .is_none());
    }

    #[test]
    fn query_params_are_form_decoded() {
        assert_eq!(
            query_param("a=1&token=x%2Fy+z", "token").as_deref(),
            Some("x/y z")
        );
        assert_eq!(query_param("token=%ff", "token").as_deref(), Some(""));
        assert_eq!(query_param("tokens=1", "token"), None);
    }

    #[test]
    fn globs() {
        assert!(glob_match("cam*", "cam1"));
        assert!(glob_match("cam*", "cam"));
        assert!(!glob_match("cam*", "lobby"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*b*c", "aXXbYbZc"));
        assert!(!glob_match("a*b*c", "aXXbYbZ"));
        assert!(glob_match("lobby", "lobby"));
        assert!(!glob_match("lobby", "lobby2"));
        assert!(glob_match("*-door", "front-door"));
    }

    #[test]
    fn classifies() {
        let g = Method::GET;
        let s = |n: &str| n.to_string();
        let classify = |m: &Method, path: &str| classify(m, &matched_for_test(path));
        assert_eq!(classify(&g, "/healthz"), Need::Open);
        assert_eq!(classify(&g, "/"), Need::Open);
        assert_eq!(classify(&g, "/metrics"), Need::Admin);
        assert_eq!(classify(&g, "/api/v1/streams"), Need::List);
        assert_eq!(classify(&g, "/api/v1/openapi.json"), Need::Open);
        assert_eq!(classify(&Method::POST, "/api/v1/streams"), Need::Admin);
        assert_eq!(classify(&g, "/api/v1/streams/a"), Need::Describe(s("a")));
        assert_eq!(classify(&Method::PATCH, "/api/v1/streams/a"), Need::Admin);
        assert_eq!(
            classify(&Method::PUT, "/api/v1/streams/a/ingest/x.m4s"),
            Need::Ingest(s("a"))
        );
        assert_eq!(
            classify(&g, "/api/v1/streams/%63am/hls/live.m3u8"),
            Need::Read(s("cam"))
        );
        assert_eq!(
            classify(&Method::POST, "/api/v1/streams/a/holds"),
            Need::Admin
        );
        assert_eq!(classify(&g, "/api/v1/events"), Need::Admin);
        assert_eq!(
            classify(&Method::POST, "/api/v1/retention/sweep"),
            Need::Admin
        );
    }

    /// Methods a route does not take, paths no route takes, and names that do not decode.
    #[test]
    fn classifies_what_no_handler_takes() {
        let classify = |m: &Method, path: &str| classify(m, &matched_for_test(path));
        let s = |n: &str| n.to_string();
        assert_eq!(
            classify(&Method::DELETE, "/api/v1/streams/a/hls/live.m3u8"),
            Need::Admin
        );
        assert_eq!(
            classify(&Method::GET, "/api/v1/streams/a/ingest"),
            Need::Ingest(s("a"))
        );
        assert_eq!(
            classify(&Method::HEAD, "/api/v1/streams/a/holds"),
            Need::Read(s("a"))
        );
        assert_eq!(classify(&Method::GET, "/api/v1/streams/%ff"), Need::Admin);
        assert_eq!(classify(&Method::GET, "/api/v1/nope"), Need::List);
        assert_eq!(classify(&Method::POST, "/metrics"), Need::Admin);
        assert_eq!(classify(&Method::GET, "/favicon.ico"), Need::Open);
    }

    #[test]
    fn tokens_verify() {
        let auth = Auth::new(
            &AuthConfig {
                token_secret: Some("0123456789abcdef".into()),
                ..AuthConfig::default()
            },
            Arc::new(SimulatedClock::new(0)),
        );
        let t = auth.sign("cam1", 10_000);
        auth.verify(&t, "cam1", 9_999).unwrap();
        assert_eq!(
            auth.verify(&t, "cam1", 10_000).unwrap_err().kind,
            Kind::PermissionDenied
        );
        assert!(auth.verify(&t, "cam2", 0).is_err());
        let mut forged = t.clone().into_bytes();
        forged[2] ^= 1;
        assert!(auth
            .verify(&String::from_utf8(forged).unwrap(), "cam1", 0)
            .is_err());
        // The stream cannot be changed without the signature noticing.
        let (_, mac) = t.split_once('.').unwrap();
        let other = format!("{}.{mac}", URL_SAFE_NO_PAD.encode("cam2|10000"));
        assert!(auth.verify(&other, "cam2", 0).is_err());
    }
}
