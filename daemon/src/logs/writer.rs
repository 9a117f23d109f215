//! The group-committing log writer: callers append to an in-memory queue; a
//! background thread commits the queue in one transaction every ~50 ms (or
//! sooner when 256 KiB are waiting) and then wakes live readers.

use super::Keys;
use crate::model::LogRecord;
use crate::store::Store;
use event_listener::Event;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

const FLUSH_EVERY: Duration = Duration::from_millis(50);
const FLUSH_BYTES: usize = 256 * 1024;

#[derive(Default)]
struct Queue {
    pending: Vec<(String, u64, LogRecord)>,
    bytes: usize,
    /// Next seq per key; loaded from the store on first use.
    seqs: HashMap<String, u64>,
    /// Keys in use per task, forgotten when the task ends.
    task_keys: HashMap<String, Vec<String>>,
    /// A batch has been taken and is being committed.
    in_progress: bool,
    stop: bool,
}

struct Inner {
    store: Arc<Store>,
    queue: Mutex<Queue>,
    wake: Condvar,
    flushed_cv: Condvar,
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

impl LogWriter {
    /// Starts the writer thread; without it `flush` would wait forever, so
    /// a failed spawn refuses the start.
    pub fn start(store: Arc<Store>) -> std::io::Result<LogWriter> {
        let inner = Arc::new(Inner {
            store,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            flushed_cv: Condvar::new(),
            appended: Event::new(),
        });
        let bg = inner.clone();
        std::thread::Builder::new()
            .name("jobx-log-writer".into())
            .spawn(move || flush_loop(bg))?;
        Ok(LogWriter { inner })
    }

    /// Queues one record under every key in `keys`.
    pub fn append(&self, keys: &Keys, node: &str, stream: &str, text: &str) {
        let rec = LogRecord {
            time: crate::clock::now_ms(),
            node: node.to_string(),
            stream: stream.to_string(),
            text: text.to_string(),
        };
        let mut q = lock(&self.inner.queue);
        let missing: Vec<&str> = keys.all().filter(|k| !q.seqs.contains_key(*k)).collect();
        if !missing.is_empty() {
            // First use of a key since start: continue after what is stored.
            // The store is read without the lock, so other writers go on.
            drop(q);
            let loaded: Vec<(&str, u64)> = missing
                .into_iter()
                .map(|k| (k, self.inner.store.last_log_seq(k).unwrap_or(0) + 1))
                .collect();
            q = lock(&self.inner.queue);
            for (k, next) in loaded {
                if !q.seqs.contains_key(k) {
                    q.seqs.insert(k.to_string(), next);
                    q.task_keys
                        .entry(keys.task.clone())
                        .or_default()
                        .push(k.to_string());
                }
            }
        }
        for key in keys.all() {
            let seq = q.seqs.get(key).copied().unwrap_or(1);
            q.seqs.insert(key.to_string(), seq + 1);
            q.bytes += rec.text.len() + 64;
            q.pending.push((key.to_string(), seq, rec.clone()));
        }
        if q.bytes >= FLUSH_BYTES {
            self.inner.wake.notify_one();
        }
    }

    /// Commits everything queued so far before returning.
    pub fn flush(&self) {
        let mut q = lock(&self.inner.queue);
        self.inner.wake.notify_one();
        while (!q.pending.is_empty() || q.in_progress) && !q.stop {
            q = match self
                .inner
                .flushed_cv
                .wait_timeout(q, Duration::from_secs(1))
            {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Drops the in-memory sequence counters of a finished task.
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
    }
}

fn flush_loop(inner: Arc<Inner>) {
    loop {
        let batch = {
            let mut q = lock(&inner.queue);
            if q.pending.is_empty() && !q.stop {
                q = match inner.wake.wait_timeout(q, FLUSH_EVERY) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
            if q.pending.is_empty() {
                if q.stop {
                    return;
                }
                continue;
            }
            q.bytes = 0;
            q.in_progress = true;
            std::mem::take(&mut q.pending)
        };
        if let Err(e) = inner.store.append_logs(&batch) {
            log::error!("cannot store {} log records: {e}", batch.len());
        }
        let mut q = lock(&inner.queue);
        q.in_progress = false;
        drop(q);
        inner.flushed_cv.notify_all();
        inner.appended.notify(usize::MAX);
        // Let more records gather before the next commit.
        std::thread::sleep(FLUSH_EVERY);
    }
}
