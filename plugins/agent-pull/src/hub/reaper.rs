//! Deadlines: [`due`] says, purely, what is due at a time; the timer thread
//! ([`Hub::reaper`]) calls it under the lock and acts on the answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobx_plugin_api::{RunId, StepResult};

use super::state::{Phase, State, StopReason};
use super::{json, lock, Effects, Hub, BACKSTOP_GRACE, CANCEL_GRACE, MIN_SCAN};
use crate::config::Settings;

/// The configured durations the deadlines are made of.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timing {
    pub connect_timeout: Duration,
    pub offer_timeout: Duration,
    pub lost_after: Duration,
}

impl Timing {
    pub fn of(s: &Settings) -> Timing {
        Timing {
            connect_timeout: s.connect_timeout,
            offer_timeout: s.offer_timeout,
            lost_after: s.lost_after,
        }
    }
}

/// How long a step may wait for its agent to take it: `connect_timeout`,
/// but never longer than the step's own time limit.
pub(super) fn take_within(connect_timeout: Duration, timeout_secs: u64) -> Duration {
    if timeout_secs > 0 {
        connect_timeout.min(Duration::from_secs(timeout_secs))
    } else {
        connect_timeout
    }
}

/// Why a step ends failed at a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// Not taken within `wait`; `live` when the agent was in contact.
    NotTaken { wait: Duration, live: bool },
    /// Running, but its agent has been silent for `silent`.
    Lost { silent: Duration },
    /// A stop request the agent never confirmed.
    Unconfirmed(StopReason),
}

impl Failure {
    pub fn result(self, agent: &str) -> StepResult {
        match self {
            Failure::NotTaken { wait, live: true } => StepResult::failed(format!(
                "agent {agent} did not take the step within {} s",
                secs(wait)
            )),
            Failure::NotTaken { wait, live: false } => StepResult::failed(format!(
                "agent {agent} is not connected (waited {} s)",
                secs(wait)
            )),
            Failure::Lost { silent } => StepResult::failed(format!(
                "agent lost: no contact from {agent} for {} s",
                secs(silent)
            )),
            Failure::Unconfirmed(why) => why.result(),
        }
    }
}

/// What is due at one instant. Lists are sorted, so equal states give
/// equal answers.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Due {
    /// Agents whose held poll is over: answered with no work.
    pub polls_over: Vec<String>,
    /// Steps that end failed: connect timeouts, lost leases, unconfirmed stops.
    pub failed: Vec<(RunId, Failure)>,
    /// Offers not accepted in time: withdrawn and queued again.
    pub withdrawn: Vec<RunId>,
    /// Running steps past their own limit (seconds) and the backstop
    /// grace: the agent is asked to stop them.
    pub overdue: Vec<(RunId, u64)>,
    /// The earliest deadline still ahead, counting the give-up time of the
    /// stops asked for above.
    pub next: Option<Instant>,
}

/// What is due at `now`, and when the next deadline is.
pub(super) fn due(st: &State, t: Timing, now: Instant) -> Due {
    let mut d = Due::default();
    let mut next: Option<Instant> = None;
    let mut soon = |at: Instant| {
        next = Some(next.map_or(at, |n: Instant| n.min(at)));
    };

    for (name, a) in &st.agents {
        if let Some(h) = &a.held {
            if h.until <= now {
                d.polls_over.push(name.clone());
            } else {
                soon(h.until);
            }
        }
    }

    for (id, r) in &st.runs {
        let agent = st.agents.get(&r.agent);
        let contact = agent.and_then(|a| a.contact.map(|c| c.0));
        match &r.phase {
            Phase::Queued | Phase::Offered { .. } => {
                let wait = take_within(t.connect_timeout, r.work.timeout_secs);
                let deadline = r.queued + wait;
                if deadline <= now {
                    let live = agent.is_some_and(|a| a.held.is_some())
                        || contact.is_some_and(|c| now.duration_since(c) < t.lost_after);
                    d.failed.push((*id, Failure::NotTaken { wait, live }));
                    continue;
                }
                soon(deadline);
                if let Phase::Offered { at, .. } = &r.phase {
                    if *at + t.offer_timeout <= now {
                        d.withdrawn.push(*id);
                    } else {
                        soon(*at + t.offer_timeout);
                    }
                }
            }
            Phase::Running(rn) => {
                let last = contact.unwrap_or(rn.accepted).max(rn.accepted);
                if last + t.lost_after <= now {
                    let silent = now.duration_since(last);
                    d.failed.push((*id, Failure::Lost { silent }));
                    continue;
                }
                soon(last + t.lost_after);
                match rn.stop {
                    Some((why, give_up, _)) => {
                        if give_up <= now {
                            d.failed.push((*id, Failure::Unconfirmed(why)));
                            continue;
                        }
                        soon(give_up);
                    }
                    None if r.work.timeout_secs > 0 => {
                        let at =
                            rn.accepted + Duration::from_secs(r.work.timeout_secs) + BACKSTOP_GRACE;
                        if at <= now {
                            d.overdue.push((*id, r.work.timeout_secs));
                            soon(now + t.lost_after + CANCEL_GRACE);
                        } else {
                            soon(at);
                        }
                    }
                    None => {}
                }
            }
        }
    }
    d.next = next;
    d.polls_over.sort();
    d.failed.sort_by_key(|f| f.0);
    d.withdrawn.sort();
    d.overdue.sort();
    d
}

impl Hub {
    /// One pass over every deadline; answers when to look next.
    pub fn reap(&self, now: Instant) -> Option<Instant> {
        let mut fx = Effects::default();
        let next = {
            let mut st = lock(&self.state);
            let due = due(&st, Timing::of(&self.settings), now);
            let next = self.act(&mut st, due, now, &mut fx);
            st.next_scan = next;
            next
        };
        fx.run();
        next
    }

    /// Does what is due; answers when to look next.
    fn act(&self, st: &mut State, due: Due, now: Instant, fx: &mut Effects) -> Option<Instant> {
        let idle = self.answer();
        for name in &due.polls_over {
            if let Some(h) = st.agents.get_mut(name).and_then(|a| a.held.take()) {
                fx.respond(h.respond, json(200, &idle));
            }
        }
        for (id, failure) in due.failed {
            if let Some(r) = st.remove(id) {
                let result = failure.result(&r.agent);
                fx.done(r.out, result);
            }
        }
        let mut woken = Vec::new();
        for id in due.withdrawn {
            st.requeue(id);
            if let Some(r) = st.runs.get(&id) {
                woken.push(r.agent.clone());
            }
        }
        for (id, limit) in due.overdue {
            if let Some(r) = st.runs.get_mut(&id) {
                if let Phase::Running(rn) = &mut r.phase {
                    let give_up = now + self.settings.lost_after + CANCEL_GRACE;
                    rn.stop = Some((StopReason::Timeout(limit), give_up, false));
                    woken.push(r.agent.clone());
                }
            }
        }
        for name in woken {
            self.hand_out(st, &name, now, fx);
            self.wake_with_stops(st, &name, now, fx);
        }
        // Work handed out above has offer deadlines of its own.
        match st.next_scan.filter(|n| *n > now) {
            Some(n) => Some(due.next.map_or(n, |d| d.min(n))),
            None => due.next,
        }
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

#[cfg(test)]
mod tests;
