//! `scp` steps: the source lives on the daemon host; the agent downloads it
//! (`GET /v1/files/<lease>` lists it, `…/<n>?offset=` reads pieces) with
//! the same semantics as jobx's `local` executor:
//! * a file source: `dst` names the target file, or, when `dst` ends with
//!   `/` or is an existing directory, the directory to copy it into;
//!   missing parent directories are created;
//! * a directory source: `dst` becomes a directory with the same contents;
//!   symbolic links are copied as links;
//! * files are written to a temporary name and renamed into place;
//!   permission bits come from the source;
//! * `delete` removes entries under `dst` that the source does not have;
//! * `chmod` and `chown` apply to the target itself; `chown` needs root,
//!   otherwise it is skipped with an info line.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jobx_step::{finish_copy, parse_mode, temp_name, CopyStats};

use crate::client::Client;
use crate::output::Output;
use crate::proto::{Entry, Manifest};

/// Largest piece asked for at once (the daemon serves at most 1 MiB).
const PIECE_LIMIT: u64 = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);

/// What the copy is told about the step.
pub struct Copy<'a> {
    pub client: &'a Client,
    pub lease: &'a str,
    pub dst: &'a str,
    pub chmod: Option<&'a str>,
    pub chown: Option<&'a str>,
    pub delete: bool,
    pub out: &'a Output,
    /// Fails with the reason when the step must stop (timeout, stop).
    pub check: &'a dyn Fn() -> Result<(), String>,
}

/// A relative path from the listing, refusing anything that could leave
/// the target (`..`, absolute paths).
fn relative(rel: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("scp: refusing the path {rel:?} from the daemon"));
        }
        out.push(part);
    }
    Ok(out)
}

/// Copies the step's source to `dst`; answers a summary line.
pub fn copy(c: &Copy) -> Result<String, String> {
    let mode = c.chmod.map(parse_mode).transpose()?;
    if c.dst.is_empty() {
        return Err("scp: empty dst".to_string());
    }
    let listing = c
        .client
        .get_bytes(&format!("/files/{}", c.lease), 256 << 20, TIMEOUT)
        .map_err(|e| format!("scp: cannot list the source: {e}"))?;
    let manifest: Manifest = serde_json::from_slice(&listing)
        .map_err(|e| format!("scp: unexpected listing from the daemon: {e}"))?;
    let root = manifest
        .entries
        .first()
        .ok_or("scp: the daemon listed nothing to copy")?;
    let mut stats = CopyStats::default();
    let dst = PathBuf::from(c.dst);
    let target = if root.kind == "dir" {
        copy_tree(c, &manifest, &dst, &mut stats)?;
        dst
    } else {
        let target = if c.dst.ends_with('/') || dst.is_dir() {
            if manifest.name.is_empty() {
                return Err("scp: the source has no file name".to_string());
            }
            dst.join(relative(&manifest.name)?)
        } else {
            dst
        };
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .map_err(|e| format!("scp: cannot create {}: {e}", parent.display()))?;
        }
        copy_entry(c, 0, root, &target, &mut stats)?;
        target
    };
    finish_copy(&target, mode, c.chown, &stats, |line| c.out.info(line))
}

fn copy_tree(c: &Copy, m: &Manifest, dst: &Path, stats: &mut CopyStats) -> Result<(), String> {
    // Names each directory of the source holds, for `delete`.
    let mut children: HashMap<String, HashSet<OsString>> = HashMap::new();
    let mut dirs = Vec::new();
    for (i, e) in m.entries.iter().enumerate() {
        (c.check)()?;
        let to = if e.path.is_empty() {
            dst.to_path_buf()
        } else {
            let rel = relative(&e.path)?;
            let parent = e.path.rsplit_once('/').map_or("", |(p, _)| p).to_string();
            if let Some(name) = rel.file_name() {
                children
                    .entry(parent)
                    .or_default()
                    .insert(name.to_os_string());
            }
            dst.join(rel)
        };
        if e.kind == "dir" {
            make_dir(&to)?;
            dirs.push((e.path.clone(), to, e.mode));
        } else {
            copy_entry(c, i, e, &to, stats)?;
        }
    }
    if c.delete {
        for (rel, dir, _) in &dirs {
            let keep = children.get(rel);
            let existing = fs::read_dir(dir).map_err(|e| format!("scp: {}: {e}", dir.display()))?;
            for entry in existing.flatten() {
                if keep.is_some_and(|k| k.contains(&entry.file_name())) {
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
    }
    // Modes last, deepest first, so a read-only directory is filled first.
    for (_, dir, mode) in dirs.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("scp: chmod {}: {e}", dir.display()))?;
    }
    Ok(())
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            fs::remove_file(dir)
                .map_err(|e| format!("scp: cannot replace {}: {e}", dir.display()))?;
            fs::create_dir_all(dir)
                .map_err(|e| format!("scp: cannot create {}: {e}", dir.display()))
        }
        Err(_) => fs::create_dir_all(dir)
            .map_err(|e| format!("scp: cannot create {}: {e}", dir.display())),
    }
}

/// Copies one file or symbolic link (entry `index` of the listing) to `dst`.
fn copy_entry(
    c: &Copy,
    index: usize,
    e: &Entry,
    dst: &Path,
    stats: &mut CopyStats,
) -> Result<(), String> {
    (c.check)()?;
    if let Ok(existing) = fs::symlink_metadata(dst) {
        if existing.is_dir() {
            fs::remove_dir_all(dst)
                .map_err(|e| format!("scp: cannot replace {}: {e}", dst.display()))?;
        }
    }
    let tmp = temp_name(dst);
    let result = match e.kind.as_str() {
        "symlink" => {
            let target = e.target.as_deref().unwrap_or_default();
            std::os::unix::fs::symlink(target, &tmp)
                .map_err(|err| format!("scp: symlink {}: {err}", dst.display()))
        }
        "file" => download(c, index, e, &tmp, stats),
        other => Err(format!("scp: unknown entry kind {other:?}")),
    };
    if let Err(err) = result.and_then(|()| {
        fs::rename(&tmp, dst).map_err(|err| format!("scp: cannot write {}: {err}", dst.display()))
    }) {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    stats.files += 1;
    Ok(())
}

fn download(
    c: &Copy,
    index: usize,
    e: &Entry,
    tmp: &Path,
    stats: &mut CopyStats,
) -> Result<(), String> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|err| format!("scp: cannot create {}: {err}", tmp.display()))?;
    let mut got = 0u64;
    while got < e.size {
        (c.check)()?;
        let piece = c
            .client
            .get_bytes(
                &format!("/files/{}/{index}?offset={got}", c.lease),
                PIECE_LIMIT,
                TIMEOUT,
            )
            .map_err(|err| format!("scp: downloading {}: {err}", e.path))?;
        if piece.is_empty() {
            break;
        }
        file.write_all(&piece)
            .map_err(|err| format!("scp: writing {}: {err}", tmp.display()))?;
        got += piece.len() as u64;
    }
    if got != e.size {
        return Err(format!(
            "scp: {} changed size on the daemon host during the copy",
            if e.path.is_empty() {
                "the source"
            } else {
                &e.path
            }
        ));
    }
    file.set_permissions(fs::Permissions::from_mode(e.mode & 0o7777))
        .map_err(|err| format!("scp: chmod {}: {err}", tmp.display()))?;
    stats.bytes += got;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_paths() {
        assert_eq!(parse_mode("0755"), Ok(0o755));
        assert!(parse_mode("0855").is_err());
        assert!(parse_mode("").is_err());
        assert_eq!(relative("a/b").unwrap(), PathBuf::from("a/b"));
        for bad in ["../x", "/etc", "a/../../b", "a//b", "."] {
            assert!(relative(bad).is_err(), "{bad}");
        }
    }
}
