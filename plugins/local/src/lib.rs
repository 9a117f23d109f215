//! The `local` executor plugin: runs steps on the daemon host.
//!
//! * `cmd` steps: the script is written to a private temporary file (mode
//!   0600, removed afterwards) and run as `<interpreter> <file> <args…>`;
//!   `bash`, `sh`, `python3` and `perl` are looked up in `PATH`, an absolute
//!   path is used as is. The environment is the daemon's plus the request's
//!   `env`. The working directory is `workdir` from the configuration,
//!   default the system temporary directory (`$TMPDIR` or `/tmp`) — never
//!   the data directory, where a careless `rm` would hit the store.
//! * The interpreter is exec'd directly (argv, no shell in between) as the
//!   leader of its own process group, stdin `/dev/null`. Timeout and cancel
//!   send SIGTERM to the group, then SIGKILL after `kill_grace_secs`. When
//!   the leader exits, whatever it left running in its group is killed too:
//!   a step leaves nothing behind (hand long-lived services to the service
//!   manager). If the daemon dies, even by SIGKILL, the instance's one
//!   reaper process kills every live group and removes their script files
//!   (see `reaper`).
//! * Output is streamed line by line; lines longer than 32 KiB are split.
//! * `scp` steps copy locally; see the `scp` module for the exact semantics.
//!
//! A `timeout_secs` of 0 means no time limit.
//!
//! Configuration (`[plugins.local]`, all optional): `workdir` (path),
//! `kill_grace_secs` (default 3), `copy_workers` (default 2).

#![forbid(unsafe_code)]

mod driver;
mod reaper;
mod scp;
mod spawn;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jobx_plugin_api::{export_plugin, Executor, Reporter, RunId, StepKind, StepRequest};
use serde::Deserialize;

// The step contract (script file, interpreters) is jobx-step's, shared
// with `jobx-agent`, which runs steps on its own host the same way.
use jobx_step::{resolve_interpreter, ScriptFile};

use crate::driver::Driver;
use crate::scp::{Copier, CopyJob};
use crate::spawn::Spec;

#[derive(Deserialize, Debug)]
#[serde(default, deny_unknown_fields)]
struct Config {
    workdir: Option<PathBuf>,
    kill_grace_secs: u64,
    copy_workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workdir: None,
            kill_grace_secs: 3,
            copy_workers: 2,
        }
    }
}

/// Where step scripts are written. A step's script is one file created and
/// removed per step and node; on a disk file system, thousands of those a
/// minute make inode allocation itself slow (ext4 scans past recently
/// deleted inodes), so a memory file system is preferred: systemd's
/// `RuntimeDirectory=` (`$RUNTIME_DIRECTORY`, its first path), then
/// `/dev/shm`, then the temp dir. Pure but for `usable`.
fn script_dir(
    runtime: Option<std::ffi::OsString>,
    shm: &Path,
    tmp: PathBuf,
    usable: impl Fn(&Path) -> bool,
) -> PathBuf {
    let runtime = runtime.and_then(|r| {
        let first = r.to_string_lossy().split(':').next()?.to_string();
        (!first.is_empty()).then(|| PathBuf::from(first))
    });
    runtime
        .into_iter()
        .chain([shm.to_path_buf()])
        .find(|d| usable(d))
        .unwrap_or(tmp)
}

/// A directory this process can create (and remove) a private file in.
fn usable_dir(dir: &Path) -> bool {
    match ScriptFile::create(dir, "probe", "") {
        Ok(probe) => {
            drop(probe);
            true
        }
        Err(_) => false,
    }
}

/// The executor.
pub struct Local {
    driver: Arc<Driver>,
    copier: Copier,
    workdir: PathBuf,
    script_dir: PathBuf,
}

impl Executor for Local {
    const TYPE: &'static str = "local";

    fn new(config: serde_json::Value) -> Result<Self, String> {
        let config: Config = jobx_plugin_api::config::parse("local", config)?;
        let workdir = config.workdir.unwrap_or_else(std::env::temp_dir);
        if !workdir.is_dir() {
            return Err(format!(
                "[plugins.local] workdir {} is not a directory",
                workdir.display()
            ));
        }
        let script_dir = script_dir(
            std::env::var_os("RUNTIME_DIRECTORY"),
            Path::new("/dev/shm"),
            std::env::temp_dir(),
            usable_dir,
        );
        let driver = Driver::spawn(Duration::from_secs(config.kill_grace_secs), &script_dir)
            .map_err(|e| format!("cannot start the local executor: {e}"))?;
        let copier = Copier::spawn(config.copy_workers)
            .map_err(|e| format!("cannot start the local copy workers: {e}"))?;
        Ok(Local {
            driver,
            copier,
            workdir,
            script_dir,
        })
    }

    fn start(&self, run: RunId, step: StepRequest, out: Reporter) -> Result<(), String> {
        match step.kind {
            StepKind::Cmd {
                script,
                interpreter,
                args,
            } => {
                let program = resolve_interpreter(&interpreter)?;
                let script =
                    ScriptFile::create(&self.script_dir, &step.step, &script).map_err(|e| {
                        format!(
                            "cannot write the script to {}: {e}",
                            self.script_dir.display()
                        )
                    })?;
                let mut argv = Vec::with_capacity(args.len() + 1);
                argv.push(script.path().to_string_lossy().into_owned());
                argv.extend(args);
                let spec = Spec {
                    program,
                    args: argv,
                    env: step.env.into_iter().collect(),
                    cwd: self.workdir.clone(),
                    timeout_secs: step.timeout_secs,
                };
                self.driver.start(run, spec, script, out)
            }
            StepKind::Scp {
                src,
                dst,
                chmod,
                chown,
                delete,
            } => {
                self.copier.submit(CopyJob {
                    run,
                    src: PathBuf::from(src),
                    dst,
                    chmod,
                    chown,
                    delete,
                    timeout_secs: step.timeout_secs,
                    out,
                });
                Ok(())
            }
            _ => Err(StepKind::UNKNOWN.into()),
        }
    }

    fn cancel(&self, run: RunId) {
        if !self.copier.cancel(run) {
            self.driver.cancel(run);
        }
    }
}

export_plugin!(Local);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters_resolve() {
        assert!(resolve_interpreter("sh").is_ok_and(|p| p.is_absolute()));
        assert!(resolve_interpreter("ruby").is_err());
        assert_eq!(resolve_interpreter("/opt/x"), Ok(PathBuf::from("/opt/x")));
    }

    #[test]
    fn interpreters() {
        assert!(resolve_interpreter("sh").unwrap().is_absolute());
        assert_eq!(
            resolve_interpreter("/opt/x/bin/ruby").unwrap(),
            PathBuf::from("/opt/x/bin/ruby")
        );
        assert!(resolve_interpreter("ruby").is_err());
        assert!(resolve_interpreter("../bash").is_err());
    }

    #[test]
    fn config_defaults_and_typos() {
        let c: Config = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(c.kill_grace_secs, 3);
        assert!(serde_json::from_value::<Config>(serde_json::json!({"workdirr": "/"})).is_err());
    }

    #[test]
    fn scripts_go_to_the_runtime_dir_then_dev_shm_then_the_temp_dir() {
        let shm = Path::new("/dev/shm");
        let tmp = PathBuf::from("/tmp");
        let all = |_: &Path| true;
        let runtime = Some(std::ffi::OsString::from("/run/jobx:/run/other"));
        assert_eq!(
            script_dir(runtime.clone(), shm, tmp.clone(), all),
            PathBuf::from("/run/jobx")
        );
        assert_eq!(script_dir(None, shm, tmp.clone(), all), shm);
        assert_eq!(
            script_dir(Some("".into()), shm, tmp.clone(), all),
            shm,
            "an empty RUNTIME_DIRECTORY names nothing"
        );
        let only_tmp = |d: &Path| d == Path::new("/tmp");
        assert_eq!(script_dir(runtime, shm, tmp.clone(), only_tmp), tmp);
    }

    #[test]
    fn a_usable_dir_is_one_a_file_can_be_created_in_and_the_probe_is_removed() {
        let dir = std::env::temp_dir().join(format!("jobx-usable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(usable_dir(&dir));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
        assert!(!usable_dir(&dir));
    }
}
