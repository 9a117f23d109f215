//! Running one echo step on a worker thread: start the tool under the
//! lifeline, stream its output line by line, end it on cancel or timeout,
//! and turn its exit into a [`StepResult`].
//!
//! The "tool" is a fixed `sh` loop that prints the text; a real plugin
//! would run its own program (or talk to a remote API) in its place. Step
//! data reaches it only as arguments and environment, never as shell code.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jobx_plugin_api::{Reporter, StepResult, Stream};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::Pid;

use crate::lifeline::{self, Guarded};
use crate::params::Params;

/// The tool: `sh -c ECHO jobx-echo <text> <repeat> <pause>`.
const ECHO: &str = r#"i=0
while [ "$i" -lt "$2" ]; do
  if [ "$i" -gt 0 ] && [ "$3" != 0.000 ]; then sleep "$3"; fi
  printf '%s\n' "$1"
  i=$((i + 1))
done
"#;

/// Longest line reported as one; longer ones are split, so a runaway line
/// cannot grow memory without bound.
pub const MAX_LINE: usize = 32 * 1024;
/// How long output may still arrive after the tool exited.
const DRAIN: Duration = Duration::from_secs(2);
/// How often exits are checked where pidfds are unavailable.
const TICK: Duration = Duration::from_millis(100);

/// Why a run was ended from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// `Executor::cancel`.
    Cancelled,
    /// The step's `timeout_secs` passed.
    Timeout(u64),
}

impl Ending {
    /// The result a run ended this way reports.
    pub fn result(self) -> StepResult {
        match self {
            Ending::Cancelled => StepResult::failed("cancelled"),
            Ending::Timeout(secs) => StepResult::failed(format!("timeout after {secs} s")),
        }
    }
}

#[derive(Default)]
struct ControlState {
    /// Set while the tool's group may be signalled.
    pgid: Option<Pid>,
    ending: Option<Ending>,
}

/// Shared between the worker running a step and `cancel`: ending a run is
/// one call from any thread, whether the tool has started yet or not.
#[derive(Default)]
pub struct Control {
    state: Mutex<ControlState>,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the run (the first ending wins): kills the tool now if it
    /// runs, or as soon as it starts.
    pub fn end(&self, why: Ending) {
        let mut s = self.lock();
        if s.ending.is_none() {
            s.ending = Some(why);
        }
        if let Some(pgid) = s.pgid {
            lifeline::kill_group(pgid);
        }
    }

    /// The tool runs as group `pgid`; an ending that came first kills it.
    fn attach(&self, pgid: Pid) {
        let mut s = self.lock();
        s.pgid = Some(pgid);
        if s.ending.is_some() {
            lifeline::kill_group(pgid);
        }
    }

    /// The group is about to go away: no more signals. Answers the ending.
    fn detach(&self) -> Option<Ending> {
        let mut s = self.lock();
        s.pgid = None;
        s.ending
    }

    /// How the run was ended from outside, if it was.
    pub fn ending(&self) -> Option<Ending> {
        self.lock().ending
    }
}

/// An output pipe and its partial line.
struct Pipe {
    src: std::fs::File,
    stream: Stream,
    partial: Vec<u8>,
}

impl Pipe {
    fn new(fd: impl Into<OwnedFd>, stream: Stream) -> Pipe {
        Pipe {
            src: std::fs::File::from(fd.into()),
            stream,
            partial: Vec::new(),
        }
    }

    /// Reads what is there (poll said so: this does not block) and reports
    /// complete lines; false at end of file.
    fn read(&mut self, buf: &mut [u8], out: &Reporter) -> bool {
        match self.src.read(buf) {
            Ok(0) => false,
            Ok(n) => {
                split_lines(&mut self.partial, &buf[..n], |l| out.line(self.stream, l));
                true
            }
            Err(e) => e.kind() == io::ErrorKind::Interrupted,
        }
    }

    /// Reports a last line without its newline.
    fn finish(self, out: &Reporter) {
        if !self.partial.is_empty() {
            out.line(self.stream, &self.partial);
        }
    }
}

/// Appends `data` to `partial`, emitting each complete line (without `\n`)
/// and every [`MAX_LINE`] bytes of a longer one. Pure, so it is tested alone.
pub fn split_lines(partial: &mut Vec<u8>, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
    while !data.is_empty() {
        let room = MAX_LINE - partial.len();
        match data.iter().take(room + 1).position(|&b| b == b'\n') {
            Some(i) => {
                partial.extend_from_slice(&data[..i]);
                emit(partial);
                partial.clear();
                data = &data[i + 1..];
            }
            None => {
                let take = room.min(data.len());
                partial.extend_from_slice(&data[..take]);
                data = &data[take..];
                if partial.len() == MAX_LINE {
                    emit(partial);
                    partial.clear();
                }
            }
        }
    }
}

/// Runs one step to its end and answers its result. `deadline` comes from
/// the step's `timeout_secs` (0: none).
pub fn run(
    params: &Params,
    env: &[(String, String)],
    timeout_secs: u64,
    deadline: Option<Instant>,
    ctl: &Control,
    out: &Reporter,
) -> StepResult {
    let mut cmd = lifeline::command("/bin/sh");
    cmd.arg("-c")
        .arg(ECHO)
        .arg("jobx-echo")
        .arg(&params.text)
        .arg(params.repeat.to_string())
        .arg(params.pause_arg())
        .envs(env.iter().map(|(k, v)| (k, v)))
        // Never the daemon's data directory, where a careless tool could
        // damage the store.
        .current_dir(std::env::temp_dir());
    let mut g = match Guarded::spawn(cmd) {
        Ok(g) => g,
        Err(e) => return StepResult::failed(format!("cannot start /bin/sh: {e}")),
    };
    ctl.attach(g.pgid);
    let status = pump(&mut g, timeout_secs, deadline, ctl, out);
    match (ctl.ending(), status) {
        (Some(why), _) => why.result(),
        (None, Some(s)) => exit_result(s),
        (None, None) => StepResult::failed("the exit status of the step was lost"),
    }
}

/// Streams output until the tool has exited and its pipes are drained;
/// answers its exit status.
fn pump(
    g: &mut Guarded,
    timeout_secs: u64,
    deadline: Option<Instant>,
    ctl: &Control,
    out: &Reporter,
) -> Option<ExitStatus> {
    // pidfds make the exit pollable; without them (old kernels, some
    // sandboxes) the exit is checked on a short tick.
    let pidfd = rustix::process::pidfd_open(g.pgid, rustix::process::PidfdFlags::empty()).ok();
    let mut pipes = [
        g.stdout.take().map(|fd| Pipe::new(fd, Stream::Stdout)),
        g.stderr.take().map(|fd| Pipe::new(fd, Stream::Stderr)),
    ];
    let mut buf = vec![0u8; 64 * 1024];
    let mut exited: Option<(Instant, Option<ExitStatus>)> = None;
    loop {
        if exited.is_none() {
            match g.child.try_wait() {
                Ok(None) => {}
                done => {
                    // Reaped; the watchdog subshell still holds the group,
                    // so its id stays ours until the lifeline closes.
                    ctl.detach();
                    // Whatever the step left running in its group dies now.
                    drop(g.lifeline.take());
                    exited = Some((Instant::now(), done.ok().flatten()));
                }
            }
        }
        let open = pipes.iter().any(Option::is_some);
        let now = Instant::now();
        match exited {
            Some((at, status)) if !open || now >= at + DRAIN => {
                for p in pipes.iter_mut().filter_map(Option::take) {
                    p.finish(out);
                }
                return status;
            }
            _ => {}
        }
        if let (None, Some(d)) = (exited, deadline) {
            if now >= d && ctl.ending().is_none() {
                out.info(format!("timeout after {timeout_secs} s: killing the step"));
                ctl.end(Ending::Timeout(timeout_secs));
            }
        }

        // Sleep until output, the exit, the deadline or the drain limit.
        let mut wake = match exited {
            Some((at, _)) => Some(at + DRAIN),
            None if ctl.ending().is_none() => deadline,
            None => None,
        };
        if exited.is_none() && pidfd.is_none() {
            wake = Some(wake.map_or(now + TICK, |w| w.min(now + TICK)));
        }
        let timeout = wake.and_then(|w| Timespec::try_from(w.saturating_duration_since(now)).ok());
        let mut fds = Vec::with_capacity(3);
        let mut which = Vec::with_capacity(2);
        for (i, p) in pipes.iter().enumerate() {
            if let Some(p) = p {
                fds.push(PollFd::new(&p.src, PollFlags::IN));
                which.push(i);
            }
        }
        if let (None, Some(fd)) = (exited, &pidfd) {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        if rustix::event::poll(&mut fds, timeout.as_ref()).is_err() {
            // EINTR or a transient failure: go round again.
            continue;
        }
        let ready: Vec<usize> = fds
            .iter()
            .zip(&which)
            .filter(|(fd, _)| !fd.revents().is_empty())
            .map(|(_, i)| *i)
            .collect();
        drop(fds);
        for i in ready {
            if let Some(p) = pipes[i].as_mut() {
                if !p.read(&mut buf, out) {
                    if let Some(p) = pipes[i].take() {
                        p.finish(out);
                    }
                }
            }
        }
    }
}

/// What an exit status means for the step.
fn exit_result(s: ExitStatus) -> StepResult {
    match (s.code(), s.signal()) {
        (Some(code), _) => StepResult::exited(code),
        (None, Some(sig)) => StepResult::failed(format!("killed by signal {sig}")),
        _ => StepResult::failed("unknown exit status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut partial = Vec::new();
        let mut out = Vec::new();
        for c in chunks {
            split_lines(&mut partial, c, |l| out.push(l.to_vec()));
        }
        if !partial.is_empty() {
            out.push(partial);
        }
        out
    }

    #[test]
    fn lines_across_chunks() {
        assert_eq!(
            split(&[b"a\nb", b"c\n\nd"]),
            vec![b"a".to_vec(), b"bc".to_vec(), vec![], b"d".to_vec()]
        );
        assert!(split(&[b""]).is_empty());
    }

    #[test]
    fn long_lines_are_split_at_the_cap() {
        let mut data = vec![b'x'; MAX_LINE * 2 + 10];
        data.extend_from_slice(b"\ntail");
        let out = split(&[&data[..100], &data[100..]]);
        let lens: Vec<usize> = out.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![MAX_LINE, MAX_LINE, 10, 4]);
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(split(&[&exact]), vec![vec![b'y'; MAX_LINE]]);
    }
}
