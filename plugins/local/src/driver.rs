//! Running `cmd` steps: one event-loop thread per executor spawns every
//! step and watches every running step process (output pipes, exit,
//! timeout, cancel) with `poll`, so waiting costs no thread per step.
//!
//! Each step is the interpreter itself, leading its own process group (see
//! `spawn`). The lifeline is the instance's one reaper process (see
//! `reaper`), which kills every live group should the daemon die. Spawns
//! happen on this thread so that what the reaper is told stays in order:
//! a spawn is announced before it happens, its group listed right after,
//! and unlisted before its leader is reaped.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jobx_plugin_api::{Reporter, RunId, StepResult, Stream};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use jobx_step::lines::LineSplitter;
use jobx_step::ScriptFile;

use crate::reaper::Reaper;
use crate::spawn::{spawn, Spec};

/// The scp tests name their scratch directories with it.
#[cfg(test)]
pub(crate) use jobx_step::unique;

/// How long output may still arrive after the step's leader exited (from
/// processes that left the group but kept the pipes open).
const DRAIN: Duration = Duration::from_secs(2);
/// How often exits are checked where pidfds are unavailable.
const TICK: Duration = Duration::from_millis(100);
/// Bytes read from a pipe at a time.
const CHUNK: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
/// Where a step's leader is in its life.
enum Life {
    Running,
    /// Exited and its group killed, not yet reaped: the zombie keeps the
    /// pgid reserved until the reaper has been told the group ended.
    Exited,
    /// Reaped: when, and its status if it could be read.
    Reaped(Instant, Option<ExitStatus>),
}

/// One running step: its leader (the interpreter) and its group.
struct Proc {
    run: RunId,
    out: Reporter,
    child: Child,
    pgid: Pid,
    pidfd: Option<OwnedFd>,
    stdout: Option<Pipe>,
    stderr: Option<Pipe>,
    deadline: Option<Instant>,
    timeout_secs: u64,
    ending: Option<Ending>,
    kill_at: Option<Instant>,
    life: Life,
    script: ScriptFile,
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

    fn running(&self) -> bool {
        matches!(self.life, Life::Running)
    }

    fn start_kill(&mut self, why: Ending, grace: Duration) {
        if self.ending.is_some() || !self.running() {
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

    /// Checks whether the leader exited; if so, kills what is left of its
    /// group and tells the reaper. Reaping waits for the reaper's flush.
    fn check_exit(&mut self, reaper: &mut Reaper) {
        if !self.running() {
            return;
        }
        // Look without reaping, so the group id cannot be reused before the
        // group is killed and the reaper has been told.
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
        reaper.removed(self.pgid);
        self.life = Life::Exited;
        self.pidfd = None;
        self.kill_at = None;
    }

    /// Reaps an exited leader (after the reaper was told).
    fn reap(&mut self) {
        if matches!(self.life, Life::Exited) {
            let status = self.child.wait().ok();
            self.life = Life::Reaped(Instant::now(), status);
        }
    }

    fn on_timer(&mut self, now: Instant, grace: Duration, reaper: &mut Reaper) {
        if !self.running() {
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
            self.check_exit(reaper);
        }
    }

    /// The next moment this process needs attention without any fd event.
    fn next_timer(&self) -> Option<Instant> {
        match self.life {
            Life::Reaped(at, _) => {
                return if self.stdout.is_some() || self.stderr.is_some() {
                    Some(at + DRAIN)
                } else {
                    Some(at)
                };
            }
            Life::Exited => return Some(Instant::now()),
            Life::Running => {}
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

    /// Whether the run can be reported: reaped and output drained (or the
    /// drain period is over).
    fn finished(&self, now: Instant) -> bool {
        match self.life {
            Life::Reaped(at, _) => {
                (self.stdout.is_none() && self.stderr.is_none()) || now >= at + DRAIN
            }
            _ => false,
        }
    }

    fn report(mut self) {
        close_pipe(&mut self.stdout, &self.out, Stream::Stdout);
        close_pipe(&mut self.stderr, &self.out, Stream::Stderr);
        let status = match self.life {
            Life::Reaped(_, s) => s,
            _ => None,
        };
        let result = outcome(self.ending, status);
        let out = self.out.clone();
        drop(self);
        out.done(result);
    }
}

/// The result of a run from why it was killed (if it was) and the leader's
/// exit status. A leader killed by a signal reports 128 + the signal
/// number, as a shell reports it, and as the ssh and agent executors do.
fn outcome(ending: Option<Ending>, status: Option<ExitStatus>) -> StepResult {
    match ending {
        Some(Ending::Timeout(secs)) => StepResult::failed(format!("timeout after {secs} s")),
        Some(Ending::Cancelled) => StepResult::failed("cancelled"),
        None => match status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => StepResult::exited(code),
                (None, Some(sig)) => StepResult::exited(128 + sig),
                _ => StepResult::failed("unknown exit status"),
            },
            None => StepResult::failed("the exit status of the step was lost"),
        },
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

/// A step to spawn on the loop thread.
struct Pending {
    run: RunId,
    spec: Spec,
    script: ScriptFile,
    out: Reporter,
}

enum Msg {
    Start(Box<Pending>),
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
    /// Starts the reaper (for script files in `script_dir`) and the event
    /// loop thread.
    pub fn spawn(grace: Duration, script_dir: &Path) -> io::Result<Arc<Driver>> {
        let reaper = Reaper::spawn(script_dir)?;
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
                    reaper,
                };
                // Should the loop ever panic, its processes are dropped: the
                // reaper's pipe closes (it kills the groups) and the
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

    /// Hands the step to the loop, which spawns it (a failed spawn is
    /// reported through `out`).
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
        self.send(Msg::Start(Box::new(Pending {
            run,
            spec,
            script,
            out,
        })));
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
    reaper: Reaper,
}

/// What `poll` found.
struct Ready {
    woken: bool,
    reaper_lost: bool,
    fds: Vec<(usize, Which)>,
}

impl EventLoop {
    fn run(&mut self) {
        let grace = self.driver.grace;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let msgs = std::mem::take(&mut *lock(&self.driver.queue));
            let mut starts = Vec::new();
            let mut cancels = Vec::new();
            for msg in msgs {
                match msg {
                    Msg::Start(p) => starts.push(*p),
                    Msg::Cancel(run) => cancels.push(run),
                }
            }
            self.start_all(starts);
            for run in cancels {
                if let Some(p) = self.procs.iter_mut().find(|p| p.run == run) {
                    p.start_kill(Ending::Cancelled, grace);
                }
            }

            let now = Instant::now();
            let next = self.procs.iter().filter_map(Proc::next_timer).min();
            let timeout = next.map(|t| t.saturating_duration_since(now));
            let timeout = timeout.and_then(|t| Timespec::try_from(t).ok());

            let ready = self.wait(timeout.as_ref());
            if ready.woken {
                let mut sink = [0u8; 256];
                while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
            }
            if ready.reaper_lost {
                self.reaper.lost();
            }
            for (i, which) in ready.fds {
                match which {
                    Which::PidFd => self.procs[i].check_exit(&mut self.reaper),
                    other => self.procs[i].read(other, &mut buf),
                }
            }

            let now = Instant::now();
            for p in &mut self.procs {
                p.on_timer(now, grace, &mut self.reaper);
                if p.running() && p.stdout.is_none() && p.stderr.is_none() {
                    // Both pipes closed: the leader is exiting.
                    p.check_exit(&mut self.reaper);
                }
            }
            // Ended groups leave the reaper's list before their leaders are
            // reaped and their pgids become free.
            self.flush_reaper();
            let mut i = 0;
            while i < self.procs.len() {
                let p = &mut self.procs[i];
                p.reap();
                if p.finished(now) {
                    self.procs.swap_remove(i).report();
                } else {
                    i += 1;
                }
            }
        }
    }

    /// Spawns steps: the reaper hears of each spawn before it happens (so
    /// it can find the step should the daemon die right after the exec),
    /// then of each group spawned.
    fn start_all(&mut self, starts: Vec<Pending>) {
        if starts.is_empty() {
            return;
        }
        self.reaper.spawning(starts.iter().map(|p| p.script.path()));
        self.flush_reaper();
        for p in starts {
            self.start(p);
        }
        self.reaper.spawned();
        self.flush_reaper();
    }

    /// Spawns one step and lists its group.
    fn start(&mut self, p: Pending) {
        let mut child = match spawn(&p.spec) {
            Ok(child) => child,
            Err(not) => {
                self.reaper.not_spawned(p.script.path());
                if let Some(line) = not.stderr {
                    p.out.line(Stream::Stderr, line.as_bytes());
                }
                p.out.done(not.result);
                return;
            }
        };
        let pgid = Pid::from_child(&child);
        // pidfds make exits pollable; without them (old kernels, some
        // sandboxes) exits are checked on a short tick.
        let pidfd = rustix::process::pidfd_open(pgid, rustix::process::PidfdFlags::empty()).ok();
        self.reaper.added(pgid, p.script.path());
        self.procs.push(Proc {
            run: p.run,
            out: p.out,
            pgid,
            pidfd,
            stdout: child.stdout.take().map(Pipe::new),
            stderr: child.stderr.take().map(Pipe::new),
            child,
            deadline: (p.spec.timeout_secs > 0)
                .then(|| Instant::now() + Duration::from_secs(p.spec.timeout_secs)),
            timeout_secs: p.spec.timeout_secs,
            ending: None,
            kill_at: None,
            life: Life::Running,
            script: p.script,
        });
    }

    fn flush_reaper(&mut self) {
        let live = self
            .procs
            .iter()
            .filter(|p| p.running())
            .map(|p| (p.pgid, p.script.path()));
        self.reaper.flush(live);
    }

    /// Polls the wake socket, the reaper's pipe, the step pipes and the
    /// pidfds.
    fn wait(&self, timeout: Option<&Timespec>) -> Ready {
        let mut fds = Vec::with_capacity(2 + self.procs.len() * 3);
        let mut index = Vec::with_capacity(self.procs.len() * 3);
        fds.push(PollFd::new(&self.wake_rx, PollFlags::IN));
        // No events asked: POLLERR alone says the reaper is gone.
        let reaper_fd = self.reaper.fd();
        if let Some(fd) = &reaper_fd {
            fds.push(PollFd::new(fd, PollFlags::empty()));
        }
        let first = fds.len();
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
            return Ready {
                woken: false,
                reaper_lost: false,
                fds: Vec::new(),
            };
        }
        let woken = !fds[0].revents().is_empty();
        let reaper_lost = first == 2 && !fds[1].revents().is_empty();
        let ready = fds[first..]
            .iter()
            .zip(index)
            .filter(|(fd, _)| !fd.revents().is_empty())
            .map(|(_, which)| which)
            .collect();
        Ready {
            woken,
            reaper_lost,
            fds: ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        let signalled = |sig: i32| ExitStatus::from_raw(sig);
        assert_eq!(outcome(None, Some(exited(3))), StepResult::exited(3));
        assert_eq!(outcome(None, Some(signalled(9))), StepResult::exited(137));
        assert_eq!(
            outcome(Some(Ending::Timeout(5)), Some(exited(0))),
            StepResult::failed("timeout after 5 s")
        );
        assert_eq!(
            outcome(Some(Ending::Cancelled), Some(signalled(15))),
            StepResult::failed("cancelled")
        );
        assert!(outcome(None, None).error.is_some());
    }
}
