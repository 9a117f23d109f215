//! `scp` steps on the daemon host: a local copy, done by a small fixed pool
//! of worker threads.
//!
//! Semantics (independent of whether `dst` exists, like `rsync -a src/ dst/`
//! for directories):
//! * `src` is a file: `dst` names the target file, or, when `dst` ends with
//!   `/` or is an existing directory, the directory to copy it into.
//!   Missing parent directories are created.
//! * `src` is a directory: `dst` becomes a directory with the same contents,
//!   recursively; symbolic links are copied as links.
//! * Files are written to a temporary name and renamed into place, so a
//!   running program being replaced is never half-written. Permission bits
//!   are taken from the source.
//! * `delete` (directories only): entries under `dst` that `src` does not
//!   have are removed.
//! * `chmod` (octal, e.g. `"0755"`) and `chown` (`user` or `user:group`)
//!   apply to the target itself (the copied file, or the `dst` directory).
//!   `chown` needs root; otherwise it is skipped with an info line.
//! * Timeout and cancel are checked between files and between chunks of
//!   large files.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jobx_plugin_api::{Reporter, RunId, StepResult};
use jobx_step::{finish_copy, parse_mode, temp_name, CopyStats};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One copy to do.
pub struct CopyJob {
    /// The run it belongs to.
    pub run: RunId,
    /// Source path.
    pub src: PathBuf,
    /// Destination path, as given (a trailing `/` matters for files).
    pub dst: String,
    /// Octal mode for the target.
    pub chmod: Option<String>,
    /// Owner for the target.
    pub chown: Option<String>,
    /// Mirror directories.
    pub delete: bool,
    /// 0 = no limit.
    pub timeout_secs: u64,
    /// Where to report.
    pub out: Reporter,
}

struct Queued {
    job: CopyJob,
    stop: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Queued>>,
    ready: Condvar,
    /// Cancel flags of queued and running copies.
    running: Mutex<HashMap<RunId, Arc<AtomicBool>>>,
}

/// The copy workers.
pub struct Copier {
    shared: Arc<Shared>,
}

impl Copier {
    /// Starts `workers` threads.
    pub fn spawn(workers: usize) -> io::Result<Copier> {
        let shared = Arc::new(Shared::default());
        for n in 0..workers.max(1) {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("jobx-local-copy-{n}"))
                .spawn(move || worker(&shared))?;
        }
        Ok(Copier { shared })
    }

    /// Queues a copy; the deadline counts from now.
    pub fn submit(&self, job: CopyJob) {
        let stop = Arc::new(AtomicBool::new(false));
        lock(&self.shared.running).insert(job.run, stop.clone());
        let deadline =
            (job.timeout_secs > 0).then(|| Instant::now() + Duration::from_secs(job.timeout_secs));
        lock(&self.shared.queue).push_back(Queued {
            job,
            stop,
            deadline,
        });
        self.shared.ready.notify_one();
    }

    /// Stops a copy if it is queued or running; returns whether it was.
    pub fn cancel(&self, run: RunId) -> bool {
        match lock(&self.shared.running).get(&run) {
            Some(stop) => {
                stop.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }
}

fn worker(shared: &Shared) {
    loop {
        let next = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(q) = queue.pop_front() {
                    break q;
                }
                queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        let Queued {
            job,
            stop,
            deadline,
        } = next;
        let run = job.run;
        let out = job.out.clone();
        let limits = Limits {
            stop: &stop,
            deadline,
            timeout_secs: job.timeout_secs,
        };
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            copy_job(&job, &limits)
        })) {
            Ok(Ok(summary)) => {
                out.info(summary);
                StepResult::ok()
            }
            Ok(Err(msg)) => StepResult::failed(msg),
            Err(_) => StepResult::failed("the copy failed unexpectedly"),
        };
        lock(&shared.running).remove(&run);
        out.done(result);
    }
}

struct Limits<'a> {
    stop: &'a AtomicBool,
    deadline: Option<Instant>,
    timeout_secs: u64,
}

impl Limits<'_> {
    fn check(&self) -> Result<(), String> {
        if self.stop.load(Ordering::Acquire) {
            return Err("cancelled".to_string());
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(format!("timeout after {} s", self.timeout_secs));
        }
        Ok(())
    }
}

fn copy_job(job: &CopyJob, limits: &Limits) -> Result<String, String> {
    let mode = job.chmod.as_deref().map(parse_mode).transpose()?;
    if job.dst.is_empty() {
        return Err("scp: empty dst".to_string());
    }
    let meta = fs::symlink_metadata(&job.src)
        .map_err(|e| format!("scp: cannot read {}: {e}", job.src.display()))?;
    let mut stats = CopyStats::default();
    let target = if meta.is_dir() {
        let dst = PathBuf::from(&job.dst);
        if inside(&dst, &job.src) {
            return Err(format!(
                "scp: {} is inside {}: it would copy itself forever",
                dst.display(),
                job.src.display()
            ));
        }
        copy_dir(&job.src, &dst, job.delete, limits, &mut stats)?;
        dst
    } else {
        let dst = PathBuf::from(&job.dst);
        let target = if job.dst.ends_with('/') || dst.is_dir() {
            let name = job
                .src
                .file_name()
                .ok_or_else(|| format!("scp: {} has no file name", job.src.display()))?;
            dst.join(name)
        } else {
            dst
        };
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .map_err(|e| format!("scp: cannot create {}: {e}", parent.display()))?;
        }
        copy_entry(&job.src, &target, limits, &mut stats)?;
        target
    };
    finish_copy(&target, mode, job.chown.as_deref(), &stats, |line| {
        job.out.info(line)
    })
}

/// Whether `path` is `dir` or lies under it (resolving what exists of it).
fn inside(path: &Path, dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    // The destination may not exist yet: resolve its longest existing prefix.
    let mut probe = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = probe.canonicalize() {
            let full: PathBuf = real.join(rest.iter().rev().collect::<PathBuf>());
            return full.starts_with(&dir);
        }
        match (probe.file_name(), probe.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                probe = parent.to_path_buf();
            }
            _ => return false,
        }
    }
}

/// Copies one non-directory entry (file or symlink) to `dst`.
fn copy_entry(
    src: &Path,
    dst: &Path,
    limits: &Limits,
    stats: &mut CopyStats,
) -> Result<(), String> {
    limits.check()?;
    let meta = fs::symlink_metadata(src).map_err(|e| format!("scp: {}: {e}", src.display()))?;
    if let Ok(existing) = fs::symlink_metadata(dst) {
        if existing.is_dir() {
            fs::remove_dir_all(dst)
                .map_err(|e| format!("scp: cannot replace {}: {e}", dst.display()))?;
        }
    }
    let tmp = temp_name(dst);
    let result = if meta.file_type().is_symlink() {
        fs::read_link(src)
            .and_then(|target| std::os::unix::fs::symlink(target, &tmp))
            .map_err(|e| format!("scp: symlink {}: {e}", dst.display()))
    } else if meta.is_file() {
        copy_file(src, &tmp, meta.permissions().mode() & 0o7777, limits, stats)
    } else {
        return Err(format!(
            "scp: {} is not a regular file, directory or symlink",
            src.display()
        ));
    };
    if let Err(e) = result.and_then(|()| {
        fs::rename(&tmp, dst).map_err(|e| format!("scp: cannot write {}: {e}", dst.display()))
    }) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    stats.files += 1;
    Ok(())
}

fn copy_file(
    src: &Path,
    tmp: &Path,
    mode: u32,
    limits: &Limits,
    stats: &mut CopyStats,
) -> Result<(), String> {
    let mut input = fs::File::open(src).map_err(|e| format!("scp: {}: {e}", src.display()))?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| format!("scp: cannot create {}: {e}", tmp.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        limits.check()?;
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("scp: reading {}: {e}", src.display())),
        };
        output
            .write_all(&buf[..n])
            .map_err(|e| format!("scp: writing {}: {e}", tmp.display()))?;
        stats.bytes += n as u64;
    }
    output
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| format!("scp: chmod {}: {e}", tmp.display()))?;
    Ok(())
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    delete: bool,
    limits: &Limits,
    stats: &mut CopyStats,
) -> Result<(), String> {
    limits.check()?;
    match fs::symlink_metadata(dst) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            fs::remove_file(dst)
                .map_err(|e| format!("scp: cannot replace {}: {e}", dst.display()))?;
            fs::create_dir_all(dst)
                .map_err(|e| format!("scp: cannot create {}: {e}", dst.display()))?;
        }
        Err(_) => fs::create_dir_all(dst)
            .map_err(|e| format!("scp: cannot create {}: {e}", dst.display()))?,
    }
    let src_mode = fs::metadata(src)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(|e| format!("scp: {}: {e}", src.display()))?;
    let mut names = HashSet::new();
    let entries = fs::read_dir(src).map_err(|e| format!("scp: {}: {e}", src.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("scp: {}: {e}", src.display()))?;
        let name = entry.file_name();
        let from = entry.path();
        let to = dst.join(&name);
        let ty = entry
            .file_type()
            .map_err(|e| format!("scp: {}: {e}", from.display()))?;
        if ty.is_dir() {
            copy_dir(&from, &to, delete, limits, stats)?;
        } else {
            copy_entry(&from, &to, limits, stats)?;
        }
        names.insert(name);
    }
    if delete {
        let existing = fs::read_dir(dst).map_err(|e| format!("scp: {}: {e}", dst.display()))?;
        for entry in existing.flatten() {
            if names.contains(&entry.file_name()) {
                continue;
            }
            let path = entry.path();
            let removed = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            removed.map_err(|e| format!("scp: cannot remove {}: {e}", path.display()))?;
            stats.removed += 1;
        }
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(src_mode))
        .map_err(|e| format!("scp: chmod {}: {e}", dst.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_inside_source() {
        let root =
            std::env::temp_dir().join(format!("jobx-scp-inside-{}", crate::driver::unique()));
        fs::create_dir_all(root.join("src/sub")).unwrap();
        assert!(inside(&root.join("src"), &root.join("src")));
        assert!(inside(&root.join("src/sub/new/deeper"), &root.join("src")));
        assert!(inside(&root.join("src/../src/x"), &root.join("src")));
        assert!(!inside(&root.join("srcx"), &root.join("src")));
        assert!(!inside(&root.join("dst"), &root.join("src")));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0755"), Ok(0o755));
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("4755"), Ok(0o4755));
        assert!(parse_mode("").is_err());
        assert!(parse_mode("0855").is_err());
        assert!(parse_mode("77777").is_err());
        assert!(parse_mode("rwx").is_err());
    }
}
