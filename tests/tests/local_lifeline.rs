//! The local executor's lifeline through the real binary: each step is its
//! interpreter, leading its own process group, with no shell around it; one
//! reaper per daemon kills every live group (orphaned grandchildren too)
//! when the daemon is SIGKILLed, and a lost reaper is replaced.

use jobx_tests::daemon::*;
use jobx_tests::flow::{marker, processes_matching};
use jobx_tests::procs::{cmdline, live_where, stat};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Gone, or a zombie nobody reaped yet: either way it no longer runs.
fn dead(pid: i32) -> bool {
    stat(pid).is_none_or(|s| !s.live())
}

/// Living processes whose parent is `parent`.
fn children(parent: i32) -> Vec<i32> {
    live_where(|s| s.ppid == parent)
}

/// The daemon's reapers (there should be exactly one).
fn reapers(daemon: i32) -> Vec<i32> {
    children(daemon)
        .into_iter()
        .filter(|&pid| cmdline(pid).contains("jobx-local-reaper"))
        .collect()
}

/// A step whose leader waits while it leaves two processes in its group: a
/// background child that ignores TERM and HUP, and an orphan (double fork:
/// its parent exits, so it no longer descends from the step).
const LEAVES_TWO: &str = "(trap '' TERM HUP; exec -a \"$1-bg\" sleep 1000) &
( (exec -a \"$1-orphan\" sleep 1000) & )
echo started
sleep 300
";

#[test]
fn each_step_is_its_interpreter_leading_its_group_and_one_reaper_serves_all() {
    let d = Daemon::start("");
    let p = d.project(10);
    p.nodes(&["n1", "n2", "n3"]);
    p.group("all", "list", "n1,n2,n3");
    let mark = marker("leader");
    p.job(
        "j",
        json!([{"plugin": "local", "script": "sleep 300", "args": "${mark}", "timeout": 600}]),
    );
    let task = p.run("j", "all", json!({"mark": mark}));
    let daemon = d.pid() as i32;
    let leaders = wait_for("three step leaders", T, || {
        let found: Vec<(i32, String)> = processes_matching(&mark)
            .into_iter()
            .filter(|(pid, _)| stat(*pid).is_some_and(|s| s.ppid == daemon))
            .collect();
        (found.len() == 3).then_some(found)
    });
    for (_, cmd) in &leaders {
        // `<interpreter> <script file> <args>`, nothing in between.
        let argv: Vec<&str> = cmd.split(' ').collect();
        assert!(argv[0].ends_with("/bash"), "{cmd}");
        assert!(argv[1].ends_with(".script") && argv[2] == mark, "{cmd}");
    }
    let leaders: Vec<i32> = leaders.into_iter().map(|(pid, _)| pid).collect();
    for &pid in &leaders {
        let s = stat(pid).expect("leader stat");
        assert_eq!(s.ppid, daemon, "the interpreter is the daemon's own child");
        assert_eq!(s.pgid, pid, "the step leads its own process group");
    }
    let kids = children(daemon);
    assert!(
        kids.iter()
            .all(|&pid| !cmdline(pid).contains("jobx-watchdog")),
        "no watchdog shell: {:?}",
        kids.iter().map(|&p| cmdline(p)).collect::<Vec<_>>()
    );
    assert_eq!(reapers(daemon).len(), 1, "one reaper for all steps");
    task.stop();
    let t = task.wait_finished();
    assert_eq!(t["status"], "fail");
    wait_for("stopped leaders to die", T, || {
        leaders.iter().all(|&pid| dead(pid)).then_some(())
    });
    // The reaper outlives the steps; it ends with the daemon.
    assert_eq!(reapers(daemon).len(), 1);
}

#[test]
fn sigkill_of_the_daemon_kills_orphaned_and_background_grandchildren() {
    let mut d = Daemon::start("");
    let p = d.project(10);
    p.nodes(&["n1", "n2"]);
    p.group("both", "list", "n1,n2");
    let mark = marker("orphan");
    p.job(
        "j",
        json!([{"plugin": "local", "script": LEAVES_TWO, "args": "${mark}", "timeout": 600}]),
    );
    let _task = p.run("j", "both", json!({"mark": mark}));
    let daemon = d.pid() as i32;
    let orphan = format!("{mark}-orphan");
    let bg = format!("{mark}-bg");
    let found = wait_for("both nodes' grandchildren", T, || {
        let procs = processes_matching(&mark);
        let orphans = procs.iter().filter(|(_, c)| c.contains(&orphan)).count();
        let bg = procs.iter().filter(|(_, c)| c.contains(&bg)).count();
        (orphans == 2 && bg == 2).then_some(procs)
    });
    // The orphans no longer descend from the step: only a kill of the
    // whole group reaches them.
    for (pid, cmd) in &found {
        if cmd.contains(&orphan) {
            let ppid = stat(*pid).expect("orphan stat").ppid;
            assert_ne!(ppid, daemon);
            assert!(
                !found.iter().any(|(p, c)| *p == ppid && c.contains(&mark)),
                "the orphan's parent is not part of the step: {cmd}"
            );
        }
    }
    let reaper = reapers(daemon);
    assert_eq!(reaper.len(), 1);
    d.kill9();
    wait_for("every step process to die", Duration::from_secs(10), || {
        processes_matching(&mark).is_empty().then_some(())
    });
    wait_for("the reaper to finish", Duration::from_secs(10), || {
        dead(reaper[0]).then_some(())
    });
}

#[test]
fn a_lost_reaper_is_replaced_and_still_guards_the_steps() {
    let mut d = Daemon::start("");
    let p = d.project(10);
    p.nodes(&["n1"]);
    p.group("one", "list", "n1");
    let daemon = d.pid() as i32;
    let first = wait_for("the reaper", T, || reapers(daemon).first().copied());
    // SIGKILL: the reaper dies without running its own end.
    unsafe {
        // SAFETY: kill(2) on a pid of our own test's daemon's child.
        libc::kill(first, libc::SIGKILL);
    }
    let second = wait_for("a new reaper", T, || {
        reapers(daemon).into_iter().find(|&pid| pid != first)
    });
    assert_eq!(reapers(daemon), vec![second]);
    let mark = marker("replaced");
    p.job(
        "j",
        json!([{"plugin": "local", "script": LEAVES_TWO, "args": "${mark}", "timeout": 600}]),
    );
    let _task = p.run("j", "one", json!({"mark": mark}));
    wait_for("the step's grandchildren", T, || {
        let orphan = format!("{mark}-orphan");
        processes_matching(&mark)
            .iter()
            .any(|(_, c)| c.contains(&orphan))
            .then_some(())
    });
    d.kill9();
    wait_for("every step process to die", Duration::from_secs(10), || {
        processes_matching(&mark).is_empty().then_some(())
    });
}
