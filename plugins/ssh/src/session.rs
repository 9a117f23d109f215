//! Runs one remote session (over the node's master, see `mux.rs`) or one
//! local process (rsync or scp): feeds its stdin, streams its output line
//! by line, and stops it when the run is stopped.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use async_process::{Child, Command};
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use jobx_plugin_api::{Reporter, Stream};

use crate::remote::{KILL_GRACE_SECS, STARTED};
use crate::runtime::{Runtime, Stop, StopReason};

/// Lines longer than this are split (as the local executor does).
pub const MAX_LINE: usize = 32 * 1024;

/// stderr lines held back until the remote command is known to have started.
const MAX_HELD_LINES: usize = 200;

/// How a process is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A step's remote command: output goes to the step, stdin stays open
    /// until the run ends (the remote step's lifeline), a stop closes
    /// stdin and gives the remote side time to kill the step.
    Step,
    /// A helper command: stdout is captured, stderr goes to the step, stdin
    /// is closed after the input, a stop kills the local process.
    Helper,
    /// A copy program (rsync, scp) in its own process group: output goes to
    /// the step; a stop kills the group.
    Copy,
}

/// What runs.
pub enum Launch {
    /// `command` in a session over the master at `ctl`.
    Session { ctl: PathBuf, command: String },
    /// A local process (stdio is set by `run`).
    Process(Command),
}

/// The running session or process.
enum Running {
    /// `None` once dropped to stop it: the master then closes the channel.
    Session(Option<crate::mux::Session>),
    Process(Child),
}

type Input = Box<dyn AsyncWrite + Unpin + Send>;
type Output = Box<dyn AsyncRead + Unpin + Send>;

impl Running {
    async fn start(launch: Launch) -> std::io::Result<(Running, Input, Output, Output)> {
        match launch {
            Launch::Session { ctl, command } => {
                let mut s = crate::mux::Session::open(&ctl, &command).await?;
                let (Some(i), Some(o), Some(e)) =
                    (s.stdin.take(), s.stdout.take(), s.stderr.take())
                else {
                    return Err(std::io::Error::other("session has no pipes"));
                };
                Ok((
                    Running::Session(Some(s)),
                    Box::new(i),
                    Box::new(o),
                    Box::new(e),
                ))
            }
            Launch::Process(mut cmd) => {
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true);
                let mut child = cmd.spawn()?;
                let (Some(i), Some(o), Some(e)) =
                    (child.stdin.take(), child.stdout.take(), child.stderr.take())
                else {
                    return Err(std::io::Error::other("the process has no pipes"));
                };
                Ok((
                    Running::Process(child),
                    Box::new(i),
                    Box::new(o),
                    Box::new(e),
                ))
            }
        }
    }

    fn kill(&mut self, group: bool) {
        match self {
            Running::Session(s) => *s = None,
            Running::Process(child) => kill(child, group),
        }
    }

    /// The exit code; `None` when killed (a process by a signal, a session
    /// by `kill`). A session that ended without a status is 255, as `ssh`
    /// reports it, and says why.
    async fn code(&mut self) -> std::io::Result<(Option<i32>, Option<String>)> {
        match self {
            Running::Session(Some(s)) => Ok(match s.exit_code().await {
                Some(code) => (Some(code), None),
                None => (Some(255), Some(NO_STATUS.to_string())),
            }),
            Running::Session(None) => Ok((None, None)),
            Running::Process(child) => Ok((child.status().await?.code(), None)),
        }
    }
}

/// How long the master may take to open a session (it answers at once
/// unless it is stuck: the network round trip of the channel open).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a session ended without an exit status: the master closed it
/// (its connection dropped) or the remote shell was killed by a signal.
const NO_STATUS: &str =
    "the session ended without an exit status (the connection dropped, or the remote shell was killed)";

/// How a process ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Whether the remote wrapper said it started the step ([`Mode::Step`]).
    pub started: bool,
    /// stderr received before the start line and not passed on (ssh's own
    /// messages when the connection failed).
    pub held_stderr: String,
    /// The last stderr line.
    pub last_stderr: String,
    /// Captured stdout lines ([`Mode::Helper`]).
    pub stdout: Vec<String>,
    /// Set when the run was stopped while the process ran.
    pub stopped: Option<StopReason>,
    /// Set when a session that had started ended without an exit status.
    pub lost: Option<String>,
}

struct Shared<'a> {
    out: &'a Reporter,
    mode: Mode,
    started: bool,
    held: Vec<Vec<u8>>,
    last_stderr: Vec<u8>,
    stdout: Vec<String>,
}

impl Shared<'_> {
    fn on_stdout(&mut self, line: &[u8]) {
        match self.mode {
            Mode::Helper => self.stdout.push(String::from_utf8_lossy(line).into_owned()),
            Mode::Step if !self.started && line == STARTED.as_bytes() => {
                self.started = true;
                for held in std::mem::take(&mut self.held) {
                    self.out.line(Stream::Stderr, &held);
                }
            }
            _ => self.out.line(Stream::Stdout, line),
        }
    }

    fn on_stderr(&mut self, line: &[u8]) {
        self.last_stderr = line.to_vec();
        if self.mode == Mode::Step && !self.started && self.held.len() < MAX_HELD_LINES {
            self.held.push(line.to_vec());
        } else {
            self.out.line(Stream::Stderr, line);
        }
    }
}

/// Reads `r` to its end, calling `f` with each line (without `\n`; long
/// lines split at [`MAX_LINE`]).
async fn read_lines(mut r: impl AsyncRead + Unpin, mut f: impl FnMut(&[u8])) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            if pos == 0 {
                f(&[]);
            }
            for piece in buf[start..start + pos].chunks(MAX_LINE) {
                f(piece);
            }
            start += pos + 1;
        }
        while buf.len() - start >= MAX_LINE {
            f(&buf[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        buf.drain(..start);
    }
    if !buf.is_empty() {
        f(&buf);
    }
}

/// Starts `launch` and runs it to its end or until `stop`. A session the
/// master cannot open ends as `ssh` would: exit 255 before the start,
/// with the reason as its stderr. A process that cannot start is an error.
pub async fn run(
    rt: &Runtime,
    launch: Launch,
    input: Vec<u8>,
    mode: Mode,
    stop: &Stop,
    out: &Reporter,
) -> std::io::Result<Outcome> {
    let is_session = matches!(launch, Launch::Session { .. });
    // A master that accepts but never answers must not hold the step past
    // a stop, nor forever.
    let opening = future::or(Running::start(launch), async {
        async_io::Timer::after(OPEN_TIMEOUT).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the master did not open the session within {} s",
                OPEN_TIMEOUT.as_secs()
            ),
        ))
    });
    let started = match stop.guard(opening).await {
        Ok(r) => r,
        Err(reason) => {
            return Ok(Outcome {
                stopped: Some(reason),
                ..Outcome::default()
            })
        }
    };
    let (mut child, mut stdin, stdout, stderr) = match started {
        Ok(r) => r,
        Err(e) if is_session => {
            return Ok(Outcome {
                code: Some(255),
                held_stderr: e.to_string(),
                last_stderr: e.to_string(),
                ..Outcome::default()
            })
        }
        Err(e) => return Err(e),
    };

    // The writer owns stdin. For a step it then waits on `close` and so
    // holds stdin open until the run drops or closes `close_tx`.
    let (close_tx, close_rx) = async_channel::bounded::<()>(1);
    let keep_open = mode == Mode::Step;
    rt.spawn(async move {
        // A write error means the remote side is gone; its exit tells why.
        let _ = stdin.write_all(&input).await;
        let _ = stdin.flush().await;
        if keep_open {
            let _ = close_rx.recv().await;
        }
        drop(stdin);
    });

    // A mutex only to keep the future Send; the pumps never contend.
    let shared = Mutex::new(Shared {
        out,
        mode,
        started: false,
        held: Vec::new(),
        last_stderr: Vec::new(),
        stdout: Vec::new(),
    });
    // The pumps borrow `shared`; they live in this block only.
    let stopped = {
        let pumps = future::zip(
            read_lines(stdout, |l| lock(&shared).on_stdout(l)),
            read_lines(stderr, |l| lock(&shared).on_stderr(l)),
        );
        futures_lite::pin!(pumps);

        let stopped = future::or(
            async {
                pumps.as_mut().await;
                None
            },
            async { Some(stop.wait().await) },
        )
        .await;
        if let Some(reason) = stopped {
            match mode {
                Mode::Step => {
                    out.info(format!("{}: stopping the remote step", reason.message()));
                    // EOF on the channel: the remote lifeline kills the step's
                    // process group (SIGTERM, SIGKILL after the grace period).
                    close_tx.close();
                    let limit = Duration::from_secs(KILL_GRACE_SECS + 5);
                    let ended = future::or(
                        async {
                            pumps.as_mut().await;
                            true
                        },
                        async {
                            async_io::Timer::after(limit).await;
                            false
                        },
                    )
                    .await;
                    if !ended {
                        out.info(
                            "the node did not confirm the stop in time; closing the connection",
                        );
                        child.kill(false);
                        drain(pumps.as_mut()).await;
                    }
                }
                Mode::Helper => {
                    child.kill(false);
                    drain(pumps.as_mut()).await;
                }
                Mode::Copy => {
                    child.kill(true);
                    drain(pumps.as_mut()).await;
                }
            }
        }
        stopped
    };
    let (code, lost) = child.code().await?;
    drop(close_tx);

    let shared = shared.into_inner().unwrap_or_else(|e| e.into_inner());
    let held_stderr = shared
        .held
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    // Held lines were not ssh's own failure: they belong to the step.
    let connect_failure = mode == Mode::Step && code == Some(255) && !shared.started;
    if !connect_failure {
        for line in &shared.held {
            out.line(Stream::Stderr, line);
        }
    }
    // Before the start, the reason is the connection failure's message.
    let held_stderr = match &lost {
        Some(why) if !shared.started && held_stderr.trim().is_empty() => why.clone(),
        _ => held_stderr,
    };
    Ok(Outcome {
        code,
        started: shared.started,
        held_stderr,
        last_stderr: String::from_utf8_lossy(&shared.last_stderr).into_owned(),
        stdout: shared.stdout,
        stopped,
        lost: lost.filter(|_| shared.started),
    })
}

/// Reads what a killed process left in its pipes. Something it started
/// may still hold them open: do not wait for that for long.
async fn drain(pumps: impl std::future::Future<Output = ((), ())>) {
    future::or(pumps, async {
        async_io::Timer::after(Duration::from_secs(3)).await;
        ((), ())
    })
    .await;
}

fn lock<'m, 'a>(m: &'m Mutex<Shared<'a>>) -> std::sync::MutexGuard<'m, Shared<'a>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// SIGKILL to the process, or to its process group when it leads one.
fn kill(child: &mut Child, group: bool) {
    if group {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on the group our own unreaped child leads.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            return;
        }
    }
    let _ = child.kill();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use jobx_plugin_api::{RunSink, StepResult};

    #[derive(Default)]
    struct Sink(Mutex<Vec<(Stream, Vec<u8>)>>);
    impl RunSink for Sink {
        fn line(&self, stream: Stream, text: &[u8]) {
            self.0.lock().unwrap().push((stream, text.to_vec()));
        }
        fn done(&self, _: StepResult) {}
    }

    #[test]
    fn lines_are_split_on_newlines_and_at_the_length_cap() {
        let mut input = b"a\nbb\n\nccc".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 3));
        input.push(b'\n');
        let mut got = Vec::new();
        future::block_on(read_lines(&input[..], |l| got.push(l.to_vec())));
        assert_eq!(got[0], b"a");
        assert_eq!(got[1], b"bb");
        assert_eq!(got[2], b"");
        assert_eq!(got[3].len(), MAX_LINE);
        assert!(got[3].starts_with(b"ccc"));
        assert_eq!(got[4], b"xxxxxx");
        assert_eq!(got.len(), 5);
    }

    fn sh(script: &str) -> Launch {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        Launch::Process(c)
    }

    #[test]
    fn step_mode_hides_the_start_line_and_holds_early_stderr() {
        let rt = Runtime::start(1).unwrap();
        let sink = Arc::new(Sink::default());
        let out = Reporter::from_sink(sink.clone());
        let (_tx, rx) = async_channel::bounded(1);
        let stop = Stop::new(rx, 0);
        let script = format!("echo early >&2; echo {STARTED}; echo out; echo err >&2; exit 4");
        let o = future::block_on(run(&rt, sh(&script), vec![], Mode::Step, &stop, &out)).unwrap();
        assert_eq!(o.code, Some(4));
        assert!(o.started);
        let lines = sink.0.lock().unwrap().clone();
        assert!(lines.contains(&(Stream::Stdout, b"out".to_vec())));
        assert!(lines.contains(&(Stream::Stderr, b"early".to_vec())));
        assert!(!lines.iter().any(|(_, l)| l == STARTED.as_bytes()));
    }

    #[test]
    fn connection_failures_keep_ssh_messages_out_of_the_output() {
        let rt = Runtime::start(1).unwrap();
        let sink = Arc::new(Sink::default());
        let out = Reporter::from_sink(sink.clone());
        let (_tx, rx) = async_channel::bounded(1);
        let stop = Stop::new(rx, 0);
        let o = future::block_on(run(
            &rt,
            sh("echo 'ssh: connect to host x port 1: Connection refused' >&2; exit 255"),
            vec![],
            Mode::Step,
            &stop,
            &out,
        ))
        .unwrap();
        assert_eq!(o.code, Some(255));
        assert!(!o.started);
        assert!(o.held_stderr.contains("Connection refused"));
        assert!(sink.0.lock().unwrap().is_empty());
    }

    #[test]
    fn step_stdin_stays_open_until_stop_and_closing_it_ends_the_step() {
        let rt = Runtime::start(1).unwrap();
        let sink = Arc::new(Sink::default());
        let out = Reporter::from_sink(sink.clone());
        let (tx, rx) = async_channel::bounded(1);
        let stop = Stop::new(rx, 0);
        // Reads the input line, then waits for EOF like the remote lifeline.
        let script = format!("read x; echo {STARTED}; echo got $x; cat >/dev/null; exit 9");
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            tx.close();
        });
        let o = future::block_on(run(
            &rt,
            sh(&script),
            b"hello\n".to_vec(),
            Mode::Step,
            &stop,
            &out,
        ))
        .unwrap();
        t.join().unwrap();
        assert_eq!(o.code, Some(9));
        assert_eq!(o.stopped, Some(StopReason::Cancelled));
        assert!(sink
            .0
            .lock()
            .unwrap()
            .contains(&(Stream::Stdout, b"got hello".to_vec())));
    }

    #[test]
    fn helper_mode_captures_stdout_and_is_killed_on_stop() {
        let rt = Runtime::start(1).unwrap();
        let out = Reporter::from_sink(Arc::new(Sink::default()));
        let (_tx, rx) = async_channel::bounded(1);
        let stop = Stop::new(rx, 0);
        let o = future::block_on(run(
            &rt,
            sh("cat; echo b"),
            b"a\n".to_vec(),
            Mode::Helper,
            &stop,
            &out,
        ))
        .unwrap();
        assert_eq!(o.stdout, ["a", "b"]);

        let (_tx, rx) = async_channel::bounded(1);
        let stop = Stop::new(rx, 1);
        let t = std::time::Instant::now();
        let o =
            future::block_on(run(&rt, sh("sleep 30"), vec![], Mode::Helper, &stop, &out)).unwrap();
        assert_eq!(o.stopped, Some(StopReason::Timeout(1)));
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
