//! Who is on the other end of a connection, and in which order connections were accepted.
//! The accept order is the order a producer opened them: ffmpeg's segment muxers open one
//! connection per file, in file order, without waiting for responses, so the accept sequence
//! lets segment files be processed in the order they were sent even when their requests are
//! parsed in another order.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

static ACCEPTED: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// Position of this connection in the server's accept order.
    pub accept_seq: u64,
    /// Position of this request on its connection, from 0. On one connection the order of
    /// requests is fixed by the bytes, so only a connection's first request needs to wait for
    /// requests of connections opened before it.
    pub request_index: u64,
}

/// The next accept position; called by the accept loop, one connection at a time, in order.
pub fn next_accept_seq() -> u64 {
    ACCEPTED.fetch_add(1, Ordering::SeqCst)
}
