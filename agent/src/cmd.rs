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

use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jobx_plugin_api::Stream;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use crate::lines::LineSplitter;
use crate::output::Output;
use crate::state::{Control, Stop};

/// The watchdog, run as
/// `sh -c WATCHDOG jobx-watchdog <script file> <program> <args…>`: fixed
/// text, step data only ever reaches it as arguments.
///
/// * fd 0 is the lifeline; it is moved to fd 3 and stdin becomes /dev/null.
/// * A background subshell blocks reading the lifeline; EOF (the agent is
///   gone) makes it remove the script file and `kill -9 0`: the whole group.
///   It ignores SIGTERM so it survives the group SIGTERM of a stop.
/// * The step runs in the background without fd 3; the watchdog traps
///   SIGTERM to keep waiting through the grace period and exits with the
///   step's status.
const WATCHDOG: &str = r#"f=$1; shift
exec 3<&0 0</dev/null
{ trap '' TERM; read -r _ <&3; rm -f -- "$f"; kill -9 0; } &
w=$!
exec 3<&-
trap : TERM
"$@" &
c=$!
while :; do
  wait "$c"; s=$?
  kill -0 "$c" 2>/dev/null || break
done
kill -9 "$w" 2>/dev/null
exit "$s"
"#;

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

/// Interpreters looked up in `PATH`.
const INTERPRETERS: &[&str] = &["bash", "sh", "python3", "perl"];

fn resolve_interpreter(name: &str) -> Result<PathBuf, String> {
    let path = Path::new(name);
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    if !INTERPRETERS.contains(&name) {
        return Err(format!(
            "unsupported interpreter {name:?}: use bash, sh, python3, perl or an absolute path"
        ));
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| format!("interpreter {name} not found in PATH"))
}

/// A script in a private temporary file, removed when dropped.
struct ScriptFile(PathBuf);

impl ScriptFile {
    fn create(dir: &Path, tag: &str, script: &str) -> io::Result<ScriptFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(40)
            .collect();
        let path = dir.join(format!(
            "jobx-agent-{tag}-{}.script",
            crate::state::random_id()
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let guard = ScriptFile(path);
        file.write_all(script.as_bytes())?;
        Ok(guard)
    }
}

impl Drop for ScriptFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
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
        .arg(&script.0)
        .arg(&program)
        .arg(&script.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters() {
        assert!(resolve_interpreter("sh").unwrap().is_absolute());
        assert!(resolve_interpreter("ruby").is_err());
        assert_eq!(
            resolve_interpreter("/opt/x").unwrap(),
            PathBuf::from("/opt/x")
        );
    }
}
