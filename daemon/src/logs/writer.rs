//! The group-committing log writer: callers append to an in-memory queue; a
//! background thread commits the queue in one transaction (after ~50 ms, or
//! at once when 256 KiB are waiting) and then wakes live readers.
//!
//! The queue is bounded: step output waits (`append_output` blocks the
//! plugin's reader, and so the step's pipe) while 8 MiB are queued, so a
//! step that prints faster than the store takes it slows down instead of
//! filling the daemon's memory. The engine's own events never wait.

use super::Keys;
use crate::store::{LogStream, NewLog, Store};
use event_listener::Event;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

const FLUSH_EVERY: Duration = Duration::from_millis(50);
const FLUSH_BYTES: usize = 256 * 1024;
/// Queued bytes at which step output waits for the writer.
const QUEUE_MAX: usize = 8 << 20;
/// Bytes a queued record costs besides its text and node name.
const RECORD_OVERHEAD: usize = 96;

struct Pending {
    keys: Arc<Keys>,
    /// The record's seq under keys.task, keys.subtask, keys.step (0: unused).
    seqs: [u64; 3],
    time: i64,
    stream: LogStream,
    node: Arc<str>,
    text: Box<str>,
}

/// The next seq of one key. Only changed under the queue's lock (which
/// orders the records); atomic so that handles can share it.
type Counter = Arc<AtomicU64>;

/// Keys with their seq counters resolved: a run's output handle, so that
/// a line costs no lookup.
pub struct KeyedLog {
    keys: Arc<Keys>,
    counters: [Option<Counter>; 3],
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    bytes: usize,
    /// Counter per key in use; loaded from the store on first use.
    seqs: HashMap<Arc<str>, Counter>,
    /// Keys in use per task, forgotten when the task ends.
    task_keys: HashMap<Arc<str>, Vec<Arc<str>>>,
    /// Records ever queued, taken by the writer, and committed: a flush
    /// waits for what was queued before it, not for what others queue
    /// while it waits (which, under load, never ends).
    queued: u64,
    taken: u64,
    committed: u64,
    /// The highest `queued` a flush waits for; the writer does not linger
    /// while it is ahead of `taken`.
    wanted: u64,
    stop: bool,
}

struct Inner {
    store: Arc<Store>,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Notified when the queue was taken (room for output) and after commits.
    drained: Condvar,
    /// Notified after every commit, for live readers (SSE, tails).
    appended: Event,
}

#[derive(Clone)]
pub struct LogWriter {
    inner: Arc<Inner>,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn wait<'a>(cv: &Condvar, g: MutexGuard<'a, Queue>, d: Duration) -> MutexGuard<'a, Queue> {
    match cv.wait_timeout(g, d) {
        Ok((g, _)) => g,
        Err(p) => p.into_inner().0,
    }
}

impl LogWriter {
    /// Starts the writer thread; without it `flush` would wait forever, so
    /// a failed spawn refuses the start.
    pub fn start(store: Arc<Store>) -> std::io::Result<LogWriter> {
        let inner = Arc::new(Inner {
            store,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            drained: Condvar::new(),
            appended: Event::new(),
        });
        let bg = inner.clone();
        std::thread::Builder::new()
            .name("jobx-log-writer".into())
            .spawn(move || flush_loop(bg))?;
        Ok(LogWriter { inner })
    }

    /// Resolves the seq counters of `keys`; a key used for the first time
    /// since start continues after what the store holds.
    pub fn keyed(&self, keys: &Keys) -> KeyedLog {
        let missing: Vec<Arc<str>> = {
            let q = lock(&self.inner.queue);
            keys.all_arcs()
                .filter(|k| !q.seqs.contains_key(k.as_ref()))
                .cloned()
                .collect()
        };
        // The store is read without the lock, so other writers go on.
        let loaded: Vec<(Arc<str>, u64)> = missing
            .into_iter()
            .map(|k| {
                let next = self.inner.store.last_log_seq(&k).unwrap_or(0) + 1;
                (k, next)
            })
            .collect();
        let mut q = lock(&self.inner.queue);
        for (k, next) in loaded {
            if !q.seqs.contains_key(k.as_ref()) {
                q.seqs.insert(k.clone(), Arc::new(AtomicU64::new(next)));
                q.task_keys.entry(keys.task.clone()).or_default().push(k);
            }
        }
        let counter = |k: &Arc<str>| {
            if k.is_empty() {
                None
            } else {
                q.seqs.get(k.as_ref()).cloned()
            }
        };
        KeyedLog {
            counters: [
                counter(&keys.task),
                counter(&keys.subtask),
                counter(&keys.step),
            ],
            keys: Arc::new(keys.clone()),
        }
    }

    /// Queues one event record (written by jobx) under every key in `keys`.
    pub fn append(&self, keys: &Keys, node: &str, stream: &str, text: &str) {
        let k = self.keyed(keys);
        let q = lock(&self.inner.queue);
        self.push(
            q,
            &k,
            Arc::from(node),
            LogStream::parse(stream),
            text.into(),
        );
    }

    /// Queues one line of step output, waiting first while the queue is
    /// full (back-pressure on the producer).
    pub fn append_output(&self, k: &KeyedLog, node: &Arc<str>, stream: LogStream, text: &[u8]) {
        // The common case, valid UTF-8, takes the fast check.
        let text: Box<str> = match std::str::from_utf8(text) {
            Ok(s) => s.into(),
            Err(_) => String::from_utf8_lossy(text).into(),
        };
        let mut q = lock(&self.inner.queue);
        while q.bytes >= QUEUE_MAX && !q.stop {
            self.inner.wake.notify_one();
            q = wait(&self.inner.drained, q, Duration::from_millis(100));
        }
        self.push(q, k, node.clone(), stream, text);
    }

    fn push(
        &self,
        mut q: MutexGuard<'_, Queue>,
        k: &KeyedLog,
        node: Arc<str>,
        stream: LogStream,
        text: Box<str>,
    ) {
        let mut seqs = [0u64; 3];
        for (seq, c) in seqs.iter_mut().zip(&k.counters) {
            if let Some(c) = c {
                // Ordered by the queue's lock.
                *seq = c.fetch_add(1, Ordering::Relaxed);
            }
        }
        let before = q.bytes;
        q.bytes += text.len() + node.len() + RECORD_OVERHEAD;
        q.queued += 1;
        q.pending.push(Pending {
            keys: k.keys.clone(),
            seqs,
            time: crate::clock::now_ms(),
            stream,
            node,
            text,
        });
        // Wake the writer once, when the threshold is crossed (a notify is
        // a system call).
        if before < FLUSH_BYTES && q.bytes >= FLUSH_BYTES {
            self.inner.wake.notify_one();
        }
    }

    /// Commits everything queued so far before returning.
    pub fn flush(&self) {
        let mut q = lock(&self.inner.queue);
        let target = q.queued;
        if q.committed >= target {
            return;
        }
        q.wanted = q.wanted.max(target);
        self.inner.wake.notify_one();
        while q.committed < target && !q.stop {
            q = wait(&self.inner.drained, q, Duration::from_secs(1));
        }
    }

    /// Drops the in-memory sequence counters of a finished task (whose
    /// runs, and so their `KeyedLog`s, have ended).
    pub fn forget_task(&self, task: &str) {
        self.flush();
        let mut q = lock(&self.inner.queue);
        if let Some(keys) = q.task_keys.remove(task) {
            for k in keys {
                q.seqs.remove(&k);
            }
        }
    }

    /// Live readers listen here and re-read after each commit.
    pub fn listen(&self) -> event_listener::EventListener {
        self.inner.appended.listen()
    }

    /// Wakes live readers without a commit (e.g. the work behind a key ended).
    pub fn notify(&self) {
        self.inner.appended.notify(usize::MAX);
    }

    /// Flushes and stops the background thread (shutdown).
    pub fn close(&self) {
        self.flush();
        lock(&self.inner.queue).stop = true;
        self.inner.wake.notify_one();
        self.inner.drained.notify_all();
    }
}

/// The records of a batch as the store takes them: home key first.
fn commit(store: &Store, batch: &[Pending]) -> crate::error::Result<()> {
    let ats: Vec<([(&str, u64); 3], usize)> = batch
        .iter()
        .map(|p| {
            let slots = p.keys.slots();
            let mut at = [("", 0u64); 3];
            let mut n = 0;
            // Most specific first: step, batch, task.
            for i in (0..3).rev() {
                if !slots[i].is_empty() && p.seqs[i] > 0 {
                    at[n] = (slots[i].as_ref(), p.seqs[i]);
                    n += 1;
                }
            }
            (at, n)
        })
        .collect();
    let lines: Vec<NewLog> = batch
        .iter()
        .zip(&ats)
        .map(|(p, (at, n))| NewLog {
            at: &at[..*n],
            time: p.time,
            stream: p.stream,
            node: &p.node,
            text: &p.text,
        })
        .collect();
    store.append_logs(&lines)
}

fn flush_loop(inner: Arc<Inner>) {
    loop {
        let batch = {
            let mut q = lock(&inner.queue);
            if q.bytes < FLUSH_BYTES && !q.stop && q.wanted <= q.taken {
                // Let records gather; a full 256 KiB or a flush (also one
                // that came while the last batch was being committed)
                // wakes us sooner.
                q = wait(&inner.wake, q, FLUSH_EVERY);
            }
            if q.pending.is_empty() {
                if q.stop {
                    return;
                }
                continue;
            }
            q.bytes = 0;
            q.taken = q.queued;
            // The next batch will likely be as long: no regrowing.
            let room = q.pending.len();
            std::mem::replace(&mut q.pending, Vec::with_capacity(room))
        };
        // Producers may fill the next batch while this one commits.
        inner.drained.notify_all();
        if let Err(e) = commit(&inner.store, &batch) {
            log::error!("cannot store {} log records: {e}", batch.len());
        }
        drop(batch);
        {
            let mut q = lock(&inner.queue);
            q.committed = q.taken;
        }
        inner.drained.notify_all();
        inner.appended.notify(usize::MAX);
    }
}
