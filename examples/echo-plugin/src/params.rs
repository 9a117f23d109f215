//! The echo step's own parameters, from `StepRequest::params`.
//!
//! jobxd hands a custom plugin exactly the job step's fields that are not
//! its common ones (`uuid`, `name`, `plugin`, `timeout`, `action`,
//! `batches`, and the typed fields of the built-in executors). So for the
//! job step `{"plugin": "echo", "text": "hi", "repeat": 2}` the plugin gets
//! `params = {"text": "hi", "repeat": 2}`. jobx adds nothing of its own
//! there, which makes rejecting unknown keys (typos) safe.
//!
//! jobxd does not know these parameters, so it cannot check them when the
//! job is saved: they are checked here, when the step starts, and an error
//! fails the step with a message naming the parameter.

use serde::Deserialize;
use serde_json::{Map, Value};

/// What an echo step may say.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The text to print, one line per repetition (a text with newlines
    /// prints several lines).
    pub text: String,
    /// How many times to print it (default 1).
    #[serde(default = "one")]
    pub repeat: u32,
    /// Pause between repetitions, in milliseconds (default 0).
    #[serde(default)]
    pub interval_ms: u64,
    /// When given, the step fails with this message after its output.
    #[serde(default)]
    pub fail: Option<String>,
}

fn one() -> u32 {
    1
}

/// The longest pause a step may ask for between two lines.
pub const MAX_INTERVAL_MS: u64 = 60_000;

impl Params {
    /// Reads and checks the parameters; `max_repeat` comes from the
    /// configuration.
    pub fn parse(params: &Map<String, Value>, max_repeat: u32) -> Result<Params, String> {
        let p: Params =
            serde_path_to_error::deserialize(Value::Object(params.clone())).map_err(|e| {
                let path = e.path().to_string();
                if path == "." {
                    format!("echo step: {}", e.inner())
                } else {
                    format!("echo step: {path}: {}", e.inner())
                }
            })?;
        if p.repeat > max_repeat {
            return Err(format!(
                "echo step: repeat: at most {max_repeat} (set by [plugins.echo] max_repeat), not {}",
                p.repeat
            ));
        }
        if p.interval_ms > MAX_INTERVAL_MS {
            return Err(format!(
                "echo step: interval_ms: at most {MAX_INTERVAL_MS}, not {}",
                p.interval_ms
            ));
        }
        Ok(p)
    }

    /// The pause as `sleep` takes it: seconds with three decimals.
    pub fn pause_arg(&self) -> String {
        format!("{}.{:03}", self.interval_ms / 1000, self.interval_ms % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Params, String> {
        let Value::Object(m) = v else {
            panic!("object")
        };
        Params::parse(&m, 10)
    }

    #[test]
    fn defaults() {
        let p = parse(json!({"text": "hi"})).expect("valid");
        assert_eq!((p.text.as_str(), p.repeat, p.interval_ms), ("hi", 1, 0));
        assert_eq!(p.fail, None);
        assert_eq!(p.pause_arg(), "0.000");
        let p = parse(json!({"text": "", "interval_ms": 1250, "fail": "no"})).expect("valid");
        assert_eq!(p.pause_arg(), "1.250");
        assert_eq!(p.fail.as_deref(), Some("no"));
    }

    #[test]
    fn errors_name_the_parameter() {
        let e = parse(json!({})).unwrap_err();
        assert_eq!(e, "echo step: missing field `text`");
        let e = parse(json!({"text": "x", "repeat": "many"})).unwrap_err();
        assert!(e.starts_with("echo step: repeat: invalid type"), "{e}");
        let e = parse(json!({"text": "x", "repeat": 11})).unwrap_err();
        assert!(e.starts_with("echo step: repeat: at most 10"), "{e}");
        let e = parse(json!({"text": "x", "interval_ms": 60001})).unwrap_err();
        assert!(e.starts_with("echo step: interval_ms: at most"), "{e}");
        let e = parse(json!({"text": "x", "txet": 1})).unwrap_err();
        assert!(e.contains("txet"), "{e}");
    }
}
