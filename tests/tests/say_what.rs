//! What a new user meets: strict bodies that name the typo, a config check
//! that finds what a start would hit, a start that refuses without writing
//! anything, tasks that say what they wait for, decisions in the log,
//! `${JOBX_NODE}` in step fields, token warnings and `jobxd token new`,
//! a quick stop with agents connected, and clear store-lock errors.

use jobx_tests::daemon::*;
use jobx_tests::flow::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// Runs `jobxd ARGS…` to the end; answers (exit code, stdout, stderr).
fn jobxd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin_dir().join("jobxd"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run jobxd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config file in `dir` with a fresh data dir and the built plugins.
fn config_file(dir: &TempDir, extra: &str) -> (String, std::path::PathBuf) {
    let data = dir.path().join("data");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = {:?}\n{extra}",
        data.display().to_string()
    );
    let path = dir.path().join("jobxd.toml");
    std::fs::write(&path, text).expect("write config");
    (path.display().to_string(), data)
}

fn plugins_dir() -> String {
    format!("[plugins]\ndir = [{:?}]\n", bin_dir().display().to_string())
}

#[test]
fn unknown_fields_are_refused_naming_the_closest_field() {
    let d = Daemon::start("");
    let (st, v) = d.post(
        "/job/10",
        ADMIN,
        json!({"name": "deploy", "steps": [{"plugin": "local", "script": "true", "timout": 300}]}),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(
        v["info"],
        "steps[0].timout: unknown field (did you mean \"timeout\"?)"
    );
    // Nothing was stored.
    assert_eq!(d.get("/job/10/deploy", ADMIN).0, 404);

    let (st, v) = d.post(
        "/node/10",
        ADMIN,
        json!({"nodes": [{"name": "x1", "hostname": "10.0.0.1"}]}),
    );
    assert_eq!(st, 400, "{v}");
    let info = v["info"].as_str().unwrap_or_default();
    assert!(
        info.starts_with("nodes[0].hostname: unknown field") && info.contains("host"),
        "{info}"
    );
    assert_eq!(d.data("/node/10"), json!([]));

    // An approval step's own fields; a cmd step may not carry scp fields.
    let (st, v) = d.post(
        "/job/10",
        ADMIN,
        json!({"name": "a", "steps": [{"plugin": "approval", "approvers": ["admin"], "mesage": "x"}]}),
    );
    assert_eq!(st, 400);
    assert_eq!(
        v["info"],
        "steps[0].mesage: unknown field (did you mean \"message\"?)"
    );
    let (st, v) = d.post(
        "/job/10",
        ADMIN,
        json!({"name": "a", "steps": [{"plugin": "local", "script": "true", "dst": "/tmp/x"}]}),
    );
    assert_eq!(st, 400);
    assert!(v["info"]
        .as_str()
        .unwrap_or_default()
        .starts_with("steps[0].dst: unknown field"));

    // A job read back with GET can be posted again as it is.
    let j = job(
        &d,
        10,
        "echo",
        json!([{"plugin": "local", "script": "true"}]),
    );
    let back = d.ok_post("/job/10", j.clone());
    assert_eq!(back["data"]["steps"][0]["uuid"], j["steps"][0]["uuid"]);

    // The third-party params and confirm bodies are strict too.
    let (st, v) = d.post(
        "/third/interface/dry-run",
        ADMIN,
        json!({"project_id": 10, "uuid": "abcdefghijkl", "params": {"jobname": "echo", "grup": "g"}}),
    );
    assert_eq!(st, 400);
    assert_eq!(
        v["info"],
        "params.grup: unknown field (did you mean \"group\"?)"
    );
    let (st, v) = d.put(
        "/subtask/10/abcdefghijkl/confirm",
        ADMIN,
        json!({"acton": "retry"}),
    );
    assert_eq!(st, 400);
    assert_eq!(v["info"], "acton: unknown field (did you mean \"action\"?)");

    // OPEN-C3 group dumps come back with their own id, projectid and
    // edit_time: still accepted.
    let id = group(&d, 10, "g", "list", "a");
    let mut dump = d.data(&format!("/group/10/{id}"));
    dump["node"] = json!("a,b");
    d.ok_post(&format!("/group/10/{id}"), dump);
}

#[test]
fn check_config_finds_plugin_errors_and_a_failed_start_writes_nothing() {
    let cases = [
        ("[plugins.ssh]\nidentity_fil = \"/x\"\n", "identity_fil"),
        (
            "[plugins.ssh]\nconnect_timeout = \"10s\"\n",
            "connect_timeout",
        ),
        (
            "[plugins.agent-pull]\nagents = [{ name = \"n1\", tokn = \"t\" }]\n",
            "tokn",
        ),
    ];
    for (bad, key) in cases {
        let dir = TempDir::new("check");
        let (path, data) = config_file(&dir, &format!("{}{bad}", plugins_dir()));
        let (code, out, err) = jobxd(&["--config", &path, "--check-config"]);
        assert_eq!(code, 2, "{bad}: {out} {err}");
        assert!(err.contains(key), "{bad}: {err}");
        assert!(!out.contains("configuration ok"), "{out}");
        // Starting fails the same way and leaves no admin.token behind.
        let (code, _, err) = jobxd(&["--config", &path]);
        assert_ne!(code, 0, "{err}");
        assert!(err.contains(key), "{err}");
        assert!(!data.join("admin.token").exists(), "{bad}");
    }
    let dir = TempDir::new("check-ok");
    let (path, _) = config_file(&dir, &plugins_dir());
    let (code, out, err) = jobxd(&["--config", &path, "--check-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration ok (plugins: "), "{out}");
    assert!(out.contains("local") && out.contains("ssh"), "{out}");
}

#[test]
fn no_plugin_found_refuses_to_start_naming_the_directories() {
    let dir = TempDir::new("noplugins");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let (path, data) = config_file(
        &dir,
        &format!("[plugins]\ndir = [{:?}]\n", empty.display().to_string()),
    );
    let (code, _, err) = jobxd(&["--config", &path]);
    assert_ne!(code, 0);
    assert!(err.contains("no executor plugin"), "{err}");
    assert!(err.contains(&empty.display().to_string()), "{err}");
    assert!(!data.join("admin.token").exists());

    // With plugins loaded, a step of a type that is not loaded is a 400
    // listing the loaded types.
    let d = Daemon::start("");
    let (st, v) = d.post(
        "/job/10",
        ADMIN,
        json!({"name": "j", "steps": [{"plugin": "locall", "script": "true"}]}),
    );
    assert_eq!(st, 400);
    let info = v["info"].as_str().unwrap_or_default();
    assert!(
        info.starts_with("steps[0].plugin: no plugin of type \"locall\" is loaded (loaded: ")
            && info.contains("local")
            && info.contains("ssh"),
        "{info}"
    );
}

fn tasks_waiting(d: &Daemon) -> Vec<String> {
    d.data("/task/10?status=waiting")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t["uuid"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_task_says_what_it_waits_for_and_the_log_tells_the_decisions() {
    let d = Daemon::start("");
    nodes(&d, 10, &["a", "b"]);
    group(&d, 10, "g", "list", "a;b");
    job(
        &d,
        10,
        "deploy",
        json!([{"name": "check", "plugin": "local", "script": "[ \"$JOBX_NODE\" != a ] || exit 3"}]),
    );
    let uuid = start(
        &d,
        10,
        "deploy",
        "g",
        json!({"version": "2.4.1", "_rollbackVersion_": "2.4.0"}),
    );
    let subs = wait_confirm(&d, 10, &uuid, 0, T);
    let t = task(&d, 10, &uuid);
    assert_eq!(t["status"], "running");
    assert_eq!(t["waiting"], "confirm");
    assert_eq!(t["waiting_on"], subs[0]["uuid"]);
    assert_eq!(t["variables"]["version"], "2.4.1");
    assert_eq!(
        t["variable"],
        "---\n_rollbackVersion_: 2.4.0\nversion: 2.4.1\n"
    );
    assert_eq!(tasks_waiting(&d), vec![uuid.clone()]);
    let log = wait_for("the wait in the log", T, || {
        let l = log_text(&d, &uuid);
        l.contains("waits for confirmation").then_some(l)
    });
    assert!(
        log.contains("batch 1/2 failed (step \"check\" failed on a); waits for confirmation"),
        "{log}"
    );

    d.ok_put(
        &format!(
            "/subtask/10/{}/confirm",
            subs[0]["uuid"].as_str().unwrap_or("")
        ),
        json!({}),
    );
    let t = wait_finished(&d, 10, &uuid, T);
    assert_eq!(t["status"], "fail");
    assert_eq!(t["waiting"], "rollback_decision");
    assert_eq!(tasks_waiting(&d), vec![uuid.clone()]);
    let log = wait_for("the end in the log", T, || {
        let l = log_text(&d, &uuid);
        l.contains("task finished").then_some(l)
    });
    assert!(log.contains("confirmed by admin"), "{log}");
    assert!(
        log.contains("task finished: fail (batch 1 failed); waits for a rollback decision"),
        "{log}"
    );
    // The log page's header says how it ended, not just "finished".
    let (st, page) = d.get(&format!("/slave/test-slave/log/{uuid}?format=html"), ADMIN);
    assert_eq!(st, 200);
    assert!(
        page.as_str()
            .unwrap_or_default()
            .contains("finished: fail (batch 1 failed)"),
        "{page}"
    );
    d.ok_put(&format!("/task/10/{uuid}/norollback"), json!({}));
    let t = task(&d, 10, &uuid);
    assert_eq!(t["waiting"], Value::Null);
    assert!(tasks_waiting(&d).is_empty());
    wait_for("the decision in the log", T, || {
        log_text(&d, &uuid)
            .contains("no rollback, decided by admin")
            .then_some(())
    });

    // Approvals: waiting = approval on the approval's uuid; agreed by X.
    job(
        &d,
        10,
        "gated",
        json!([{"name": "ok?", "plugin": "approval", "approvers": ["admin"], "message": "go ${JOBX_NODE}"}]),
    );
    let uuid = start(&d, 10, "gated", "val=a,b", json!({}));
    let t = wait_for("the approval", T, || {
        let t = task(&d, 10, &uuid);
        (t["waiting"] == "approval").then_some(t)
    });
    let approvals = d.data("/approval/10");
    assert_eq!(t["waiting_on"], approvals[0]["uuid"]);
    assert_eq!(approvals[0]["message"], "go a,b");
    wait_for("the request in the log", T, || {
        log_text(&d, &uuid)
            .contains("approval requested from admin: go a,b")
            .then_some(())
    });
    let au = approvals[0]["uuid"].as_str().unwrap_or("").to_string();
    d.ok_put(&format!("/approval/10/{au}"), json!({"opinion": "agree"}));
    let t = wait_finished(&d, 10, &uuid, T);
    assert_eq!(t["status"], "success");
    assert_eq!(t["waiting"], Value::Null);
    wait_for("the opinion in the log", T, || {
        log_text(&d, &uuid)
            .contains("agreed by admin")
            .then_some(())
    });

    // Stop is in the log, and a stopped task waits for nothing.
    job(
        &d,
        10,
        "slow",
        json!([{"plugin": "local", "script": "sleep 30"}]),
    );
    let uuid = start(&d, 10, "slow", "val=a", json!({}));
    wait_for("the step to run", T, || {
        (task(&d, 10, &uuid)["status"] == "running").then_some(())
    });
    d.ok_put(&format!("/task/10/{uuid}"), json!({}));
    let t = wait_finished(&d, 10, &uuid, T);
    assert_eq!(t["reason"], "stopped by admin");
    assert_eq!(t["waiting"], Value::Null);
    wait_for("the stop in the log", T, || {
        log_text(&d, &uuid)
            .contains("stopped by admin")
            .then_some(())
    });
}

#[test]
fn the_task_list_is_ascending_and_keeps_the_newest() {
    let d = Daemon::start("");
    nodes(&d, 10, &["n"]);
    job(&d, 10, "j", json!([{"plugin": "local", "script": "true"}]));
    let mut uuids = Vec::new();
    for _ in 0..5 {
        uuids.push(start(&d, 10, "j", "val=n", json!({})));
    }
    let list = d.data("/task/10?limit=3");
    let got: Vec<&str> = list
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["uuid"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(got, vec![&uuids[2], &uuids[3], &uuids[4]]);
    let ids: Vec<u64> = list
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["id"].as_u64()).collect())
        .unwrap_or_default();
    // Older rows page with before_id = the smallest id shown.
    let older = d.data(&format!("/task/10?limit=3&before_id={}", ids[0]));
    let got: Vec<&str> = older
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["uuid"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(got, vec![&uuids[0], &uuids[1]]);
}

#[test]
fn jobx_node_substitutes_in_args_and_dst() {
    let d = Daemon::start("");
    let out = TempDir::new("pernode");
    nodes(&d, 10, &["n1", "n2"]);
    let src = out.path().join("src.txt");
    std::fs::write(&src, "payload\n").expect("src");
    job(
        &d,
        10,
        "copy",
        json!([
            {"name": "copy", "plugin": "local", "kind": "scp", "src": src.display().to_string(),
             "dst": format!("{}/${{JOBX_NODE}}-${{JOBX_BATCH}}.txt", out.path().display())},
            {"name": "say", "plugin": "local", "script": "echo \"arg=$1\"", "args": "${JOBX_NODE}/${JOBX_BATCHES}"}
        ]),
    );
    let uuid = start(&d, 10, "copy", "val=n1,n2", json!({}));
    let t = wait_finished(&d, 10, &uuid, T);
    assert_eq!(t["status"], "success", "{}", log_text(&d, &uuid));
    for n in ["n1", "n2"] {
        let f = out.path().join(format!("{n}-1.txt"));
        assert_eq!(
            std::fs::read_to_string(&f).ok().as_deref(),
            Some("payload\n"),
            "{f:?}"
        );
    }
    let log = log_text(&d, &uuid);
    assert!(log.contains("[n1] arg=n1/1"), "{log}");
    assert!(log.contains("[n2] arg=n2/1"), "{log}");
}

#[test]
fn token_new_prints_a_working_entry_and_lost_admin_is_warned() {
    let (code, out, err) = jobxd(&["token", "new", "ops", "--role", "*=admin"]);
    assert_eq!(code, 0, "{err}");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("a token line")
        .to_string();
    let entry: String = out
        .lines()
        .skip_while(|l| !l.starts_with("[[auth.tokens]]"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!entry.contains(&token), "the entry holds the sha256 only");
    let (code, _, err) = jobxd(&["token", "new", "ops", "--role", "*=boss"]);
    assert_eq!(code, 2);
    assert!(err.contains("read, write, control or admin"), "{err}");

    // The printed entry configures a token that works; the generated
    // admin token is then refused, and the log says so.
    let mut d = Daemon::start_with(&entry, false);
    assert_eq!(d.get("/node/1", &token).0, 200);
    std::fs::write(d.data_dir().join("admin.token"), "old-admin-token\n").expect("admin.token");
    d.restart();
    assert_eq!(d.get("/node/1", &token).0, 200);
    assert_eq!(d.get("/node/1", "old-admin-token").0, 401);
    assert!(
        d.stderr().contains("admin.token is no longer accepted"),
        "{}",
        d.stderr()
    );

    // Tokens without admin on "*": a warning that nobody can take backups.
    let d = Daemon::start("");
    assert!(
        !d.stderr().contains("no configured token has admin"),
        "the test tokens include an admin"
    );
    let d = Daemon::start_with(
        "[[auth.tokens]]\nname = \"r\"\ntoken = \"r-secret\"\nroles = { \"*\" = \"read\" }\n",
        false,
    );
    assert!(
        d.stderr()
            .contains("no configured token has admin on \"*\""),
        "{}",
        d.stderr()
    );
}

#[test]
fn a_second_daemon_on_the_same_store_says_why() {
    let d = Daemon::start("");
    let (code, _, err) = jobxd(&[
        "--config",
        &d.config_path.display().to_string(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains("jobx.redb"), "{err}");
}

#[test]
fn sigterm_with_an_agent_long_polling_stops_quickly() {
    let mut d = Daemon::start(
        "[plugins.agent-pull]\npoll_hold = 50\nagents = [{ name = \"n1\", token = \"tok-n1\" }]\n",
    );
    let dir = TempDir::new("agent");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-n1\n").expect("token");
    let mut agent = Command::new(bin_dir().join("jobx-agent"))
        .args(["--server", &d.base, "--name", "n1", "--token-file"])
        .arg(&token_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("jobx-agent is built by the default build");
    // Connected: the daemon lists it with a recent contact.
    wait_for("the agent to connect", T, || {
        let (st, v) = d.get("/plugin/agent-pull/agents", ADMIN);
        (st == 200 && v.to_string().contains("n1")).then_some(())
    });
    let began = Instant::now();
    let status = d.term();
    let took = began.elapsed();
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
}
