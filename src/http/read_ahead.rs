//! Connection I/O that never answers into a socket whose unread requests an answer would
//! destroy.
//!
//! ffmpeg's segment muxers with `-http_persistent 1` pipeline every file as a chunked PUT on one
//! connection, never read a response, and close the socket when done. If the server writes an
//! answer after that close, the client's kernel resets the connection, and the reset makes the
//! server's kernel discard every byte it had received but the server had not read yet: the
//! requests still queued behind the answered one are lost although they were sent whole.
//!
//! So each connection gets two helpers beside hyper. A reader drains the socket into memory as
//! fast as bytes arrive (up to [`READ_AHEAD_BYTES`]; beyond it the socket is not read, which is
//! TCP backpressure). A writer holds the server's answers back while the reader is behind, i.e.
//! while the kernel may still hold unread client bytes: answers go out once the reader has
//! caught up (the socket had nothing more to read) or has seen the client's end. A client that
//! reads its answers (and so does not close early) is never slowed: its reader is caught up
//! whenever an answer is ready. Held answers are bounded too ([`HELD_BYTES`]); past that they
//! are written anyway, so a full read buffer and a full answer buffer can never wait on each
//! other.

use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Bytes read from a client ahead of hyper. Safety does not depend on it (answers wait while
/// the client may have unread bytes, however many); it only sets how much of a burst is taken
/// in at once. Kept near hyper's own buffer size, so a thousand connections stay cheap (with
/// 256 KiB for both buffers, a 5-minute soak of 75 connections held about 58 MB more).
pub const READ_AHEAD_BYTES: usize = 64 * 1024;
/// Largest single read into the read-ahead buffer.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Answer bytes held back at most; past this the writer sends anyway, and hyper waits for it.
pub const HELD_BYTES: usize = 64 * 1024;

/// Once hyper is done with a connection, a client whose receive window stays shut this long is
/// gone: the writer gives up, so a connection nobody reads cannot hold its buffers forever.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Default)]
struct State {
    /// Read from the socket, not yet taken by hyper.
    incoming: BytesMut,
    /// The client's end was seen (or the read failed): nothing more will come.
    read_done: bool,
    read_error: Option<io::Error>,
    /// The last read found the socket empty (and there was room to read more).
    caught_up: bool,
    /// Written by hyper, not yet sent.
    outgoing: BytesMut,
    /// hyper asked for the write side to be shut down once `outgoing` is sent.
    shutdown: bool,
    /// Sending failed (the client reset the connection); later answers are dropped.
    write_error: Option<io::ErrorKind>,
    write_done: bool,
    /// The writer holds a chunk taken from `outgoing` that is not all sent yet.
    sending: bool,
    /// Answers in progress whose client reads them as they come (an upload asking for NDJSON
    /// acks): while any is, nothing is held back, since holding acks until the client has
    /// finished sending defeats them.
    prompt_answers: usize,
    hyper_read: Option<Waker>,
    hyper_write: Option<Waker>,
}

struct Shared {
    /// Read only by the reader; written by the writer, or by hyper's own write directly when
    /// nothing is held (see [`ReadAhead::take`]).
    stream: TcpStream,
    state: Mutex<State>,
    /// Wakes the reader: room in `incoming`.
    room: Notify,
    /// Wakes the writer: something to send, or the reader caught up.
    send: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain buffers behind: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The connection's I/O as hyper sees it.
pub struct ReadAhead {
    shared: Arc<Shared>,
    reader: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    pub fn new(stream: TcpStream) -> ReadAhead {
        let shared = Arc::new(Shared {
            stream,
            state: Mutex::new(State::default()),
            room: Notify::new(),
            send: Notify::new(),
        });
        let reader = tokio::spawn(read_loop(shared.clone()));
        // The writer outlives hyper's side: it sends what was handed over, then ends.
        tokio::spawn(write_loop(shared.clone()));
        ReadAhead { shared, reader }
    }
}

/// Lets a handler say that its answer is read while the request is still being sent.
#[derive(Clone)]
pub struct PromptAnswers(Arc<Shared>);

/// Answers go out at once while this lives (see [`PromptAnswers`]).
pub struct PromptGuard(Arc<Shared>);

impl PromptAnswers {
    pub fn hold(&self) -> PromptGuard {
        self.0.lock().prompt_answers += 1;
        self.0.send.notify_one();
        PromptGuard(self.0.clone())
    }
}

impl Drop for PromptGuard {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.prompt_answers = st.prompt_answers.saturating_sub(1);
    }
}

impl ReadAhead {
    /// The handle a request's handler gets (as a request extension) to send its answer at once.
    pub fn prompt_answers(&self) -> PromptAnswers {
        PromptAnswers(self.shared.clone())
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.reader.abort();
        // The writer finishes sending what hyper handed over, then ends (it sees the shutdown).
        self.shared.lock().shutdown = true;
        self.shared.send.notify_one();
    }
}

async fn read_loop(shared: Arc<Shared>) {
    loop {
        // Wait for room.
        loop {
            let room = shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if shared.lock().incoming.len() < READ_AHEAD_BYTES {
                break;
            }
            room.await;
        }
        let result = {
            let mut st = shared.lock();
            // Grow only as far as a burst needs; most connections read small requests.
            let want = READ_AHEAD_BYTES - st.incoming.len();
            st.incoming.reserve(want.min(READ_CHUNK_BYTES));
            let r = shared.stream.try_read_buf(&mut st.incoming);
            match &r {
                Ok(0) => st.read_done = true,
                Ok(_) => st.caught_up = false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    st.caught_up = st.incoming.len() < READ_AHEAD_BYTES;
                    // An idle connection keeps no buffer grown by a burst.
                    if st.incoming.is_empty() && st.incoming.capacity() > READ_CHUNK_BYTES {
                        st.incoming = BytesMut::new();
                    }
                }
                Err(e) => {
                    st.read_error = Some(io::Error::new(e.kind(), e.to_string()));
                    st.read_done = true;
                }
            }
            if let Some(w) = st.hyper_read.take() {
                w.wake();
            }
            r
        };
        match result {
            Ok(0) => {
                shared.send.notify_one();
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                shared.send.notify_one();
                if shared.stream.readable().await.is_err() {
                    let mut st = shared.lock();
                    st.read_done = true;
                    if let Some(w) = st.hyper_read.take() {
                        w.wake();
                    }
                    drop(st);
                    shared.send.notify_one();
                    return;
                }
            }
            Err(_) => {
                shared.send.notify_one();
                return;
            }
        }
    }
}

/// Sends all of `chunk`, waiting for the socket as needed.
async fn send_all(stream: &TcpStream, mut chunk: &[u8]) -> io::Result<()> {
    while !chunk.is_empty() {
        stream.writable().await?;
        match stream.try_write(chunk) {
            Ok(n) => chunk = &chunk[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_loop(shared: Arc<Shared>) {
    let write_half = &shared.stream;
    loop {
        let send = shared.send.notified();
        tokio::pin!(send);
        send.as_mut().enable();
        let (chunk, shutdown, orphaned) = {
            let mut st = shared.lock();
            let may_send = st.caught_up
                || st.read_done
                || st.prompt_answers > 0
                || st.outgoing.len() >= HELD_BYTES;
            if !st.outgoing.is_empty() && (may_send || st.shutdown) {
                let chunk = st.outgoing.split().freeze();
                st.sending = true;
                if let Some(w) = st.hyper_write.take() {
                    w.wake();
                }
                (Some(chunk), false, st.shutdown)
            } else {
                (None, st.shutdown && st.outgoing.is_empty(), st.shutdown)
            }
        };
        if let Some(chunk) = chunk {
            // While hyper runs, a client that pauses reading (a paused video) just waits, as
            // it would without this layer; once hyper is done, nobody else would end it.
            let written = if orphaned {
                tokio::time::timeout(WRITE_TIMEOUT, send_all(write_half, &chunk))
                    .await
                    .unwrap_or_else(|_| {
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client read nothing for too long",
                        ))
                    })
            } else {
                send_all(write_half, &chunk).await
            };
            shared.lock().sending = false;
            if let Err(e) = written {
                let mut st = shared.lock();
                st.write_error = Some(e.kind());
                st.write_done = true;
                if let Some(w) = st.hyper_write.take() {
                    w.wake();
                }
                return;
            }
            continue;
        }
        if shutdown {
            let _ = socket2::SockRef::from(write_half).shutdown(std::net::Shutdown::Write);
            let mut st = shared.lock();
            st.write_done = true;
            if let Some(w) = st.hyper_write.take() {
                w.wake();
            }
            return;
        }
        send.await;
    }
}

impl ReadAhead {
    /// Takes what fits of `bufs` for the writer: at most [`HELD_BYTES`] wait in `outgoing`, so
    /// a connection holds a bounded copy of its answer, however large the chunks hyper has.
    fn take(&self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut st = self.shared.lock();
        if st.write_error.is_some() {
            // The client is gone, but requests it sent whole may still wait in `incoming`:
            // hyper must go on reading and processing them, so answers are dropped, not failed.
            return Poll::Ready(Ok(total));
        }
        // Nothing held and nothing to hold back for: straight into the socket, with no copy
        // and no hop through the writer task (a follower of a live stream, a player).
        let may_send = st.caught_up || st.read_done || st.prompt_answers > 0;
        if may_send && st.outgoing.is_empty() && !st.sending {
            match self.shared.stream.try_write_vectored(bufs) {
                Ok(n) if n > 0 || total == 0 => return Poll::Ready(Ok(n)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // Like a failed send of the writer: the client is gone; answers dropped.
                    st.write_error = Some(e.kind());
                    return Poll::Ready(Ok(total));
                }
            }
        }
        // Past the held bound the writer sends regardless; hyper waits only for the socket.
        let room = HELD_BYTES.saturating_sub(st.outgoing.len());
        if room == 0 {
            st.hyper_write = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut taken = 0;
        for b in bufs {
            let n = b.len().min(room - taken);
            st.outgoing.extend_from_slice(&b[..n]);
            taken += n;
            if taken == room {
                break;
            }
        }
        drop(st);
        self.shared.send.notify_one();
        Poll::Ready(Ok(taken))
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        if !st.incoming.is_empty() {
            let n = st.incoming.len().min(buf.remaining());
            buf.put_slice(&st.incoming[..n]);
            let was_full = st.incoming.len() >= READ_AHEAD_BYTES;
            st.incoming.advance(n);
            drop(st);
            if was_full {
                self.shared.room.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        if st.read_done {
            return Poll::Ready(match st.read_error.take() {
                Some(e) => Err(e),
                None => Ok(()),
            });
        }
        st.hyper_read = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for ReadAhead {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.take(cx, &[io::IoSlice::new(data)])
    }

    /// hyper hands its queued body chunks over as they are (shared `Bytes`) instead of first
    /// copying each whole into one buffer of its own, which it does for I/O without vectored
    /// writes: a thousand followers of a live stream each held their own copy of every
    /// fragment that way.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.take(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Handed to the writer counts as flushed: it sends as soon as that cannot cost the
    /// client's unread requests (see the module doc). Waiting here instead would keep hyper
    /// from reading the very requests the writer waits for.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        if st.write_done {
            return Poll::Ready(Ok(()));
        }
        st.shutdown = true;
        st.hyper_write = Some(cx.waker().clone());
        drop(st);
        self.shared.send.notify_one();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, ReadAhead) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, ReadAhead::new(server))
    }

    /// The client sends more than the read-ahead holds and closes without reading; the server
    /// answers after every request chunk. Every byte the client sent is read, none is lost to
    /// a reset.
    #[tokio::test]
    async fn a_client_that_closes_early_loses_nothing() {
        let (mut client, mut server) = pair().await;
        let total = 3 * READ_AHEAD_BYTES + 12_345;
        let sent: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let to_send = sent.clone();
        let producer = tokio::spawn(async move {
            client.write_all(&to_send).await.unwrap();
            drop(client); // never reads an answer
        });
        let mut got = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            let n = server.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            // An answer after every request the server has "parsed".
            server
                .write_all(b"HTTP/1.1 201 Created\r\n\r\n")
                .await
                .unwrap();
            server.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        producer.await.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent);
    }

    /// A client that waits for each answer gets it without delay.
    #[tokio::test]
    async fn answers_reach_a_client_that_reads_them() {
        let (mut client, mut server) = pair().await;
        for round in 0..3u8 {
            client.write_all(&[round; 10]).await.unwrap();
            let mut req = [0u8; 10];
            server.read_exact(&mut req).await.unwrap();
            assert_eq!(req, [round; 10]);
            server.write_all(b"ok").await.unwrap();
            server.flush().await.unwrap();
            let mut answer = [0u8; 2];
            client.read_exact(&mut answer).await.unwrap();
            assert_eq!(&answer, b"ok");
        }
        server.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    /// Answers far larger than the socket's buffers, in several slices, to a client that
    /// reads late: they go straight into the socket while it has room, then at most
    /// [`HELD_BYTES`] wait in the writer, and they reach the client whole and in order.
    #[tokio::test]
    async fn large_vectored_answers_hold_a_bounded_copy() {
        let (mut client, mut server) = pair().await;
        let a: Vec<u8> = (0..8 << 20).map(|i| (i % 253) as u8).collect();
        let b: Vec<u8> = (0..HELD_BYTES / 3).map(|i| (i % 7) as u8).collect();
        let expected = [a.clone(), b.clone()].concat();
        let shared = server.shared.clone();
        let writer = tokio::spawn(async move {
            let (mut off_a, mut off_b) = (0, 0);
            let mut most_held = 0;
            while off_a < a.len() || off_b < b.len() {
                let bufs = [io::IoSlice::new(&a[off_a..]), io::IoSlice::new(&b[off_b..])];
                let n = server.write_vectored(&bufs).await.unwrap();
                most_held = most_held.max(shared.lock().outgoing.len());
                let from_a = n.min(a.len() - off_a);
                off_a += from_a;
                off_b += n - from_a;
            }
            server.shutdown().await.unwrap();
            most_held
        });
        // Let the writer fill the socket first.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let most_held = writer.await.unwrap();
        assert!(most_held <= HELD_BYTES, "held {most_held}");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected);
    }
}
