//! Rollout policies through the real binary and the local plugin: failure
//! tolerance, the cumulative cap, canary gates, pacing, label targeting,
//! and signed webhooks delivered by a receiver running in this test.

use jobx_tests::daemon::*;
use jobx_tests::flow::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// A job whose step fails on the nodes listed (space-separated) in `$FAIL`,
/// and a second step that records which nodes reached it.
fn failing_job(d: &Daemon) {
    job(
        d,
        10,
        "app",
        json!([
            {"name": "install", "plugin": "local", "script": "echo install $JOBX_NODE; case \" $FAIL \" in *\" $JOBX_NODE \"*) exit 3;; esac"},
            {"name": "verify", "plugin": "local", "script": "echo verify $JOBX_NODE"}
        ]),
    );
}

fn field(subs: &[Value], key: &str) -> Vec<Value> {
    subs.iter().map(|s| s[key].clone()).collect()
}

fn start_err(d: &Daemon, variable: Value) -> (u16, String) {
    let (st, v) = d.post(
        "/task/10/job/byname",
        ADMIN,
        json!({"jobname": "app", "group": "g", "variable": variable}),
    );
    (st, v["info"].as_str().unwrap_or("").to_string())
}

#[test]
fn tolerance_passes_a_batch_with_one_of_four_failed_and_zero_fails_it() {
    let d = Daemon::start("");
    nodes(&d, 10, &["n1", "n2", "n3", "n4", "n5"]);
    group(&d, 10, "g", "list", "n1,n2,n3,n4;n5");
    failing_job(&d);

    let ok = start(&d, 10, "app", "g", json!({"FAIL": "n2", "_tolerate_": "1"}));
    let t = wait_finished(&d, 10, &ok, T);
    assert_eq!(t["status"], "success", "{t}");
    assert_eq!(t["policy"]["tolerate"], "1", "{t}");
    let subs = subtasks(&d, 10, &ok);
    assert_eq!(field(&subs, "status"), [json!("success"), json!("success")]);
    assert_eq!(subs[0]["failed_nodes"], json!(["n2"]));
    assert_eq!(
        subs[0]["reason"],
        "1 of 4 nodes failed (tolerated: _tolerate_=1)"
    );
    assert_eq!(subs[1]["failed_nodes"], json!([]));
    let log = log_text(&d, &ok);
    assert!(
        log.contains("batch 1/2: 1 of 4 nodes failed (tolerated: _tolerate_=1)"),
        "{log}"
    );
    // the tolerated node sits out the later steps of its batch
    assert!(
        log.contains("[n1] verify n1") && log.contains("[n5] verify n5"),
        "{log}"
    );
    assert!(!log.contains("verify n2"), "{log}");

    // 25% of 4 nodes = 1: passes; 10% of 4 rounds down to 0: fails
    let pct = start(
        &d,
        10,
        "app",
        "g",
        json!({"FAIL": "n3", "_tolerate_": "25%"}),
    );
    assert_eq!(wait_finished(&d, 10, &pct, T)["status"], "success");

    for (tol, want) in [("0", "_tolerate_=0"), ("10%", "_tolerate_=10%")] {
        let bad = start(&d, 10, "app", "g", json!({"FAIL": "n2", "_tolerate_": tol}));
        let subs = wait_confirm(&d, 10, &bad, 0, T);
        assert_eq!(subs[0]["status"], "fail");
        assert_eq!(subs[0]["failed_nodes"], json!(["n2"]));
        let reason = subs[0]["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("failed on n2") && reason.contains(want),
            "{reason}"
        );
        assert_eq!(subs[1]["status"], "init");
        d.ok_put(&format!("/task/10/{bad}"), json!({}));
        assert_eq!(wait_finished(&d, 10, &bad, T)["status"], "fail");
    }

    // without a policy a failed node fails the batch, as before
    let plain = start(&d, 10, "app", "g", json!({"FAIL": "n4"}));
    let subs = wait_confirm(&d, 10, &plain, 0, T);
    assert_eq!(subs[0]["reason"], "step \"install\" failed on n4");
    d.ok_put(&format!("/task/10/{plain}"), json!({}));
    wait_finished(&d, 10, &plain, T);
}

#[test]
fn an_unreachable_node_counts_as_a_failed_node() {
    // three real sshd servers and an address where nothing listens
    let fleet = jobx_tests::sshd::SshdFleet::start(3)
        .expect("sshd fleet (tests/run.sh installs openssh-server)");
    let d = Daemon::start(&format!(
        "[plugins.ssh]\nidentity_file = {:?}\nuser = {:?}\nconnect_timeout = 5\n",
        fleet.identity_file().display().to_string(),
        fleet.user()
    ));
    let mut list: Vec<Value> = (0..3)
        .map(|i| json!({"name": format!("s{i}"), "host": fleet.server(i).host(), "port": fleet.server(i).port()}))
        .collect();
    let (addr, port) = jobx_tests::sshd::unused_endpoint().expect("free port");
    list.push(json!({"name": "gone", "host": addr.to_string(), "port": port}));
    d.ok_post("/node/10", json!({ "nodes": list }));
    group(&d, 10, "g", "list", "s0,gone,s1,s2");
    job(
        &d,
        10,
        "app",
        json!([{"name": "hello", "plugin": "ssh", "script": "echo fine $JOBX_NODE"}]),
    );
    let ok = start(&d, 10, "app", "g", json!({"_tolerate_": "1"}));
    let t = wait_finished(&d, 10, &ok, Duration::from_secs(60));
    assert_eq!(t["status"], "success", "{t}");
    let subs = subtasks(&d, 10, &ok);
    assert_eq!(subs[0]["failed_nodes"], json!(["gone"]));
    assert_eq!(
        subs[0]["reason"],
        "1 of 4 nodes failed (tolerated: _tolerate_=1)"
    );
    let log = log_text(&d, &ok);
    assert!(
        log.contains("[gone] failed: unreachable") && log.contains("[s2] fine s2"),
        "{log}"
    );
    // with 0 tolerated, the unreachable node fails the batch
    let bad = start(&d, 10, "app", "g", json!({"_tolerate_": "0"}));
    let subs = wait_confirm(&d, 10, &bad, 0, Duration::from_secs(60));
    assert_eq!(subs[0]["failed_nodes"], json!(["gone"]));
    d.ok_put(&format!("/task/10/{bad}"), json!({}));
    wait_finished(&d, 10, &bad, T);
}

#[test]
fn bad_policies_are_refused_at_creation_and_dry_run_shows_the_policy() {
    let d = Daemon::start("");
    nodes(&d, 10, &["n1", "n2", "n3"]);
    group(&d, 10, "g", "list", "n1;n2;n3");
    failing_job(&d);
    let cases = [
        (json!({"_tolerate_": "abc"}), "variable._tolerate_"),
        (json!({"_tolerate_": "150%"}), "variable._tolerate_"),
        (
            json!({"_tolerate_total_": "-1"}),
            "variable._tolerate_total_",
        ),
        (json!({"_pause_after_": "1,x"}), "variable._pause_after_"),
        (json!({"_pause_after_": "4"}), "there is no batch 4"),
        (json!({"_batch_wait_": "1.5"}), "variable._batch_wait_"),
        (json!({"_batch_wait_": "90000"}), "variable._batch_wait_"),
    ];
    for (variable, want) in cases {
        let (st, info) = start_err(&d, variable.clone());
        assert_eq!(st, 400, "{variable}: {info}");
        assert!(info.contains(want), "{variable}: {info}");
    }
    assert_eq!(d.data("/task/10"), json!([]), "nothing stored");
    // a job may carry the policy; variables win over it piece by piece
    let (st, v) = d.post(
        "/job/10",
        ADMIN,
        json!({"name": "app", "steps": [{"name": "s", "plugin": "local", "script": "true"}], "policy": {"tolerate": "x"}}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["info"].as_str().unwrap_or("").contains("policy.tolerate"),
        "{v}"
    );
    d.ok_post(
        "/job/10",
        json!({"name": "app", "steps": [{"name": "s", "plugin": "local", "script": "true"}], "policy": {"tolerate": "10%", "pause_after": [2], "batch_wait": 0}}),
    );
    let v = d.ok_post(
        "/third/interface/dry-run",
        json!({"project_id": 10, "uuid": "Caller0Id12X", "params": {"jobname": "app", "group": "g", "variable": {"_tolerate_": "1", "_tolerate_total_": "20%"}}}),
    );
    assert_eq!(
        v["data"]["policy"],
        json!({"tolerate": "1", "tolerate_total": "20%", "pause_after": [2], "batch_wait": 0}),
        "{v}"
    );
}

#[test]
fn the_cumulative_cap_stops_the_task_at_the_batch_that_exceeds_it() {
    let d = Daemon::start("");
    nodes(&d, 10, &["n1", "n2", "n3", "n4", "n5", "n6"]);
    group(&d, 10, "g", "list", "n1,n2;n3,n4;n5,n6");
    failing_job(&d);
    let vars = json!({"FAIL": "n1 n3 n5", "_tolerate_": "1", "_tolerate_total_": "2"});
    let uuid = start(&d, 10, "app", "g", vars);
    let subs = wait_confirm(&d, 10, &uuid, 2, T);
    assert_eq!(
        field(&subs, "status"),
        [json!("success"), json!("success"), json!("fail")]
    );
    assert_eq!(
        field(&subs, "failed_nodes"),
        [json!(["n1"]), json!(["n3"]), json!(["n5"])]
    );
    let reason = subs[2]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("3 nodes failed in this task so far, more than _tolerate_total_=2"),
        "{reason}"
    );
    assert_eq!(task(&d, 10, &uuid)["waiting"], "confirm");
    // the same with _exit_: the task ends at that batch
    let vars =
        json!({"FAIL": "n1 n3 n5", "_tolerate_": "1", "_tolerate_total_": "1", "_exit_": "1"});
    let exit = start(&d, 10, "app", "g", vars);
    let t = wait_finished(&d, 10, &exit, T);
    assert_eq!(t["status"], "fail");
    assert_eq!(t["reason"], "batch 2 failed", "{t}");
    assert_eq!(
        field(&subtasks(&d, 10, &exit), "status"),
        [json!("success"), json!("fail"), json!("cancel")]
    );
    let v = d.ok_put(
        &format!(
            "/subtask/10/{}/confirm",
            subs[2]["uuid"].as_str().unwrap_or("")
        ),
        json!({}),
    );
    assert_eq!(v["data"], true);
    assert_eq!(wait_finished(&d, 10, &uuid, T)["status"], "fail");
}

#[test]
fn a_canary_gate_waits_after_a_successful_batch_and_continue_runs_the_rest() {
    let d = Daemon::start("");
    nodes(&d, 10, &["n1", "n2", "n3"]);
    group(&d, 10, "g", "list", "n1;n2;n3");
    failing_job(&d);
    let uuid = start(&d, 10, "app", "g", json!({"_pause_after_": "1"}));
    let subs = wait_confirm(&d, 10, &uuid, 0, T);
    assert_eq!(subs[0]["status"], "success");
    assert_eq!(subs[0]["reason"], "canary gate");
    assert_eq!(subs[1]["status"], "init");
    let t = task(&d, 10, &uuid);
    assert_eq!(t["waiting"], "confirm", "{t}");
    assert_eq!(t["waiting_on"], subs[0]["uuid"], "{t}");
    let sub = subs[0]["uuid"].as_str().expect("uuid").to_string();
    // retry is for failed batches; a passed one can only go on
    let (st, v) = d.put(
        &format!("/subtask/10/{sub}/confirm"),
        ADMIN,
        json!({"action": "retry"}),
    );
    assert_eq!(st, 409, "{v}");
    // nothing runs past the gate meanwhile
    assert_eq!(subtasks(&d, 10, &uuid)[1]["status"], "init");
    d.ok_put(&format!("/subtask/10/{sub}/confirm"), json!({}));
    let t = wait_finished(&d, 10, &uuid, T);
    assert_eq!(t["status"], "success", "{t}");
    let subs = subtasks(&d, 10, &uuid);
    assert_eq!(field(&subs, "status"), vec![json!("success"); 3]);
    assert_eq!(subs[0]["confirm"], "confirmed by admin");
    assert_eq!(subs[1]["confirm"], "");
    let log = log_text(&d, &uuid);
    assert!(
        log.contains("batch 1/3 passed; waits at a canary gate"),
        "{log}"
    );
}

/// Time (epoch seconds) of the first record of a batch's log whose text is `text`.
fn record_time(d: &Daemon, key: &str, text: &str) -> f64 {
    let v = d.data(&format!("/slave/test-slave/log/{key}?format=json"));
    v["records"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["text"] == text))
        .and_then(|r| r["time"].as_f64())
        .unwrap_or_else(|| panic!("no record {text:?} in {key}: {v}"))
}

#[test]
fn batch_wait_spaces_batch_starts_and_a_stop_during_the_wait_ends_it_at_once() {
    let d = Daemon::start("");
    nodes(&d, 10, &["n1", "n2", "n3"]);
    group(&d, 10, "g", "list", "n1;n2;n3");
    group(&d, 10, "two", "list", "n1;n2");
    failing_job(&d);
    let uuid = start(&d, 10, "app", "g", json!({"_batch_wait_": "2"}));
    assert_eq!(wait_finished(&d, 10, &uuid, T)["status"], "success");
    let subs = subtasks(&d, 10, &uuid);
    let starts: Vec<f64> = subs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            record_time(
                &d,
                s["uuid"].as_str().unwrap_or(""),
                &format!("batch {}/3: n{}", i + 1, i + 1),
            )
        })
        .collect();
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= 2.0, "batch starts {starts:?}");
    }

    let long = start(&d, 10, "app", "two", json!({"_batch_wait_": "30"}));
    wait_for("the pause before batch 2", T, || {
        let subs = subtasks(&d, 10, &long);
        let key = subs.get(1)?["uuid"].as_str()?.to_string();
        log_text(&d, &key)
            .contains("batch 2/2 starts in")
            .then_some(())
    });
    let t0 = Instant::now();
    d.ok_put(&format!("/task/10/{long}"), json!({}));
    let t = wait_finished(&d, 10, &long, T);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "stop took {took:?}");
    assert_eq!(t["status"], "fail");
    assert_eq!(t["reason"], "stopped by admin");
    assert_eq!(
        field(&subtasks(&d, 10, &long), "status"),
        [json!("success"), json!("cancel")]
    );
}

#[test]
fn label_selectors_target_groups_and_filter_the_node_list() {
    let d = Daemon::start("");
    d.ok_post(
        "/node/10",
        json!({"nodes": [
            {"name": "w1", "labels": {"role": "web", "dc": "bj"}},
            {"name": "w2", "labels": {"role": "web", "dc": "sh"}},
            {"name": "d1", "labels": {"role": "db", "dc": "bj"}},
            {"name": "w3", "labels": {"role": "web", "dc": "bj", "canary": "yes"}},
            {"name": "x1"}
        ]}),
    );
    let names = |path: &str| -> Vec<String> {
        d.data(path)
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    // role=web,dc!=sh
    assert_eq!(
        names("/node/10?label=role%3Dweb%2Cdc%21%3Dsh"),
        ["w1", "w3"]
    );
    assert_eq!(names("/node/10?label=canary"), ["w3"]);
    assert_eq!(names("/node/10?label=%21dc"), ["x1"]);
    assert_eq!(names("/node/10").len(), 5);
    let (st, v) = d.get("/node/10?label=role%3D%3Dweb", ADMIN);
    assert_eq!(st, 400, "{v}");
    assert!(
        v["info"].as_str().unwrap_or("").starts_with("label: "),
        "{v}"
    );

    // percent group: the inventory is filtered first, then cut in batches of 2
    let v = d.ok_post(
        "/group/10",
        json!({"name": "web", "group_type": "percent", "percent": "2", "labels": "role=web"}),
    );
    assert_eq!(v["data"]["labels"], "role=web");
    let web = v["data"]["id"].as_u64().expect("id");
    assert_eq!(
        d.data(&format!("/group/10/{web}/node")),
        json!([["w1", "w2"], ["w3"]])
    );
    // list group: the selector keeps the named nodes that match
    let v = d.ok_post(
        "/group/10",
        json!({"name": "bj", "group_type": "list", "node": "w1,d1;w2,x1", "labels": "dc=bj"}),
    );
    let bj = v["data"]["id"].as_u64().expect("id");
    assert_eq!(
        d.data(&format!("/group/10/{bj}/node")),
        json!([["w1", "d1"]])
    );
    let (st, v) = d.post(
        "/group/10",
        ADMIN,
        json!({"name": "bad", "group_type": "list", "node": "w1", "labels": "role=web,,dc=bj"}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["info"].as_str().unwrap_or("").starts_with("labels: "),
        "{v}"
    );

    job(
        &d,
        10,
        "app",
        json!([{"name": "s", "plugin": "local", "script": "echo on $JOBX_NODE"}]),
    );
    let uuid = start(&d, 10, "app", "web", json!({}));
    assert_eq!(wait_finished(&d, 10, &uuid, T)["status"], "success");
    let subs = subtasks(&d, 10, &uuid);
    assert_eq!(field(&subs, "nodelist"), [json!("w1,w2"), json!("w3")]);
    let log = log_text(&d, &uuid);
    assert!(
        log.contains("[w2] on w2") && !log.contains("[d1]") && !log.contains("[x1]"),
        "{log}"
    );
    let uuid = start(&d, 10, "app", "bj", json!({}));
    assert_eq!(wait_finished(&d, 10, &uuid, T)["status"], "success");
    assert_eq!(
        field(&subtasks(&d, 10, &uuid), "nodelist"),
        [json!("w1,d1")]
    );
}

/// One request the receiver got, and the status it answered.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
    answered: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A small HTTP server on 127.0.0.1 that records every request and answers
/// 500 while `failures` is above 0 (counting down), 200 otherwise.
struct Receiver {
    addr: String,
    got: Arc<Mutex<Vec<Received>>>,
    failures: Arc<AtomicUsize>,
}

fn read_request(stream: &TcpStream) -> Option<(String, BTreeMap<String, String>, String)> {
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.strip_prefix("POST ")?.split(' ').next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((path, headers, String::from_utf8(body).ok()?))
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let addr = listener.local_addr().expect("addr").to_string();
        let got = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicUsize::new(0));
        let (g, f) = (got.clone(), failures.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Some((path, headers, body)) = read_request(&stream) else {
                    continue;
                };
                let fail = f
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let answered = if fail { 500 } else { 200 };
                if let Ok(mut g) = g.lock() {
                    g.push(Received {
                        path,
                        headers,
                        body,
                        answered,
                    });
                }
                let text = if fail { "Internal Server Error" } else { "OK" };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {answered} {text}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver {
            addr,
            got,
            failures,
        }
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

const SECRET: &str = "webhook-secret-for-tests-01";
const SECRET2: &str = "another-secret-for-tests-02";

/// HMAC-SHA256 of `body` keyed with `key`, computed by the openssl CLI
/// (independent of the daemon's code), as `sha256=<hex>`.
fn openssl_hmac(key: &str, body: &str) -> String {
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write body");
    let out = child.wait_with_output().expect("openssl output");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let hex = text.split_whitespace().last().unwrap_or("").to_string();
    format!("sha256={hex}")
}

fn webhook_config(r: &Receiver) -> String {
    format!(
        "[notify]\nmax_attempts = 6\n\n[[notify.webhooks]]\nurl = \"http://{0}/hook/path-secret\"\nsecret = \"{SECRET}\"\nevents = [\"waiting\", \"approval\", \"finished\"]\n\n[[notify.webhooks]]\nurl = \"http://{0}/other\"\nsecret = \"{SECRET2}\"\nevents = [\"failed\", \"rollback_decision\"]\n",
        r.addr
    )
}

#[test]
fn webhooks_get_signed_events_retried_after_a_500_and_delivered_after_a_restart() {
    let r = Receiver::start();
    let mut d = Daemon::start(&webhook_config(&r));
    nodes(&d, 10, &["n1", "n2"]);
    group(&d, 10, "g", "list", "n1;n2");
    group(&d, 10, "one", "list", "n1");
    job(
        &d,
        10,
        "app",
        json!([
            {"name": "ok?", "plugin": "approval", "approvers": ["admin"], "message": "go ${version}", "batches": "firsttime"},
            {"name": "s", "plugin": "local", "script": "echo hi"}
        ]),
    );
    // the first event is answered 500 once
    r.failures.store(1, Ordering::SeqCst);
    let uuid = start(
        &d,
        10,
        "app",
        "g",
        json!({"version": "3", "_pause_after_": "1"}),
    );
    let approval = wait_for("a pending approval", T, || {
        let list = d.data("/approval/10");
        list.as_array()?.first()?["uuid"].as_str().map(String::from)
    });
    d.ok_put(
        &format!("/approval/10/{approval}"),
        json!({"opinion": "agree"}),
    );
    let subs = wait_confirm(&d, 10, &uuid, 0, T);
    d.ok_put(
        &format!(
            "/subtask/10/{}/confirm",
            subs[0]["uuid"].as_str().unwrap_or("")
        ),
        json!({}),
    );
    assert_eq!(wait_finished(&d, 10, &uuid, T)["status"], "success");
    // Deliveries are not ordered across events: a retried event may come
    // after a later one.
    let got = wait_for("approval, waiting and finished delivered", T, || {
        let got = r.got();
        let mut delivered: Vec<String> = got
            .iter()
            .filter(|g| g.answered == 200)
            .map(|g| g.json()["event"].as_str().unwrap_or("").to_string())
            .collect();
        delivered.sort();
        (delivered == ["approval", "finished", "waiting"]).then_some(got)
    });
    assert_eq!(got.len(), 4, "{got:?}");
    let one = |event: &str, answered: u16| -> Received {
        got.iter()
            .find(|g| g.json()["event"] == event && g.answered == answered)
            .cloned()
            .unwrap_or_else(|| panic!("no {event} answered {answered} in {got:?}"))
    };
    // every request is signed with the configured secret
    for g in &got {
        assert_eq!(
            g.headers.get("x-jobx-signature").map(String::as_str),
            Some(openssl_hmac(SECRET, &g.body).as_str()),
            "{g:?}"
        );
        assert_eq!(
            g.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        let ev = g.json();
        assert_eq!(
            g.headers.get("x-jobx-event-id"),
            ev["id"].as_str().map(String::from).as_ref()
        );
        assert_eq!(ev["task"]["uuid"], uuid.as_str());
        assert_eq!(ev["projectid"], 10);
    }
    // the first event was answered 500, then retried: same event id, attempt 2
    assert_eq!(got[0].answered, 500);
    let (refused, retried) = (one("approval", 500), one("approval", 200));
    assert_eq!(
        refused.headers.get("x-jobx-event-id"),
        retried.headers.get("x-jobx-event-id")
    );
    assert_eq!(
        retried
            .headers
            .get("x-jobx-delivery-attempt")
            .map(String::as_str),
        Some("2")
    );
    assert_eq!(refused.body, retried.body);
    let approval_ev = retried.json();
    assert_eq!(approval_ev["approval"]["uuid"], approval.as_str());
    assert_eq!(approval_ev["approval"]["message"], "go 3");
    let waiting = one("waiting", 200).json();
    assert_eq!(waiting["batch"]["number"], 1);
    assert_eq!(waiting["batch"]["reason"], "canary gate");
    assert_eq!(one("finished", 200).json()["task"]["status"], "success");
    // attempts are listed (URLs without their path) and counted
    let event_id = refused
        .headers
        .get("x-jobx-event-id")
        .cloned()
        .unwrap_or_default();
    let list = d.data(&format!("/notify/deliveries?event_id={event_id}"));
    let attempts = list.as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{list}");
    assert_eq!(attempts[0]["outcome"], "delivered");
    assert_eq!(attempts[0]["attempt"], 2);
    assert_eq!(attempts[1]["status"], 500);
    assert_eq!(attempts[1]["outcome"], "retry");
    assert!(attempts[1]["next_retry"].is_string(), "{list}");
    assert_eq!(attempts[0]["url"], format!("http://{}", r.addr));
    // a token without a role on project 10 sees none of them
    let (st, v) = d.get("/notify/deliveries", OTHER);
    assert_eq!((st, &v["data"]), (200, &json!([])), "{v}");
    let (_, metrics) = d.get("/metrics", ADMIN);
    let metrics = metrics.as_str().unwrap_or("").to_string();
    assert!(
        metrics.contains("jobx_webhook_deliveries_total{outcome=\"retry\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("jobx_webhook_deliveries_total{outcome=\"delivered\"} 3"),
        "{metrics}"
    );

    // the receiver is down; the event stays in the outbox through a SIGKILL
    r.failures.store(usize::MAX, Ordering::SeqCst);
    let second = start(&d, 10, "app", "one", json!({"version": "4"}));
    let approval = wait_for("a pending approval", T, || {
        let list = d.data("/approval/10");
        list.as_array()?.first()?["uuid"].as_str().map(String::from)
    });
    d.ok_put(
        &format!("/approval/10/{approval}"),
        json!({"opinion": "agree"}),
    );
    assert_eq!(wait_finished(&d, 10, &second, T)["status"], "success");
    let finished_id = wait_for("the finished event to be refused once", T, || {
        r.got().iter().find_map(|g| {
            let ev = g.json();
            (ev["event"] == "finished"
                && ev["task"]["uuid"] == second.as_str()
                && g.answered == 500)
                .then(|| ev["id"].as_str().unwrap_or("").to_string())
        })
    });
    // The refused attempt is stored (the receiver's 500 reaches the daemon
    // before the daemon records it): then the SIGKILL.
    wait_for("the refused attempt to be recorded", T, || {
        let list = d.data(&format!("/notify/deliveries?event_id={finished_id}"));
        list.as_array()?
            .iter()
            .any(|a| a["status"] == 500)
            .then_some(())
    });
    d.kill9();
    r.failures.store(0, Ordering::SeqCst);
    d.restart();
    let after = wait_for("the finished event delivered after the restart", T, || {
        r.got()
            .into_iter()
            .find(|g| g.answered == 200 && g.headers.get("x-jobx-event-id") == Some(&finished_id))
    });
    assert_eq!(
        after.headers.get("x-jobx-signature").map(String::as_str),
        Some(openssl_hmac(SECRET, &after.body).as_str())
    );
    let n: u32 = after
        .headers
        .get("x-jobx-delivery-attempt")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    assert!(n >= 2, "attempt {n}");
    assert_eq!(after.json()["task"]["uuid"], second.as_str());

    // the other webhook gets only its own events, signed with its own secret
    assert!(r.got().iter().all(|g| g.path == "/hook/path-secret"));
    job(
        &d,
        10,
        "bad",
        json!([{"name": "boom", "plugin": "local", "script": "exit 1"}]),
    );
    let third = start(
        &d,
        10,
        "bad",
        "one",
        json!({"_exit_": "1", "_rollbackVersion_": "1"}),
    );
    assert_eq!(wait_finished(&d, 10, &third, T)["status"], "fail");
    let other = wait_for(
        "failed and rollback_decision on the other webhook",
        T,
        || {
            let got: Vec<Received> = r.got().into_iter().filter(|g| g.path == "/other").collect();
            (got.len() == 2).then_some(got)
        },
    );
    let events: Vec<Value> = other.iter().map(Received::json).collect();
    assert_eq!(events[0]["event"], "failed", "{events:?}");
    assert_eq!(events[0]["batch"]["failed_nodes"], json!(["n1"]));
    assert_eq!(events[0]["batch"]["reason"], "step \"boom\" failed on n1");
    assert_eq!(events[1]["event"], "rollback_decision");
    assert_eq!(events[1]["task"]["decision"], "pending");
    for g in &other {
        assert_eq!(g.json()["task"]["uuid"], third.as_str());
        assert_eq!(
            g.headers.get("x-jobx-signature").map(String::as_str),
            Some(openssl_hmac(SECRET2, &g.body).as_str())
        );
    }
}
