//! Operating jobxd as a service: token reload on SIGHUP, systemd
//! notifications, step log retention, and backup/restore while tasks run.

use jobx_tests::daemon::*;
use jobx_tests::project::Project;
use serde_json::{json, Value};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const NEW_TOKEN: &str = "added-by-reload-0001";

fn signal(d: &Daemon, sig: i32) {
    // SAFETY: kill(2) on the pid of the daemon this test started.
    let rc = unsafe { libc::kill(d.pid() as i32, sig) };
    assert_eq!(rc, 0, "kill {sig}");
}

fn status(d: &Daemon, token: &str) -> u16 {
    d.get("/node/10", token).0
}

/// Rewrites the daemon's config file through `f` (as TOML).
fn edit_config(d: &Daemon, f: impl FnOnce(&mut toml::Table)) {
    let text = std::fs::read_to_string(&d.config_path).expect("read config");
    let mut t: toml::Table = text.parse().expect("config is TOML");
    f(&mut t);
    std::fs::write(&d.config_path, toml::to_string(&t).expect("serialize")).expect("write");
}

fn tokens(t: &mut toml::Table) -> &mut Vec<toml::Value> {
    t.get_mut("auth")
        .and_then(|a| a.as_table_mut())
        .and_then(|a| a.get_mut("tokens"))
        .and_then(|x| x.as_array_mut())
        .expect("[[auth.tokens]] in the test config")
}

#[test]
fn sighup_reloads_tokens_and_a_broken_file_keeps_them() {
    let d = Daemon::start("");
    assert_eq!(status(&d, NEW_TOKEN), 401);
    assert_eq!(status(&d, READER), 200);

    // Add a token and revoke "reader" in one reload.
    edit_config(&d, |t| {
        let list = tokens(t);
        list.retain(|x| x.get("name").and_then(|n| n.as_str()) != Some("reader"));
        let mut added = toml::Table::new();
        added.insert("name".into(), "added".into());
        added.insert("token".into(), NEW_TOKEN.into());
        let mut roles = toml::Table::new();
        roles.insert("10".into(), "read".into());
        added.insert("roles".into(), roles.into());
        list.push(added.into());
    });
    signal(&d, libc::SIGHUP);
    wait_for("the added token to work", Duration::from_secs(10), || {
        (status(&d, NEW_TOKEN) == 200).then_some(())
    });
    assert_eq!(
        status(&d, READER),
        401,
        "a revoked token is refused at once"
    );
    assert_eq!(status(&d, ADMIN), 200);
    // The new token has exactly the roles it was given.
    assert_eq!(d.get("/node/11", NEW_TOKEN).0, 403);
    assert!(d.stderr().contains("SIGHUP: reloaded"), "{}", d.stderr());

    // A file that does not parse: the tokens stay as they were, and the log says why.
    let good = std::fs::read_to_string(&d.config_path).expect("read");
    std::fs::write(&d.config_path, format!("{good}\n[[auth.tokens]\nname = ")).expect("write");
    signal(&d, libc::SIGHUP);
    wait_for(
        "the daemon to report the broken file",
        Duration::from_secs(10),
        || {
            d.stderr()
                .contains("SIGHUP: keeping the current tokens")
                .then_some(())
        },
    );
    assert_eq!(status(&d, NEW_TOKEN), 200);
    assert_eq!(status(&d, READER), 401);
    assert_eq!(status(&d, ADMIN), 200);

    // Valid TOML that fails validation is refused the same way.
    let before = d.stderr().matches("keeping the current tokens").count();
    std::fs::write(&d.config_path, good.replace(NEW_TOKEN, "2short")).expect("write");
    signal(&d, libc::SIGHUP);
    wait_for(
        "the daemon to refuse the file",
        Duration::from_secs(10),
        || (d.stderr().matches("keeping the current tokens").count() > before).then_some(()),
    );
    assert!(
        d.stderr().contains("shorter than 8 characters"),
        "{}",
        d.stderr()
    );
    assert_eq!(status(&d, NEW_TOKEN), 200);
    assert_eq!(status(&d, READER), 401);
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let mut d = Daemon::start("");
    let dir = TempDir::new("notify");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    d.set_env("NOTIFY_SOCKET", &sock_path.display().to_string());
    d.restart();
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
    };
    assert_eq!(next(), "READY=1");
    // Ready means listening: a request is answered now.
    assert_eq!(d.get("/mon", ADMIN).0, 200);
    signal(&d, libc::SIGHUP);
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next(), "READY=1");
    let st = d.term();
    assert!(st.success(), "{st:?}");
    assert_eq!(next(), "STOPPING=1");
}

fn log_of(d: &Daemon, key: &str) -> String {
    d.project(10).log_text(key)
}

/// The three log keys of a one-batch, one-step task: task, batch, step.
fn keys(p: &Project, uuid: &str, step: &str) -> [String; 3] {
    let b = p.task(uuid).batch_uuid(0);
    [uuid.to_string(), b.clone(), format!("{b}{step}local")]
}

fn run_task(p: &Project, job_name: &str) -> String {
    let task = p.run(job_name, "g", json!({}));
    let t = task.wait_finished();
    assert_eq!(t["status"], "success", "{t}");
    task.uuid
}

#[test]
fn retention_prunes_old_step_logs_and_keeps_tasks_and_recent_logs() {
    let mut d = Daemon::start("[logs]\nretention_days = 0\nretention_check_secs = 1\n");
    let p = d.project(10);
    p.nodes(&["a"]);
    p.group("g", "list", "a");
    let j_old = p.job(
        "old",
        json!([{"plugin": "local", "script": "echo old-output"}]),
    );
    let j_new = p.job(
        "new",
        json!([{"plugin": "local", "script": "echo new-output"}]),
    );
    let step = |j: &Value| {
        j["steps"][0]["uuid"]
            .as_str()
            .expect("step uuid")
            .to_string()
    };

    // One task finishes on 1 January, the other on 15 February.
    d.fake_time(Some("2030-01-01 00:00:00"));
    d.restart();
    let old = run_task(&d.project(10), "old");
    d.fake_time(Some("2030-02-15 00:00:00"));
    d.restart();
    let p = d.project(10);
    let new = run_task(&p, "new");
    let old_keys = keys(&p, &old, &step(&j_old));
    let new_keys = keys(&p, &new, &step(&j_new));
    for k in &old_keys {
        assert!(log_of(&d, k).contains("old-output"), "{k}");
    }

    // On 1 March with 30 days of retention, the January task's logs expire.
    edit_config(&d, |t| {
        let logs = t
            .get_mut("logs")
            .and_then(|l| l.as_table_mut())
            .expect("[logs]");
        logs.insert("retention_days".into(), 30.into());
    });
    d.fake_time(Some("2030-03-01 00:00:00"));
    d.restart();
    wait_for(
        "the old task's logs to be pruned",
        Duration::from_secs(30),
        || {
            old_keys
                .iter()
                .all(|k| log_of(&d, k).trim().is_empty())
                .then_some(())
        },
    );
    // The pass that pruned them had its cutoff on 30 January: the February task stays.
    for k in &new_keys {
        assert!(
            log_of(&d, k).contains("new-output"),
            "{k}: recent logs are kept"
        );
    }
    // Both tasks and their batches are still listed, with their outcome.
    let p = d.project(10);
    let t = p.task(&old).get();
    assert_eq!(t["status"], "success");
    assert!(
        t["finishtime"]
            .as_str()
            .is_some_and(|f| f.starts_with("2030-01-01")),
        "{t}"
    );
    assert_eq!(p.task(&old).subtasks().len(), 1);
    assert_eq!(p.task(&new).get()["status"], "success");
    let listed: Vec<Value> = d.data("/task/10").as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 2, "{listed:?}");
    // The pass reports what it removed once it is through.
    wait_for(
        "the retention pass to report",
        Duration::from_secs(10),
        || {
            d.stderr()
                .contains("of 1 task(s) finished before 2030-01-30")
                .then_some(())
        },
    );
}

fn backup(d: &Daemon, to: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let addr = d.base.trim_start_matches("http://");
    Command::new(bin_dir().join("jobxd"))
        .arg("backup")
        .arg("--config")
        .arg(&d.config_path)
        .arg("--listen")
        .arg(addr)
        .arg("--to")
        .arg(to)
        .envs(env.iter().copied())
        .output()
        .expect("run jobxd backup")
}

#[test]
fn backup_during_a_running_task_restores_tasks_groups_and_logs() {
    let d = Daemon::start("");
    let p = d.project(10);
    p.nodes(&["a", "b"]);
    p.group("g", "list", "a");
    p.group("g2", "list", "a,b");
    p.job(
        "done",
        json!([{"plugin": "local", "script": "echo finished-output"}]),
    );
    let done = run_task(&p, "done");
    p.job(
        "slow",
        json!([{"plugin": "local", "script": "echo running-output; sleep 120"}]),
    );
    let running = p.run("slow", "g", json!({}));
    wait_for("the running task's output", Duration::from_secs(30), || {
        running.log_text().contains("running-output").then_some(())
    });

    // Only an admin on every project may take a backup.
    assert_eq!(d.get("/backup", READER).0, 403);
    assert_eq!(d.get("/backup", OTHER).0, 403);
    assert_eq!(d.req("GET", "/backup", None, None).0, 401);

    let dir = TempDir::new("backup");
    let file = dir.path().join("jobx-backup.redb");
    // A token the daemon does not know: refused, and nothing is left behind.
    let out = backup(&d, &file, &[("JOBX_TOKEN", "not-a-known-token")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);

    let out = backup(&d, &file, &[]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("written to") && said.contains("2 tasks"),
        "{said}"
    );
    assert_eq!(running.get()["status"], "running", "the task ran on");
    let meta = std::fs::metadata(&file).expect("backup file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // No snapshot file stays in the data dir.
    let leftovers: Vec<_> = std::fs::read_dir(d.data_dir())
        .expect("ls data")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("backup"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Restore into a new daemon: the backup becomes its store file.
    let mut r = Daemon::start("");
    r.term();
    std::fs::copy(&file, r.data_dir().join("jobx.redb")).expect("restore");
    r.restart();
    let rp = r.project(10);
    assert_eq!(r.data("/group/10"), d.data("/group/10"));
    assert_eq!(r.data("/node/10"), d.data("/node/10"));
    let uuids = |x: &Daemon| {
        let mut v: Vec<String> = x
            .data("/task/10")
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t["uuid"].as_str().map(String::from))
            .collect();
        v.sort();
        v
    };
    assert_eq!(uuids(&r), uuids(&d));
    assert_eq!(rp.task(&done).get()["status"], "success");
    assert_eq!(
        rp.task(&done).get()["finishtime"],
        p.task(&done).get()["finishtime"]
    );
    assert!(rp.log_text(&done).contains("finished-output"));
    assert!(rp.log_text(&running.uuid).contains("running-output"));
    assert_eq!(rp.task(&running.uuid).subtasks().len(), 1);
}
