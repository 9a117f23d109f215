//! What every copy shares, on the daemon host and on an agent: modes,
//! temporary names, and the end of a copy (`chmod`, `chown`, the summary).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a copy did.
#[derive(Default, Debug)]
pub struct CopyStats {
    pub files: u64,
    pub bytes: u64,
    pub removed: u64,
}

/// The end of every copy: `chmod` and `chown` on what was copied to
/// `target` (`skipped` gets a line when chown is not possible), then the
/// summary line to report.
pub fn finish_copy(
    target: &Path,
    mode: Option<u32>,
    owner: Option<&str>,
    stats: &CopyStats,
    skipped: impl FnOnce(String),
) -> Result<String, String> {
    if let Some(mode) = mode {
        fs::set_permissions(target, fs::Permissions::from_mode(mode))
            .map_err(|e| format!("scp: chmod {}: {e}", target.display()))?;
    }
    if let Some(owner) = owner.filter(|o| !o.is_empty()) {
        chown(owner, target, skipped)?;
    }
    let mut summary = format!(
        "copied {} file(s), {} byte(s) to {}",
        stats.files,
        stats.bytes,
        target.display()
    );
    if stats.removed > 0 {
        summary.push_str(&format!(", removed {} extra entr(ies)", stats.removed));
    }
    Ok(summary)
}

/// Parses an octal mode like `0755` or `644`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let t = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(t, 8) {
        Ok(m) if !t.is_empty() && m <= 0o7777 => Ok(m),
        _ => Err(format!(
            "invalid chmod {text:?}: expected an octal mode like 0755"
        )),
    }
}

/// Gives `target` to `owner` (`user` or `user:group`) with the system
/// `chown`; when not running as root, nothing is changed and `skipped` gets
/// a line to report instead.
pub fn chown(owner: &str, target: &Path, skipped: impl FnOnce(String)) -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        skipped(format!("chown {owner} skipped: not running as root"));
        return Ok(());
    }
    // The system chown resolves user and group names (NSS included); the
    // owner goes in argv, never through a shell.
    let status = std::process::Command::new("chown")
        .arg("--")
        .arg(owner)
        .arg(target)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("scp: cannot run chown: {e}"))?;
    if status.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scp: chown {owner} {}: {}",
            target.display(),
            String::from_utf8_lossy(&status.stderr).trim()
        ))
    }
}

/// A hidden temporary name beside `dst`, renamed into place once written.
pub fn temp_name(dst: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(dst.file_name().unwrap_or_default());
    name.push(format!(".jobx-{}", crate::script::unique()));
    dst.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0755"), Ok(0o755));
        assert_eq!(parse_mode("0o644"), Ok(0o644));
        assert!(parse_mode("").is_err());
        assert!(parse_mode("8").is_err());
    }

    #[test]
    fn temp_names_are_hidden_beside_the_target() {
        let t = temp_name(Path::new("/srv/app/bin"));
        assert_eq!(t.parent(), Some(Path::new("/srv/app")));
        let name = t.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(name.starts_with(".bin.jobx-"), "{name}");
        assert_ne!(temp_name(Path::new("/x")), temp_name(Path::new("/x")));
    }

    #[test]
    fn finish_copy_summarizes() {
        let stats = CopyStats {
            files: 2,
            bytes: 10,
            removed: 1,
        };
        let dir = std::env::temp_dir();
        let s = finish_copy(&dir, None, None, &stats, |_| {}).expect("summary");
        assert_eq!(
            s,
            format!(
                "copied 2 file(s), 10 byte(s) to {}, removed 1 extra entr(ies)",
                dir.display()
            )
        );
    }
}
