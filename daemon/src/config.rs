//! jobxd.toml: every key optional, an embedded default, command-line overrides.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The default configuration, compiled in.
pub const EMBEDDED: &str = include_str!("../../config/jobxd.toml");

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub storage: Storage,
    pub engine: Engine,
    pub logs: Logs,
    pub auth: Auth,
    pub plugins: Plugins,
    pub console: Console,
}

/// The web console under `/ui/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Console {
    /// How long a sign-in lasts.
    pub session_ttl_secs: u64,
    /// Mark the session cookie `Secure` even without `X-Forwarded-Proto: https`.
    pub secure_cookie: bool,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            session_ttl_secs: 43_200,
            secure_cookie: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    pub listen: String,
    pub name: Option<String>,
    pub public_metrics: bool,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Engine {
    pub max_parallel: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Logs {
    pub max_bytes_per_step: u64,
    /// Step logs of tasks finished longer ago are pruned; 0 keeps them forever.
    /// Fractions are allowed (0.5 = 12 hours).
    pub retention_days: f64,
    /// How often the background pruning looks for expired logs.
    pub retention_check_secs: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    pub tokens: Vec<TokenConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub token: Option<String>,
    pub sha256: Option<String>,
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Plugins {
    pub dir: Option<Vec<PathBuf>>,
    /// `[plugins.<type>]` tables, handed to each plugin as JSON.
    #[serde(flatten)]
    pub settings: BTreeMap<String, toml::Value>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:8080".into(),
            name: None,
            public_metrics: false,
            max_body_bytes: 1 << 20,
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            data_dir: PathBuf::from("./data"),
        }
    }
}

impl Default for Engine {
    fn default() -> Self {
        Engine { max_parallel: 64 }
    }
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            max_bytes_per_step: 16 << 20,
            retention_days: 90.0,
            retention_check_secs: 3600,
        }
    }
}

impl Config {
    /// Parses and validates config text; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "server.listen: {:?} is not an address like 127.0.0.1:8080",
                self.server.listen
            ));
        }
        if self.server.max_body_bytes == 0 {
            return Err("server.max_body_bytes: must be at least 1".into());
        }
        if self.engine.max_parallel == 0 {
            return Err("engine.max_parallel: must be at least 1".into());
        }
        if !self.logs.retention_days.is_finite() || self.logs.retention_days < 0.0 {
            return Err("logs.retention_days: must be a number of days, 0 or more".into());
        }
        if self.console.session_ttl_secs == 0 {
            return Err("console.session_ttl_secs: must be at least 1".into());
        }
        if self.logs.retention_check_secs == 0 {
            return Err("logs.retention_check_secs: must be at least 1".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.auth.tokens.iter().enumerate() {
            let at = format!("auth.tokens[{i}]");
            if t.name.is_empty() {
                return Err(format!("{at}.name: must not be empty"));
            }
            if !names.insert(t.name.as_str()) {
                return Err(format!("{at}.name: duplicate token name {:?}", t.name));
            }
            match (&t.token, &t.sha256) {
                (Some(_), Some(_)) => {
                    return Err(format!("{at}: give either token or sha256, not both"))
                }
                (None, None) => return Err(format!("{at}: needs token or sha256")),
                (Some(tok), None) if tok.len() < 8 => {
                    return Err(format!("{at}.token: shorter than 8 characters"))
                }
                (None, Some(h)) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    return Err(format!("{at}.sha256: must be 64 hex digits"))
                }
                _ => {}
            }
            for (project, role) in &t.roles {
                if project != "*" && project.parse::<u64>().is_err() {
                    return Err(format!(
                        "{at}.roles: {project:?} is neither a project id nor \"*\""
                    ));
                }
                if crate::auth::Role::parse(role).is_none() {
                    return Err(format!(
                        "{at}.roles.{project}: {role:?} is not read, write, control or admin"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The `slave` name: configured, else the host name.
    pub fn slave_name(&self) -> String {
        if let Some(n) = &self.server.name {
            return n.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".into())
    }

    /// Plugin directories: configured, else next to the executable, then the system dir.
    pub fn plugin_dirs(&self) -> Vec<PathBuf> {
        if let Some(d) = &self.plugins.dir {
            return d.clone();
        }
        let mut dirs = Vec::new();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|p| p.to_path_buf()))
        {
            dirs.push(dir);
        }
        dirs.push(PathBuf::from("/usr/lib/jobx/plugins"));
        dirs
    }

    /// `[plugins.<type>]` tables as JSON objects.
    pub fn plugin_settings(&self) -> serde_json::Map<String, serde_json::Value> {
        self.plugins
            .settings
            .iter()
            .filter_map(|(k, v)| serde_json::to_value(v).ok().map(|v| (k.clone(), v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c = Config::parse(EMBEDDED).expect("embedded config");
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.server.max_body_bytes, 1 << 20);
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("").expect("empty config");
        assert_eq!(c.engine.max_parallel, 64);
        assert_eq!(c.logs.max_bytes_per_step, 16 << 20);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[server]\nlisten = \"nope\"").unwrap_err();
        assert!(e.contains("server.listen"), "{e}");
        let e = Config::parse("[engine]\nmax_paralel = 3").unwrap_err();
        assert!(e.contains("max_paralel"), "{e}");
        let e = Config::parse(
            "[[auth.tokens]]\nname = \"a\"\ntoken = \"123456789\"\nroles = { \"x\" = \"read\" }",
        )
        .unwrap_err();
        assert!(e.contains("auth.tokens[0].roles"), "{e}");
        let e = Config::parse(
            "[[auth.tokens]]\nname = \"a\"\ntoken = \"123456789\"\nroles = { \"1\" = \"god\" }",
        )
        .unwrap_err();
        assert!(e.contains("god"), "{e}");
    }

    #[test]
    fn retention_days_whole_or_fractional() {
        assert_eq!(Config::parse("").expect("empty").logs.retention_days, 90.0);
        let c = Config::parse("[logs]\nretention_days = 7").expect("integer days");
        assert_eq!(c.logs.retention_days, 7.0);
        let c = Config::parse("[logs]\nretention_days = 0.5").expect("fractional days");
        assert_eq!(c.logs.retention_days, 0.5);
        let e = Config::parse("[logs]\nretention_days = -1").unwrap_err();
        assert!(e.contains("logs.retention_days"), "{e}");
        let e = Config::parse("[logs]\nretention_check_secs = 0").unwrap_err();
        assert!(e.contains("logs.retention_check_secs"), "{e}");
    }

    #[test]
    fn console_section() {
        let c = Config::parse("").expect("defaults");
        assert_eq!(c.console.session_ttl_secs, 43_200);
        assert!(!c.console.secure_cookie);
        let c = Config::parse("[console]\nsession_ttl_secs = 60\nsecure_cookie = true\n")
            .expect("console keys");
        assert_eq!(c.console.session_ttl_secs, 60);
        assert!(c.console.secure_cookie);
        let e = Config::parse("[console]\nsession_ttl_secs = 0").unwrap_err();
        assert!(e.contains("console.session_ttl_secs"), "{e}");
        let e = Config::parse("[console]\nsecure = true").unwrap_err();
        assert!(e.contains("secure"), "{e}");
    }

    #[test]
    fn plugin_tables_pass_through() {
        let c = Config::parse("[plugins.ssh]\nconnect_timeout = 3\n").expect("config");
        let s = c.plugin_settings();
        assert_eq!(s["ssh"]["connect_timeout"], 3);
    }
}
