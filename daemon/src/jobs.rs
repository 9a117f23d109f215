//! Job step validation (pure): raw JSON steps → validated `Step`s, with a
//! 400 message that names the step and the field.

use crate::model::Step;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Executor plugin types that are always known; custom plugin types are
/// accepted once a plugin of that type is loaded.
pub const BUILTIN_TYPES: [&str; 4] = ["ssh", "local", "agent-pull", "approval"];

const INTERPRETERS: [&str; 4] = ["bash", "sh", "python3", "perl"];
const MAX_TIMEOUT: u64 = 30 * 86400;

/// A name (job, group, node): 1–100 characters, no control characters.
pub fn check_name(field: &str, s: &str) -> Result<(), String> {
    let n = s.chars().count();
    if n == 0 || n > 100 {
        return Err(format!("{field}: must be 1 to 100 characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{field}: must not contain control characters"));
    }
    Ok(())
}

fn get_str(step: &Map<String, Value>, at: &str, key: &str) -> Result<Option<String>, String> {
    match step.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{at}.{key}: must be a string")),
    }
}

fn get_bool(step: &Map<String, Value>, at: &str, key: &str) -> Result<Option<bool>, String> {
    match step.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" || s == "1" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" || s == "0" => Ok(Some(false)),
        Some(_) => Err(format!("{at}.{key}: must be true or false")),
    }
}

fn get_timeout(step: &Map<String, Value>, at: &str, default: u64) -> Result<u64, String> {
    let t = match step.get("timeout") {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    match t {
        Some(t) if (1..=MAX_TIMEOUT).contains(&t) => Ok(t),
        _ => Err(format!(
            "{at}.timeout: must be a whole number of seconds from 1 to {MAX_TIMEOUT}"
        )),
    }
}

fn one_of(
    at: &str,
    key: &str,
    v: Option<String>,
    allowed: &[&str],
    default: &str,
) -> Result<String, String> {
    match v {
        None => Ok(default.to_string()),
        Some(s) if allowed.contains(&s.as_str()) => Ok(s),
        Some(s) => Err(format!(
            "{at}.{key}: {s:?} is not one of {}",
            allowed.join(", ")
        )),
    }
}

/// Validates the `steps` array of a job. `known` lists the types of the
/// loaded executor plugins (`approval` is built in); `old` is the stored job's steps, whose uuids are kept when a
/// submitted step carries one of them.
pub fn validate_steps(
    steps: &Value,
    known: &BTreeSet<String>,
    old: &[Step],
    new_uuid: &mut dyn FnMut() -> String,
) -> Result<Vec<Step>, String> {
    let Value::Array(items) = steps else {
        return Err("steps: must be an array of steps".into());
    };
    if items.is_empty() {
        return Err("steps: a job needs at least one step".into());
    }
    if items.len() > 1000 {
        return Err("steps: at most 1000 steps".into());
    }
    let old_uuids: BTreeSet<&str> = old.iter().map(|s| s.uuid.as_str()).collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("steps[{i}]");
        let Value::Object(m) = item else {
            return Err(format!("{at}: must be an object"));
        };
        let mut step = validate_step(m, &at, known)?;
        let given = get_str(m, &at, "uuid")?;
        step.uuid = match given {
            Some(u) if old_uuids.contains(u.as_str()) && !seen.contains(&u) => u,
            _ => new_uuid(),
        };
        seen.insert(step.uuid.clone());
        out.push(step);
    }
    Ok(out)
}

/// Fields every step may carry.
const COMMON_FIELDS: [&str; 6] = ["uuid", "name", "plugin", "timeout", "action", "batches"];

/// Refuses fields the step's plugin and kind do not use (a custom plugin's
/// step carries its own parameters, so anything goes there).
fn check_fields(m: &Map<String, Value>, at: &str, plugin: &str) -> Result<(), String> {
    let own: &[&str] = match (plugin, m.get("kind").and_then(Value::as_str)) {
        ("approval", _) => &["approvers", "message", "everyone"],
        (p, _) if !BUILTIN_TYPES.contains(&p) => return Ok(()),
        (_, Some("scp")) => &["kind", "src", "dst", "chmod", "chown", "delete", "user"],
        _ => &["kind", "script", "interpreter", "args", "user", "env"],
    };
    let known: Vec<&str> = COMMON_FIELDS.iter().chain(own).copied().collect();
    crate::fields::check_known(m, &known, at)
}

fn validate_step(
    m: &Map<String, Value>,
    at: &str,
    known: &BTreeSet<String>,
) -> Result<Step, String> {
    let plugin = get_str(m, at, "plugin")?.ok_or_else(|| format!("{at}.plugin: missing"))?;
    if plugin != "approval" && !known.contains(&plugin) {
        let loaded: Vec<&str> = known.iter().map(String::as_str).collect();
        return Err(format!(
            "{at}.plugin: no plugin of type {plugin:?} is loaded (loaded: {}, and approval)",
            if loaded.is_empty() {
                "none".to_string()
            } else {
                loaded.join(", ")
            }
        ));
    }
    check_fields(m, at, &plugin)?;
    let name = get_str(m, at, "name")?.unwrap_or_else(|| plugin.clone());
    check_name(&format!("{at}.name"), &name)?;
    let action = one_of(
        at,
        "action",
        get_str(m, at, "action")?,
        &["deploy", "rollback", "always"],
        "always",
    )?;
    let batches = one_of(
        at,
        "batches",
        get_str(m, at, "batches")?,
        &[
            "firsttime",
            "thelasttime",
            "notfirsttime",
            "notthelasttime",
            "always",
        ],
        "always",
    )?;
    let mut step = Step {
        uuid: String::new(),
        name,
        plugin: plugin.clone(),
        timeout: 60,
        action,
        batches,
        kind: None,
        script: None,
        interpreter: None,
        args: None,
        user: None,
        env: BTreeMap::new(),
        src: None,
        dst: None,
        chmod: None,
        chown: None,
        delete: None,
        approvers: None,
        message: None,
        everyone: None,
        extra: Map::new(),
    };
    if plugin == "approval" {
        step.timeout = get_timeout(m, at, 86400)?;
        let approvers = match m.get("approvers") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) if !s.is_empty() => Ok(s.clone()),
                    _ => Err(format!("{at}.approvers: must be a list of token names")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::String(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            _ => return Err(format!("{at}.approvers: missing (a list of token names)")),
        };
        if approvers.is_empty() {
            return Err(format!("{at}.approvers: name at least one approver"));
        }
        step.approvers = Some(approvers);
        step.message = Some(get_str(m, at, "message")?.unwrap_or_default());
        step.everyone = Some(get_bool(m, at, "everyone")?.unwrap_or(false));
        return Ok(step);
    }
    step.timeout = get_timeout(m, at, 60)?;
    let kind = one_of(at, "kind", get_str(m, at, "kind")?, &["cmd", "scp"], "cmd")?;
    step.user = get_str(m, at, "user")?;
    if let Some(u) = &step.user {
        if u.is_empty() || u.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("{at}.user: not a valid account name"));
        }
    }
    if kind == "cmd" {
        // A custom plugin's step need not carry a script (its own
        // parameters may say what to do); the built-in executors need one.
        let builtin = BUILTIN_TYPES.contains(&plugin.as_str());
        let script = match get_str(m, at, "script")? {
            Some(s) => s,
            None if builtin => return Err(format!("{at}.script: missing")),
            None => String::new(),
        };
        if builtin && script.trim().is_empty() {
            return Err(format!("{at}.script: must not be empty"));
        }
        let interp = get_str(m, at, "interpreter")?.unwrap_or_else(|| "bash".into());
        if !INTERPRETERS.contains(&interp.as_str()) && !interp.starts_with('/') {
            return Err(format!(
                "{at}.interpreter: {interp:?} is not bash, sh, python3, perl or an absolute path"
            ));
        }
        let args = get_str(m, at, "args")?;
        if let Some(a) = &args {
            crate::vars::split_args(a).map_err(|e| format!("{at}.args: {e}"))?;
        }
        step.script = Some(script);
        step.interpreter = Some(interp);
        step.args = args;
        step.env = match m.get("env") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(e)) => {
                let mut env = BTreeMap::new();
                for (k, v) in e {
                    crate::vars::check_var_name(k).map_err(|e| format!("{at}.env: {e}"))?;
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => return Err(format!("{at}.env.{k}: must be a string")),
                    };
                    if v.contains('\0') {
                        return Err(format!("{at}.env.{k}: must not contain NUL"));
                    }
                    env.insert(k.clone(), v);
                }
                env
            }
            Some(_) => return Err(format!("{at}.env: must be an object of strings")),
        };
    } else {
        let src = get_str(m, at, "src")?.filter(|s| !s.is_empty());
        let dst = get_str(m, at, "dst")?.filter(|s| !s.is_empty());
        step.src = Some(src.ok_or_else(|| format!("{at}.src: missing"))?);
        step.dst = Some(dst.ok_or_else(|| format!("{at}.dst: missing"))?);
        if let Some(c) = get_str(m, at, "chmod")? {
            let ok = (3..=4).contains(&c.len()) && c.bytes().all(|b| (b'0'..=b'7').contains(&b));
            if !ok {
                return Err(format!("{at}.chmod: {c:?} is not an octal mode like 0644"));
            }
            step.chmod = Some(c);
        }
        if let Some(c) = get_str(m, at, "chown")? {
            let ok = !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._-:".contains(ch));
            if !ok {
                return Err(format!("{at}.chown: {c:?} is not user or user:group"));
            }
            step.chown = Some(c);
        }
        step.delete = Some(get_bool(m, at, "delete")?.unwrap_or(false));
    }
    step.kind = Some(kind);
    if !BUILTIN_TYPES.contains(&plugin.as_str()) {
        // Custom plugins get their own parameters through untouched.
        const TYPED: [&str; 20] = [
            "uuid",
            "name",
            "plugin",
            "timeout",
            "action",
            "batches",
            "kind",
            "script",
            "interpreter",
            "args",
            "user",
            "env",
            "src",
            "dst",
            "chmod",
            "chown",
            "delete",
            "approvers",
            "message",
            "everyone",
        ];
        step.extra = m
            .iter()
            .filter(|(k, _)| !TYPED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: Value) -> Result<Vec<Step>, String> {
        let mut n = 0;
        let loaded = ["ssh", "local", "agent-pull"].map(String::from).into();
        validate_steps(&v, &loaded, &[], &mut || {
            n += 1;
            format!("{n:0>12}")
        })
    }

    #[test]
    fn custom_plugins_keep_their_params_and_need_no_script() {
        let known = ["local", "echo"].map(String::from).into();
        let steps = json!([{"plugin": "echo", "text": "hi", "repeat": 2}]);
        let s = validate_steps(&steps, &known, &[], &mut || "000000000001".into()).expect("valid");
        assert_eq!(s[0].extra.get("text"), Some(&json!("hi")));
        assert_eq!(s[0].extra.get("repeat"), Some(&json!(2)));
        assert!(!s[0].extra.contains_key("plugin"));
        let steps = json!([{"plugin": "local"}]);
        let e = validate_steps(&steps, &known, &[], &mut || "000000000001".into()).unwrap_err();
        assert_eq!(e, "steps[0].script: missing");
    }

    #[test]
    fn defaults_and_uuids() {
        let s = run(json!([{"plugin": "local", "script": "echo hi"}])).expect("valid");
        assert_eq!(s[0].uuid, "000000000001");
        assert_eq!(s[0].timeout, 60);
        assert_eq!(s[0].interpreter.as_deref(), Some("bash"));
        assert_eq!(s[0].kind.as_deref(), Some("cmd"));
        assert_eq!(s[0].action, "always");
        let a = run(json!([{"plugin": "approval", "approvers": ["alice"]}])).expect("valid");
        assert_eq!(a[0].timeout, 86400);
    }

    #[test]
    fn errors_name_step_and_field() {
        let cases = [
            (json!({}), "steps: must be an array"),
            (
                json!([{"plugin": "nope", "script": "x"}]),
                "steps[0].plugin: no plugin of type \"nope\" is loaded (loaded: agent-pull, local, ssh, and approval)",
            ),
            (json!([{"plugin": "local"}]), "steps[0].script: missing"),
            (
                json!([{"plugin": "local", "script": "x", "timeout": 0}]),
                "steps[0].timeout",
            ),
            (
                json!([{"plugin": "local", "script": "x", "interpreter": "ruby"}]),
                "steps[0].interpreter",
            ),
            (
                json!([{"plugin": "ssh", "kind": "scp", "src": "/a"}]),
                "steps[0].dst: missing",
            ),
            (
                json!([{"plugin": "ssh", "kind": "scp", "src": "/a", "dst": "/b", "chmod": "999"}]),
                "steps[0].chmod",
            ),
            (json!([{"plugin": "approval"}]), "steps[0].approvers"),
            (
                json!([{"plugin": "local", "script": "x", "env": {"PATH": "/x"}}]),
                "steps[0].env",
            ),
            (
                json!([{"plugin": "local", "script": "x", "action": "sometimes"}]),
                "steps[0].action",
            ),
            (
                json!([{"plugin": "local", "script": "x", "args": "'unclosed"}]),
                "steps[0].args",
            ),
        ];
        for (input, want) in cases {
            let e = run(input.clone()).expect_err(&input.to_string());
            assert!(e.contains(want), "{input}: {e}");
        }
    }

    #[test]
    fn names() {
        assert!(check_name("name", "web").is_ok());
        assert!(check_name("name", "").is_err());
        assert!(check_name("name", &"x".repeat(101)).is_err());
        assert!(check_name("name", "a\nb").is_err());
        assert!(check_name("name", "<script>\"'😀").is_ok());
    }
}
