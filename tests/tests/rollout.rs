//! Rollout control through the real binary: rollback, approvals, the
//! third-party interface, statistics, metrics and crash recovery.

use jobx_tests::daemon::*;
use jobx_tests::project::Project;
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn statuses(subs: &[Value]) -> Vec<String> {
    subs.iter()
        .map(|s| s["status"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A deploy over 4 batches whose batch 2 fails on deploy (not on rollback).
fn deploy_job(p: &Project) {
    p.nodes(&["n1", "n2", "n3", "n4"]);
    p.group("four", "list", "n1;n2;n3;n4");
    p.job(
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
    let p = d.project(10);
    deploy_job(&p);
    let deploy = p.run(
        "app",
        "four",
        json!({"version": "2.0", "_rollbackVersion_": "1.9"}),
    );
    let uuid = deploy.uuid.clone();
    // no decision while the deploy runs
    deploy.wait_confirm(1);
    let (st, v) = deploy.put_as("/rollback", ADMIN);
    assert_eq!(st, 409, "{v}");
    assert!(
        v["info"].as_str().unwrap_or("").contains("still running"),
        "{v}"
    );
    // stop after 2 of 4 batches
    deploy.stop();
    let t = deploy.wait_finished();
    assert_eq!(t["status"], "fail");
    assert_eq!(
        statuses(&deploy.subtasks()),
        ["success", "fail", "cancel", "cancel"]
    );
    // control is needed; a write token is refused
    assert_eq!(deploy.put_as("/rollback", WRITER10).0, 403);
    let (rollback, v) = deploy.rollback();
    let rb = rollback.uuid.clone();
    let mut want = uuid.clone();
    let last = want.pop().expect("last char");
    want.push(last.to_ascii_uppercase());
    assert_eq!(rb, want, "rollback partner: last letter uppercased");
    assert_eq!(v["info"], "ok");
    let t = rollback.wait_finished();
    assert_eq!(t["status"], "success", "{t}");
    assert_eq!(t["variables"]["version"], "1.9");
    assert!(t["variables"].get("_rollbackVersion_").is_none());
    let subs = rollback.subtasks();
    assert_eq!(
        subs.iter()
            .map(|s| s["nodelist"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["n1", "n2"]
    );
    let log = rollback.log_text();
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
    let (st, v) = deploy.put_as("/norollback", ADMIN);
    assert_eq!(st, 409, "{v}");
    assert!(v["info"].as_str().unwrap_or("").contains("already"), "{v}");
    let (st, v) = rollback.put_as("/rollback", ADMIN);
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
    let p = d.project(10);
    deploy_job(&p);
    p.group("first", "list", "n1");
    // no _rollbackVersion_
    let plain = p.run("app", "first", json!({"version": "1"}));
    plain.wait_finished();
    let (st, v) = plain.put_as("/rollback", ADMIN);
    assert_eq!(st, 409);
    assert!(
        v["info"]
            .as_str()
            .unwrap_or("")
            .contains("_rollbackVersion_"),
        "{v}"
    );
    // norollback records the decision and runs nothing
    let deploy = p.run(
        "app",
        "first",
        json!({"version": "2", "_rollbackVersion_": "1"}),
    );
    deploy.wait_finished();
    let dep = deploy.uuid.clone();
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
    let (st, v) = deploy.put_as("/rollback", ADMIN);
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
    deploy_job(&d.project(10));
    d.project(10).group("first", "list", "n1");
    d.fake_time(Some("2026-03-01 10:00:00"));
    d.restart();
    let deploy = d.project(10).run(
        "app",
        "first",
        json!({"version": "2", "_rollbackVersion_": "1"}),
    );
    deploy.wait_finished();
    let dep = deploy.uuid.clone();
    d.fake_time(Some("2026-03-08 10:00:05"));
    d.restart();
    let (st, v) = d.put(&format!("/task/10/{dep}/rollback"), ADMIN, json!({}));
    assert_eq!(st, 409, "{v}");
    assert!(v["info"].as_str().unwrap_or("").contains("7 days"), "{v}");
}

fn approval_job(p: &Project, approval: Value) {
    p.nodes(&["n1", "n2", "n3"]);
    p.group("three", "list", "n1;n2;n3");
    p.job(
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
    let p = d.project(10);
    approval_job(
        &p,
        json!({"name": "ok?", "plugin": "approval", "approvers": ["control10", "reader"], "message": "ship ${v}?", "batches": "firsttime"}),
    );
    let task = p.run("gated", "three", json!({"v": "3.1"}));
    let uuid = task.uuid.clone();
    let a = wait_for("an approval", T, || pending(&d).first().cloned());
    assert_eq!(a["message"], "ship 3.1?");
    assert_eq!(a["taskuuid"], uuid.as_str());
    let au = a["uuid"].as_str().expect("uuid").to_string();
    assert_eq!(task.subtasks()[0]["status"], "running");
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
    let t = task.wait_finished();
    assert_eq!(t["status"], "success");
    let log = task.log_text();
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
    let task = p.run(
        "gated",
        "three",
        json!({"v": "3.2", "_rollbackVersion_": "3.1"}),
    );
    let a = wait_for("an approval", T, || pending(&d).first().cloned());
    let au = a["uuid"].as_str().expect("uuid");
    d.ok_put(&format!("/approval/10/{au}"), json!({"opinion": "refuse"}));
    let t = task.wait_finished();
    assert_eq!(t["status"], "refuse");
    assert_eq!(statuses(&task.subtasks()), ["refuse", "cancel", "cancel"]);
    assert!(!task.log_text().contains("after n1"));
    let (st, v) = task.put_as("/rollback", ADMIN);
    assert_eq!(st, 409);
    assert!(v["info"].as_str().unwrap_or("").contains("refused"), "{v}");
}

#[test]
fn approval_everyone_and_timeout() {
    let d = Daemon::start("");
    approval_job(
        &d.project(10),
        json!({"plugin": "approval", "approvers": ["control10", "reader"], "everyone": true, "timeout": 600, "batches": "firsttime"}),
    );
    let task = d.project(10).run("gated", "three", json!({}));
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
    assert_eq!(task.wait_finished()["status"], "success");
    let d2 = Daemon::start("");
    approval_job(
        &d2.project(10),
        json!({"plugin": "approval", "approvers": ["control10", "reader"], "everyone": true, "timeout": 600, "batches": "firsttime"}),
    );
    let task2 = d2.project(10).run("gated", "three", json!({}));
    let a = wait_for("an approval", T, || pending(&d2).first().cloned());
    let au = a["uuid"].as_str().expect("uuid").to_string();
    d2.put(
        &format!("/approval/10/{au}"),
        CONTROL10,
        json!({"opinion": "agree"}),
    );
    assert_eq!(pending(&d2).len(), 1, "one of two agreed: still pending");
    assert_eq!(task2.get()["status"], "running");
    d2.put(
        &format!("/approval/10/{au}"),
        READER,
        json!({"opinion": "agree"}),
    );
    assert_eq!(task2.wait_finished()["status"], "success");

    // no answer within the timeout fails the batch
    let d3 = Daemon::start("");
    approval_job(
        &d3.project(10),
        json!({"plugin": "approval", "approvers": ["control10"], "timeout": 1, "batches": "firsttime"}),
    );
    let subs = d3
        .project(10)
        .run("gated", "three", json!({}))
        .wait_confirm(0);
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
    let p = d.project(10);
    deploy_job(&p);
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
    let first = p.task("Caller0Id12a");
    first.wait_confirm(1);
    let v = d.ok_post("/third/interface/query", q.clone());
    assert_eq!(
        (v["status"].clone(), v["type"].clone()),
        (json!("running"), json!("deploy"))
    );
    assert_eq!(v["msg"], "Wait for manual treatment");
    assert_eq!(v["progress"], json!([1, 4]));
    // confirm the failed batch: the deploy ends fail, the decision is pending → still running
    first.confirm(1, None);
    first.wait_finished();
    let v = d.ok_post("/third/interface/query", q.clone());
    assert_eq!(
        (v["status"].clone(), v["type"].clone()),
        (json!("running"), json!("deploy"))
    );
    assert_eq!(v["progress"], json!([4, 4]));
    // rollback → type rollback, then complete
    first.rollback();
    p.task("Caller0Id12A").wait_finished();
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
    p.task("Caller0Id12b").wait_finished();
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
    p.job(
        "slow",
        json!([{"plugin": "local", "script": "sleep 300", "timeout": 600}]),
    );
    b3["params"]["jobname"] = json!("slow");
    d.ok_post("/third/interface/invoke", b3);
    let v = d.ok_post(
        "/third/interface/stop",
        json!({"uuid": "Caller0Id12X", "retry_count": 2}),
    );
    assert_eq!(v["stat"], true);
    let t = p
        .task("Caller0Id12c")
        .wait_finished_within(Duration::from_secs(10));
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
    let p = d.project(10);
    p.nodes(&["n1"]);
    p.group("one", "list", "n1");
    p.job("quick", json!([{"plugin": "local", "script": "true"}]));
    p.job("broken", json!([{"plugin": "local", "script": "false"}]));
    // the step's own sleep runs on the real clock: 2 real s = 2 fake minutes at 60x
    p.job(
        "slow",
        json!([{"plugin": "local", "script": "env -u LD_PRELOAD sleep 2"}]),
    );
    let run = |d: &Daemon, job: &str| {
        d.project(10)
            .run(job, "one", json!({"_exit_": 1}))
            .wait_finished();
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
    let p = d.project(10);
    p.nodes(&["n1", "n2"]);
    p.group("g", "list", "n1;n2");
    p.job(
        "j",
        json!([{"plugin": "local", "script": "[ $JOBX_NODE = n1 ]"}]),
    );
    p.run("j", "g", json!({})).wait_confirm(1);
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
    let p = d.project(10);
    p.nodes(&["n1", "n2"]);
    p.group("g", "list", "n1;n2");
    p.job(
        "ok",
        json!([{"plugin": "local", "script": "echo hi $JOBX_NODE"}]),
    );
    p.job("bad", json!([{"plugin": "local", "script": "exit 1"}]));

    // 1. right after creation was acknowledged
    let u1 = p.run("ok", "g", json!({})).uuid;
    d.kill9();
    d.restart();
    // Depending on where the kill landed the task finished, or its batch was
    // interrupted and waits for a person: then it says so, and a retry
    // finishes it. It is never left running without a runner.
    let task1 = d.project(10).task(&u1);
    let t1 = wait_for("task 1 to finish or wait for a person", T, || {
        let t = task1.get();
        if t["status"] == "success" {
            return Some(t);
        }
        let subs = task1.subtasks();
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
    let u2 = d.project(10).run("bad", "g", json!({}));
    let before = u2.wait_confirm(0);
    let u2 = u2.uuid;
    d.kill9();
    d.restart();
    let task2 = d.project(10).task(&u2);
    let after = task2.subtasks();
    assert_eq!(after[0]["confirm"], "WaitConfirm");
    assert_eq!(
        after[0]["reason"], before[0]["reason"],
        "not re-interpreted as interrupted"
    );
    assert_eq!(after[0]["finishtime"], before[0]["finishtime"]);
    assert_eq!(after[1]["status"], "init");
    task2.confirm(0, None);
    let subs = task2.wait_confirm(1);
    assert_eq!(subs[0]["confirm"], "confirmed by admin");

    // 3. during stop
    task2.stop();
    d.kill9();
    d.restart();
    let task2 = d.project(10).task(&u2);
    let t = task2.wait_finished();
    assert_eq!(t["status"], "fail");
    assert_eq!(t["reason"], "stopped by admin");
    assert_eq!(task2.subtasks()[1]["confirm"], "task stop");

    // earlier tasks are untouched and nothing is left running
    assert_eq!(d.project(10).task(&u1).get()["status"], "success");
    assert_eq!(d.data("/task/10?status=running"), json!([]));
    assert_eq!(d.data("/task/10?status=init"), json!([]));
}
