//! The project file (pure): a project's nodes, groups and jobs as TOML.
//! `parse` reads what people write; `emit` writes the canonical form that
//! `jobx export` prints, and `emit(parse(x)) == x` for that form. Both the
//! file and the server's answers become the same canonical values, so the
//! diff compares like with like.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Project {
    pub project: Option<u64>,
    pub nodes: Vec<Node>,
    pub groups: Vec<Group>,
    pub jobs: Vec<Job>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    /// None when the address is the name.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupType {
    List,
    Percent,
}

impl GroupType {
    /// The API's `group_type`, which is also the field holding the text.
    pub fn api(self) -> &'static str {
        match self {
            GroupType::List => "list",
            GroupType::Percent => "percent",
        }
    }

    /// The file's key for the text (the API's field name).
    pub fn text_key(self) -> &'static str {
        match self {
            GroupType::List => "node",
            GroupType::Percent => "percent",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub name: String,
    pub group_type: GroupType,
    pub text: String,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub name: String,
    /// Canonical steps: no uuid, no value equal to the server's default.
    pub steps: Vec<Map<String, Value>>,
}

impl Node {
    pub fn to_api(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), self.name.clone().into());
        if let Some(h) = &self.host {
            m.insert("host".into(), h.clone().into());
        }
        if let Some(p) = self.port {
            m.insert("port".into(), p.into());
        }
        if let Some(u) = &self.user {
            m.insert("user".into(), u.clone().into());
        }
        m.insert("labels".into(), serde_json::json!(self.labels));
        Value::Object(m)
    }

    /// A node as `GET /node` answers it (`host` is the address, the name when unset).
    pub fn from_api(v: &Value) -> Result<Node, String> {
        let name = str_field(v, "name")?.ok_or("node without a name")?;
        let host = str_field(v, "host")?.filter(|h| *h != name && !h.is_empty());
        let port = match v.get("port") {
            None | Some(Value::Null) => None,
            Some(p) => Some(
                p.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or_else(|| format!("node {name}: port {p} is not a port"))?,
            ),
        };
        let user = str_field(v, "user")?.filter(|u| !u.is_empty());
        let labels = match v.get("labels") {
            Some(Value::Object(l)) => l
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
            _ => BTreeMap::new(),
        };
        Ok(Node {
            name,
            host,
            port,
            user,
            labels,
        })
    }
}

impl Group {
    pub fn to_api(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), self.name.clone().into());
        m.insert("note".into(), self.note.clone().into());
        m.insert("group_type".into(), self.group_type.api().into());
        m.insert(self.group_type.text_key().into(), self.text.clone().into());
        Value::Object(m)
    }

    /// A group as `GET /group/:p/:id` answers it.
    pub fn from_api(v: &Value) -> Result<Group, String> {
        let name = str_field(v, "name")?.ok_or("group without a name")?;
        let group_type = match v["group_type"].as_str() {
            Some("list") => GroupType::List,
            Some("percent") => GroupType::Percent,
            other => return Err(format!("group {name}: unknown group_type {other:?}")),
        };
        let text = str_field(v, group_type.text_key())?.unwrap_or_default();
        let note = str_field(v, "note")?.unwrap_or_default();
        Ok(Group {
            name,
            group_type,
            text,
            note,
        })
    }
}

impl Job {
    /// A job as `GET /job/:p` answers it.
    pub fn from_api(v: &Value) -> Result<Job, String> {
        let name = str_field(v, "name")?.ok_or("job without a name")?;
        let steps = match v.get("steps") {
            Some(Value::Array(s)) => s
                .iter()
                .map(|s| match s {
                    Value::Object(m) => Ok(canonical_step(m)),
                    _ => Err(format!("job {name}: a step is not an object")),
                })
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        Ok(Job { name, steps })
    }
}

fn str_field(v: &Value, k: &str) -> Result<Option<String>, String> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(o) => Err(format!("{k}: {o} is not a string")),
    }
}

/// A step without its uuid and without values equal to the server's
/// defaults (`jobs::validate_steps` of jobxd): what the file shows.
pub fn canonical_step(m: &Map<String, Value>) -> Map<String, Value> {
    let plugin = m.get("plugin").and_then(Value::as_str).unwrap_or("");
    let approval = plugin == "approval";
    let mut out = Map::new();
    for (k, v) in m {
        let default = match (k.as_str(), v) {
            ("uuid", _) | (_, Value::Null) => true,
            ("timeout", Value::Number(n)) => n.as_u64() == Some(if approval { 86400 } else { 60 }),
            ("action" | "batches", Value::String(s)) => s == "always",
            ("kind", Value::String(s)) => s == "cmd",
            ("interpreter", Value::String(s)) => s == "bash",
            ("delete" | "everyone", Value::Bool(b)) => !b,
            ("message", Value::String(s)) => approval && s.is_empty(),
            ("env", Value::Object(e)) => e.is_empty(),
            _ => false,
        };
        if !default {
            out.insert(k.clone(), v.clone());
        }
    }
    if !out.contains_key("name") && !plugin.is_empty() {
        out.insert("name".into(), plugin.into());
    }
    // The server also takes "a, b" for approvers; it answers a list.
    if let Some(Value::String(s)) = out.get("approvers") {
        let list: Vec<Value> = s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.into()))
            .collect();
        out.insert("approvers".into(), Value::Array(list));
    }
    out
}

// ---- reading ----------------------------------------------------------

fn toml_to_json(v: &toml::Value, at: &str) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{at}: {f} is not a finite number"))?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => {
            return Err(format!(
                "{at}: dates are not used in project files (write \"{d}\")"
            ))
        }
        toml::Value::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, v)| toml_to_json(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v, &format!("{at}.{k}"))?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

fn tables<'a>(t: &'a toml::Table, key: &str) -> Result<Vec<&'a toml::Table>, String> {
    match t.get(key) {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_table()
                    .ok_or_else(|| format!("{key}[{i}]: must be a table ([[{key}]])"))
            })
            .collect(),
        Some(_) => Err(format!("{key}: must be written as [[{key}]] tables")),
    }
}

fn get_str(t: &toml::Table, at: &str, key: &str) -> Result<Option<String>, String> {
    match t.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{at}.{key}: must be a string")),
    }
}

fn only_keys(t: &toml::Table, at: &str, allowed: &[&str]) -> Result<(), String> {
    match t.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "{at}: unknown key {k:?} (known: {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn parse_node(t: &toml::Table, i: usize) -> Result<Node, String> {
    let at = format!("node[{i}]");
    let name = get_str(t, &at, "name")?.ok_or_else(|| format!("{at}.name: missing"))?;
    let at = format!("node {name:?}");
    only_keys(t, &at, &["name", "host", "port", "user", "labels"])?;
    let port = match t.get("port") {
        None => None,
        Some(toml::Value::Integer(p)) => Some(
            u16::try_from(*p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{at}.port: must be 1 to 65535"))?,
        ),
        Some(_) => return Err(format!("{at}.port: must be a number")),
    };
    let labels = match t.get("labels") {
        None => BTreeMap::new(),
        Some(toml::Value::Table(l)) => l
            .iter()
            .map(|(k, v)| match v {
                toml::Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(format!("{at}.labels.{k}: must be a string")),
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err(format!("{at}.labels: must be a table of strings")),
    };
    let host = get_str(t, &at, "host")?.filter(|h| *h != name && !h.is_empty());
    Ok(Node {
        host,
        port,
        user: get_str(t, &at, "user")?.filter(|u| !u.is_empty()),
        labels,
        name,
    })
}

fn parse_group(t: &toml::Table, i: usize) -> Result<Group, String> {
    let at = format!("group[{i}]");
    let name = get_str(t, &at, "name")?.ok_or_else(|| format!("{at}.name: missing"))?;
    let at = format!("group {name:?}");
    only_keys(t, &at, &["name", "node", "percent", "note"])?;
    let (group_type, text) = match (get_str(t, &at, "node")?, get_str(t, &at, "percent")?) {
        (Some(n), None) => (GroupType::List, n),
        (None, Some(p)) => (GroupType::Percent, p),
        (Some(_), Some(_)) => {
            return Err(format!(
                "{at}: give either node (a list group) or percent, not both"
            ))
        }
        (None, None) => {
            return Err(format!(
                "{at}: missing node = \"a,b;c\" (a list group) or percent = \"1:2:50%\""
            ))
        }
    };
    Ok(Group {
        name,
        group_type,
        text,
        note: get_str(t, &at, "note")?.unwrap_or_default(),
    })
}

fn parse_job(t: &toml::Table, i: usize) -> Result<Job, String> {
    let at = format!("job[{i}]");
    let name = get_str(t, &at, "name")?.ok_or_else(|| format!("{at}.name: missing"))?;
    let at = format!("job {name:?}");
    only_keys(t, &at, &["name", "step"])?;
    let steps = tables(t, "step")
        .map_err(|e| format!("{at}: {e}"))?
        .into_iter()
        .enumerate()
        .map(|(j, s)| {
            let at = format!("{at} step {}", j + 1);
            match toml_to_json(&toml::Value::Table(s.clone()), &at)? {
                Value::Object(m) => {
                    if !m.contains_key("plugin") {
                        return Err(format!(
                            "{at}: plugin missing (local, ssh, agent-pull, approval…)"
                        ));
                    }
                    Ok(canonical_step(&m))
                }
                _ => Err(format!("{at}: must be a table")),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if steps.is_empty() {
        return Err(format!("{at}: a job needs at least one [[job.step]]"));
    }
    Ok(Job { name, steps })
}

/// Reads one project file's text.
pub fn parse(text: &str) -> Result<Project, String> {
    let t: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    only_keys(&t, "file", &["project", "node", "group", "job"])?;
    let project = match t.get("project") {
        None => None,
        Some(toml::Value::Integer(p)) if *p >= 0 => Some(*p as u64),
        Some(_) => return Err("project: must be a project id (a number)".into()),
    };
    let mut p = Project {
        project,
        ..Default::default()
    };
    for (i, n) in tables(&t, "node")?.into_iter().enumerate() {
        p.nodes.push(parse_node(n, i)?);
    }
    for (i, g) in tables(&t, "group")?.into_iter().enumerate() {
        p.groups.push(parse_group(g, i)?);
    }
    for (i, j) in tables(&t, "job")?.into_iter().enumerate() {
        p.jobs.push(parse_job(j, i)?);
    }
    p.check_unique()?;
    Ok(p)
}

impl Project {
    /// Adds another file's objects (a directory of files is one project).
    pub fn merge(&mut self, other: Project) -> Result<(), String> {
        match (self.project, other.project) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!("the files name two projects, {a} and {b}"))
            }
            (None, b) => self.project = b,
            _ => {}
        }
        self.nodes.extend(other.nodes);
        self.groups.extend(other.groups);
        self.jobs.extend(other.jobs);
        self.check_unique()
    }

    fn check_unique(&self) -> Result<(), String> {
        fn dup<'a>(names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
            let mut seen = std::collections::BTreeSet::new();
            names.into_iter().find(|n| !seen.insert(*n))
        }
        if let Some(n) = dup(self.nodes.iter().map(|n| n.name.as_str())) {
            return Err(format!("node {n:?} is defined twice"));
        }
        if let Some(n) = dup(self.groups.iter().map(|n| n.name.as_str())) {
            return Err(format!("group {n:?} is defined twice"));
        }
        if let Some(n) = dup(self.jobs.iter().map(|n| n.name.as_str())) {
            return Err(format!("job {n:?} is defined twice"));
        }
        Ok(())
    }
}

// ---- writing ----------------------------------------------------------

fn key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        basic_string(k)
    }
}

fn basic_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A string as TOML: scripts and other multi-line text as literal
/// `'''` blocks (read as written), everything else as a basic string.
fn string(s: &str) -> String {
    let literal_ok = s.contains('\n')
        && !s.contains("'''")
        && !s.ends_with('\'')
        && !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t');
    if literal_ok {
        format!("'''\n{s}'''")
    } else {
        basic_string(s)
    }
}

/// A JSON value as an inline TOML value (None for null, which TOML lacks).
fn inline(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or(0.0);
                format!("{f:?}")
            } else {
                n.to_string()
            }
        }
        Value::String(s) => string(s),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().filter_map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(m) => {
            if m.is_empty() {
                "{}".to_string()
            } else {
                let items: Vec<String> = m
                    .iter()
                    .filter_map(|(k, v)| Some(format!("{} = {}", key(k), inline_one_line(v)?)))
                    .collect();
                format!("{{ {} }}", items.join(", "))
            }
        }
    })
}

/// Inline tables must stay on one line: strings there are basic strings.
fn inline_one_line(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(basic_string(s)),
        other => inline(other),
    }
}

/// Step keys in the order the file shows them; others follow sorted, and
/// the script comes last (it is the long one).
const STEP_ORDER: [&str; 18] = [
    "name",
    "plugin",
    "kind",
    "action",
    "batches",
    "timeout",
    "interpreter",
    "user",
    "args",
    "env",
    "src",
    "dst",
    "chmod",
    "chown",
    "delete",
    "approvers",
    "everyone",
    "message",
];

/// The canonical text of a project: what `jobx export` prints.
pub fn emit(p: &Project) -> String {
    let mut out = String::new();
    out.push_str("# jobx project file: nodes, groups and jobs (jobx apply -f / jobx export)\n");
    if let Some(id) = p.project {
        let _ = writeln!(out, "project = {id}");
    }
    for n in &p.nodes {
        let _ = write!(out, "\n[[node]]\nname = {}\n", basic_string(&n.name));
        if let Some(h) = &n.host {
            let _ = writeln!(out, "host = {}", basic_string(h));
        }
        if let Some(port) = n.port {
            let _ = writeln!(out, "port = {port}");
        }
        if let Some(u) = &n.user {
            let _ = writeln!(out, "user = {}", basic_string(u));
        }
        if !n.labels.is_empty() {
            let labels: Map<String, Value> = n
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let _ = writeln!(
                out,
                "labels = {}",
                inline(&Value::Object(labels)).unwrap_or_default()
            );
        }
    }
    for g in &p.groups {
        let _ = write!(
            out,
            "\n[[group]]\nname = {}\n{} = {}\n",
            basic_string(&g.name),
            g.group_type.text_key(),
            string(&g.text)
        );
        if !g.note.is_empty() {
            let _ = writeln!(out, "note = {}", string(&g.note));
        }
    }
    for j in &p.jobs {
        let _ = write!(out, "\n[[job]]\nname = {}\n", basic_string(&j.name));
        for s in &j.steps {
            out.push_str("\n[[job.step]]\n");
            let mut keys: Vec<&str> = STEP_ORDER
                .iter()
                .copied()
                .filter(|k| s.contains_key(*k))
                .collect();
            let mut rest: Vec<&str> = s
                .keys()
                .map(String::as_str)
                .filter(|k| !STEP_ORDER.contains(k) && *k != "script")
                .collect();
            rest.sort_unstable();
            keys.extend(rest);
            if s.contains_key("script") {
                keys.push("script");
            }
            for k in keys {
                if let Some(v) = s.get(k).and_then(inline) {
                    let _ = writeln!(out, "{} = {v}", key(k));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CANONICAL: &str = r#"# jobx project file: nodes, groups and jobs (jobx apply -f / jobx export)
project = 7

[[node]]
name = "web1"

[[node]]
name = "web2"
host = "10.0.0.2"
port = 2222
user = "deploy"
labels = { role = "web", "zone a" = "x\"y" }

[[group]]
name = "canary"
node = "web1;web2"
note = "one by one"

[[group]]
name = "rollout"
percent = "1:50%"

[[job]]
name = "deploy"

[[job.step]]
name = "install"
plugin = "local"
timeout = 30
env = { MODE = "fast" }
script = '''
echo "installing $version"
exit 0
'''

[[job.step]]
name = "ok?"
plugin = "approval"
approvers = ["alice", "bob"]
message = "go on with ${version}?"
"#;

    #[test]
    fn canonical_text_round_trips_byte_for_byte() {
        let p = parse(CANONICAL).expect("parses");
        assert_eq!(p.project, Some(7));
        assert_eq!(p.nodes.len(), 2);
        assert_eq!(p.nodes[1].labels["zone a"], "x\"y");
        assert_eq!(p.groups[0].group_type, GroupType::List);
        assert_eq!(p.jobs[0].steps.len(), 2);
        assert_eq!(emit(&p), CANONICAL);
    }

    /// The first TOML block of a Markdown text.
    fn toml_block(md: &str) -> &str {
        let start = md.find("```toml\n").expect("a toml block") + 8;
        let len = md[start..].find("```").expect("block end");
        &md[start..start + len]
    }

    #[test]
    fn the_documented_example_is_in_canonical_form() {
        let text = toml_block(include_str!("../../docs/project-file.md"));
        let p = parse(text).expect("the example parses");
        assert_eq!(p.jobs[0].steps.len(), 4);
        assert_eq!(emit(&p), text);
    }

    #[test]
    fn defaults_are_left_out_and_server_answers_compare_equal() {
        let file = parse(
            "[[job]]\nname = \"j\"\n[[job.step]]\nplugin = \"local\"\nscript = \"true\"\ntimeout = 60\naction = \"always\"\n",
        )
        .expect("parses");
        let server = Job::from_api(&json!({"name": "j", "steps": [{
            "uuid": "Ab3dE5fG7hJk", "name": "local", "plugin": "local", "timeout": 60,
            "action": "always", "batches": "always", "kind": "cmd", "script": "true",
            "interpreter": "bash"}], "edit_time": "2026-01-01 00:00:00"}))
        .expect("job");
        assert_eq!(file.jobs[0], server);
        assert_eq!(
            Value::Object(server.steps[0].clone()),
            json!({"name": "local", "plugin": "local", "script": "true"})
        );
    }

    #[test]
    fn approval_defaults_and_approver_text() {
        let s = canonical_step(
            json!({"plugin": "approval", "approvers": "a, b", "timeout": 86400, "everyone": false, "message": ""})
                .as_object()
                .expect("object"),
        );
        assert_eq!(
            Value::Object(s),
            json!({"name": "approval", "plugin": "approval", "approvers": ["a", "b"]})
        );
    }

    #[test]
    fn strings_that_can_not_be_literal_blocks_are_escaped() {
        for s in [
            "a\nb'''c",
            "ends with '\n'",
            "cr\r\nlf",
            "tab\there\n",
            "\nleading newline",
            "plain",
            "back\\slash \"q\"",
            "bell\u{7}\n",
        ] {
            let p = Project {
                groups: vec![Group {
                    name: "g".into(),
                    group_type: GroupType::List,
                    text: s.into(),
                    note: s.into(),
                }],
                ..Default::default()
            };
            let back = parse(&emit(&p)).unwrap_or_else(|e| panic!("{s:?}: {e}\n{}", emit(&p)));
            assert_eq!(back, p, "{s:?}");
        }
    }

    #[test]
    fn node_host_equal_to_name_is_the_default() {
        let p = parse("[[node]]\nname = \"a\"\nhost = \"a\"\n").expect("parses");
        assert_eq!(p.nodes[0].host, None);
        let api = Node::from_api(
            &json!({"name": "a", "host": "a", "port": null, "user": null, "labels": {}}),
        )
        .expect("node");
        assert_eq!(api, p.nodes[0]);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("[[node]]\nhost = \"x\"\n", "node[0].name: missing"),
            (
                "[[node]]\nname = \"a\"\nprot = 22\n",
                "node \"a\": unknown key \"prot\"",
            ),
            ("[[group]]\nname = \"g\"\n", "group \"g\": missing node"),
            (
                "[[group]]\nname = \"g\"\nnode = \"a\"\npercent = \"1\"\n",
                "not both",
            ),
            (
                "[[job]]\nname = \"j\"\n",
                "job \"j\": a job needs at least one",
            ),
            (
                "[[job]]\nname = \"j\"\n[[job.step]]\nscript = \"x\"\n",
                "job \"j\" step 1: plugin missing",
            ),
            (
                "[[node]]\nname = \"a\"\n[[node]]\nname = \"a\"\n",
                "node \"a\" is defined twice",
            ),
            ("nodes = []\n", "unknown key \"nodes\""),
            ("project = \"7\"\n", "project: must be a project id"),
            (
                "[[node]]\nname = \"a\"\nport = 70000\n",
                "port: must be 1 to 65535",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn merging_files_keeps_names_unique_and_one_project() {
        let mut a = parse("project = 7\n[[node]]\nname = \"a\"\n").expect("a");
        let b = parse("[[node]]\nname = \"b\"\n").expect("b");
        a.merge(b).expect("merge");
        assert_eq!(a.nodes.len(), 2);
        let c = parse("[[node]]\nname = \"a\"\n").expect("c");
        assert!(a.clone().merge(c).expect_err("dup").contains("twice"));
        let d = parse("project = 8\n").expect("d");
        assert!(a.merge(d).expect_err("two").contains("two projects"));
    }
}
