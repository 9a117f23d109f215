//! The state of every agent and every run, and the protocol's rules.
//!
//! Nothing here blocks or owns a thread per agent: a waiting poll is a
//! stored [`Responder`], answered when work arrives or by the reaper when
//! its hold ends. All state sits behind one mutex; callbacks into the host
//! (responses, output lines, results) are collected as [`Effects`] and
//! performed after the lock is released.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jobx_plugin_api::{HttpResponse, Reporter, Responder, RunId, StepRequest, StepResult, Stream};
use serde::Serialize;

use crate::config::Settings;
use crate::proto::{Accept, Answer, Chunk, Exit, Hello, Manifest, Refusal, Work};

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

/// A JSON answer.
pub(crate) fn json<T: Serialize>(status: u16, body: &T) -> HttpResponse {
    let value = serde_json::to_value(body).unwrap_or(serde_json::Value::Null);
    HttpResponse::json(status, &value)
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

/// A poll being held open.
struct Held {
    respond: Responder,
    until: Instant,
}

/// One configured agent.
struct Agent {
    digest: [u8; 32],
    /// Last request from the agent: monotonic, and wall clock for display.
    contact: Option<(Instant, i64)>,
    version: String,
    instance: String,
    /// Runs waiting to be handed out, oldest first.
    queue: VecDeque<RunId>,
    /// Runs offered to or running on this agent.
    active: Vec<RunId>,
    held: Option<Held>,
}

/// Why the daemon wants a handed-out step stopped; decides its result.
#[derive(Clone, Copy, Debug)]
enum StopReason {
    Cancelled,
    Timeout(u64),
}

impl StopReason {
    fn result(self) -> StepResult {
        match self {
            StopReason::Cancelled => StepResult::failed("cancelled"),
            StopReason::Timeout(s) => StepResult::failed(format!("timeout after {s} s")),
        }
    }
}

/// A step the agent accepted and runs.
struct Running {
    lease: String,
    accepted: Instant,
    accepted_ms: i64,
    next_seq: u64,
    /// A chunk is being handed to the host: the next report waits.
    delivering: bool,
    /// The stop request, when the daemon gives up waiting for its
    /// confirmation, and whether a poll answer carried it already.
    stop: Option<(StopReason, Instant, bool)>,
    /// The scp source as listed for the agent, with the real paths.
    files: Option<Arc<Files>>,
}

/// An `scp` source listing and the daemon-side path of each entry.
pub(crate) struct Files {
    pub manifest: Manifest,
    pub paths: Vec<PathBuf>,
}

enum Phase {
    Queued,
    Offered { lease: String, at: Instant },
    Running(Box<Running>),
}

struct Run {
    agent: String,
    work: Work,
    src: Option<PathBuf>,
    out: Reporter,
    queued: Instant,
    phase: Phase,
}

#[derive(Default)]
struct State {
    agents: HashMap<String, Agent>,
    runs: HashMap<RunId, Run>,
    leases: HashMap<String, RunId>,
    /// When the reaper plans to look next.
    next_scan: Option<Instant>,
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
            .map(|(name, digest)| {
                (
                    name.clone(),
                    Agent {
                        digest: *digest,
                        contact: None,
                        version: String::new(),
                        instance: String::new(),
                        queue: VecDeque::new(),
                        active: Vec::new(),
                        held: None,
                    },
                )
            })
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

    /// How long a step may wait for its agent to take it: `connect_timeout`,
    /// but never longer than the step's own time limit.
    fn take_within(&self, timeout_secs: u64) -> Duration {
        let c = self.settings.connect_timeout;
        if timeout_secs > 0 {
            c.min(Duration::from_secs(timeout_secs))
        } else {
            c
        }
    }

    /// Queues a step for the agent named like its node.
    pub fn start(&self, run: RunId, step: StepRequest, out: Reporter) -> Result<(), String> {
        let name = step.node.name.clone();
        let timeout_secs = step.timeout_secs;
        let src = match &step.kind {
            jobx_plugin_api::StepKind::Scp { src, .. } => Some(PathBuf::from(src)),
            _ => None,
        };
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
            env: step.env,
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
            st.runs.insert(
                run,
                Run {
                    agent: name.clone(),
                    work,
                    src,
                    out,
                    queued: now,
                    phase: Phase::Queued,
                },
            );
            self.hand_out(&mut st, &name, now, &mut fx);
            let wait = self.take_within(timeout_secs);
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
                    if let Some(r) = self.remove(&mut st, run) {
                        fx.done(r.out, StepResult::failed("cancelled"));
                    }
                }
            }
        }
        fx.run();
    }

    /// Removes a run and its lease and queue entry.
    fn remove(&self, st: &mut State, run: RunId) -> Option<Run> {
        let r = st.runs.remove(&run)?;
        match &r.phase {
            Phase::Queued => {
                if let Some(a) = st.agents.get_mut(&r.agent) {
                    a.queue.retain(|q| *q != run);
                }
            }
            Phase::Offered { lease, .. } => {
                st.leases.remove(lease);
            }
            Phase::Running(rn) => {
                st.leases.remove(&rn.lease);
            }
        }
        if !matches!(r.phase, Phase::Queued) {
            if let Some(a) = st.agents.get_mut(&r.agent) {
                a.active.retain(|q| *q != run);
            }
        }
        Some(r)
    }

    // ---- agent requests ------------------------------------------------

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

    /// Records contact; a new instance means the agent restarted and lost
    /// what it was running.
    fn touch(
        &self,
        st: &mut State,
        name: &str,
        hello: Option<&Hello>,
        now: Instant,
        fx: &mut Effects,
    ) {
        let Some(agent) = st.agents.get_mut(name) else {
            return;
        };
        agent.contact = Some((now, now_ms()));
        let Some(hello) = hello else { return };
        agent.version = hello.version.chars().take(100).collect();
        if agent.instance == hello.instance {
            return;
        }
        let restarted = !agent.instance.is_empty();
        agent.instance = hello.instance.chars().take(100).collect();
        if let Some(h) = agent.held.take() {
            fx.respond(h.respond, json(200, &self.answer()));
        }
        if !restarted {
            return;
        }
        let mine = st
            .agents
            .get(name)
            .map(|a| a.active.clone())
            .unwrap_or_default();
        for id in mine {
            let running = matches!(st.runs.get(&id).map(|r| &r.phase), Some(Phase::Running(_)));
            if running {
                if let Some(r) = self.remove(st, id) {
                    let result = match &r.phase {
                        Phase::Running(rn) => match rn.stop {
                            Some((why, _, _)) => why.result(),
                            None => StepResult::failed("agent lost: the agent restarted"),
                        },
                        _ => StepResult::failed("agent lost: the agent restarted"),
                    };
                    fx.done(r.out, result);
                }
            } else {
                self.requeue(st, id);
            }
        }
    }

    /// An offered step goes back to the front of its agent's queue, its
    /// lease revoked: the old lease can no longer be accepted, so the step
    /// still runs at most once.
    fn requeue(&self, st: &mut State, id: RunId) {
        let Some(r) = st.runs.get_mut(&id) else {
            return;
        };
        if let Phase::Offered { lease, .. } = std::mem::replace(&mut r.phase, Phase::Queued) {
            st.leases.remove(&lease);
        }
        let agent = r.agent.clone();
        let queued = r.queued;
        if let Some(a) = st.agents.get_mut(&agent) {
            a.active.retain(|q| *q != id);
            // Keep the queue in start order.
            let pos = a
                .queue
                .iter()
                .position(|q| st.runs.get(q).is_some_and(|o| o.queued > queued))
                .unwrap_or(a.queue.len());
            a.queue.insert(pos, id);
        }
    }

    /// Answers the agent's held poll with queued work, if both exist.
    fn hand_out(&self, st: &mut State, name: &str, now: Instant, fx: &mut Effects) {
        let has_work = st.agents.get(name).is_some_and(|a| !a.queue.is_empty());
        if !has_work {
            return;
        }
        let Some(held) = st.agents.get_mut(name).and_then(|a| a.held.take()) else {
            return;
        };
        let answer = self.offers(st, name, now);
        fx.respond(held.respond, json(200, &answer));
    }

    /// Takes queued work of an agent as offers (new leases).
    fn offers(&self, st: &mut State, name: &str, now: Instant) -> Answer {
        let mut answer = self.answer();
        let mut ids = Vec::new();
        if let Some(a) = st.agents.get_mut(name) {
            while ids.len() < MAX_OFFERS {
                match a.queue.pop_front() {
                    Some(id) => ids.push(id),
                    None => break,
                }
            }
        }
        for id in ids {
            let Some(r) = st.runs.get_mut(&id) else {
                continue;
            };
            let lease = random_id();
            r.phase = Phase::Offered {
                lease: lease.clone(),
                at: now,
            };
            let mut work = r.work.clone();
            work.lease = lease.clone();
            answer.work.push(work);
            st.leases.insert(lease, id);
            if let Some(a) = st.agents.get_mut(name) {
                a.active.push(id);
            }
        }
        if !answer.work.is_empty() {
            self.schedule(st, now + self.settings.offer_timeout);
        }
        answer
    }

    /// Leases of this agent with a stop request; with `fresh`, only those
    /// no poll answer carried yet (and marks them carried).
    fn stops(st: &mut State, name: &str, fresh: bool) -> Vec<String> {
        let mut out = Vec::new();
        let active = st
            .agents
            .get(name)
            .map(|a| a.active.clone())
            .unwrap_or_default();
        for id in active {
            let Some(r) = st.runs.get_mut(&id) else {
                continue;
            };
            if let Phase::Running(rn) = &mut r.phase {
                if let Some((_, _, sent)) = &mut rn.stop {
                    if !fresh || !*sent {
                        *sent = true;
                        out.push(rn.lease.clone());
                    }
                }
            }
        }
        out
    }

    /// Answers a held poll with new stop requests at once.
    fn wake_with_stops(&self, st: &mut State, name: &str, now: Instant, fx: &mut Effects) {
        let held = st.agents.get_mut(name).and_then(|a| a.held.take());
        if let Some(held) = held {
            let mut answer = self.offers(st, name, now);
            answer.cancel = Self::stops(st, name, true);
            fx.respond(held.respond, json(200, &answer));
        }
    }

    /// Leases in `running` that are not this agent's running steps.
    fn stale(st: &State, name: &str, running: &[String]) -> Vec<String> {
        running
            .iter()
            .filter(|lease| {
                !st.leases
                    .get(*lease)
                    .and_then(|id| st.runs.get(id))
                    .is_some_and(|r| r.agent == name && matches!(r.phase, Phase::Running(_)))
            })
            .cloned()
            .collect()
    }

    /// Fails this agent's running steps that it no longer lists as running
    /// (an accept whose answer it never saw, a step it dropped), once they
    /// are old enough that the list cannot predate them.
    fn reconcile(
        &self,
        st: &mut State,
        name: &str,
        running: &[String],
        now: Instant,
        fx: &mut Effects,
    ) {
        let active = st
            .agents
            .get(name)
            .map(|a| a.active.clone())
            .unwrap_or_default();
        for id in active {
            let gone = match st.runs.get(&id).map(|r| &r.phase) {
                Some(Phase::Running(rn)) => {
                    rn.accepted + self.settings.offer_timeout <= now && !running.contains(&rn.lease)
                }
                _ => false,
            };
            if gone {
                if let Some(r) = self.remove(st, id) {
                    let result = match &r.phase {
                        Phase::Running(rn) if rn.stop.is_some() => {
                            rn.stop.map(|s| s.0.result()).unwrap_or_default()
                        }
                        _ => StepResult::failed("agent lost: the agent no longer runs the step"),
                    };
                    fx.done(r.out, result);
                }
            }
        }
    }

    /// `POST /v1/poll`: answered now if there is something to say, else held.
    pub fn poll(&self, name: &str, hello: Hello, wait: Option<Duration>, respond: Responder) {
        let now = Instant::now();
        let mut fx = Effects::default();
        {
            let mut st = lock(&self.state);
            self.touch(&mut st, name, Some(&hello), now, &mut fx);
            self.reconcile(&mut st, name, &hello.running, now, &mut fx);
            // A newer poll replaces a held one (its connection is likely gone).
            if let Some(old) = st.agents.get_mut(name).and_then(|a| a.held.take()) {
                fx.respond(old.respond, json(200, &self.answer()));
            }
            let mut answer = self.offers(&mut st, name, now);
            answer.cancel = Self::stops(&mut st, name, true);
            answer.stale = Self::stale(&st, name, &hello.running);
            let hold = wait
                .unwrap_or(self.settings.poll_hold)
                .min(self.settings.poll_hold);
            if answer.work.is_empty()
                && answer.cancel.is_empty()
                && answer.stale.is_empty()
                && !hold.is_zero()
            {
                let until = now + hold;
                if let Some(a) = st.agents.get_mut(name) {
                    a.held = Some(Held { respond, until });
                }
                self.schedule(&mut st, until);
            } else {
                fx.respond(respond, json(200, &answer));
            }
        }
        fx.run();
    }

    /// `POST /v1/heartbeat`: contact, stop requests and stale leases.
    pub fn heartbeat(&self, name: &str, hello: Hello) -> HttpResponse {
        let now = Instant::now();
        let mut fx = Effects::default();
        let answer = {
            let mut st = lock(&self.state);
            self.touch(&mut st, name, Some(&hello), now, &mut fx);
            self.reconcile(&mut st, name, &hello.running, now, &mut fx);
            let mut answer = self.answer();
            answer.cancel = Self::stops(&mut st, name, false);
            answer.stale = Self::stale(&st, name, &hello.running);
            answer
        };
        fx.run();
        json(200, &answer)
    }

    /// `POST /v1/accept`: the agent claims an offered step.
    pub fn accept(&self, name: &str, req: Accept) -> HttpResponse {
        let now = Instant::now();
        let mut fx = Effects::default();
        let resp = {
            let mut st = lock(&self.state);
            self.touch(&mut st, name, None, now, &mut fx);
            let id = st.leases.get(&req.lease).copied();
            match id.and_then(|id| st.runs.get_mut(&id).map(|r| (id, r))) {
                Some((_, r)) if r.agent == name => match &r.phase {
                    Phase::Offered { lease, .. } if *lease == req.lease => {
                        r.phase = Phase::Running(Box::new(Running {
                            lease: req.lease.clone(),
                            accepted: now,
                            accepted_ms: now_ms(),
                            next_seq: 0,
                            delivering: false,
                            stop: None,
                            files: None,
                        }));
                        // Accepted work is never handed out again: only its
                        // ids and time limit are still needed, so the script
                        // and the environment are released now, not when
                        // the step ends (10k agents hold 10k of them).
                        r.work.kind = jobx_plugin_api::StepKind::default();
                        r.work.env = Default::default();
                        if r.work.timeout_secs > 0 {
                            let at =
                                now + Duration::from_secs(r.work.timeout_secs) + BACKSTOP_GRACE;
                            self.schedule(&mut st, at);
                        }
                        self.schedule(&mut st, now + self.settings.lost_after);
                        json(200, &serde_json::json!({"ok": true}))
                    }
                    _ => stale_lease(),
                },
                _ => stale_lease(),
            }
        };
        fx.run();
        resp
    }

    /// Finds this agent's running step by lease.
    fn running<'a>(st: &'a mut State, name: &str, lease: &str) -> Option<(RunId, &'a mut Run)> {
        let id = *st.leases.get(lease)?;
        let r = st.runs.get_mut(&id)?;
        if r.agent != name || !matches!(&r.phase, Phase::Running(rn) if rn.lease == lease) {
            return None;
        }
        Some((id, r))
    }

    /// `POST /v1/output`: a chunk is stored once, in order.
    pub fn output(&self, name: &str, chunk: Chunk) -> Delivered {
        let now = Instant::now();
        let mut lines = Vec::with_capacity(chunk.lines.len());
        for l in &chunk.lines {
            match l.bytes() {
                Ok(b) => lines.push((l.stream, b)),
                Err(e) => return Delivered::Answer(refuse(400, e)),
            }
        }
        let mut fx = Effects::default();
        let found = {
            let mut st = lock(&self.state);
            self.touch(&mut st, name, None, now, &mut fx);
            match Self::running(&mut st, name, &chunk.lease) {
                None => Delivered::Answer(stale_lease()),
                Some((id, r)) => {
                    let Phase::Running(rn) = &mut r.phase else {
                        return Delivered::Answer(stale_lease());
                    };
                    if rn.delivering {
                        Delivered::Answer(refuse(503, "busy: send the chunk again"))
                    } else if chunk.seq < rn.next_seq {
                        Delivered::Answer(json(
                            200,
                            &serde_json::json!({"ok": true, "duplicate": true}),
                        ))
                    } else if chunk.seq > rn.next_seq {
                        Delivered::Answer(refuse(
                            400,
                            format!("chunk {} out of order: expected {}", chunk.seq, rn.next_seq),
                        ))
                    } else {
                        rn.next_seq += 1;
                        rn.delivering = true;
                        Delivered::Lines(r.out.clone(), lines, id)
                    }
                }
            }
        };
        fx.run();
        found
    }

    /// The lines of a chunk reached the host.
    pub fn delivered(&self, run: RunId) {
        let mut st = lock(&self.state);
        if let Some(Run {
            phase: Phase::Running(rn),
            ..
        }) = st.runs.get_mut(&run)
        {
            rn.delivering = false;
        }
    }

    /// `POST /v1/exit`: the step ended on the agent.
    pub fn exit(&self, name: &str, exit: Exit) -> HttpResponse {
        let now = Instant::now();
        let mut fx = Effects::default();
        let resp = {
            let mut st = lock(&self.state);
            self.touch(&mut st, name, None, now, &mut fx);
            match Self::running(&mut st, name, &exit.lease) {
                None => stale_lease(),
                Some((id, r)) => {
                    let (busy, missing, stop) = match &r.phase {
                        Phase::Running(rn) => (
                            rn.delivering,
                            exit.chunks.saturating_sub(rn.next_seq),
                            rn.stop.map(|s| s.0),
                        ),
                        _ => (false, 0, None),
                    };
                    if busy {
                        refuse(503, "busy: send the exit again")
                    } else {
                        if missing > 0 {
                            fx.lines.push((
                                r.out.clone(),
                                vec![(
                                    Stream::Info,
                                    format!("[{missing} output chunk(s) were lost]").into_bytes(),
                                )],
                            ));
                        }
                        let result = match (stop, exit.exit_code, exit.error) {
                            (Some(why), _, _) => why.result(),
                            (None, _, Some(err)) => StepResult::failed(err),
                            (None, Some(code), None) => StepResult::exited(code),
                            (None, None, None) => {
                                StepResult::failed("the agent reported no result")
                            }
                        };
                        if let Some(r) = self.remove(&mut st, id) {
                            fx.done(r.out, result);
                        }
                        json(200, &serde_json::json!({"ok": true}))
                    }
                }
            }
        };
        fx.run();
        resp
    }

    /// The scp source of a running step: its path, and the listing if made.
    pub fn files(
        &self,
        name: &str,
        lease: &str,
    ) -> Result<(PathBuf, Option<Arc<Files>>), HttpResponse> {
        let now = Instant::now();
        let mut fx = Effects::default();
        let found = {
            let mut st = lock(&self.state);
            self.touch(&mut st, name, None, now, &mut fx);
            match Self::running(&mut st, name, lease) {
                None => Err(stale_lease()),
                Some((_, r)) => match (&r.src, &r.phase) {
                    (Some(src), Phase::Running(rn)) => Ok((src.clone(), rn.files.clone())),
                    _ => Err(refuse(400, "this step copies no files")),
                },
            }
        };
        fx.run();
        found
    }

    /// Keeps the listing made for a running step.
    pub fn set_files(&self, name: &str, lease: &str, files: Arc<Files>) {
        let mut st = lock(&self.state);
        if let Some((_, r)) = Self::running(&mut st, name, lease) {
            if let Phase::Running(rn) = &mut r.phase {
                rn.files = Some(files);
            }
        }
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

    // ---- time ----------------------------------------------------------

    /// One pass over every deadline; answers when to look next.
    pub fn reap(&self, now: Instant) -> Option<Instant> {
        let mut fx = Effects::default();
        let next = {
            let mut st = lock(&self.state);
            let next = self.reap_locked(&mut st, now, &mut fx);
            st.next_scan = next;
            next
        };
        fx.run();
        next
    }

    fn reap_locked(&self, st: &mut State, now: Instant, fx: &mut Effects) -> Option<Instant> {
        let s = &self.settings;
        let mut next: Option<Instant> = None;
        let mut soon = |t: Instant| {
            next = Some(next.map_or(t, |n: Instant| n.min(t)));
        };

        // Polls whose hold is over get an empty answer.
        let idle = self.answer();
        for a in st.agents.values_mut() {
            if let Some(h) = &a.held {
                if h.until <= now {
                    if let Some(h) = a.held.take() {
                        fx.respond(h.respond, json(200, &idle));
                    }
                } else {
                    soon(h.until);
                }
            }
        }

        enum Act {
            Fail(String),
            Requeue,
            Stop(StopReason),
        }
        let mut acts = Vec::new();
        for (id, r) in &st.runs {
            let agent = st.agents.get(&r.agent);
            let contact = agent.and_then(|a| a.contact.map(|c| c.0));
            match &r.phase {
                Phase::Queued | Phase::Offered { .. } => {
                    let wait = self.take_within(r.work.timeout_secs);
                    let deadline = r.queued + wait;
                    if deadline <= now {
                        let live = agent.is_some_and(|a| a.held.is_some())
                            || contact.is_some_and(|c| now.duration_since(c) < s.lost_after);
                        let msg = if live {
                            format!(
                                "agent {} did not take the step within {} s",
                                r.agent,
                                secs(wait)
                            )
                        } else {
                            format!(
                                "agent {} is not connected (waited {} s)",
                                r.agent,
                                secs(wait)
                            )
                        };
                        acts.push((*id, Act::Fail(msg)));
                        continue;
                    }
                    soon(deadline);
                    if let Phase::Offered { at, .. } = &r.phase {
                        if *at + s.offer_timeout <= now {
                            acts.push((*id, Act::Requeue));
                        } else {
                            soon(*at + s.offer_timeout);
                        }
                    }
                }
                Phase::Running(rn) => {
                    let last = contact.unwrap_or(rn.accepted).max(rn.accepted);
                    if last + s.lost_after <= now {
                        let msg = format!(
                            "agent lost: no contact from {} for {} s",
                            r.agent,
                            secs(now.duration_since(last))
                        );
                        acts.push((*id, Act::Fail(msg)));
                        continue;
                    }
                    soon(last + s.lost_after);
                    match rn.stop {
                        Some((why, give_up, _)) => {
                            if give_up <= now {
                                acts.push((*id, Act::Fail(why.result().error.unwrap_or_default())));
                                continue;
                            }
                            soon(give_up);
                        }
                        None if r.work.timeout_secs > 0 => {
                            let at = rn.accepted
                                + Duration::from_secs(r.work.timeout_secs)
                                + BACKSTOP_GRACE;
                            if at <= now {
                                acts.push((
                                    *id,
                                    Act::Stop(StopReason::Timeout(r.work.timeout_secs)),
                                ));
                            } else {
                                soon(at);
                            }
                        }
                        None => {}
                    }
                }
            }
        }

        let mut woken = Vec::new();
        for (id, act) in acts {
            match act {
                Act::Fail(msg) => {
                    if let Some(r) = self.remove(st, id) {
                        fx.done(r.out, StepResult::failed(msg));
                    }
                }
                Act::Requeue => {
                    self.requeue(st, id);
                    if let Some(r) = st.runs.get(&id) {
                        woken.push(r.agent.clone());
                    }
                }
                Act::Stop(why) => {
                    if let Some(r) = st.runs.get_mut(&id) {
                        if let Phase::Running(rn) = &mut r.phase {
                            let give_up = now + s.lost_after + CANCEL_GRACE;
                            rn.stop = Some((why, give_up, false));
                            soon(give_up);
                            woken.push(r.agent.clone());
                        }
                    }
                }
            }
        }
        for name in woken {
            self.hand_out(st, &name, now, fx);
            self.wake_with_stops(st, &name, now, fx);
        }
        // Work handed out above has offer deadlines of its own.
        if let Some(n) = st.next_scan.filter(|n| *n > now) {
            soon(n);
        }
        next
    }

    /// Runs the reaper on the calling thread until the process ends.
    pub fn reaper(self: &Arc<Self>) {
        loop {
            let now = Instant::now();
            let next = self.reap(now);
            let st = lock(&self.state);
            let wait = match st.next_scan.or(next) {
                Some(at) => at.saturating_duration_since(Instant::now()).max(MIN_SCAN),
                None => Duration::from_secs(3600),
            };
            let (st, _) = self
                .tick
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner());
            drop(st);
            // Whatever woke us, scans stay at least MIN_SCAN apart.
            let since = now.elapsed();
            if since < MIN_SCAN {
                std::thread::sleep(MIN_SCAN - since);
            }
        }
    }
}

/// Seconds as shown in messages: whole when whole, else one decimal.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if (s - s.round()).abs() < 0.05 {
        format!("{}", s.round() as u64)
    } else {
        format!("{s:.1}")
    }
}
