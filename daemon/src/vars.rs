//! Task variables (pure): normalising the `variable` object, `${name}`
//! substitution and argument splitting.

use serde_json::Value;
use std::collections::BTreeMap;

/// Largest value accepted for one variable; larger values are refused, never truncated.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A variable or environment name usable in a process environment.
pub fn check_var_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "variable name {name:?} must match ^[A-Za-z_][A-Za-z0-9_]*$"
        ));
    }
    let reserved = ["PATH", "HOME", "SHELL", "USER", "IFS"];
    if reserved.contains(&name) || name.starts_with("LD_") || name.starts_with("JOBX_") {
        return Err(format!(
            "variable name {name:?} is reserved (PATH, HOME, SHELL, USER, IFS, LD_*, JOBX_*)"
        ));
    }
    Ok(())
}

/// Turns the task's `variable` JSON object into name → text. Numbers and
/// booleans become their text; other types and bad names are refused.
pub fn normalize(v: Option<&Value>) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let obj = match v {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(o)) => o,
        Some(_) => return Err("variable: must be an object of name: value".into()),
    };
    for (k, v) in obj {
        check_var_name(k).map_err(|e| format!("variable: {e}"))?;
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            _ => return Err(format!("variable.{k}: must be a string, number or boolean")),
        };
        if text.contains('\0') {
            return Err(format!("variable.{k}: must not contain NUL"));
        }
        if text.len() > MAX_VALUE_BYTES {
            return Err(format!("variable.{k}: longer than {MAX_VALUE_BYTES} bytes"));
        }
        out.insert(k.clone(), text);
    }
    Ok(out)
}

/// The `${name}` references in `text`, in order.
pub fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                out.push(after[..j].to_string());
                rest = &after[j + 1..];
            }
            None => break,
        }
    }
    out
}

/// Replaces every `${name}` in one pass (a value containing `${…}` is not
/// expanded again). Unknown names are an error naming them.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let Some(j) = after.find('}') else { break };
        let name = &after[..j];
        let val = vars
            .get(name)
            .ok_or_else(|| format!("unknown variable ${{{name}}}"))?;
        out.push_str(&rest[..i]);
        out.push_str(val);
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits an `args` string into words with shell quoting rules (no expansion).
pub fn split_args(args: &str) -> Result<Vec<String>, String> {
    shlex::split(args).ok_or_else(|| "unbalanced quotes".to_string())
}

/// The variables as YAML text, the form OPEN-C3 stores and its front end
/// scans with patterns such as `version: (\S+)`: one `name: value` line each,
/// plain scalars where YAML reads them back unchanged, quoted otherwise.
pub fn yaml_text(variable: &Value) -> String {
    let Some(obj) = variable.as_object().filter(|o| !o.is_empty()) else {
        return "--- {}\n".into();
    };
    let mut out = String::from("---\n");
    for (k, v) in obj {
        let value = match v {
            Value::String(s) => yaml_scalar(s),
            Value::Null => "~".into(),
            Value::Number(_) | Value::Bool(_) => v.to_string(),
            // JSON is valid YAML flow syntax.
            other => other.to_string(),
        };
        out.push_str(&yaml_scalar(k));
        out.push_str(": ");
        out.push_str(&value);
        out.push('\n');
    }
    out
}

fn yaml_scalar(s: &str) -> String {
    let special_word = matches!(
        s.to_ascii_lowercase().as_str(),
        "~" | "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
    );
    let numeric = s.parse::<f64>().is_ok() && s.parse::<i64>().is_err()
        || s.starts_with('0') && s.len() > 1 && s.bytes().all(|b| b.is_ascii_digit());
    let plain = !s.is_empty()
        && !special_word
        && !numeric
        && s.trim() == s
        && !s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`".contains(c))
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && !s.chars().any(char::is_control);
    if plain {
        s.to_string()
    } else if s.chars().any(char::is_control) {
        // A JSON string is a valid YAML double-quoted scalar.
        Value::String(s.to_string()).to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(p: &[(&str, &str)]) -> BTreeMap<String, String> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn substitution_is_single_pass() {
        let v = vars(&[("a", "${b}"), ("b", "x")]);
        assert_eq!(substitute("<${a}>", &v).as_deref(), Ok("<${b}>"));
        assert_eq!(substitute("${b}${b}", &v).as_deref(), Ok("xx"));
        assert_eq!(
            substitute("no vars $a {b}", &v).as_deref(),
            Ok("no vars $a {b}")
        );
        assert_eq!(substitute("open ${b", &v).as_deref(), Ok("open ${b"));
        assert!(substitute("${zzz}", &v).unwrap_err().contains("${zzz}"));
    }

    #[test]
    fn references_in_order() {
        assert_eq!(references("${a} and ${b} ${"), vec!["a", "b"]);
    }

    #[test]
    fn normalize_types() {
        let n = normalize(Some(&json!({"v": 1, "b": true, "s": "x y"}))).expect("valid");
        assert_eq!(n["v"], "1");
        assert_eq!(n["b"], "true");
        assert_eq!(n["s"], "x y");
        assert!(normalize(Some(&json!({"PATH": "x"}))).is_err());
        assert!(normalize(Some(&json!({"a": [1]}))).is_err());
        assert!(normalize(Some(&json!([1]))).is_err());
        let big = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(normalize(Some(&json!({ "a": big })))
            .unwrap_err()
            .contains("variable.a"));
    }

    #[test]
    fn yaml_text_as_openc3_scans_it() {
        assert_eq!(yaml_text(&json!({})), "--- {}\n");
        assert_eq!(yaml_text(&Value::Null), "--- {}\n");
        assert_eq!(
            yaml_text(&json!({"version": "2.4.1", "_rollbackVersion_": "2.4.0", "count": 3})),
            "---\n_rollbackVersion_: 2.4.0\ncount: 3\nversion: 2.4.1\n"
        );
        assert_eq!(
            yaml_text(
                &json!({"a": "", "b": "true", "c": "x: y", "d": "it's", "e": "1.5", "f": "l1\nl2", "g": "007"})
            ),
            "---\na: ''\nb: 'true'\nc: 'x: y'\nd: it's\ne: '1.5'\nf: \"l1\\nl2\"\ng: '007'\n"
        );
        assert_eq!(yaml_text(&json!({"x": "-v"})), "---\nx: '-v'\n");
        // YAML 1.1 reads y and n as booleans: such keys are quoted too.
        assert_eq!(yaml_text(&json!({"n": "x"})), "---\n'n': x\n");
    }

    #[test]
    fn var_names() {
        assert!(check_var_name("version").is_ok());
        assert!(check_var_name("_x1").is_ok());
        for bad in ["1x", "a-b", "", "PATH", "LD_PRELOAD", "JOBX_NODE", "HOME"] {
            assert!(check_var_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn args_split() {
        assert_eq!(
            split_args("a 'b c' \"d\\\"e\"").expect("ok"),
            vec!["a", "b c", "d\"e"]
        );
        assert!(split_args("'x").is_err());
    }
}
