//! What `jobx apply` would change (pure): the file against the server's
//! state, object by object.

use crate::project::{Group, Job, Node, Project};
use serde_json::{Map, Value};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Node,
    Group,
    Job,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Node => "node",
            Kind::Group => "group",
            Kind::Job => "job",
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Create,
    /// What differs, one line each.
    Change(Vec<String>),
    Delete,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub kind: Kind,
    pub name: String,
    pub op: Op,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub items: Vec<Item>,
    /// On the server, not in the file, kept (no `--prune`).
    pub kept: Vec<(Kind, String)>,
    /// Nodes already on the server in another order than the file's.
    pub order_differs: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn count(&self, want: fn(&Op) -> bool) -> usize {
        self.items.iter().filter(|i| want(&i.op)).count()
    }

    /// The plan as people read it: `+` create, `~` change, `-` delete.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for i in &self.items {
            let (sign, lines) = match &i.op {
                Op::Create => ('+', &[][..]),
                Op::Change(l) => ('~', l.as_slice()),
                Op::Delete => ('-', &[][..]),
            };
            out.push_str(&format!("{sign} {} {}\n", i.kind, i.name));
            for l in lines {
                out.push_str(&format!("    {l}\n"));
            }
        }
        for (k, n) in &self.kept {
            out.push_str(&format!(
                "  {k} {n}: not in the file, kept (--prune deletes it)\n"
            ));
        }
        if self.order_differs {
            out.push_str(
                "  note: the server's inventory order differs from the file's; apply does not reorder nodes (percent groups follow the inventory order)\n",
            );
        }
        if self.items.is_empty() {
            out.push_str("no changes\n");
        } else {
            out.push_str(&format!(
                "{} to create, {} to change, {} to delete\n",
                self.count(|o| *o == Op::Create),
                self.count(|o| matches!(o, Op::Change(_))),
                self.count(|o| *o == Op::Delete),
            ));
        }
        out
    }
}

fn opt(v: &Option<impl fmt::Display>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "(none)".into(),
    }
}

fn show(s: &str) -> String {
    format!("{s:?}")
}

fn node_changes(want: &Node, have: &Node) -> Vec<String> {
    let mut out = Vec::new();
    let addr = |n: &Node| n.host.clone().unwrap_or_else(|| n.name.clone());
    if addr(want) != addr(have) {
        out.push(format!("host: {} → {}", addr(have), addr(want)));
    }
    if want.port != have.port {
        out.push(format!("port: {} → {}", opt(&have.port), opt(&want.port)));
    }
    if want.user != have.user {
        out.push(format!("user: {} → {}", opt(&have.user), opt(&want.user)));
    }
    if want.labels != have.labels {
        out.push(format!(
            "labels: {} → {}",
            serde_json::json!(have.labels),
            serde_json::json!(want.labels)
        ));
    }
    out
}

fn group_changes(want: &Group, have: &Group) -> Vec<String> {
    let mut out = Vec::new();
    if want.group_type != have.group_type || want.text != have.text {
        out.push(format!(
            "{} {} → {} {}",
            have.group_type.text_key(),
            show(&have.text),
            want.group_type.text_key(),
            show(&want.text)
        ));
    }
    if want.note != have.note {
        out.push(format!("note: {} → {}", show(&have.note), show(&want.note)));
    }
    out
}

fn step_name(s: &Map<String, Value>) -> String {
    s.get("name")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

fn job_changes(want: &Job, have: &Job) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..want.steps.len().max(have.steps.len()) {
        match (want.steps.get(i), have.steps.get(i)) {
            (Some(w), Some(h)) if w != h => {
                let mut keys: Vec<&String> = w.keys().chain(h.keys()).collect();
                keys.sort();
                keys.dedup();
                let fields: Vec<&str> = keys
                    .into_iter()
                    .filter(|k| w.get(*k) != h.get(*k))
                    .map(String::as_str)
                    .collect();
                out.push(format!(
                    "step {} {}: {} changed",
                    i + 1,
                    show(&step_name(w)),
                    fields.join(", ")
                ));
            }
            (Some(w), None) => out.push(format!("step {} {}: added", i + 1, show(&step_name(w)))),
            (None, Some(h)) => out.push(format!("step {} {}: removed", i + 1, show(&step_name(h)))),
            _ => {}
        }
    }
    out
}

/// One kind of object: creates and changes in the file's order, then
/// deletions (or "kept" notes) in the server's order.
fn compare<T>(
    kind: Kind,
    want: &[T],
    have: &[T],
    name: fn(&T) -> &str,
    changes: fn(&T, &T) -> Vec<String>,
    prune: bool,
    plan: &mut Plan,
) {
    for w in want {
        match have.iter().find(|h| name(h) == name(w)) {
            None => plan.items.push(Item {
                kind,
                name: name(w).to_string(),
                op: Op::Create,
            }),
            Some(h) => {
                let c = changes(w, h);
                if !c.is_empty() {
                    plan.items.push(Item {
                        kind,
                        name: name(w).to_string(),
                        op: Op::Change(c),
                    });
                }
            }
        }
    }
    for h in have {
        if !want.iter().any(|w| name(w) == name(h)) {
            if prune {
                plan.items.push(Item {
                    kind,
                    name: name(h).to_string(),
                    op: Op::Delete,
                });
            } else {
                plan.kept.push((kind, name(h).to_string()));
            }
        }
    }
}

/// The changes that make the server's project (`have`) what the file says (`want`).
pub fn plan(want: &Project, have: &Project, prune: bool) -> Plan {
    let mut p = Plan::default();
    compare(
        Kind::Node,
        &want.nodes,
        &have.nodes,
        |n| &n.name,
        node_changes,
        prune,
        &mut p,
    );
    compare(
        Kind::Group,
        &want.groups,
        &have.groups,
        |g| &g.name,
        group_changes,
        prune,
        &mut p,
    );
    compare(
        Kind::Job,
        &want.jobs,
        &have.jobs,
        |j| &j.name,
        job_changes,
        prune,
        &mut p,
    );
    // Nodes both sides know, in each side's order.
    let both = |a: &[Node], b: &[Node]| -> Vec<String> {
        a.iter()
            .filter(|n| b.iter().any(|m| m.name == n.name))
            .map(|n| n.name.clone())
            .collect()
    };
    p.order_differs = both(&want.nodes, &have.nodes) != both(&have.nodes, &want.nodes);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::parse;

    const FILE: &str = r#"
[[node]]
name = "a"
[[node]]
name = "b"
port = 22
[[group]]
name = "g1"
node = "a;b"
[[group]]
name = "g2"
percent = "50%"
[[job]]
name = "deploy"
[[job.step]]
plugin = "local"
script = "echo 1"
[[job.step]]
name = "check"
plugin = "local"
script = "true"
"#;

    #[test]
    fn an_empty_server_gets_everything_created() {
        let want = parse(FILE).expect("file");
        let p = plan(&want, &Project::default(), false);
        let ops: Vec<String> = p
            .items
            .iter()
            .map(|i| format!("{:?} {} {}", i.op, i.kind, i.name))
            .collect();
        assert_eq!(
            ops,
            [
                "Create node a",
                "Create node b",
                "Create group g1",
                "Create group g2",
                "Create job deploy"
            ]
        );
        assert!(p
            .render()
            .ends_with("5 to create, 0 to change, 0 to delete\n"));
    }

    #[test]
    fn the_same_project_is_no_change() {
        let want = parse(FILE).expect("file");
        let p = plan(&want, &want.clone(), true);
        assert!(p.is_empty());
        assert_eq!(p.render(), "no changes\n");
    }

    #[test]
    fn changes_name_the_fields_and_prune_deletes() {
        let want = parse(FILE).expect("file");
        let mut have = want.clone();
        have.nodes[1].port = Some(2222);
        have.groups[1].text = "1".into();
        have.jobs[0].steps[1].insert("script".into(), "false".into());
        let first = have.jobs[0].steps[0].clone();
        have.jobs[0].steps.push(first);
        let mut extra = have.groups[0].clone();
        extra.name = "old".into();
        have.groups.push(extra);
        let kept = plan(&want, &have, false);
        assert_eq!(kept.kept, vec![(Kind::Group, "old".to_string())]);
        assert!(kept.render().contains("group old: not in the file, kept"));
        let p = plan(&want, &have, true);
        let text = p.render();
        for line in [
            "~ node b\n    port: 2222 → 22\n",
            "~ group g2\n    percent \"1\" → percent \"50%\"\n",
            "~ job deploy\n    step 2 \"check\": script changed\n    step 3 \"local\": removed\n",
            "- group old\n",
            "0 to create, 3 to change, 1 to delete",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }

    #[test]
    fn node_order_is_reported_not_changed() {
        let want = parse(FILE).expect("file");
        let mut have = want.clone();
        have.nodes.reverse();
        let p = plan(&want, &have, false);
        assert!(p.is_empty());
        assert!(p.order_differs);
    }
}
