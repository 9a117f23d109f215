//! The step's script in a private temporary file.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// A script written to a private temporary file, removed when dropped.
pub struct ScriptFile {
    path: PathBuf,
}

impl ScriptFile {
    /// Writes `script` to a new file (mode 0600) in `dir`.
    pub fn create(dir: &Path, tag: &str, script: &str) -> io::Result<ScriptFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(40)
            .collect();
        let mut attempt = 0u32;
        loop {
            let path = dir.join(format!("jobx-{tag}-{}.script", unique()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut file) => {
                    let file_guard = ScriptFile { path };
                    file.write_all(script.as_bytes())?;
                    return Ok(file_guard);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Where the script is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScriptFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A name part unlikely to repeat: pid, time and a counter.
pub fn unique() -> String {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
