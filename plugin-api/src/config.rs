//! Reading a plugin's `[plugins.<type>]` section with errors that name the
//! key, so `jobxd --check-config` can say which line to fix.

use serde::de::DeserializeOwned;

/// Deserializes a plugin's configuration; an error reads
/// `[plugins.<section>] <key path>: <problem>`.
pub fn parse<T: DeserializeOwned>(section: &str, value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("[plugins.{section}]: {}", e.inner())
        } else {
            format!("[plugins.{section}] {path}: {}", e.inner())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct C {
        timeout: Option<u64>,
        agents: Option<Vec<A>>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct A {
        name: String,
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse::<C>("x", serde_json::json!({"timeout": "10s"})).unwrap_err();
        assert!(e.starts_with("[plugins.x] timeout: invalid type"), "{e}");
        let e = parse::<C>(
            "x",
            serde_json::json!({"agents": [{"name": "a", "tokn": 1}]}),
        )
        .unwrap_err();
        assert!(e.starts_with("[plugins.x] agents[0]"), "{e}");
        assert!(e.contains("tokn"), "{e}");
        let e = parse::<C>("x", serde_json::json!({"timout": 1})).unwrap_err();
        assert!(e.contains("timout"), "{e}");
    }
}
