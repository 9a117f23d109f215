//! A step's output on its way to the daemon: lines are gathered into
//! numbered chunks, sent one at a time by a sender thread and resent until
//! acknowledged (the daemon stores a resent chunk once).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jobx_plugin_api::Stream;

use crate::proto::{Chunk, Line};
use crate::state::{lock, log, Control, Ctx, Stop};

/// A chunk is sent once it holds this many bytes…
const CHUNK_BYTES: usize = 64 * 1024;
/// …or this many lines…
const CHUNK_LINES: usize = 2000;
/// …or its first line is this old.
const FLUSH: Duration = Duration::from_millis(200);
/// Output kept while the daemon cannot be reached; the rest is counted.
const MAX_BACKLOG: usize = 8 << 20;
/// Timeout of one output request.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Queue {
    pending: Vec<Line>,
    pending_bytes: usize,
    pending_since: Option<Instant>,
    sealed: VecDeque<(Chunk, usize)>,
    backlog: usize,
    next_seq: u64,
    dropped: u64,
    closing: bool,
    /// The sender ended: everything acknowledged, or the lease is gone.
    finished: bool,
}

impl Queue {
    fn seal(&mut self, lease: &str) {
        if self.dropped > 0 {
            let note = format!(
                "[{} bytes of output dropped: the daemon could not be reached]",
                self.dropped
            );
            self.dropped = 0;
            self.pending.push(Line::new(Stream::Info, note.as_bytes()));
        }
        if self.pending.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.pending);
        let chunk = Chunk {
            lease: lease.to_string(),
            seq: self.next_seq,
            lines,
        };
        self.next_seq += 1;
        self.sealed.push_back((chunk, self.pending_bytes));
        self.pending_bytes = 0;
        self.pending_since = None;
    }
}

struct Inner {
    ctx: Arc<Ctx>,
    lease: String,
    control: Arc<Control>,
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// The output of one step. Cheap to clone.
#[derive(Clone)]
pub struct Output {
    inner: Arc<Inner>,
}

impl Output {
    /// Starts the sender thread of a step.
    pub fn start(
        ctx: Arc<Ctx>,
        lease: &str,
        control: Arc<Control>,
    ) -> std::io::Result<(Output, JoinHandle<()>)> {
        let out = Output {
            inner: Arc::new(Inner {
                ctx,
                lease: lease.to_string(),
                control,
                queue: Mutex::new(Queue::default()),
                ready: Condvar::new(),
            }),
        };
        let sender = out.clone();
        let handle = std::thread::Builder::new()
            .name("jobx-agent-output".to_string())
            .spawn(move || sender.send_loop())?;
        Ok((out, handle))
    }

    /// One line of output, without its newline.
    pub fn line(&self, stream: Stream, bytes: &[u8]) {
        let line = Line::new(stream, bytes);
        let weight = line.weight();
        let mut q = lock(&self.inner.queue);
        if q.finished {
            return;
        }
        if q.backlog + weight > MAX_BACKLOG {
            q.dropped += bytes.len() as u64 + 1;
            return;
        }
        q.backlog += weight;
        q.pending.push(line);
        q.pending_bytes += weight;
        q.pending_since.get_or_insert_with(Instant::now);
        if q.pending_bytes >= CHUNK_BYTES || q.pending.len() >= CHUNK_LINES {
            q.seal(&self.inner.lease);
        }
        self.inner.ready.notify_all();
    }

    /// An agent message on the info stream.
    pub fn info(&self, msg: impl AsRef<str>) {
        self.line(Stream::Info, msg.as_ref().as_bytes());
    }

    /// Sends what is left and waits (until `deadline`) for every chunk to be
    /// acknowledged. Answers the number of chunks sent, or `None` when
    /// the output could not all be delivered.
    pub fn finish(&self, deadline: Instant) -> Option<u64> {
        let mut q = lock(&self.inner.queue);
        q.closing = true;
        q.seal(&self.inner.lease);
        self.inner.ready.notify_all();
        loop {
            if q.finished {
                return q.sealed.is_empty().then_some(q.next_seq);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            q = self
                .inner
                .ready
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Ends the sender without delivering the rest.
    pub fn abandon(&self) {
        let mut q = lock(&self.inner.queue);
        q.closing = true;
        q.finished = true;
        q.sealed.clear();
        self.inner.ready.notify_all();
    }

    fn send_loop(&self) {
        let inner = &self.inner;
        let mut failures = 0u32;
        let mut replaced = None;
        loop {
            let chunk = {
                let mut q = lock(&inner.queue);
                loop {
                    if q.finished {
                        return;
                    }
                    if q.sealed.is_empty() {
                        if let Some(since) = q.pending_since {
                            if since.elapsed() >= FLUSH {
                                q.seal(&inner.lease);
                                continue;
                            }
                        }
                        if q.closing && q.pending.is_empty() {
                            q.finished = true;
                            inner.ready.notify_all();
                            return;
                        }
                        let wait = q.pending_since.map_or(Duration::from_secs(1), |s| {
                            FLUSH.saturating_sub(s.elapsed())
                        });
                        q = inner
                            .ready
                            .wait_timeout(q, wait.max(Duration::from_millis(5)))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                        continue;
                    }
                    if let Some((c, _)) = q.sealed.front() {
                        break c.clone();
                    }
                }
            };
            let sent: Result<serde_json::Value, _> =
                inner.ctx.client.post("/output", &chunk, SEND_TIMEOUT);
            match sent {
                Ok(_) => {
                    failures = 0;
                    inner.ctx.contact();
                    let mut q = lock(&inner.queue);
                    if let Some((_, w)) = q.sealed.pop_front() {
                        q.backlog = q.backlog.saturating_sub(w);
                    }
                    inner.ready.notify_all();
                }
                Err(e) if e.is_stale() => {
                    inner.control.stop(Stop::Stale);
                    self.abandon();
                    return;
                }
                Err(crate::client::Failure::Status(503, _)) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(crate::client::Failure::Status(code, r)) if code != 401 && code < 500 => {
                    // The daemon will never take this chunk as it is: send a
                    // note under its number instead, so later chunks still fit.
                    log(format!("output chunk {} refused: {}", chunk.seq, r.error));
                    let mut q = lock(&inner.queue);
                    if replaced == Some(chunk.seq) {
                        if let Some((_, w)) = q.sealed.pop_front() {
                            q.backlog = q.backlog.saturating_sub(w);
                        }
                    } else if let Some((c, _)) = q.sealed.front_mut() {
                        let note = format!("[output refused by the daemon: {}]", r.error);
                        c.lines = vec![Line::new(Stream::Info, note.as_bytes())];
                        replaced = Some(chunk.seq);
                    }
                }
                Err(_) => {
                    failures += 1;
                    let pause = Duration::from_millis(200u64 << failures.min(5));
                    std::thread::sleep(pause.min(Duration::from_secs(5)));
                }
            }
        }
    }
}
