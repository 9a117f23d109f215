//! What the agent's threads share: the client, the server's timing, the
//! running steps and their stop switches.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::proto::{Answer, Hello};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes a log line to stderr (journald keeps the time).
pub fn log(msg: impl AsRef<str>) {
    eprintln!("jobx-agent: {}", msg.as_ref());
}

/// Why a step must end early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The daemon asked (a stop of the task): kill, report `cancelled`.
    Cancel,
    /// The daemon does not know the lease (restarted, or failed the step):
    /// kill and report nothing.
    Stale,
    /// No contact with the daemon for `lost_after`: it has failed the step.
    Orphan,
    /// The agent is shutting down.
    Shutdown,
}

/// The stop switch of one running step.
#[derive(Default)]
pub struct Control {
    stop: Mutex<Option<Stop>>,
}

impl Control {
    /// Requests a stop; the first reason wins.
    pub fn stop(&self, why: Stop) {
        let mut s = lock(&self.stop);
        if s.is_none() {
            *s = Some(why);
        }
    }

    pub fn stopped(&self) -> Option<Stop> {
        *lock(&self.stop)
    }
}

/// The intervals the daemon dictates (its answers carry them).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub heartbeat: Duration,
    pub lost_after: Duration,
    pub poll: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_secs(10),
            lost_after: Duration::from_secs(30),
            poll: Duration::from_secs(50),
        }
    }
}

/// Shared by every thread of the agent.
pub struct Ctx {
    pub client: Client,
    pub instance: String,
    pub workdir: PathBuf,
    pub kill_grace: Duration,
    pub timing: Mutex<Timing>,
    /// Running steps by lease.
    pub steps: Mutex<HashMap<String, Arc<Control>>>,
    /// Signalled when a step starts or ends.
    pub steps_changed: Condvar,
    /// Last successful request to the daemon.
    pub last_ok: Mutex<Instant>,
    pub shutdown: AtomicBool,
}

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

impl Ctx {
    pub fn timing(&self) -> Timing {
        *lock(&self.timing)
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Notes a successful exchange.
    pub fn contact(&self) {
        *lock(&self.last_ok) = Instant::now();
    }

    /// How long since the last successful exchange.
    pub fn silence(&self) -> Duration {
        lock(&self.last_ok).elapsed()
    }

    /// Takes the daemon's timing from an answer.
    pub fn learn(&self, a: &Answer) {
        let ms = |v: u64, d: Duration| {
            if v == 0 {
                d
            } else {
                Duration::from_millis(v)
            }
        };
        let mut t = lock(&self.timing);
        *t = Timing {
            heartbeat: ms(a.heartbeat_ms, t.heartbeat),
            lost_after: ms(a.lost_after_ms, t.lost_after),
            poll: ms(a.poll_ms, t.poll),
        };
    }

    pub fn hello(&self) -> Hello {
        Hello {
            instance: self.instance.clone(),
            version: VERSION.to_string(),
            // Work being dropped is not reported as running: the daemon
            // already refused it, and listing it would only repeat that.
            running: lock(&self.steps)
                .iter()
                .filter(|(_, c)| !matches!(c.stopped(), Some(Stop::Stale | Stop::Orphan)))
                .map(|(lease, _)| lease.clone())
                .collect(),
        }
    }

    /// Handles the stop requests and stale leases of an answer.
    pub fn apply(&self, a: &Answer) {
        let steps = lock(&self.steps);
        for lease in &a.cancel {
            if let Some(c) = steps.get(lease) {
                c.stop(Stop::Cancel);
            }
        }
        for lease in &a.stale {
            if let Some(c) = steps.get(lease) {
                c.stop(Stop::Stale);
            }
        }
    }

    /// Stops every running step.
    pub fn stop_all(&self, why: Stop) {
        for c in lock(&self.steps).values() {
            c.stop(why);
        }
    }

    pub fn register(&self, lease: &str) -> Arc<Control> {
        let c = Arc::new(Control::default());
        lock(&self.steps).insert(lease.to_string(), c.clone());
        self.steps_changed.notify_all();
        c
    }

    pub fn unregister(&self, lease: &str) {
        lock(&self.steps).remove(lease);
        self.steps_changed.notify_all();
    }
}

/// A fresh 128-bit random id in hex.
pub fn random_id() -> String {
    let mut buf = [0u8; 16];
    if getrandom::getrandom(&mut buf).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        buf = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
