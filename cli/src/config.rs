//! Where `jobx` connects: flags, the environment, or a context of
//! `~/.config/jobx/config.toml` (written by `jobx login`, mode 0600).

use crate::error::{CliError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The context used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub server: String,
    pub token: String,
    /// The project of `-p` when none is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<u64>,
}

/// `$XDG_CONFIG_HOME/jobx/config.toml`, else `~/.config/jobx/config.toml`.
pub fn path(xdg: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    match xdg.filter(|x| x.starts_with('/')) {
        Some(x) => Some(Path::new(x).join("jobx/config.toml")),
        None => home
            .filter(|h| !h.is_empty())
            .map(|h| Path::new(h).join(".config/jobx/config.toml")),
    }
}

pub fn default_path() -> Option<PathBuf> {
    path(
        std::env::var("XDG_CONFIG_HOME").ok().as_deref(),
        std::env::var("HOME").ok().as_deref(),
    )
}

pub fn load(p: &Path) -> Result<ConfigFile> {
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => return Err(CliError::usage(format!("{}: {e}", p.display()))),
    };
    if let Ok(m) = std::fs::metadata(p) {
        if m.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: {} holds tokens and is readable by others: chmod 600 it",
                p.display()
            );
        }
    }
    toml::from_str(&text).map_err(|e| CliError::usage(format!("{}: {e}", p.display())))
}

/// Writes the file whole (a new file renamed over the old one), mode 0600.
pub fn save(p: &Path, c: &ConfigFile) -> Result<()> {
    let io = |e: std::io::Error| CliError::other(format!("{}: {e}", p.display()));
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = toml::to_string(c).map_err(|e| CliError::other(e.to_string()))?;
    let tmp = p.with_extension(format!("toml.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, p).map_err(io)
}

/// What was given where; flags win over the environment, which wins over
/// the config file.
#[derive(Clone, Debug, Default)]
pub struct Given {
    pub server: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub context: Option<String>,
    pub project: Option<u64>,
    pub env_server: Option<String>,
    pub env_token: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Conn {
    pub server: String,
    pub token: String,
    pub project: Option<u64>,
    /// The server came from `--server` (printed commands must repeat it).
    pub server_flag: bool,
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.clone().filter(|s| !s.trim().is_empty())
}

pub fn resolve(g: &Given, file: &ConfigFile) -> Result<Conn> {
    let ctx = match g.context.as_ref().or(file.current.as_ref()) {
        Some(name) => match file.contexts.get(name) {
            Some(c) => Some(c.clone()),
            None if g.context.is_some() => {
                let known: Vec<&str> = file.contexts.keys().map(String::as_str).collect();
                return Err(CliError::usage(format!(
                    "no context {name:?} in the config file (known: {})",
                    if known.is_empty() {
                        "none; jobx login --context NAME adds one".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            None => None,
        },
        None => None,
    };
    let token = match (&g.token, &g.token_file) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| CliError::usage(format!("--token-file {}: {e}", f.display())))?
            .trim()
            .to_string(),
        (None, None) => nonempty(&g.env_token)
            .or_else(|| ctx.as_ref().map(|c| c.token.clone()))
            .unwrap_or_default(),
    };
    let server_flag = nonempty(&g.server).is_some();
    let server = nonempty(&g.server)
        .or_else(|| nonempty(&g.env_server))
        .or_else(|| ctx.as_ref().map(|c| c.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    Ok(Conn {
        server: server.trim_end_matches('/').to_string(),
        token,
        project: g.project.or_else(|| ctx.as_ref().and_then(|c| c.project)),
        server_flag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> ConfigFile {
        let mut f = ConfigFile {
            current: Some("prod".into()),
            ..Default::default()
        };
        f.contexts.insert(
            "prod".into(),
            Context {
                server: "https://jobx.example".into(),
                token: "t-prod".into(),
                project: Some(7),
            },
        );
        f.contexts.insert(
            "lab".into(),
            Context {
                server: "http://lab:8080".into(),
                token: "t-lab".into(),
                project: None,
            },
        );
        f
    }

    #[test]
    fn flags_beat_environment_beat_context() {
        let f = file();
        let c = resolve(&Given::default(), &f).expect("ctx");
        assert_eq!(
            (c.server.as_str(), c.token.as_str(), c.project),
            ("https://jobx.example", "t-prod", Some(7))
        );
        let g = Given {
            env_server: Some("http://env:1/".into()),
            env_token: Some("t-env".into()),
            ..Default::default()
        };
        let c = resolve(&g, &f).expect("env");
        assert_eq!(
            (c.server.as_str(), c.token.as_str()),
            ("http://env:1", "t-env")
        );
        assert!(!c.server_flag);
        let g = Given {
            server: Some("http://flag:2".into()),
            token: Some("t-flag\n".into()),
            project: Some(9),
            ..g
        };
        let c = resolve(&g, &f).expect("flags");
        assert_eq!(
            (
                c.server.as_str(),
                c.token.as_str(),
                c.project,
                c.server_flag
            ),
            ("http://flag:2", "t-flag", Some(9), true)
        );
    }

    #[test]
    fn a_named_context_must_exist() {
        let g = Given {
            context: Some("lab".into()),
            ..Default::default()
        };
        assert_eq!(resolve(&g, &file()).expect("lab").token, "t-lab");
        let g = Given {
            context: Some("nope".into()),
            ..Default::default()
        };
        let e = resolve(&g, &file()).expect_err("missing").to_string();
        assert!(
            e.contains("no context \"nope\"") && e.contains("lab, prod"),
            "{e}"
        );
    }

    #[test]
    fn nothing_configured_means_the_local_default() {
        let c = resolve(&Given::default(), &ConfigFile::default()).expect("default");
        assert_eq!(c.server, DEFAULT_SERVER);
        assert_eq!(c.token, "");
        assert_eq!(c.project, None);
    }

    #[test]
    fn config_path_honours_xdg() {
        assert_eq!(
            path(Some("/x"), Some("/home/u")),
            Some(PathBuf::from("/x/jobx/config.toml"))
        );
        assert_eq!(
            path(Some("relative"), Some("/home/u")),
            Some(PathBuf::from("/home/u/.config/jobx/config.toml"))
        );
        assert_eq!(path(None, None), None);
    }

    #[test]
    fn saved_file_is_private_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("jobx-cli-config-{}", std::process::id()));
        let p = dir.join("jobx/config.toml");
        save(&p, &file()).expect("save");
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load(&p).expect("load"), file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
