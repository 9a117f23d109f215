//! The agent's side: its requests (poll, heartbeat, accept, output, exit,
//! files) checked against the state, and the answers made of it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobx_plugin_api::{HttpResponse, Responder, RunId, StepResult, Stream};

use super::state::{Held, Phase, Run, Running, State};
use super::{
    json, lock, now_ms, random_id, refuse, stale_lease, Delivered, Effects, Files, Hub,
    BACKSTOP_GRACE, MAX_OFFERS,
};
use crate::proto::{Accept, Answer, Chunk, Exit, Hello};

impl Hub {
    /// Records contact; a new instance means the agent restarted and lost
    /// what it was running.
    pub(super) fn touch(
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
                if let Some(r) = st.remove(id) {
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
                st.requeue(id);
            }
        }
    }

    /// Answers the agent's held poll with queued work, if both exist.
    pub(super) fn hand_out(&self, st: &mut State, name: &str, now: Instant, fx: &mut Effects) {
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
    pub(super) fn offers(&self, st: &mut State, name: &str, now: Instant) -> Answer {
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
            let mut env = (*r.env).clone();
            env.append(&mut work.env);
            work.env = env;
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

    /// Answers a held poll with new stop requests at once.
    pub(super) fn wake_with_stops(
        &self,
        st: &mut State,
        name: &str,
        now: Instant,
        fx: &mut Effects,
    ) {
        let held = st.agents.get_mut(name).and_then(|a| a.held.take());
        if let Some(held) = held {
            let mut answer = self.offers(st, name, now);
            answer.cancel = st.stops(name, true);
            fx.respond(held.respond, json(200, &answer));
        }
    }

    /// Fails this agent's running steps that it no longer lists as running
    /// (an accept whose answer it never saw, a step it dropped), once they
    /// are old enough that the list cannot predate them.
    pub(super) fn reconcile(
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
                if let Some(r) = st.remove(id) {
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
            answer.cancel = st.stops(name, true);
            answer.stale = st.stale(name, &hello.running);
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
            answer.cancel = st.stops(name, false);
            answer.stale = st.stale(name, &hello.running);
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
                        r.env = Default::default();
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
            match st.running(name, &chunk.lease) {
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
            match st.running(name, &exit.lease) {
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
                        if let Some(r) = st.remove(id) {
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
            match st.running(name, lease) {
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
        if let Some((_, r)) = st.running(name, lease) {
            if let Phase::Running(rn) = &mut r.phase {
                rn.files = Some(files);
            }
        }
    }
}
