//! Strict bodies (pure): a field jobx does not know is refused, naming it and
//! the closest known field, because a typo such as `timout` would otherwise
//! be dropped silently and the step would run with the default.

use serde_json::{Map, Value};

/// Refuses the first key of `m` that is not in `known`. `at` prefixes the
/// message (`steps[0]`), empty for a top-level body.
pub fn check_known(m: &Map<String, Value>, known: &[&str], at: &str) -> Result<(), String> {
    let Some(bad) = m.keys().find(|k| !known.contains(&k.as_str())) else {
        return Ok(());
    };
    let field = if at.is_empty() {
        bad.clone()
    } else {
        format!("{at}.{bad}")
    };
    Err(match closest(bad, known) {
        Some(c) => format!("{field}: unknown field (did you mean {c:?}?)"),
        None => format!("{field}: unknown field (known: {})", known.join(", ")),
    })
}

/// The known name nearest to `word`, if it is near enough to be a typo.
pub fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (distance(&word, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars (names are short).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn known_fields_pass() {
        let m = obj(json!({"name": "a", "timeout": 3}));
        assert_eq!(check_known(&m, &["name", "timeout"], "steps[0]"), Ok(()));
    }

    #[test]
    fn typo_names_field_and_suggestion() {
        let m = obj(json!({"timout": 300}));
        assert_eq!(
            check_known(&m, &["name", "timeout", "script"], "steps[0]"),
            Err("steps[0].timout: unknown field (did you mean \"timeout\"?)".into())
        );
        let m = obj(json!({"hostname": "10.0.0.1"}));
        assert_eq!(
            check_known(&m, &["name", "host", "port", "user", "labels"], "nodes[0]"),
            Err("nodes[0].hostname: unknown field (known: name, host, port, user, labels)".into())
        );
    }

    #[test]
    fn closest_only_when_near() {
        assert_eq!(closest("scirpt", &["script", "src"]), Some("script"));
        assert_eq!(closest("Action", &["action"]), Some("action"));
        assert_eq!(closest("zzzzzz", &["script", "src"]), None);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }
}
