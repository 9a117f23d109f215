//! The protocol's rules, driven in-process through the HTTP routing with a
//! simulated clock for the reaper.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobx_plugin_api::{
    HttpRequest, HttpResponse, Node, Reporter, Responder, RunId, RunSink, StepKind, StepRequest,
    StepResult, Stream,
};
use serde_json::{json, Value};

use crate::config::Settings;
use crate::files::Pool;
use crate::http::serve;
use crate::hub::Hub;

#[derive(Default)]
struct Sink {
    lines: Mutex<Vec<(Stream, String)>>,
    done: Mutex<Option<StepResult>>,
}

impl RunSink for Sink {
    fn line(&self, stream: Stream, text: &[u8]) {
        self.lines
            .lock()
            .unwrap()
            .push((stream, String::from_utf8_lossy(text).into_owned()));
    }
    fn done(&self, result: StepResult) {
        *self.done.lock().unwrap() = Some(result);
    }
}

impl Sink {
    fn result(&self) -> Option<StepResult> {
        self.done.lock().unwrap().clone()
    }
    fn texts(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.1.clone())
            .collect()
    }
}

struct Fx {
    hub: Arc<Hub>,
    pool: Arc<Pool>,
}

impl Fx {
    fn new(extra: Value) -> Fx {
        let mut cfg = json!({
            "agents": [{"name": "a1", "token": "t1"}, {"name": "a2", "token": "t2"}],
            "lost_after": 3, "connect_timeout": 5, "poll_hold": 2
        });
        if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        Fx {
            hub: Hub::new(Settings::parse(cfg).unwrap()),
            pool: Arc::new(Pool::spawn(1).unwrap()),
        }
    }

    /// Sends a request; answers the receiver of its (maybe later) response.
    fn send(
        &self,
        agent: &str,
        token: &str,
        method: &str,
        path: &str,
        body: Value,
    ) -> mpsc::Receiver<HttpResponse> {
        let (tx, rx) = mpsc::channel();
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let req = HttpRequest {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: vec![
                ("X-Jobx-Agent".into(), agent.into()),
                ("Authorization".into(), format!("Bearer {token}")),
            ],
            body: if body.is_null() {
                vec![]
            } else {
                body.to_string().into_bytes()
            },
            ..HttpRequest::default()
        };
        serve(
            &self.hub,
            &self.pool,
            req,
            Responder::from_fn(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx
    }

    fn call(&self, agent: &str, path: &str, body: Value) -> (u16, Value) {
        let token = if agent == "a1" { "t1" } else { "t2" };
        let rx = self.send(agent, token, "POST", path, body);
        decode(rx.recv_timeout(Duration::from_secs(5)).expect("an answer"))
    }

    fn start(&self, node: &str, run: u64) -> Arc<Sink> {
        let sink = Arc::new(Sink::default());
        let step = StepRequest {
            task: "task00000001".into(),
            step: "step1".into(),
            node: Node {
                name: node.into(),
                ..Node::default()
            },
            kind: StepKind::Cmd {
                script: "echo hi".into(),
                interpreter: "sh".into(),
                args: vec![],
            },
            timeout_secs: 60,
            ..StepRequest::default()
        };
        self.hub
            .start(RunId(run), step, Reporter::from_sink(sink.clone()))
            .unwrap();
        sink
    }

    /// Polls without holding; answers the leases handed out.
    fn take(&self, agent: &str, instance: &str) -> Vec<String> {
        let token = if agent == "a1" { "t1" } else { "t2" };
        let rx = self.send(
            agent,
            token,
            "POST",
            "/v1/poll?wait_ms=0",
            json!({"instance": instance, "version": "9.9"}),
        );
        let (st, v) = decode(rx.recv_timeout(Duration::from_secs(5)).unwrap());
        assert_eq!(st, 200);
        v["work"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["lease"].as_str().unwrap().to_string())
            .collect()
    }
}

fn decode(r: HttpResponse) -> (u16, Value) {
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[test]
fn every_node_gets_the_whole_environment_and_its_own_node() {
    let fx = Fx::new(json!({}));
    for (run, node) in [(1, "a1"), (2, "a2")] {
        let env = [
            ("JOBX_NODE", node),
            ("JOBX_TASK", "task00000001"),
            ("ip", "a1,a2"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        let step = StepRequest {
            task: "task00000001".into(),
            node: Node {
                name: node.into(),
                ..Node::default()
            },
            env,
            ..StepRequest::default()
        };
        let sink = Arc::new(Sink::default());
        fx.hub
            .start(RunId(run), step, Reporter::from_sink(sink))
            .unwrap();
    }
    for node in ["a1", "a2"] {
        let (st, v) = fx.call(node, "/v1/poll?wait_ms=0", json!({"instance": "i"}));
        assert_eq!(st, 200);
        assert_eq!(
            v["work"][0]["env"],
            json!({"JOBX_NODE": node, "JOBX_TASK": "task00000001", "ip": "a1,a2"})
        );
    }
}

#[test]
fn a_step_runs_once_with_its_output_stored_once() {
    let fx = Fx::new(json!({}));
    let sink = fx.start("a1", 1);
    let leases = fx.take("a1", "i1");
    assert_eq!(leases.len(), 1);
    let lease = &leases[0];
    // Nothing more to hand out: the step is never offered twice.
    assert!(fx.take("a1", "i1").is_empty());
    assert_eq!(
        fx.call(
            "a1",
            "/v1/accept",
            json!({"lease": lease, "instance": "i1"})
        )
        .0,
        200
    );
    assert_eq!(
        fx.call(
            "a1",
            "/v1/accept",
            json!({"lease": lease, "instance": "i1"})
        )
        .0,
        409
    );
    let chunk = json!({"lease": lease, "seq": 0, "lines": [
        {"stream": "stdout", "text": "hello"}, {"stream": "stderr", "base64": "/w=="}]});
    assert_eq!(
        fx.call("a1", "/v1/output", chunk.clone()),
        (200, json!({"ok": true}))
    );
    let (st, v) = fx.call("a1", "/v1/output", chunk);
    assert_eq!((st, v["duplicate"].clone()), (200, json!(true)));
    let gap = json!({"lease": lease, "seq": 5, "lines": []});
    assert_eq!(fx.call("a1", "/v1/output", gap).0, 400);
    assert_eq!(
        sink.texts(),
        vec!["hello".to_string(), "\u{fffd}".to_string()]
    );
    assert_eq!(
        fx.call(
            "a1",
            "/v1/exit",
            json!({"lease": lease, "chunks": 1, "exit_code": 3})
        )
        .0,
        200
    );
    assert_eq!(sink.result(), Some(StepResult::exited(3)));
    // The lease is gone: late reports are refused and the agent told to stop.
    let (st, v) = fx.call(
        "a1",
        "/v1/output",
        json!({"lease": lease, "seq": 1, "lines": []}),
    );
    assert_eq!((st, v["stale"].clone()), (409, json!(true)));
}

#[test]
fn a_held_poll_is_answered_when_work_arrives() {
    let fx = Fx::new(json!({}));
    let rx = fx.send("a1", "t1", "POST", "/v1/poll", json!({"instance": "i1"}));
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "held");
    fx.start("a1", 1);
    let (st, v) = decode(rx.recv_timeout(Duration::from_secs(2)).unwrap());
    assert_eq!(st, 200);
    assert_eq!(v["work"][0]["kind"], "cmd");
    assert_eq!(v["work"][0]["script"], "echo hi");
    assert_eq!(v["work"][0]["node"], "a1");
    assert_eq!(v["lost_after_ms"], 3000);
    assert_eq!(v["heartbeat_ms"], 1000);
    // With nothing to do, the hold ends empty.
    let rx = fx.send("a1", "t1", "POST", "/v1/poll", json!({"instance": "i1"}));
    fx.hub.reap(Instant::now() + Duration::from_secs(3));
    let (_, v) = decode(rx.recv_timeout(Duration::from_secs(2)).unwrap());
    assert_eq!(v["work"], json!([]));
}

#[test]
fn agents_authenticate_and_see_only_their_own_work() {
    let fx = Fx::new(json!({}));
    for (agent, token) in [("a1", "t2"), ("a1", ""), ("", "t1"), ("zz", "t1")] {
        let rx = fx.send(agent, token, "POST", "/v1/poll?wait_ms=0", json!({}));
        assert_eq!(rx.recv().unwrap().status, 401, "{agent}/{token}");
    }
    fx.start("a2", 1);
    assert!(fx.take("a1", "i1").is_empty());
    let leases = fx.take("a2", "j1");
    assert_eq!(leases.len(), 1);
    // a1 cannot act on a2's lease.
    assert_eq!(
        fx.call("a1", "/v1/accept", json!({"lease": leases[0]})).0,
        409
    );
    assert_eq!(
        fx.call("a2", "/v1/accept", json!({"lease": leases[0]})).0,
        200
    );
    assert_eq!(
        fx.call(
            "a1",
            "/v1/exit",
            json!({"lease": leases[0], "exit_code": 0})
        )
        .0,
        409
    );
    assert!(fx
        .hub
        .start(
            RunId(9),
            StepRequest::default(),
            Reporter::from_sink(Arc::new(Sink::default()))
        )
        .is_err());
}

#[test]
fn unconnected_and_lost_agents_fail_their_nodes() {
    let fx = Fx::new(json!({}));
    let never = fx.start("a2", 1);
    let lost = fx.start("a1", 2);
    let lease = fx.take("a1", "i1").remove(0);
    assert_eq!(fx.call("a1", "/v1/accept", json!({"lease": lease})).0, 200);
    fx.hub.reap(Instant::now() + Duration::from_secs(1));
    assert_eq!(lost.result(), None);
    fx.hub.reap(Instant::now() + Duration::from_millis(3100));
    let r = lost.result().unwrap().error.unwrap();
    assert!(r.starts_with("agent lost"), "{r}");
    assert_eq!(never.result(), None);
    fx.hub.reap(Instant::now() + Duration::from_millis(5100));
    assert_eq!(
        never.result().unwrap().error.unwrap(),
        "agent a2 is not connected (waited 5 s)"
    );
}

#[test]
fn stop_reaches_a_waiting_agent_at_once() {
    let fx = Fx::new(json!({}));
    let sink = fx.start("a1", 1);
    let lease = fx.take("a1", "i1").remove(0);
    fx.call("a1", "/v1/accept", json!({"lease": lease}));
    let rx = fx.send(
        "a1",
        "t1",
        "POST",
        "/v1/poll",
        json!({"instance": "i1", "running": [lease]}),
    );
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    fx.hub.cancel(RunId(1));
    let (_, v) = decode(rx.recv_timeout(Duration::from_secs(2)).unwrap());
    assert_eq!(v["cancel"], json!([lease]));
    // Heartbeats repeat it; the next poll does not (no busy loop).
    let (_, v) = fx.call(
        "a1",
        "/v1/heartbeat",
        json!({"instance": "i1", "running": [lease]}),
    );
    assert_eq!(v["cancel"], json!([lease]));
    assert_eq!(v["stale"], json!([]));
    assert_eq!(sink.result(), None, "waits for the agent to confirm");
    fx.call(
        "a1",
        "/v1/exit",
        json!({"lease": lease, "error": "killed by signal 15"}),
    );
    assert_eq!(sink.result(), Some(StepResult::failed("cancelled")));
    // A queued step is simply dropped.
    let queued = fx.start("a2", 2);
    fx.hub.cancel(RunId(2));
    assert_eq!(queued.result(), Some(StepResult::failed("cancelled")));
    fx.hub.cancel(RunId(77));
}

#[test]
fn an_unaccepted_offer_is_revoked_before_it_is_offered_again() {
    let fx = Fx::new(json!({}));
    let sink = fx.start("a1", 1);
    let first = fx.take("a1", "i1").remove(0);
    // The answer was lost: after the offer timeout the step is offered anew.
    fx.hub.reap(Instant::now() + Duration::from_millis(2100));
    let second = fx.take("a1", "i1").remove(0);
    assert_ne!(first, second);
    assert_eq!(fx.call("a1", "/v1/accept", json!({"lease": first})).0, 409);
    assert_eq!(fx.call("a1", "/v1/accept", json!({"lease": second})).0, 200);
    assert_eq!(sink.result(), None);
}

#[test]
fn a_restarted_agent_loses_its_running_steps_and_learns_stale_leases() {
    let fx = Fx::new(json!({}));
    let sink = fx.start("a1", 1);
    let lease = fx.take("a1", "i1").remove(0);
    fx.call("a1", "/v1/accept", json!({"lease": lease}));
    let (_, v) = fx.call(
        "a1",
        "/v1/heartbeat",
        json!({"instance": "i1", "running": [lease, "old"]}),
    );
    assert_eq!(v["stale"], json!(["old"]));
    fx.take("a1", "i2");
    assert_eq!(
        sink.result(),
        Some(StepResult::failed("agent lost: the agent restarted"))
    );
}

#[test]
fn the_agent_list_needs_a_global_role() {
    let fx = Fx::new(json!({}));
    fx.take("a1", "i1");
    let ask = |user: Option<&str>, roles: &[(&str, &str)]| {
        let (tx, rx) = mpsc::channel();
        let req = HttpRequest {
            method: "GET".into(),
            path: "/agents".into(),
            user: user.map(String::from),
            roles: roles
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..HttpRequest::default()
        };
        serve(
            &fx.hub,
            &fx.pool,
            req,
            Responder::from_fn(move |r| {
                let _ = tx.send(r);
            }),
        );
        decode(rx.recv().unwrap())
    };
    assert_eq!(ask(None, &[]).0, 401);
    assert_eq!(ask(Some("p"), &[("7", "admin")]).0, 403);
    let (st, v) = ask(Some("r"), &[("*", "read")]);
    assert_eq!(st, 200);
    assert_eq!(v["data"][0]["name"], "a1");
    assert_eq!(v["data"][0]["version"], "9.9");
    assert_eq!(v["data"][0]["connected"], true);
    assert_eq!(v["data"][1]["name"], "a2");
    assert_eq!(v["data"][1]["last_contact"], Value::Null);
}

#[test]
fn a_running_step_the_agent_does_not_list_fails_after_a_grace() {
    let fx = Fx::new(json!({}));
    let sink = fx.start("a1", 1);
    let lease = fx.take("a1", "i1").remove(0);
    fx.call("a1", "/v1/accept", json!({"lease": lease}));
    // Right after the accept an older list may still lack it: no harm done.
    fx.call(
        "a1",
        "/v1/heartbeat",
        json!({"instance": "i1", "running": []}),
    );
    assert_eq!(sink.result(), None);
    fx.call(
        "a1",
        "/v1/heartbeat",
        json!({"instance": "i1", "running": [lease]}),
    );
    assert_eq!(sink.result(), None);
    // The accept's answer was lost, say: the agent never ran it.
    std::thread::sleep(Duration::from_millis(2100));
    fx.call(
        "a1",
        "/v1/heartbeat",
        json!({"instance": "i1", "running": []}),
    );
    assert_eq!(
        sink.result(),
        Some(StepResult::failed(
            "agent lost: the agent no longer runs the step"
        ))
    );
}

#[test]
fn a_short_step_timeout_bounds_the_wait_for_its_agent() {
    let fx = Fx::new(json!({}));
    let sink = Arc::new(Sink::default());
    let step = StepRequest {
        node: Node {
            name: "a2".into(),
            ..Node::default()
        },
        timeout_secs: 2,
        ..StepRequest::default()
    };
    fx.hub
        .start(RunId(1), step, Reporter::from_sink(sink.clone()))
        .unwrap();
    fx.hub.reap(Instant::now() + Duration::from_millis(1900));
    assert_eq!(sink.result(), None);
    fx.hub.reap(Instant::now() + Duration::from_millis(2100));
    assert_eq!(
        sink.result().unwrap().error.unwrap(),
        "agent a2 is not connected (waited 2 s)"
    );
}
