//! Our own accept loop over async-h1 (tide has none with graceful shutdown
//! and no request limits):
//! - on SIGTERM/SIGINT stop accepting, let in-flight requests finish
//!   (bounded), then return so that main can close the store;
//! - every request head is read here first, into a bounded buffer with a
//!   deadline, so an oversized request line is a 414, oversized headers a
//!   431 and a head that does not arrive in time a 408 (async-h1 would close
//!   the connection without an answer); only a complete head is handed on;
//! - open connections are capped; when the cap is reached an idle one
//!   (kept alive between requests, else one that has not sent anything) is
//!   closed for the newcomer, and without an idle one the newcomer gets 503;
//! - `TCP_NODELAY`: a response goes out in two writes, and the second would
//!   otherwise wait for the client's delayed ACK (≈40 ms per request on a
//!   kept-alive connection);
//! - memory per connection stays small, since thousands of agents each hold
//!   a request open: an idle connection waits without a buffer, the head
//!   buffer grows only as bytes arrive and is dropped once parsed, and a
//!   plain request (a body of known length, no `Expect`, no upgrade) is
//!   parsed here and its body read through a buffer no larger than the body
//!   and released at its end. async-h1's own reader, which keeps two 8 KiB
//!   buffers for the whole life of a request, reads only the rest (chunked
//!   bodies, `Expect: 100-continue`, upgrades); its encoder writes every
//!   answer.
//!
//! Stays one file: it is one concern, a connection's life (slot, head,
//! hand-over to async-h1, linger), and its pieces share private types; the
//! pure decisions (`scan_head`, `victim`) are already functions with tests.

use crate::state::App;
use async_h1::server::ConnectionStatus;
use async_std::net::{TcpListener, TcpStream};
use event_listener::Event;
use futures_lite::io::{AsyncBufRead, AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tide::http::{Body, Method, Request, Response, Url};

/// Longest request line (method, target, version); 414 beyond.
pub const MAX_REQUEST_LINE: usize = 4096;
/// Longest request head, request line included; 431 beyond. async-h1
/// refuses heads of 8 KiB and more, so this stays below that.
pub const MAX_HEAD: usize = 8 * 1024 - 1;
/// Most header lines in a request; 431 beyond (async-h1 parses up to 128).
pub const MAX_HEADERS: usize = 100;
/// After an answer that did not read the request (401, 408, 413, 414, 431),
/// the rest of what the client sends is read and dropped for at most this
/// long before closing, so that the close does not reset the connection
/// before the client has read the answer.
const LINGER: Duration = Duration::from_secs(2);
/// And at most this much of it.
const LINGER_BYTES: usize = 4 << 20;
/// The head buffer's first size; it grows up to [`MAX_HEAD`] + 1 if needed.
const HEAD_CHUNK: usize = 1024;
/// Largest read buffer of a request body.
const BODY_CHUNK: usize = 8 * 1024;

/// Requests being answered right now.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Event,
}

struct Guard(Arc<InFlight>);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify(usize::MAX);
        }
    }
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> Guard {
        self.count.fetch_add(1, Ordering::SeqCst);
        Guard(self.clone())
    }

    async fn wait_idle(&self) {
        loop {
            let listener = self.idle.listen();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            listener.await;
        }
    }
}

/// Limits of the server, from `[server]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    fn of(c: &crate::config::Server) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(c.header_timeout),
            keep_alive_timeout: Duration::from_secs(c.keep_alive_timeout),
            max_connections: c.max_connections,
        }
    }
}

/// What the bytes of a request head received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// The head is complete.
    Complete,
    /// More bytes are needed.
    Partial,
    /// 414: the request line is longer than [`MAX_REQUEST_LINE`].
    LineTooLong,
    /// 431: the head is longer than [`MAX_HEAD`] or has more than
    /// [`MAX_HEADERS`] header lines.
    TooLarge,
}

/// Looks at the start of a request head (pure).
pub fn scan_head(buf: &[u8]) -> Head {
    let line_end = buf.windows(2).position(|w| w == b"\r\n");
    match line_end {
        Some(i) if i > MAX_REQUEST_LINE => return Head::LineTooLong,
        None if buf.len() > MAX_REQUEST_LINE => return Head::LineTooLong,
        None => return Head::Partial,
        Some(_) => {}
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let scanned = match end {
        Some(i) => &buf[..i + 2],
        None => buf,
    };
    // Line ends after the request line's own.
    let headers = scanned.windows(2).filter(|w| *w == b"\r\n").count() - 1;
    if headers > MAX_HEADERS {
        return Head::TooLarge;
    }
    match end {
        Some(i) if i + 4 > MAX_HEAD => Head::TooLarge,
        Some(_) => Head::Complete,
        None if buf.len() > MAX_HEAD => Head::TooLarge,
        None => Head::Partial,
    }
}

/// What the server makes of a complete request head.
#[derive(Debug)]
pub enum Parsed {
    /// A plain request, answered by [`start_plain`] and [`answer_plain`]:
    /// the head's length in bytes and the body's length, when announced.
    Plain {
        req: Box<Request>,
        head: usize,
        body: Option<u64>,
    },
    /// A chunked body, `Expect`, an upgrade, another HTTP version or request
    /// form: async-h1 reads it, as it always did.
    Other,
    /// 400 with this text.
    Bad(String),
}

/// Parses a complete request head the way async-h1 does (pure).
pub fn parse_request(buf: &[u8]) -> Parsed {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    let head = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Other,
        Err(e) => return Parsed::Bad(format!("malformed request head: {e}")),
    };
    let (Some(method), Some(path), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Parsed::Other;
    };
    let Ok(method) = method.parse::<Method>() else {
        return Parsed::Other;
    };
    if !path.starts_with('/') {
        return Parsed::Other;
    }
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let leave = ["transfer-encoding", "expect", "upgrade"];
        if leave.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
            return Parsed::Other;
        }
        match std::str::from_utf8(h.value) {
            Ok(v) if v.is_ascii() => headers.push((h.name, v)),
            _ => return Parsed::Bad(format!("header {}: the value is not ASCII", h.name)),
        }
    }
    let Some(host) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| *v)
    else {
        return Parsed::Bad("the Host header is missing".to_string());
    };
    let Ok(url) = Url::parse(&format!("http://{host}{path}")) else {
        return Parsed::Bad(format!("invalid request target {path:?} or Host {host:?}"));
    };
    let mut body = None;
    for (n, v) in &headers {
        if n.eq_ignore_ascii_case("content-length") {
            match v.trim().parse::<u64>() {
                Ok(len) if body.is_none_or(|b| b == len) => body = Some(len),
                Ok(_) => return Parsed::Bad("conflicting Content-Length headers".to_string()),
                Err(_) => return Parsed::Bad(format!("Content-Length {v:?} is not a number")),
            }
        }
    }
    let mut req = Request::new(method, url);
    req.set_version(Some(tide::http::Version::Http1_1));
    for (n, v) in headers {
        req.append_header(n, v);
    }
    Parsed::Plain {
        req: Box::new(req),
        head,
        body,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// What a connection is doing, for choosing one to close at the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading or answering a request.
    Busy,
    /// Accepted, nothing received yet.
    Fresh(Instant),
    /// Kept alive after a request, waiting for the next one.
    KeptAlive(Instant),
}

/// The connection to close for a newcomer (pure): the longest-idle kept-alive
/// one, else the oldest that has sent nothing; never a busy one.
pub fn victim<K: Copy>(conns: impl Iterator<Item = (K, Phase)>) -> Option<K> {
    conns
        .filter_map(|(k, p)| match p {
            Phase::Busy => None,
            Phase::KeptAlive(t) => Some(((0, t), k)),
            Phase::Fresh(t) => Some(((1, t), k)),
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, k)| k)
}

/// Tells a connection waiting for its next request to close.
#[derive(Default)]
struct Kick {
    kicked: AtomicBool,
    event: Event,
}

impl Kick {
    fn kick(&self) {
        self.kicked.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    async fn wait(&self) {
        loop {
            let l = self.event.listen();
            if self.kicked.load(Ordering::SeqCst) {
                return;
            }
            l.await;
        }
    }
}

/// The open connections, at most `max`.
struct Slots {
    max: usize,
    inner: Mutex<SlotsInner>,
}

#[derive(Default)]
struct SlotsInner {
    next: u64,
    conns: HashMap<u64, (Phase, Arc<Kick>)>,
}

/// A connection's place; given back on drop.
struct Slot {
    id: u64,
    slots: Arc<Slots>,
    kick: Arc<Kick>,
}

impl Slots {
    /// A place for a new connection, closing an idle one if the cap is
    /// reached; None when every connection is busy.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut g = lock(&self.inner);
        if g.conns.len() >= self.max {
            let v = victim(g.conns.iter().map(|(k, (p, _))| (*k, *p)))?;
            if let Some((_, kick)) = g.conns.remove(&v) {
                kick.kick();
            }
        }
        let id = g.next;
        g.next += 1;
        let kick = Arc::new(Kick::default());
        g.conns
            .insert(id, (Phase::Fresh(Instant::now()), kick.clone()));
        Some(Slot {
            id,
            slots: self.clone(),
            kick,
        })
    }
}

impl Slot {
    fn set(&self, phase: Phase) -> bool {
        match lock(&self.slots.inner).conns.get_mut(&self.id) {
            Some(e) => {
                e.0 = phase;
                true
            }
            // Closed for a newcomer.
            None => false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.slots.inner).conns.remove(&self.id);
    }
}

/// The socket as async-h1 sees it: the head read here is replayed first,
/// and once an answer said `Connection: close` reads end, so async-h1 does
/// not wait for the rest of a body nobody will read.
#[derive(Clone)]
struct Conn {
    stream: TcpStream,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    prefix: Mutex<(Vec<u8>, usize)>,
    closing: AtomicBool,
    /// The current request's body was read to its end (or it has none).
    body_read: AtomicBool,
}

/// A request body that notes in [`Shared`] when it has been read to the end.
struct Tracked {
    body: tide::http::Body,
    shared: Arc<Shared>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.body).poll_read(cx, out);
        if matches!(r, Poll::Ready(Ok(0))) && !out.is_empty() {
            self.shared.body_read.store(true, Ordering::SeqCst);
        }
        r
    }
}

impl futures_lite::io::AsyncBufRead for Tracked {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.body).poll_fill_buf(cx);
        if matches!(&r, Poll::Ready(Ok(b)) if b.is_empty()) {
            this.shared.body_read.store(true, Ordering::SeqCst);
        }
        r
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.body).consume(amt);
    }
}

/// The body of a plain request: exactly its announced length, read from the
/// connection (the bytes that came with the head first) through a buffer
/// no larger than what is left of the body, released at the end; a request
/// held open after its body was read keeps no buffer.
struct BodyReader {
    conn: Conn,
    /// Bytes of the body not yet read from the connection.
    left: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl BodyReader {
    fn new(conn: Conn, len: u64) -> BodyReader {
        BodyReader {
            conn,
            left: len,
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }
}

impl AsyncBufRead for BodyReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.start == this.end && this.left > 0 {
            let want = this.left.min(BODY_CHUNK as u64) as usize;
            if this.buf.len() < want {
                this.buf.resize(want, 0);
            }
            let n = match Pin::new(&mut this.conn).poll_read(cx, &mut this.buf[..want]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(n)) => n,
            };
            if n == 0 {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the connection ended {} bytes before the body", this.left),
                )));
            }
            this.left -= n as u64;
            (this.start, this.end) = (0, n);
        }
        Poll::Ready(Ok(&this.buf[this.start..this.end]))
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        self.start = (self.start + amt).min(self.end);
        if self.start == self.end && self.left == 0 {
            self.buf = Vec::new();
            (self.start, self.end) = (0, 0);
        }
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = match self.as_mut().poll_fill_buf(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(avail)) => {
                let n = avail.len().min(out.len());
                out[..n].copy_from_slice(&avail[..n]);
                n
            }
        };
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}

impl Conn {
    fn take_prefix(&self) -> Vec<u8> {
        let mut p = lock(&self.shared.prefix);
        let (buf, pos) = std::mem::take(&mut *p);
        buf[pos..].to_vec()
    }

    fn set_prefix(&self, buf: Vec<u8>) {
        *lock(&self.shared.prefix) = (buf, 0);
    }

    fn closing(&self) -> bool {
        self.shared.closing.load(Ordering::SeqCst)
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.closing() {
            return Poll::Ready(Ok(0));
        }
        {
            let mut p = lock(&self.shared.prefix);
            let (buf, pos) = &mut *p;
            if *pos < buf.len() {
                let n = (buf.len() - *pos).min(out.len());
                out[..n].copy_from_slice(&buf[*pos..*pos + n]);
                *pos += n;
                if *pos == buf.len() {
                    *p = (Vec::new(), 0);
                }
                return Poll::Ready(Ok(n));
            }
        }
        Pin::new(&mut self.stream).poll_read(cx, out)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

/// Waits for SIGTERM or SIGINT.
async fn shutdown_signal() -> std::io::Result<()> {
    use async_signal::{Signal, Signals};
    let mut signals = Signals::new([Signal::Term, Signal::Int])?;
    let sig = signals.next().await;
    log::info!("received {sig:?}, shutting down");
    crate::ops::notify_stopping();
    Ok(())
}

enum Next {
    Conn(std::io::Result<(TcpStream, std::net::SocketAddr)>),
    Stop,
}

/// Serves `app` on `listener` until a shutdown signal arrives.
pub async fn serve(listener: TcpListener, app: tide::Server<Arc<App>>) -> std::io::Result<()> {
    let limits = Limits::of(&app.state().config.server);
    let slots = Arc::new(Slots {
        max: limits.max_connections,
        inner: Mutex::new(SlotsInner::default()),
    });
    let inflight = Arc::new(InFlight::default());
    let stop = async {
        if let Err(e) = shutdown_signal().await {
            log::error!("cannot watch signals: {e}");
            futures_lite::future::pending::<()>().await;
        }
        Next::Stop
    };
    let mut stop = Box::pin(stop);
    loop {
        let next = async { Next::Conn(listener.accept().await) }
            .or(stop.as_mut())
            .await;
        match next {
            Next::Stop => break,
            Next::Conn(Err(e)) => {
                // Out of file descriptors and the like: back off briefly instead of spinning.
                log::warn!("accept failed: {e}");
                async_io::Timer::after(Duration::from_millis(50)).await;
            }
            Next::Conn(Ok((stream, _peer))) => {
                if let Err(e) = stream.set_nodelay(true) {
                    log::debug!("TCP_NODELAY: {e}");
                }
                match slots.admit() {
                    Some(slot) => {
                        let (app, inflight) = (app.clone(), inflight.clone());
                        async_std::task::spawn(connection(stream, slot, app, inflight, limits));
                    }
                    None => {
                        async_std::task::spawn(refuse_full(stream, limits.max_connections));
                    }
                }
            }
        }
    }
    drop(listener);
    let drained = async {
        inflight.wait_idle().await;
        true
    }
    .or(async {
        async_io::Timer::after(Duration::from_secs(30)).await;
        false
    })
    .await;
    if !drained {
        log::warn!("requests still running after 30 s; stopping anyway");
    }
    Ok(())
}

/// A complete answer written by the server itself (the body is jobx's error
/// envelope), always closing the connection.
fn raw_answer(status: u16, reason: &str, info: &str) -> Vec<u8> {
    let body = serde_json::json!({"stat": false, "info": info}).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Every connection is busy: the newcomer is told so and closed.
async fn refuse_full(mut stream: TcpStream, max: usize) {
    let answer = raw_answer(
        503,
        "Service Unavailable",
        &format!("too many connections (server.max_connections = {max}); try again"),
    );
    let _ = async {
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    .or(async {
        async_io::Timer::after(Duration::from_secs(1)).await;
    })
    .await;
}

/// After an early answer: stop sending, drop what the client still sends
/// (bounded in time and bytes), then close.
async fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut s = stream.clone();
    let drain = async {
        // On the heap: an array here would make every connection's future 4 KiB larger.
        let mut buf = vec![0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    drain
        .or(async {
            async_io::Timer::after(LINGER).await;
        })
        .await;
}

enum HeadRead {
    /// A complete head, and whatever came after it.
    Ready(Vec<u8>),
    /// The client went away, stayed idle too long, or the connection was
    /// closed for a newcomer.
    Closed,
    /// Answer this and close.
    Refuse(u16, &'static str, String),
}

/// Reads the next request head (bounded, with deadlines).
async fn read_head(conn: &Conn, slot: &Slot, first: bool, limits: &Limits) -> HeadRead {
    let mut buf = conn.take_prefix();
    let start = Instant::now();
    let mut stream = conn.stream.clone();
    if buf.is_empty() {
        // Idle until the first byte: a fresh connection has the header
        // timeout for its whole head, a kept-alive one the keep-alive timeout.
        let phase = if first {
            Phase::Fresh(start)
        } else {
            Phase::KeptAlive(start)
        };
        if !slot.set(phase) {
            return HeadRead::Closed;
        }
        let wait = if first {
            limits.header_timeout
        } else {
            limits.keep_alive_timeout
        };
        // Waits without a buffer: idle connections may be many.
        let mut probe = [0u8; 1];
        let got = async { Some(stream.peek(&mut probe).await) }
            .or(async {
                slot.kick.wait().await;
                None
            })
            .or(async {
                async_io::Timer::after(wait).await;
                None
            })
            .await;
        match got {
            Some(Ok(n)) if n > 0 => {}
            _ => return HeadRead::Closed,
        }
    }
    if !slot.set(Phase::Busy) {
        return HeadRead::Closed;
    }
    let deadline = if first {
        start + limits.header_timeout
    } else {
        Instant::now() + limits.header_timeout
    };
    loop {
        match scan_head(&buf) {
            Head::Complete => return HeadRead::Ready(buf),
            Head::LineTooLong => {
                return HeadRead::Refuse(
                    414,
                    "URI Too Long",
                    format!("request line longer than {MAX_REQUEST_LINE} bytes"),
                )
            }
            Head::TooLarge => {
                return HeadRead::Refuse(
                    431,
                    "Request Header Fields Too Large",
                    format!(
                        "request headers larger than {MAX_HEAD} bytes or more than {MAX_HEADERS} fields"
                    ),
                )
            }
            Head::Partial => {}
        }
        // A partial head is at most MAX_HEAD bytes, so there is room.
        let have = buf.len();
        buf.resize((have * 2).clamp(HEAD_CHUNK, MAX_HEAD + 1), 0);
        let left = deadline.saturating_duration_since(Instant::now());
        let got = async { Some(stream.read(&mut buf[have..]).await) }
            .or(async {
                async_io::Timer::after(left).await;
                None
            })
            .await;
        match got {
            Some(Ok(n)) if n > 0 => buf.truncate(have + n),
            Some(_) => return HeadRead::Closed,
            None => {
                return HeadRead::Refuse(
                    408,
                    "Request Timeout",
                    format!(
                        "request head not received within {} s (server.header_timeout)",
                        limits.header_timeout.as_secs()
                    ),
                )
            }
        }
    }
}

/// Answers an early refusal and closes.
async fn refuse(conn: &Conn, status: u16, reason: &str, info: &str) {
    let mut s = conn.stream.clone();
    let answer = raw_answer(status, reason, info);
    let written = async { s.write_all(&answer).await.is_ok() }
        .or(async {
            async_io::Timer::after(LINGER).await;
            false
        })
        .await;
    if written {
        linger(&conn.stream).await;
    }
}

/// A request parsed by [`parse_request`], handed to the endpoint (sync, so
/// that none of it is kept in the connection's future).
fn start_plain<F, Fut>(
    conn: &Conn,
    mut req: Box<Request>,
    body: Option<u64>,
    endpoint: &F,
) -> (Method, bool, Pin<Box<Fut>>)
where
    F: Fn(Request) -> Fut,
{
    let method = req.method();
    let close = is_close(req.header("connection"));
    if let Some(len) = body {
        let reader = BodyReader::new(conn.clone(), len);
        req.set_body(Body::from_reader(reader, usize::try_from(len).ok()));
    }
    (method, close, Box::pin(endpoint(*req)))
}

fn is_close(v: Option<&tide::http::headers::HeaderValues>) -> bool {
    v.is_some_and(|c| c.as_str().eq_ignore_ascii_case("close"))
}

/// Writes the endpoint's answer: what async-h1's `accept_one` does once it
/// has a request, without its reader. The answer's future comes boxed: an
/// async fn keeps a copy of each argument, and this one is large.
async fn answer_plain<Fut>(
    conn: &Conn,
    method: Method,
    mut close: bool,
    answer: Pin<Box<Fut>>,
) -> tide::http::Result<ConnectionStatus>
where
    Fut: Future<Output = tide::http::Result<Response>>,
{
    let res = answer.await?;
    close |= is_close(res.header("connection"));
    // Boxed: only while it writes, not while the answer is awaited.
    Box::pin(async {
        let mut out = conn.clone();
        futures_lite::io::copy(async_h1::server::Encoder::new(res, method), &mut out).await
    })
    .await?;
    Ok(if close {
        ConnectionStatus::Close
    } else {
        ConnectionStatus::KeepAlive
    })
}

/// A request on the heap until tide takes it: tide's `respond` keeps its
/// argument for as long as the request runs, a pointer costs less.
struct Boxed(Box<Request>);

impl From<Boxed> for Request {
    fn from(b: Boxed) -> Request {
        *b.0
    }
}

/// One connection: its requests one after another while kept alive.
async fn connection(
    stream: TcpStream,
    slot: Slot,
    app: tide::Server<Arc<App>>,
    inflight: Arc<InFlight>,
    limits: Limits,
) {
    let conn = Conn {
        stream,
        shared: Arc::new(Shared::default()),
    };
    let shared = conn.shared.clone();
    let endpoint = move |mut req: Request| {
        let app = app.clone();
        let shared = shared.clone();
        let guard = inflight.enter();
        // Whether the answer left some of the body unread is seen here,
        // whatever the routes and middlewares did with the answer's headers.
        let announced =
            req.len().is_some_and(|n| n > 0) || req.header("transfer-encoding").is_some();
        shared.body_read.store(!announced, Ordering::SeqCst);
        if announced {
            let len = req.len();
            let body = req.take_body();
            let mime = body.mime().clone();
            let mut tracked = Body::from_reader(
                Tracked {
                    body,
                    shared: shared.clone(),
                },
                len,
            );
            tracked.set_mime(mime);
            req.set_body(tracked);
        }
        let req = Boxed(Box::new(req));
        async move {
            let mut res: tide::http::Result<Response> = app.respond(req).await;
            if let Ok(r) = &mut res {
                let close = r
                    .header("connection")
                    .is_some_and(|c| c.as_str().eq_ignore_ascii_case("close"));
                if close || !shared.body_read.load(Ordering::SeqCst) {
                    // The rest of the body would be taken for the next request.
                    r.insert_header("connection", "close");
                    shared.closing.store(true, Ordering::SeqCst);
                }
            }
            drop(guard);
            res
        }
    };
    let mut first = true;
    loop {
        let buf = match read_head(&conn, &slot, first, &limits).await {
            HeadRead::Ready(buf) => buf,
            HeadRead::Closed => return,
            HeadRead::Refuse(status, reason, info) => {
                refuse(&conn, status, reason, &info).await;
                return;
            }
        };
        first = false;
        let status = match parse_request(&buf) {
            Parsed::Plain { req, head, body } => {
                // Only what followed the head stays, in a buffer of its size.
                conn.set_prefix(buf[head..].to_vec());
                drop(buf);
                let (method, close, answer) = start_plain(&conn, req, body, &endpoint);
                answer_plain(&conn, method, close, answer).await
            }
            Parsed::Other => {
                conn.set_prefix(buf);
                // Boxed: large, and rarely needed.
                Box::pin(async {
                    let mut server = async_h1::server::Server::new(conn.clone(), &endpoint);
                    server.accept_one().await
                })
                .await
            }
            Parsed::Bad(info) => {
                refuse(&conn, 400, "Bad Request", &info).await;
                return;
            }
        };
        match status {
            Ok(ConnectionStatus::KeepAlive) => {}
            Ok(ConnectionStatus::Close) => {
                if conn.closing() {
                    linger(&conn.stream).await;
                }
                return;
            }
            Err(e) => {
                log::debug!("connection ended: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        assert_eq!(
            scan_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Head::Complete
        );
        assert_eq!(scan_head(b"GET / HTTP/1.1\r\nHost: x\r\n"), Head::Partial);
        assert_eq!(scan_head(b"GET / HT"), Head::Partial);
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "x".repeat(MAX_REQUEST_LINE));
        assert_eq!(scan_head(long.as_bytes()), Head::LineTooLong);
        // Known too long before the line ends.
        assert_eq!(
            scan_head("G".repeat(MAX_REQUEST_LINE + 1).as_bytes()),
            Head::LineTooLong
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(MAX_HEAD));
        assert_eq!(scan_head(big.as_bytes()), Head::TooLarge);
        assert_eq!(scan_head(&big.as_bytes()[..MAX_HEAD + 1]), Head::TooLarge);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: v\r\n")).collect();
        assert_eq!(
            scan_head(format!("GET / HTTP/1.1\r\n{many}").as_bytes()),
            Head::TooLarge
        );
        let fine: String = (1..MAX_HEADERS).map(|i| format!("X{i}: v\r\n")).collect();
        assert_eq!(
            scan_head(format!("GET / HTTP/1.1\r\nHost: x\r\n{fine}\r\n").as_bytes()),
            Head::Complete
        );
    }

    fn plain(head: &str) -> (Request, usize, Option<u64>) {
        match parse_request(head.as_bytes()) {
            Parsed::Plain { req, head, body } => (*req, head, body),
            other => panic!("not plain: {other:?}"),
        }
    }

    #[test]
    fn plain_requests_are_parsed_here() {
        let (req, head, body) =
            plain("GET /mon?x=1 HTTP/1.1\r\nHost: jobx:8080\r\nX-A: 1\r\nX-A: 2\r\n\r\nrest");
        assert_eq!(
            head,
            "GET /mon?x=1 HTTP/1.1\r\nHost: jobx:8080\r\nX-A: 1\r\nX-A: 2\r\n\r\n".len()
        );
        assert_eq!(body, None);
        assert_eq!(req.method(), Method::Get);
        assert_eq!(req.url().as_str(), "http://jobx:8080/mon?x=1");
        let values: Vec<&str> = req["x-a"].iter().map(|v| v.as_str()).collect();
        assert_eq!(values, ["1", "2"]);
        let (req, _, body) = plain(
            "POST /plugin/agent-pull/v1/poll HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n",
        );
        assert_eq!((req.method(), body), (Method::Post, Some(12)));
        let (_, _, body) =
            plain("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(body, Some(3));
    }

    #[test]
    fn other_requests_are_left_to_async_h1() {
        for head in [
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: h\r\n\r\n",
            "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            "BREW / HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert!(
                matches!(parse_request(head.as_bytes()), Parsed::Other),
                "{head}"
            );
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let bad = |head: &str| match parse_request(head.as_bytes()) {
            Parsed::Bad(info) => info,
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(
            bad("GET / HTTP/1.1\r\nX: 1\r\n\r\n"),
            "the Host header is missing"
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ten\r\n\r\n"),
            "Content-Length \"ten\" is not a number"
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            "conflicting Content-Length headers"
        );
        assert_eq!(
            bad("GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\u{e9}\r\n\r\n"),
            "header X-Name: the value is not ASCII"
        );
        assert!(bad("GET / HTTP/1.1\r\nHo st: h\r\n\r\n").starts_with("malformed request head"));
    }

    /// A connection whose peer sent `sent`, of which `prefix` bytes were
    /// already read (as with a head).
    async fn conn_with(sent: &[u8], prefix: usize) -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        client.write_all(&sent[prefix..]).await.expect("write");
        let conn = Conn {
            stream: server,
            shared: Arc::new(Shared::default()),
        };
        conn.set_prefix(sent[..prefix].to_vec());
        (conn, client)
    }

    #[test]
    fn bodies_are_read_to_their_length_and_release_their_buffer() {
        async_std::task::block_on(async {
            // The body's first bytes came with the head; the next request follows.
            let sent = b"hello, world!GET";
            let (conn, _client) = conn_with(sent, 5).await;
            let mut body = BodyReader::new(conn.clone(), 13);
            let mut got = Vec::new();
            body.read_to_end(&mut got).await.expect("read");
            assert_eq!(got, b"hello, world!");
            assert_eq!(body.buf.capacity(), 0);
            let mut next = [0u8; 3];
            let mut c = conn.clone();
            c.read_exact(&mut next).await.expect("next request");
            assert_eq!(&next, b"GET");
        });
    }

    #[test]
    fn a_body_cut_short_is_an_error() {
        async_std::task::block_on(async {
            let (conn, client) = conn_with(b"abc", 0).await;
            drop(client);
            let mut body = BodyReader::new(conn, 10);
            let mut got = Vec::new();
            let err = body.read_to_end(&mut got).await.expect_err("short body");
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        });
    }

    #[test]
    fn victims_idle_first() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let busy = [(1, Phase::Busy), (2, Phase::Busy)];
        assert_eq!(victim(busy.into_iter()), None);
        let mixed = [
            (1, Phase::Fresh(t0)),
            (2, Phase::KeptAlive(t1)),
            (3, Phase::Busy),
            (4, Phase::KeptAlive(t0)),
        ];
        assert_eq!(victim(mixed.into_iter()), Some(4));
        let fresh = [
            (1, Phase::Fresh(t1)),
            (2, Phase::Busy),
            (3, Phase::Fresh(t0)),
        ];
        assert_eq!(victim(fresh.into_iter()), Some(3));
    }

    #[test]
    fn answers_close() {
        let a = String::from_utf8(raw_answer(414, "URI Too Long", "x")).expect("utf8");
        assert!(a.starts_with("HTTP/1.1 414 URI Too Long\r\n"));
        assert!(a.contains("connection: close\r\n"));
        let body = a.split("\r\n\r\n").nth(1).expect("body");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).expect("json"),
            serde_json::json!({"stat": false, "info": "x"})
        );
    }
}
