//! Running a `cmd` step: the same contract as jobx's `local` executor.
//!
//! The script is written to a private temporary file and run as
//! `<interpreter> <file> <args…>` with the agent's environment plus the
//! step's, in the agent's working directory, as its own process group led
//! by a watchdog. The watchdog holds a pipe ("lifeline") whose only writer
//! is the agent: if the agent dies, even by SIGKILL, the watchdog kills the
//! whole group. Timeout and stop send SIGTERM to the group, then SIGKILL
//! after the grace period; whatever the step leaves in its group is killed
//! when it exits.

use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jobx_plugin_api::Stream;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use crate::output::Output;
use crate::state::{Control, Stop};
use jobx_step::lines::LineSplitter;
use jobx_step::{resolve_interpreter, ScriptFile, WATCHDOG};

/// How often the step's state is looked at.
const TICK: Duration = Duration::from_millis(50);
/// How long output may still arrive after the step exited.
const DRAIN: Duration = Duration::from_secs(2);

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Failed(String),
    /// Stopped because the daemon no longer wants it: nothing to report.
    Dropped,
}

/// The result of a stop request.
pub fn stopped(why: Stop) -> Outcome {
    match why {
        Stop::Cancel => Outcome::Failed("cancelled".to_string()),
        Stop::Shutdown => Outcome::Failed("the agent was stopped".to_string()),
        Stop::Stale | Stop::Orphan => Outcome::Dropped,
    }
}

/// What to run.
pub struct Spec<'a> {
    pub tag: &'a str,
    pub script: &'a str,
    pub interpreter: &'a str,
    pub args: &'a [String],
    pub env: &'a std::collections::BTreeMap<String, String>,
    pub workdir: &'a Path,
    pub timeout_secs: u64,
    pub kill_grace: Duration,
}

fn reader(
    mut src: impl Read + Send + 'static,
    stream: Stream,
    out: Output,
    done: mpsc::Sender<()>,
) {
    let _ = std::thread::Builder::new()
        .name("jobx-agent-read".to_string())
        .spawn(move || {
            let mut split = LineSplitter::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => split.push(&buf[..n], |l| out.line(stream, l)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            split.finish(|l| out.line(stream, l));
            let _ = done.send(());
        });
}

/// Runs a script to its end, a timeout or a stop.
pub fn run(spec: &Spec, out: &Output, control: &Control) -> Outcome {
    let program = match resolve_interpreter(spec.interpreter) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(e),
    };
    let script = match ScriptFile::create(&std::env::temp_dir(), spec.tag, spec.script) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("cannot write the script: {e}")),
    };
    let mut child = match Command::new("/bin/sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("jobx-watchdog")
        .arg(script.path())
        .arg(&program)
        .arg(script.path())
        .args(spec.args)
        .envs(spec.env)
        .current_dir(spec.workdir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("cannot start {}: {e}", program.display())),
    };
    let pgid = Pid::from_child(&child);
    let lifeline = child.stdin.take();
    let (done_tx, done_rx) = mpsc::channel();
    let mut readers = 0;
    if let Some(s) = child.stdout.take() {
        reader(s, Stream::Stdout, out.clone(), done_tx.clone());
        readers += 1;
    }
    if let Some(s) = child.stderr.take() {
        reader(s, Stream::Stderr, out.clone(), done_tx.clone());
        readers += 1;
    }
    drop(done_tx);

    let group = |sig| {
        // ESRCH (nothing left in the group) is expected and harmless.
        let _ = rustix::process::kill_process_group(pgid, sig);
    };
    let deadline =
        (spec.timeout_secs > 0).then(|| Instant::now() + Duration::from_secs(spec.timeout_secs));
    let mut ending: Option<Outcome> = None;
    let mut kill_at: Option<Instant> = None;
    loop {
        // Look without reaping, so the group id cannot be reused before
        // the group is killed.
        let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        match rustix::process::waitid(WaitId::Pid(pgid), opts) {
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Ok(Some(_)) | Err(_) => break,
        }
        let now = Instant::now();
        if ending.is_none() {
            if let Some(why) = control.stopped() {
                let msg = match why {
                    Stop::Cancel => "cancelled: terminating the step",
                    Stop::Stale => "the daemon no longer knows this step: terminating it",
                    Stop::Orphan => "the daemon cannot be reached: terminating the step",
                    Stop::Shutdown => "the agent is stopping: terminating the step",
                };
                out.info(msg);
                ending = Some(stopped(why));
            } else if deadline.is_some_and(|d| now >= d) {
                out.info(format!(
                    "timeout after {} s: terminating the step",
                    spec.timeout_secs
                ));
                ending = Some(Outcome::Failed(format!(
                    "timeout after {} s",
                    spec.timeout_secs
                )));
            }
            if ending.is_some() {
                group(Signal::TERM);
                kill_at = Some(now + spec.kill_grace);
            }
        }
        if kill_at.is_some_and(|k| now >= k) {
            group(Signal::KILL);
            kill_at = None;
        }
        std::thread::sleep(TICK);
    }
    // Processes the step left behind in its group end with it.
    group(Signal::KILL);
    let status = child.wait();
    drop(lifeline);
    let drain_end = Instant::now() + DRAIN;
    for _ in 0..readers {
        let left = drain_end.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    if let Some(e) = ending {
        return e;
    }
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => Outcome::Exited(code),
            (None, Some(sig)) => Outcome::Failed(format!("killed by signal {sig}")),
            _ => Outcome::Failed("unknown exit status".to_string()),
        },
        Err(e) => Outcome::Failed(format!("the exit status of the step was lost: {e}")),
    }
}
