//! Which program runs a script.

use std::path::{Path, PathBuf};

/// Interpreters looked up in `PATH`.
const INTERPRETERS: &[&str] = &["bash", "sh", "python3", "perl"];

/// Resolves an interpreter name to an executable path.
pub fn resolve_interpreter(name: &str) -> Result<PathBuf, String> {
    let path = Path::new(name);
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    if !INTERPRETERS.contains(&name) {
        return Err(format!(
            "unsupported interpreter {name:?}: use bash, sh, python3, perl or an absolute path"
        ));
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| format!("interpreter {name} not found in PATH"))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters() {
        assert!(resolve_interpreter("sh").is_ok_and(|p| p.is_absolute()));
        assert_eq!(resolve_interpreter("/opt/x"), Ok(PathBuf::from("/opt/x")));
        assert!(resolve_interpreter("ruby").is_err());
        assert!(resolve_interpreter("../bash").is_err());
    }
}
