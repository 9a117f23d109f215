//! The documentation stays in step with the code.
//!
//! - Every route the router registers (`.at("…")` in `daemon/src/api/`, and
//!   the agent-pull plugin's protocol paths) is listed in `docs/api.md`.
//!   The source of the route list is the router itself: there is no second,
//!   machine-readable description (an OpenAPI document) that would need
//!   keeping in sync with both the code and the prose, and that a reader
//!   would still have to translate into what the calls mean. The prose is
//!   what people read; this test makes it complete.
//! - Every relative link in `README.md` and `docs/*.md` points at a file
//!   that exists.
//! - Every key the daemon's configuration accepts — and every key of the
//!   `[plugins.<type>]` tables of the plugins in this repository — appears
//!   in `config/jobxd.toml` (as a setting or a commented example). The keys
//!   are learnt from the real `jobxd` binary: a probe key in a table makes
//!   the parser refuse it and list the keys it does know (every table
//!   refuses unknown keys), so a key added to the code without a line in
//!   the file fails here.

use jobx_tests::daemon::{bin_dir, TempDir};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// A route pattern with parameter names dropped: `/task/:projectid/:uuid`
/// → `/task/:/:`, `/plugin/:type/*rest` → `/plugin/:/*`.
fn normalize(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with(':') {
                ":"
            } else if seg.starts_with('*') && seg.len() > 1 {
                "*"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The string literals passed to `.at(` in one source file, with the text
/// that follows each up to the end of its statement. Chained `.at("/a").at("/b")`
/// registrations are joined into one path.
fn registrations(src: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find(".at(\"") {
        let after = &rest[i + 5..];
        let Some(end) = after.find('"') else { break };
        let mut path = after[..end].to_string();
        let mut tail = &after[end + 1..];
        // `.at("/a").at("/b")` is one route, `/a/b`.
        while let Some(next) = tail.strip_prefix(").at(\"") {
            let Some(e) = next.find('"') else { break };
            path.push_str(&next[..e]);
            tail = &next[e + 1..];
        }
        let stmt_end = tail.find(';').unwrap_or(tail.len());
        out.push((path, tail[..stmt_end].to_string()));
        rest = tail;
    }
    out
}

/// Every route the daemon's router registers, except the catch-all that
/// answers 404 for everything else.
fn daemon_routes() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&repo().join("daemon/src/api"), &mut files);
    let mut routes = BTreeSet::new();
    for f in files {
        for (path, handler) in registrations(&read(&f)) {
            if handler.contains("not_found") {
                continue;
            }
            routes.insert(path);
        }
    }
    routes
}

/// The agent-pull plugin's paths under `/plugin/agent-pull`: the operator's
/// `path == "/…"` routes and the protocol's `"/…" if post|get` match arms
/// under its `PREFIX`, plus the `starts_with("/…")` file routes.
fn agent_pull_routes() -> BTreeSet<String> {
    let base = "/plugin/agent-pull";
    let root = repo().join("plugins/agent-pull/src");
    let proto = read(&root.join("proto.rs"));
    let prefix = proto
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("pub const PREFIX: &str = \"")
                .and_then(|r| r.strip_suffix("\";"))
        })
        .expect("agent-pull's proto.rs defines PREFIX");
    let http = read(&root.join("http.rs"));
    let mut routes = BTreeSet::new();
    for line in http.lines().map(str::trim) {
        if let Some(r) = line.strip_prefix("if path == \"") {
            if let Some(p) = r.split('"').next() {
                routes.insert(format!("{base}{p}"));
            }
        }
        if let Some(r) = line.strip_prefix('"') {
            if let Some((p, after)) = r.split_once('"') {
                let arm = after.starts_with(" if post") || after.starts_with(" if get");
                if arm && p.starts_with('/') {
                    routes.insert(format!("{base}{prefix}{p}"));
                }
            }
        }
        if let Some(i) = line.find("rest.starts_with(\"") {
            if let Some(p) = line[i + 18..].split('"').next() {
                routes.insert(format!("{base}{prefix}{p}"));
            }
        }
    }
    routes
}

/// The path-like words of a document: runs starting with `/` made of the
/// characters a route pattern uses.
fn doc_paths(text: &str) -> BTreeSet<String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "/:*_-.~".contains(c);
    let mut out = BTreeSet::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i] == '/' && (i == 0 || !ok(chars[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && ok(chars[j]) {
            j += 1;
        }
        let word: String = chars[i..j].iter().collect();
        out.insert(word.trim_end_matches(['.', ':']).to_string());
        i = j;
    }
    out
}

#[test]
fn every_route_is_in_api_md() {
    let api = read(&repo().join("docs/api.md"));
    let documented: BTreeSet<String> = doc_paths(&api).iter().map(|p| normalize(p)).collect();
    let routes = daemon_routes();
    assert!(
        routes.contains("/task/:projectid/job/byname") && routes.len() > 30,
        "the route scan found too little: {routes:?}"
    );
    let missing: Vec<&String> = routes
        .iter()
        .filter(|r| !documented.contains(&normalize(r)))
        .collect();
    assert!(
        missing.is_empty(),
        "routes registered in daemon/src/api but not listed in docs/api.md: {missing:?}"
    );
    let agent = agent_pull_routes();
    assert!(
        agent.contains("/plugin/agent-pull/v1/poll"),
        "the agent-pull scan found too little: {agent:?}"
    );
    let missing: Vec<&String> = agent
        .iter()
        .filter(|r| {
            if r.ends_with('/') {
                !documented.iter().any(|d| d.starts_with(r.as_str()))
            } else {
                !documented.contains(r.as_str())
            }
        })
        .collect();
    assert!(
        missing.is_empty(),
        "agent-pull paths not listed in docs/api.md: {missing:?}"
    );
}

#[test]
fn route_scan_reads_chains_and_skips_the_fallback() {
    let src = r#"
        s.at("/mon").get(h(mon));
        s.at("/ui").at("/login").post(h(login));
        s.at("*").all(h(not_found));
    "#;
    let r = registrations(src);
    assert_eq!(r[0].0, "/mon");
    assert_eq!(r[1].0, "/ui/login");
    assert!(r[2].1.contains("not_found"));
    assert_eq!(normalize("/plugin/:type/*rest"), "/plugin/:/*");
    let d = doc_paths("`GET /task/:projectid/:uuid`, then /mon. See `/x?y=1`");
    assert!(d.contains("/task/:projectid/:uuid") && d.contains("/mon") && d.contains("/x"));
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// become `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a markdown text's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            code = !code;
            continue;
        }
        if !code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Relative links with an anchor (`file.md#part`, or `#part` in the same
/// file) whose target has no such heading.
fn broken_anchors(doc: &Path, text: &str) -> Vec<String> {
    let mut broken = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        rest = &after[end..];
        let Some((file, anchor)) = target.split_once('#') else {
            continue;
        };
        if file.contains("://") || !(file.is_empty() || file.ends_with(".md")) {
            continue;
        }
        let path = if file.is_empty() {
            doc.to_path_buf()
        } else {
            doc.parent().expect("a file has a directory").join(file)
        };
        let Ok(target_text) = std::fs::read_to_string(&path) else {
            continue; // a missing file is reported by the file check
        };
        if !anchors(&target_text).contains(anchor) {
            broken.push(format!("{}: {target}", doc.display()));
        }
    }
    broken
}

/// The relative link targets of a markdown text (`[text](target)`), without
/// anchors; web, mail and in-page links are left out.
fn relative_links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].trim();
        let target = target.split_whitespace().next().unwrap_or("");
        let web = ["http://", "https://", "mailto:", "#"]
            .iter()
            .any(|p| target.starts_with(p));
        if !web && !target.is_empty() {
            let file = target.split('#').next().unwrap_or(target);
            out.push(file.trim_matches(['<', '>']).to_string());
        }
        rest = &after[end..];
    }
    out
}

#[test]
fn relative_links_point_at_files() {
    let root = repo();
    let mut docs = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/ exists") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    assert!(docs.len() >= 6, "docs/ holds the documents: {docs:?}");
    let mut broken = Vec::new();
    for doc in &docs {
        let dir = doc.parent().expect("a file has a directory");
        let text = read(doc);
        for link in relative_links(&text) {
            if !dir.join(&link).exists() {
                broken.push(format!("{}: {link}", doc.display()));
            }
        }
        broken.extend(broken_anchors(doc, &text));
    }
    assert!(
        broken.is_empty(),
        "links to missing files or headings: {broken:?}"
    );
    assert_eq!(slug(" `[plugins.ssh]`"), "pluginsssh");
    assert_eq!(slug("3.3 Step filters"), "33-step-filters");
    assert_eq!(slug("`GET /metrics`"), "get-metrics");
    assert_eq!(
        relative_links("[a](docs/api.md#tasks) [b](https://x) [c](#here) [d](../x.md \"t\")"),
        vec!["docs/api.md", "../x.md"]
    );
}

/// The keys of config/jobxd.toml, commented or not, as dotted paths
/// (`server.listen`, `auth.tokens.name`, `plugins.ssh.user`).
fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    for raw in text.lines() {
        let line = raw.trim().trim_start_matches('#').trim();
        if let Some(h) = line.strip_prefix('[') {
            let name = h.trim_start_matches('[');
            if let Some(end) = name.find(']') {
                let name = &name[..end];
                let plain = name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                if plain && !name.is_empty() {
                    section = name.to_string();
                    // Every prefix of a header is a table too (`plugins.ssh` → `plugins`).
                    let mut acc = String::new();
                    for part in section.split('.') {
                        if !acc.is_empty() {
                            acc.push('.');
                        }
                        acc.push_str(part);
                        keys.insert(acc.clone());
                    }
                    continue;
                }
            }
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
        if plain {
            keys.insert(if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            });
        }
    }
    keys
}

/// One step of a configuration path: a table or an array of tables.
#[derive(Clone, PartialEq)]
enum Seg {
    Table(String),
    Array(String),
}

impl Seg {
    fn name(&self) -> &str {
        match self {
            Seg::Table(k) | Seg::Array(k) => k,
        }
    }
}

/// Configuration text with `leaf` put at `path` (`[[auth.tokens]]` for an
/// array segment).
fn config_at(path: &[Seg], leaf: toml::Value) -> String {
    fn build(path: &[Seg], leaf: toml::Value) -> toml::Value {
        let Some((first, rest)) = path.split_first() else {
            return leaf;
        };
        let mut t = toml::Table::new();
        match first {
            Seg::Table(k) => {
                t.insert(k.to_string(), build(rest, leaf));
            }
            Seg::Array(k) => {
                t.insert(k.to_string(), toml::Value::Array(vec![build(rest, leaf)]));
            }
        }
        toml::Value::Table(t)
    }
    toml::to_string(&build(path, leaf)).expect("probe config serializes")
}

const PROBE: &str = "zz_probe_key";

fn probe_table() -> toml::Value {
    let mut t = toml::Table::new();
    t.insert(PROBE.into(), toml::Value::Integer(1));
    toml::Value::Table(t)
}

/// What jobxd says about a configuration file: `--check-config`, and, when
/// that accepts it, a real start (plugins check their own tables when they
/// load), ended as soon as it is up.
fn jobxd_verdict(dir: &Path, config: &str) -> String {
    let data = dir.join("data");
    let base = format!(
        "[storage]\ndata_dir = {:?}\n[plugins]\ndir = [{:?}]\n[[auth.tokens]]\nname = \"probe\"\ntoken = \"probe-secret-0001\"\n",
        data.display().to_string(),
        bin_dir().display().to_string()
    );
    let mut table: toml::Table = base.parse().expect("base config");
    let extra: toml::Table = config.parse().expect("probe config parses");
    for (k, v) in extra {
        match (table.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => a.extend(b),
            (_, v) => {
                table.insert(k, v);
            }
        }
    }
    let path = dir.join("probe.toml");
    std::fs::write(&path, toml::to_string(&table).expect("config")).expect("write probe config");
    let jobxd = bin_dir().join("jobxd");
    let out = Command::new(&jobxd)
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", jobxd.display()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !config.contains("[plugins.") {
        return said;
    }
    // Plugins read their tables when they load: start for real. A start
    // that fails ends at once with the message; one still up after a few
    // seconds accepted the table.
    let mut child = Command::new(&jobxd)
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start jobxd");
    let exited = jobx_tests::poll(Duration::from_secs(5), || child.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("jobxd output");
    format!("{said}{}", String::from_utf8_lossy(&out.stderr))
}

/// The keys serde lists after "unknown field `zz_probe_key`, expected …",
/// or None when jobxd did not refuse the probe as an unknown field.
fn expected_keys(verdict: &str) -> Option<Vec<String>> {
    let i = verdict.find(&format!("unknown field `{PROBE}`"))?;
    let line = verdict[i..].lines().next().unwrap_or("");
    let after = line.split_once("expected").map(|(_, a)| a).unwrap_or("");
    Some(
        after
            .split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect(),
    )
}

/// Whether jobxd took the configuration without complaint.
fn accepted(verdict: &str) -> bool {
    verdict.contains("configuration ok") && !verdict.contains("ERROR")
}

/// Walks the tables under `path`, collecting every key as a dotted path.
fn walk(dir: &Path, path: Vec<Seg>, keys: &mut BTreeSet<String>, open: &mut Vec<String>) {
    let dotted = |p: &[Seg]| p.iter().map(Seg::name).collect::<Vec<_>>().join(".");
    let verdict = jobxd_verdict(dir, &config_at(&path, probe_table()));
    let Some(fields) = expected_keys(&verdict) else {
        open.push(format!("{}: {}", dotted(&path), verdict.trim()));
        return;
    };
    for f in fields {
        let mut child = path.clone();
        child.push(Seg::Table(f.clone()));
        keys.insert(dotted(&child));
        // A table refuses the probe key; a list of tables refuses it inside `[[…]]`.
        let as_table = jobxd_verdict(dir, &config_at(&child, probe_table()));
        if expected_keys(&as_table).is_some() {
            walk(dir, child, keys, open);
            continue;
        }
        if accepted(&as_table) {
            open.push(format!("{}: accepts a table with any key", dotted(&child)));
            continue;
        }
        let mut arr = path.clone();
        arr.push(Seg::Array(f));
        let as_array = jobxd_verdict(dir, &config_at(&arr, probe_table()));
        if expected_keys(&as_array).is_some() {
            walk(dir, arr, keys, open);
        }
    }
}

#[test]
fn every_config_key_is_in_jobxd_toml() {
    let dir = TempDir::new("docs-config");
    let mut keys = BTreeSet::new();
    let mut open = Vec::new();
    walk(dir.path(), Vec::new(), &mut keys, &mut open);
    assert!(
        keys.contains("server.listen") && keys.contains("auth.tokens.sha256"),
        "the probe learnt too little ({open:?}): {keys:?}"
    );
    // `[plugins]` holds `dir` and one table per plugin type, so it accepts
    // any name; each built-in plugin's own table is walked.
    open.retain(|o| !o.starts_with("plugins: "));
    keys.insert("plugins.dir".into());
    for ty in ["local", "ssh", "agent-pull"] {
        let before = keys.len();
        walk(
            dir.path(),
            vec![Seg::Table("plugins".into()), Seg::Table(ty.into())],
            &mut keys,
            &mut open,
        );
        keys.insert(format!("plugins.{ty}"));
        assert!(
            keys.len() > before + 1,
            "[plugins.{ty}]: no keys learnt ({open:?})"
        );
    }
    assert!(
        open.is_empty(),
        "tables that did not refuse an unknown key, so their keys can not be checked: {open:?}"
    );
    let file = read(&repo().join("config/jobxd.toml"));
    let documented = documented_keys(&file);
    let missing: Vec<&String> = keys.iter().filter(|k| !documented.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "keys jobxd accepts that config/jobxd.toml does not show: {missing:?}"
    );
}

#[test]
fn documented_keys_reads_comments_and_headers() {
    let k = documented_keys(
        "[server]\nlisten = \"x\"\n# name = \"y\"\n# [[plugins.agent-pull.agents]]\n# sha256 = \"…\"  # or token\n# prose about a thing\n",
    );
    for want in [
        "server",
        "server.listen",
        "server.name",
        "plugins",
        "plugins.agent-pull",
        "plugins.agent-pull.agents",
        "plugins.agent-pull.agents.sha256",
    ] {
        assert!(k.contains(want), "{want} in {k:?}");
    }
    assert_eq!(
        expected_keys("x: unknown field `zz_probe_key`, expected one of `a`, `b-c`\n"),
        Some(vec!["a".to_string(), "b-c".to_string()])
    );
    assert_eq!(expected_keys("configuration ok"), None);
}
