//! `jobx apply` and `jobx export`: the project file against the server.
//!
//! Order of an apply, so that a refused object leaves nothing half done:
//! 1. every group to create or change is first sent to the server's own
//!    validation (`POST /group/:p/0`: the server checks the body before it
//!    looks for group 0, which never exists, so 400 = bad text, naming
//!    the piece, and 404 = good) — nothing is changed yet;
//! 2. jobs (the server validates each job's steps before storing it);
//! 3. all nodes in one call (validated whole before anything is stored);
//! 4. groups; 5. with --prune, deletions (groups, jobs, then nodes).

use crate::args::{ApplyArgs, ExportArgs};
use crate::client::seg;
use crate::ctx::Ctx;
use crate::diff::{self, Kind, Op};
use crate::error::{CliError, Exit, Result};
use crate::project::{self, Group, Job, Node, Project};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The project as the server has it, with the group ids.
struct Live {
    project: Project,
    group_ids: BTreeMap<String, u64>,
    /// The stored steps with their uuids, per job.
    steps: BTreeMap<String, Vec<Value>>,
}

fn fetch(ctx: &Ctx, p: u64) -> Result<Live> {
    fn bad(what: &'static str) -> impl Fn(String) -> CliError {
        move |e| CliError::other(format!("{what}: {e}"))
    }
    let nodes = ctx.client.get(&format!("/node/{p}"))?;
    let nodes: Vec<Node> = as_list(&nodes)
        .iter()
        .map(Node::from_api)
        .collect::<std::result::Result<_, _>>()
        .map_err(bad("reading the nodes"))?;
    let summaries = ctx.client.get(&format!("/group/{p}"))?;
    let mut ids: Vec<u64> = as_list(&summaries)
        .iter()
        .filter_map(|g| g["id"].as_u64())
        .collect();
    // Creation order, which is the file's order for groups apply created.
    ids.sort_unstable();
    let mut groups = Vec::new();
    let mut group_ids = BTreeMap::new();
    for id in ids {
        let g = ctx.client.get(&format!("/group/{p}/{id}"))?;
        let g = Group::from_api(&g).map_err(bad("reading a group"))?;
        group_ids.insert(g.name.clone(), id);
        groups.push(g);
    }
    let jobs_v = ctx.client.get(&format!("/job/{p}"))?;
    let mut jobs: Vec<Job> = Vec::new();
    let mut steps = BTreeMap::new();
    for j in as_list(&jobs_v) {
        let job = Job::from_api(j).map_err(bad("reading a job"))?;
        steps.insert(job.name.clone(), as_list(&j["steps"]).to_vec());
        jobs.push(job);
    }
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Live {
        project: Project {
            project: Some(p),
            nodes,
            groups,
            jobs,
        },
        group_ids,
        steps,
    })
}

fn as_list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// A file, or every `*.toml` of a directory in name order.
pub fn read_files(path: &Path) -> Result<Project> {
    let read = |p: &Path| -> Result<Project> {
        let text = std::fs::read_to_string(p)
            .map_err(|e| CliError::usage(format!("{}: {e}", p.display())))?;
        project::parse(&text).map_err(|e| CliError::usage(format!("{}: {e}", p.display())))
    };
    if !path.is_dir() {
        return read(path);
    }
    let mut files: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CliError::usage(format!(
            "{}: no *.toml files in this directory",
            path.display()
        )));
    }
    let mut all = Project::default();
    for f in files {
        let one = read(&f)?;
        all.merge(one)
            .map_err(|e| CliError::usage(format!("{}: {e}", f.display())))?;
    }
    Ok(all)
}

/// The project to apply to: `-p` and the file's `project` must agree.
fn target(flag: Option<u64>, file: Option<u64>, default: Option<u64>) -> Result<u64> {
    match (flag, file) {
        (Some(a), Some(b)) if a != b => Err(CliError::usage(format!(
            "the file is for project {b}, not {a} (remove its `project` line to apply it elsewhere)"
        ))),
        (Some(a), _) => Ok(a),
        (None, Some(b)) => Ok(b),
        (None, None) => default.ok_or_else(|| {
            CliError::usage("no project: give -p ID or write `project = ID` in the file")
        }),
    }
}

/// Steps to send: each keeps the uuid of the stored step of the same name
/// (logs of earlier tasks stay attached to the step).
fn steps_with_uuids(want: &Job, stored: &[Value]) -> Vec<Value> {
    let mut used = vec![false; stored.len()];
    want.steps
        .iter()
        .map(|s| {
            let mut m: Map<String, Value> = s.clone();
            let name = s.get("name");
            if let Some(i) = stored
                .iter()
                .enumerate()
                .position(|(i, o)| !used[i] && o.get("name") == name)
            {
                used[i] = true;
                if let Some(u) = stored[i].get("uuid") {
                    m.insert("uuid".into(), u.clone());
                }
            }
            Value::Object(m)
        })
        .collect()
}

pub fn apply(ctx: &Ctx, flag_project: Option<u64>, a: ApplyArgs) -> Result<Exit> {
    let want = read_files(&a.file)?;
    let p = target(flag_project, want.project, ctx.conn.project)?;
    let live = fetch(ctx, p)?;
    let plan = diff::plan(&want, &live.project, a.prune);
    print!("{}", plan.render());
    if a.dry_run || plan.is_empty() {
        if a.dry_run && !plan.is_empty() {
            println!("dry run: nothing changed");
        }
        return Ok(Exit::Ok);
    }
    let find = |kind: Kind, name: &str| {
        plan.items
            .iter()
            .find(|i| i.kind == kind && i.name == name)
            .map(|i| &i.op)
    };
    let writes = |op: Option<&Op>| matches!(op, Some(Op::Create | Op::Change(_)));

    // 1. The server's own validation of every group text, before any change.
    for g in &want.groups {
        if !writes(find(Kind::Group, &g.name)) {
            continue;
        }
        match ctx
            .client
            .call("POST", &format!("/group/{p}/0"), Some(&g.to_api()))
        {
            Err(CliError::Api { status: 404, .. }) | Ok(_) => {}
            Err(CliError::Api { status, info }) => {
                return Err(CliError::Api {
                    status,
                    info: format!("group {}: {info}; nothing was changed", g.name),
                })
            }
            Err(e) => return Err(e),
        }
    }
    let mut done: Vec<String> = Vec::new();
    let fail = |done: &[String], what: String, e: CliError| -> CliError {
        let e = e.context(&what);
        if done.is_empty() {
            e.context("nothing was changed")
        } else {
            e.context(&format!("already applied: {}", done.join(", ")))
        }
    };
    // 2. Jobs.
    for j in &want.jobs {
        if !writes(find(Kind::Job, &j.name)) {
            continue;
        }
        let stored = live.steps.get(&j.name).map(Vec::as_slice).unwrap_or(&[]);
        let body = json!({"name": j.name, "steps": steps_with_uuids(j, stored)});
        ctx.client
            .data("POST", &format!("/job/{p}"), Some(&body))
            .map_err(|e| fail(&done, format!("job {}", j.name), e))?;
        done.push(format!("job {}", j.name));
    }
    // 3. Nodes, in one call.
    let nodes: Vec<Value> = want
        .nodes
        .iter()
        .filter(|n| writes(find(Kind::Node, &n.name)))
        .map(Node::to_api)
        .collect();
    if !nodes.is_empty() {
        let n = nodes.len();
        ctx.client
            .data(
                "POST",
                &format!("/node/{p}"),
                Some(&json!({ "nodes": nodes })),
            )
            .map_err(|e| fail(&done, "nodes".into(), e))?;
        done.push(format!("{n} nodes"));
    }
    // 4. Groups.
    for g in &want.groups {
        let path = match find(Kind::Group, &g.name) {
            Some(Op::Create) => format!("/group/{p}"),
            Some(Op::Change(_)) => match live.group_ids.get(&g.name) {
                Some(id) => format!("/group/{p}/{id}"),
                None => continue,
            },
            _ => continue,
        };
        ctx.client
            .data("POST", &path, Some(&g.to_api()))
            .map_err(|e| fail(&done, format!("group {}", g.name), e))?;
        done.push(format!("group {}", g.name));
    }
    // 5. Deletions.
    for kind in [Kind::Group, Kind::Job, Kind::Node] {
        for i in plan
            .items
            .iter()
            .filter(|i| i.kind == kind && i.op == Op::Delete)
        {
            let path = match kind {
                Kind::Group => match live.group_ids.get(&i.name) {
                    Some(id) => format!("/group/{p}/{id}"),
                    None => continue,
                },
                Kind::Job => format!("/job/{p}/{}", seg(&i.name)),
                Kind::Node => format!("/node/{p}/{}", seg(&i.name)),
            };
            ctx.client
                .data("DELETE", &path, None)
                .map_err(|e| fail(&done, format!("deleting {kind} {}", i.name), e))?;
            done.push(format!("{kind} {} deleted", i.name));
        }
    }
    println!("applied to project {p}");
    Ok(Exit::Ok)
}

/// `export --json`: the server's own answers, groups with their texts.
fn export_json(ctx: &Ctx, p: u64) -> Result<Value> {
    let mut groups = Vec::new();
    for g in as_list(&ctx.client.get(&format!("/group/{p}"))?) {
        if let Some(id) = g["id"].as_u64() {
            groups.push(ctx.client.get(&format!("/group/{p}/{id}"))?);
        }
    }
    groups.sort_by_key(|g| g["id"].as_u64());
    Ok(json!({
        "project": p,
        "nodes": ctx.client.get(&format!("/node/{p}"))?,
        "groups": groups,
        "jobs": ctx.client.get(&format!("/job/{p}"))?,
    }))
}

pub fn export(ctx: &Ctx, a: ExportArgs) -> Result<Exit> {
    let p = ctx.project()?;
    let text = if ctx.json {
        let v = export_json(ctx, p)?;
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()) + "\n"
    } else {
        project::emit(&fetch(ctx, p)?.project)
    };
    match a.output {
        Some(f) => {
            std::fs::write(&f, text)
                .map_err(|e| CliError::other(format!("{}: {e}", f.display())))?;
            eprintln!("project {p} written to {}", f.display());
        }
        None => print!("{text}"),
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_project() {
        assert_eq!(target(Some(7), None, None).ok(), Some(7));
        assert_eq!(target(None, Some(7), Some(1)).ok(), Some(7));
        assert_eq!(target(None, None, Some(1)).ok(), Some(1));
        assert!(target(Some(8), Some(7), None)
            .expect_err("two")
            .to_string()
            .contains("for project 7, not 8"));
        assert!(target(None, None, None).is_err());
    }

    #[test]
    fn steps_keep_the_uuids_of_same_named_steps() {
        let want = project::parse(
            "[[job]]\nname = \"j\"\n[[job.step]]\nname = \"b\"\nplugin = \"local\"\nscript = \"x\"\n[[job.step]]\nname = \"new\"\nplugin = \"local\"\nscript = \"y\"\n",
        )
        .expect("parse");
        let stored = vec![
            json!({"uuid": "AAAAAAAAAAAa", "name": "a"}),
            json!({"uuid": "BBBBBBBBBBBb", "name": "b"}),
        ];
        let s = steps_with_uuids(&want.jobs[0], &stored);
        assert_eq!(s[0]["uuid"], "BBBBBBBBBBBb");
        assert!(s[1].get("uuid").is_none());
    }
}
