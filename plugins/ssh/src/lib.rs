//! The `ssh` executor plugin: runs steps on nodes over the system OpenSSH
//! client, so the user's ssh config, agent, known_hosts, certificates and
//! jump hosts apply.
//!
//! * One master connection per (address, port, login user), opened before
//!   any session (`ControlMaster`, socket under `<data_dir>/ssh/`), shared by
//!   every step and kept open by `ControlPersist`. Sessions per connection
//!   and connection setups overall are bounded, so sshd's `MaxSessions` and
//!   `MaxStartups` are respected. A connection failure before anything ran
//!   is retried with backoff; then the node fails as `unreachable: …`.
//! * Command steps: one session each; see [`remote`] for what runs on the
//!   node — the script, variables and arguments travel on the channel's
//!   stdin, quoted with `shlex`, as the program of one `/bin/sh`; the step
//!   runs in its own process group, and a lifeline in that shell kills the
//!   group when the channel's stdin closes (stop, timeout, the daemon
//!   dying, the connection dropping).
//! * Copy steps (`kind = "scp"`): rsync over the master when both ends have
//!   it, scp otherwise, with the same semantics as the local executor.
//!
//! See the crate's README for the configuration.

pub mod classify;
pub mod config;
pub mod conn;
pub mod mux;
pub mod remote;
pub mod run;
pub mod runtime;
pub mod session;
pub mod target;

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_lock::Semaphore;
use futures_lite::FutureExt;
use jobx_plugin_api::{
    export_plugin, Executor, PrepareRequest, Reporter, RunId, StepKind, StepRequest, StepResult,
};

use crate::config::Config;
use crate::conn::{ensure_private_dir, Conn, StepSetups, PREPARE_HEAD_START, SETUPS_PER_ENDPOINT};
use crate::run::Plan;
use crate::runtime::{Runtime, Stop};
use crate::target::{control_path, generated_config, SshOptions, Target};

/// Worker threads of the plugin (all waiting is asynchronous).
const THREADS: usize = 2;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An sshd: address and port.
type Endpoint = (String, Option<u16>);

/// State shared by all runs.
pub struct Inner {
    cfg: Config,
    rt: Runtime,
    /// Connection setups in progress over all nodes.
    connects: Semaphore,
    /// Setups that steps wait for (prepared ones give way to them).
    step_setups: StepSetups,
    /// Connections by control socket path.
    conns: Mutex<HashMap<PathBuf, Arc<Conn>>>,
    /// Setup slots by (address, port).
    endpoints: Mutex<HashMap<Endpoint, Arc<Semaphore>>>,
    /// Cancel senders of the runs in progress.
    runs: Mutex<HashMap<u64, async_channel::Sender<()>>>,
    /// Generated ssh config files already written.
    written: Mutex<HashSet<PathBuf>>,
}

impl Inner {
    /// The private directory for control sockets whose preferred path is too
    /// long or not plain.
    fn fallback_dir() -> PathBuf {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        match std::env::var("XDG_RUNTIME_DIR") {
            Ok(d) if !d.is_empty() && d.len() < 40 && Path::new(&d).is_absolute() => {
                Path::new(&d).join("jobx-ssh")
            }
            _ => PathBuf::from(format!("/tmp/jobx-ssh-{uid}")),
        }
    }

    fn conn(&self, target: &Target, data_dir: &Path) -> Result<Arc<Conn>, String> {
        let ctl = control_path(data_dir, &Self::fallback_dir(), target, &self.cfg);
        if let Some(c) = lock(&self.conns).get(&ctl) {
            return Ok(c.clone());
        }
        let dir = ctl
            .parent()
            .ok_or_else(|| format!("bad control path {}", ctl.display()))?;
        ensure_private_dir(dir)?;
        let config_file = match &self.cfg.ssh_config {
            Some(extra) => Some(self.write_config(dir, extra)?),
            None => None,
        };
        let opts = SshOptions::new(&self.cfg, data_dir, config_file);
        let setups = lock(&self.endpoints)
            .entry((target.host.clone(), target.port))
            .or_insert_with(|| Arc::new(Semaphore::new(SETUPS_PER_ENDPOINT)))
            .clone();
        let conn = Arc::new(Conn::new(
            target.clone(),
            ctl.clone(),
            opts,
            self.cfg.max_sessions_per_node,
            setups,
        ));
        Ok(lock(&self.conns).entry(ctl).or_insert(conn).clone())
    }

    fn write_config(&self, dir: &Path, extra: &str) -> Result<PathBuf, String> {
        let text = generated_config(extra);
        let path = dir.join(format!(
            "config-{:016x}",
            crate::target::fnv1a64(text.as_bytes())
        ));
        if lock(&self.written).contains(&path) {
            return Ok(path);
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        lock(&self.written).insert(path.clone());
        Ok(path)
    }

    /// Checks the request and turns it into a plan (nothing runs yet).
    fn plan(&self, req: &StepRequest) -> Result<Plan, String> {
        match &req.kind {
            StepKind::Cmd {
                script,
                interpreter,
                args,
            } => {
                if script.contains('\0') {
                    return Err("the script contains a NUL byte".into());
                }
                let program = remote::command_program(
                    &req.env,
                    interpreter,
                    args,
                    script,
                    &remote::script_name(),
                )?;
                Ok(Plan::Cmd {
                    input: program.into_bytes(),
                })
            }
            StepKind::Scp {
                src,
                dst,
                chmod,
                chown,
                delete,
            } => Ok(Plan::Copy(run::copy_plan(
                src,
                dst,
                chmod.clone(),
                chown.clone(),
                *delete,
            )?)),
            _ => Err(StepKind::UNKNOWN.into()),
        }
    }
}

/// The executor.
pub struct SshExecutor {
    inner: Arc<Inner>,
}

impl Executor for SshExecutor {
    const TYPE: &'static str = "ssh";

    fn new(config: serde_json::Value) -> Result<Self, String> {
        let cfg = Config::from_json(config)?;
        let connects = Semaphore::new(cfg.max_concurrent_connects);
        Ok(SshExecutor {
            inner: Arc::new(Inner {
                cfg,
                rt: Runtime::start(THREADS)?,
                connects,
                step_setups: StepSetups::default(),
                conns: Mutex::new(HashMap::new()),
                endpoints: Mutex::new(HashMap::new()),
                runs: Mutex::new(HashMap::new()),
                written: Mutex::new(HashSet::new()),
            }),
        })
    }

    fn start(&self, run: RunId, step: StepRequest, out: Reporter) -> Result<(), String> {
        let inner = &self.inner;
        let target = Target::for_step(&step, &inner.cfg)?;
        let plan = inner.plan(&step)?;
        if step.data_dir.is_empty() {
            return Err("the step request has no data_dir".into());
        }
        let data_dir = std::path::absolute(&step.data_dir)
            .map_err(|e| format!("data_dir {}: {e}", step.data_dir))?;
        let conn = inner.conn(&target, &data_dir)?;

        let (tx, rx) = async_channel::bounded(1);
        let stop = Stop::new(rx, step.timeout_secs);
        lock(&inner.runs).insert(run.0, tx);
        let inner2 = inner.clone();
        inner.rt.spawn(async move {
            let result = AssertUnwindSafe(run::run(&inner2, conn, plan, &stop, &out))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| StepResult::failed("the ssh plugin failed unexpectedly"));
            lock(&inner2.runs).remove(&run.0);
            out.done(result);
        });
        Ok(())
    }

    fn cancel(&self, run: RunId) {
        if let Some(tx) = lock(&self.inner.runs).remove(&run.0) {
            tx.close();
        }
    }

    /// Opens (and authenticates) the master connections of the next batch
    /// in the background, under the same bounds as any connection setup
    /// (`max_concurrent_connects`, setups per endpoint), and only while no
    /// step is setting up a connection of its own (after a
    /// [`PREPARE_HEAD_START`] that lets the starting batch's steps begin
    /// theirs): the batch that runs comes first. They are the
    /// connections the batch's steps then use: a step that comes while its
    /// master is still being opened waits for that attempt instead of
    /// starting another. A node whose target is invalid is left to its
    /// step, which reports the error; a failed attempt is not reused by a
    /// step that comes later, which tries again itself.
    fn prepare(&self, req: PrepareRequest) -> Result<(), String> {
        let inner = &self.inner;
        if req.data_dir.is_empty() {
            return Err("the prepare request has no data_dir".into());
        }
        let data_dir = std::path::absolute(&req.data_dir)
            .map_err(|e| format!("data_dir {}: {e}", req.data_dir))?;
        for node in &req.nodes {
            let Ok(target) = Target::for_node(node, &req.user, &inner.cfg) else {
                continue;
            };
            let conn = inner.conn(&target, &data_dir)?;
            let inner2 = inner.clone();
            inner.rt.spawn(async move {
                async_io::Timer::after(PREPARE_HEAD_START).await;
                inner2.step_setups.idle().await;
                let opening = conn.ensure_master(
                    &inner2.connects,
                    &inner2.step_setups,
                    inner2.cfg.connect_timeout,
                    None,
                );
                let _ = AssertUnwindSafe(opening).catch_unwind().await;
            });
        }
        Ok(())
    }
}

export_plugin!(SshExecutor);
