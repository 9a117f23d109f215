//! Running `cmd` steps: one event-loop thread per executor watches every
//! running step process (output pipes, exit, timeout, cancel) with `poll`,
//! so waiting costs no thread per step.
//!
//! Each step runs under a small watchdog shell that leads its own process
//! group: the step is started in the background, and the watchdog keeps a
//! pipe ("lifeline") whose only writer is this process. When the daemon dies,
//! even by SIGKILL, the kernel closes that writer, the watchdog reads EOF and
//! kills its whole group.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jobx_plugin_api::{Reporter, RunId, StepResult, Stream};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use jobx_step::lines::LineSplitter;
use jobx_step::{ScriptFile, WATCHDOG};

/// The scp tests name their scratch directories with it.
#[cfg(test)]
pub(crate) use jobx_step::unique;

/// How long output may still arrive after the watchdog exited (from
/// processes that left the group but kept the pipes open).
const DRAIN: Duration = Duration::from_secs(2);
/// How often exits are checked where pidfds are unavailable.
const TICK: Duration = Duration::from_millis(100);
/// Bytes read from a pipe at a time.
const CHUNK: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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

/// Why a run is being killed.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Timeout(u64),
    Cancelled,
}

/// An output pipe (stdout and stderr as one type) and its partial line.
struct Pipe {
    src: std::fs::File,
    split: LineSplitter,
}

impl Pipe {
    fn new(fd: impl Into<OwnedFd>) -> Pipe {
        Pipe {
            src: std::fs::File::from(fd.into()),
            split: LineSplitter::default(),
        }
    }
}

/// One running step process (the watchdog and its group).
struct Proc {
    run: RunId,
    out: Reporter,
    child: Child,
    pgid: Pid,
    pidfd: Option<OwnedFd>,
    lifeline: Option<ChildStdin>,
    stdout: Option<Pipe>,
    stderr: Option<Pipe>,
    deadline: Option<Instant>,
    timeout_secs: u64,
    ending: Option<Ending>,
    kill_at: Option<Instant>,
    /// The watchdog's exit: when, and its status if it could be read.
    exited: Option<(Instant, Option<ExitStatus>)>,
    _script: ScriptFile,
}

#[derive(Clone, Copy)]
enum Which {
    Out,
    Err,
    PidFd,
}

impl Proc {
    fn signal_group(&self, sig: Signal) {
        // ESRCH (nothing left in the group) is expected and harmless.
        let _ = rustix::process::kill_process_group(self.pgid, sig);
    }

    fn start_kill(&mut self, why: Ending, grace: Duration) {
        if self.ending.is_some() || self.exited.is_some() {
            return;
        }
        self.ending = Some(why);
        match why {
            Ending::Timeout(secs) => self
                .out
                .info(format!("timeout after {secs} s: terminating the step")),
            Ending::Cancelled => self.out.info("cancelled: terminating the step"),
        }
        self.signal_group(Signal::TERM);
        self.kill_at = Some(Instant::now() + grace);
    }

    /// Reads what a ready pipe has (one read cannot block after `poll`).
    fn read(&mut self, which: Which, buf: &mut [u8]) {
        let (pipe, stream) = match which {
            Which::Out => (&mut self.stdout, Stream::Stdout),
            Which::Err => (&mut self.stderr, Stream::Stderr),
            Which::PidFd => return,
        };
        let Some(p) = pipe.as_mut() else { return };
        let open = match p.src.read(buf) {
            Ok(0) => false,
            Ok(n) => {
                p.split.push(&buf[..n], |line| self.out.line(stream, line));
                true
            }
            Err(e) => e.kind() == io::ErrorKind::Interrupted,
        };
        if !open {
            close_pipe(pipe, &self.out, stream);
        }
    }

    /// Checks whether the watchdog exited; if so, kills what is left of its
    /// group and reaps it.
    fn check_exit(&mut self) {
        if self.exited.is_some() {
            return;
        }
        // Look without reaping, so the group id cannot be reused before the
        // group is killed.
        let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        match rustix::process::waitid(WaitId::Pid(self.pgid), opts) {
            Ok(None) => return,
            Ok(Some(_)) => {}
            Err(rustix::io::Errno::INTR) => return,
            // ECHILD: someone else reaped it; treat it as gone.
            Err(_) => {}
        }
        // Processes the step left behind in its group end with it.
        self.signal_group(Signal::KILL);
        let status = self.child.wait().ok();
        self.exited = Some((Instant::now(), status));
        self.pidfd = None;
        self.lifeline = None;
        self.kill_at = None;
    }

    fn on_timer(&mut self, now: Instant, grace: Duration) {
        if self.exited.is_some() {
            return;
        }
        if let Some(deadline) = self.deadline {
            if self.ending.is_none() && now >= deadline {
                self.start_kill(Ending::Timeout(self.timeout_secs), grace);
            }
        }
        if let Some(at) = self.kill_at {
            if now >= at {
                self.signal_group(Signal::KILL);
                self.kill_at = None;
            }
        }
        if self.pidfd.is_none() {
            self.check_exit();
        }
    }

    /// The next moment this process needs attention without any fd event.
    fn next_timer(&self) -> Option<Instant> {
        if let Some((at, _)) = self.exited {
            return if self.stdout.is_some() || self.stderr.is_some() {
                Some(at + DRAIN)
            } else {
                Some(at)
            };
        }
        let mut next = self.kill_at;
        if self.ending.is_none() {
            next = min_opt(next, self.deadline);
        }
        if self.pidfd.is_none() {
            next = min_opt(next, Some(Instant::now() + TICK));
        }
        next
    }

    /// Whether the run can be reported: exited and output drained (or the
    /// drain period is over).
    fn finished(&self, now: Instant) -> bool {
        match self.exited {
            Some((at, _)) => (self.stdout.is_none() && self.stderr.is_none()) || now >= at + DRAIN,
            None => false,
        }
    }

    fn report(mut self) {
        close_pipe(&mut self.stdout, &self.out, Stream::Stdout);
        close_pipe(&mut self.stderr, &self.out, Stream::Stderr);
        let status = self.exited.and_then(|(_, s)| s);
        let result = match self.ending {
            Some(Ending::Timeout(secs)) => StepResult::failed(format!("timeout after {secs} s")),
            Some(Ending::Cancelled) => StepResult::failed("cancelled"),
            None => match status {
                Some(s) => match (s.code(), s.signal()) {
                    (Some(code), _) => StepResult::exited(code),
                    (None, Some(sig)) => StepResult::failed(format!("killed by signal {sig}")),
                    _ => StepResult::failed("unknown exit status"),
                },
                None => StepResult::failed("the exit status of the step was lost"),
            },
        };
        let out = self.out.clone();
        drop(self);
        out.done(result);
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn close_pipe(pipe: &mut Option<Pipe>, out: &Reporter, stream: Stream) {
    if let Some(mut p) = pipe.take() {
        p.split.finish(|line| out.line(stream, line));
    }
}

enum Msg {
    Start(Box<Proc>),
    Cancel(RunId),
}

/// The handle to the event loop; cheap to share.
pub struct Driver {
    queue: Mutex<Vec<Msg>>,
    wake: UnixStream,
    alive: AtomicBool,
    grace: Duration,
}

impl Driver {
    /// Starts the event loop thread.
    pub fn spawn(grace: Duration) -> io::Result<Arc<Driver>> {
        let (wake, wake_rx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let driver = Arc::new(Driver {
            queue: Mutex::new(Vec::new()),
            wake,
            alive: AtomicBool::new(true),
            grace,
        });
        let shared = driver.clone();
        std::thread::Builder::new()
            .name("jobx-local".to_string())
            .spawn(move || {
                let mut ev = EventLoop {
                    driver: shared.clone(),
                    wake_rx,
                    procs: Vec::new(),
                };
                // Should the loop ever panic, its processes are dropped: their
                // lifelines close (the watchdogs kill the groups) and their
                // reporters end the runs with an error.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ev.run()));
                shared.alive.store(false, Ordering::Release);
                drop(ev);
                for msg in lock(&shared.queue).drain(..) {
                    drop(msg);
                }
            })?;
        Ok(driver)
    }

    fn send(&self, msg: Msg) {
        lock(&self.queue).push(msg);
        // A full socket means a wake-up is already pending.
        let _ = (&self.wake).write(&[1]);
    }

    /// Spawns the step under its watchdog and hands it to the loop.
    pub fn start(
        &self,
        run: RunId,
        spec: Spec,
        script: ScriptFile,
        out: Reporter,
    ) -> Result<(), String> {
        if !self.alive.load(Ordering::Acquire) {
            return Err("the local executor's event loop has stopped".to_string());
        }
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("jobx-watchdog")
            .arg(script.path())
            .arg(&spec.program)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", spec.program.display()))?;
        let pgid = Pid::from_child(&child);
        // pidfds make exits pollable; without them (old kernels, some
        // sandboxes) exits are checked on a short tick.
        let pidfd = rustix::process::pidfd_open(pgid, rustix::process::PidfdFlags::empty()).ok();
        let proc = Proc {
            run,
            out,
            pgid,
            pidfd,
            lifeline: child.stdin.take(),
            stdout: child.stdout.take().map(Pipe::new),
            stderr: child.stderr.take().map(Pipe::new),
            child,
            deadline: (spec.timeout_secs > 0)
                .then(|| Instant::now() + Duration::from_secs(spec.timeout_secs)),
            timeout_secs: spec.timeout_secs,
            ending: None,
            kill_at: None,
            exited: None,
            _script: script,
        };
        self.send(Msg::Start(Box::new(proc)));
        Ok(())
    }

    /// Asks the loop to terminate a run; unknown or finished runs are ignored.
    pub fn cancel(&self, run: RunId) {
        self.send(Msg::Cancel(run));
    }
}

struct EventLoop {
    driver: Arc<Driver>,
    wake_rx: UnixStream,
    procs: Vec<Proc>,
}

impl EventLoop {
    fn run(&mut self) {
        let grace = self.driver.grace;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let msgs = std::mem::take(&mut *lock(&self.driver.queue));
            for msg in msgs {
                match msg {
                    Msg::Start(p) => self.procs.push(*p),
                    Msg::Cancel(run) => {
                        if let Some(p) = self.procs.iter_mut().find(|p| p.run == run) {
                            p.start_kill(Ending::Cancelled, grace);
                        }
                    }
                }
            }

            let now = Instant::now();
            let next = self.procs.iter().filter_map(Proc::next_timer).min();
            let timeout = next.map(|t| t.saturating_duration_since(now));
            let timeout = timeout.and_then(|t| Timespec::try_from(t).ok());

            let (woken, ready) = self.wait(timeout.as_ref());
            if woken {
                let mut sink = [0u8; 256];
                while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
            }
            for (i, which) in ready {
                match which {
                    Which::PidFd => self.procs[i].check_exit(),
                    other => self.procs[i].read(other, &mut buf),
                }
            }

            let now = Instant::now();
            let mut i = 0;
            while i < self.procs.len() {
                let p = &mut self.procs[i];
                p.on_timer(now, grace);
                if p.exited.is_none() && p.stdout.is_none() && p.stderr.is_none() {
                    // Both pipes closed: the watchdog is exiting.
                    p.check_exit();
                }
                if p.finished(now) {
                    self.procs.swap_remove(i).report();
                } else {
                    i += 1;
                }
            }
        }
    }

    /// Polls the wake socket, the pipes and the pidfds; returns whether the
    /// wake socket fired and which (process, fd) pairs are ready.
    fn wait(&self, timeout: Option<&Timespec>) -> (bool, Vec<(usize, Which)>) {
        let mut fds = Vec::with_capacity(1 + self.procs.len() * 3);
        let mut index = Vec::with_capacity(self.procs.len() * 3);
        fds.push(PollFd::new(&self.wake_rx, PollFlags::IN));
        for (i, p) in self.procs.iter().enumerate() {
            if let Some(pipe) = &p.stdout {
                fds.push(PollFd::new(&pipe.src, PollFlags::IN));
                index.push((i, Which::Out));
            }
            if let Some(pipe) = &p.stderr {
                fds.push(PollFd::new(&pipe.src, PollFlags::IN));
                index.push((i, Which::Err));
            }
            if let Some(fd) = &p.pidfd {
                fds.push(PollFd::new(fd, PollFlags::IN));
                index.push((i, Which::PidFd));
            }
        }
        if rustix::event::poll(&mut fds, timeout).is_err() {
            // EINTR or a transient failure: the loop simply goes round again.
            return (false, Vec::new());
        }
        let woken = !fds[0].revents().is_empty();
        let ready = fds[1..]
            .iter()
            .zip(index)
            .filter(|(fd, _)| !fd.revents().is_empty())
            .map(|(_, which)| which)
            .collect();
        (woken, ready)
    }
}
