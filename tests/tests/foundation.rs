//! The daemon's foundation through the real binary: groups and batching,
//! inventory, jobs, auth, the operation log, durability and shutdown.

use jobx_tests::daemon::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;

fn b(spec: &[&[&str]]) -> Vec<Vec<String>> {
    spec.iter()
        .map(|x| x.iter().map(|s| s.to_string()).collect())
        .collect()
}

fn range(a: u32, z: u32) -> Vec<String> {
    (a..=z).map(|i| i.to_string()).collect()
}

#[test]
fn every_batching_example_through_the_api() {
    let d = Daemon::start("");
    let (p10, p30) = (d.project(10), d.project(30));
    let ten: Vec<String> = range(1, 10);
    let ten_refs: Vec<&str> = ten.iter().map(String::as_str).collect();
    p10.nodes(&ten_refs);
    d.project(20).nodes(&["5", "99", "3"]);
    let tf: Vec<String> = range(1, 25);
    let tf_refs: Vec<&str> = tf.iter().map(String::as_str).collect();
    p30.nodes(&tf_refs);

    // §2.1 list
    let list_cases: &[(&str, Vec<Vec<String>>)] = &[
        ("node1,node2;node3", b(&[&["node1", "node2"], &["node3"]])),
        ("a,b\nc;d", b(&[&["a", "b"], &["c"], &["d"]])),
        ("a,b\r\nc;d", b(&[&["a", "b"], &["c"], &["d"]])),
        ("a;;b", b(&[&["a"], &["b"]])),
        (" a , b ", b(&[&["a", "b"]])),
    ];
    for (i, (text, want)) in list_cases.iter().enumerate() {
        let id = p10.group(&format!("list{i}"), "list", text);
        assert_eq!(&p10.group_batches(id), want, "list {text:?}");
    }

    // §2.2 simple percent, 10 nodes
    let one_each: Vec<Vec<String>> = ten.iter().map(|n| vec![n.clone()]).collect();
    let first9 = b(&[
        &["1"],
        &["2", "3"],
        &["4"],
        &["5"],
        &["6"],
        &["7"],
        &["8"],
        &["9"],
        &["10"],
    ]);
    let pct_cases: Vec<(&str, Vec<Vec<String>>)> = vec![
        ("1:2:10%:5%", first9.clone()),
        ("1:2:%10:%5", first9),
        (
            "3",
            b(&[
                &["1", "2", "3"],
                &["4", "5", "6"],
                &["7", "8", "9"],
                &["10"],
            ]),
        ),
        (
            "2:30%",
            b(&[
                &["1", "2"],
                &["3", "4", "5"],
                &["6", "7", "8"],
                &["9", "10"],
            ]),
        ),
        ("50%", vec![range(1, 5), range(6, 10)]),
        (
            "25.5%",
            vec![
                range(1, 2),
                range(3, 4),
                range(5, 6),
                range(7, 8),
                range(9, 10),
            ],
        ),
        ("100%", vec![ten.clone()]),
        ("150%", vec![ten.clone()]),
        ("", one_each),
    ];
    for (i, (text, want)) in pct_cases.iter().enumerate() {
        let id = p10.group(&format!("pct{i}"), "percent", text);
        assert_eq!(&p10.group_batches(id), want, "percent {text:?}");
    }

    // §2.2 with 25 nodes
    let mut want: Vec<Vec<String>> = vec![range(1, 1), range(2, 3), range(4, 5)];
    want.extend((6..=25).map(|i| vec![i.to_string()]));
    let id = p30.group("p25a", "percent", "1:2:10%:5%");
    assert_eq!(p30.group_batches(id), want);
    let id = p30.group("p25b", "percent", "2:20%");
    assert_eq!(
        p30.group_batches(id),
        vec![
            range(1, 2),
            range(3, 7),
            range(8, 12),
            range(13, 17),
            range(18, 22),
            range(23, 25)
        ]
    );

    // §2.3 selection form in project 10
    let sel_cases: Vec<(&str, Vec<Vec<String>>)> = vec![
        (
            ";1~3;1\n;4~10;50%",
            b(&[
                &["1"],
                &["2"],
                &["3"],
                &["4", "5", "6"],
                &["7", "8", "9"],
                &["10"],
            ]),
        ),
        ("20;1~5;2", b(&[&["5", "3"]])),
        (
            "20,10;1~20;5",
            b(&[&["5", "3", "1", "2", "4"], &["6", "7", "8", "9", "10"]]),
        ),
        (";2,5,7~8;1:100%", b(&[&["2"], &["5", "7", "8"]])),
        (
            "20;1~2;1\n;1~4;2",
            b(&[&["5"], &["3"], &["1", "2"], &["3", "4"]]),
        ),
        (
            "20;1~2;1\r\n;1~4;2",
            b(&[&["5"], &["3"], &["1", "2"], &["3", "4"]]),
        ),
    ];
    for (i, (text, want)) in sel_cases.iter().enumerate() {
        let id = p10.group(&format!("sel{i}"), "percent", text);
        assert_eq!(&p10.group_batches(id), want, "selection {text:?}");
    }

    // An empty inventory gives no batches.
    let p40 = d.project(40);
    let id = p40.group("empty", "percent", "50%");
    assert!(p40.group_batches(id).is_empty());
}

#[test]
fn bad_group_text_is_refused_on_save_naming_the_piece() {
    let d = Daemon::start("");
    let cases = [
        ("list", "", "no nodes"),
        ("list", ";", "no nodes"),
        ("list", "a,b;a", "\"a\""),
        ("percent", "0", "\"0\""),
        ("percent", "0%", "0%"),
        ("percent", "-1", "-1"),
        ("percent", "5::1", "5::1"),
        ("percent", "abc", "abc"),
        ("percent", "1.5", "1.5"),
        ("percent", "10 %", "10 %"),
        ("percent", ";0~2;1", "line 1"),
        ("percent", ";3~1;1", "line 1"),
        ("percent", "1;;1", "line 1"),
        ("percent", ";1~2;1\n;x;1", "line 2"),
    ];
    for (ty, text, piece) in cases {
        let field = if ty == "list" { "node" } else { "percent" };
        let (st, v) = d.post(
            "/group/10",
            ADMIN,
            json!({"name": "g", "group_type": ty, field: text}),
        );
        assert_eq!(st, 400, "{ty} {text:?}: {v}");
        assert_eq!(v["stat"], false);
        let info = v["info"].as_str().unwrap_or("");
        assert!(
            info.contains(piece),
            "{ty} {text:?}: {info:?} should name {piece:?}"
        );
        assert!(
            info.starts_with(field),
            "{info:?} should name the field {field}"
        );
    }
    // Nothing was stored.
    assert_eq!(d.data("/group/10"), json!([]));

    let bad_bodies = [
        (json!({"group_type": "list", "node": "a"}), "name"),
        (
            json!({"name": "g", "group_type": "tree", "node": "a"}),
            "group_type",
        ),
        (
            json!({"name": "", "group_type": "list", "node": "a"}),
            "name",
        ),
        (
            json!({"name": 5.5, "group_type": "list", "node": "a"}),
            "name",
        ),
        (
            json!({"name": ["x"], "group_type": "list", "node": "a"}),
            "name",
        ),
        (
            json!({"name": "g", "group_type": "list", "node": {"a": 1}}),
            "node",
        ),
    ];
    for (body, field) in bad_bodies {
        let (st, v) = d.post("/group/10", ADMIN, body.clone());
        assert_eq!(st, 400, "{body}: {v}");
        assert!(
            v["info"].as_str().unwrap_or("").starts_with(field),
            "{body}: {v}"
        );
    }
    let (st, v) = d.req("POST", "/group/10", Some(ADMIN), None);
    assert_eq!(st, 400, "{v}");
}

#[test]
fn group_crud_and_cross_project_isolation() {
    let d = Daemon::start("");
    let p10 = d.project(10);
    p10.nodes(&["a", "b", "c"]);
    let id = p10.group("web", "list", "a,b;c");
    let id2 = p10.group("pct", "percent", "1");
    // list: id descending
    let list = d.data("/group/10");
    assert_eq!(list[0]["id"], id2);
    assert_eq!(list[1]["id"], id);
    assert_eq!(list[1]["name"], "web");
    assert_eq!(list[1]["group_type"], "list");
    let g = d.data(&format!("/group/10/{id}"));
    assert_eq!(g["node"], "a,b;c");
    assert_eq!(g["projectid"], 10);
    assert!(g.get("percent").is_none());
    let p = d.data(&format!("/group/10/{id2}"));
    assert_eq!(p["percent"], "1");

    // duplicate name → 409, on create and on rename
    let (st, v) = d.post(
        "/group/10",
        ADMIN,
        json!({"name": "web", "group_type": "list", "node": "x"}),
    );
    assert_eq!(st, 409, "{v}");
    let (st, _) = d.post(
        &format!("/group/10/{id2}"),
        ADMIN,
        json!({"name": "web", "group_type": "percent", "percent": "2"}),
    );
    assert_eq!(st, 409);
    // the same name in another project is fine
    d.project(11).group("web", "list", "x");

    // update
    let v = d.ok_post(
        &format!("/group/10/{id}"),
        json!({"name": "web2", "group_type": "list", "node": "c;b;a", "note": "n"}),
    );
    assert_eq!(v["data"]["name"], "web2");
    assert_eq!(
        d.data(&format!("/group/10/{id}/node")),
        json!([["c"], ["b"], ["a"]])
    );
    // the old name is free again
    p10.group("web", "list", "a");

    // a group of project 10 does not exist through project 11
    for (m, path) in [
        ("GET", format!("/group/11/{id}")),
        ("GET", format!("/group/11/{id}/node")),
        ("DELETE", format!("/group/11/{id}")),
    ] {
        let (st, v) = d.req(m, &path, Some(ADMIN), None);
        assert_eq!(st, 404, "{m} {path}: {v}");
    }
    let (st, _) = d.post(
        &format!("/group/11/{id}"),
        ADMIN,
        json!({"name": "hijack", "group_type": "list", "node": "z"}),
    );
    assert_eq!(st, 404);
    assert_eq!(
        d.data(&format!("/group/10/{id}"))["name"],
        "web2",
        "untouched"
    );

    // delete
    let (st, v) = d.delete(&format!("/group/10/{id}"), ADMIN);
    assert_eq!((st, v["data"].clone()), (200, json!(true)));
    let (st, _) = d.get(&format!("/group/10/{id}"), ADMIN);
    assert_eq!(st, 404);
    let (st, _) = d.delete(&format!("/group/10/{id}"), ADMIN);
    assert_eq!(st, 404);
    let (st, v) = d.get("/group/10/abc", ADMIN);
    assert_eq!(st, 400, "{v}");
    let (st, v) = d.get("/group/x1/1", ADMIN);
    assert_eq!(st, 400, "{v}");
}

#[test]
fn auth_matrix() {
    let d = Daemon::start("");
    // no token
    let (st, v) = d.req("GET", "/group/10", None, None);
    assert_eq!(st, 401, "{v}");
    assert_eq!(v["stat"], false);
    // unknown token
    let (st, _) = d.get("/group/10", "nope-nope-nope");
    assert_eq!(st, 401);
    // /mon needs none
    let (st, v) = d.req("GET", "/mon", None, None);
    assert_eq!((st, v), (200, Value::String("ok".into())));
    // read-only token on a write
    let body = json!({"name": "g", "group_type": "list", "node": "a"});
    let (st, v) = d.post("/group/10", READER, body.clone());
    assert_eq!(st, 403, "{v}");
    assert!(v["info"].as_str().unwrap_or("").contains("write"), "{v}");
    // reader reads everywhere ("*")
    assert_eq!(d.get("/group/10", READER).0, 200);
    assert_eq!(d.get("/group/999", READER).0, 200);
    // project-scoped writer: yes on 10, no on 11 (not even read)
    assert_eq!(d.post("/group/10", WRITER10, body.clone()).0, 200);
    assert_eq!(d.post("/group/11", WRITER10, body.clone()).0, 403);
    assert_eq!(d.get("/group/11", WRITER10).0, 403);
    // token for another project
    assert_eq!(d.get("/group/10", OTHER).0, 403);
    assert_eq!(d.post("/group/11", OTHER, body.clone()).0, 200);
    // appname + appkey headers
    let agent = ureq::agent();
    let r = agent
        .get(&format!("{}/group/10", d.base))
        .set("appname", "reader")
        .set("appkey", READER)
        .call();
    assert_eq!(r.map(|r| r.status()).unwrap_or(0), 200);
    let r = agent
        .get(&format!("{}/group/10", d.base))
        .set("appname", "admin")
        .set("appkey", READER)
        .call();
    assert!(
        matches!(r, Err(ureq::Error::Status(401, _))),
        "name must match the key"
    );
    // nodes and jobs follow the same rules
    assert_eq!(
        d.post("/node/10", READER, json!({"nodes": [{"name": "a"}]}))
            .0,
        403
    );
    assert_eq!(
        d.post("/job/11", WRITER10, json!({"name": "j", "steps": []}))
            .0,
        403
    );
    assert_eq!(d.req("DELETE", "/node/10/a", Some(OTHER), None).0, 403);
    // the oplog names the token
    let log = d.data("/log/10");
    assert_eq!(log[0]["user"], "writer10");
}

#[test]
fn inventory_and_jobs() {
    let d = Daemon::start("");
    let v = d.ok_post(
        "/node/10",
        json!({"nodes": [{"name": "web1", "host": "10.0.0.1", "port": 2222, "user": "deploy", "labels": {"role": "web"}}, {"name": "web2"}]}),
    );
    assert_eq!(v["data"][0]["host"], "10.0.0.1");
    assert_eq!(v["data"][1]["host"], "web2", "host defaults to the name");
    // upsert keeps order and appends new nodes
    d.ok_post(
        "/node/10",
        json!({"nodes": [{"name": "web0"}, {"name": "web1", "port": 22}]}),
    );
    let inv = d.data("/node/10");
    let names: Vec<&str> = inv
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["web1", "web2", "web0"]);
    assert_eq!(inv[0]["port"], 22);
    for (body, field) in [
        (
            json!({"nodes": [{"name": "a", "port": 70000}]}),
            "nodes[0].port",
        ),
        (json!({"nodes": [{"name": "a,b"}]}), "nodes[0].name"),
        (json!({"nodes": [{"host": "x"}]}), "nodes[0].name"),
        (
            json!({"nodes": [{"name": "a"}, {"name": "a"}]}),
            "nodes[1].name",
        ),
        (json!({"nodes": "a"}), "nodes"),
        (
            json!({"nodes": [{"name": "a", "labels": {"x": 1}}]}),
            "nodes[0].labels.x",
        ),
    ] {
        let (st, v) = d.post("/node/10", ADMIN, body.clone());
        assert_eq!(st, 400, "{body}: {v}");
        assert!(
            v["info"].as_str().unwrap_or("").starts_with(field),
            "{body}: {v}"
        );
    }
    assert_eq!(d.delete("/node/10/web2", ADMIN).0, 200);
    assert_eq!(d.delete("/node/10/web2", ADMIN).0, 404);
    assert_eq!(d.data("/node/10").as_array().map(Vec::len), Some(2));

    // jobs
    let job = json!({"name": "deploy", "steps": [
        {"name": "build", "plugin": "local", "script": "echo ${version}", "args": "--v ${version}", "timeout": 30},
        {"plugin": "approval", "approvers": ["alice"], "message": "ship ${version}?"},
        {"plugin": "ssh", "kind": "scp", "src": "/tmp/a", "dst": "/tmp/b", "chmod": "0644"}
    ]});
    let v = d.ok_post("/job/10", job.clone());
    let steps = v["data"]["steps"].as_array().expect("steps").clone();
    assert_eq!(steps.len(), 3);
    for s in &steps {
        let u = s["uuid"].as_str().expect("uuid");
        assert_eq!(u.len(), 12);
        assert!(u.chars().all(|c| c.is_ascii_alphanumeric()));
    }
    assert_eq!(steps[0]["timeout"], 30);
    assert_eq!(steps[1]["timeout"], 86400);
    let got = d.data("/job/10/deploy");
    assert_eq!(got["steps"], v["data"]["steps"]);
    assert_eq!(d.data("/job/10").as_array().map(Vec::len), Some(1));
    // replace: a step that keeps its uuid keeps it, new steps get fresh ones
    let mut again = job.clone();
    again["steps"][0]["uuid"] = steps[0]["uuid"].clone();
    let v2 = d.ok_post("/job/10", again);
    assert_eq!(v2["data"]["steps"][0]["uuid"], steps[0]["uuid"]);
    assert_ne!(v2["data"]["steps"][1]["uuid"], steps[1]["uuid"]);
    // the same job name in another project is another job
    assert_eq!(d.get("/job/11/deploy", ADMIN).0, 404);
    // bad steps name the step
    let (st, v) = d.post("/job/10", ADMIN, json!({"name": "x", "steps": [{"plugin": "local", "script": "true"}, {"plugin": "teleport"}]}));
    assert_eq!(st, 400);
    assert!(
        v["info"].as_str().unwrap_or("").contains("steps[1].plugin"),
        "{v}"
    );
    assert_eq!(d.get("/job/10/x", ADMIN).0, 404, "nothing stored");
    assert_eq!(d.delete("/job/10/deploy", ADMIN).0, 200);
    assert_eq!(d.get("/job/10/deploy", ADMIN).0, 404);
}

#[test]
fn hostile_strings_are_stored_verbatim() {
    let d = Daemon::start("");
    let nasty = [
        "quote\"d 'single'",
        "back\\slash",
        "<script>alert(1)</script>",
        "emoji 😀🚀",
        "'; DROP TABLE groups; --",
        "%00%27 ${x} $(id)",
    ];
    for (i, s) in nasty.iter().enumerate() {
        let v = d.ok_post(
            "/group/10",
            json!({"name": s, "note": s, "group_type": "list", "node": format!("n{i}")}),
        );
        let id = v["data"]["id"].as_u64().expect("id");
        let g = d.data(&format!("/group/10/{id}"));
        assert_eq!(g["name"], *s);
        assert_eq!(g["note"], *s);
        d.ok_post(
            "/job/10",
            json!({"name": s, "steps": [{"plugin": "local", "script": s}]}),
        );
    }
    let jobs = d.data("/job/10");
    let names: Vec<&str> = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    for s in nasty {
        assert!(names.contains(&s), "{s}");
    }
    // names with control characters are refused
    let (st, _) = d.post(
        "/group/10",
        ADMIN,
        json!({"name": "a\u{7}b", "group_type": "list", "node": "x"}),
    );
    assert_eq!(st, 400);
}

#[test]
fn bodies_over_the_cap_get_413_and_bad_json_400() {
    let d = Daemon::start("");
    let big = "x".repeat(2 << 20);
    let (st, v) = d.post(
        "/group/10",
        ADMIN,
        json!({"name": "g", "group_type": "list", "node": big}),
    );
    assert_eq!(st, 413, "{v}");
    let r = ureq::post(&format!("{}/group/10", d.base))
        .set("Authorization", &format!("Bearer {ADMIN}"))
        .set("Content-Type", "application/json")
        .send_string("{not json");
    match r {
        Err(ureq::Error::Status(400, resp)) => {
            let v: Value = resp.into_json().expect("json error body");
            assert!(v["info"].as_str().unwrap_or("").contains("JSON"), "{v}");
        }
        other => panic!("expected 400, got {other:?}"),
    }
    // form bodies work for flat calls
    let r = ureq::post(&format!("{}/group/10", d.base))
        .set("Authorization", &format!("Bearer {ADMIN}"))
        .send_form(&[("name", "formed"), ("group_type", "list"), ("node", "a;b")]);
    assert_eq!(r.map(|r| r.status()).unwrap_or(0), 200);
    assert_eq!(d.data("/group/10")[0]["name"], "formed");
    assert_eq!(d.get("/no/such/route", ADMIN).0, 404);
}

#[test]
fn operation_log_records_changes_newest_first() {
    let d = Daemon::start("");
    let p = d.project(10);
    p.nodes(&["a"]);
    let id = p.group("web", "list", "a");
    d.ok_post(
        &format!("/group/10/{id}"),
        json!({"name": "web", "group_type": "list", "node": "a;b"}),
    );
    d.ok_post(
        "/job/10",
        json!({"name": "j", "steps": [{"plugin": "local", "script": "true"}]}),
    );
    d.delete("/job/10/j", ADMIN);
    d.delete(&format!("/group/10/{id}"), ADMIN);
    d.delete("/node/10/a", ADMIN);
    // failed changes leave no entry
    d.post(
        "/group/10",
        ADMIN,
        json!({"name": "bad", "group_type": "list", "node": ""}),
    );
    let log = d.data("/log/10");
    let titles: Vec<&str> = log
        .as_array()
        .expect("log")
        .iter()
        .filter_map(|e| e["title"].as_str())
        .collect();
    assert_eq!(
        titles,
        [
            "EDIT NODES",
            "DELETE GROUP",
            "DELETE JOB",
            "EDIT JOB",
            "EDIT GROUP",
            "CREATE GROUP",
            "EDIT NODES"
        ]
    );
    assert_eq!(log[1]["info"], "group web");
    assert_eq!(log[0]["user"], "admin");
    assert!(log[0]["create_time"]
        .as_str()
        .map(|t| t.len() == 19)
        .unwrap_or(false));
    assert_eq!(d.data("/log/10?limit=2").as_array().map(Vec::len), Some(2));
    assert_eq!(d.data("/log/11"), json!([]));
}

#[test]
fn data_survives_sigkill_and_sigterm_exits_zero() {
    let mut d = Daemon::start("");
    let p = d.project(10);
    p.nodes(&["a", "b"]);
    let id = p.group("web", "list", "a;b");
    d.ok_post(
        "/job/10",
        json!({"name": "j", "steps": [{"plugin": "local", "script": "true"}]}),
    );
    d.kill9();
    d.restart();
    assert_eq!(d.data(&format!("/group/10/{id}"))["node"], "a;b");
    assert_eq!(d.data("/node/10").as_array().map(Vec::len), Some(2));
    assert_eq!(d.data("/job/10/j")["name"], "j");
    assert_eq!(d.data("/log/10").as_array().map(Vec::len), Some(3));
    let st = d.term();
    assert_eq!(st.code(), Some(0), "graceful exit; stderr:\n{}", d.stderr());
    assert!(d.stderr().contains("shutting down"));
}

#[test]
fn admin_token_is_created_when_no_tokens_are_configured() {
    let mut d = Daemon::start_with("", false);
    let path = d.data_dir().join("admin.token");
    let mode = std::fs::metadata(&path)
        .expect("admin.token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&path)
        .expect("read token")
        .trim()
        .to_string();
    assert!(token.len() >= 32);
    assert!(d.stderr().contains("admin.token"));
    assert_eq!(d.get("/group/1", &token).0, 200);
    assert_eq!(d.get("/group/1", ADMIN).0, 401);
    // the same token after a restart
    d.restart();
    assert_eq!(d.get("/group/1", &token).0, 200);
}

#[test]
fn command_line() {
    let bin = bin_dir().join("jobxd");
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("jobxd "));
    let out = std::process::Command::new(&bin)
        .arg("--help")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--check-config"));
    let dir = TempDir::new("cfg");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nlisten = \"127.0.0.1:9\"\n").expect("write");
    let out = std::process::Command::new(&bin)
        .args(["--check-config", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(out.status.success());
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[engine]\nmax_parallel = 0\n").expect("write");
    let out = std::process::Command::new(&bin)
        .args(["--check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("engine.max_parallel"));
    let out = std::process::Command::new(&bin)
        .arg("--frobnicate")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}
