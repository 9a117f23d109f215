//! Rollout control through the real binary: rollback, approvals, the
//! third-party interface, statistics, metrics and crash recovery.

use jobx_tests::daemon::*;
use jobx_tests::flow::*;
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn statuses(subs: &[Value]) -> Vec<String> {
    subs.iter()
        .map(|s| s["status"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A deploy over 4 batches whose batch 2 fails on deploy (not on rollback).
fn deploy_job(d: &Daemon) {
    nodes(d, 10, &["n1", "n2", "n3", "n4"]);
    group(d, 10, "four", "list", "n1;n2;n3;n4");
    job(
        d,
        10,
        "app",
        json!([
            {"name": "install", "plugin": "local", "script": "echo \"$JOBX_ACTION version=$version on $JOBX_NODE batch $JOBX_BATCH/$JOBX_BATCHES\"; [ \"$JOBX_ACTION\" = rollback ] || [ \"$JOBX_BATCH\" != 2 ]"},
            {"name": "only-deploy", "plugin": "local", "action": "deploy", "script": "echo deploy-only $JOBX_NODE"},
            {"name": "only-rollback", "plugin": "local", "action": "rollback", "script": "echo rollback-only $JOBX_NODE"}
        ]),
    );
}

#[test]
fn rollback_runs_the_started_batches_with_the_old_version() {
    let d = Daemon::start("");
    deploy_job(&d);
    let uuid = start(
        &d,
        10,
        "app",
        "four",
        json!({"version": "2.0", "_rollbackVersion_": "1.9"}),
    );
    // no decision while the deploy runs
    wait_confirm(&d, 10, &uuid, 1, T);
    let (st, v) = d.put(&format!("/task/10/{uuid}/rollback"), ADMIN, json!({}));
    assert_eq!(st, 409, "{v}");
    assert!(
        v["info"].as_str().unwrap_or("").contains("still running"),
        "{v}"
    );
    // stop after 2 of 4 batches
    d.ok_put(&format!("/task/10/{uuid}"), json!({}));
    let t = wait_finished(&d, 10, &uuid, T);
    assert_eq!(t["status"], "fail");
    assert_eq!(
        statuses(&subtasks(&d, 10, &uuid)),
        ["success", "fail", "cancel", "cancel"]
    );
    // control is needed; a write token is refused
    assert_eq!(
        d.put(&format!("/task/10/{uuid}/rollback"), WRITER10, json!({}))
            .0,
        403
    );
    let v = d.ok_put(&format!("/task/10/{uuid}/rollback"), json!({}));
    let rb = v["uuid"].as_str().expect("rollback uuid").to_string();
    let mut want = uuid.clone();
    let last = want.pop().expect("last char");
    want.push(last.to_ascii_uppercase());
    assert_eq!(rb, want, "rollback partner: last letter uppercased");
    assert_eq!(v["info"], "ok");
    let t = wait_finished(&d, 10, &rb, T);
    assert_eq!(t["status"], "success", "{t}");
    assert_eq!(t["variables"]["version"], "1.9");
    assert!(t["variables"].get("_rollbackVersion_").is_none());
    let subs = subtasks(&d, 10, &rb);
    assert_eq!(
        subs.iter()
            .map(|s| s["nodelist"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["n1", "n2"]
    );
    let log = log_text(&d, &rb);
    assert!(
        log.contains("[n1] rollback version=1.9 on n1 batch 1/2"),
        "{log}"
    );
    assert!(
        log.contains("[n2] rollback version=1.9 on n2 batch 2/2"),
        "{log}"
    );
    assert!(
        log.find("[n1] rollback version").unwrap_or(usize::MAX)
            < log.find("[n2] rollback version").unwrap_or(0)
    );
    assert!(log.contains("[n1] rollback-only n1") && !log.contains("deploy-only"));
    assert!(!log.contains("n3") && !log.contains("n4"));
    // one decision per deploy; the rollback uuid itself is not a deploy
    let (st, v) = d.put(&format!("/task/10/{uuid}/norollback"), ADMIN, json!({}));
    assert_eq!(st, 409, "{v}");
    assert!(v["info"].as_str().unwrap_or("").contains("already"), "{v}");
    let (st, v) = d.put(&format!("/task/10/{rb}/rollback"), ADMIN, json!({}));
    assert_eq!(st, 400, "{v}");
    assert!(
        v["info"].as_str().unwrap_or("").contains("not a deploy"),
        "{v}"
    );
    assert_eq!(
        d.put(&format!("/task/11/{uuid}/rollback"), ADMIN, json!({}))
            .0,
        404
    );
    let titles: Vec<String> = d
        .data("/log/10")
        .as_array()
        .expect("log")
        .iter()
        .map(|e| e["title"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(titles.contains(&"ROLLBACK".to_string()));
}

#[test]
fn rollback_preconditions_and_norollback() {
    let d = Daemon::start("");
    deploy_job(&d);
    group(&d, 10, "first", "list", "n1");
    // no _rollbackVersion_
    let plain = start(&d, 10, "app", "first", json!({"version": "1"}));
    wait_finished(&d, 10, &plain, T);
    let (st, v) = d.put(&format!("/task/10/{plain}/rollback"), ADMIN, json!({}));
    assert_eq!(st, 409);
    assert!(
        v["info"]
            .as_str()
            .unwrap_or("")
            .contains("_rollbackVersion_"),
        "{v}"
    );
    // norollback records the decision and runs nothing
    let dep = start(
        &d,
        10,
        "app",
        "first",
        json!({"version": "2", "_rollbackVersion_": "1"}),
    );
    wait_finished(&d, 10, &dep, T);
    let v = d.ok_put(&format!("/task/10/{dep}/norollback"), json!({}));
    assert_eq!(v["info"], "ok");
    let mut rb = dep.clone();
    let last = rb.pop().expect("char");
    rb.push(last.to_ascii_uppercase());
    assert_eq!(
        d.get(&format!("/task/10/{rb}"), ADMIN).0,
        404,
        "no rollback task"
    );
    let (st, v) = d.put(&format!("/task/10/{dep}/rollback"), ADMIN, json!({}));
    assert_eq!(st, 409);
    assert!(v["info"].as_str().unwrap_or("").contains("already"), "{v}");
    assert_eq!(d.data("/log/10")[0]["title"], "NO ROLLBACK");
    // bad uuids
    assert_eq!(d.put("/task/10/short/rollback", ADMIN, json!({})).0, 400);
    assert_eq!(
        d.put("/task/10/abcdefghijkl/rollback", ADMIN, json!({})).0,
        404
    );
}

#[test]
fn rollback_is_refused_after_seven_days() {
    let mut d = Daemon::start("");
    deploy_job(&d);
    group(&d, 10, "first", "list", "n1");
    d.fake_time(Some("2026-03-01 10:00:00"));
    d.restart();
    let dep = start(
        &d,
        10,
        "app",
        "first",
        json!({"version": "2", "_rollbackVersion_": "1"}),
    );
    wait_finished(&d, 10, &dep, T);
    d.fake_time(Some("2026-03-08 10:00:05"));
    d.restart();
    let (st, v) = d.put(&format!("/task/10/{dep}/rollback"), ADMIN, json!({}));
    assert_eq!(st, 409, "{v}");
    assert!(v["info"].as_str().unwrap_or("").contains("7 days"), "{v}");
}

fn approval_job(d: &Daemon, approval: Value) {
    nodes(d, 10, &["n1", "n2", "n3"]);
    group(d, 10, "three", "list", "n1;n2;n3");
    job(
        d,
        10,
        "gated",
        json!([
            {"name": "before", "plugin": "local", "script": "echo before $JOBX_NODE"},
            approval,
            {"name": "after", "plugin": "local", "script": "echo after $JOBX_NODE"}
        ]),
    );
}

fn pending(d: &Daemon) -> Vec<Value> {
    d.data("/approval/10")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn approval_agree_refuse_and_permissions() {
    let d = Daemon::start("");
    approval_job(
        &d,
        json!({"name": "ok?", "plugin": "approval", "approvers": ["control10", "reader"], "message": "ship ${v}?", "batches": "firsttime"}),
    );
    let uuid = start(&d, 10, "gated", "three", json!({"v": "3.1"}));
    let a = wait_for("an approval", T, || pending(&d).first().cloned());
    assert_eq!(a["message"], "ship 3.1?");
    assert_eq!(a["taskuuid"], uuid.as_str());
    let au = a["uuid"].as_str().expect("uuid").to_string();
    assert_eq!(subtasks(&d, 10, &uuid)[0]["status"], "running");
    // not an approver
    let (st, v) = d.put(
        &format!("/approval/10/{au}"),
        WRITER10,
        json!({"opinion": "agree"}),
    );
    assert_eq!(st, 403, "{v}");
    assert_eq!(
        d.put(
            &format!("/approval/10/{au}"),
            CONTROL10,
            json!({"opinion": "maybe"})
        )
        .0,
        400
    );
    assert_eq!(
        d.put(
            &format!("/approval/11/{au}"),
            ADMIN,
            json!({"opinion": "agree"})
        )
        .0,
        404
    );
    let (st, v) = d.put(
        &format!("/approval/10/{au}"),
        CONTROL10,
        json!({"opinion": "agree"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        d.put(
            &format!("/approval/10/{au}"),
            READER,
            json!({"opinion": "refuse"})
        )
        .0,
        409,
        "decided"
    );
    let t = wait_finished(&d, 10, &uuid, T);
    assert_eq!(t["status"], "success");
    let log = log_text(&d, &uuid);
    assert!(log.contains("[n1] after n1") && log.contains("[n3] after n3"));
    assert!(pending(&d).is_empty());
    let titles: Vec<String> = d
        .data("/log/10")
        .as_array()
        .expect("log")
        .iter()
        .map(|e| e["title"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(titles.contains(&"APPROVAL".to_string()), "{titles:?}");

    // refusal: batch and task refuse, later batches cancel, no rollback
    let uuid = start(
        &d,
        10,
        "gated",
        "three",
        json!({"v": "3.2", "_rollbackVersion_": "3.1"}),
    );
    let a = wait_for("an approval", T, || pending(&d).first().cloned());
    let au = a["uuid"].as_str().expect("uuid");
    d.ok_put(&format!("/approval/10/{au}"), json!({"opinion": "refuse"}));
    let t = wait_finished(&d, 10, &uuid, T);
    assert_eq!(t["status"], "refuse");
    assert_eq!(
        statuses(&subtasks(&d, 10, &uuid)),
        ["refuse", "cancel", "cancel"]
    );
    assert!(!log_text(&d, &uuid).contains("after n1"));
    let (st, v) = d.put(&format!("/task/10/{uuid}/rollback"), ADMIN, json!({}));
    assert_eq!(st, 409);
    assert!(v["info"].as_str().unwrap_or("").contains("refused"), "{v}");
}

#[test]
fn approval_everyone_and_timeout() {
    let d = Daemon::start("");
    approval_job(
        &d,
        json!({"plugin": "approval", "approvers": ["control10", "reader"], "everyone": true, "timeout": 600, "batches": "firsttime"}),
    );
    let uuid = start(&d, 10, "gated", "three", json!({}));
    let a = wait_for("an approval", T, || pending(&d).first().cloned());
    let au = a["uuid"].as_str().expect("uuid").to_string();
    // an admin who is not listed decides for everyone
    d.ok_put(&format!("/approval/10/{au}"), json!({"opinion": "agree"}));
    assert_eq!(
        d.put(
            &format!("/approval/10/{au}"),
            CONTROL10,
            json!({"opinion": "agree"})
        )
        .0,
        409
    );
    assert_eq!(wait_finished(&d, 10, &uuid, T)["status"], "success");
    let d2 = Daemon::start("");
    approval_job(
        &d2,
        json!({"plugin": "approval", "approvers": ["control10", "reader"], "everyone": true, "timeout": 600, "batches": "firsttime"}),
    );
    let uuid2 = start(&d2, 10, "gated", "three", json!({}));
    let a = wait_for("an approval", T, || pending(&d2).first().cloned());
    let au = a["uuid"].as_str().expect("uuid").to_string();
    d2.put(
        &format!("/approval/10/{au}"),
        CONTROL10,
        json!({"opinion": "agree"}),
    );
    assert_eq!(pending(&d2).len(), 1, "one of two agreed: still pending");
    assert_eq!(task(&d2, 10, &uuid2)["status"], "running");
    d2.put(
        &format!("/approval/10/{au}"),
        READER,
        json!({"opinion": "agree"}),
    );
    assert_eq!(wait_finished(&d2, 10, &uuid2, T)["status"], "success");

    // no answer within the timeout fails the batch
    let d3 = Daemon::start("");
    approval_job(
        &d3,
        json!({"plugin": "approval", "approvers": ["control10"], "timeout": 1, "batches": "firsttime"}),
    );
    let u3 = start(&d3, 10, "gated", "three", json!({}));
    let subs = wait_confirm(&d3, 10, &u3, 0, T);
    assert_eq!(subs[0]["status"], "fail");
    assert!(
        subs[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("timed out"),
        "{}",
        subs[0]
    );
    assert!(pending(&d3).is_empty());
}

#[test]
fn third_party_dry_run_invoke_query_stop() {
    let d = Daemon::start("");
    deploy_job(&d);
    let names = d.ok_post("/third/option/groupname", json!({"project_id": 10}));
    assert_eq!(names["data"], json!(["four"]));
    let body = json!({"project_id": 10, "uuid": "Caller0Id12X", "params": {"jobname": "app", "group": "four", "variable": {"version": "2", "_rollbackVersion_": "1"}}});
    let log_before = d.data("/log/10");
    let v = d.ok_post("/third/interface/dry-run", body.clone());
    assert_eq!(v["uuid"], "Caller0Id12a");
    assert_eq!(v["msg"], "ok");
    let batches = v["data"]["batches"].as_array().expect("batches");
    assert_eq!(batches.len(), 4);
    assert_eq!(batches[1]["nodes"], json!(["n2"]));
    assert_eq!(batches[0]["steps"], json!(["install", "only-deploy"]));
    assert_eq!(v["data"]["steps"].as_array().map(Vec::len), Some(3));
    assert_eq!(d.data("/task/10"), json!([]), "dry-run stores nothing");
    assert_eq!(d.data("/log/10"), log_before);
    // dry-run refuses what invoke would refuse
    let mut bad = body.clone();
    bad["params"]["group"] = json!("nogroup");
    assert_eq!(d.post("/third/interface/dry-run", ADMIN, bad).0, 404);
    assert_eq!(
        d.post("/third/interface/dry-run", READER, body.clone()).0,
        403
    );
    // invoke twice: one task
    let v = d.ok_post("/third/interface/invoke", body.clone());
    assert_eq!(v["uuid"], "Caller0Id12a");
    assert_eq!(v["data"]["uuid"], "Caller0Id12a");
    let v = d.ok_post("/third/interface/invoke", body.clone());
    assert_eq!(v["info"], "This task has been successfully created");
    assert_eq!(d.data("/task/10").as_array().map(Vec::len), Some(1));
    assert_eq!(
        d.post("/third/interface/dry-run", ADMIN, body.clone()).0,
        409,
        "uuid taken"
    );
    // query: deploy running → waiting for a person
    let q = json!({"uuid": "Caller0Id12X"});
    wait_confirm(&d, 10, "Caller0Id12a", 1, T);
    let v = d.ok_post("/third/interface/query", q.clone());
    assert_eq!(
        (v["status"].clone(), v["type"].clone()),
        (json!("running"), json!("deploy"))
    );
    assert_eq!(v["msg"], "Wait for manual treatment");
    assert_eq!(v["progress"], json!([1, 4]));
    // confirm the failed batch: the deploy ends fail, the decision is pending → still running
    let subs = subtasks(&d, 10, "Caller0Id12a");
    d.ok_put(
        &format!(
            "/subtask/10/{}/confirm",
            subs[1]["uuid"].as_str().expect("uuid")
        ),
        json!({}),
    );
    wait_finished(&d, 10, "Caller0Id12a", T);
    let v = d.ok_post("/third/interface/query", q.clone());
    assert_eq!(
        (v["status"].clone(), v["type"].clone()),
        (json!("running"), json!("deploy"))
    );
    assert_eq!(v["progress"], json!([4, 4]));
    // rollback → type rollback, then complete
    d.ok_put("/task/10/Caller0Id12a/rollback", json!({}));
    wait_finished(&d, 10, "Caller0Id12A", T);
    let v = d.ok_post("/third/interface/query", q.clone());
    assert_eq!(
        (v["status"].clone(), v["type"].clone()),
        (json!("complete"), json!("rollback")),
        "{v}"
    );
    assert_eq!(v["progress"], json!([4, 4]));
    // another attempt (retry_count 1) without rollback → deployonly
    let mut b2 = body.clone();
    b2["retry_count"] = json!(1);
    b2["params"]["variable"] = json!({"version": "2"});
    b2["params"]["group"] = json!("val=n1");
    let v = d.ok_post("/third/interface/invoke", b2);
    assert_eq!(v["uuid"], "Caller0Id12b");
    wait_finished(&d, 10, "Caller0Id12b", T);
    let v = d.ok_post(
        "/third/interface/query",
        json!({"uuid": "Caller0Id12X", "retry_count": 1}),
    );
    assert_eq!(
        (v["status"].clone(), v["type"].clone()),
        (json!("complete"), json!("deployonly")),
        "{v}"
    );
    // stop answers stat true and stops the task
    let mut b3 = body.clone();
    b3["retry_count"] = json!(2);
    b3["params"]["variable"] = json!({"version": "2", "GATE": "/nonexistent"});
    d.ok_post("/job/10", json!({"name": "slow", "steps": [{"plugin": "local", "script": "sleep 300", "timeout": 600}]}));
    b3["params"]["jobname"] = json!("slow");
    d.ok_post("/third/interface/invoke", b3);
    let v = d.ok_post(
        "/third/interface/stop",
        json!({"uuid": "Caller0Id12X", "retry_count": 2}),
    );
    assert_eq!(v["stat"], true);
    let t = wait_finished(&d, 10, "Caller0Id12c", Duration::from_secs(10));
    assert_eq!(t["status"], "fail");
    let v = d.ok_post(
        "/third/interface/query",
        json!({"uuid": "Caller0Id12X", "retry_count": 2}),
    );
    assert_eq!(v["status"], "fail");
    // bad input
    assert_eq!(
        d.post("/third/interface/query", ADMIN, json!({"uuid": "x"}))
            .0,
        400
    );
    assert_eq!(
        d.post(
            "/third/interface/query",
            ADMIN,
            json!({"uuid": "Caller0Id12X", "retry_count": 26})
        )
        .0,
        400
    );
    assert_eq!(
        d.post(
            "/third/interface/query",
            OTHER,
            json!({"uuid": "Caller0Id12X"})
        )
        .0,
        403
    );
    assert_eq!(
        d.post(
            "/third/interface/invoke",
            ADMIN,
            json!({"project_id": "x1", "uuid": "Caller0Id12X"})
        )
        .0,
        400
    );
}

#[test]
fn statistics_over_tasks_at_controlled_times() {
    let mut d = Daemon::start("");
    nodes(&d, 10, &["n1"]);
    group(&d, 10, "one", "list", "n1");
    job(
        &d,
        10,
        "quick",
        json!([{"plugin": "local", "script": "true"}]),
    );
    job(
        &d,
        10,
        "broken",
        json!([{"plugin": "local", "script": "false"}]),
    );
    // the step's own sleep runs on the real clock: 2 real s = 2 fake minutes at 60x
    job(
        &d,
        10,
        "slow",
        json!([{"plugin": "local", "script": "env -u LD_PRELOAD sleep 2"}]),
    );
    let run = |d: &Daemon, job: &str| {
        let u = start(d, 10, job, "one", json!({"_exit_": 1}));
        wait_finished(d, 10, &u, T);
    };
    d.fake_time(Some("2026-02-10 08:00:00"));
    d.restart();
    run(&d, "quick"); // older than 30 days at "now"
    d.fake_time(Some("2026-03-01 09:30:00"));
    d.restart();
    run(&d, "quick");
    run(&d, "broken");
    d.fake_time(Some("2026-03-03 14:10:00 x60"));
    d.restart();
    run(&d, "slow");
    run(&d, "quick");
    d.fake_time(Some("2026-03-20 12:00:00"));
    d.restart();
    let date = d.data("/task/10/analysis/date");
    assert_eq!(date, json!([["2026-03-01", 2, 1], ["2026-03-03", 2, 2]]));
    let hour = d.data("/task/10/analysis/hour");
    assert_eq!(hour, json!([["09", 2], ["14", 2]]));
    let rt = d.data("/task/10/analysis/runtime");
    assert_eq!(
        rt,
        json!({"0-1": "75.00", "1-3": "25.00", "3-5": "0.00", "5-10": "0.00", "10-30": "0.00", "30+": "0.00"})
    );
    let last = d.data("/task/10/analysis/last?count=3");
    let names: Vec<&str> = last
        .as_array()
        .expect("last")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["quick", "slow", "broken"]);
    assert_eq!(last[2]["status"], "fail");
    assert_eq!(d.data("/task/11/analysis/runtime")["0-1"], "0.00");
    assert_eq!(d.get("/task/10/analysis/last?count=0", ADMIN).0, 400);
    // this month: March, four tasks
    let count = d.data("/task/10/count");
    assert_eq!(
        (count["success"].clone(), count["fail"].clone()),
        (json!(3), json!(1))
    );
}

#[test]
fn metrics_count_tasks_steps_and_requests() {
    let d = Daemon::start("");
    nodes(&d, 10, &["n1", "n2"]);
    group(&d, 10, "g", "list", "n1;n2");
    job(
        &d,
        10,
        "j",
        json!([{"plugin": "local", "script": "[ $JOBX_NODE = n1 ]"}]),
    );
    let u = start(&d, 10, "j", "g", json!({}));
    wait_confirm(&d, 10, &u, 1, T);
    assert_eq!(
        d.req("GET", "/metrics", None, None).0,
        401,
        "a token is needed"
    );
    let (st, m) = d.get("/metrics", READER);
    assert_eq!(st, 200);
    let m = m.as_str().unwrap_or("").to_string();
    assert!(m.contains("jobx_tasks{status=\"running\"} 1"), "{m}");
    assert!(m.contains("jobx_batches_waiting_confirmation 1"), "{m}");
    assert!(
        m.contains("jobx_step_runs_total{plugin=\"local\",result=\"success\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("jobx_step_runs_total{plugin=\"local\",result=\"fail\"} 1"),
        "{m}"
    );
    assert!(m.contains("jobx_http_requests_total{method=\"POST\",route=\"/task/:projectid/job/byname\",code=\"200\"} 1"), "{m}");
    assert!(m.contains("jobx_store_bytes "));
    let public = Daemon::start("[server]\npublic_metrics = true\n");
    assert_eq!(public.req("GET", "/metrics", None, None).0, 200);
}

/// Kills the daemon at several points of a task's life and checks the
/// restart contract each time.
#[test]
fn crash_at_several_points_keeps_every_reported_state() {
    let mut d = Daemon::start("");
    nodes(&d, 10, &["n1", "n2"]);
    group(&d, 10, "g", "list", "n1;n2");
    job(
        &d,
        10,
        "ok",
        json!([{"plugin": "local", "script": "echo hi $JOBX_NODE"}]),
    );
    job(
        &d,
        10,
        "bad",
        json!([{"plugin": "local", "script": "exit 1"}]),
    );

    // 1. right after creation was acknowledged
    let u1 = start(&d, 10, "ok", "g", json!({}));
    d.kill9();
    d.restart();
    // Depending on where the kill landed the task finished, or its batch was
    // interrupted and waits for a person: then it says so, and a retry
    // finishes it. It is never left running without a runner.
    let t1 = wait_for("task 1 to finish or wait for a person", T, || {
        let t = task(&d, 10, &u1);
        if t["status"] == "success" {
            return Some(t);
        }
        let subs = subtasks(&d, 10, &u1);
        let waiting = subs.iter().find(|s| s["confirm"] == "WaitConfirm")?;
        assert_eq!(
            waiting["reason"], "interrupted by daemon restart",
            "{subs:?}"
        );
        d.ok_put(
            &format!("/subtask/10/{}/confirm", waiting["uuid"].as_str()?),
            json!({"action": "retry"}),
        );
        None
    });
    assert_eq!(t1["status"], "success");

    // 2. during WaitConfirm
    let u2 = start(&d, 10, "bad", "g", json!({}));
    let before = wait_confirm(&d, 10, &u2, 0, T);
    d.kill9();
    d.restart();
    let after = subtasks(&d, 10, &u2);
    assert_eq!(after[0]["confirm"], "WaitConfirm");
    assert_eq!(
        after[0]["reason"], before[0]["reason"],
        "not re-interpreted as interrupted"
    );
    assert_eq!(after[0]["finishtime"], before[0]["finishtime"]);
    assert_eq!(after[1]["status"], "init");
    d.ok_put(
        &format!(
            "/subtask/10/{}/confirm",
            after[0]["uuid"].as_str().expect("uuid")
        ),
        json!({}),
    );
    let subs = wait_confirm(&d, 10, &u2, 1, T);
    assert_eq!(subs[0]["confirm"], "confirmed by admin");

    // 3. during stop
    d.ok_put(&format!("/task/10/{u2}"), json!({}));
    d.kill9();
    d.restart();
    let t = wait_finished(&d, 10, &u2, T);
    assert_eq!(t["status"], "fail");
    assert_eq!(t["reason"], "stopped by admin");
    assert_eq!(subtasks(&d, 10, &u2)[1]["confirm"], "task stop");

    // earlier tasks are untouched and nothing is left running
    assert_eq!(task(&d, 10, &u1)["status"], "success");
    assert_eq!(d.data("/task/10?status=running"), json!([]));
    assert_eq!(d.data("/task/10?status=init"), json!([]));
}
