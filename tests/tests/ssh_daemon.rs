//! The ssh executor through the real daemon against real OpenSSH servers on
//! loopback addresses (the servers run on this machine, so "no process left
//! on the node" is checked on this machine's process table).

use jobx_tests::daemon::*;
use jobx_tests::flow::{marker, processes_matching};
use jobx_tests::sshd::{SshdFleet, SshdOptions};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A daemon whose ssh plugin uses the fleet's client key.
fn daemon_for(fleet: &SshdFleet) -> Daemon {
    Daemon::start(&format!(
        "[plugins.ssh]\nidentity_file = {:?}\nuser = {:?}\nconnect_timeout = 5\n",
        fleet.identity_file().display().to_string(),
        fleet.user()
    ))
}

/// Registers node `name` at server `i` of the fleet.
fn ssh_nodes(d: &Daemon, fleet: &SshdFleet, names: &[(&str, usize)]) {
    let list: Vec<Value> = names
        .iter()
        .map(|(n, i)| json!({"name": n, "host": fleet.server(*i).host(), "port": fleet.server(*i).port()}))
        .collect();
    d.ok_post("/node/10", json!({ "nodes": list }));
}

#[test]
fn six_nodes_in_three_batches_with_intact_variables() {
    let fleet = SshdFleet::start(6).expect("sshd fleet (tests/run.sh installs openssh-server)");
    let d = daemon_for(&fleet);
    let p = d.project(10);
    let names = ["s1", "s2", "s3", "s4", "s5", "s6"];
    let pairs: Vec<(&str, usize)> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    ssh_nodes(&d, &fleet, &pairs);
    p.group("three", "list", "s1,s2;s3,s4;s5,s6");
    p.job(
        "remote",
        json!([
            {"name": "where", "plugin": "ssh", "script": "echo \"on $JOBX_NODE batch $JOBX_BATCH/$JOBX_BATCHES via $SSH_CONNECTION\""},
            {"name": "vars", "plugin": "ssh", "script": "printf 'v=[%s] a1=[%s]\\n' \"$tricky\" \"$1\"", "args": "${tricky}"}
        ]),
    );
    let tricky = "a b  \"c\" 'd' $HOME `id` \\e; $(echo no) *";
    let task = p.run("remote", "three", json!({"tricky": tricky}));
    let t = task.wait_finished();
    let log = task.log_text();
    assert_eq!(t["status"], "success", "{log}");
    let subs = task.subtasks();
    assert_eq!(
        subs.iter()
            .map(|s| s["nodelist"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["s1,s2", "s3,s4", "s5,s6"]
    );
    for (i, n) in names.iter().enumerate() {
        let b = i / 2 + 1;
        // sshd reports the server address the node was reached at
        let addr = fleet.server(i).host();
        let line = log
            .lines()
            .find(|l| l.starts_with(&format!("[{n}] on {n} batch {b}/3 via")))
            .unwrap_or("");
        assert!(
            line.contains(&format!("{addr} {}", fleet.server(i).port())),
            "{n}: {line}\n{log}"
        );
        assert!(
            log.contains(&format!("[{n}] v=[{tricky}] a1=[{tricky}]")),
            "{n}\n{log}"
        );
    }
}

#[test]
fn scp_of_a_file_and_a_directory() {
    let fleet = SshdFleet::start(1).expect("sshd");
    let d = daemon_for(&fleet);
    let p = d.project(10);
    ssh_nodes(&d, &fleet, &[("s1", 0)]);
    p.group("one", "list", "s1");
    let dir = TempDir::new("scp");
    let src_file = dir.path().join("app.conf");
    std::fs::write(&src_file, "key = value\n").expect("write");
    let src_dir = dir.path().join("site");
    std::fs::create_dir_all(src_dir.join("css")).expect("mkdir");
    std::fs::write(src_dir.join("index.html"), "<h1>hi</h1>").expect("write");
    std::fs::write(src_dir.join("css/a.css"), "body{}").expect("write");
    let dst = dir.path().join("remote");
    std::fs::create_dir_all(dst.join("www")).expect("mkdir");
    std::fs::write(dst.join("www/stale.txt"), "old").expect("write");
    p.job(
        "copy",
        json!([
            {"name": "file", "plugin": "ssh", "kind": "scp", "src": src_file.display().to_string(), "dst": format!("{}/app-${{version}}.conf", dst.display()), "chmod": "0640"},
            {"name": "dir", "plugin": "ssh", "kind": "scp", "src": src_dir.display().to_string(), "dst": format!("{}/www", dst.display()), "delete": true}
        ]),
    );
    let task = p.run("copy", "one", json!({"version": "7"}));
    let t = task.wait_finished();
    assert_eq!(t["status"], "success", "{}", task.log_text());
    let copied = dst.join("app-7.conf");
    assert_eq!(
        std::fs::read_to_string(&copied).expect("copied file"),
        "key = value\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&copied)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    assert_eq!(
        std::fs::read_to_string(dst.join("www/index.html")).expect("dir copy"),
        "<h1>hi</h1>"
    );
    assert_eq!(
        std::fs::read_to_string(dst.join("www/css/a.css")).expect("nested"),
        "body{}"
    );
    assert!(
        !dst.join("www/stale.txt").exists(),
        "delete mirrors the source"
    );
}

#[test]
fn failing_unreachable_and_changed_host_key_nodes() {
    let mut fleet = SshdFleet::start(2).expect("sshd");
    let d = daemon_for(&fleet);
    let p = d.project(10);
    ssh_nodes(&d, &fleet, &[("ok", 0), ("bad", 1)]);
    let (addr, port) = jobx_tests::sshd::unused_endpoint().expect("free port");
    d.ok_post(
        "/node/10",
        json!({"nodes": [{"name": "gone", "host": addr.to_string(), "port": port}]}),
    );
    p.group("both", "list", "ok,bad");
    p.group("gone", "list", "gone,ok");
    p.job(
        "j",
        json!([{"plugin": "ssh", "script": "[ \"$JOBX_NODE\" != bad ] || { echo failing on purpose; exit 4; }; echo fine"}]),
    );
    // a failing node makes its batch wait
    let task = p.run("j", "both", json!({}));
    let subs = task.wait_confirm(0);
    assert!(subs[0]["reason"].as_str().unwrap_or("").contains("bad"));
    let log = task.log_text();
    assert!(
        log.contains("[bad] failing on purpose")
            && log.contains("[bad] exit code 4")
            && log.contains("[ok] fine"),
        "{log}"
    );
    task.stop();
    // nothing listening: fails fast as unreachable, without holding up the other node
    let t0 = std::time::Instant::now();
    let task = p.run("j", "gone", json!({}));
    task.wait_confirm(0);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    let log = task.log_text();
    assert!(log.contains("[gone] failed: unreachable"), "{log}");
    assert!(log.contains("[ok] fine"), "{log}");
    task.stop();
    // a changed host key fails the node with a message that says so
    fleet.regenerate_host_key(0).expect("new host key");
    let task = p.run("j", "both", json!({}));
    task.wait_confirm(0);
    let log = task.log_text();
    let line = log
        .lines()
        .find(|l| l.starts_with("[ok] failed:"))
        .unwrap_or("");
    assert!(line.to_lowercase().contains("host key"), "{log}");
}

#[test]
fn stop_and_daemon_death_leave_no_remote_process() {
    // The steps' script files go to a directory of this test's own.
    let tmp = TempDir::new("ssh-step-files");
    let opts = SshdOptions {
        extra_config: vec![format!("SetEnv TMPDIR={}", tmp.path().display())],
    };
    let fleet = SshdFleet::start_with(2, &opts).expect("sshd");
    let step_files = || -> Vec<String> {
        std::fs::read_dir(tmp.path())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut d = daemon_for(&fleet);
    let p = d.project(10);
    ssh_nodes(&d, &fleet, &[("s1", 0), ("s2", 1)]);
    p.group("g", "list", "s1,s2");
    p.job(
        "sleepy",
        json!([{"plugin": "ssh", "script": "bash -c \"sleep 300; : $1\"", "args": "${mark}", "timeout": 600}]),
    );
    let mark = marker("sshstop");
    let task = p.run("sleepy", "g", json!({"mark": mark}));
    wait_for("remote sleeps", T, || {
        (processes_matching(&mark).len() >= 2).then_some(())
    });
    task.stop();
    assert_eq!(
        task.wait_finished_within(Duration::from_secs(10))["status"],
        "fail"
    );
    wait_for(
        "remote processes gone after stop",
        Duration::from_secs(10),
        || processes_matching(&mark).is_empty().then_some(()),
    );

    let mark = marker("sshkill");
    let uuid = p.run("sleepy", "g", json!({"mark": mark})).uuid;
    wait_for("remote sleeps", T, || {
        (processes_matching(&mark).len() >= 2).then_some(())
    });
    d.kill9();
    wait_for(
        "remote processes gone after jobxd died",
        Duration::from_secs(15),
        || processes_matching(&mark).is_empty().then_some(()),
    );
    d.restart();
    let subs = d.project(10).task(&uuid).wait_confirm(0);
    assert_eq!(subs[0]["reason"], "interrupted by daemon restart");
    // Every session removed its script file. (A session whose login shell
    // is still starting when the daemon dies is remote.rs's unit test
    // `a_session_whose_output_is_gone_creates_no_script_file`.)
    wait_for(
        "no script file left on the nodes",
        Duration::from_secs(10),
        || step_files().is_empty().then_some(()),
    );
}

#[test]
fn thirty_nodes_in_one_batch_against_default_sshds() {
    let fleet = SshdFleet::start(2).expect("sshd");
    let d = daemon_for(&fleet);
    let p = d.project(10);
    let names: Vec<String> = (1..=30).map(|i| format!("m{i:02}")).collect();
    let pairs: Vec<(&str, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i % 2))
        .collect();
    ssh_nodes(&d, &fleet, &pairs);
    p.group("all", "list", &names.join(","));
    p.job(
        "hello",
        json!([{"plugin": "ssh", "script": "echo hello from $JOBX_NODE"}, {"plugin": "ssh", "script": "echo again $JOBX_NODE"}]),
    );
    let task = p.run("hello", "all", json!({}));
    let t = task.wait_finished_within(Duration::from_secs(120));
    let log = task.log_text();
    assert_eq!(t["status"], "success", "{log}");
    for n in &names {
        assert!(log.contains(&format!("[{n}] hello from {n}")), "{n}");
        assert!(log.contains(&format!("[{n}] again {n}")), "{n}");
    }
}
