//! Master connections: one per (address, port, login user), opened before
//! any session, shared by every step, kept by ssh's `ControlPersist`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_lock::{Mutex, Semaphore, SemaphoreGuardArc};
use async_process::Command;
use event_listener::Event;
use futures_lite::future;
use jobx_plugin_api::Reporter;

use crate::classify::{connect_failure, main_line, ConnectFailure};
use crate::target::{SshOptions, Target};

/// How long a successful check of the master is trusted without asking again.
const TRUST_CHECK: Duration = Duration::from_secs(2);

/// Connection setups at once to one address and port: sshd starts dropping
/// unauthenticated connections at 10 by default (`MaxStartups 10:30:100`).
pub const SETUPS_PER_ENDPOINT: usize = 8;

/// Attempts when the node refuses connections: retries only cover an sshd
/// restarting, not a node where nothing listens.
const REFUSED_ATTEMPTS: u32 = 3;

/// How long a prepared connection's setup waits before it looks whether
/// steps are setting up theirs. The engine asks to prepare the next batch
/// just before the batch that is starting runs its first step; this head
/// start lets that step's own setups begin (and be counted) first.
pub const PREPARE_HEAD_START: Duration = Duration::from_millis(50);

/// Connection setups that steps are waiting for, over all nodes. Setups
/// of prepared connections give way to them: handshakes cost CPU on both
/// ends (tens of ms each for today's key exchange), so the batch that is
/// starting gets it first, and the next batch's handshakes fill the time
/// its steps leave instead of slowing its first step down.
#[derive(Default)]
pub struct StepSetups {
    busy: AtomicUsize,
    idle: Event,
}

impl StepSetups {
    /// Counts a step's setup until the guard drops.
    pub fn enter(&self) -> StepSetup<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        StepSetup(self)
    }

    /// Waits until no step is setting up a connection.
    pub async fn idle(&self) {
        loop {
            if self.busy.load(Ordering::SeqCst) == 0 {
                return;
            }
            // Listen before looking again, so a last setup ending in
            // between is not missed.
            let listener = self.idle.listen();
            if self.busy.load(Ordering::SeqCst) == 0 {
                return;
            }
            listener.await;
        }
    }
}

/// One step's connection setup in progress.
pub struct StepSetup<'a>(&'a StepSetups);

impl Drop for StepSetup<'_> {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify(usize::MAX);
        }
    }
}

/// One master connection and the sessions over it.
pub struct Conn {
    /// Where it goes.
    pub target: Target,
    /// The control socket.
    pub ctl: PathBuf,
    /// ssh options for this data dir.
    pub opts: SshOptions,
    sessions: Arc<Semaphore>,
    /// Setups in progress to the same address and port (shared by every
    /// login user and data dir).
    setups: Arc<Semaphore>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When the master was last known to be up.
    verified: Option<Instant>,
    /// The last failure to open it: runs that waited for that attempt share
    /// its result instead of each trying again for `connect_timeout`.
    failure: Option<(Instant, String)>,
    /// Whether the node has rsync (asked once per connection).
    has_rsync: Option<bool>,
}

impl Conn {
    /// A connection that allows `max_sessions` sessions at once; `setups`
    /// bounds connection setups to its address and port.
    pub fn new(
        target: Target,
        ctl: PathBuf,
        opts: SshOptions,
        max_sessions: usize,
        setups: Arc<Semaphore>,
    ) -> Conn {
        Conn {
            target,
            ctl,
            opts,
            sessions: Arc::new(Semaphore::new(max_sessions)),
            setups,
            state: Mutex::new(State::default()),
        }
    }

    /// Waits for a session slot; the slot is held until the guard drops.
    pub async fn session_slot(&self) -> SemaphoreGuardArc {
        self.sessions.acquire_arc().await
    }

    /// Forgets that the master was up (a session could not use it).
    pub async fn invalidate(&self) {
        self.state.lock().await.verified = None;
    }

    /// Records that a session just went through the master, so the next
    /// steps within [`TRUST_CHECK`] skip `ssh -O check`.
    pub async fn confirm_alive(&self) {
        self.state.lock().await.verified = Some(Instant::now());
    }

    /// Whether the node has rsync, if known.
    pub async fn has_rsync(&self) -> Option<bool> {
        self.state.lock().await.has_rsync
    }

    /// Records whether the node has rsync.
    pub async fn set_has_rsync(&self, yes: bool) {
        self.state.lock().await.has_rsync = Some(yes);
    }

    /// Makes sure the master is up: reuses a live one, otherwise opens it,
    /// retrying transient failures with backoff within `connect_timeout`.
    /// Connection setups over all nodes are bounded by `connects`. Retries
    /// are reported to `out` when a run is waiting (not when preparing).
    /// A run's setup is counted in `steps`.
    pub async fn ensure_master(
        &self,
        connects: &Semaphore,
        steps: &StepSetups,
        connect_timeout: u64,
        out: Option<&Reporter>,
    ) -> Result<(), String> {
        let asked = Instant::now();
        let mut st = self.state.lock().await;
        if let Some((at, msg)) = &st.failure {
            if *at >= asked {
                return Err(msg.clone());
            }
        }
        if st.verified.is_some_and(|t| t.elapsed() < TRUST_CHECK) && self.ctl.exists() {
            return Ok(());
        }
        if self.ctl.exists() {
            if self.check().await {
                st.verified = Some(Instant::now());
                return Ok(());
            }
            // A socket left by a master that was killed: ssh would refuse
            // to bind over it.
            let _ = std::fs::remove_file(&self.ctl);
        }
        let _counted = out.map(|_| steps.enter());
        match self.open(connects, connect_timeout, out).await {
            Ok(()) => {
                st.verified = Some(Instant::now());
                st.failure = None;
                Ok(())
            }
            Err(msg) => {
                st.verified = None;
                st.failure = Some((Instant::now(), msg.clone()));
                Err(msg)
            }
        }
    }

    async fn check(&self) -> bool {
        let mut cmd = Command::new("ssh");
        cmd.args(self.opts.check_args(&self.target, &self.ctl))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        matches!(cmd.output().await, Ok(o) if o.status.success())
    }

    async fn open(
        &self,
        connects: &Semaphore,
        connect_timeout: u64,
        out: Option<&Reporter>,
    ) -> Result<(), String> {
        let budget = Duration::from_secs(connect_timeout);
        let deadline = Instant::now() + budget;
        let mut attempt: u32 = 0;
        let mut refused: u32 = 0;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let secs = remaining.as_secs_f64().ceil().max(1.0) as u64;
            let result = {
                let _endpoint = self.setups.acquire().await;
                let _global = connects.acquire().await;
                self.open_once(secs).await
            };
            let failure = match result {
                Ok(()) => return Ok(()),
                Err(f) => f,
            };
            let (message, was_refused) = match failure {
                ConnectFailure::Permanent(msg) => return Err(msg),
                ConnectFailure::Transient { message, refused } => (message, refused),
            };
            if was_refused {
                refused += 1;
            }
            let backoff = backoff(attempt);
            if refused >= REFUSED_ATTEMPTS || Instant::now() + backoff >= deadline {
                return Err(format!("unreachable: {message}"));
            }
            if let Some(out) = out {
                out.info(format!(
                    "connecting to {} failed ({message}); retrying",
                    self.target.display()
                ));
            }
            async_io::Timer::after(backoff).await;
        }
    }

    /// One attempt to open the master; `secs` is ssh's `ConnectTimeout`.
    async fn open_once(&self, secs: u64) -> Result<(), ConnectFailure> {
        let mut cmd = Command::new("ssh");
        cmd.args(self.opts.master_args(&self.target, &self.ctl, secs))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        // ConnectTimeout does not cover authentication: bound the attempt.
        let limit = Duration::from_secs(secs + 2);
        let output = future::or(async { Some(cmd.output().await) }, async {
            async_io::Timer::after(limit).await;
            None
        })
        .await;
        let output = match output {
            None => {
                return Err(ConnectFailure::Transient {
                    message: format!("no answer within {} s", limit.as_secs()),
                    refused: false,
                })
            }
            Some(Err(e)) => return Err(ConnectFailure::Permanent(format!("cannot run ssh: {e}"))),
            Some(Ok(o)) => o,
        };
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(255) => Err(connect_failure(
                &stderr,
                &self.target.display(),
                &self.opts.known_hosts,
            )),
            code => Err(ConnectFailure::Permanent(format!(
                "ssh failed ({}): {}",
                code.map_or_else(|| "killed".to_string(), |c| format!("exit {c}")),
                main_line(&stderr)
            ))),
        }
    }
}

/// 250 ms, 500 ms, 1 s, 2 s, 2 s, … plus up to 25 % jitter so that nodes
/// dropped together by `MaxStartups` do not come back together.
pub fn backoff(attempt: u32) -> Duration {
    let base = 250u64 << attempt.saturating_sub(1).min(3);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    Duration::from_millis(base + nanos % (base / 4 + 1))
}

/// Creates `dir` (and parents) private to this user, or checks that an
/// existing one is: control sockets give full access to the connections.
pub fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me {
        return Err(format!(
            "{} must be a directory owned by uid {me}",
            dir.display()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private: {e}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_levels_off() {
        let ms = |a| backoff(a).as_millis();
        assert!((250..=313).contains(&ms(1)));
        assert!((500..=625).contains(&ms(2)));
        assert!((1000..=1250).contains(&ms(3)));
        assert!((2000..=2500).contains(&ms(4)));
        assert!((2000..=2500).contains(&ms(40)));
    }

    #[test]
    fn private_dirs_are_created_and_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("jobx-ssh-priv-{}", std::process::id()));
        let dir = base.join("a/b");
        ensure_private_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
