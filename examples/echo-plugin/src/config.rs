//! `[plugins.echo]` in jobxd.toml: read once, when jobxd loads the plugin.
//!
//! An error here stops jobxd at start-up (and fails `jobxd --check-config`)
//! with the message, so every message names the key to fix.

use serde::Deserialize;

/// The plugin's configuration; every key is optional.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Worker threads: at most this many steps run at once; further steps
    /// wait in the queue.
    pub workers: usize,
    /// Steps that may wait for a worker; one more fails at once.
    pub queue: usize,
    /// The largest `repeat` a step may ask for.
    pub max_repeat: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 4,
            queue: 1000,
            max_repeat: 1000,
        }
    }
}

/// Upper bound of `workers`: a pool, not a thread per step.
pub const MAX_WORKERS: usize = 64;

impl Config {
    /// Reads the `[plugins.echo]` table (JSON; `{}` when absent).
    pub fn parse(value: serde_json::Value) -> Result<Config, String> {
        // Type errors and unknown keys: `[plugins.echo] workers: invalid type …`.
        let c: Config = jobx_plugin_api::config::parse("echo", value)?;
        // Range checks serde cannot express, worded the same way.
        if !(1..=MAX_WORKERS).contains(&c.workers) {
            return Err(format!(
                "[plugins.echo] workers: must be between 1 and {MAX_WORKERS}, not {}",
                c.workers
            ));
        }
        if c.max_repeat == 0 {
            return Err("[plugins.echo] max_repeat: must be at least 1".to_string());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        assert_eq!(Config::parse(json!({})), Ok(Config::default()));
        let c = Config::parse(json!({"workers": 2, "queue": 0})).expect("valid");
        assert_eq!((c.workers, c.queue, c.max_repeat), (2, 0, 1000));
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse(json!({"workers": "two"})).unwrap_err();
        assert!(e.starts_with("[plugins.echo] workers: invalid type"), "{e}");
        let e = Config::parse(json!({"workers": 0})).unwrap_err();
        assert_eq!(e, "[plugins.echo] workers: must be between 1 and 64, not 0");
        let e = Config::parse(json!({"max_repeat": 0})).unwrap_err();
        assert_eq!(e, "[plugins.echo] max_repeat: must be at least 1");
        let e = Config::parse(json!({"wrokers": 1})).unwrap_err();
        assert!(
            e.starts_with("[plugins.echo]") && e.contains("wrokers"),
            "{e}"
        );
    }
}
