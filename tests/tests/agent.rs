//! The agent-pull executor with real `jobx-agent` processes and the real
//! daemon: batches, output and exit codes, lost agents, stop, tokens,
//! at-most-once leases, resent chunks, daemon restarts, scp, timeouts.

use jobx_tests::daemon::*;
use jobx_tests::flow::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const NAMES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

/// The plugin's table: five agents with tokens `tok-<name>`, short timers.
fn config() -> String {
    let agents: Vec<String> = NAMES
        .iter()
        .map(|n| format!("{{ name = \"{n}\", token = \"tok-{n}\" }}"))
        .collect();
    format!(
        "[plugins.agent-pull]\nlost_after = 2\nconnect_timeout = 4\npoll_hold = 5\nagents = [{}]\n",
        agents.join(", ")
    )
}

fn daemon() -> Daemon {
    let d = Daemon::start(&config());
    d.project(10).nodes(&NAMES);
    d
}

/// A running `jobx-agent`, killed when dropped.
struct Agent {
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    _dir: TempDir,
}

impl Agent {
    fn start(d: &Daemon, name: &str, token: &str) -> Agent {
        Self::start_at(&d.base, name, token, &[])
    }

    fn start_at(server: &str, name: &str, token: &str, extra: &[&str]) -> Agent {
        let dir = TempDir::new("agent");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).expect("token file");
        let mut child = Command::new(bin_dir().join("jobx-agent"))
            .args(["--server", server, "--name", name, "--token-file"])
            .arg(&token_file)
            .args(["--kill-grace", "1", "--max-backoff", "0.5"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start jobx-agent (is it built? cargo build --workspace)");
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let buf = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut b) = buf.lock() {
                        b.push_str(&line);
                        b.push('\n');
                    }
                }
            });
        }
        Agent {
            child: Some(child),
            stderr,
            _dir: dir,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on the pid of a child we own.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Waits for the agent to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let c = self.child.as_mut().expect("agent running");
        let status = wait_for("jobx-agent to exit", timeout, || {
            c.try_wait().ok().flatten()
        });
        self.child = None;
        status
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn agents(d: &Daemon) -> Vec<Value> {
    d.data("/plugin/agent-pull/agents")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn agent_info(d: &Daemon, name: &str) -> Value {
    agents(d)
        .into_iter()
        .find(|a| a["name"] == name)
        .unwrap_or(Value::Null)
}

/// Waits until each named agent holds a poll.
fn wait_waiting(d: &Daemon, names: &[&str]) {
    wait_for("agents to poll", T, || {
        let list = agents(d);
        names
            .iter()
            .all(|n| list.iter().any(|a| a["name"] == *n && a["waiting"] == true))
            .then_some(())
    });
}

fn wait_log(d: &Daemon, uuid: &str, needle: &str) -> String {
    wait_for(&format!("{needle:?} in the log of {uuid}"), T, || {
        let text = log_text(d, uuid);
        text.contains(needle).then_some(text)
    })
}

fn wait_gone(marker: &str) {
    wait_for(&format!("processes with {marker} to end"), T, || {
        processes_matching(marker).is_empty().then_some(())
    });
}

/// A raw protocol request as agent `name`.
fn raw(d: &Daemon, name: &str, token: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build()
        .post(&format!("{}/plugin/agent-pull/v1{path}", d.base))
        .set("Authorization", &format!("Bearer {token}"))
        .set("X-Jobx-Agent", name)
        .send_json(body);
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{path}: {e}"),
    };
    let status = resp.status();
    let v = resp.into_json().unwrap_or(Value::Null);
    (status, v)
}

#[test]
fn five_agents_run_two_batches_with_output_and_exit_codes_per_node() {
    let d = daemon();
    let p = d.project(10);
    let _agents: Vec<Agent> = NAMES
        .iter()
        .map(|n| Agent::start(&d, n, &format!("tok-{n}")))
        .collect();
    wait_waiting(&d, &NAMES);
    p.group("two", "list", "n1,n2,n3;n4,n5");
    p.job(
        "hello",
        json!([
            {"name": "greet", "plugin": "agent-pull",
             "script": "echo \"hello from $JOBX_NODE b=$JOBX_BATCH/$JOBX_BATCHES v=$version a=$1 ip=$ip\"; echo \"warn $JOBX_NODE\" >&2",
             "args": "${version}"},
            {"name": "check", "plugin": "agent-pull", "interpreter": "sh",
             "script": "[ \"$JOBX_NODE\" != n5 ] || { echo broken; exit 3; }; echo fine"}
        ]),
    );
    let task = p.run("hello", "two", json!({"version": "1.2 beta"}));
    let subs = task.wait_confirm(1);
    assert_eq!(subs[0]["status"], "success", "{subs:?}");
    assert_eq!(subs[1]["status"], "fail");
    assert!(
        subs[1]["reason"].as_str().unwrap_or("").contains("n5"),
        "{}",
        subs[1]
    );
    let log = task.log_text();
    for (n, batch, ip) in [
        ("n1", 1, "n1,n2,n3"),
        ("n2", 1, "n1,n2,n3"),
        ("n3", 1, "n1,n2,n3"),
        ("n4", 2, "n4,n5"),
        ("n5", 2, "n4,n5"),
    ] {
        let want = format!("[{n}] hello from {n} b={batch}/2 v=1.2 beta a=1.2 beta ip={ip}");
        assert!(log.contains(&want), "{want} missing from\n{log}");
        assert!(log.contains(&format!("[{n}] warn {n}")), "{log}");
    }
    for n in ["n1", "n2", "n3", "n4"] {
        assert!(log.contains(&format!("[{n}] fine")), "{log}");
    }
    assert!(log.contains("[n5] broken"), "{log}");
    assert!(log.contains("[n5] exit code 3"), "{log}");
    // Every node reports exit code 0 for each step it passed.
    assert_eq!(log.matches("[n1] exit code 0").count(), 2, "{log}");
    assert_eq!(log.matches("[n4] exit code 0").count(), 2, "{log}");
    // The agent list shows every agent, its version and no running step.
    let list = agents(&d);
    assert_eq!(list.len(), 5);
    for a in &list {
        assert_eq!(a["connected"], true, "{a}");
        assert!(a["version"].as_str().is_some_and(|v| !v.is_empty()), "{a}");
        assert!(a["last_contact"].as_str().is_some(), "{a}");
        assert_eq!(a["running"], json!([]), "{a}");
    }
    // Listing agents needs a jobx token with a role on every project.
    assert_eq!(d.req("GET", "/plugin/agent-pull/agents", None, None).0, 401);
    assert_eq!(d.get("/plugin/agent-pull/agents", OTHER).0, 403);
    assert_eq!(d.get("/plugin/agent-pull/agents", READER).0, 200);
}

#[test]
fn an_agent_killed_mid_step_fails_its_node_as_agent_lost() {
    let d = daemon();
    let p = d.project(10);
    let mut a1 = Agent::start(&d, "n1", "tok-n1");
    let _a2 = Agent::start(&d, "n2", "tok-n2");
    wait_waiting(&d, &["n1", "n2"]);
    p.group("pair", "list", "n1,n2");
    let mark = marker("lost");
    p.job(
        "slow",
        json!([{"plugin": "agent-pull", "args": mark,
                "script": "if [ \"$JOBX_NODE\" = n1 ]; then echo started; sleep 60; fi; echo quick"}]),
    );
    let task = p.run("slow", "pair", json!({}));
    wait_log(&d, &task.uuid, "[n1] started");
    assert!(!processes_matching(&mark).is_empty(), "the step runs");
    let running = agent_info(&d, "n1");
    assert_eq!(
        running["running"][0]["task"],
        task.uuid.as_str(),
        "{running}"
    );
    a1.kill9();
    let subs = task.wait_confirm(0);
    assert_eq!(subs[0]["status"], "fail");
    assert!(
        subs[0]["reason"].as_str().unwrap_or("").contains("n1"),
        "{}",
        subs[0]
    );
    let log = task.log_text();
    assert!(log.contains("[n1] failed: agent lost"), "{log}");
    assert!(log.contains("[n2] exit code 0"), "{log}");
    // The agent's watchdog took the step down with it.
    wait_gone(&mark);
}

#[test]
fn stop_kills_the_step_on_the_agent() {
    let d = daemon();
    let p = d.project(10);
    let a1 = Agent::start(&d, "n1", "tok-n1");
    wait_waiting(&d, &["n1"]);
    p.group("one", "list", "n1");
    let mark = marker("stop");
    p.job(
        "long",
        json!([{"plugin": "agent-pull", "args": mark, "timeout": 300,
                "script": "echo started; sleep 120 & wait"}]),
    );
    let task = p.run("long", "one", json!({}));
    wait_log(&d, &task.uuid, "[n1] started");
    assert!(!processes_matching(&mark).is_empty());
    let asked = Instant::now();
    let (st, v) = d.delete(&format!("/task/10/{}", task.uuid), ADMIN);
    assert_eq!(st, 200, "{v}");
    let t = task.wait_finished();
    assert_eq!(t["status"], "fail");
    assert_eq!(t["reason"], "stopped by admin");
    wait_gone(&mark);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        asked.elapsed()
    );
    let log = task.log_text();
    assert!(log.contains("[n1] failed: cancelled"), "{log}");
    assert!(
        log.contains("[n1] cancelled: terminating the step"),
        "{log}"
    );
    // The agent carries on: it takes the next task.
    p.job(
        "after",
        json!([{"plugin": "agent-pull", "script": "echo again"}]),
    );
    let next = p.run("after", "one", json!({}));
    assert_eq!(next.wait_finished()["status"], "success");
    drop(a1);
}

#[test]
fn wrong_or_foreign_tokens_are_refused() {
    let d = daemon();
    let p = d.project(10);
    // Raw requests: a wrong, a missing and another agent's token.
    for (name, token) in [
        ("n1", "tok-n2"),
        ("n1", ""),
        ("n9", "tok-n1"),
        ("", "tok-n1"),
    ] {
        let (st, v) = raw(&d, name, token, "/poll?wait_ms=0", json!({}));
        assert_eq!(st, 401, "{name}/{token}: {v}");
    }
    // A real agent with a wrong token stops with a clear message.
    let mut bad = Agent::start(&d, "n1", "not-the-token");
    let status = bad.wait_exit(T);
    assert_eq!(status.code(), Some(2));
    assert!(bad.stderr().contains("refused"), "{}", bad.stderr());
    // So does one presenting n2's token under the name n1.
    let mut foreign = Agent::start(&d, "n1", "tok-n2");
    assert_eq!(foreign.wait_exit(T).code(), Some(2));
    // Nobody took n1's step: it fails once connect_timeout has passed.
    p.group("one", "list", "n1");
    p.job("j", json!([{"plugin": "agent-pull", "script": "echo hi"}]));
    let task = p.run("j", "one", json!({}));
    task.wait_confirm(0);
    let log = task.log_text();
    assert!(
        log.contains("[n1] failed: agent n1 is not connected (waited 4 s)"),
        "{log}"
    );
    // A node no agent is configured for fails at once, with the reason.
    p.nodes(&["elsewhere"]);
    p.group("else", "list", "elsewhere");
    let task = p.run("j", "else", json!({}));
    task.wait_confirm(0);
    let log = task.log_text();
    assert!(
        log.contains("[elsewhere] failed: no agent named") && log.contains("elsewhere"),
        "{log}"
    );
}

#[test]
fn an_agent_never_receives_another_nodes_work_and_leases_are_single_use() {
    let d = daemon();
    let p = d.project(10);
    p.group("two", "list", "n2");
    p.job("j", json!([{"plugin": "agent-pull", "script": "echo hi"}]));
    let task = p.run("j", "two", json!({}));
    wait_for("the step to be queued", T, || {
        (agent_info(&d, "n2")["queued"] == 1).then_some(())
    });
    // n1 polls while n2's step waits: nothing for n1.
    let (st, v) = raw(
        &d,
        "n1",
        "tok-n1",
        "/poll?wait_ms=300",
        json!({"instance": "x1"}),
    );
    assert_eq!(st, 200);
    assert_eq!(v["work"], json!([]), "{v}");
    let (st, v) = raw(
        &d,
        "n2",
        "tok-n2",
        "/poll?wait_ms=0",
        json!({"instance": "x2"}),
    );
    assert_eq!(st, 200);
    let lease = v["work"][0]["lease"].as_str().expect("lease").to_string();
    assert_eq!(v["work"][0]["node"], "n2");
    assert_eq!(v["work"][0]["script"], "echo hi");
    // n1 cannot claim or report under n2's lease.
    let (st, v) = raw(&d, "n1", "tok-n1", "/accept", json!({"lease": lease}));
    assert_eq!((st, &v["stale"]), (409, &json!(true)), "{v}");
    assert_eq!(
        raw(&d, "n2", "tok-n2", "/accept", json!({"lease": lease})).0,
        200
    );
    // The same lease is never good twice.
    assert_eq!(
        raw(&d, "n2", "tok-n2", "/accept", json!({"lease": lease})).0,
        409
    );
    let (st, _) = raw(
        &d,
        "n1",
        "tok-n1",
        "/exit",
        json!({"lease": lease, "exit_code": 0}),
    );
    assert_eq!(st, 409);
    let (st, _) = raw(
        &d,
        "n2",
        "tok-n2",
        "/exit",
        json!({"lease": lease, "exit_code": 0}),
    );
    assert_eq!(st, 200);
    assert_eq!(task.wait_finished()["status"], "success");
    let (st, _) = raw(
        &d,
        "n2",
        "tok-n2",
        "/exit",
        json!({"lease": lease, "exit_code": 0}),
    );
    assert_eq!(st, 409, "a finished lease is stale");
}

#[test]
fn a_resent_chunk_is_stored_once() {
    let d = daemon();
    let p = d.project(10);
    p.group("one", "list", "n1");
    p.job("j", json!([{"plugin": "agent-pull", "script": "unused"}]));
    let task = p.run("j", "one", json!({}));
    let (_, v) = raw(
        &d,
        "n1",
        "tok-n1",
        "/poll?wait_ms=5000",
        json!({"instance": "r1"}),
    );
    let lease = v["work"][0]["lease"].as_str().expect("lease").to_string();
    assert_eq!(
        raw(&d, "n1", "tok-n1", "/accept", json!({"lease": lease})).0,
        200
    );
    let first = json!({"lease": lease, "seq": 0, "lines": [
        {"stream": "stdout", "text": "line-A"}, {"stream": "stderr", "text": "line-B"}]});
    assert_eq!(raw(&d, "n1", "tok-n1", "/output", first.clone()).0, 200);
    // The answer was lost, say: the agent sends the chunk again.
    let (st, v) = raw(&d, "n1", "tok-n1", "/output", first);
    assert_eq!((st, &v["duplicate"]), (200, &json!(true)));
    let second =
        json!({"lease": lease, "seq": 1, "lines": [{"stream": "stdout", "text": "line-C"}]});
    assert_eq!(raw(&d, "n1", "tok-n1", "/output", second).0, 200);
    let (st, _) = raw(
        &d,
        "n1",
        "tok-n1",
        "/exit",
        json!({"lease": lease, "chunks": 2, "exit_code": 0}),
    );
    assert_eq!(st, 200);
    assert_eq!(task.wait_finished()["status"], "success");
    let log = task.log_text();
    assert_eq!(log.matches("[n1] line-A").count(), 1, "{log}");
    assert_eq!(log.matches("[n1] line-B").count(), 1, "{log}");
    assert_eq!(log.matches("[n1] line-C").count(), 1, "{log}");
    let pos = |s: &str| log.find(s).unwrap_or(usize::MAX);
    assert!(pos("line-A") < pos("line-B") && pos("line-B") < pos("line-C"));
}

#[test]
fn a_daemon_restart_interrupts_the_batch_and_the_agent_kills_its_orphan() {
    let mut d = daemon();
    let p = d.project(10);
    let a1 = Agent::start(&d, "n1", "tok-n1");
    wait_waiting(&d, &["n1"]);
    p.group("one", "list", "n1");
    let mark = marker("restart");
    p.job(
        "long",
        json!([{"plugin": "agent-pull", "args": mark, "timeout": 300,
                "script": "echo started; sleep 120"}]),
    );
    let uuid = p.run("long", "one", json!({})).uuid;
    wait_log(&d, &uuid, "[n1] started");
    d.kill9();
    d.restart();
    let p = d.project(10);
    let subs = p.task(&uuid).wait_confirm(0);
    assert_eq!(subs[0]["status"], "fail");
    assert_eq!(subs[0]["reason"], "interrupted by daemon restart");
    // The restarted daemon does not know the lease: the agent kills the step.
    wait_gone(&mark);
    // …and reconnects by itself: the next task runs on it.
    wait_waiting(&d, &["n1"]);
    p.job(
        "after",
        json!([{"plugin": "agent-pull", "script": "echo back"}]),
    );
    let next = p.run("after", "one", json!({}));
    assert_eq!(next.wait_finished()["status"], "success");
    assert!(next.log_text().contains("[n1] back"));
    drop(a1);
}

#[test]
fn scp_copies_files_and_trees_from_the_daemon_host() {
    let d = daemon();
    let p = d.project(10);
    let _a = Agent::start(&d, "n1", "tok-n1");
    wait_waiting(&d, &["n1"]);
    let tmp = TempDir::new("agent-scp");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("a.txt"), "alpha\n").expect("write");
    std::fs::write(src.join("sub/b.bin"), vec![0u8, 255, 1, 2]).expect("write");
    std::fs::write(src.join("run.sh"), "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::os::unix::fs::symlink("a.txt", src.join("link")).expect("symlink");
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(dst.join("old")).expect("mkdir");
    std::fs::write(dst.join("stale.txt"), "x").expect("write");
    let into = tmp.path().join("into");
    std::fs::create_dir_all(&into).expect("mkdir");
    p.group("one", "list", "n1");
    p.job(
        "copy",
        json!([
            {"name": "tree", "plugin": "agent-pull", "kind": "scp",
             "src": src.to_str(), "dst": dst.to_str(), "delete": true},
            {"name": "file", "plugin": "agent-pull", "kind": "scp",
             "src": src.join("a.txt").to_str(), "dst": format!("{}/", into.display()), "chmod": "0640"},
            {"name": "read", "plugin": "agent-pull", "script": "cat \"$1/sub/../a.txt\"", "args": dst.to_str()}
        ]),
    );
    let task = p.run("copy", "one", json!({}));
    let t = task.wait_finished();
    let log = task.log_text();
    assert_eq!(t["status"], "success", "{log}");
    assert_eq!(std::fs::read(dst.join("a.txt")).expect("a.txt"), b"alpha\n");
    assert_eq!(
        std::fs::read(dst.join("sub/b.bin")).expect("b.bin"),
        vec![0u8, 255, 1, 2]
    );
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&dst.join("run.sh")), 0o755);
    assert_eq!(
        std::fs::read_link(dst.join("link")).expect("link"),
        std::path::PathBuf::from("a.txt")
    );
    assert!(!dst.join("old").exists() && !dst.join("stale.txt").exists());
    assert_eq!(
        std::fs::read(into.join("a.txt")).expect("copied"),
        b"alpha\n"
    );
    assert_eq!(mode(&into.join("a.txt")), 0o640);
    assert!(
        log.contains("[n1] copied 4 file(s), 20 byte(s) to"),
        "{log}"
    );
    assert!(log.contains("removed 2 extra entr(ies)"), "{log}");
    assert!(log.contains("[n1] alpha"), "{log}");
}

#[test]
fn timeouts_and_a_terminated_agent_end_the_step_and_its_processes() {
    let d = daemon();
    let p = d.project(10);
    let mut a = Agent::start(&d, "n1", "tok-n1");
    wait_waiting(&d, &["n1"]);
    p.group("one", "list", "n1");
    let mark = marker("timeout");
    p.job(
        "slow",
        json!([{"plugin": "agent-pull", "args": mark, "timeout": 1, "script": "sleep 30"}]),
    );
    let task = p.run("slow", "one", json!({}));
    task.wait_confirm(0);
    let log = task.log_text();
    assert!(log.contains("[n1] failed: timeout after 1 s"), "{log}");
    wait_gone(&mark);

    // SIGTERM: the agent kills its step, reports, and exits cleanly.
    let mark = marker("term");
    p.job(
        "long",
        json!([{"plugin": "agent-pull", "args": mark, "timeout": 300, "script": "echo started; sleep 60"}]),
    );
    let task = p.run("long", "one", json!({}));
    wait_log(&d, &task.uuid, "[n1] started");
    a.signal(libc::SIGTERM);
    assert_eq!(a.wait_exit(T).code(), Some(0));
    assert!(processes_matching(&mark).is_empty(), "the step died first");
    task.wait_confirm(0);
    let log = task.log_text();
    assert!(log.contains("[n1] failed: the agent was stopped"), "{log}");
}
