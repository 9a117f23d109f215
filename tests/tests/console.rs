//! The operator's console in a real headless Chromium against the real
//! jobxd and local plugin: what a person sees and can do. Every page a test
//! visits is saved under target/screenshots/.

use jobx_tests::browser::{xpath_literal, Browser, By};
use jobx_tests::daemon::*;
use jobx_tests::flow::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Tasks and batches finish within this.
const T: Duration = Duration::from_secs(30);
/// The page shows a change within this (it updates at least every 2 s).
const SEE: Duration = Duration::from_secs(10);

const SCRIPT_TAG: &str = "<script>alert(1)</script>";
const IMG_TAG: &str = "\"><img src=x onerror=alert(1)>";

fn ui(d: &Daemon, route: &str) -> String {
    format!("{}/ui/{route}", d.base)
}

/// Signs in through the login page: types the token, clicks "Sign in",
/// waits for the user's name in the header.
fn sign_in(b: &Browser, d: &Daemon, token: &str, name: &str) {
    b.goto(&format!("{}/ui/login", d.base));
    b.type_into(&By::css("#token"), token);
    b.screenshot(&format!("login-{name}"));
    b.click(&By::button("Sign in"));
    b.wait_text(&By::css("#user"), SEE, name, |t| t.trim() == name);
    assert!(!b.url().contains(token), "the token is in the URL");
}

fn sign_out(b: &Browser) {
    b.click(&By::button("Sign out"));
    b.wait_visible(&By::css("#token"), SEE);
}

/// Opens a console route (`#/p/10/tasks`) and waits for it to render `ready`.
fn open(b: &Browser, d: &Daemon, route: &str, ready: &By, shot: &str) {
    b.goto(&ui(d, route));
    b.wait_visible(ready, SEE);
    b.screenshot(shot);
}

fn open_task(b: &Browser, d: &Daemon, uuid: &str, shot: &str) {
    b.goto(&ui(d, &format!("#/p/10/task/{uuid}")));
    wait_status(b, SEE, |s| !s.is_empty());
    b.screenshot(shot);
}

fn status_text(b: &Browser) -> String {
    b.find(&By::css("#task-status"))
        .and_then(|e| e.text().ok())
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

fn wait_status(b: &Browser, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
    b.wait_for("#task-status", timeout, |b| {
        let t = status_text(b);
        ok(&t).then_some(t)
    })
}

fn wait_status_is(b: &Browser, timeout: Duration, want: &str) {
    b.wait_for(&format!("#task-status to be {want:?}"), timeout, |b| {
        (status_text(b) == want).then_some(())
    });
}

fn waiting_text(b: &Browser) -> String {
    b.find(&By::css("#task-waiting"))
        .and_then(|e| e.text().ok())
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

fn wait_waiting(b: &Browser, timeout: Duration, want: &str) {
    b.wait_for(&format!("#task-waiting to be {want:?}"), timeout, |b| {
        (waiting_text(b) == want).then_some(())
    });
}

/// Sections of the task page, one per batch, in page order: (uuid, status).
fn batches(b: &Browser) -> Vec<(String, String)> {
    b.find_all(&By::css("section.batch"))
        .iter()
        .filter_map(|s| {
            let uuid = s.attr("data-uuid").ok()??;
            let st = s.find(&By::css(".batch-status")).ok()?.text().ok()?;
            Some((uuid, st.trim().to_string()))
        })
        .collect()
}

fn class_has(class: &str, word: &str) -> String {
    format!("contains(concat(' ', normalize-space({class}), ' '), ' {word} ')")
}

/// A button with exactly `text` inside the batch section of subtask `sub`.
fn batch_button(sub: &str, text: &str) -> By {
    By::XPath(format!(
        "//section[{}][@data-uuid={}]//button[normalize-space(.)={}]",
        class_has("@class", "batch"),
        xpath_literal(sub),
        xpath_literal(text)
    ))
}

/// The grid cells of a batch: (node, step uuid, result class).
fn cells(b: &Browser, sub: &str) -> Vec<(String, String, String)> {
    let js = "const s = Array.from(document.querySelectorAll('section.batch'))
                .find(x => x.dataset.uuid === arguments[0]);
              if (!s) return [];
              const kinds = ['ok', 'fail', 'running', 'pending', 'skipped'];
              return Array.from(s.querySelectorAll('td.cell')).map(c =>
                [c.dataset.node, c.dataset.step,
                 kinds.filter(k => c.classList.contains(k)).join(' ')]);";
    b.exec(js, vec![json!(sub)])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let s = |i: usize| c[i].as_str().unwrap_or("").to_string();
            (s(0), s(1), s(2))
        })
        .collect()
}

fn cell_class(b: &Browser, sub: &str, node: &str, step: &str) -> Option<String> {
    cells(b, sub)
        .into_iter()
        .find(|(n, s, _)| n == node && s == step)
        .map(|c| c.2)
}

/// Clicks the cell of `node` × `step` in batch `sub`.
fn click_cell(b: &Browser, sub: &str, node: &str, step: &str) {
    b.click(&By::XPath(format!(
        "//section[{}][@data-uuid={}]//td[{}][@data-node={}][@data-step={}]",
        class_has("@class", "batch"),
        xpath_literal(sub),
        class_has("@class", "cell"),
        xpath_literal(node),
        xpath_literal(step)
    )));
}

/// The texts of the `.line` records in `#log` (the output of a clicked cell).
fn log_lines(b: &Browser) -> Vec<String> {
    lines_in(b, "#log")
}

/// The texts of the `.line` records inside `container`.
fn lines_in(b: &Browser, container: &str) -> Vec<String> {
    b.exec(
        "const l = document.querySelector(arguments[0]);
         return l ? Array.from(l.querySelectorAll('.line')).map(e => e.textContent) : [];",
        vec![json!(container)],
    )
    .as_array()
    .cloned()
    .unwrap_or_default()
    .iter()
    .map(|v| v.as_str().unwrap_or("").to_string())
    .collect()
}

fn wait_log_line(b: &Browser, what: &str, ok: impl Fn(&str) -> bool) -> String {
    b.wait_for(&format!("a log line with {what} in #log"), SEE, |b| {
        log_lines(b).into_iter().find(|l| ok(l))
    })
}

/// A marker set in the page; gone if the page was loaded again.
fn mark_page(b: &Browser) {
    b.exec("window.__jobxSamePage = 'yes';", vec![]);
}

fn assert_same_page(b: &Browser) {
    assert_eq!(
        b.exec("return window.__jobxSamePage || null;", vec![]),
        json!("yes"),
        "the page was reloaded"
    );
}

fn visible_buttons(b: &Browser, texts: &[&str]) -> Vec<String> {
    texts
        .iter()
        .filter(|t| !b.visible(&By::button(t)).is_empty())
        .map(|t| t.to_string())
        .collect()
}

/// The step uuids of a job, by step name.
fn step_uuid(d: &Daemon, job: &str, step: &str) -> String {
    let j = d.data(&format!("/job/10/{job}"));
    j["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == step))
        .and_then(|s| s["uuid"].as_str())
        .unwrap_or_else(|| panic!("no step {step} in {j}"))
        .to_string()
}

/// `fetch()` from the signed-in page with the session's CSRF token (read
/// from /ui/session), as a crafted request from that session would.
fn crafted(b: &Browser, method: &str, path: &str, body: Value) -> (u16, String) {
    let (st, s) = b.fetch("/ui/session", json!({}));
    assert_eq!(st, 200, "/ui/session: {s}");
    let s: Value = serde_json::from_str(&s).unwrap_or(Value::Null);
    let csrf = s["data"]["csrf"].as_str().unwrap_or("").to_string();
    assert!(!csrf.is_empty(), "no csrf in /ui/session: {s}");
    b.fetch(
        path,
        json!({
            "method": method,
            "headers": {"Content-Type": "application/json", "X-CSRF-Token": csrf},
            "body": body.to_string(),
        }),
    )
}

/// A dialog opened by a click (a confirmation the console may ask for) is
/// accepted; answers its text.
fn accept_confirmation(b: &Browser) -> Option<String> {
    let t = jobx_tests::poll(Duration::from_millis(300), || b.alert_text());
    if t.is_some() {
        let _ = b.accept_alert();
    }
    t
}

fn six_nodes(d: &Daemon) {
    nodes(d, 10, &["n1", "n2", "n3", "n4", "n5", "n6"]);
}

/// A job whose install step fails in batch 2 unless its gate file holds
/// "open"; the gate starts closed. Answers the gate file's path.
fn gated_job(d: &Daemon, name: &str) -> std::path::PathBuf {
    let gate = d.dir.path().join("gate");
    std::fs::write(&gate, "closed\n").expect("gate file");
    let script = format!(
        "echo \"install $1 on $JOBX_NODE batch $JOBX_BATCH/$JOBX_BATCHES\"\n\
         if [ \"$JOBX_BATCH\" = 2 ]; then\n\
           v=$(cat '{}')\n\
           echo \"gate: $v\"\n\
           [ \"$v\" = open ] || {{ echo \"gate is $v\" >&2; exit 3; }}\n\
         fi\n",
        gate.display()
    );
    job(
        d,
        10,
        name,
        json!([
            {"name": "install", "plugin": "local", "args": "${version}", "script": script},
            {"name": "check", "plugin": "local", "script": "echo checked $JOBX_NODE"}
        ]),
    );
    gate
}

#[test]
fn harness_drives_a_plain_page() {
    let d = Daemon::start("");
    let b = Browser::start("harness");
    b.goto(&format!("{}/mon", d.base));
    assert_eq!(b.body_text().trim(), "ok");
    b.screenshot("mon");
    b.goto("data:text/html,<title>t</title><button onclick=\"document.getElementById('o').textContent='clicked'\">Press me</button><p id=o></p><input id=i>");
    assert_eq!(b.title(), "t");
    b.click(&By::button("Press me"));
    b.wait_text(&By::css("#o"), SEE, "clicked", |t| t == "clicked");
    b.type_into(&By::css("#i"), "hello");
    let i = b.find(&By::css("#i")).expect("input");
    assert_eq!(i.prop("value").expect("value"), "hello");
    assert_eq!(b.alert_text(), None);
    b.exec("setTimeout(() => alert('boo'), 0)", vec![]);
    let t = b.wait_for("the dialog", SEE, |b| b.alert_text());
    assert_eq!(t, "boo");
    b.accept_alert().expect("accept");
    assert_eq!(b.alert_text(), None);
    let shot = b.screenshot("data");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 100, "{}", shot.display());
}

#[test]
fn sign_in_wrong_token_and_sign_out() {
    let d = Daemon::start("");
    let b = Browser::start("sign-in");
    // `/` leads to the login page
    b.goto(&format!("{}/", d.base));
    b.wait_visible(&By::css("#token"), SEE);
    b.screenshot("login");
    assert!(
        b.url().starts_with(&format!("{}/ui/", d.base)),
        "{}",
        b.url()
    );
    let label = b
        .find(&By::css("label[for=token]"))
        .expect("label of #token");
    assert_eq!(label.text().expect("label").trim(), "Token");
    let input = b.find(&By::css("#token")).expect("#token");
    assert_eq!(
        input.attr("type").expect("type").as_deref(),
        Some("password")
    );

    // a wrong token is refused with a message
    b.type_into(&By::css("#token"), "not-a-token-123");
    b.click(&By::button("Sign in"));
    let msg = b.wait_text(&By::css("#login-error"), SEE, "unknown token", |t| {
        t.contains("unknown token")
    });
    b.screenshot("wrong-token");
    assert!(!msg.contains("not-a-token-123"), "{msg}");
    assert!(!b.url().contains("not-a-token"), "{}", b.url());
    assert!(b.find(&By::css("#user")).is_none_or(|u| u
        .text()
        .unwrap_or_default()
        .trim()
        .is_empty()));
    let session = b.cookie("jobx_session");
    if let Some(c) = &session {
        let v = c["value"].as_str().unwrap_or("");
        let (st, _) = session_with_cookie(&d, v);
        assert_eq!(st, 401, "a refused sign-in gave a working session");
    }

    // the right token: the name is shown, the cookie is HttpOnly + Strict
    b.type_into(&By::css("#token"), ADMIN);
    b.click(&By::button("Sign in"));
    b.wait_text(&By::css("#user"), SEE, "admin", |t| t.trim() == "admin");
    b.wait_visible(&By::button("Sign out"), SEE);
    b.screenshot("signed-in");
    assert!(!b.url().contains(ADMIN), "{}", b.url());
    let c = b.cookie("jobx_session").expect("a jobx_session cookie");
    assert_eq!(c["httpOnly"], true, "{c}");
    assert_eq!(c["sameSite"], "Strict", "{c}");
    let cookie = c["value"].as_str().unwrap_or("").to_string();
    assert!(!cookie.is_empty() && cookie != ADMIN, "{c}");
    let js_cookies = b.exec("return document.cookie;", vec![]);
    assert!(
        !js_cookies.as_str().unwrap_or("").contains("jobx_session"),
        "page scripts can read the session cookie: {js_cookies}"
    );
    let (st, s) = b.fetch("/ui/session", json!({}));
    assert_eq!(st, 200, "{s}");
    let s: Value = serde_json::from_str(&s).expect("session JSON");
    assert_eq!(s["stat"], true, "{s}");
    assert_eq!(s["data"]["user"], "admin", "{s}");
    assert!(!s["data"]["csrf"].as_str().unwrap_or("").is_empty(), "{s}");
    assert_eq!(s["data"]["slave"], "test-slave", "{s}");
    // the same cookie works from outside the browser while signed in
    assert_eq!(session_with_cookie(&d, &cookie).0, 200);

    // sign-out ends the session, on the server too
    sign_out(&b);
    b.screenshot("signed-out");
    assert_eq!(
        session_with_cookie(&d, &cookie).0,
        401,
        "session alive after sign-out"
    );
    b.goto(&ui(&d, "#/projects"));
    b.wait_visible(&By::css("#token"), SEE);
    b.screenshot("projects-after-sign-out");
    let (st, _) = b.fetch("/task/10", json!({}));
    assert_eq!(st, 401, "the API answers the signed-out browser");
}

/// GET /ui/session with a `jobx_session` cookie, from outside the browser.
fn session_with_cookie(d: &Daemon, value: &str) -> (u16, String) {
    let r = ureq::get(&format!("{}/ui/session", d.base))
        .set("Cookie", &format!("jobx_session={value}"))
        .call();
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET /ui/session: {e}"),
    }
}

#[test]
fn run_form_batch_two_fails_then_retry_after_fixing_the_file_succeeds() {
    let d = Daemon::start("");
    six_nodes(&d);
    group(&d, 10, "rolling", "percent", "1:2:50%");
    let gate = gated_job(&d, "deploy");
    let install = step_uuid(&d, "deploy", "install");
    let check = step_uuid(&d, "deploy", "check");

    let b = Browser::start("run-retry");
    sign_in(&b, &d, ADMIN, "admin");
    open(&b, &d, "#/p/10/run", &By::css("select#run-job"), "run-form");
    // the group's option reads "rolling (percent)"; both are picked by value
    b.select_value("select#run-job", "deploy");
    b.select_value("select#run-group", "rolling");
    b.type_into(&By::css("#var-version"), "2.4.1");
    b.click(&By::button("Preview plan"));
    let plan = b.wait_for("the plan of 3 batches", SEE, |b| {
        let p: Vec<String> = b
            .find_all(&By::css("#plan .plan-batch"))
            .iter()
            .filter_map(|e| e.text().ok())
            .collect();
        (p.len() == 3).then_some(p)
    });
    b.screenshot("run-plan");
    let has = |t: &str, ns: &[&str]| {
        ["n1", "n2", "n3", "n4", "n5", "n6"]
            .iter()
            .all(|n| t.contains(n) == ns.contains(n))
    };
    assert!(has(&plan[0], &["n1"]), "{plan:?}");
    assert!(has(&plan[1], &["n2", "n3"]), "{plan:?}");
    assert!(has(&plan[2], &["n4", "n5", "n6"]), "{plan:?}");
    b.click(&By::button("Start task"));
    let uuid = b.wait_for("the task page", SEE, |b| {
        let u = b.url();
        let rest = u.split("#/p/10/task/").nth(1)?;
        (rest.len() == 12).then(|| rest.to_string())
    });
    let t = task(&d, 10, &uuid);
    assert_eq!(t["user"], "admin", "{t}");
    assert_eq!(t["calltype"], "page", "{t}");
    assert_eq!(t["variables"]["version"], "2.4.1", "{t}");
    wait_status(&b, SEE, |s| !s.is_empty());
    mark_page(&b);
    b.screenshot("task-started");

    // batch 2 fails; the page says so without a reload
    wait_waiting(&b, T, "waits for confirmation");
    b.screenshot("task-waits");
    assert_same_page(&b);
    let subs = subtasks(&d, 10, &uuid);
    let ids: Vec<String> = subs
        .iter()
        .map(|s| s["uuid"].as_str().unwrap_or("").to_string())
        .collect();
    let shown = batches(&b);
    assert_eq!(
        shown.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
        ids,
        "batches in order"
    );
    assert_eq!(shown[0].1, "success", "{shown:?}");
    assert_eq!(shown[1].1, "fail", "{shown:?}");
    for n in ["n2", "n3"] {
        assert_eq!(
            cell_class(&b, &ids[1], n, &install).as_deref(),
            Some("fail")
        );
    }
    assert_eq!(
        cell_class(&b, &ids[0], "n1", &install).as_deref(),
        Some("ok")
    );
    assert_eq!(cell_class(&b, &ids[0], "n1", &check).as_deref(), Some("ok"));
    assert!(!b.visible(&batch_button(&ids[1], "Continue")).is_empty());
    assert!(b.visible(&batch_button(&ids[0], "Retry")).is_empty());
    // the failed node's output
    click_cell(&b, &ids[1], "n2", &install);
    wait_log_line(&b, "\"gate: closed\"", |l| l.contains("gate: closed"));
    wait_log_line(&b, "the step's stderr", |l| l.contains("gate is closed"));
    b.screenshot("failed-cell-log");

    // fix the cause, retry, the task succeeds; the open log follows
    std::fs::write(&gate, "open\n").expect("gate file");
    b.click(&batch_button(&ids[1], "Retry"));
    accept_confirmation(&b);
    wait_status_is(&b, T, "success");
    b.screenshot("task-success");
    assert_same_page(&b);
    assert_eq!(waiting_text(&b), "");
    wait_log_line(&b, "\"gate: open\"", |l| l.contains("gate: open"));
    for (i, sub) in ids.iter().enumerate() {
        let c = cells(&b, sub);
        assert!(!c.is_empty(), "no cells in batch {i}");
        assert!(c.iter().all(|c| c.2 == "ok"), "batch {i}: {c:?}");
    }
    assert!(b.visible(&By::button("Retry")).is_empty());
    assert_eq!(task(&d, 10, &uuid)["status"], "success");
    assert_eq!(subtasks(&d, 10, &uuid)[1]["confirm"], "retried by admin");
}

#[test]
fn continue_on_a_failed_batch_ends_fail_after_the_last_batch() {
    let d = Daemon::start("");
    six_nodes(&d);
    group(&d, 10, "thirds", "percent", "2");
    gated_job(&d, "deploy");
    let install = step_uuid(&d, "deploy", "install");
    let check = step_uuid(&d, "deploy", "check");
    let uuid = start(&d, 10, "deploy", "thirds", json!({"version": "1"}));

    let b = Browser::start("continue");
    sign_in(&b, &d, ADMIN, "admin");
    open_task(&b, &d, &uuid, "task");
    wait_waiting(&b, T, "waits for confirmation");
    b.screenshot("waits");
    let ids: Vec<String> = subtasks(&d, 10, &uuid)
        .iter()
        .map(|s| s["uuid"].as_str().unwrap_or("").to_string())
        .collect();
    b.click(&batch_button(&ids[1], "Continue"));
    accept_confirmation(&b);
    wait_status_is(&b, T, "fail");
    b.screenshot("fail");
    let shown = batches(&b);
    let st: Vec<&str> = shown.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(st, ["success", "fail", "success"], "{shown:?}");
    for n in ["n5", "n6"] {
        assert_eq!(cell_class(&b, &ids[2], n, &install).as_deref(), Some("ok"));
        assert_eq!(cell_class(&b, &ids[2], n, &check).as_deref(), Some("ok"));
    }
    // batch 2's later step never ran
    assert_ne!(cell_class(&b, &ids[1], "n3", &check).as_deref(), Some("ok"));
    assert_eq!(waiting_text(&b), "");
    assert!(visible_buttons(&b, &["Continue", "Retry", "Stop"]).is_empty());
    assert_eq!(subtasks(&d, 10, &uuid)[1]["confirm"], "confirmed by admin");
    assert_eq!(task(&d, 10, &uuid)["status"], "fail");
}

#[test]
fn stop_during_a_sleep_ends_the_task_within_5_s() {
    let d = Daemon::start("");
    nodes(&d, 10, &["n1", "n2"]);
    group(&d, 10, "both", "list", "n1,n2");
    let mark = marker("stop");
    job(
        &d,
        10,
        "slow",
        json!([{"name": "wait", "plugin": "local", "args": mark,
                "script": "echo sleeping; bash -c \"sleep 60; : $1\"", "timeout": 120}]),
    );
    let uuid = start(&d, 10, "slow", "both", json!({}));
    let b = Browser::start("stop");
    sign_in(&b, &d, ADMIN, "admin");
    open_task(&b, &d, &uuid, "task");
    let ids: Vec<String> = subtasks(&d, 10, &uuid)
        .iter()
        .map(|s| s["uuid"].as_str().unwrap_or("").to_string())
        .collect();
    b.wait_for("the cells to run", SEE, |b| {
        let c = cells(b, &ids[0]);
        (c.len() == 2 && c.iter().all(|c| c.2 == "running")).then_some(())
    });
    wait_for("the sleeps", T, || {
        (processes_matching(&mark).len() >= 2).then_some(())
    });
    b.screenshot("running");
    let t0 = Instant::now();
    b.click(&By::button("Stop"));
    accept_confirmation(&b);
    wait_status_is(&b, Duration::from_secs(5), "fail");
    let took = t0.elapsed();
    b.screenshot("stopped");
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    let reason = b
        .wait_visible(&By::css("#task-reason"), SEE)
        .text()
        .expect("reason");
    assert!(reason.contains("stopped by admin"), "{reason}");
    assert!(
        b.visible(&By::button("Stop")).is_empty(),
        "Stop still offered"
    );
    wait_for("the sleeps to end", Duration::from_secs(5), || {
        processes_matching(&mark).is_empty().then_some(())
    });
    assert_eq!(task(&d, 10, &uuid)["stopped_by"], "admin");
}

#[test]
fn approval_buttons_for_the_approver_only_and_a_crafted_agree_is_refused() {
    let d = Daemon::start("");
    nodes(&d, 10, &["n1"]);
    group(&d, 10, "one", "list", "n1");
    job(
        &d,
        10,
        "gated",
        json!([
            {"name": "before", "plugin": "local", "script": "echo before"},
            {"name": "ok?", "plugin": "approval", "approvers": ["control10"], "message": "ship ${v}?"},
            {"name": "after", "plugin": "local", "script": "echo after"}
        ]),
    );
    let uuid = start(&d, 10, "gated", "one", json!({"v": "3.1"}));
    let a = wait_for("the approval", T, || {
        d.data("/approval/10").as_array()?.first().cloned()
    });
    let au = a["uuid"].as_str().expect("approval uuid").to_string();

    // writer10 may write in project 10 but is not an approver
    let b = Browser::start("approval");
    sign_in(&b, &d, WRITER10, "writer10");
    open_task(&b, &d, &uuid, "non-approver");
    wait_waiting(&b, T, "waits for approval");
    b.wait_for("the approval message", SEE, |b| {
        b.body_text().contains("ship 3.1?").then_some(())
    });
    b.screenshot("non-approver-waits");
    assert!(
        visible_buttons(&b, &["Agree", "Refuse"]).is_empty(),
        "a non-approver is offered the decision"
    );
    let (st, body) = crafted(
        &b,
        "PUT",
        &format!("/approval/10/{au}"),
        json!({"opinion": "agree"}),
    );
    assert_eq!(st, 403, "{body}");
    assert_eq!(d.data("/approval/10").as_array().map(|a| a.len()), Some(1));
    assert_eq!(task(&d, 10, &uuid)["status"], "running");
    sign_out(&b);

    // the approver agrees and the task finishes
    sign_in(&b, &d, CONTROL10, "control10");
    open_task(&b, &d, &uuid, "approver");
    wait_waiting(&b, SEE, "waits for approval");
    b.wait_visible(&By::button("Refuse"), SEE);
    b.wait_visible(&By::button("Agree"), SEE);
    b.screenshot("approver-buttons");
    b.click(&By::button("Agree"));
    accept_confirmation(&b);
    wait_status_is(&b, T, "success");
    b.screenshot("agreed");
    assert!(visible_buttons(&b, &["Agree", "Refuse"]).is_empty());
    assert_eq!(waiting_text(&b), "");
    assert!(d
        .data("/approval/10")
        .as_array()
        .is_some_and(|a| a.is_empty()));
    let log = log_text(&d, &uuid);
    assert!(log.contains("agreed by control10"), "{log}");
}

#[test]
fn roll_back_a_stopped_deploy_from_its_page() {
    let d = Daemon::start("");
    nodes(&d, 10, &["n1", "n2", "n3", "n4"]);
    group(&d, 10, "four", "list", "n1;n2;n3;n4");
    job(
        &d,
        10,
        "app",
        json!([{"name": "install", "plugin": "local",
                "script": "echo \"$JOBX_ACTION version=$version on $JOBX_NODE\"; [ \"$JOBX_ACTION\" = rollback ] || [ \"$JOBX_BATCH\" != 2 ]"}]),
    );
    let install = step_uuid(&d, "app", "install");
    let uuid = start(
        &d,
        10,
        "app",
        "four",
        json!({"version": "2.0", "_rollbackVersion_": "1.9"}),
    );
    let b = Browser::start("rollback");
    sign_in(&b, &d, ADMIN, "admin");
    open_task(&b, &d, &uuid, "deploy");
    wait_waiting(&b, T, "waits for confirmation");
    assert!(
        visible_buttons(&b, &["Roll back", "No rollback"]).is_empty(),
        "a decision is offered while the deploy runs"
    );
    b.click(&By::button("Stop"));
    accept_confirmation(&b);
    wait_status_is(&b, T, "fail");
    wait_waiting(&b, SEE, "rollback decision pending");
    b.wait_visible(&By::button("No rollback"), SEE);
    b.screenshot("stopped-decision-pending");
    b.click(&By::button("Roll back"));
    accept_confirmation(&b);
    b.wait_visible(&By::link("rollback task"), SEE);
    b.screenshot("rollback-decided");
    assert!(visible_buttons(&b, &["Roll back", "No rollback"]).is_empty());
    let mut want = uuid.clone();
    let last = want.pop().expect("uuid");
    want.push(last.to_ascii_uppercase());
    b.click(&By::link("rollback task"));
    b.wait_for("the rollback task's page", SEE, |b| {
        b.url()
            .ends_with(&format!("#/p/10/task/{want}"))
            .then_some(())
    });
    wait_status_is(&b, T, "success");
    b.screenshot("rollback-task");
    assert!(
        b.body_text().contains(&want),
        "the rollback uuid is not shown"
    );
    let shown = batches(&b);
    assert_eq!(shown.len(), 2, "{shown:?}");
    let nodes_of = |sub: &str| -> Vec<String> {
        let mut n: Vec<String> = cells(&b, sub).into_iter().map(|c| c.0).collect();
        n.dedup();
        n
    };
    assert_eq!(nodes_of(&shown[0].0), ["n1"]);
    assert_eq!(nodes_of(&shown[1].0), ["n2"]);
    assert!(shown.iter().all(|s| s.1 == "success"), "{shown:?}");
    click_cell(&b, &shown[1].0, "n2", &install);
    wait_log_line(&b, "the rollback's output", |l| {
        l.contains("rollback version=1.9 on n2")
    });
    b.screenshot("rollback-log");
    b.click(&By::link("deploy task"));
    b.wait_for("the deploy's page", SEE, |b| {
        b.url()
            .ends_with(&format!("#/p/10/task/{uuid}"))
            .then_some(())
    });
    assert_eq!(task(&d, 10, &want)["status"], "success");
    let subs: Vec<String> = subtasks(&d, 10, &want)
        .iter()
        .map(|s| s["nodelist"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(subs, ["n1", "n2"]);
}

#[test]
fn group_editor_previews_as_you_type_and_shows_the_servers_message() {
    let d = Daemon::start("");
    six_nodes(&d);
    let b = Browser::start("groups");
    sign_in(&b, &d, ADMIN, "admin");
    open(&b, &d, "#/p/10/groups", &By::button("New group"), "groups");
    b.click(&By::button("New group"));
    b.wait_visible(&By::css("#group-text"), SEE);
    b.type_into(&By::css("#group-name"), "rolling");
    b.select_value("select#group-type", "percent");
    b.type_into(&By::css("#group-text"), "1:2:50%");
    let words = |t: &str| -> Vec<String> {
        t.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| w.starts_with('n') && w.len() == 2)
            .map(String::from)
            .collect()
    };
    let want = [vec!["n1"], vec!["n2", "n3"], vec!["n4", "n5", "n6"]];
    let mut last = Vec::new();
    let shown = jobx_tests::poll(SEE, || {
        let p: Vec<Vec<String>> = b
            .find_all(&By::css("#group-preview .preview-batch"))
            .iter()
            .filter_map(|e| e.text().ok())
            .map(|t| words(&t))
            .collect();
        last = p.clone();
        (p == want).then_some(())
    });
    b.screenshot("preview");
    assert!(
        shown.is_some(),
        "the preview of 1:2:50% over n1..n6 shows {last:?}, not {want:?}"
    );

    b.type_into(&By::css("#group-text"), "1:0");
    let msg = b.wait_text(&By::css("#group-error"), SEE, "the 400's message", |t| {
        t.contains("at least 1")
    });
    b.screenshot("error-1-0");
    assert!(
        b.visible(&By::css("#group-error")).len() == 1,
        "message not visible"
    );
    // the same message the API gives
    let (st, v) = d.post(
        "/group/10",
        ADMIN,
        json!({"name": "x", "group_type": "percent", "percent": "1:0"}),
    );
    assert_eq!(st, 400);
    let api = v["info"].as_str().unwrap_or("");
    assert!(msg.contains(api), "page {msg:?} vs API {api:?}");
    // next to the field: the message and the field share their form row
    let near = b.exec(
        "const e = document.getElementById('group-error'), f = document.getElementById('group-text');
         const r1 = e.getBoundingClientRect(), r2 = f.getBoundingClientRect();
         return Math.abs(r1.top - r2.bottom) < 120 || Math.abs(r2.top - r1.bottom) < 120;",
        vec![],
    );
    assert_eq!(near, json!(true), "#group-error is far from #group-text");
    b.click(&By::button("Save"));
    accept_confirmation(&b);
    b.wait_text(
        &By::css("#group-error"),
        SEE,
        "the message after Save",
        |t| t.contains("at least 1"),
    );
    let groups = d.data("/group/10");
    assert_eq!(groups.as_array().map(|g| g.len()), Some(0), "{groups}");

    // a good text saves, and the list shows it
    b.type_into(&By::css("#group-text"), "1:2:50%");
    b.wait_for("the message to go", SEE, |b| {
        let t = b.find(&By::css("#group-error"))?.text().ok()?;
        t.trim().is_empty().then_some(())
    });
    b.click(&By::button("Save"));
    b.wait_for("the saved group in the list", SEE, |b| {
        b.find_all(&By::css("tr.group"))
            .iter()
            .any(|r| r.text().unwrap_or_default().contains("rolling"))
            .then_some(())
    });
    b.screenshot("saved");
    let g = d.data("/group/10");
    assert_eq!(g[0]["name"], "rolling", "{g}");
    let id = g[0]["id"].as_u64().expect("id");
    assert_eq!(
        d.data(&format!("/group/10/{id}/node")),
        json!([["n1"], ["n2", "n3"], ["n4", "n5", "n6"]])
    );
}

/// Some element's whole text content is exactly `s`.
fn dom_has_text(b: &Browser, s: &str) -> bool {
    b.exec(
        "return Array.from(document.querySelectorAll('body *'))
           .some(e => e.textContent.trim() === arguments[0]);",
        vec![json!(s)],
    ) == json!(true)
}

/// No injected markup: no img with src=x, no script holding the payload, no dialog.
fn assert_inert(b: &Browser, page: &str) {
    b.assert_no_dialog(page);
    let v = b.exec(
        "return {
           img: document.querySelectorAll('img[src=\"x\"], [onerror]').length,
           script: Array.from(document.scripts).filter(s => s.text.includes('alert(1)')).length
         };",
        vec![],
    );
    assert_eq!(
        v,
        json!({"img": 0, "script": 0}),
        "markup injected on {page}"
    );
}

#[test]
fn markup_and_ansi_in_names_variables_and_logs_are_shown_as_text() {
    let d = Daemon::start("");
    let node = SCRIPT_TAG;
    let job_name = format!("job {SCRIPT_TAG}");
    let group_name = IMG_TAG;
    // every place holds a string of its own, so each check finds its place
    let version = format!("2.0 {SCRIPT_TAG}");
    let note = format!("note {IMG_TAG}");
    let step_name = format!("step {IMG_TAG}");
    nodes(&d, 10, &["web1", node]);
    group(&d, 10, group_name, "list", &format!("web1;{node}"));
    job(
        &d,
        10,
        &job_name,
        json!([{"name": step_name, "plugin": "local",
                "script": "printf '%s\\n' \"$version\"; printf '%s\\n' \"$note\"; printf '\\033[31mRED-ALERT\\033[0m plain\\n'"}]),
    );
    let uuid = start(
        &d,
        10,
        &job_name,
        group_name,
        json!({"version": version, "note": note}),
    );
    let t = wait_finished(&d, 10, &uuid, T);
    assert_eq!(t["status"], "success", "{t}");

    let b = Browser::start("xss");
    sign_in(&b, &d, ADMIN, "admin");

    open(&b, &d, "#/p/10/tasks", &By::css("tr.task"), "tasks");
    b.wait_for("the job name as text in the tasks list", SEE, |b| {
        dom_has_text(b, &job_name).then_some(())
    });
    assert_inert(&b, "the tasks list");

    open_task(&b, &d, &uuid, "task");
    for s in [
        job_name.as_str(),
        group_name,
        node,
        &version,
        &note,
        &step_name,
    ] {
        b.wait_for(&format!("{s:?} as text on the task page"), SEE, |b| {
            dom_has_text(b, s).then_some(())
        });
    }
    let body = b.body_text();
    assert!(
        body.contains(&job_name) && body.contains(group_name),
        "{body}"
    );
    assert_inert(&b, "the task page");
    let subs = subtasks(&d, 10, &uuid);
    let second = subs[1]["uuid"].as_str().expect("uuid").to_string();
    let cell_nodes: Vec<String> = cells(&b, &second).into_iter().map(|c| c.0).collect();
    assert_eq!(cell_nodes, [node], "data-node holds the name as given");
    let step = d.data(&format!("/job/10/{}", pct(&job_name)))["steps"][0]["uuid"]
        .as_str()
        .expect("step uuid")
        .to_string();
    click_cell(&b, &second, node, &step);
    wait_log_line(&b, "the version", |l| l == version);
    wait_log_line(&b, "the note", |l| l == note);
    wait_log_line(&b, "the ANSI line without escapes", |l| {
        l == "RED-ALERT plain"
    });
    b.screenshot("log");
    assert!(
        !log_lines(&b).iter().any(|l| l.contains('\u{1b}')),
        "escape codes shown"
    );
    assert_inert(&b, "the log view");
    let colour = b.exec(
        "const l = Array.from(document.querySelectorAll('#log .line'))
           .find(e => e.textContent === 'RED-ALERT plain');
         const s = l && Array.from(l.querySelectorAll('*')).find(e => e.textContent === 'RED-ALERT');
         return s ? getComputedStyle(s).color : null;",
        vec![],
    );
    let rgb: Vec<u32> = colour
        .as_str()
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(
        rgb.len() >= 3 && rgb[0] > rgb[1] + 40 && rgb[0] > rgb[2] + 40,
        "RED-ALERT is not drawn red: {colour}"
    );

    // the key's own log page (its lines are in `.logbox`, not `#log`)
    open(
        &b,
        &d,
        &format!("#/p/10/log/{uuid}"),
        &By::css(".logbox .line"),
        "task-log",
    );
    b.wait_for("the payloads as log text", SEE, |b| {
        let l = lines_in(b, ".logbox");
        (l.iter().any(|l| l == &version) && l.iter().any(|l| l == &note)).then_some(())
    });
    assert_inert(&b, "the log page");

    open(&b, &d, "#/p/10/nodes", &By::css("tr.node"), "nodes");
    b.wait_for("the node name as text", SEE, |b| {
        dom_has_text(b, node).then_some(())
    });
    assert_inert(&b, "the nodes page");
    open(&b, &d, "#/p/10/jobs", &By::css("tr.job"), "jobs");
    b.wait_for("the job name as text", SEE, |b| {
        dom_has_text(b, &job_name).then_some(())
    });
    assert_inert(&b, "the jobs page");
    open(&b, &d, "#/p/10/groups", &By::css("tr.group"), "groups");
    b.wait_for("the group name as text", SEE, |b| {
        dom_has_text(b, group_name).then_some(())
    });
    assert_inert(&b, "the groups page");
    open(&b, &d, "#/p/10/oplog", &By::css("tr.oplog"), "oplog");
    b.wait_for("the oplog naming the group", SEE, |b| {
        b.body_text().contains(group_name).then_some(())
    });
    assert_inert(&b, "the operation log");
}

/// Percent-encodes a path segment.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

#[test]
fn read_only_token_sees_no_write_buttons_and_its_writes_are_403() {
    let d = Daemon::start("");
    six_nodes(&d);
    group(&d, 10, "thirds", "percent", "2");
    gated_job(&d, "deploy");
    let uuid = start(&d, 10, "deploy", "thirds", json!({"version": "1"}));
    let subs = wait_confirm(&d, 10, &uuid, 1, T);
    let sub = subs[1]["uuid"].as_str().expect("uuid").to_string();
    let write = ["Stop", "Continue", "Retry", "Roll back", "No rollback"];

    let b = Browser::start("read-only");
    // what a controller sees on the same task
    sign_in(&b, &d, ADMIN, "admin");
    open_task(&b, &d, &uuid, "admin-view");
    wait_waiting(&b, SEE, "waits for confirmation");
    b.wait_visible(&batch_button(&sub, "Retry"), SEE);
    assert_eq!(visible_buttons(&b, &write), ["Stop", "Continue", "Retry"]);
    sign_out(&b);

    sign_in(&b, &d, READER, "reader");
    open_task(&b, &d, &uuid, "reader-view");
    wait_waiting(&b, SEE, "waits for confirmation");
    b.wait_for("the grid", SEE, |b| {
        (!cells(b, &sub).is_empty()).then_some(())
    });
    assert_eq!(visible_buttons(&b, &write), Vec::<String>::new());
    open(
        &b,
        &d,
        "#/p/10/groups",
        &By::css("tr.group"),
        "reader-groups",
    );
    assert_eq!(
        visible_buttons(&b, &["New group", "Save"]),
        Vec::<String>::new()
    );
    b.goto(&ui(&d, "#/p/10/run"));
    b.wait_for("the run page to render", SEE, |b| {
        (b.body_text().len() > 20).then_some(())
    });
    b.screenshot("reader-run");
    assert_eq!(visible_buttons(&b, &["Start task"]), Vec::<String>::new());

    // forged writes with the reader's cookie and CSRF token
    let (st, v) = crafted(&b, "PUT", &format!("/subtask/10/{sub}/confirm"), json!({}));
    assert_eq!(st, 403, "{v}");
    let (st, v) = crafted(&b, "PUT", &format!("/task/10/{uuid}"), json!({}));
    assert_eq!(st, 403, "{v}");
    let (st, v) = crafted(
        &b,
        "POST",
        "/group/10",
        json!({"name": "by-reader", "group_type": "list", "node": "n1"}),
    );
    assert_eq!(st, 403, "{v}");
    let s = subtasks(&d, 10, &uuid);
    assert_eq!(s[1]["confirm"], "WaitConfirm");
    let t = task(&d, 10, &uuid);
    assert_eq!(t["status"], "running", "{t}");
    assert!(t["stopped_by"].is_null() || t["stopped_by"] == "", "{t}");
    let g = d.data("/group/10");
    assert_eq!(g.as_array().map(|g| g.len()), Some(1), "{g}");
}

/// Serves `page` to every request on a port of its own (another origin).
fn serve_page(page: String) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = s.write_all(r.as_bytes());
        }
    });
    format!("http://{addr}")
}

#[test]
fn cross_origin_form_post_with_a_valid_session_is_refused() {
    let d = Daemon::start("");
    six_nodes(&d);
    job(
        &d,
        10,
        "hello",
        json!([{"name": "hi", "plugin": "local", "script": "echo hi"}]),
    );
    group(&d, 10, "all", "list", "n1,n2");
    let b = Browser::start("cross-origin");
    sign_in(&b, &d, ADMIN, "admin");
    // the session works for the console's own writes
    let (st, v) = crafted(
        &b,
        "POST",
        "/group/10",
        json!({"name": "by-console", "group_type": "list", "node": "n1"}),
    );
    assert_eq!(st, 200, "{v}");

    for (path, fields, what) in [
        (
            "/group/10",
            vec![("name", "evil"), ("group_type", "list"), ("node", "n1")],
            "a group",
        ),
        (
            "/task/10/job/byname",
            vec![("jobname", "hello"), ("group", "all")],
            "a task",
        ),
    ] {
        let inputs: String = fields
            .iter()
            .map(|(k, v)| format!("<input type=hidden name=\"{k}\" value=\"{v}\">"))
            .collect();
        let page = format!(
            "<!doctype html><title>prize</title><form id=f method=POST action=\"{}{path}\">{inputs}</form><script>document.getElementById('f').submit()</script>",
            d.base
        );
        let evil = serve_page(page);
        b.goto(&evil);
        b.wait_for(
            &format!("the forged post of {what} to be answered"),
            SEE,
            |b| {
                b.url()
                    .starts_with(&format!("{}{path}", d.base))
                    .then_some(())
            },
        );
        let text = b.body_text();
        b.screenshot(&format!("forged-{}", what.replace(' ', "-")));
        assert!(text.contains("cross-site request refused"), "{text}");
    }
    let names: Vec<String> = d
        .data("/group/10")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|g| g["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(!names.contains(&"evil".to_string()), "{names:?}");
    assert_eq!(d.data("/task/10").as_array().map(|t| t.len()), Some(0));
    // the same form body is a valid write with a token: only the origin failed
    let r = ureq::post(&format!("{}/group/10", d.base))
        .set("Authorization", &format!("Bearer {ADMIN}"))
        .send_form(&[("name", "by-token"), ("group_type", "list"), ("node", "n1")]);
    assert!(r.is_ok(), "{r:?}");
    // and the session is still signed in
    b.goto(&ui(&d, "#/projects"));
    b.wait_text(&By::css("#user"), SEE, "admin", |t| t.trim() == "admin");
}

#[test]
fn removing_the_token_from_the_config_ends_its_sessions_on_sighup() {
    let d = Daemon::start("");
    let b = Browser::start("revoked");
    sign_in(&b, &d, READER, "reader");
    open(&b, &d, "#/projects", &By::css("#user"), "reader-signed-in");
    assert_eq!(b.fetch("/ui/session", json!({})).0, 200);
    let text = std::fs::read_to_string(&d.config_path).expect("read config");
    let mut t: toml::Table = text.parse().expect("config is TOML");
    t.get_mut("auth")
        .and_then(|a| a.as_table_mut())
        .and_then(|a| a.get_mut("tokens"))
        .and_then(|x| x.as_array_mut())
        .expect("[[auth.tokens]]")
        .retain(|x| x.get("name").and_then(|n| n.as_str()) != Some("reader"));
    std::fs::write(&d.config_path, toml::to_string(&t).expect("TOML")).expect("write");
    // SAFETY: kill(2) on the pid of the daemon this test started.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) }, 0);
    wait_for("the reload", SEE, || {
        d.stderr().contains("SIGHUP: reloaded").then_some(())
    });
    assert_eq!(b.fetch("/ui/session", json!({})).0, 401);
    b.goto(&ui(&d, "#/projects"));
    b.wait_visible(&By::css("#token"), SEE);
    b.screenshot("login-after-revocation");
}
