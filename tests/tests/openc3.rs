//! OPEN-C3's own clients against the real daemon: each test replays, call by
//! call, what one page of OPEN-C3's front end (c3-front/src/app/pages/…)
//! sends — method, `/api/jobx/…` path, JSON body, `appname`/`appkey` or its
//! session cookie — and asserts the fields that page's controller reads. A
//! stand-in Connector (a real HTTP server on a free port) answers the two
//! calls OPEN-C3's JOBX makes to resolve a cookie.

use jobx_tests::daemon::*;
use jobx_tests::flow::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Who a call comes from.
#[derive(Clone, Copy)]
enum Who<'a> {
    /// OPEN-C3's app credentials (its scripts): token name + token.
    App(&'a str, &'a str),
    /// A browser signed in to OPEN-C3: its `sid` cookie.
    Cookie(&'a str),
    Nobody,
}

const ADMIN_APP: Who = Who::App("admin", ADMIN);

fn call(d: &Daemon, method: &str, path: &str, who: Who, body: Option<Value>) -> (u16, Value) {
    call_with(d, method, path, who, body, &[])
}

fn call_with(
    d: &Daemon,
    method: &str,
    path: &str,
    who: Who,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let agent = ureq::AgentBuilder::new().timeout(T).build();
    let mut r = agent.request(method, &format!("{}{path}", d.base));
    match who {
        Who::App(name, key) => r = r.set("appname", name).set("appkey", key),
        Who::Cookie(c) => r = r.set("Cookie", &format!("lang=zh; sid={c}")),
        Who::Nobody => {}
    }
    for (k, v) in headers {
        r = r.set(k, v);
    }
    let resp = match body {
        Some(b) => r.send_json(b),
        None => r.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A call that must answer 200 `stat: true`; the whole body.
fn ok(d: &Daemon, method: &str, path: &str, who: Who, body: Option<Value>) -> Value {
    let (st, v) = call(d, method, path, who, body);
    assert_eq!(st, 200, "{method} {path}: {v}");
    assert_eq!(v["stat"], true, "{method} {path}: {v}");
    v
}

fn get(d: &Daemon, path: &str, who: Who) -> Value {
    ok(d, "GET", path, who, None)["data"].clone()
}

/// The stand-in for OPEN-C3's Connector: `/connectorx/username` and
/// `/connectorx/point`, answered as the Connector answers them.
struct Connector {
    addr: String,
    calls: Arc<Mutex<Vec<String>>>,
}

/// Sessions (cookie → user, None = expired) and granted points
/// (cookie, project, point).
type Sessions = BTreeMap<&'static str, Option<&'static str>>;
type Points = BTreeSet<(&'static str, u64, &'static str)>;

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Connector {
    fn start(sessions: Sessions, points: Points) -> Connector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind connector");
        let addr = listener.local_addr().expect("addr").to_string();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                        break;
                    }
                }
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                seen.lock().expect("calls").push(target.clone());
                let (path, q) = target.split_once('?').unwrap_or((&target, ""));
                let q: BTreeMap<String, String> = q
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), percent_decode(v)))
                    .collect();
                let cookie = q.get("cookie").cloned().unwrap_or_default();
                let body = match path {
                    "/connectorx/username" => {
                        let user = sessions.get(cookie.as_str()).copied().flatten();
                        json!({"stat": true, "data": {"user": user, "company": "open-c3"}})
                    }
                    "/connectorx/point" => {
                        let tree: u64 = q.get("treeid").and_then(|t| t.parse().ok()).unwrap_or(0);
                        let point = q.get("point").cloned().unwrap_or_default();
                        let granted = points
                            .iter()
                            .any(|(c, t, p)| *c == cookie && *t == tree && *p == point);
                        json!({"stat": true, "data": if granted { 1 } else { 0 }})
                    }
                    _ => json!({"stat": false, "info": "no such call"}),
                };
                let body = body.to_string();
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Connector { addr, calls }
    }

    fn calls(&self, prefix: &str) -> usize {
        self.calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }
}

const ALICE: &str = "alice-session-1/+=";
const BOB: &str = "bob-session-2";
const EXPIRED: &str = "expired-session-3";

/// alice may read, write, delete and control project 10 and read 11; bob
/// may only read 10; the third session has expired.
fn connector() -> Connector {
    let sessions = Sessions::from([
        (ALICE, Some("alice@open-c3")),
        (BOB, Some("bob@open-c3")),
        (EXPIRED, None),
    ]);
    let mut points = Points::new();
    for p in [
        "openc3_jobx_read",
        "openc3_jobx_write",
        "openc3_jobx_delete",
        "openc3_jobx_control",
    ] {
        points.insert((ALICE, 10, p));
    }
    points.insert((ALICE, 11, "openc3_jobx_read"));
    points.insert((BOB, 10, "openc3_jobx_read"));
    Connector::start(sessions, points)
}

fn openc3_daemon(c: &Connector) -> Daemon {
    Daemon::start(&format!(
        "[compat]\nopenc3 = true\n\n[auth.openc3]\nconnector = \"http://{}\"\n",
        c.addr
    ))
}

fn uuid_of_rollback(deploy: &str) -> String {
    let mut u = deploy.to_string();
    let last = u.pop().expect("uuid");
    u.push(last.to_ascii_uppercase());
    u
}

/// What the front end's `getVersionByV` / `cversion` read out of `variable`.
fn scan(variable: &Value, key: &str) -> String {
    let text = variable.as_str().unwrap_or("");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches('\'').to_string())
        .unwrap_or_default()
}

#[test]
fn cookie_sign_in_through_the_connector() {
    let c = connector();
    let d = openc3_daemon(&c);
    // signed in, the point granted: the page's list loads
    let groups = get(&d, "/api/jobx/group/10", Who::Cookie(ALICE));
    assert!(groups.as_array().is_some(), "{groups}");
    // the user's rights come from the Connector, per project: bob may read
    // project 10 but not write it, and may not read project 11
    let (st, v) = call(
        &d,
        "POST",
        "/api/jobx/group/10",
        Who::Cookie(BOB),
        Some(json!({"name": "web", "note": "", "group_type": "list", "node": "n1"})),
    );
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["stat"], false);
    let (st, _) = call(&d, "GET", "/api/jobx/group/11", Who::Cookie(BOB), None);
    assert_eq!(st, 403);
    // an expired session: HTTP 200 and code 10000, as the original answers,
    // on which the front end sends the user to the login page
    let (st, v) = call(&d, "GET", "/api/jobx/group/10", Who::Cookie(EXPIRED), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["stat"], false);
    assert_eq!(v["code"], 10000);
    // no credentials at all: the same
    let (st, v) = call(&d, "GET", "/api/jobx/task/10", Who::Nobody, None);
    assert_eq!((st, v["code"].clone()), (200, json!(10000)), "{v}");
    // answers are reused for a while: three calls, one username look-up
    let before = c.calls("/connectorx/username?cookie=alice");
    for _ in 0..3 {
        get(&d, "/api/jobx/group/10", Who::Cookie(ALICE));
    }
    assert_eq!(c.calls("/connectorx/username?cookie=alice"), before);
    assert!(before >= 1);
    // the cookie is passed on percent-encoded, so '+', '/' and '=' survive
    assert!(
        c.calls("/connectorx/username?cookie=alice%2Dsession%2D1%2F%2B%3D") >= 1,
        "{:?}",
        c.calls.lock().expect("calls")
    );
    // a request another site made the browser send: the cookie does not count
    let (st, v) = call_with(
        &d,
        "GET",
        "/api/jobx/group/10",
        Who::Cookie(ALICE),
        None,
        &[("Sec-Fetch-Site", "cross-site")],
    );
    assert_eq!(st, 403, "{v}");
    // other credentials win over the cookie
    let (st, v) = call_with(
        &d,
        "GET",
        "/api/jobx/group/11",
        Who::Cookie(BOB),
        None,
        &[("Authorization", &format!("Bearer {ADMIN}"))],
    );
    assert_eq!(st, 200, "{v}");
    // audited under the OPEN-C3 user
    ok(
        &d,
        "POST",
        "/api/jobx/group/10",
        Who::Cookie(ALICE),
        Some(json!({"name": "web", "note": "", "group_type": "list", "node": "n1"})),
    );
    let log = get(&d, "/api/jobx/log/10", ADMIN_APP);
    assert_eq!(log[0]["user"], "alice@open-c3", "{log}");
    assert_eq!(log[0]["title"], "CREATE GROUP");

    // without [compat] the same expired session is jobx's 401
    let plain = Daemon::start(&format!(
        "[auth.openc3]\nconnector = \"http://{}\"\n",
        c.addr
    ));
    let (st, v) = call(&plain, "GET", "/group/10", Who::Cookie(EXPIRED), None);
    assert_eq!(st, 401, "{v}");
    let (st, _) = call(&plain, "GET", "/group/10", Who::Cookie(ALICE), None);
    assert_eq!(st, 200);
    // and without [auth.openc3] a cookie is no credential
    let none = Daemon::start("");
    let (st, _) = call(&none, "GET", "/group/10", Who::Cookie(ALICE), None);
    assert_eq!(st, 401);
}

/// nodebatch.controller, create.controller, shownode.controller,
/// log.controller; flowline config (node/byname), flowline copy and delete.
#[test]
fn node_batches_page() {
    let c = connector();
    let d = openc3_daemon(&c);
    nodes(&d, 10, &["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    let who = Who::Cookie(ALICE);
    // create.controller: creategroup
    ok(
        &d,
        "POST",
        "/api/jobx/group/10",
        who,
        Some(
            json!({"name": "_ci_test_5_", "note": "ci", "group_type": "list", "node": "10.0.0.1;10.0.0.2,10.0.0.3"}),
        ),
    );
    // nodebatch.controller: the list, newest first, with what the table shows
    let list = get(&d, "/api/jobx/group/10", who);
    let g = &list[0];
    assert_eq!(g["name"], "_ci_test_5_");
    assert_eq!(g["note"], "ci");
    assert_eq!(g["group_type"], "list");
    assert!(g["edit_time"].is_string());
    let id = g["id"].as_u64().expect("group id");
    // create.controller (edit): the detail, then the same dump posted back
    let detail = get(&d, &format!("/api/jobx/group/10/{id}"), who);
    assert_eq!(detail["node"], "10.0.0.1;10.0.0.2,10.0.0.3");
    let mut dump = detail.clone();
    dump["node"] = json!("10.0.0.1;10.0.0.2;10.0.0.3");
    ok(
        &d,
        "POST",
        &format!("/api/jobx/group/10/{id}"),
        who,
        Some(dump),
    );
    // shownode.controller: the batches, an array of arrays of nodes
    let batches = get(&d, &format!("/api/jobx/group/10/{id}/node"), who);
    assert_eq!(batches, json!([["10.0.0.1"], ["10.0.0.2"], ["10.0.0.3"]]));
    // flowline config.controller: the same by name; an unknown name is an empty list
    let by_name = get(&d, "/api/jobx/group/10/_ci_test_5_/node/byname", who);
    assert_eq!(by_name, batches);
    assert_eq!(
        get(&d, "/api/jobx/group/10/_ci_online_5_/node/byname", who),
        json!([])
    );
    // copyProject.controller: copy to another tree; both ends are checked
    // (alice may only read project 11)
    let copy = json!({"fromname": "_ci_test_5_", "toname": "_ci_test_6_", "toprojectid": 11});
    let (st, v) = call(
        &d,
        "POST",
        "/api/jobx/group/10/copy/byname",
        who,
        Some(copy.clone()),
    );
    assert_eq!(st, 403, "{v}");
    ok(
        &d,
        "POST",
        "/api/jobx/group/10/copy/byname",
        ADMIN_APP,
        Some(copy),
    );
    nodes(&d, 11, &["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    let copied = get(&d, "/api/jobx/group/11/_ci_test_6_/node/byname", ADMIN_APP);
    assert_eq!(copied, batches);
    // copyProjectByTemplate: from the template tree 0, where nothing exists yet
    let v = ok(
        &d,
        "POST",
        "/api/jobx/group/10/copy/byname",
        ADMIN_APP,
        Some(json!({"fromname": "_ci_test_9_", "toname": "_ci_test_7_", "fromprojectid": 0})),
    );
    assert_eq!(v["info"], "The source does not exist");
    // within the project (no project ids given)
    ok(
        &d,
        "POST",
        "/api/jobx/group/10/copy/byname",
        who,
        Some(json!({"fromname": "_ci_test_5_", "toname": "copy"})),
    );
    // a group named "copy" is still deleted by name: the router keeps them apart
    ok(&d, "DELETE", "/api/jobx/group/10/copy/byname", who, None);
    // flowline.controller: delete both groups of a flowline by name, one absent
    ok(
        &d,
        "DELETE",
        "/api/jobx/group/10/_ci_test_5_/byname",
        who,
        None,
    );
    ok(
        &d,
        "DELETE",
        "/api/jobx/group/10/_ci_online_5_/byname",
        who,
        None,
    );
    assert_eq!(get(&d, "/api/jobx/group/10", who), json!([]));
    // bob may read but not delete
    let (st, _) = call(
        &d,
        "DELETE",
        "/api/jobx/group/10/x/byname",
        Who::Cookie(BOB),
        None,
    );
    assert_eq!(st, 403);
    // a percent group, and delete by id
    ok(
        &d,
        "POST",
        "/api/jobx/group/10",
        who,
        Some(json!({"name": "pct", "group_type": "percent", "percent": "50%:50%"})),
    );
    let id = get(&d, "/api/jobx/group/10", who)[0]["id"]
        .as_u64()
        .expect("id");
    assert_eq!(
        get(&d, &format!("/api/jobx/group/10/{id}"), who)["percent"],
        "50%:50%"
    );
    ok(&d, "DELETE", &format!("/api/jobx/group/10/{id}"), who, None);
    // log.controller: the operation log, with the people who did it
    let log = get(&d, "/api/jobx/log/10", who);
    let titles: Vec<&str> = log
        .as_array()
        .expect("log")
        .iter()
        .filter_map(|e| e["title"].as_str())
        .collect();
    assert!(
        titles.contains(&"DELETE GROUP") && titles.contains(&"EDIT GROUP"),
        "{log}"
    );
    assert!(
        log.as_array()
            .expect("log")
            .iter()
            .filter(|e| e["title"].as_str().is_some_and(|t| t.ends_with("GROUP")))
            .all(|e| e["user"] == "alice@open-c3"),
        "{log}"
    );
}

fn app_job(d: &Daemon, project: u64, name: &str) {
    job(
        d,
        project,
        name,
        json!([{"name": "deploy", "plugin": "local",
            "script": "echo \"<b>deploy</b> $version on $JOBX_NODE\"; [ \"$JOBX_BATCH\" != 2 ] || [ -n \"$retry_ok\" ] || [ \"$JOBX_ACTION\" = rollback ] || exit 3"}]),
    );
}

/// runtask.controller: the groups, then createtask; the detail page follows.
#[test]
fn run_task_page() {
    let c = connector();
    let d = openc3_daemon(&c);
    nodes(&d, 10, &["n1", "n2"]);
    group(&d, 10, "web", "list", "n1,n2");
    app_job(&d, 10, "app");
    let who = Who::Cookie(ALICE);
    let groups = get(&d, "/api/jobx/group/10", who);
    assert_eq!(groups[0]["name"], "web");
    let v = ok(
        &d,
        "POST",
        "/api/jobx/task/10/job/byname",
        who,
        Some(json!({"jobname": "app", "group": "web", "variable": {"version": "1.2.3"}})),
    );
    let uuid = v["uuid"].as_str().expect("uuid").to_string();
    let t = wait_finished(&d, 10, &uuid, T);
    assert_eq!(t["status"], "success", "{t}");
    // people start tasks from a page, apps through the API
    assert_eq!(t["calltype"], "page");
    assert_eq!(t["user"], "alice@open-c3");
    assert_eq!(scan(&t["variable"], "version"), "1.2.3");
    let v = ok(
        &d,
        "POST",
        "/api/jobx/task/10/job/byname",
        ADMIN_APP,
        Some(json!({"jobname": "app", "group": "web", "variable": {}})),
    );
    let t = wait_finished(&d, 10, v["uuid"].as_str().expect("uuid"), T);
    assert_eq!(t["calltype"], "api");
    // bob may not start tasks
    let (st, _) = call(
        &d,
        "POST",
        "/api/jobx/task/10/job/byname",
        Who::Cookie(BOB),
        Some(json!({"jobname": "app", "group": "web", "variable": {}})),
    );
    assert_eq!(st, 403);
}

/// history/jobx: the list with the page's filters, reversed on screen.
#[test]
fn task_history_page() {
    let c = connector();
    let d = openc3_daemon(&c);
    nodes(&d, 10, &["n1"]);
    group(&d, 10, "one", "list", "n1");
    app_job(&d, 10, "app");
    app_job(&d, 10, "other");
    let mut uuids = Vec::new();
    for (jobname, v) in [("app", "1.0"), ("other", "2.0"), ("app", "3.0")] {
        let u = start(&d, 10, jobname, "one", json!({"version": v}));
        wait_finished(&d, 10, &u, T);
        uuids.push(u);
    }
    let who = Who::Cookie(ALICE);
    let today = get(&d, "/api/jobx/task/10/analysis/last", who)[0].clone();
    assert!(today["status"].is_string());
    // the default search: today's tasks; ascending id, the page reverses it
    let date = t_date(&d, &uuids[0]);
    let list = get(&d, &format!("/api/jobx/task/10?time_start={date}"), who);
    let got: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["uuid"].as_str())
        .collect();
    assert_eq!(got, uuids.iter().map(String::as_str).collect::<Vec<_>>());
    for (t, v) in list
        .as_array()
        .expect("list")
        .iter()
        .zip(["1.0", "2.0", "3.0"])
    {
        // the columns: version (scanned out of variable), status, calltype, times, user
        assert_eq!(scan(&t["variable"], "version"), v, "{t}");
        assert_eq!(t["status"], "success");
        assert_eq!(t["calltype"], "api");
        assert!(t["starttime"].is_string() && t["finishtime"].is_string());
        assert_eq!(t["user"], "admin");
    }
    // name keyword, user, status and uuid filters
    let by_name = get(&d, "/api/jobx/task/10?name=oth", who);
    assert_eq!(by_name.as_array().map(Vec::len), Some(1));
    assert_eq!(by_name[0]["name"], "other");
    assert_eq!(
        get(&d, "/api/jobx/task/10?user=admin&status=success", who)
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert_eq!(get(&d, "/api/jobx/task/10?status=fail", who), json!([]));
    let one = get(&d, &format!("/api/jobx/task/10?taskuuid={}", uuids[1]), who);
    assert_eq!(one[0]["uuid"], uuids[1].as_str());
    assert_eq!(
        get(
            &d,
            "/api/jobx/task/10?time_start=2001-01-01&time_end=2001-01-02",
            who
        ),
        json!([])
    );
    // counts: this month, and a range (static segments win over :uuid)
    let n = get(&d, "/api/jobx/task/10/count", who);
    assert_eq!(n["success"], 3);
    let n = get(
        &d,
        &format!("/api/jobx/task/10/total_count?time_start={date}&time_end={date}"),
        who,
    );
    assert_eq!(
        (
            n["success"].clone(),
            n["fail"].clone(),
            n["running"].clone()
        ),
        (json!(3), json!(0), json!(0))
    );
    // placeholders only where the flowline pages ask for them
    assert!(list
        .as_array()
        .expect("list")
        .iter()
        .all(|t| t["slave"] != "_null_"));
}

fn t_date(d: &Daemon, uuid: &str) -> String {
    let t = task(d, 10, uuid);
    t["starttime"].as_str().expect("starttime")[..10].to_string()
}

/// history/jobx/detail: task, batches, confirm, stop, rollback, norollback and
/// the partner row that decides which buttons show.
#[test]
fn task_detail_page() {
    let c = connector();
    let d = openc3_daemon(&c);
    nodes(&d, 10, &["n1", "n2", "n3"]);
    group(&d, 10, "three", "list", "n1;n2;n3");
    app_job(&d, 10, "app");
    let who = Who::Cookie(ALICE);
    let uuid = start(
        &d,
        10,
        "app",
        "three",
        json!({"version": "2.0", "_rollbackVersion_": "1.9"}),
    );
    let rb = uuid_of_rollback(&uuid);
    // isRollback(): no partner yet → stat true, data null (not a 404)
    let v = ok(&d, "GET", &format!("/api/jobx/task/10/{rb}"), who, None);
    assert_eq!(v["data"], Value::Null);
    // batch 2 fails and waits: the page shows its confirm button
    wait_confirm(&d, 10, &uuid, 1, T);
    let t = get(&d, &format!("/api/jobx/task/10/{uuid}"), who);
    assert_eq!(t["status"], "running");
    assert_eq!(scan(&t["variable"], "version"), "2.0");
    assert_eq!(scan(&t["variable"], "_rollbackVersion_"), "1.9");
    assert!(t["starttimems"].is_number());
    assert_eq!(t["slave"], "test-slave");
    let subs = get(&d, &format!("/api/jobx/subtask/10/{uuid}"), who);
    assert_eq!(subs[1]["confirm"], "WaitConfirm");
    assert_eq!(subs[0]["status"], "success");
    assert_eq!(subs[0]["nodelist"], "n1");
    let sub2 = subs[1]["uuid"].as_str().expect("batch uuid").to_string();
    // the history page's "waiting" filter finds it
    let waiting = get(&d, "/api/jobx/task/10?status=waiting", who);
    assert_eq!(waiting[0]["uuid"], uuid.as_str(), "{waiting}");
    let my = get(&d, &format!("/api/jobx/subtask/10/{sub2}/mystatus"), who);
    assert_eq!(
        (
            my["action"].clone(),
            my["batches"].clone(),
            my["groups"].clone()
        ),
        (json!("deploy"), json!(2), json!(3))
    );
    // bob may look but not confirm
    let (st, _) = call(
        &d,
        "PUT",
        &format!("/api/jobx/subtask/10/{sub2}/confirm"),
        Who::Cookie(BOB),
        None,
    );
    assert_eq!(st, 403);
    // confirmtask: PUT without a body continues past the failed batch
    ok(
        &d,
        "PUT",
        &format!("/api/jobx/subtask/10/{sub2}/confirm"),
        who,
        None,
    );
    let t = wait_finished(&d, 10, &uuid, T);
    assert_eq!(t["status"], "fail", "{t}");
    // rollback(): PUT …/rollback; the partner runs with the old version
    ok(
        &d,
        "PUT",
        &format!("/api/jobx/task/10/{uuid}/rollback"),
        who,
        None,
    );
    let r = wait_finished(&d, 10, &rb, T);
    assert_eq!(r["status"], "success", "{r}");
    let r = get(&d, &format!("/api/jobx/task/10/{rb}"), who);
    assert_eq!(scan(&r["variable"], "version"), "1.9");
    assert_eq!(r["user"], "alice@open-c3");
    assert_eq!(
        get(&d, &format!("/api/jobx/subtask/10/{rb}"), who)
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // a second deploy: stopped while it waits, then no rollback
    let u2 = start(
        &d,
        10,
        "app",
        "three",
        json!({"version": "2.1", "_rollbackVersion_": "2.0"}),
    );
    wait_confirm(&d, 10, &u2, 1, T);
    // killTaskByJs(): DELETE /task/…
    let (st, v) = call(
        &d,
        "DELETE",
        &format!("/api/jobx/task/10/{u2}"),
        Who::Cookie(BOB),
        None,
    );
    assert_eq!(st, 403, "{v}");
    ok(&d, "DELETE", &format!("/api/jobx/task/10/{u2}"), who, None);
    assert_eq!(wait_finished(&d, 10, &u2, T)["status"], "fail");
    ok(
        &d,
        "PUT",
        &format!("/api/jobx/task/10/{u2}/norollback"),
        who,
        None,
    );
    // the partner row the page reads: "no rollback", slave _null_
    let p = get(
        &d,
        &format!("/api/jobx/task/10/{}", uuid_of_rollback(&u2)),
        who,
    );
    assert_eq!(p["slave"], "_null_", "{p}");
    assert_eq!(p["status"], "success");
    assert_eq!(p["name"], "app");
    assert_eq!(scan(&p["variable"], "version"), "2.0");
    // reloaXd(): its batches — none, as in the original
    let b = get(
        &d,
        &format!("/api/jobx/subtask/10/{}", uuid_of_rollback(&u2)),
        who,
    );
    assert_eq!(b, json!([]));
    // a deploy without _rollbackVersion_: its partner is the _skip_ row
    let u3 = start(
        &d,
        10,
        "app",
        "three",
        json!({"version": "3.0", "retry_ok": "1"}),
    );
    assert_eq!(wait_finished(&d, 10, &u3, T)["status"], "success");
    let p = get(
        &d,
        &format!("/api/jobx/task/10/{}", uuid_of_rollback(&u3)),
        who,
    );
    assert_eq!(
        (p["name"].clone(), p["slave"].clone()),
        (json!("_skip_"), json!("_null_")),
        "{p}"
    );
    // an absent task of any kind: data null
    assert_eq!(
        ok(&d, "GET", "/api/jobx/task/10/Abcdefghijkl", who, None)["data"],
        Value::Null
    );
    // without [compat] an absent task is jobx's 404
    let plain = Daemon::start("");
    assert_eq!(plain.get("/task/10/Abcdefghijkl", ADMIN).0, 404);
}

/// flowline.controller, flowline detail, favorites: tasks named `_ci_<id>_`.
#[test]
fn flowline_pages() {
    let c = connector();
    let d = openc3_daemon(&c);
    nodes(&d, 10, &["n1"]);
    group(&d, 10, "_ci_test_5_", "list", "n1");
    group(&d, 10, "_ci_online_5_", "list", "n1");
    job(
        &d,
        10,
        "_ci_5_",
        json!([{"name": "deploy", "plugin": "local", "script": "echo $version"}]),
    );
    let run = |group: &str, vars: Value| {
        let u = start(&d, 10, "_ci_5_", group, vars);
        let t = wait_finished(&d, 10, &u, T);
        assert_eq!(t["status"], "success", "{t}");
        u
    };
    let test1 = run(
        "_ci_test_5_",
        json!({"version": "release-1", "_jobtype_": "test"}),
    );
    let on1 = run(
        "_ci_online_5_",
        json!({"version": "release-1", "_jobtype_": "online", "_rollbackVersion_": "release-0"}),
    );
    let on2 = run(
        "_ci_online_5_",
        json!({"version": "release-2", "_jobtype_": "online", "_rollbackVersion_": "release-1"}),
    );
    let who = Who::Cookie(ALICE);
    ok(
        &d,
        "PUT",
        &format!("/api/jobx/task/10/{on2}/norollback"),
        who,
        None,
    );
    // flowline detail: every task of the flowline, placeholders included
    let list = get(&d, "/api/jobx/task/10?allowslavenull=1&name=_ci_5_", who);
    let rows = list.as_array().expect("rows");
    let uuids: Vec<&str> = rows.iter().filter_map(|t| t["uuid"].as_str()).collect();
    let on2_rb = uuid_of_rollback(&on2);
    assert_eq!(
        uuids,
        vec![test1.as_str(), on1.as_str(), on2.as_str(), on2_rb.as_str()]
    );
    let p = &rows[3];
    // the page: rollback rows by jobtype online, the "no rollback" panel by slave _null_
    assert_eq!(scan(&p["variable"], "_jobtype_"), "online");
    assert_eq!(scan(&p["variable"], "version"), "release-1");
    assert_eq!(p["slave"], "_null_");
    assert_eq!(p["status"], "success");
    // without allowslavenull (the history page) there is no such row
    let plain = get(&d, "/api/jobx/task/10?name=_ci_5_", who);
    assert_eq!(plain.as_array().map(Vec::len), Some(3));
    // flowline list and favorites: name=_ci_ — real tasks only, by jobtype
    let all = get(&d, "/api/jobx/task/10?allowslavenull=1&name=_ci_", who);
    assert_eq!(all.as_array().map(Vec::len), Some(3), "{all}");
    let last_online = all
        .as_array()
        .expect("rows")
        .iter()
        .rev()
        .find(|t| scan(&t["variable"], "_jobtype_") == "online")
        .cloned()
        .expect("online task");
    assert_eq!(scan(&last_online["variable"], "version"), "release-2");
    // the version last deployed to production
    let v = get(&d, "/api/jobx/flowline_version/5", who);
    assert_eq!(v["version"], "release-2", "{v}");
    assert_eq!(v["jobxuuid"], on2.as_str());
    assert!(v["create_time"].is_string());
    assert_eq!(get(&d, "/api/jobx/flowline_version/6", who), json!({}));
    // CI's status call: the first task that deployed that version
    let s = get(&d, "/api/jobx/task/flowline/status/5/release-1", ADMIN_APP);
    assert_eq!(s["uuid"], test1.as_str(), "{s}");
    assert_eq!(s["status"], "success");
    assert_eq!(s["var"]["_jobtype_"], "test");
    let s = get(&d, "/api/jobx/task/flowline/status/5/release-9", ADMIN_APP);
    assert_eq!(s, json!({"status": "unknown"}));
    let (st, _) = call(
        &d,
        "GET",
        "/api/jobx/task/flowline/status/5/-bad",
        ADMIN_APP,
        None,
    );
    assert_eq!(st, 400);
    // tasks of projects the caller may not read are not shown: token
    // "other" reads only project 11
    let other = Who::App("other", OTHER);
    assert_eq!(get(&d, "/api/jobx/flowline_version/5", other), json!({}));
    assert_eq!(
        get(&d, "/api/jobx/task/flowline/status/5/release-1", other),
        json!({"status": "unknown"})
    );
}

/// global/monitor: the rows of the system monitor table, and the same as Prometheus text.
#[test]
fn monitor_page() {
    let c = connector();
    let d = openc3_daemon(&c);
    nodes(&d, 10, &["n1"]);
    group(&d, 10, "one", "list", "n1");
    app_job(&d, 10, "app");
    wait_finished(&d, 10, &start(&d, 10, "app", "one", json!({})), T);
    let rows = get(&d, "/api/jobx/monitor/metrics?json=1", Who::Cookie(BOB));
    let rows = rows.as_array().expect("rows");
    for r in rows {
        for k in ["time", "host", "stat", "type", "key", "val"] {
            assert!(!r[k].is_null(), "{k} missing in {r}");
        }
    }
    assert_eq!(rows[0]["key"], "openc3_system_error");
    assert_eq!(rows[0]["val"], 0);
    assert_eq!(rows[0]["stat"], "ok");
    let success = rows
        .iter()
        .find(|r| r["key"] == "jobx_tasks_success")
        .expect("success row");
    assert_eq!(success["val"], 1);
    let (st, text) = call(&d, "GET", "/api/jobx/monitor/metrics", ADMIN_APP, None);
    assert_eq!(st, 200);
    let text = text.as_str().expect("text").to_string();
    assert!(
        text.contains("openc3_system_error{host=\"test-slave\",type=\"system\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("jobx_tasks_success{host=\"test-slave\",type=\"jobx\"} 1\n"),
        "{text}"
    );
    // not signed in: code 10000
    let (st, v) = call(
        &d,
        "GET",
        "/api/jobx/monitor/metrics?json=1",
        Who::Cookie(EXPIRED),
        None,
    );
    assert_eq!((st, v["code"].clone()), (200, json!(10000)));
}

/// A minimal WebSocket client: handshake, then frames as (opcode, payload).
struct Ws {
    s: TcpStream,
}

impl Ws {
    /// Sends the handshake; answers the status line and headers.
    fn open(d: &Daemon, path: &str, cookie: &str) -> (Ws, String) {
        let addr = d.base.trim_start_matches("http://").to_string();
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(T)).expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: sid={cookie}\r\nOrigin: http://{addr}\r\n\r\n"
        )
        .expect("handshake");
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).expect("response head");
            head.push(b[0]);
        }
        (Ws { s }, String::from_utf8_lossy(&head).into_owned())
    }

    fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mask = [7u8, 1, 9, 3];
        let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        self.s.write_all(&f).expect("send frame");
    }

    fn frame(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        self.s.read_exact(&mut h).expect("frame head");
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.s.read_exact(&mut b).expect("len");
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.s.read_exact(&mut b).expect("len");
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut p = vec![0u8; len];
        self.s.read_exact(&mut p).expect("payload");
        (h[0] & 0x0f, p)
    }
}

/// history/jobx/detail/log-area: the log WebSocket, followed until the task ends.
#[test]
fn log_websocket() {
    let c = connector();
    let d = openc3_daemon(&c);
    nodes(&d, 10, &["n1", "n2"]);
    group(&d, 10, "two", "list", "n1;n2");
    app_job(&d, 10, "app");
    let uuid = start(&d, 10, "app", "two", json!({"version": "4.2"}));
    wait_confirm(&d, 10, &uuid, 1, T);
    let path = format!("/api/jobx/slave/test-slave/ws?uuid={uuid}");
    let (mut ws, head) = Ws::open(&d, &path, ALICE);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    // the page's heartbeat and a ping while the task waits for a person
    ws.send(0x1, b"H");
    ws.send(0x9, b"p1");
    let mut texts = Vec::new();
    let mut ponged = false;
    while !ponged {
        let (op, p) = ws.frame();
        match op {
            0x1 => texts.push(String::from_utf8(p).expect("utf-8 text")),
            0xA => {
                assert_eq!(p, b"p1");
                ponged = true;
            }
            other => panic!("unexpected frame {other} before the pong"),
        }
    }
    // the person continues; the stream goes on and closes when the task ends
    let subs = subtasks(&d, 10, &uuid);
    d.ok_put(
        &format!(
            "/subtask/10/{}/confirm",
            subs[1]["uuid"].as_str().expect("uuid")
        ),
        json!({}),
    );
    let close = loop {
        let (op, p) = ws.frame();
        match op {
            0x1 => texts.push(String::from_utf8(p).expect("utf-8 text")),
            0x8 => break p,
            0xA => {}
            other => panic!("unexpected frame {other}"),
        }
    };
    assert_eq!(&close[..2], &1000u16.to_be_bytes(), "normal closure");
    assert_eq!(task(&d, 10, &uuid)["status"], "fail");
    // one message per record, HTML-escaped (the page appends it as HTML)
    let all = texts.join("\n");
    assert!(
        all.contains("[n1] &lt;b&gt;deploy&lt;/b&gt; 4.2 on n1"),
        "{all}"
    );
    assert!(
        all.contains("[n2] &lt;b&gt;deploy&lt;/b&gt; 4.2 on n2"),
        "{all}"
    );
    assert!(!all.contains("<b>"), "{all}");
    assert!(
        texts.iter().all(|t| !t.contains('\n')),
        "one line per message"
    );
    // the task's project decides: bob may read project 10, "other" may not
    let (_, head) = Ws::open(&d, &path, BOB);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (_, head) = Ws::open(&d, &path, EXPIRED);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "compat: code 10000 — {head}"
    );
    let (st, v) = call(&d, "GET", &path, Who::App("other", OTHER), None);
    assert_eq!(st, 403, "{v}");
    let (st, _) = call(
        &d,
        "GET",
        "/api/jobx/slave/test-slave/ws?uuid=Nosuchtask00",
        ADMIN_APP,
        None,
    );
    assert_eq!(st, 404);
    let (st, _) = call(
        &d,
        "GET",
        &format!("/api/jobx/slave/elsewhere/ws?uuid={uuid}"),
        ADMIN_APP,
        None,
    );
    assert_eq!(st, 404);
    // a plain GET is told to speak WebSocket
    let (st, v) = call(&d, "GET", &path, ADMIN_APP, None);
    assert_eq!(st, 400, "{v}");
}
