//! One run: a command or a copy on one node.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_process::Command;
use jobx_plugin_api::{Reporter, StepResult};

use crate::classify::{connect_failure, is_connection_loss, ConnectFailure};
use crate::config::FileCopy;
use crate::conn::{backoff, Conn};
use crate::remote;
use crate::session::{self, Launch, Mode, Outcome};
use crate::target::rsync_rsh;
use crate::Inner;

/// Session attempts when ssh fails before the remote command started.
const SESSION_ATTEMPTS: u32 = 3;

/// A checked request, ready to run.
pub enum Plan {
    /// Run a script.
    Cmd {
        /// The program of the remote shell: the session's stdin.
        input: Vec<u8>,
    },
    /// Copy a file or a directory.
    Copy(CopyPlan),
}

/// A checked copy.
#[derive(Debug)]
pub struct CopyPlan {
    /// Local source.
    pub src: PathBuf,
    /// Whether the source is a directory.
    pub src_is_dir: bool,
    /// Destination as given.
    pub dst: String,
    /// Octal mode for the target.
    pub chmod: Option<String>,
    /// Owner for the target.
    pub chown: Option<String>,
    /// Mirror directories.
    pub delete: bool,
}

/// `dst` without trailing slashes (but `/` stays `/`).
fn trim_slashes(dst: &str) -> &str {
    let t = dst.trim_end_matches('/');
    if t.is_empty() && dst.starts_with('/') {
        "/"
    } else {
        t
    }
}

/// The directory part of a remote path (`.` for a bare name).
pub fn remote_parent(path: &str) -> String {
    let t = trim_slashes(path);
    match t.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => t[..i].to_string(),
        None => ".".to_string(),
    }
}

/// Joins a remote directory and a name.
fn remote_join(dir: &str, name: &str) -> String {
    let d = trim_slashes(dir);
    if d == "/" {
        format!("/{name}")
    } else {
        format!("{d}/{name}")
    }
}

impl CopyPlan {
    fn file_name(&self) -> String {
        self.src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".to_string())
    }

    /// (target before knowing whether `dst` is a directory, directory to
    /// create first).
    pub fn initial_target(&self) -> (String, String) {
        if self.src_is_dir {
            let t = trim_slashes(&self.dst).to_string();
            (t.clone(), t)
        } else if self.dst.ends_with('/') {
            let dir = trim_slashes(&self.dst).to_string();
            (remote_join(&dir, &self.file_name()), dir)
        } else {
            (self.dst.clone(), remote_parent(&self.dst))
        }
    }
}

/// The remote command in a session over the node's master.
fn remote_session(conn: &Conn) -> Launch {
    Launch::Session {
        ctl: conn.ctl.clone(),
        command: remote::REMOTE_COMMAND.to_string(),
    }
}

/// Runs a plan on the node. The caller holds no locks.
pub async fn run(
    inner: &Inner,
    conn: Arc<Conn>,
    plan: Plan,
    stop: &crate::runtime::Stop,
    out: &Reporter,
) -> StepResult {
    let _slot = match stop.guard(conn.session_slot()).await {
        Ok(slot) => slot,
        Err(reason) => return StepResult::failed(reason.message()),
    };
    match plan {
        Plan::Cmd { input } => run_cmd(inner, &conn, input, stop, out).await,
        Plan::Copy(copy) => match run_copy(inner, &conn, &copy, stop, out).await {
            Ok(()) => StepResult::ok(),
            Err(msg) => StepResult::failed(msg),
        },
    }
}

async fn connect(
    inner: &Inner,
    conn: &Conn,
    stop: &crate::runtime::Stop,
    out: &Reporter,
) -> Result<(), String> {
    match stop
        .guard(conn.ensure_master(
            &inner.connects,
            &inner.step_setups,
            inner.cfg.connect_timeout,
            Some(out),
        ))
        .await
    {
        Ok(r) => r,
        Err(reason) => Err(reason.message()),
    }
}

async fn run_cmd(
    inner: &Inner,
    conn: &Conn,
    input: Vec<u8>,
    stop: &crate::runtime::Stop,
    out: &Reporter,
) -> StepResult {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if let Err(msg) = connect(inner, conn, stop, out).await {
            return StepResult::failed(msg);
        }
        let outcome = match session::run(
            &inner.rt,
            remote_session(conn),
            input.clone(),
            Mode::Step,
            stop,
            out,
        )
        .await
        {
            Ok(o) => o,
            Err(e) => return StepResult::failed(format!("cannot run ssh: {e}")),
        };
        if outcome.started && outcome.code != Some(255) {
            // The session went through the master: no need to ask it again soon.
            conn.confirm_alive().await;
        }
        if let Some(reason) = outcome.stopped {
            return StepResult::failed(reason.message());
        }
        if let Some(why) = outcome.lost {
            return StepResult::failed(format!("connection lost: {why}"));
        }
        match outcome.code {
            Some(255) if !outcome.started => {
                // ssh failed before the step started: safe to try again.
                let msg = match connect_failure(
                    &outcome.held_stderr,
                    &conn.target.display(),
                    &conn.opts.known_hosts,
                ) {
                    ConnectFailure::Permanent(msg) => return StepResult::failed(msg),
                    ConnectFailure::Transient { message, .. } => message,
                };
                if attempt >= SESSION_ATTEMPTS {
                    return StepResult::failed(format!("unreachable: {msg}"));
                }
                out.info(format!(
                    "ssh session failed before the step started ({msg}); retrying"
                ));
                conn.invalidate().await;
                if let Err(reason) = stop.guard(async_io::Timer::after(backoff(attempt))).await {
                    return StepResult::failed(reason.message());
                }
            }
            Some(255) if is_connection_loss(&outcome.last_stderr) => {
                return StepResult::failed(format!(
                    "connection lost: {}",
                    outcome.last_stderr.trim()
                ));
            }
            Some(code) => return StepResult::exited(code),
            None => return StepResult::failed("ssh was killed by a signal"),
        }
    }
}

/// Runs a helper script (copy preparation and finishing) on the node and
/// returns its stdout lines.
async fn helper(
    inner: &Inner,
    conn: &Conn,
    script: String,
    what: &str,
    stop: &crate::runtime::Stop,
    out: &Reporter,
) -> Result<Vec<String>, String> {
    let o = session::run(
        &inner.rt,
        remote_session(conn),
        remote::helper_program(&script).into_bytes(),
        Mode::Helper,
        stop,
        out,
    )
    .await
    .map_err(|e| format!("cannot run ssh: {e}"))?;
    check_outcome(&o, what)?;
    Ok(o.stdout)
}

fn check_outcome(o: &Outcome, what: &str) -> Result<(), String> {
    if let Some(reason) = o.stopped {
        return Err(reason.message());
    }
    match o.code {
        Some(0) => Ok(()),
        Some(code) => Err(format!(
            "{what} failed (exit {code}){}",
            if o.last_stderr.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", o.last_stderr.trim())
            }
        )),
        None => Err(format!("{what} failed: killed by a signal")),
    }
}

fn local_rsync() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("rsync").is_file()))
            .unwrap_or(false)
    })
}

async fn run_copy(
    inner: &Inner,
    conn: &Conn,
    copy: &CopyPlan,
    stop: &crate::runtime::Stop,
    out: &Reporter,
) -> Result<(), String> {
    connect(inner, conn, stop, out).await?;
    let (mut target, mkdir) = copy.initial_target();
    let lines = helper(
        inner,
        conn,
        remote::copy_prepare(&copy.dst, &mkdir)?,
        "preparing the copy on the node",
        stop,
        out,
    )
    .await?;
    let dst_is_dir = lines.iter().any(|l| l == remote::COPY_DST_IS_DIR);
    conn.set_has_rsync(lines.iter().any(|l| l == remote::COPY_HAS_RSYNC))
        .await;
    if !copy.src_is_dir && dst_is_dir && !copy.dst.ends_with('/') {
        target = remote_join(&copy.dst, &copy.file_name());
    }
    let use_rsync = inner.cfg.file_copy == FileCopy::Auto
        && local_rsync()
        && conn.has_rsync().await.unwrap_or(false);

    let mut staged = None;
    let cmd = if use_rsync {
        let mut c = std::process::Command::new("rsync");
        c.args(["-rlpt", "--protect-args"]);
        if copy.src_is_dir && copy.delete {
            c.arg("--delete");
        }
        c.arg("-e").arg(rsync_rsh(&conn.ctl, conn.target.port)?);
        c.arg("--");
        if copy.src_is_dir {
            // "src/" copies the contents: dst becomes a copy of src.
            let mut s = copy.src.clone().into_os_string();
            s.push("/");
            c.arg(s);
            c.arg(
                conn.target
                    .remote_path(&format!("{}/", trim_slashes(&target))),
            );
        } else {
            c.arg(&copy.src);
            c.arg(conn.target.remote_path(&target));
        }
        c
    } else {
        let mut c = std::process::Command::new("scp");
        c.arg("-q").arg("-p");
        c.args(
            conn.opts
                .scp_args(&conn.target, &conn.ctl, inner.cfg.connect_timeout),
        );
        let dest = if copy.src_is_dir {
            // scp -r into an existing directory nests the source inside it:
            // copy to a fresh name, then move into place.
            c.arg("-r");
            let s = format!("{}.jobx-{:016x}", trim_slashes(&target), unique());
            staged = Some(s.clone());
            s
        } else {
            target.clone()
        };
        c.arg("--")
            .arg(&copy.src)
            .arg(conn.target.remote_path(&dest));
        c
    };
    let mut cmd = cmd;
    {
        use std::os::unix::process::CommandExt;
        // Own process group: a stop kills the copy program and its ssh.
        cmd.process_group(0);
    }
    let program = if use_rsync { "rsync" } else { "scp" };
    let o = session::run(
        &inner.rt,
        Launch::Process(Command::from(cmd)),
        Vec::new(),
        Mode::Copy,
        stop,
        out,
    )
    .await
    .map_err(|e| format!("cannot run {program}: {e}"))?;
    check_outcome(&o, &format!("{program} to {}", conn.target.display()))?;

    let finish = remote::copy_finish(
        &target,
        staged.as_deref().map(|s| (s, copy.delete)),
        copy.chmod.as_deref(),
        copy.chown.as_deref(),
    )?;
    if !finish.is_empty() {
        let lines = helper(
            inner,
            conn,
            finish,
            "finishing the copy on the node",
            stop,
            out,
        )
        .await?;
        if lines.iter().any(|l| l == remote::CHOWN_SKIPPED) {
            out.info("chown skipped: the login user is not root");
        }
    }
    out.info(format!(
        "copied {} to {}:{} with {program}",
        copy.src.display(),
        conn.target.display(),
        target
    ));
    Ok(())
}

/// A value unlikely to repeat, for temporary names on the node.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = format!(
        "{nanos}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    crate::target::fnv1a64(seed.as_bytes())
}

/// Checks a copy request against the local file system.
pub fn copy_plan(
    src: &str,
    dst: &str,
    chmod: Option<String>,
    chown: Option<String>,
    delete: bool,
) -> Result<CopyPlan, String> {
    if dst.is_empty() {
        return Err("scp: dst is empty".into());
    }
    if dst.contains('\0') {
        return Err("scp: dst contains a NUL byte".into());
    }
    if let Some(m) = &chmod {
        remote::check_mode(m)?;
    }
    if let Some(o) = &chown {
        remote::check_owner(o)?;
    }
    let path = Path::new(src);
    let meta = std::fs::metadata(path).map_err(|e| format!("scp: cannot read src {src}: {e}"))?;
    Ok(CopyPlan {
        src: path.to_path_buf(),
        src_is_dir: meta.is_dir(),
        dst: dst.to_string(),
        chmod,
        chown,
        delete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_path_helpers() {
        assert_eq!(remote_parent("/opt/app/bin"), "/opt/app");
        assert_eq!(remote_parent("/opt/app/"), "/opt");
        assert_eq!(remote_parent("/opt"), "/");
        assert_eq!(remote_parent("app"), ".");
        assert_eq!(remote_parent("a/b"), "a");
        assert_eq!(remote_join("/", "x"), "/x");
        assert_eq!(remote_join("/opt/", "x"), "/opt/x");
        assert_eq!(trim_slashes("/"), "/");
        assert_eq!(trim_slashes("/a//"), "/a");
    }

    fn plan(src_is_dir: bool, dst: &str) -> CopyPlan {
        CopyPlan {
            src: PathBuf::from("/build/app.tar"),
            src_is_dir,
            dst: dst.into(),
            chmod: None,
            chown: None,
            delete: false,
        }
    }

    #[test]
    fn targets_follow_the_local_executor_semantics() {
        assert_eq!(
            plan(false, "/opt/app.tar").initial_target(),
            ("/opt/app.tar".into(), "/opt".into())
        );
        assert_eq!(
            plan(false, "/opt/releases/").initial_target(),
            ("/opt/releases/app.tar".into(), "/opt/releases".into())
        );
        assert_eq!(
            plan(true, "/srv/www/").initial_target(),
            ("/srv/www".into(), "/srv/www".into())
        );
    }

    #[test]
    fn copy_plans_check_inputs() {
        assert!(copy_plan("/nonexistent/x", "/y", None, None, false)
            .unwrap_err()
            .contains("/nonexistent/x"));
        assert!(copy_plan("/", "", None, None, false).is_err());
        assert!(copy_plan("/", "/x", Some("999".into()), None, false).is_err());
        assert!(copy_plan("/", "/x", None, Some("a b".into()), false).is_err());
        let p = copy_plan("/", "/x", Some("0755".into()), Some("root".into()), true).unwrap();
        assert!(p.src_is_dir);
    }
}
