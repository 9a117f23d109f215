//! The engine through the real binary and the real local plugin: batches in
//! order, confirm/retry, `_exit_`, stop, timeouts, logs and live streaming.

use jobx_tests::daemon::*;
use jobx_tests::flow::{marker, processes_matching};
use jobx_tests::project::Project;
use serde_json::{json, Value};
use std::io::BufRead;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Project 10 with nodes n1..n6.
fn six(d: &Daemon) -> Project<'_> {
    let p = d.project(10);
    p.nodes(&["n1", "n2", "n3", "n4", "n5", "n6"]);
    p
}

fn nodelists(subs: &[Value]) -> Vec<String> {
    subs.iter()
        .map(|s| s["nodelist"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn batches_run_in_order_with_output_under_every_key() {
    let d = Daemon::start("");
    let p = six(&d);
    p.group("pct", "percent", "1:2:50%");
    let j = p.job(
        "two",
        json!([
            {"name": "first", "plugin": "local", "script": "echo \"one $JOBX_NODE b=$JOBX_BATCH/$JOBX_BATCHES v=$version ip=$ip a=$1\"", "args": "${version}"},
            {"name": "second", "plugin": "local", "script": "echo two $JOBX_NODE; echo warn $JOBX_NODE >&2"}
        ]),
    );
    let task = p.run("two", "pct", json!({"version": "1.0"}));
    let uuid = task.uuid.clone();
    let t = task.wait_finished();
    assert_eq!(t["status"], "success", "{t}");
    assert_eq!(t["slave"], "test-slave");
    assert!(t["runtime"].as_str().is_some_and(|r| r.contains('.')));
    let subs = task.subtasks();
    // 6 nodes with 1:2:50% → [n1] [n2,n3] [n4,n5,n6]
    assert_eq!(nodelists(&subs), ["n1", "n2,n3", "n4,n5,n6"]);
    for s in &subs {
        assert_eq!(s["status"], "success");
        assert_eq!(s["confirm"], "");
        assert_eq!(s["parent_uuid"], uuid.as_str());
    }
    let task_log = task.log_text();
    for (i, n) in ["n1", "n2", "n3", "n4", "n5", "n6"].iter().enumerate() {
        let batch = match i {
            0 => 1,
            1 | 2 => 2,
            _ => 3,
        };
        let ip = ["n1", "n2,n3", "n4,n5,n6"][batch - 1];
        let want = format!("[{n}] one {n} b={batch}/3 v=1.0 ip={ip} a=1.0");
        assert!(task_log.contains(&want), "{want} missing from\n{task_log}");
        assert!(task_log.contains(&format!("[{n}] two {n}")));
        assert!(task_log.contains(&format!("[{n}] warn {n}")));
    }
    // batch by batch: everything of batch 1 comes before batch 2 starts
    let pos = |s: &str| task_log.find(s).unwrap_or(usize::MAX);
    assert!(pos("[n1] two n1") < pos("[n2] one n2"));
    assert!(pos("[n3] two n3") < pos("[n4] one n4"));
    // the batch key has only that batch; the step key only that step
    let b2 = subs[1]["uuid"].as_str().expect("uuid");
    let batch_log = p.log_text(b2);
    assert!(batch_log.contains("[n2] one n2") && batch_log.contains("[n3] two n3"));
    assert!(!batch_log.contains("n1") && !batch_log.contains("[n4]"));
    let step1 = &j["steps"][0]["uuid"];
    let step_log = p.log_text(&format!("{b2}{}local", step1.as_str().expect("step uuid")));
    assert!(step_log.contains("[n2] one n2"));
    assert!(!step_log.contains("two"), "{step_log}");
    // the JSON form pages with an offset
    let page = d.data(&format!(
        "/slave/test-slave/log/{uuid}?format=json&offset=0&max=3"
    ));
    assert_eq!(page["records"].as_array().map(Vec::len), Some(3));
    let next = page["next_offset"].as_u64().expect("next_offset");
    let rest = d.data(&format!(
        "/slave/test-slave/log/{uuid}?format=json&offset={next}&max=10000"
    ));
    assert_eq!(rest["completed"], true);
    assert_eq!(rest["records"][0]["seq"].as_u64(), Some(next + 1));
    // a wrong slave name or unknown key is 404
    assert_eq!(d.get(&format!("/slave/other/log/{uuid}"), ADMIN).0, 404);
    assert_eq!(d.get("/slave/test-slave/log/AAAAAAAAAAAa", ADMIN).0, 404);
    // a token without read on project 10 can not read the log
    assert_eq!(
        d.get(&format!("/slave/test-slave/log/{uuid}"), OTHER).0,
        403
    );
}

#[test]
fn failed_batch_waits_then_confirm_continue_ends_fail() {
    let d = Daemon::start("");
    let p = six(&d);
    p.group("three", "list", "n1,n2;n3,n4;n5,n6");
    p.job(
        "j",
        json!([{"plugin": "local", "script": "[ \"$JOBX_NODE\" != n3 ] || { echo broken; exit 3; }"}]),
    );
    let task = p.run("j", "three", json!({}));
    let subs = task.wait_confirm(1);
    assert_eq!(subs[0]["status"], "success");
    assert_eq!(subs[1]["status"], "fail");
    assert!(
        subs[1]["reason"].as_str().unwrap_or("").contains("n3"),
        "{}",
        subs[1]
    );
    assert_eq!(subs[2]["status"], "init", "later batches wait");
    assert_eq!(task.get()["status"], "running");
    let log = task.log_text();
    assert!(
        log.contains("[n3] broken") && log.contains("[n3] exit code 3"),
        "{log}"
    );
    // only control may confirm; a batch not waiting is 409
    let b1 = subs[1]["uuid"].as_str().expect("uuid").to_string();
    assert_eq!(
        d.put(&format!("/subtask/10/{b1}/confirm"), WRITER10, json!({}))
            .0,
        403
    );
    assert_eq!(
        d.put(&format!("/subtask/11/{b1}/confirm"), ADMIN, json!({}))
            .0,
        404
    );
    let b0 = subs[0]["uuid"].as_str().expect("uuid");
    assert_eq!(
        d.put(&format!("/subtask/10/{b0}/confirm"), ADMIN, json!({}))
            .0,
        409
    );
    let (st, v) = d.put(
        &format!("/subtask/10/{b1}/confirm"),
        CONTROL10,
        json!({"action": "continue"}),
    );
    assert_eq!(st, 200, "{v}");
    let t = task.wait_finished();
    assert_eq!(t["status"], "fail");
    let subs = task.subtasks();
    assert_eq!(subs[1]["confirm"], "confirmed by control10");
    assert_eq!(subs[2]["status"], "success");
    assert_eq!(
        d.put(&format!("/subtask/10/{b1}/confirm"), ADMIN, json!({}))
            .0,
        409,
        "decided once"
    );
    let titles: Vec<String> = d
        .data("/log/10")
        .as_array()
        .expect("log")
        .iter()
        .map(|e| e["title"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        titles.contains(&"CONFIRM BATCH".to_string()) && titles.contains(&"START TASK".to_string())
    );
}

#[test]
fn retry_after_fixing_the_cause_succeeds_and_reruns_only_failed_nodes() {
    let d = Daemon::start("");
    let p = six(&d);
    p.group("two", "list", "n1,n2,n3;n4");
    let dir = TempDir::new("fix");
    let fix = dir.path().join("fixed");
    p.job(
        "j",
        json!([
            {"name": "check", "plugin": "local", "script": "echo ran-check $JOBX_NODE; [ \"$JOBX_NODE\" != n2 ] || test -e \"$FIXFILE\""},
            {"name": "after", "plugin": "local", "script": "echo ran-after $JOBX_NODE"}
        ]),
    );
    let task = p.run("j", "two", json!({"FIXFILE": fix.display().to_string()}));
    let subs = task.wait_confirm(0);
    assert_eq!(subs[0]["status"], "fail");
    std::fs::write(&fix, "ok").expect("fix the cause");
    let b0 = subs[0]["uuid"].as_str().expect("uuid");
    let (st, v) = d.put(
        &format!("/subtask/10/{b0}/confirm"),
        ADMIN,
        json!({"action": "retry"}),
    );
    assert_eq!(st, 200, "{v}");
    let t = task.wait_finished();
    assert_eq!(t["status"], "success", "{t}");
    let subs = task.subtasks();
    assert_eq!(subs[0]["status"], "success");
    assert_eq!(subs[0]["confirm"], "retried by admin");
    let log = p.log_text(b0);
    assert_eq!(
        log.matches("[n1] ran-check").count(),
        1,
        "n1 passed; not re-run\n{log}"
    );
    assert_eq!(
        log.matches("[n2] ran-check").count(),
        2,
        "n2 retried\n{log}"
    );
    assert_eq!(log.matches("[n1] ran-after").count(), 1);
    assert_eq!(log.matches("[n2] ran-after").count(), 1);
}

#[test]
fn exit_variable_ends_the_task_at_the_first_failed_batch() {
    let d = Daemon::start("");
    let p = six(&d);
    p.group("three", "list", "n1;n2;n3");
    p.job(
        "j",
        json!([{"plugin": "local", "script": "[ \"$JOBX_NODE\" != n2 ]"}]),
    );
    let task = p.run("j", "three", json!({"_exit_": 1}));
    let t = task.wait_finished();
    assert_eq!(t["status"], "fail");
    let subs = task.subtasks();
    let st: Vec<&str> = subs
        .iter()
        .map(|s| s["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(st, ["success", "fail", "cancel"]);
    assert_ne!(subs[1]["confirm"], "WaitConfirm");
}

#[test]
fn step_filters_select_batches_and_actions() {
    let d = Daemon::start("");
    let p = six(&d);
    p.group("three", "list", "n1;n2;n3");
    p.job(
        "j",
        json!([
            {"name": "f", "plugin": "local", "batches": "firsttime", "script": "echo FIRST $JOBX_NODE"},
            {"name": "l", "plugin": "local", "batches": "thelasttime", "script": "echo LAST $JOBX_NODE"},
            {"name": "nf", "plugin": "local", "batches": "notfirsttime", "script": "echo NOTFIRST $JOBX_NODE"},
            {"name": "rb", "plugin": "local", "action": "rollback", "script": "echo ROLLBACK $JOBX_NODE"},
            {"name": "dp", "plugin": "local", "action": "deploy", "script": "echo DEPLOY $JOBX_ACTION $JOBX_NODE"}
        ]),
    );
    let task = p.run("j", "three", json!({}));
    assert_eq!(task.wait_finished()["status"], "success");
    let log = task.log_text();
    assert!(
        log.contains("[n1] FIRST n1") && !log.contains("] FIRST n2") && !log.contains("] FIRST n3")
    );
    assert!(log.contains("[n3] LAST n3") && !log.contains("LAST n1"));
    assert!(
        log.contains("[n2] NOTFIRST n2")
            && log.contains("[n3] NOTFIRST n3")
            && !log.contains("NOTFIRST n1")
    );
    assert!(!log.contains("ROLLBACK"));
    assert!(log.contains("[n2] DEPLOY deploy n2"));
}

#[test]
fn stop_during_sleep_ends_within_seconds_and_leaves_no_process() {
    let d = Daemon::start("");
    let p = six(&d);
    p.group("two", "list", "n1,n2;n3");
    let mark = marker("stop");
    p.job(
        "j",
        json!([{"plugin": "local", "script": "bash -c \"sleep 300; : $1\"", "args": "${mark}", "timeout": 600}]),
    );
    let task = p.run("j", "two", json!({"mark": mark}));
    let uuid = task.uuid.clone();
    wait_for("step processes to run", T, || {
        (processes_matching(&mark).len() >= 2).then_some(())
    });
    let t0 = std::time::Instant::now();
    let (st, v) = d.delete(&format!("/task/10/{uuid}"), CONTROL10);
    assert_eq!((st, v["stat"].clone()), (200, json!(true)));
    let t = task.wait_finished_within(Duration::from_secs(5));
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(t["status"], "fail");
    assert_eq!(t["reason"], "stopped by control10");
    let subs = task.subtasks();
    assert_eq!(subs[0]["status"], "fail");
    assert_eq!(subs[0]["reason"], "stopped by control10");
    assert_ne!(subs[0]["confirm"], "WaitConfirm");
    assert_eq!(subs[1]["status"], "cancel");
    wait_for("step processes to be gone", Duration::from_secs(5), || {
        processes_matching(&mark).is_empty().then_some(())
    });
    // stopping a finished task is a no-op that answers success
    assert_eq!(d.put(&format!("/task/10/{uuid}"), ADMIN, json!({})).0, 200);
    assert_eq!(task.get()["reason"], "stopped by control10");
    // write is not enough to stop
    assert_eq!(d.delete(&format!("/task/10/{uuid}"), WRITER10).0, 403);
}

#[test]
fn stop_releases_a_waiting_batch() {
    let d = Daemon::start("");
    let p = six(&d);
    p.group("two", "list", "n1;n2");
    p.job("j", json!([{"plugin": "local", "script": "exit 1"}]));
    let task = p.run("j", "two", json!({}));
    task.wait_confirm(0);
    task.stop();
    let t = task.wait_finished();
    assert_eq!(t["status"], "fail");
    let subs = task.subtasks();
    assert_eq!(subs[0]["confirm"], "task stop");
    assert_eq!(subs[1]["status"], "cancel");
}

#[test]
fn step_timeout_kills_the_process_group() {
    let d = Daemon::start("");
    let p = six(&d);
    p.group("one", "list", "n1");
    let mark = marker("timeout");
    p.job(
        "j",
        json!([{"plugin": "local", "script": "bash -c \"sleep 300; : $1\" & wait", "args": "${mark}", "timeout": 2}]),
    );
    let task = p.run("j", "one", json!({"mark": mark}));
    let subs = task.wait_confirm(0);
    assert_eq!(subs[0]["status"], "fail");
    let log = task.log_text();
    assert!(log.contains("timeout"), "{log}");
    wait_for(
        "timed-out processes to be gone",
        Duration::from_secs(5),
        || processes_matching(&mark).is_empty().then_some(()),
    );
}

#[test]
fn creation_checks_refuse_before_storing() {
    let d = Daemon::start("");
    let p = six(&d);
    p.group("g", "list", "n1;ghost");
    p.group("ok", "list", "n1");
    p.job(
        "j",
        json!([{"plugin": "local", "script": "echo $1", "args": "${version}"}]),
    );
    let cases = [
        (json!({"jobname": "j", "group": "ok"}), 400, "${version}"),
        (
            json!({"jobname": "j", "group": "g", "variable": {"version": "1"}}),
            400,
            "node not in project: ghost",
        ),
        (
            json!({"jobname": "nope", "group": "ok", "variable": {"version": "1"}}),
            404,
            "nope",
        ),
        (
            json!({"jobname": "j", "group": "nogroup", "variable": {"version": "1"}}),
            404,
            "nogroup",
        ),
        (
            json!({"jobname": "j", "group": "ok", "variable": {"PATH": "/x"}}),
            400,
            "PATH",
        ),
        (
            json!({"jobname": "j", "group": "ok", "variable": {"version": [1]}}),
            400,
            "variable.version",
        ),
        (
            json!({"jobname": "j", "group": "ok", "variable": {"version": "1"}, "uuid": "short"}),
            400,
            "uuid",
        ),
        (
            json!({"jobname": "j", "group": "ok", "variable": {"version": "1"}, "uuid": "abcdefghijkL"}),
            400,
            "uuid",
        ),
        (json!({"group": "ok"}), 400, "jobname"),
    ];
    for (body, status, text) in cases {
        let (st, v) = d.post("/task/10/job/byname", ADMIN, body.clone());
        assert_eq!(st, status, "{body}: {v}");
        assert!(
            v["info"].as_str().unwrap_or("").contains(text),
            "{body}: {v}"
        );
    }
    assert_eq!(d.data("/task/10"), json!([]), "nothing stored");
    // a caller uuid becomes the task uuid, once
    let body = json!({"jobname": "j", "group": "ok", "variable": {"version": "1"}, "uuid": "abcdefghijkl"});
    let v = d.ok_post("/task/10/job/byname", body.clone());
    assert_eq!(v["uuid"], "abcdefghijkl");
    assert_eq!(d.post("/task/10/job/byname", ADMIN, body).0, 409);
    // val= and _pip_ and _nodebatch_
    let v = d.ok_post(
        "/task/10/job/byname",
        json!({"jobname": "j", "group": "val=n2,n3", "variable": {"version": "1"}}),
    );
    let u = v["uuid"].as_str().expect("uuid").to_string();
    assert_eq!(nodelists(&p.task(&u).subtasks()), ["n2,n3"]);
    let v = d.ok_post(
        "/task/10/job/byname",
        json!({"jobname": "j", "group": "ok", "variable": {"version": "1", "_pip_": "n4,n5;n6"}}),
    );
    let u = v["uuid"].as_str().expect("uuid").to_string();
    assert_eq!(nodelists(&p.task(&u).subtasks()), ["n4,n5", "n6"]);
    let v = d.ok_post(
        "/task/10/job/byname",
        json!({"jobname": "j", "variable": {"version": "1", "_nodebatch_": "n5"}}),
    );
    let u = v["uuid"].as_str().expect("uuid").to_string();
    assert_eq!(nodelists(&p.task(&u).subtasks()), ["n5"]);
    assert_eq!(
        d.post(
            "/task/10/job/byname",
            READER,
            json!({"jobname": "j", "group": "ok"})
        )
        .0,
        403
    );
}

#[test]
fn sse_delivers_lines_while_the_step_runs() {
    let d = Daemon::start("");
    let p = six(&d);
    p.group("one", "list", "n1");
    let dir = TempDir::new("sse");
    let gate = dir.path().join("gate");
    p.job(
        "j",
        json!([{"plugin": "local", "script": "echo '<b>first</b>'; while [ ! -e \"$GATE\" ]; do sleep 0.1; done; echo second", "timeout": 60}]),
    );
    let task = p.run("j", "one", json!({"GATE": gate.display().to_string()}));
    let uuid = task.uuid.clone();
    let resp = ureq::get(&format!(
        "{}/slave/test-slave/log/{uuid}?format=sse",
        d.base
    ))
    .set("Authorization", &format!("Bearer {ADMIN}"))
    .call()
    .expect("sse stream");
    assert!(
        resp.content_type().contains("event-stream"),
        "{}",
        resp.content_type()
    );
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(resp.into_reader())
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + T;
    while !seen.iter().any(|l: &String| l.contains("first")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(e) => panic!(
                "first line over SSE: {e}; seen {seen:?}\n{}",
                task.log_text()
            ),
        }
    }
    // The step is still running (held by the gate) while its first line arrived.
    assert_eq!(task.get()["status"], "running");
    let data = seen.iter().find(|l| l.contains("first")).expect("line");
    let payload: Value =
        serde_json::from_str(data.trim_start_matches("data:").trim()).expect("JSON event");
    assert_eq!(payload["node"], "n1");
    assert_eq!(payload["text"], "<b>first</b>");
    assert_eq!(payload["html"], "[n1] &lt;b&gt;first&lt;/b&gt;");
    std::fs::write(&gate, "go").expect("open gate");
    while !seen
        .iter()
        .any(|l| l.starts_with("event: end") || l.starts_with("event:end"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        seen.push(rx.recv_timeout(left).expect("end event"));
    }
    assert!(seen.iter().any(|l| l.contains("second")));
}

#[test]
fn html_page_escapes_and_colours() {
    let d = Daemon::start("");
    let p = six(&d);
    p.group("one", "list", "n1");
    p.job(
        "j",
        json!([{"plugin": "local", "script": "printf '<script>alert(1)</script>\\n'; printf '\\033[31mred\\033[0m\\n'"}]),
    );
    let task = p.run("j", "one", json!({}));
    let uuid = task.uuid.clone();
    task.wait_finished();
    let resp = ureq::get(&format!("{}/slave/test-slave/log/{uuid}", d.base))
        .set("Authorization", &format!("Bearer {ADMIN}"))
        .set("Accept", "text/html")
        .call()
        .expect("page");
    assert!(resp.content_type().contains("html"));
    let page = resp.into_string().expect("body");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"));
    assert!(
        page.contains("<span style=\"color:#e55\">red</span>"),
        "{page}"
    ); // A browser without credentials is asked for them; Basic (token name, token) works.
    match ureq::get(&format!("{}/slave/test-slave/log/{uuid}", d.base))
        .set("Accept", "text/html")
        .call()
    {
        Err(ureq::Error::Status(401, r)) => {
            assert!(
                r.header("www-authenticate")
                    .unwrap_or("")
                    .starts_with("Basic"),
                "{:?}",
                r.header("www-authenticate")
            );
        }
        other => panic!("expected 401, got {other:?}"),
    }
    // base64("reader:reader-secret-0001")
    let basic = "Basic cmVhZGVyOnJlYWRlci1zZWNyZXQtMDAwMQ==";
    let r = ureq::get(&format!(
        "{}/slave/test-slave/log/{uuid}?format=sse",
        d.base
    ))
    .set("Authorization", basic)
    .call();
    assert_eq!(r.map(|r| r.status()).unwrap_or(0), 200);
    let r = ureq::get(&format!("{}/group/10", d.base))
        .set("Authorization", "Basic YWRtaW46d3Jvbmc=")
        .call();
    assert!(matches!(r, Err(ureq::Error::Status(401, _))));
}

#[test]
fn output_over_the_cap_is_truncated_with_a_marker() {
    let d = Daemon::start("[logs]\nmax_bytes_per_step = 2000\n");
    let p = six(&d);
    p.group("one", "list", "n1,n2");
    p.job(
        "j",
        json!([{"plugin": "local", "script": "for i in $(seq 1 500); do echo line-$i-$JOBX_NODE; done"}]),
    );
    let task = p.run("j", "one", json!({}));
    assert_eq!(task.wait_finished()["status"], "success");
    let log = task.log_text();
    for n in ["n1", "n2"] {
        assert!(log.contains(&format!("[{n}] line-1-{n}")));
        assert!(!log.contains(&format!("[{n}] line-500-{n}")), "capped");
        assert!(
            log.contains(&format!("[{n}] [output truncated at 2000 bytes]")),
            "{log}"
        );
        assert!(log.contains(&format!("[{n}] [")) && log.contains("bytes of output not kept]"));
    }
}

#[test]
fn many_tasks_at_once_and_task_listing() {
    let d = Daemon::start("");
    let p = six(&d);
    p.group("g", "list", "n1,n2;n3,n4;n5,n6");
    p.job(
        "ok",
        json!([{"plugin": "local", "script": "sleep 0.2; echo $JOBX_TASK"}]),
    );
    p.job("bad", json!([{"plugin": "local", "script": "exit 1"}]));
    let ids: Vec<String> = (0..6).map(|_| p.run("ok", "g", json!({})).uuid).collect();
    for id in &ids {
        assert_eq!(p.task(id).wait_finished()["status"], "success");
        assert!(p.log_text(id).contains(&format!("[n6] {id}")));
    }
    let bad = p.run("bad", "g", json!({}));
    bad.wait_confirm(0);
    let bad = bad.uuid;
    let all = d.data("/task/10");
    assert_eq!(all.as_array().map(Vec::len), Some(7));
    // The newest rows, in ascending id (OPEN-C3's order): the newest is last.
    assert_eq!(all[6]["uuid"], bad.as_str(), "newest last");
    let running = d.data("/task/10?status=running");
    assert_eq!(running.as_array().map(Vec::len), Some(1));
    assert_eq!(d.data("/task/10?name=ba")[0]["uuid"], bad.as_str());
    assert_eq!(
        d.data("/task/10?user=admin").as_array().map(Vec::len),
        Some(7)
    );
    assert_eq!(d.data("/task/10?user=nobody"), json!([]));
    assert_eq!(
        d.data(&format!("/task/10?taskuuid={}", ids[2]))[0]["uuid"],
        ids[2].as_str()
    );
    let two = d.data("/task/10?limit=2");
    assert_eq!(two.as_array().map(Vec::len), Some(2));
    // Ascending: the page's oldest row is its first; older pages start below it.
    let before = two[0]["id"].as_u64().expect("id");
    let older = d.data(&format!("/task/10?before_id={before}"));
    assert_eq!(older.as_array().map(Vec::len), Some(5));
    assert!(older
        .as_array()
        .expect("list")
        .iter()
        .all(|t| t["id"].as_u64() < Some(before)));
    let today = d.data(&format!(
        "/task/10?time_start={0}&time_end={0}",
        &all[0]["starttime"].as_str().unwrap_or("")[..10]
    ));
    assert_eq!(today.as_array().map(Vec::len), Some(7));
    assert_eq!(d.data("/task/10?time_end=2000-01-01"), json!([]));
    assert_eq!(d.get("/task/10?time_start=yesterday", ADMIN).0, 400);
    assert_eq!(d.get("/task/10?limit=0", ADMIN).0, 400);
    assert_eq!(d.get("/task/10?status=weird", ADMIN).0, 400);
    let count = d.data("/task/10/count");
    assert_eq!(count["success"], 6);
    assert_eq!(count["running"], 1);
    assert_eq!(count["fail"], 0);
    assert_eq!(
        d.get(&format!("/task/11/{bad}"), ADMIN).0,
        404,
        "another project's task"
    );
    assert_eq!(d.get(&format!("/subtask/11/{bad}"), ADMIN).0, 404);
}

#[test]
fn sigkill_of_the_daemon_leaves_no_step_process_and_restart_waits_for_a_person() {
    let mut d = Daemon::start("");
    let p = six(&d);
    p.group("two", "list", "n1,n2;n3");
    let mark = marker("crash");
    p.job(
        "j",
        json!([{"plugin": "local", "script": "bash -c \"sleep 300; : $1\"", "args": "${mark}", "timeout": 600}]),
    );
    let task = p.run("j", "two", json!({"mark": mark}));
    wait_for("step processes", T, || {
        (processes_matching(&mark).len() >= 2).then_some(())
    });
    let before = task.get();
    let uuid = task.uuid;
    d.kill9();
    wait_for(
        "orphaned step processes to die",
        Duration::from_secs(10),
        || processes_matching(&mark).is_empty().then_some(()),
    );
    d.restart();
    let task = d.project(10).task(&uuid);
    let subs = task.wait_confirm(0);
    assert_eq!(subs[0]["status"], "fail");
    assert_eq!(subs[0]["reason"], "interrupted by daemon restart");
    assert_eq!(subs[1]["status"], "init");
    let t = task.get();
    assert_eq!(t["status"], "running");
    assert_eq!(t["starttime"], before["starttime"]);
    assert!(
        processes_matching(&mark).is_empty(),
        "nothing re-executed without a person"
    );
    task.confirm(0, None);
    // batch 2 runs the sleep again; stop it to finish
    wait_for("batch 2 to run", T, || {
        (!processes_matching(&mark).is_empty()).then_some(())
    });
    task.stop();
    let t = task.wait_finished();
    assert_eq!(t["status"], "fail");
    wait_for("stopped processes to die", Duration::from_secs(5), || {
        processes_matching(&mark).is_empty().then_some(())
    });
}

/// A plugin dir with the real local plugin and the misbehaving fixture.
fn crashy_plugin_dir(dir: &TempDir) -> String {
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    std::fs::copy(
        bin_dir().join("libjobx_plugin_local.so"),
        plugins.join("libjobx_plugin_local.so"),
    )
    .expect("copy local plugin");
    std::fs::copy(
        bin_dir().join("libjobx_fixture_crashy.so"),
        plugins.join("libjobx_plugin_crashy.so"),
    )
    .expect("copy fixture plugin (cargo build --workspace builds it)");
    plugins.display().to_string()
}

#[test]
fn a_panicking_plugin_fails_only_its_step() {
    let dir = TempDir::new("crashy");
    let d = Daemon::start(&format!(
        "[plugins]\ndir = [{:?}]\n",
        crashy_plugin_dir(&dir)
    ));
    assert!(
        d.stderr().contains("plugin crashy loaded from"),
        "{}",
        d.stderr()
    );
    let p = d.project(10);
    p.nodes(&["n1", "n2"]);
    p.group("g", "list", "n1,n2");
    for (name, script, why) in [
        ("p1", "panic", "fixture panic in start"),
        ("p2", "panic-later", ""),
    ] {
        p.job(
            name,
            json!([{"plugin": "crashy", "script": script, "timeout": 5}]),
        );
        let task = p.run(name, "g", json!({}));
        let subs = task.wait_confirm(0);
        assert_eq!(subs[0]["status"], "fail");
        let log = task.log_text();
        assert!(
            log.contains("[n1] failed:") && log.contains("[n2] failed:"),
            "{log}"
        );
        assert!(log.contains(why), "{log}");
        task.stop();
    }
    // the daemon lives on: other steps of the same plugin and other plugins run
    p.job(
        "fine",
        json!([{"plugin": "crashy", "script": "hello"}, {"plugin": "local", "script": "echo local ok"}]),
    );
    let task = p.run("fine", "g", json!({}));
    assert_eq!(task.wait_finished()["status"], "success");
    let log = task.log_text();
    assert!(
        log.contains("[n1] crashy says hello") && log.contains("[n2] local ok"),
        "{log}"
    );
    assert_eq!(d.req("GET", "/mon", None, None).0, 200);
}

#[test]
fn a_bad_library_in_the_plugin_dir_is_refused_with_its_name() {
    let dir = TempDir::new("badlib");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    let junk = plugins.join("libjobx_plugin_junk.so");
    std::fs::write(&junk, "this is not a shared library").expect("write junk");
    let cfg = dir.path().join("jobxd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[plugins]\ndir = [{:?}]\n[storage]\ndata_dir = {:?}\n",
            plugins.display().to_string(),
            dir.path().join("data").display().to_string()
        ),
    )
    .expect("config");
    let out = std::process::Command::new(bin_dir().join("jobxd"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .expect("run jobxd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&junk.display().to_string()), "{err}");
}

#[test]
fn long_logs_come_out_whole_and_in_order() {
    let d = Daemon::start("");
    let p = six(&d);
    p.group("g", "list", "n1,n2,n3");
    p.job(
        "chatty",
        json!([{"plugin": "local", "script": "for i in $(seq 1 3000); do echo \"$JOBX_NODE line $i\"; done"}]),
    );
    let task = p.run("chatty", "g", json!({}));
    assert_eq!(task.wait_finished()["status"], "success");
    let log = task.log_text();
    for n in ["n1", "n2", "n3"] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with(&format!("[{n}] {n} line ")))
            .collect();
        assert_eq!(lines.len(), 3000, "{n}");
        let nums: Vec<u32> = lines
            .iter()
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert!(
            nums.windows(2).all(|w| w[0] + 1 == w[1]),
            "{n}: lines out of order"
        );
    }
}
