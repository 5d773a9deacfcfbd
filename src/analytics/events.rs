//! Server-sent events: `GET /api/v1/streams/{name}/events` for one stream and `GET
//! /api/v1/events` for all. Event types: `fragment` (persisted: number, producer and server
//! time, duration, keyframe, size), `session_started`, `session_ended`, `stream_deleted`.
//!
//! Fragment events of the per-stream endpoint carry `id: <fragment number>`; reconnecting with
//! `Last-Event-ID` (the header browsers' EventSource sends, or `?last_event_id=`) first replays
//! every fragment after it from the index, then continues live, so nothing is lost or repeated.
//! On the global endpoint ids are `<stream>:<number>` for reference; it does not replay (use the
//! per-stream endpoint to resume a stream without loss).

use crate::error::Result;
use crate::store::{FragmentRow, Store, StoreEvent};
use crate::timefmt::format_us;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::broadcast;

/// A comment line keeps proxies and clients from timing the connection out.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Rows replayed per index read.
const REPLAY_PAGE: u32 = 500;

fn sse(event: &str, id: Option<String>, data: &Value) -> Bytes {
    let mut s = String::new();
    if let Some(id) = id {
        s.push_str(&format!("id: {id}\n"));
    }
    s.push_str(&format!("event: {event}\ndata: {data}\n\n"));
    Bytes::from(s)
}

pub fn fragment_data(stream: &str, r: &FragmentRow) -> Value {
    let mut v = crate::ingest::fragment_json(r);
    v["stream"] = stream.into();
    v
}

/// What the events of one request are about.
#[derive(Debug, Clone)]
pub enum Scope {
    /// One stream, resuming after this fragment number.
    Stream {
        id: i64,
        name: String,
        after: Option<i64>,
    },
    All,
}

struct Events {
    store: Store,
    scope: Scope,
    rx: broadcast::Receiver<StoreEvent>,
    pending: VecDeque<Bytes>,
    /// Highest fragment number sent, per stream id: live events at or below it are replays.
    sent: HashMap<i64, i64>,
    names: HashMap<i64, String>,
    replay_from: Option<i64>,
    ended: bool,
}

/// The event stream. Subscribes before replaying, so no event falls between the two.
pub fn events(
    store: Store,
    scope: Scope,
) -> impl futures_util::Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static {
    let mut state = Events {
        rx: store.subscribe(),
        store,
        replay_from: None,
        scope,
        pending: VecDeque::new(),
        sent: HashMap::new(),
        names: HashMap::new(),
        ended: false,
    };
    if let Scope::Stream { id, name, after } = &state.scope {
        state.names.insert(*id, name.clone());
        if let Some(a) = after {
            state.sent.insert(*id, *a);
            state.replay_from = Some(*a);
        }
    }
    // The first bytes tell the client the stream is open.
    state
        .pending
        .push_back(Bytes::from_static(b": tapedeck events\n\n"));
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(b) = s.pending.pop_front() {
                return Some((Ok(b), s));
            }
            if s.ended {
                return None;
            }
            if let Err(e) = s.fill().await {
                tracing::warn!(error = %e, "event stream ended by an error");
                return None;
            }
        }
    })
}

impl Events {
    fn stream_id(&self) -> Option<i64> {
        match &self.scope {
            Scope::Stream { id, .. } => Some(*id),
            Scope::All => None,
        }
    }

    fn event_id(&self, stream: &str, number: i64) -> String {
        match self.scope {
            Scope::Stream { .. } => number.to_string(),
            Scope::All => format!("{stream}:{number}"),
        }
    }

    async fn name(&mut self, stream_id: i64) -> Result<Option<String>> {
        if let Some(n) = self.names.get(&stream_id) {
            return Ok(Some(n.clone()));
        }
        let n = self.store.stream_name(stream_id).await?;
        if let Some(n) = &n {
            self.names.insert(stream_id, n.clone());
        }
        Ok(n)
    }

    fn push_fragment(&mut self, name: &str, r: &FragmentRow) {
        let last = self.sent.entry(r.stream_id).or_insert(0);
        if r.number <= *last {
            return;
        }
        *last = r.number;
        let id = self.event_id(name, r.number);
        self.pending
            .push_back(sse("fragment", Some(id), &fragment_data(name, r)));
    }

    /// Queues the next events: replayed ones first, then live ones (or a keepalive).
    async fn fill(&mut self) -> Result<()> {
        if let (Some(from), Some(stream_id)) = (self.replay_from, self.stream_id()) {
            let rows = self
                .store
                .fragments_from_number(stream_id, from + 1, i64::MAX, REPLAY_PAGE)
                .await?;
            self.replay_from = (rows.len() == REPLAY_PAGE as usize)
                .then(|| rows.last().map_or(from, |r| r.number));
            let name = self.name(stream_id).await?.unwrap_or_default();
            for r in &rows {
                self.push_fragment(&name, r);
            }
            return Ok(());
        }
        let ev = match tokio::time::timeout(KEEPALIVE, self.rx.recv()).await {
            Err(_) => {
                self.pending
                    .push_back(Bytes::from_static(b": keepalive\n\n"));
                return Ok(());
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                self.ended = true;
                return Ok(());
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                // Too slow for the live buffer: replay the gap from the index.
                if let Some(stream_id) = self.stream_id() {
                    self.replay_from = Some(self.sent.get(&stream_id).copied().unwrap_or(0));
                }
                return Ok(());
            }
            Ok(Ok(ev)) => ev,
        };
        let wanted = |id: i64| self.stream_id().is_none_or(|s| s == id);
        match ev {
            StoreEvent::FragmentPersisted(r) if wanted(r.stream_id) => {
                if let Some(name) = self.name(r.stream_id).await? {
                    self.push_fragment(&name, &r);
                }
            }
            StoreEvent::SessionStarted {
                stream_id,
                session_id,
                kind,
                remote,
                started_us,
            } if wanted(stream_id) => {
                if let Some(name) = self.name(stream_id).await? {
                    let data = json!({"stream": name, "session": session_id, "kind": kind, "remote": remote, "started": format_us(started_us)});
                    self.pending.push_back(sse("session_started", None, &data));
                }
            }
            StoreEvent::SessionEnded {
                stream_id,
                session_id,
                reason,
                ended_us,
            } if wanted(stream_id) => {
                if let Some(name) = self.name(stream_id).await? {
                    let data = json!({"stream": name, "session": session_id, "reason": reason, "ended": format_us(ended_us)});
                    self.pending.push_back(sse("session_ended", None, &data));
                }
            }
            StoreEvent::StreamDeleted { stream_id } if wanted(stream_id) => {
                let name = self.names.get(&stream_id).cloned().unwrap_or_default();
                self.pending
                    .push_back(sse("stream_deleted", None, &json!({"stream": name})));
                if self.stream_id().is_some() {
                    self.ended = true;
                }
                self.names.remove(&stream_id);
            }
            _ => {}
        }
        Ok(())
    }
}
