//! The state of every agent and every run, and the protocol's rules.
//!
//! Nothing here blocks or owns a thread per agent: a waiting poll is a
//! stored [`Responder`], answered when work arrives or by the reaper when
//! its hold ends. All state sits behind one mutex; callbacks into the host
//! (responses, output lines, results) are collected as [`Effects`] and
//! performed after the lock is released.
//!
//! * `state`: agents, runs, leases and the bookkeeping between them;
//! * `protocol`: the agent's requests (poll, heartbeat, accept, output,
//!   exit, files) and the answers made of the state;
//! * `reaper`: the pure "what is due at time t" and the timer thread that
//!   acts on it;
//! * here: the [`Hub`], the executor's and the operators' side.

mod protocol;
mod reaper;
mod state;

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jobx_plugin_api::{HttpResponse, Reporter, Responder, RunId, StepRequest, StepResult, Stream};
use serde::Serialize;

use crate::config::Settings;
use crate::proto::{Answer, Refusal, Work};

use self::reaper::take_within;
pub(crate) use self::state::Files;
use self::state::{Agent, Phase, Run, State, StopReason};

/// Most steps handed out in one poll answer.
const MAX_OFFERS: usize = 64;
/// How long the daemon waits, past a step's own timeout, before it asks
/// the agent to stop it (the agent enforces the timeout itself first).
const BACKSTOP_GRACE: Duration = Duration::from_secs(10);
/// How long a stopped step may take to confirm, on top of `lost_after`.
const CANCEL_GRACE: Duration = Duration::from_secs(10);
/// The reaper scans at most this often, whatever the deadlines.
const MIN_SCAN: Duration = Duration::from_millis(50);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A fresh 128-bit random id in hex.
pub(crate) fn random_id() -> String {
    let mut buf = [0u8; 16];
    if getrandom::getrandom(&mut buf).is_err() {
        // No kernel randomness: fall back to the hasher's random keys,
        // mixed with time and a counter, so ids still never repeat.
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        for half in buf.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_i64(now_ms());
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Output lines of one run.
pub(crate) type Lines = Vec<(Stream, Vec<u8>)>;

/// Host callbacks to make once the state lock is released.
#[derive(Default)]
pub(crate) struct Effects {
    responses: Vec<(Responder, HttpResponse)>,
    lines: Vec<(Reporter, Lines)>,
    dones: Vec<(Reporter, StepResult)>,
}

impl Effects {
    pub(crate) fn respond(&mut self, r: Responder, resp: HttpResponse) {
        self.responses.push((r, resp));
    }

    fn done(&mut self, out: Reporter, result: StepResult) {
        self.dones.push((out, result));
    }

    /// Performs the callbacks: output before results, so a run's last lines
    /// are never dropped behind its end.
    pub(crate) fn run(self) {
        for (out, lines) in self.lines {
            for (stream, text) in lines {
                out.line(stream, &text);
            }
        }
        for (out, result) in self.dones {
            out.done(result);
        }
        for (r, resp) in self.responses {
            r.send(resp);
        }
    }
}

/// A JSON answer, serialized straight to bytes: no `Value` tree in
/// between, whose copy of a step's environment would cost more than the
/// answer (10,000 agents are answered at once when a task starts).
pub(crate) fn json<T: Serialize>(status: u16, body: &T) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".to_string(), "application/json".to_string())],
        body: serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec()),
    }
}

/// An error answer `{"error": …, "stale": …}`.
pub(crate) fn refuse(status: u16, error: impl Into<String>) -> HttpResponse {
    json(
        status,
        &Refusal {
            error: error.into(),
            stale: false,
        },
    )
}

fn stale_lease() -> HttpResponse {
    json(
        409,
        &Refusal {
            error: "unknown or stale lease: stop that work".to_string(),
            stale: true,
        },
    )
}

/// The shared core of the executor.
pub(crate) struct Hub {
    pub settings: Settings,
    state: Mutex<State>,
    tick: Condvar,
}

/// What `output` found, for the HTTP layer.
pub(crate) enum Delivered {
    Answer(HttpResponse),
    /// Deliver these lines, then call [`Hub::delivered`] and answer 200.
    Lines(Reporter, Lines, RunId),
}

impl Hub {
    pub fn new(settings: Settings) -> Arc<Hub> {
        let agents = settings
            .agents
            .iter()
            .map(|(name, digest)| (name.clone(), Agent::new(*digest)))
            .collect();
        Arc::new(Hub {
            settings,
            state: Mutex::new(State {
                agents,
                ..State::default()
            }),
            tick: Condvar::new(),
        })
    }

    /// An answer with no work, carrying the agent's timing.
    fn answer(&self) -> Answer {
        Answer {
            heartbeat_ms: self.settings.heartbeat.as_millis() as u64,
            lost_after_ms: self.settings.lost_after.as_millis() as u64,
            poll_ms: self.settings.poll_hold.as_millis() as u64,
            ..Answer::default()
        }
    }

    /// Makes sure the reaper looks again by `at`.
    fn schedule(&self, st: &mut State, at: Instant) {
        if st.next_scan.is_none_or(|n| at < n) {
            st.next_scan = Some(at);
            self.tick.notify_one();
        }
    }

    // ---- the executor side -------------------------------------------

    /// Queues a step for the agent named like its node.
    pub fn start(&self, run: RunId, step: StepRequest, out: Reporter) -> Result<(), String> {
        let name = step.node.name.clone();
        let timeout_secs = step.timeout_secs;
        let src = match &step.kind {
            jobx_plugin_api::StepKind::Scp { src, .. } => Some(PathBuf::from(src)),
            _ => None,
        };
        let mut env = step.env;
        let own = env.remove_entry("JOBX_NODE").into_iter().collect();
        let work = Work {
            lease: String::new(),
            task: step.task,
            subtask: step.subtask,
            step: step.step,
            step_name: step.step_name,
            action: step.action,
            batch: step.batch,
            batches: step.batches,
            node: name.clone(),
            kind: step.kind,
            env: own,
            timeout_secs: step.timeout_secs,
            queued_ms: now_ms(),
        };
        let now = Instant::now();
        let mut fx = Effects::default();
        {
            let mut st = lock(&self.state);
            let Some(agent) = st.agents.get_mut(&name) else {
                return Err(format!(
                    "no agent named {name:?} is configured in [plugins.agent-pull] agents"
                ));
            };
            agent.queue.push_back(run);
            let env = st.share_env(env);
            st.runs.insert(
                run,
                Run {
                    agent: name.clone(),
                    work,
                    env,
                    src,
                    out,
                    queued: now,
                    phase: Phase::Queued,
                },
            );
            self.hand_out(&mut st, &name, now, &mut fx);
            let wait = take_within(self.settings.connect_timeout, timeout_secs);
            self.schedule(&mut st, now + wait);
        }
        fx.run();
        Ok(())
    }

    /// Stops a run: forgotten if not taken yet, otherwise the agent is told.
    pub fn cancel(&self, run: RunId) {
        let now = Instant::now();
        let mut fx = Effects::default();
        {
            let mut st = lock(&self.state);
            let Some(r) = st.runs.get_mut(&run) else {
                return;
            };
            match &mut r.phase {
                Phase::Running(rn) => {
                    if rn.stop.is_none() {
                        let give_up = now + self.settings.lost_after + CANCEL_GRACE;
                        rn.stop = Some((StopReason::Cancelled, give_up, false));
                        let agent = r.agent.clone();
                        self.wake_with_stops(&mut st, &agent, now, &mut fx);
                        self.schedule(&mut st, give_up);
                    }
                }
                Phase::Queued | Phase::Offered { .. } => {
                    if let Some(r) = st.remove(run) {
                        fx.done(r.out, StepResult::failed("cancelled"));
                    }
                }
            }
        }
        fx.run();
    }

    /// Checks an agent's credentials; the name comes from the request.
    pub fn authenticate(&self, name: &str, token: &str) -> bool {
        let st = lock(&self.state);
        let Some(agent) = st.agents.get(name) else {
            return false;
        };
        let given = crate::config::digest(token);
        // Constant time: the comparison must not tell how much matched.
        given
            .iter()
            .zip(agent.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    // ---- operators -----------------------------------------------------

    /// `GET /agents`: every configured agent, by name.
    pub fn list(&self) -> serde_json::Value {
        let now = Instant::now();
        let st = lock(&self.state);
        let mut names: Vec<&String> = st.agents.keys().collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let a = &st.agents[name];
            let mut running = Vec::new();
            let mut queued = a.queue.len();
            for r in a.active.iter().filter_map(|id| st.runs.get(id)) {
                match &r.phase {
                    Phase::Running(rn) => running.push(serde_json::json!({
                        "task": r.work.task,
                        "subtask": r.work.subtask,
                        "step": r.work.step,
                        "step_name": r.work.step_name,
                        "started": crate::local_time(rn.accepted_ms),
                        "startedms": rn.accepted_ms as f64 / 1000.0,
                        "stopping": rn.stop.is_some(),
                    })),
                    _ => queued += 1,
                }
            }
            let connected = a.held.is_some()
                || a.contact
                    .is_some_and(|(t, _)| now.duration_since(t) < self.settings.lost_after);
            out.push(serde_json::json!({
                "name": name,
                "connected": connected,
                "waiting": a.held.is_some(),
                "last_contact": a.contact.map(|(_, ms)| crate::local_time(ms)),
                "last_contactms": a.contact.map(|(_, ms)| ms as f64 / 1000.0),
                "version": (!a.version.is_empty()).then(|| a.version.clone()),
                "running": running,
                "queued": queued,
            }));
        }
        serde_json::Value::Array(out)
    }
}
