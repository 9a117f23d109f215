//! Starting a step's process: the interpreter itself, exec'd with argv (no
//! shell in between), as the leader of its own process group, stdin
//! `/dev/null`, stdout and stderr piped to the event loop.
//!
//! Nothing runs in the child between fork and exec, so the standard
//! library spawns with `posix_spawn` (a vfork): the cost does not grow with
//! the daemon's memory. (A `pre_exec` hook, e.g. for `PR_SET_PDEATHSIG`,
//! would force a full fork, measured at over 1 ms of daemon CPU per step.)
//! The lifeline is the reaper's (see `reaper`), told before the spawn.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use jobx_plugin_api::StepResult;

/// What to run for one step.
pub struct Spec {
    /// The interpreter, as an absolute path.
    pub program: PathBuf,
    /// Arguments after the program (the script file, then the step's args).
    pub args: Vec<String>,
    /// Environment additions.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// 0 = no limit.
    pub timeout_secs: u64,
}

/// A step that could not be started: what to report, and a line for its
/// stderr where a shell would have printed one.
pub struct NotStarted {
    pub stderr: Option<String>,
    pub result: StepResult,
}

/// Spawns the step.
pub fn spawn(spec: &Spec) -> Result<Child, NotStarted> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd.spawn().map_err(|e| not_started(spec, &e))
}

/// What a failed spawn means to the user: a missing or non-executable
/// interpreter exits 127 or 126 with a line on stderr, as a shell would
/// run it; anything else fails the step naming the cause.
fn not_started(spec: &Spec, e: &io::Error) -> NotStarted {
    let program = spec.program.display();
    let code = match e.kind() {
        io::ErrorKind::NotFound if !spec.program.exists() => Some(127),
        io::ErrorKind::PermissionDenied if spec.program.is_file() => Some(126),
        _ => None,
    };
    match code {
        Some(code) => NotStarted {
            stderr: Some(format!("cannot run {program}: {e}")),
            result: StepResult::exited(code),
        },
        None => NotStarted {
            stderr: None,
            result: StepResult::failed(format!("cannot start {program}: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str) -> Spec {
        Spec {
            program: PathBuf::from(program),
            args: Vec::new(),
            env: Vec::new(),
            cwd: std::env::temp_dir(),
            timeout_secs: 0,
        }
    }

    #[test]
    fn a_missing_interpreter_is_127_like_a_shell() {
        let e = io::Error::from(io::ErrorKind::NotFound);
        let n = not_started(&spec("/nonexistent/interp"), &e);
        assert_eq!(n.result, StepResult::exited(127));
        assert!(n.stderr.is_some_and(|l| l.contains("/nonexistent/interp")));
    }

    #[test]
    fn other_failures_name_the_cause() {
        let e = io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        );
        let n = not_started(&spec("/bin/sh"), &e);
        assert!(n.stderr.is_none());
        let err = n.result.error.unwrap_or_default();
        assert!(err.contains("/bin/sh") && err.contains("nul byte"), "{err}");
    }
}
