//! HTTP/1.1 by hand, for what reqwest cannot do: a chunked upload that stays open between
//! chunks while the test reads the answer (acks, take-overs, idle timeouts, refusals mid-body).

use super::Server;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How a read ended.
enum ReadEnd {
    Done,
    Closed,
    TimedOut,
}

/// A hand-written `PUT` with a chunked body that can stay open.
pub struct RawUpload {
    conn: TcpStream,
    buf: Vec<u8>,
}

impl RawUpload {
    /// Sends the request head for `PUT /api/v1{path}`; `extra_headers` are whole header lines,
    /// each ending in `\r\n`.
    pub fn open(server: &Server, path: &str, extra_headers: &str) -> RawUpload {
        let addr = server.base.trim_start_matches("http://").to_string();
        let mut conn = TcpStream::connect(&addr).expect("connect");
        conn.set_nodelay(true).unwrap();
        let head = format!(
            "PUT /api/v1{path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\
             {extra_headers}\r\n"
        );
        conn.write_all(head.as_bytes()).expect("send head");
        RawUpload {
            conn,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, data: &[u8]) {
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(b"\r\n");
        self.conn.write_all(&chunk).expect("send chunk");
    }

    pub fn finish(&mut self) {
        self.conn.write_all(b"0\r\n\r\n").expect("send last chunk");
    }

    /// Reads until `done(buffer)`, end of connection or `timeout`; true if `done`.
    pub fn try_read_until(&mut self, timeout: Duration, done: impl Fn(&[u8]) -> bool) -> bool {
        matches!(self.read_to(timeout, done), ReadEnd::Done)
    }

    /// Reads until `done(buffer)` or end of connection; panics after `timeout`. True at EOF.
    pub fn read_until(&mut self, timeout: Duration, done: impl Fn(&[u8]) -> bool) -> bool {
        match self.read_to(timeout, done) {
            ReadEnd::Done => false,
            ReadEnd::Closed => true,
            ReadEnd::TimedOut => panic!(
                "timed out after {timeout:?}; received so far: {}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    fn read_to(&mut self, timeout: Duration, done: impl Fn(&[u8]) -> bool) -> ReadEnd {
        let deadline = Instant::now() + timeout;
        let mut tmp = [0u8; 16 * 1024];
        while !done(&self.buf) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ReadEnd::TimedOut;
            }
            self.conn.set_read_timeout(Some(left)).unwrap();
            match self.conn.read(&mut tmp) {
                Ok(0) => return ReadEnd::Closed,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // A reset after the response is as good as the end.
                Err(_) => return ReadEnd::Closed,
            }
        }
        ReadEnd::Done
    }

    /// Waits for the complete response (panics after `timeout`, or when the connection ends
    /// before it is complete): (status, decoded body).
    pub fn response(&mut self, timeout: Duration) -> (u16, Vec<u8>) {
        self.read_until(timeout, |b| parse_response(b).is_some());
        parse_response(&self.buf).unwrap_or_else(|| {
            panic!(
                "incomplete response: {}",
                String::from_utf8_lossy(&self.buf)
            )
        })
    }
}

/// A complete HTTP/1.1 response (Content-Length or chunked) as (status, body); `None` while
/// incomplete.
pub fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &raw[head_end..];
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let line_end = body[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
            let size_text = String::from_utf8_lossy(&body[pos..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                return Some((status, out));
            }
            if body.len() < pos + size + 2 {
                return None;
            }
            out.extend_from_slice(&body[pos..pos + size]);
            pos += size + 2;
        }
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (body.len() >= len).then(|| (status, body[..len].to_vec()))
}
