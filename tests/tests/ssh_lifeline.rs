//! The ssh step's lifeline on the node, through the real daemon against a
//! real OpenSSH server on a loopback address (the server runs on this
//! machine, so the node's process table is this machine's): a step that is
//! stopped, that times out, or whose connection drops leaves neither its
//! process group nor its script file on the node.

use jobx_tests::daemon::*;
use jobx_tests::flow::{marker, processes_matching};
use jobx_tests::procs::{argv, live_where, pids};
use jobx_tests::project::TaskRef;
use jobx_tests::sshd::SshdFleet;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A step that says who it is — its pid, which is its process group (the
/// step leads one), and its script file — then leaves a child in its group
/// and sleeps; both carry the marker given as `$1`.
const STEP: &str = "echo \"pid=$$ file=$0\"\n\
                    (exec -a \"$1-child\" sleep 300) &\n\
                    exec -a \"$1\" sleep 301\n";

fn daemon_for(fleet: &SshdFleet) -> Daemon {
    let d = Daemon::start(&format!(
        "[plugins.ssh]\nidentity_file = {:?}\nuser = {:?}\nconnect_timeout = 5\n",
        fleet.identity_file().display().to_string(),
        fleet.user()
    ));
    let s = fleet.server(0);
    d.ok_post(
        "/node/10",
        json!({"nodes": [{"name": "n1", "host": s.host(), "port": s.port()}]}),
    );
    d.project(10).group("one", "list", "n1");
    d
}

/// Live processes of process group `pgid` on this machine.
fn group_members(pgid: i32) -> Vec<i32> {
    live_where(|s| s.pgid == pgid)
}

/// Waits until the step has started on the node: answers its process group
/// (two live members: the step and its child) and its script file.
fn started(task: &TaskRef, mark: &str) -> (i32, PathBuf) {
    let line = wait_for("the step's pid line", T, || {
        task.log_text()
            .lines()
            .find_map(|l| l.strip_prefix("[n1] pid=").map(String::from))
    });
    let (pid, file) = line.split_once(" file=").expect("pid and file");
    let pgid: i32 = pid.parse().expect("pid");
    wait_for("the step and its child", T, || {
        (processes_matching(mark).len() == 2 && group_members(pgid).len() == 2).then_some(())
    });
    (pgid, PathBuf::from(file))
}

/// The step's group and script file are gone from the node.
fn gone(pgid: i32, file: &Path, mark: &str) {
    wait_for(
        "the step's process group gone from the node",
        Duration::from_secs(15),
        || group_members(pgid).is_empty().then_some(()),
    );
    assert!(
        processes_matching(mark).is_empty(),
        "{:?}",
        processes_matching(mark)
    );
    wait_for(
        "the step's script file removed",
        Duration::from_secs(5),
        || (!file.exists()).then_some(()),
    );
}

/// The pid of the master connection to the fleet's first server.
fn master_pid(fleet: &SshdFleet) -> i32 {
    let port = format!(" -p {} ", fleet.server(0).port());
    let masters: Vec<i32> = processes_matching("ControlMaster=yes")
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(&port))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(masters.len(), 1, "{masters:?}");
    masters[0]
}

/// Local `ssh` clients (argv[0] is `ssh`) whose arguments include `word`.
fn ssh_clients_with(word: &str) -> Vec<String> {
    pids()
        .into_iter()
        .map(argv)
        .filter(|argv| argv.first().map(String::as_str) == Some("ssh"))
        .filter(|argv| argv.iter().any(|a| a.contains(word)))
        .map(|argv| argv.join(" "))
        .collect()
}

/// Signals the master connection to the fleet's first server.
fn signal_master(fleet: &SshdFleet, signal: i32) {
    let master = master_pid(fleet);
    // SAFETY: kill(2) on the master ssh process this test's daemon started.
    unsafe { libc::kill(master, signal) };
}

/// Runs `STEP` on n1 with `timeout` seconds and waits until it started:
/// the task, the step's marker, process group and script file.
fn run_step<'d>(d: &'d Daemon, tag: &str, timeout: u64) -> (TaskRef<'d>, String, i32, PathBuf) {
    let p = d.project(10);
    p.job(
        tag,
        json!([{"plugin": "ssh", "script": STEP, "args": "${mark}", "timeout": timeout}]),
    );
    let mark = marker(tag);
    let task = p.run(tag, "one", json!({"mark": mark}));
    let (pgid, file) = started(&task, &mark);
    (task, mark, pgid, file)
}

#[test]
fn a_stopped_step_leaves_no_process_group_and_no_script_file_on_the_node() {
    let fleet = SshdFleet::start(1).expect("sshd fleet (tests/run.sh installs openssh-server)");
    let d = daemon_for(&fleet);
    let (task, mark, pgid, file) = run_step(&d, "lifeline-stop", 600);
    // The script file is private to the login user while the step runs.
    let mode = std::fs::metadata(&file)
        .expect("script file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    // The session goes through the master's control socket: no local ssh
    // client runs for the step (only the master, which runs no command).
    let data_dir = d.data_dir().display().to_string();
    assert!(
        !ssh_clients_with(&data_dir).is_empty(),
        "the node's master runs"
    );
    assert_eq!(
        ssh_clients_with("exec /bin/sh -s"),
        Vec::<String>::new(),
        "an ssh client per step"
    );
    task.stop();
    let t = task.wait_finished_within(Duration::from_secs(15));
    assert_eq!(t["status"], "fail", "{t}");
    assert!(
        task.log_text().contains("[n1] failed: cancelled"),
        "{}",
        task.log_text()
    );
    gone(pgid, &file, &mark);
}

#[test]
fn a_step_that_times_out_leaves_no_process_group_and_no_script_file_on_the_node() {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let d = daemon_for(&fleet);
    let (task, mark, pgid, file) = run_step(&d, "lifeline-timeout", 3);
    let subs = task.wait_confirm(0);
    assert_eq!(subs[0]["status"], "fail", "{subs:?}");
    assert!(
        task.log_text().contains("[n1] failed: timeout after 3 s"),
        "{}",
        task.log_text()
    );
    gone(pgid, &file, &mark);
}

#[test]
fn a_dropped_connection_kills_the_step_on_the_node() {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let d = daemon_for(&fleet);
    let (task, mark, pgid, file) = run_step(&d, "lifeline-drop", 600);
    // The node's master connection, killed as a network failure would end
    // it: sshd ends the session and the step's stdin reaches EOF.
    signal_master(&fleet, libc::SIGKILL);
    gone(pgid, &file, &mark);
    let subs = task.wait_confirm(0);
    assert_eq!(subs[0]["status"], "fail", "{subs:?}");
    assert!(
        !task.log_text().contains("[n1] exit code 0"),
        "{}",
        task.log_text()
    );
    assert!(
        task.log_text().contains("[n1] failed: connection lost: "),
        "{}",
        task.log_text()
    );
}

#[test]
fn a_stop_ends_a_step_whose_master_no_longer_answers() {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let d = daemon_for(&fleet);
    let p = d.project(10);
    p.job("hello", json!([{"plugin": "ssh", "script": "echo hi"}]));
    p.run("hello", "one", json!({})).wait_success();
    // The master stays up between tasks; frozen, it accepts on its control
    // socket and never answers.
    signal_master(&fleet, libc::SIGSTOP);
    let task = p.run("hello", "one", json!({}));
    wait_for("the batch running", T, || {
        (task.subtasks().first().map(|s| s["status"] == "running") == Some(true)).then_some(())
    });
    task.stop();
    let t = task.wait_finished_within(Duration::from_secs(15));
    // Lets the master end normally with the test.
    signal_master(&fleet, libc::SIGCONT);
    assert_eq!(t["status"], "fail", "{t}");
    assert!(
        task.log_text().contains("[n1] failed: cancelled"),
        "{}",
        task.log_text()
    );
}
