//! Who is on the other end of a connection, and in which order connections were accepted.
//! The accept order is the order a producer opened them: ffmpeg's segment muxers open one
//! connection per file, in file order, without waiting for responses, so the accept sequence
//! lets segment files be processed in the order they were sent even when their requests are
//! parsed in another order.

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;

static ACCEPTED: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// Position of this connection in the server's accept order.
    pub accept_seq: u64,
}

impl Connected<IncomingStream<'_, TcpListener>> for PeerInfo {
    /// Called by the accept loop, one connection at a time, in accept order.
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        PeerInfo {
            addr: *stream.remote_addr(),
            accept_seq: ACCEPTED.fetch_add(1, Ordering::SeqCst),
        }
    }
}

/// The TCP listener the server uses: accepted sockets get `TCP_NODELAY` (what HTTP servers
/// usually set), so a response's headers and body never wait on Nagle's algorithm for an ACK.
pub struct NoDelayListener(pub TcpListener);

impl axum::serve::Listener for NoDelayListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let _ = io.set_nodelay(true);
        (io, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, NoDelayListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, NoDelayListener>) -> Self {
        PeerInfo {
            addr: *stream.remote_addr(),
            accept_seq: ACCEPTED.fetch_add(1, Ordering::SeqCst),
        }
    }
}
