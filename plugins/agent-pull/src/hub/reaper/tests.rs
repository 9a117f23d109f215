//! Table tests of [`due`]: one agent, a few runs, a moment; what is due.

use std::time::{Duration, Instant};

use jobx_plugin_api::testing::Recorder;
use jobx_plugin_api::{Responder, RunId};

use super::{due, Due, Failure, Timing};
use crate::hub::state::{Agent, Held, Phase, Run, Running, State, StopReason};
use crate::proto::Work;

const TIMING: Timing = Timing {
    connect_timeout: Duration::from_secs(5),
    offer_timeout: Duration::from_secs(2),
    lost_after: Duration::from_secs(3),
};

/// A run's phase, times in ms after the start of the case.
enum P {
    Queued,
    Offered(u64),
    Running {
        accepted: u64,
        stop: Option<(StopReason, u64)>,
    },
}

/// A run of agent `a1`: id, queued at (ms), its own limit (s), phase.
struct R(u64, u64, u64, P);

#[derive(Default)]
struct Case {
    name: &'static str,
    /// Last contact from `a1` (ms).
    contact: Option<u64>,
    /// `a1`'s poll is held until (ms).
    held: Option<u64>,
    runs: Vec<R>,
    now: u64,
    polls_over: bool,
    failed: Vec<(u64, Failure)>,
    withdrawn: Vec<u64>,
    overdue: Vec<(u64, u64)>,
    next: Option<u64>,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn state(c: &Case, t0: Instant) -> State {
    let mut st = State::default();
    let mut a = Agent::new([0; 32]);
    a.contact = c.contact.map(|m| (t0 + ms(m), 0));
    a.held = c.held.map(|m| Held {
        respond: Responder::from_fn(|_| {}),
        until: t0 + ms(m),
    });
    for R(id, queued, limit, phase) in &c.runs {
        let lease = format!("lease{id}");
        let phase = match phase {
            P::Queued => {
                a.queue.push_back(RunId(*id));
                Phase::Queued
            }
            P::Offered(at) => Phase::Offered {
                lease: lease.clone(),
                at: t0 + ms(*at),
            },
            P::Running { accepted, stop } => Phase::Running(Box::new(Running {
                lease: lease.clone(),
                accepted: t0 + ms(*accepted),
                accepted_ms: 0,
                next_seq: 0,
                delivering: false,
                stop: stop.map(|(why, at)| (why, t0 + ms(at), true)),
                files: None,
            })),
        };
        if !matches!(phase, Phase::Queued) {
            a.active.push(RunId(*id));
            st.leases.insert(lease, RunId(*id));
        }
        st.runs.insert(
            RunId(*id),
            Run {
                agent: "a1".into(),
                work: Work {
                    timeout_secs: *limit,
                    ..Work::default()
                },
                env: Default::default(),
                src: None,
                out: Recorder::new().reporter(),
                queued: t0 + ms(*queued),
                phase,
            },
        );
    }
    st.agents.insert("a1".into(), a);
    st
}

fn cases() -> Vec<Case> {
    let running = |accepted| P::Running {
        accepted,
        stop: None,
    };
    vec![
        Case {
            name: "nothing at all",
            ..Case::default()
        },
        Case {
            name: "held poll still open",
            held: Some(2000),
            now: 1000,
            next: Some(2000),
            ..Case::default()
        },
        Case {
            name: "held poll over",
            held: Some(2000),
            now: 2000,
            polls_over: true,
            ..Case::default()
        },
        Case {
            name: "queued within connect_timeout",
            runs: vec![R(1, 0, 60, P::Queued)],
            now: 1000,
            next: Some(5000),
            ..Case::default()
        },
        Case {
            name: "queued, no limit of its own",
            runs: vec![R(1, 0, 0, P::Queued)],
            now: 4999,
            next: Some(5000),
            ..Case::default()
        },
        Case {
            name: "queued, its own limit shortens the wait",
            runs: vec![R(1, 0, 2, P::Queued)],
            now: 1000,
            next: Some(2000),
            ..Case::default()
        },
        Case {
            name: "connect timed out, agent never seen",
            runs: vec![R(1, 0, 60, P::Queued)],
            now: 5000,
            failed: vec![(
                1,
                Failure::NotTaken {
                    wait: ms(5000),
                    live: false,
                },
            )],
            ..Case::default()
        },
        Case {
            name: "connect timed out, agent seen long ago",
            contact: Some(1000),
            runs: vec![R(1, 0, 60, P::Queued)],
            now: 5000,
            failed: vec![(
                1,
                Failure::NotTaken {
                    wait: ms(5000),
                    live: false,
                },
            )],
            ..Case::default()
        },
        Case {
            name: "connect timed out, agent in contact",
            contact: Some(4000),
            runs: vec![R(1, 0, 60, P::Queued)],
            now: 5000,
            failed: vec![(
                1,
                Failure::NotTaken {
                    wait: ms(5000),
                    live: true,
                },
            )],
            ..Case::default()
        },
        Case {
            name: "connect timed out, agent's poll held",
            held: Some(6000),
            runs: vec![R(1, 0, 60, P::Queued)],
            now: 5000,
            failed: vec![(
                1,
                Failure::NotTaken {
                    wait: ms(5000),
                    live: true,
                },
            )],
            next: Some(6000),
            ..Case::default()
        },
        Case {
            name: "offer still open",
            contact: Some(1000),
            runs: vec![R(1, 0, 60, P::Offered(1000))],
            now: 2000,
            next: Some(3000),
            ..Case::default()
        },
        Case {
            name: "offer withdrawn",
            contact: Some(1000),
            runs: vec![R(1, 0, 60, P::Offered(1000))],
            now: 3000,
            withdrawn: vec![1],
            next: Some(5000),
            ..Case::default()
        },
        Case {
            name: "connect timeout wins over offer expiry",
            contact: Some(4500),
            runs: vec![R(1, 0, 60, P::Offered(1000))],
            now: 5000,
            failed: vec![(
                1,
                Failure::NotTaken {
                    wait: ms(5000),
                    live: true,
                },
            )],
            ..Case::default()
        },
        Case {
            name: "running, agent in contact",
            contact: Some(2000),
            runs: vec![R(1, 0, 60, running(1000))],
            now: 2500,
            next: Some(5000),
            ..Case::default()
        },
        Case {
            name: "running, lease lost",
            contact: Some(1500),
            runs: vec![R(1, 0, 60, running(1000))],
            now: 4500,
            failed: vec![(1, Failure::Lost { silent: ms(3000) })],
            ..Case::default()
        },
        Case {
            name: "contact before the accept counts from the accept",
            contact: Some(0),
            runs: vec![R(1, 0, 60, running(1000))],
            now: 3999,
            next: Some(4000),
            ..Case::default()
        },
        Case {
            name: "running, never heard from after the accept",
            runs: vec![R(1, 0, 60, running(1000))],
            now: 4000,
            failed: vec![(1, Failure::Lost { silent: ms(3000) })],
            ..Case::default()
        },
        Case {
            name: "past its own limit: the agent is asked to stop",
            contact: Some(10_500),
            runs: vec![R(1, 0, 1, running(0))],
            now: 11_000,
            overdue: vec![(1, 1)],
            next: Some(13_500),
            ..Case::default()
        },
        Case {
            name: "within its own limit and the grace",
            contact: Some(10_500),
            runs: vec![R(1, 0, 1, running(0))],
            now: 10_999,
            next: Some(11_000),
            ..Case::default()
        },
        Case {
            name: "no limit: no backstop",
            contact: Some(1000),
            runs: vec![R(1, 0, 0, running(0))],
            now: 2000,
            next: Some(4000),
            ..Case::default()
        },
        Case {
            name: "stop pending",
            contact: Some(4500),
            runs: vec![R(
                1,
                0,
                60,
                P::Running {
                    accepted: 0,
                    stop: Some((StopReason::Cancelled, 8000)),
                },
            )],
            now: 5000,
            next: Some(7500),
            ..Case::default()
        },
        Case {
            name: "stop never confirmed",
            contact: Some(4500),
            runs: vec![R(
                1,
                0,
                60,
                P::Running {
                    accepted: 0,
                    stop: Some((StopReason::Timeout(60), 5000)),
                },
            )],
            now: 5000,
            failed: vec![(1, Failure::Unconfirmed(StopReason::Timeout(60)))],
            next: Some(7500),
            ..Case::default()
        },
        Case {
            name: "several at once, in run order",
            contact: Some(9000),
            held: Some(9500),
            runs: vec![
                R(4, 8000, 60, P::Queued),
                R(3, 7000, 60, P::Offered(7000)),
                R(2, 0, 60, P::Queued),
                R(
                    1,
                    0,
                    60,
                    P::Running {
                        accepted: 0,
                        stop: Some((StopReason::Cancelled, 9000)),
                    },
                ),
            ],
            now: 9000,
            failed: vec![
                (1, Failure::Unconfirmed(StopReason::Cancelled)),
                (
                    2,
                    Failure::NotTaken {
                        wait: ms(5000),
                        live: true,
                    },
                ),
            ],
            withdrawn: vec![3],
            next: Some(9500),
            ..Case::default()
        },
    ]
}

#[test]
fn what_is_due() {
    for c in cases() {
        let t0 = Instant::now();
        let st = state(&c, t0);
        let got = due(&st, TIMING, t0 + ms(c.now));
        let want = Due {
            polls_over: if c.polls_over {
                vec!["a1".into()]
            } else {
                vec![]
            },
            failed: c.failed.iter().map(|(id, f)| (RunId(*id), *f)).collect(),
            withdrawn: c.withdrawn.iter().map(|id| RunId(*id)).collect(),
            overdue: c.overdue.iter().map(|(id, s)| (RunId(*id), *s)).collect(),
            next: c.next.map(|m| t0 + ms(m)),
        };
        assert_eq!(got, want, "case {:?}", c.name);
    }
}

#[test]
fn failures_read_as_before() {
    let text = |f: Failure| Failure::result(f, "a1").error.unwrap_or_default();
    assert_eq!(
        text(Failure::NotTaken {
            wait: ms(5000),
            live: true
        }),
        "agent a1 did not take the step within 5 s"
    );
    assert_eq!(
        text(Failure::NotTaken {
            wait: ms(2500),
            live: false
        }),
        "agent a1 is not connected (waited 2.5 s)"
    );
    assert_eq!(
        text(Failure::Lost { silent: ms(3000) }),
        "agent lost: no contact from a1 for 3 s"
    );
    assert_eq!(
        text(Failure::Unconfirmed(StopReason::Cancelled)),
        "cancelled"
    );
    assert_eq!(
        text(Failure::Unconfirmed(StopReason::Timeout(7))),
        "timeout after 7 s"
    );
}
