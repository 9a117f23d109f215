//! The lifeline: what a step starts never outlives jobxd, even when jobxd
//! is killed with SIGKILL and no cleanup code of ours runs.
//!
//! The pattern: every step process gets, as its stdin, the read end of a
//! pipe whose only writer is jobxd (std opens pipes close-on-exec, so no
//! other child inherits the writer). The kernel closes the writer when
//! jobxd exits for any reason. A tiny fixed watchdog script, leading the
//! step's own process group, keeps the read end in a background subshell
//! that blocks reading it; end of file means "jobxd is gone" and it kills
//! the whole group (`kill -9 0`), including anything the step started.
//!
//! The same pipe also ends a run cleanly: once the step has exited, the
//! worker drops its end, and whatever the step left running in its group
//! dies with the watchdog subshell. A step leaves nothing behind.
//!
//! Why not `PR_SET_PDEATHSIG`: it fires when the *thread* that spawned the
//! child exits (not the process), needs `unsafe` `pre_exec`, and reaches
//! only the direct child, not its children. A pipe also works across ssh:
//! a remote watchdog reading the session's stdin sees EOF when the session
//! dies. Nothing here depends on polling or timers.

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};

use rustix::process::{Pid, Signal};

/// The watchdog, run as `sh -c WATCHDOG jobx-echo-watchdog <program> <args…>`.
/// A fixed text: step data only ever reaches it as arguments, never as
/// shell code.
///
/// 1. fd 0 (the lifeline) moves to fd 3; the step's stdin is /dev/null.
/// 2. A background subshell, with its output detached from the step's
///    pipes, blocks on the lifeline; at EOF it kills the whole group.
/// 3. The watchdog closes fd 3 and becomes the step (`exec`): the step's
///    pid is the group id, and the step cannot hold the lifeline.
pub const WATCHDOG: &str = r#"exec 3<&0 0</dev/null
{ read -r _ <&3; kill -9 0; } >/dev/null 2>&1 &
exec 3<&-
exec "$@"
"#;

/// A command that runs `program` (add arguments, environment and working
/// directory to it) under the watchdog, in a new process group, with the
/// lifeline on stdin and piped output.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(WATCHDOG)
        .arg("jobx-echo-watchdog")
        .arg(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd
}

/// A step process started by [`command`].
pub struct Guarded {
    /// The step (after the watchdog's `exec`).
    pub child: Child,
    /// Its process group: the step's pid.
    pub pgid: Pid,
    /// Our end of the lifeline. Dropping it kills the group.
    pub lifeline: Option<ChildStdin>,
    /// The step's standard output, until taken.
    pub stdout: Option<ChildStdout>,
    /// The step's standard error, until taken.
    pub stderr: Option<ChildStderr>,
}

impl Guarded {
    /// Spawns a command made by [`command`].
    pub fn spawn(mut cmd: Command) -> io::Result<Guarded> {
        let mut child = cmd.spawn()?;
        let missing = || io::Error::other("the command was not made by lifeline::command");
        let lifeline = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let stderr = child.stderr.take().ok_or_else(missing)?;
        let (stdout, stderr) = (Some(stdout), Some(stderr));
        Ok(Guarded {
            pgid: Pid::from_child(&child),
            child,
            lifeline: Some(lifeline),
            stdout,
            stderr,
        })
    }
}

/// Kills a whole process group at once. The caller makes sure the group
/// still exists (its leader is not reaped, or the watchdog subshell still
/// holds the lifeline), so the id cannot have been reused.
pub fn kill_group(pgid: Pid) {
    // ESRCH (nothing left) is expected and harmless.
    let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn closing_the_lifeline_kills_the_group() {
        let mut cmd = command("/bin/sh");
        // The step starts a grandchild and waits: both must die.
        cmd.args(["-c", "sleep 300 & wait"]);
        let mut g = Guarded::spawn(cmd).expect("spawn");
        assert_eq!(g.child.try_wait().expect("try_wait"), None);
        drop(g.lifeline.take());
        let status = g.child.wait().expect("wait");
        assert_eq!(status.signal(), Some(9), "{status:?}");
        // The grandchild is gone too: nothing is left in the group.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while live_members(g.pgid) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the group outlived the lifeline"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Processes in group `pgid` that are still running (not zombies,
    /// which wait for whoever reaps orphans).
    fn live_members(pgid: Pid) -> usize {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                // "pid (comm) state ppid pgrp …"; comm may hold spaces.
                let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
                let f: Vec<&str> = rest.split_whitespace().collect();
                f.len() > 2 && f[0] != "Z" && f[2] == pgid.as_raw_nonzero().to_string()
            })
            .count()
    }

    #[test]
    fn a_step_that_exits_reports_its_status() {
        let mut cmd = command("/bin/sh");
        cmd.args(["-c", "exit 7"]);
        let mut g = Guarded::spawn(cmd).expect("spawn");
        assert_eq!(g.child.wait().expect("wait").code(), Some(7));
    }
}
