//! The reaper: one small `sh` per executor instance that kills every live
//! step's process group when the daemon goes away, even by SIGKILL.
//!
//! Its stdin is a pipe whose only writer is the daemon: the write end is
//! close-on-exec, so no step ever holds it. The event loop keeps it told
//! what is live, one short line each:
//!
//! * `? <script file name>` before a step is spawned;
//! * `+ <pgid> <script file name>` once it was spawned (`! <name>` if that
//!   failed);
//! * `- <pgid>` once the step's leader has exited and its group was killed,
//!   written *before* the leader is reaped. Until then the zombie leader
//!   keeps the pgid reserved, so a pgid the reaper lists can never belong to
//!   an unrelated, newer group.
//!
//! When the daemon dies the kernel closes the writer; the reaper reads what
//! is left, then EOF, SIGKILLs every group still listed and removes their
//! script files (nobody else will). A spawn announced but never listed (the
//! daemon died between the exec and the `+` line) is found by its script
//! path in `/proc/*/cmdline`: the leader is `<interpreter> <script> …`.
//! The reaper ignores HUP, INT and TERM, so a signal to the daemon's process
//! group or a service stop never takes it before the daemon itself is gone.
//!
//! One process per instance, not per step: the loop writes each round's
//! lines at once, so a batch of spawns costs the reaper two wake-ups.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::Pid;

/// The reaper, run as `sh -c REAPER jobx-local-reaper <script dir>`. A fixed
/// text: it only ever reads pgids (digits) and script file names (checked
/// against a small character set) from its pipe, never code.
pub const REAPER: &str = r#"d=$1
trap '' HUP INT TERM
live=' ' wanted=' '
while read -r op g n; do
  case $op in
    '?'|'!') n=$g g=0 ;;
    *) case $g in ''|*[!0-9]*) continue ;; esac ;;
  esac
  case $n in *[!A-Za-z0-9._-]*) n= ;; esac
  case $op in
    '?') [ -z "$n" ] || wanted="$wanted$n " ;;
    +) live="$live$g:$n " ;;
    -) case $live in
         *" $g:"*) rest=${live#*" $g:"}; live="${live%%" $g:"*} ${rest#* }" ;;
       esac ;;
  esac
  case $op in
    +|'!') case $wanted in
         *" $n "*) wanted="${wanted%%" $n "*} ${wanted#*" $n "}" ;;
       esac ;;
  esac
done
cd -- "$d" 2>/dev/null || d=
names=
for e in $live; do
  kill -s KILL -- "-${e%%:*}" 2>/dev/null
  names="$names ${e#*:}"
done
if [ "$wanted" != ' ' ]; then
  for round in 1 2; do
    for n in $wanted; do
      for f in $(grep -lzF -- "/$n" /proc/[0-9]*/cmdline 2>/dev/null); do
        p=${f#/proc/}
        kill -s KILL -- "-${p%/cmdline}" 2>/dev/null
      done
    done
    [ "$round" = 2 ] || sleep 1
  done
  names="$names $wanted"
fi
# In $d now; the names hold no blank or pattern character, so they split
# into one word each.
[ -z "$d" ] || case $names in *[!\ ]*) rm -f -- $names ;; esac
"#;

/// How long after a failed start the reaper is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long a full pipe may stay full before the reaper counts as stuck
/// (a long live set after a restart, or a large round of spawns, fill it
/// for a moment while the reaper reads).
const STUCK: Duration = Duration::from_secs(1);

/// The file name the reaper may remove: the name itself when it is made of
/// the characters `ScriptFile` uses, else nothing (the group is still killed).
fn reaper_name(script: &Path) -> &[u8] {
    let name = script.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    let safe = name
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if safe && !name.is_empty() {
        name
    } else {
        b""
    }
}

/// Appends a line naming a script (`?` a spawn is coming, `!` it failed).
fn push_script(buf: &mut Vec<u8>, op: u8, script: &Path) {
    let name = reaper_name(script);
    if !name.is_empty() {
        buf.extend_from_slice(&[op, b' ']);
        buf.extend_from_slice(name);
        buf.push(b'\n');
    }
}

/// Appends the line that lists a live group.
fn push_added(buf: &mut Vec<u8>, pgid: Pid, script: &Path) {
    buf.extend_from_slice(format!("+ {} ", pgid.as_raw_nonzero()).as_bytes());
    buf.extend_from_slice(reaper_name(script));
    buf.push(b'\n');
}

/// Appends the line that unlists a group.
fn push_removed(buf: &mut Vec<u8>, pgid: Pid) {
    buf.extend_from_slice(format!("- {}\n", pgid.as_raw_nonzero()).as_bytes());
}

/// The reaper process and what is still to be told to it.
pub struct Reaper {
    dir: PathBuf,
    proc: Option<(Child, ChildStdin)>,
    /// Lines not yet written.
    buf: Vec<u8>,
    /// The `?` lines of the spawns under way (a new reaper hears them too).
    spawning: Vec<u8>,
    /// Set when the pipe failed: the next flush starts a new reaper and
    /// tells it the whole live set.
    broken: bool,
    retry_at: Option<Instant>,
}

impl Reaper {
    /// Starts the reaper for script files in `dir`.
    pub fn spawn(dir: &Path) -> io::Result<Reaper> {
        Ok(Reaper {
            dir: dir.to_path_buf(),
            proc: Some(start(dir)?),
            buf: Vec::new(),
            spawning: Vec::new(),
            broken: false,
            retry_at: None,
        })
    }

    /// Steps about to be spawned; flush before spawning them.
    pub fn spawning<'a>(&mut self, scripts: impl Iterator<Item = &'a Path>) {
        self.spawning.clear();
        for script in scripts {
            push_script(&mut self.spawning, b'?', script);
        }
        self.buf.extend_from_slice(&self.spawning);
    }

    /// The spawns announced by `spawning` are over (each was `added` or
    /// `not_spawned`).
    pub fn spawned(&mut self) {
        self.spawning.clear();
    }

    /// An announced spawn that failed.
    pub fn not_spawned(&mut self, script: &Path) {
        push_script(&mut self.buf, b'!', script);
    }

    /// A group to kill should the daemon die.
    pub fn added(&mut self, pgid: Pid, script: &Path) {
        push_added(&mut self.buf, pgid, script);
    }

    /// A group that ended; call before its leader is reaped, and flush.
    pub fn removed(&mut self, pgid: Pid) {
        push_removed(&mut self.buf, pgid);
    }

    /// The pipe's write end, to poll for the reaper's death (POLLERR).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.proc.as_ref().map(|(_, tx)| tx.as_fd())
    }

    /// The poll reported an error on the pipe: the reaper is gone.
    pub fn lost(&mut self) {
        self.broken = true;
    }

    /// Writes what is queued. Should the reaper be gone or stuck (its pipe
    /// full), a new one is started and told every group in `live` (the
    /// groups spawned and not yet reaped) and the spawns under way, which
    /// makes the queue redundant.
    pub fn flush<'a>(&mut self, live: impl Iterator<Item = (Pid, &'a Path)>) {
        if !self.broken && self.proc.is_some() {
            if self.buf.is_empty() {
                return;
            }
            if let Some((_, tx)) = self.proc.as_mut() {
                if write_nonblocking(tx, &self.buf) {
                    self.buf.clear();
                    return;
                }
            }
        }
        self.restart(live);
    }

    fn restart<'a>(&mut self, live: impl Iterator<Item = (Pid, &'a Path)>) {
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        if let Some((mut child, tx)) = self.proc.take() {
            // SIGKILL before its pipe closes: its EOF code must not run, the
            // groups still live.
            let _ = child.kill();
            let _ = child.wait();
            drop(tx);
        }
        self.buf.clear();
        let mut all = Vec::new();
        for (pgid, script) in live {
            push_added(&mut all, pgid, script);
        }
        all.extend_from_slice(&self.spawning);
        match start(&self.dir) {
            Ok((child, mut tx)) => {
                if write_nonblocking(&mut tx, &all) {
                    self.proc = Some((child, tx));
                    self.broken = false;
                    self.retry_at = None;
                } else {
                    let mut child = child;
                    let _ = child.kill();
                    let _ = child.wait();
                    self.retry_at = Some(now + RETRY);
                }
            }
            Err(_) => self.retry_at = Some(now + RETRY),
        }
    }
}

/// Writes all of `data` or reports failure: the pipe is closed (EPIPE; the
/// daemon, a Rust program, ignores SIGPIPE), or the reaper read nothing for
/// `STUCK` while the pipe was full.
fn write_nonblocking(tx: &mut ChildStdin, data: &[u8]) -> bool {
    let deadline = Instant::now() + STUCK;
    let mut off = 0;
    while off < data.len() {
        match tx.write(&data[off..]) {
            Ok(0) => return false,
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                let Ok(left) = Timespec::try_from(left) else {
                    return false;
                };
                if left == Timespec::default() {
                    return false;
                }
                let mut fds = [PollFd::new(&*tx, PollFlags::OUT)];
                if matches!(rustix::event::poll(&mut fds, Some(&left)), Ok(0)) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

fn start(dir: &Path) -> io::Result<(Child, ChildStdin)> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(REAPER)
        .arg("jobx-local-reaper")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: a Ctrl-C to the daemon's terminal does not reach it.
        .process_group(0)
        .spawn()?;
    let Some(tx) = child.stdin.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::other("the reaper has no stdin pipe"));
    };
    rustix::io::ioctl_fionbio(&tx, true)?;
    Ok((child, tx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines() {
        let pgid = Pid::from_raw(4321).unwrap();
        let mut buf = Vec::new();
        push_added(&mut buf, pgid, Path::new("/tmp/jobx-s1-1-2-ab.script"));
        push_added(&mut buf, pgid, Path::new("/tmp/we ird;name"));
        push_removed(&mut buf, pgid);
        push_script(&mut buf, b'?', Path::new("/tmp/jobx-s2.script"));
        push_script(&mut buf, b'?', Path::new("/tmp/we ird"));
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "+ 4321 jobx-s1-1-2-ab.script\n+ 4321 \n- 4321\n? jobx-s2.script\n"
        );
    }

    fn gone(pid: u32) -> bool {
        // A zombie (state Z) counts as gone: it was killed.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => s
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z')),
            Err(_) => true,
        }
    }

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn group() -> Child {
        Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .expect("spawn sleep")
    }

    /// The reaper itself: listed groups die and their files go at EOF;
    /// unlisted ones, and other files, are left alone.
    #[test]
    fn at_eof_listed_groups_die_and_unlisted_stay() {
        let dir = std::env::temp_dir().join(format!("jobx-reaper-test-{}", jobx_step::unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let (listed, ended) = (dir.join("jobx-a.script"), dir.join("jobx-b.script"));
        std::fs::write(&listed, "x").unwrap();
        std::fs::write(&ended, "x").unwrap();
        let mut a = group();
        let mut b = group();
        let pa = Pid::from_raw(a.id() as i32).unwrap();
        let pb = Pid::from_raw(b.id() as i32).unwrap();

        let mut reaper = Reaper::spawn(&dir).unwrap();
        reaper.added(pa, &listed);
        reaper.added(pb, &ended);
        reaper.removed(pb);
        reaper.flush(std::iter::empty());
        assert!(!reaper.broken);
        let (mut child, tx) = reaper.proc.take().unwrap();
        drop(tx);
        let status = child.wait().unwrap();
        assert!(status.success(), "{status:?}");

        wait_until("listed group killed", || gone(a.id()));
        assert!(!gone(b.id()), "an unlisted group was killed");
        assert!(!listed.exists() && ended.exists());
        let _ = b.kill();
        let _ = b.wait();
        let _ = a.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A process that leads its group and names `script` in its argv, as a
    /// step's interpreter does.
    fn step_like(script: &Path) -> Child {
        Command::new("sh")
            .arg("-c")
            .arg("sleep 1000; :")
            .arg("jobx-reaper-test")
            .arg(script)
            .process_group(0)
            .spawn()
            .expect("spawn sh")
    }

    /// A spawn announced but never listed (the daemon died right after the
    /// exec) is found by its script path; one that failed is not looked for.
    #[test]
    fn an_announced_spawn_is_found_by_its_script() {
        let dir = std::env::temp_dir();
        let tag = jobx_step::unique();
        let announced = dir.join(format!("jobx-announced-{tag}.script"));
        let failed = dir.join(format!("jobx-failed-{tag}.script"));
        let mut a = step_like(&announced);
        let mut f = step_like(&failed);
        let mut reaper = Reaper::spawn(&dir).unwrap();
        reaper.spawning([announced.as_path(), failed.as_path()].into_iter());
        reaper.flush(std::iter::empty());
        reaper.not_spawned(&failed);
        reaper.spawned();
        reaper.flush(std::iter::empty());
        let (mut child, tx) = reaper.proc.take().unwrap();
        drop(tx);
        let _ = child.wait();
        assert!(gone(a.id()), "the announced step was not killed");
        assert!(!gone(f.id()), "a failed spawn's namesake was killed");
        let pf = Pid::from_raw(f.id() as i32).unwrap();
        let _ = rustix::process::kill_process_group(pf, rustix::process::Signal::KILL);
        let _ = f.wait();
        let _ = a.wait();
    }

    /// A live set longer than the pipe holds still reaches a new reaper:
    /// the write waits while it reads.
    #[test]
    fn a_long_live_set_reaches_a_new_reaper() {
        let mut a = group();
        let pa = Pid::from_raw(a.id() as i32).unwrap();
        let script = PathBuf::from("/nonexistent/jobx-long-live-set-entry-name.script");
        let mut reaper = Reaper::spawn(&std::env::temp_dir()).unwrap();
        reaper.lost();
        // 3,000 lines of ~60 bytes: three times a default pipe buffer.
        reaper.flush(std::iter::repeat_n((pa, script.as_path()), 3000));
        assert!(!reaper.broken && reaper.retry_at.is_none());
        let (mut child, tx) = reaper.proc.take().expect("a new reaper");
        drop(tx);
        let _ = child.wait();
        wait_until("group killed", || gone(a.id()));
        let _ = a.wait();
    }

    /// Replacing a reaper that still runs (counted as stuck) must not let
    /// it see EOF: it is killed before its pipe closes, so the groups live
    /// on, guarded by the new one. The old one has been waited for when
    /// `flush` returns, so a kill by it would already show.
    #[test]
    fn replacing_a_running_reaper_leaves_the_groups_alone() {
        let mut a = group();
        let pa = Pid::from_raw(a.id() as i32).unwrap();
        let script = PathBuf::from("/nonexistent/jobx-replaced.script");
        let mut reaper = Reaper::spawn(&std::env::temp_dir()).unwrap();
        reaper.added(pa, &script);
        reaper.flush(std::iter::empty());
        let first = reaper.proc.as_ref().unwrap().0.id();
        reaper.lost();
        reaper.flush([(pa, script.as_path())].into_iter());
        assert!(gone(first), "the old reaper still runs");
        assert!(!gone(a.id()), "the old reaper killed a live group");
        let (mut child, tx) = reaper.proc.take().expect("a new reaper");
        drop(tx);
        let _ = child.wait();
        wait_until("group killed by the new reaper", || gone(a.id()));
        let _ = a.wait();
    }

    /// A reaper that died is replaced, and the new one knows the live set.
    #[test]
    fn a_lost_reaper_is_replaced_with_the_live_set() {
        let dir = std::env::temp_dir();
        let mut a = group();
        let pa = Pid::from_raw(a.id() as i32).unwrap();
        let script = PathBuf::from("/nonexistent/jobx-x.script");
        let mut reaper = Reaper::spawn(&dir).unwrap();
        let first = reaper.proc.as_ref().unwrap().0.id();
        rustix::process::kill_process(
            Pid::from_raw(first as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        wait_until("first reaper dead", || gone(first));
        reaper.added(pa, &script);
        // Writing to the dead reaper's pipe fails: a new one is started.
        reaper.flush([(pa, script.as_path())].into_iter());
        let (mut child, tx) = reaper.proc.take().expect("a new reaper");
        assert_ne!(child.id(), first);
        drop(tx);
        let _ = child.wait();
        wait_until("group killed by the new reaper", || gone(a.id()));
        let _ = a.wait();
    }
}
