//! `[plugins.ssh]` configuration.

use serde::Deserialize;

/// Host key policy, passed to ssh as `StrictHostKeyChecking`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Only known keys are accepted.
    #[serde(rename = "yes")]
    Yes,
    /// Unknown hosts are added to known_hosts; changed keys are refused.
    #[serde(rename = "accept-new")]
    #[default]
    AcceptNew,
    /// No checking (ssh still refuses to replace a changed key).
    #[serde(rename = "no")]
    No,
}

impl HostKeyPolicy {
    /// The value for `-o StrictHostKeyChecking=`.
    pub fn as_ssh(self) -> &'static str {
        match self {
            HostKeyPolicy::Yes => "yes",
            HostKeyPolicy::AcceptNew => "accept-new",
            HostKeyPolicy::No => "no",
        }
    }
}

/// How `scp` steps copy files.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FileCopy {
    /// rsync when both ends have it, scp otherwise.
    #[default]
    Auto,
    /// Always scp.
    Scp,
}

/// The plugin configuration. Every key is optional.
#[derive(Deserialize, Debug, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Private key passed with `-i` (in addition to the ssh config and agent).
    pub identity_file: Option<String>,
    /// known_hosts file; default `<data_dir>/known_hosts`.
    pub known_hosts: Option<String>,
    /// `yes`, `accept-new` or `no`.
    pub strict_host_key_checking: HostKeyPolicy,
    /// Seconds allowed for connecting to a node, retries included.
    pub connect_timeout: u64,
    /// An ssh config file read before the user's own `~/.ssh/config`.
    pub ssh_config: Option<String>,
    /// Seconds an idle master connection stays open.
    pub control_persist: u64,
    /// Concurrent sessions over one connection (sshd allows 10 by default).
    pub max_sessions_per_node: usize,
    /// Connections being set up at once, over all nodes.
    pub max_concurrent_connects: usize,
    /// Login user when neither the step nor the node names one.
    pub user: Option<String>,
    /// `auto` or `scp`.
    pub file_copy: FileCopy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            identity_file: None,
            known_hosts: None,
            strict_host_key_checking: HostKeyPolicy::AcceptNew,
            connect_timeout: 10,
            ssh_config: None,
            control_persist: 120,
            max_sessions_per_node: 8,
            max_concurrent_connects: 32,
            user: None,
            file_copy: FileCopy::Auto,
        }
    }
}

impl Config {
    /// Parses and checks the JSON form of `[plugins.ssh]`.
    pub fn from_json(value: serde_json::Value) -> Result<Config, String> {
        let cfg: Config = jobx_plugin_api::config::parse("ssh", value)?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        if self.connect_timeout == 0 {
            return Err("[plugins.ssh]: connect_timeout must be at least 1".into());
        }
        if self.control_persist == 0 {
            return Err("[plugins.ssh]: control_persist must be at least 1".into());
        }
        if self.max_sessions_per_node == 0 {
            return Err("[plugins.ssh]: max_sessions_per_node must be at least 1".into());
        }
        if self.max_concurrent_connects == 0 {
            return Err("[plugins.ssh]: max_concurrent_connects must be at least 1".into());
        }
        for (key, value) in [
            ("identity_file", &self.identity_file),
            ("known_hosts", &self.known_hosts),
            ("ssh_config", &self.ssh_config),
        ] {
            if let Some(v) = value {
                check_config_path(v).map_err(|e| format!("[plugins.ssh] {key}: {e}"))?;
            }
        }
        if let Some(user) = &self.user {
            check_user(user).map_err(|e| format!("[plugins.ssh] user: {e}"))?;
        }
        Ok(())
    }
}

/// A login user must be a single word without `@`.
pub fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty()
        || user.starts_with('-')
        || user
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '@' || c == '%')
    {
        return Err(format!("invalid login user {user:?}"));
    }
    Ok(())
}

/// Paths from the configuration end up in ssh option values, where `"`
/// cannot be escaped.
pub fn check_config_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.contains('"') || path.chars().any(char::is_control) {
        return Err(format!("unusable path {path:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_table_gives_defaults() {
        let c = Config::from_json(json!({})).unwrap();
        assert_eq!(c.connect_timeout, 10);
        assert_eq!(c.max_sessions_per_node, 8);
        assert_eq!(c.max_concurrent_connects, 32);
        assert_eq!(c.strict_host_key_checking, HostKeyPolicy::AcceptNew);
        assert_eq!(c.file_copy, FileCopy::Auto);
        assert!(c.user.is_none());
    }

    #[test]
    fn keys_are_read() {
        let c = Config::from_json(json!({
            "identity_file": "/var/lib/jobx/.ssh/id_ed25519",
            "known_hosts": "/var/lib/jobx/known_hosts",
            "strict_host_key_checking": "yes",
            "connect_timeout": 3,
            "ssh_config": "/etc/jobx/ssh_config",
            "control_persist": 30,
            "max_sessions_per_node": 4,
            "max_concurrent_connects": 8,
            "user": "deploy",
            "file_copy": "scp",
        }))
        .unwrap();
        assert_eq!(c.strict_host_key_checking, HostKeyPolicy::Yes);
        assert_eq!(c.connect_timeout, 3);
        assert_eq!(c.user.as_deref(), Some("deploy"));
        assert_eq!(c.file_copy, FileCopy::Scp);
        assert_eq!(
            Config::from_json(json!({"strict_host_key_checking": "no"}))
                .unwrap()
                .strict_host_key_checking
                .as_ssh(),
            "no"
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        for (cfg, needle) in [
            (json!({"strict_host_key_checking": "maybe"}), "maybe"),
            (json!({"connect_timeout": 0}), "connect_timeout"),
            (json!({"max_sessions_per_node": 0}), "max_sessions_per_node"),
            (
                json!({"max_concurrent_connects": 0}),
                "max_concurrent_connects",
            ),
            (json!({"control_persist": 0}), "control_persist"),
            (json!({"identity_fiel": "/x"}), "identity_fiel"),
            (json!({"known_hosts": "/a\"b"}), "known_hosts"),
            (json!({"user": "a b"}), "user"),
        ] {
            let err = Config::from_json(cfg.clone()).unwrap_err();
            assert!(err.contains(needle), "{cfg}: {err}");
        }
    }
}
