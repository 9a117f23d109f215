//! What the hub knows: agents, runs and their leases. Plain data and the
//! bookkeeping that keeps its indexes consistent; no host callbacks here.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use jobx_plugin_api::{Reporter, Responder, RunId, StepResult};

use crate::proto::{Manifest, Work};

/// A poll being held open.
pub(super) struct Held {
    pub respond: Responder,
    pub until: Instant,
}

/// One configured agent.
pub(super) struct Agent {
    pub digest: [u8; 32],
    /// Last request from the agent: monotonic, and wall clock for display.
    pub contact: Option<(Instant, i64)>,
    pub version: String,
    pub instance: String,
    /// Runs waiting to be handed out, oldest first.
    pub queue: VecDeque<RunId>,
    /// Runs offered to or running on this agent.
    pub active: Vec<RunId>,
    pub held: Option<Held>,
}

impl Agent {
    /// An agent not heard from yet.
    pub fn new(digest: [u8; 32]) -> Agent {
        Agent {
            digest,
            contact: None,
            version: String::new(),
            instance: String::new(),
            queue: VecDeque::new(),
            active: Vec::new(),
            held: None,
        }
    }
}

/// Why the daemon wants a handed-out step stopped; decides its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StopReason {
    Cancelled,
    Timeout(u64),
}

impl StopReason {
    pub fn result(self) -> StepResult {
        match self {
            StopReason::Cancelled => StepResult::failed("cancelled"),
            StopReason::Timeout(s) => StepResult::failed(format!("timeout after {s} s")),
        }
    }
}

/// A step the agent accepted and runs.
pub(super) struct Running {
    pub lease: String,
    pub accepted: Instant,
    pub accepted_ms: i64,
    pub next_seq: u64,
    /// A chunk is being handed to the host: the next report waits.
    pub delivering: bool,
    /// The stop request, when the daemon gives up waiting for its
    /// confirmation, and whether a poll answer carried it already.
    pub stop: Option<(StopReason, Instant, bool)>,
    /// The scp source as listed for the agent, with the real paths.
    pub files: Option<Arc<Files>>,
}

/// An `scp` source listing and the daemon-side path of each entry.
pub(crate) struct Files {
    pub manifest: Manifest,
    pub paths: Vec<PathBuf>,
}

pub(super) enum Phase {
    Queued,
    Offered { lease: String, at: Instant },
    Running(Box<Running>),
}

/// A step's environment without `JOBX_NODE`: the same for every node of a
/// batch, and large (OPEN-C3's `ip` lists the batch's nodes), so the runs
/// of a batch share one copy.
pub(super) type Env = Arc<BTreeMap<String, String>>;

pub(super) struct Run {
    pub agent: String,
    /// `work.env` holds only what is this run's own (`JOBX_NODE`); the rest
    /// is in `env`.
    pub work: Work,
    pub env: Env,
    pub src: Option<PathBuf>,
    pub out: Reporter,
    pub queued: Instant,
    pub phase: Phase,
}

#[derive(Default)]
pub(super) struct State {
    pub agents: HashMap<String, Agent>,
    pub runs: HashMap<RunId, Run>,
    pub leases: HashMap<String, RunId>,
    /// When the reaper plans to look next.
    pub next_scan: Option<Instant>,
    /// The environments of queued and offered runs, one copy each.
    pub envs: HashSet<Env>,
    /// Forgotten environments are dropped when `envs` grows past this.
    pub envs_prune_at: usize,
}

impl State {
    /// The one shared copy of this environment.
    pub fn share_env(&mut self, env: BTreeMap<String, String>) -> Env {
        if let Some(e) = self.envs.get(&env) {
            return e.clone();
        }
        let e = Arc::new(env);
        self.envs.insert(e.clone());
        if self.envs.len() > self.envs_prune_at {
            self.envs.retain(|e| Arc::strong_count(e) > 1);
            self.envs_prune_at = (2 * self.envs.len()).max(64);
        }
        e
    }

    /// Removes a run and its lease and queue entry.
    pub fn remove(&mut self, run: RunId) -> Option<Run> {
        let r = self.runs.remove(&run)?;
        match &r.phase {
            Phase::Queued => {
                if let Some(a) = self.agents.get_mut(&r.agent) {
                    a.queue.retain(|q| *q != run);
                }
            }
            Phase::Offered { lease, .. } => {
                self.leases.remove(lease);
            }
            Phase::Running(rn) => {
                self.leases.remove(&rn.lease);
            }
        }
        if !matches!(r.phase, Phase::Queued) {
            if let Some(a) = self.agents.get_mut(&r.agent) {
                a.active.retain(|q| *q != run);
            }
        }
        Some(r)
    }

    /// An offered step goes back to the front of its agent's queue, its
    /// lease revoked: the old lease can no longer be accepted, so the step
    /// still runs at most once.
    pub fn requeue(&mut self, id: RunId) {
        let Some(r) = self.runs.get_mut(&id) else {
            return;
        };
        if let Phase::Offered { lease, .. } = std::mem::replace(&mut r.phase, Phase::Queued) {
            self.leases.remove(&lease);
        }
        let agent = r.agent.clone();
        let queued = r.queued;
        if let Some(a) = self.agents.get_mut(&agent) {
            a.active.retain(|q| *q != id);
            // Keep the queue in start order.
            let pos = a
                .queue
                .iter()
                .position(|q| self.runs.get(q).is_some_and(|o| o.queued > queued))
                .unwrap_or(a.queue.len());
            a.queue.insert(pos, id);
        }
    }

    /// Finds this agent's running step by lease.
    pub fn running(&mut self, name: &str, lease: &str) -> Option<(RunId, &mut Run)> {
        let id = *self.leases.get(lease)?;
        let r = self.runs.get_mut(&id)?;
        if r.agent != name || !matches!(&r.phase, Phase::Running(rn) if rn.lease == lease) {
            return None;
        }
        Some((id, r))
    }

    /// Leases of this agent with a stop request; with `fresh`, only those
    /// no poll answer carried yet (and marks them carried).
    pub fn stops(&mut self, name: &str, fresh: bool) -> Vec<String> {
        let mut out = Vec::new();
        let active = self
            .agents
            .get(name)
            .map(|a| a.active.clone())
            .unwrap_or_default();
        for id in active {
            let Some(r) = self.runs.get_mut(&id) else {
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

    /// Leases in `running` that are not this agent's running steps.
    pub fn stale(&self, name: &str, running: &[String]) -> Vec<String> {
        running
            .iter()
            .filter(|lease| {
                !self
                    .leases
                    .get(*lease)
                    .and_then(|id| self.runs.get(id))
                    .is_some_and(|r| r.agent == name && matches!(r.phase, Phase::Running(_)))
            })
            .cloned()
            .collect()
    }
}
