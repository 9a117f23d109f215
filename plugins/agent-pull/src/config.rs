//! `[plugins.agent-pull]` of jobxd.toml.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The configuration as written.
#[derive(Deserialize, Debug)]
#[serde(default, deny_unknown_fields)]
struct Raw {
    agents: Vec<RawAgent>,
    lost_after: f64,
    connect_timeout: f64,
    poll_hold: f64,
    heartbeat: Option<f64>,
    file_workers: usize,
}

impl Default for Raw {
    fn default() -> Self {
        Raw {
            agents: Vec::new(),
            lost_after: 30.0,
            connect_timeout: 60.0,
            poll_hold: 50.0,
            heartbeat: None,
            file_workers: 2,
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: String,
    token: Option<String>,
    sha256: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Agent name → SHA-256 of its token.
    pub agents: HashMap<String, [u8; 32]>,
    /// A running step whose agent is silent this long fails as `agent lost`.
    pub lost_after: Duration,
    /// A step no agent took within this long fails.
    pub connect_timeout: Duration,
    /// The longest a poll is held open.
    pub poll_hold: Duration,
    /// How often a busy agent heartbeats.
    pub heartbeat: Duration,
    /// An offered step not accepted within this long is offered again
    /// under a new lease.
    pub offer_timeout: Duration,
    /// Threads serving `scp` sources.
    pub file_workers: usize,
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 && v <= 86_400.0 * 365.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!(
            "[plugins.agent-pull] {name} must be a positive number of seconds, not {v}"
        ))
    }
}

/// SHA-256 of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl Settings {
    /// Parses and checks the plugin's table.
    pub fn parse(config: serde_json::Value) -> Result<Settings, String> {
        let raw: Raw = jobx_plugin_api::config::parse("agent-pull", config)?;
        let mut agents = HashMap::new();
        for a in raw.agents {
            let name = a.name.trim();
            if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
                return Err(format!(
                    "[plugins.agent-pull] agent name {:?} must be 1-100 characters without control characters",
                    a.name
                ));
            }
            let digest = match (&a.token, &a.sha256) {
                (Some(t), None) if !t.trim().is_empty() => digest(t.trim()),
                (None, Some(h)) => parse_hex(h).ok_or_else(|| {
                    format!("[plugins.agent-pull] agent {name}: sha256 must be 64 hex digits")
                })?,
                _ => {
                    return Err(format!(
                        "[plugins.agent-pull] agent {name}: give exactly one of token and sha256"
                    ))
                }
            };
            if agents.insert(name.to_string(), digest).is_some() {
                return Err(format!("[plugins.agent-pull] agent {name} is listed twice"));
            }
        }
        let lost_after = seconds("lost_after", raw.lost_after)?;
        let heartbeat = match raw.heartbeat {
            Some(h) => seconds("heartbeat", h)?,
            None => lost_after / 3,
        };
        if heartbeat >= lost_after {
            return Err(
                "[plugins.agent-pull] heartbeat must be shorter than lost_after".to_string(),
            );
        }
        Ok(Settings {
            agents,
            lost_after,
            connect_timeout: seconds("connect_timeout", raw.connect_timeout)?,
            poll_hold: seconds("poll_hold", raw.poll_hold)?,
            heartbeat,
            offer_timeout: (lost_after / 2).max(Duration::from_secs(2)),
            file_workers: raw.file_workers.clamp(1, 64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_tokens() {
        let s = Settings::parse(json!({
            "agents": [
                {"name": "web-1", "token": "secret"},
                {"name": "web-2", "sha256": "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"}
            ]
        }))
        .unwrap();
        assert_eq!(s.lost_after, Duration::from_secs(30));
        assert_eq!(s.heartbeat, Duration::from_secs(10));
        assert_eq!(s.connect_timeout, Duration::from_secs(60));
        assert_eq!(s.poll_hold, Duration::from_secs(50));
        assert_eq!(s.agents["web-1"], digest("secret"));
        assert_eq!(s.agents["web-2"], digest("secret"));
    }

    #[test]
    fn refusals() {
        for bad in [
            json!({"agents": [{"name": "a"}]}),
            json!({"agents": [{"name": "a", "token": "x", "sha256": "00"}]}),
            json!({"agents": [{"name": "a", "sha256": "zz"}]}),
            json!({"agents": [{"name": "", "token": "x"}]}),
            json!({"agents": [{"name": "a", "token": "x"}, {"name": "a", "token": "y"}]}),
            json!({"lost_after": 0}),
            json!({"lost_after": -1}),
            json!({"lost_after": 3, "heartbeat": 3}),
            json!({"lost_afterr": 3}),
        ] {
            assert!(Settings::parse(bad.clone()).is_err(), "{bad}");
        }
        let s = Settings::parse(json!({"lost_after": 1.5, "connect_timeout": 2})).unwrap();
        assert_eq!(s.heartbeat, Duration::from_millis(500));
        assert_eq!(s.offer_timeout, Duration::from_secs(2));
    }
}
