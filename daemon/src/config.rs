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
    pub compat: Compat,
    pub notify: NotifyConfig,
}

/// `[notify]`: webhooks that receive rollout events.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    pub webhooks: Vec<WebhookConfig>,
    /// Attempts per event and webhook before it is given up.
    pub max_attempts: u32,
    /// How long one attempt may take.
    pub timeout_secs: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            webhooks: Vec::new(),
            max_attempts: 10,
            timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Empty = every event.
    #[serde(default)]
    pub events: Vec<String>,
    pub secret: String,
}

impl NotifyConfig {
    fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("notify.max_attempts: must be at least 1".into());
        }
        if self.timeout_secs == 0 || self.timeout_secs > 300 {
            return Err("notify.timeout_secs: must be 1 to 300".into());
        }
        let mut urls = std::collections::BTreeSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            let at = format!("notify.webhooks[{i}]");
            let rest = w
                .url
                .strip_prefix("http://")
                .or_else(|| w.url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/'))
                || w.url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!(
                    "{at}.url: {:?} is not an http:// or https:// URL",
                    w.url
                ));
            }
            if !urls.insert(w.url.as_str()) {
                return Err(format!("{at}.url: {:?} is listed twice", w.url));
            }
            for e in &w.events {
                if crate::notify::Kind::parse(e).is_none() {
                    return Err(format!(
                        "{at}.events: {e:?} is not waiting, approval, finished, failed or rollback_decision"
                    ));
                }
            }
            if w.secret.len() < 16 {
                return Err(format!(
                    "{at}.secret: shorter than 16 characters (it signs every event)"
                ));
            }
        }
        Ok(())
    }
}

/// Answers shaped like the original OPEN-C3 JOBX where its front end relies
/// on them (docs/openc3.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Compat {
    /// 200 `{stat:false, code:10000}` instead of 401, `data:null` for an
    /// absent task, placeholder rows for skipped rollbacks.
    pub openc3: bool,
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
    /// Seconds a request body may take to arrive (408 beyond).
    pub body_timeout: u64,
    /// Seconds a request head may take to arrive (408 beyond).
    pub header_timeout: u64,
    /// Seconds a kept-alive connection may wait for its next request.
    pub keep_alive_timeout: u64,
    /// Open connections at most; idle ones are closed first at the cap.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    pub data_dir: PathBuf,
    /// Megabytes of redb's page cache (redb alone would take 1 GiB).
    pub cache_mb: u64,
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
    pub openc3: Option<OpenC3Auth>,
}

/// `[auth.openc3]`: people signed in to OPEN-C3 (its session cookie),
/// resolved through its Connector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenC3Auth {
    /// Base URL of the Connector, e.g. `http://api.connector.open-c3.org`.
    pub connector: String,
    /// Name of OPEN-C3's session cookie (its `cookiekey`).
    #[serde(default = "OpenC3Auth::default_cookie")]
    pub cookie: String,
    /// How long a Connector answer is reused; 0 asks every time.
    #[serde(default = "OpenC3Auth::default_cache_ttl")]
    pub cache_ttl_secs: u64,
    /// Deadline of one Connector call.
    #[serde(default = "OpenC3Auth::default_timeout")]
    pub timeout_secs: u64,
}

impl OpenC3Auth {
    fn default_cookie() -> String {
        "sid".into()
    }
    fn default_cache_ttl() -> u64 {
        30
    }
    fn default_timeout() -> u64 {
        10
    }

    /// `connector` split into (host, port, path prefix); plain HTTP only.
    pub fn connector_addr(&self) -> Option<(String, u16, String)> {
        let rest = self.connector.strip_prefix("http://")?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match hostport.strip_prefix('[') {
            // [v6 address] or [v6 address]:port
            Some(v6) => {
                let (h, after) = v6.split_once(']')?;
                match after.strip_prefix(':') {
                    Some(p) => (h, p.parse().ok()?),
                    None if after.is_empty() => (h, 80),
                    None => return None,
                }
            }
            None => match hostport.split_once(':') {
                Some((h, p)) => (h, p.parse().ok()?),
                None => (hostport, 80),
            },
        };
        let host_char = |c: char| c.is_ascii_alphanumeric() || "-._:".contains(c);
        let path_ok = !path
            .chars()
            .any(|c| c.is_whitespace() || c == '?' || c == '#');
        if host.is_empty() || !host.chars().all(host_char) || !path_ok {
            return None;
        }
        Some((host.to_string(), port, path.to_string()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub token: Option<String>,
    pub sha256: Option<String>,
    #[serde(default)]
    pub roles: BTreeMap<String, crate::auth::Role>,
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
            body_timeout: 10,
            header_timeout: 10,
            keep_alive_timeout: 60,
            max_connections: 1024,
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            data_dir: PathBuf::from("./data"),
            cache_mb: crate::store::DEFAULT_CACHE_MB,
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
        for (key, secs) in [
            ("body_timeout", self.server.body_timeout),
            ("header_timeout", self.server.header_timeout),
            ("keep_alive_timeout", self.server.keep_alive_timeout),
        ] {
            if !(1..=86_400).contains(&secs) {
                return Err(format!(
                    "server.{key}: must be 1 to 86400 seconds, not {secs}"
                ));
            }
        }
        if self.server.max_connections == 0 {
            return Err("server.max_connections: must be at least 1".into());
        }
        if self.engine.max_parallel == 0 {
            return Err("engine.max_parallel: must be at least 1".into());
        }
        if !(1..=crate::store::MAX_CACHE_MB).contains(&self.storage.cache_mb) {
            return Err(format!(
                "storage.cache_mb: must be 1 to {} (megabytes), not {}",
                crate::store::MAX_CACHE_MB,
                self.storage.cache_mb
            ));
        }
        if !self.logs.retention_days.is_finite() || self.logs.retention_days < 0.0 {
            return Err("logs.retention_days: must be a number of days, 0 or more".into());
        }
        if let Some(o) = &self.auth.openc3 {
            if o.connector_addr().is_none() {
                return Err(format!(
                    "auth.openc3.connector: {:?} is not a URL like http://api.connector.open-c3.org",
                    o.connector
                ));
            }
            let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if o.cookie.is_empty() || !o.cookie.chars().all(token_char) {
                return Err(format!(
                    "auth.openc3.cookie: {:?} is not a cookie name",
                    o.cookie
                ));
            }
            if o.timeout_secs == 0 {
                return Err("auth.openc3.timeout_secs: must be at least 1".into());
            }
        }
        self.notify.validate()?;
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
            for project in t.roles.keys() {
                if project != "*" && project.parse::<u64>().is_err() {
                    return Err(format!(
                        "{at}.roles: {project:?} is neither a project id nor \"*\""
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
    fn webhooks_are_validated() {
        let hook = |extra: &str| {
            Config::parse(&format!(
                "[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"0123456789abcdef\"\n{extra}"
            ))
        };
        let c = hook("events = [\"waiting\", \"finished\"]").expect("webhook");
        assert_eq!(c.notify.webhooks[0].events, ["waiting", "finished"]);
        assert_eq!(c.notify.max_attempts, 10);
        let e = hook("events = [\"done\"]").unwrap_err();
        assert!(e.contains("notify.webhooks[0].events"), "{e}");
        let e = hook("colour = 1").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e =
            Config::parse("[[notify.webhooks]]\nurl = \"ftp://x\"\nsecret = \"0123456789abcdef\"")
                .unwrap_err();
        assert!(e.contains("notify.webhooks[0].url"), "{e}");
        let e = Config::parse("[[notify.webhooks]]\nurl = \"http://x/\"\nsecret = \"short\"")
            .unwrap_err();
        assert!(e.contains("notify.webhooks[0].secret"), "{e}");
        let e = Config::parse("[notify]\nmax_attempts = 0").unwrap_err();
        assert!(e.contains("notify.max_attempts"), "{e}");
    }

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
    fn storage_cache_mb_defaults_and_is_bounded() {
        assert_eq!(Config::parse("").unwrap().storage.cache_mb, 64);
        let c = Config::parse("[storage]\ncache_mb = 256").unwrap();
        assert_eq!(c.storage.cache_mb, 256);
        for bad in ["0", "65537"] {
            let e = Config::parse(&format!("[storage]\ncache_mb = {bad}")).unwrap_err();
            assert!(e.contains("storage.cache_mb") && e.contains(bad), "{e}");
        }
        let e = Config::parse("[storage]\ncache_mb = -1").unwrap_err();
        assert!(e.contains("cache_mb"), "{e}");
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
    fn server_limits() {
        let c = Config::parse("").expect("empty config");
        assert_eq!(c.server.body_timeout, 10);
        assert_eq!(c.server.header_timeout, 10);
        assert_eq!(c.server.max_connections, 1024);
        let e = Config::parse("[server]\nbody_timeout = 0").unwrap_err();
        assert!(e.contains("server.body_timeout"), "{e}");
        let e = Config::parse("[server]\nheader_timeout = 100000").unwrap_err();
        assert!(e.contains("server.header_timeout"), "{e}");
        let e = Config::parse("[server]\nmax_connections = 0").unwrap_err();
        assert!(e.contains("server.max_connections"), "{e}");
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
    fn openc3_sign_in_section() {
        let c = Config::parse("[auth.openc3]\nconnector = \"http://api.connector.open-c3.org\"\n")
            .expect("connector only");
        let o = c.auth.openc3.expect("section");
        assert_eq!(o.cookie, "sid");
        assert_eq!(o.cache_ttl_secs, 30);
        assert_eq!(
            o.connector_addr(),
            Some(("api.connector.open-c3.org".into(), 80, String::new()))
        );
        let c = Config::parse("[auth.openc3]\nconnector = \"http://127.0.0.1:9000/c3/\"\n")
            .expect("port and path");
        assert_eq!(
            c.auth.openc3.and_then(|o| o.connector_addr()),
            Some(("127.0.0.1".into(), 9000, "/c3".into()))
        );
        let c = Config::parse("[auth.openc3]\nconnector = \"http://[::1]:9000\"\n").expect("v6");
        assert_eq!(
            c.auth.openc3.and_then(|o| o.connector_addr()),
            Some(("::1".into(), 9000, String::new()))
        );
        let e = Config::parse("[auth.openc3]\nconnector = \"https://x\"\n").unwrap_err();
        assert!(e.contains("auth.openc3.connector"), "{e}");
        let e = Config::parse("[auth.openc3]\nconnector = \"http://x\"\ncookie = \"a b\"\n")
            .unwrap_err();
        assert!(e.contains("auth.openc3.cookie"), "{e}");
        assert!(!Config::parse("").expect("empty").compat.openc3);
        assert!(
            Config::parse("[compat]\nopenc3 = true")
                .expect("compat")
                .compat
                .openc3
        );
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
