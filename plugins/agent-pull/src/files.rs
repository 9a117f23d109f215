//! `scp` sources served to agents: listing a source tree and reading file
//! pieces happen on a small fixed pool of threads, never on the host's.

use std::collections::VecDeque;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use crate::hub::{lock, Files};
use crate::proto::{Entry, Manifest};

/// Largest piece of a file served by one request.
pub const PIECE: usize = 1 << 20;
/// Most entries one source may have.
const MAX_ENTRIES: usize = 200_000;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

/// A fixed pool of worker threads.
pub struct Pool {
    queue: Arc<Queue>,
}

impl Pool {
    /// Starts `workers` threads.
    pub fn spawn(workers: usize) -> std::io::Result<Pool> {
        let queue = Arc::new(Queue::default());
        for n in 0..workers.max(1) {
            let q = queue.clone();
            std::thread::Builder::new()
                .name(format!("jobx-agent-files-{n}"))
                .spawn(move || loop {
                    let job = {
                        let mut jobs = lock(&q.jobs);
                        loop {
                            if let Some(j) = jobs.pop_front() {
                                break j;
                            }
                            jobs = q.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    // A panicking job answers 500 through its dropped responder;
                    // the worker lives on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                })?;
        }
        Ok(Pool { queue })
    }

    /// Queues a job.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        lock(&self.queue.jobs).push_back(Box::new(job));
        self.queue.ready.notify_one();
    }
}

fn utf8(path: &Path) -> Result<String, String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("scp: {} is not a UTF-8 path", path.display()))
}

/// Lists `src`: the source itself first, directories before their contents,
/// names sorted.
pub fn list(src: &Path) -> Result<Files, String> {
    let meta = fs::symlink_metadata(src)
        .map_err(|e| format!("scp: cannot read {}: {e}", src.display()))?;
    let name = match src.file_name() {
        Some(n) => utf8(Path::new(n))?,
        None if meta.is_dir() => String::new(),
        None => return Err(format!("scp: {} has no file name", src.display())),
    };
    let mut files = Files {
        manifest: Manifest {
            name,
            entries: Vec::new(),
        },
        paths: Vec::new(),
    };
    add(&mut files, src, String::new(), &meta)?;
    Ok(files)
}

fn add(files: &mut Files, path: &Path, rel: String, meta: &fs::Metadata) -> Result<(), String> {
    if files.paths.len() >= MAX_ENTRIES {
        return Err(format!("scp: more than {MAX_ENTRIES} entries to copy"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    let ty = meta.file_type();
    let mut entry = Entry {
        path: rel.clone(),
        mode,
        ..Entry::default()
    };
    if ty.is_symlink() {
        let target = fs::read_link(path).map_err(|e| format!("scp: {}: {e}", path.display()))?;
        entry.kind = "symlink".to_string();
        entry.target = Some(utf8(&target)?);
    } else if ty.is_file() {
        entry.kind = "file".to_string();
        entry.size = meta.len();
    } else if ty.is_dir() {
        entry.kind = "dir".to_string();
    } else {
        return Err(format!(
            "scp: {} is not a regular file, directory or symlink",
            path.display()
        ));
    }
    files.manifest.entries.push(entry);
    files.paths.push(path.to_path_buf());
    if ty.is_dir() {
        let mut children = Vec::new();
        for e in fs::read_dir(path).map_err(|e| format!("scp: {}: {e}", path.display()))? {
            let e = e.map_err(|e| format!("scp: {}: {e}", path.display()))?;
            children.push(e.path());
        }
        children.sort();
        for child in children {
            let meta = fs::symlink_metadata(&child)
                .map_err(|e| format!("scp: {}: {e}", child.display()))?;
            let name = utf8(Path::new(child.file_name().unwrap_or_default()))?;
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            add(files, &child, rel, &meta)?;
        }
    }
    Ok(())
}

/// Reads up to [`PIECE`] bytes of a listed file from `offset`.
pub fn piece(path: &PathBuf, offset: u64) -> Result<Vec<u8>, String> {
    let file = fs::File::open(path).map_err(|e| format!("scp: {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("scp: {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "scp: {} is no longer a regular file",
            path.display()
        ));
    }
    let mut file = file;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("scp: {}: {e}", path.display()))?;
    let mut buf = Vec::with_capacity(PIECE.min(meta.len().saturating_sub(offset) as usize));
    file.take(PIECE as u64)
        .read_to_end(&mut buf)
        .map_err(|e| format!("scp: reading {}: {e}", path.display()))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_a_tree_in_pre_order() {
        let root = std::env::temp_dir().join(format!("jobx-ap-list-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("src/b")).unwrap();
        fs::write(root.join("src/a.txt"), "hello").unwrap();
        fs::write(root.join("src/b/c"), "x").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("src/link")).unwrap();
        let files = list(&root.join("src")).unwrap();
        let got: Vec<(&str, &str)> = files
            .manifest
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.kind.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("", "dir"),
                ("a.txt", "file"),
                ("b", "dir"),
                ("b/c", "file"),
                ("link", "symlink")
            ]
        );
        assert_eq!(files.manifest.name, "src");
        assert_eq!(files.manifest.entries[1].size, 5);
        assert_eq!(files.manifest.entries[4].target.as_deref(), Some("a.txt"));
        assert_eq!(piece(&files.paths[1], 1).unwrap(), b"ello");
        assert_eq!(piece(&files.paths[1], 10).unwrap(), b"");
        assert!(list(&root.join("missing")).is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
