//! Background pruning of step logs (`logs.retention_days`): one pass at
//! start, then one every `logs.retention_check_secs`. Each pass is many
//! short store transactions with pauses between them, so the log writer
//! and API requests get the store's single writer in turn.

use crate::config::Logs;
use crate::store::Store;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Task ids looked at per indexing transaction.
const INDEX_CHUNK: u64 = 500;
/// Watched (running) tasks looked at per transaction.
const RECHECK_CHUNK: usize = 500;
/// Log segments (up to 64 KiB of lines each) deleted per transaction: a few
/// milliseconds of work.
const PRUNE_CHUNK: usize = 200;
/// Pause between transactions, leaving the writer to others.
const PAUSE: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    /// Sleeps up to `d`; true if a stop was asked for.
    fn wait(&self, d: Duration) -> bool {
        let g = match self.stopped.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match self.cv.wait_timeout_while(g, d, |s| !*s) {
            Ok((g, _)) => *g,
            Err(p) => *p.into_inner().0,
        }
    }

    fn set(&self) {
        match self.stopped.lock() {
            Ok(mut g) => *g = true,
            Err(p) => *p.into_inner() = true,
        }
        self.cv.notify_all();
    }
}

/// The running pruner; `stop` (or drop) ends it and releases the store.
pub struct Retention {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the pruner, unless `retention_days` is 0 (keep logs forever).
pub fn start(store: Arc<Store>, cfg: &Logs) -> Retention {
    let stop = Arc::new(Stop::default());
    if cfg.retention_days == 0.0 {
        log::info!("logs.retention_days = 0: step logs are kept forever");
        return Retention { stop, thread: None };
    }
    let keep_ms = (cfg.retention_days * 86_400_000.0) as i64;
    let every = Duration::from_secs(cfg.retention_check_secs);
    log::info!(
        "log retention: step logs of tasks finished more than {} day(s) ago are pruned, checked every {}s",
        cfg.retention_days,
        every.as_secs()
    );
    let s2 = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("jobx-retention".into())
        .spawn(move || loop {
            if let Err(e) = pass(&store, keep_ms, &s2) {
                log::warn!("log retention: {e} (trying again in {}s)", every.as_secs());
            }
            if s2.wait(every) {
                return;
            }
        });
    let thread = match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            log::error!("cannot start the log retention thread: {e}; step logs are not pruned");
            None
        }
    };
    Retention { stop, thread }
}

impl Retention {
    /// Stops the pruner between two transactions and waits for it.
    pub fn stop(&mut self) {
        self.stop.set();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One pass: index new tasks, look at running ones again, prune expired ones.
fn pass(store: &Store, keep_ms: i64, stop: &Stop) -> crate::error::Result<()> {
    while store.retention_index_new(INDEX_CHUNK)? > 0 {
        if stop.wait(PAUSE) {
            return Ok(());
        }
    }
    let mut at: Option<String> = None;
    while let Some(next) = store.retention_recheck(at.as_deref(), RECHECK_CHUNK)? {
        at = Some(next);
        if stop.wait(PAUSE) {
            return Ok(());
        }
    }
    let cutoff = crate::clock::now_ms().saturating_sub(keep_ms);
    let (mut tasks, mut records) = (0u64, 0u64);
    let mut last_task = String::new();
    while let Some(p) = store.prune_expired_logs(cutoff, PRUNE_CHUNK)? {
        if p.records > 0 && p.task != last_task {
            tasks += 1;
            last_task = p.task;
        }
        records += p.records;
        if stop.wait(PAUSE) {
            break;
        }
    }
    if records > 0 {
        log::info!(
            "log retention: removed {records} step log record(s) of {tasks} task(s) finished before {}",
            crate::clock::local(cutoff)
        );
    }
    Ok(())
}
