//! Nodes, jobs, groups and the operation log.

use super::*;
use crate::batching::{self, GroupType};
use crate::model::{Group, Job, Node};

pub fn routes(s: &mut tide::Server<Arc<App>>) {
    s.at("/node/:projectid")
        .get(h(node_list))
        .post(h(node_upsert));
    s.at("/node/:projectid/:name").delete(h(node_delete));
    s.at("/job/:projectid").get(h(job_list)).post(h(job_put));
    s.at("/job/:projectid/:name")
        .get(h(job_get))
        .delete(h(job_delete));
    s.at("/group/:projectid")
        .get(h(group_list))
        .post(h(group_create));
    s.at("/group/:projectid/:id")
        .get(h(group_get))
        .post(h(group_update))
        .delete(h(group_delete));
    s.at("/group/:projectid/:id/node").get(h(group_preview));
    s.at("/log/:projectid").get(h(oplog_list));
}

async fn run<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&crate::store::Store) -> Result<T> + Send + 'static,
) -> Result<T> {
    let app = app.clone();
    blocking::unblock(move || f(&app.store)).await
}

async fn node_list(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let q = query(&req)?;
    let sel = crate::labels::Selector::parse_opt(q.get("label").map_or("", String::as_str))
        .map_err(|e| Error::Bad(format!("label: {e}")))?;
    let nodes = run(req.state(), move |s| s.nodes(pid)).await?;
    Ok(Reply::Data(Value::Array(
        nodes
            .iter()
            .filter(|n| sel.as_ref().is_none_or(|s| s.matches(&n.labels)))
            .map(Node::to_api)
            .collect(),
    )))
}

fn parse_node(v: &Value, at: &str) -> Result<Node> {
    let Value::Object(m) = v else {
        return Err(Error::Bad(format!("{at}: must be an object")));
    };
    known_fields(m, &["name", "host", "port", "user", "labels"], at)?;
    let field = |k: &str| -> Result<Option<String>> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::Bad(format!("{at}.{k}: must be a string"))),
        }
    };
    let name = field("name")?.ok_or_else(|| Error::Bad(format!("{at}.name: missing")))?;
    crate::jobs::check_name(&format!("{at}.name"), &name).map_err(Error::Bad)?;
    if name.contains(',') || name.contains(';') || name.trim() != name {
        return Err(Error::Bad(format!(
            "{at}.name: must not contain ',' or ';' or surrounding spaces (they separate batches)"
        )));
    }
    let host = field("host")?.filter(|h| !h.is_empty());
    if let Some(h) = &host {
        if h.len() > 255
            || h.starts_with('-')
            || h.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(Error::Bad(format!(
                "{at}.host: {h:?} is not a host name or address"
            )));
        }
    }
    let port = match m.get("port") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(p) if (1..=65535).contains(&p) => Some(p as u16),
            _ => return Err(Error::Bad(format!("{at}.port: must be 1 to 65535"))),
        },
        Some(Value::String(s)) => match s.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => return Err(Error::Bad(format!("{at}.port: must be 1 to 65535"))),
        },
        Some(_) => return Err(Error::Bad(format!("{at}.port: must be a number"))),
    };
    let user = field("user")?.filter(|u| !u.is_empty());
    if let Some(u) = &user {
        if u.starts_with('-')
            || u.chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '@')
        {
            return Err(Error::Bad(format!(
                "{at}.user: {u:?} is not an account name"
            )));
        }
    }
    let labels = match m.get("labels") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(l)) => l
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(Error::Bad(format!("{at}.labels.{k}: must be a string"))),
            })
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(Error::Bad(format!(
                "{at}.labels: must be an object of strings"
            )))
        }
    };
    Ok(Node {
        name,
        host,
        port,
        user,
        labels,
    })
}

async fn node_upsert(mut req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Write)?;
    let b = body(&mut req).await?;
    known_fields(&b, &["nodes"], "")?;
    let Some(Value::Array(items)) = b.get("nodes") else {
        return Err(Error::Bad(
            "nodes: must be an array of {name, host?, port?, user?, labels?}".into(),
        ));
    };
    if items.is_empty() {
        return Err(Error::Bad("nodes: must not be empty".into()));
    }
    let mut nodes: Vec<Node> = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let n = parse_node(v, &format!("nodes[{i}]"))?;
        if nodes.iter().any(|o| o.name == n.name) {
            return Err(Error::Bad(format!(
                "nodes[{i}].name: {:?} is listed twice",
                n.name
            )));
        }
        nodes.push(n);
    }
    let all = run(req.state(), move |s| {
        s.upsert_nodes(pid, &who.name, &nodes)?;
        s.nodes(pid)
    })
    .await?;
    Ok(Reply::Data(Value::Array(
        all.iter().map(Node::to_api).collect(),
    )))
}

async fn node_delete(req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Write)?;
    let name = param(&req, "name")?.to_string();
    run(req.state(), move |s| s.delete_node(pid, &who.name, &name)).await?;
    Ok(Reply::Data(Value::Bool(true)))
}

fn job_api(j: &Job) -> Value {
    json!({"name": j.name, "steps": j.steps, "edit_time": crate::clock::local(j.edit_time), "policy": j.policy})
}

async fn job_list(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let jobs = run(req.state(), move |s| s.jobs(pid)).await?;
    Ok(Reply::Data(Value::Array(
        jobs.iter().map(job_api).collect(),
    )))
}

async fn job_get(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let name = param(&req, "name")?.to_string();
    let job = run(req.state(), move |s| s.job(pid, &name)).await?;
    let job = job.ok_or_else(|| Error::NotFound("no such job in this project".into()))?;
    Ok(Reply::Data(job_api(&job)))
}

async fn job_put(mut req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Write)?;
    let b = body(&mut req).await?;
    // `edit_time` comes back in a job read with GET; it is ignored.
    known_fields(&b, &["name", "steps", "edit_time", "policy"], "")?;
    let name = req_str(&b, "name")?;
    crate::jobs::check_name("name", &name).map_err(Error::Bad)?;
    let steps = b.get("steps").cloned().unwrap_or(Value::Null);
    let policy = crate::policy::Policy::from_job(b.get("policy").unwrap_or(&Value::Null))
        .map_err(Error::Bad)?;
    let known = req.state().plugin_types();
    let job = run(req.state(), move |s| {
        s.put_job(pid, &who.name, &name.clone(), |old| {
            let old_steps = old.map(|o| o.steps).unwrap_or_default();
            let steps =
                crate::jobs::validate_steps(&steps, &known, &old_steps, &mut crate::ids::new_uuid)
                    .map_err(Error::Bad)?;
            Ok(Job {
                name,
                steps,
                edit_time: crate::clock::now_ms(),
                policy,
            })
        })
    })
    .await?;
    Ok(Reply::Data(job_api(&job)))
}

async fn job_delete(req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Write)?;
    let name = param(&req, "name")?.to_string();
    run(req.state(), move |s| s.delete_job(pid, &who.name, &name)).await?;
    Ok(Reply::Data(Value::Bool(true)))
}

fn group_id(req: &Req) -> Result<u64> {
    let s = param(req, "id")?;
    s.parse::<u64>()
        .map_err(|_| Error::Bad(format!("id: {s:?} is not a group id")))
}

async fn group_list(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let groups = run(req.state(), move |s| s.groups(pid)).await?;
    Ok(Reply::Data(Value::Array(
        groups.iter().map(Group::summary).collect(),
    )))
}

async fn group_get(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let id = group_id(&req)?;
    let g = run(req.state(), move |s| s.group(pid, id)).await?;
    let g = g.ok_or_else(|| Error::NotFound(format!("no group {id} in project {pid}")))?;
    Ok(Reply::Data(g.to_api()))
}

/// Validates a group body; the group text is checked here, on save.
fn group_from_body(pid: u64, b: &Map<String, Value>) -> Result<Group> {
    let name = req_str(b, "name")?;
    crate::jobs::check_name("name", &name).map_err(Error::Bad)?;
    let note = opt_str(b, "note")?.unwrap_or_default();
    if note.len() > 10_000 {
        return Err(Error::Bad("note: longer than 10000 bytes".into()));
    }
    let gt = req_str(b, "group_type")?;
    let ty = GroupType::parse(&gt)
        .ok_or_else(|| Error::Bad(format!("group_type: {gt:?} is not list or percent")))?;
    let field = match ty {
        GroupType::List => "node",
        GroupType::Percent => "percent",
    };
    let text = opt_str(b, field)?.unwrap_or_default();
    if text.len() > 100_000 {
        return Err(Error::Bad(format!("{field}: longer than 100000 bytes")));
    }
    batching::parse(ty, &text).map_err(|e| Error::Bad(format!("{field}: {e}")))?;
    let labels = opt_str(b, "labels")?.unwrap_or_default().trim().to_string();
    crate::labels::Selector::parse_opt(&labels).map_err(|e| Error::Bad(format!("labels: {e}")))?;
    Ok(Group {
        id: 0,
        projectid: pid,
        name,
        note,
        group_type: ty.as_str().to_string(),
        text,
        edit_time: crate::clock::now_ms(),
        labels,
    })
}

/// Nodes a list group names that the inventory lacks. The group is saved
/// all the same (OPEN-C3 does), but a task over them would be refused.
fn missing_nodes(s: &crate::store::Store, pid: u64, g: &Group) -> Result<Vec<String>> {
    if g.group_type != "list" {
        return Ok(Vec::new());
    }
    let named = batching::parse_list(&g.text).map_err(Error::Bad)?;
    let have: std::collections::BTreeSet<String> =
        s.nodes(pid)?.into_iter().map(|n| n.name).collect();
    Ok(named
        .into_iter()
        .flatten()
        .filter(|n| !have.contains(n))
        .collect())
}

/// A saved group, with `warnings` naming the nodes not in the inventory.
fn saved_group(g: &Group, missing: &[String]) -> Reply {
    let warnings: Vec<String> = missing
        .iter()
        .map(|n| format!("node not in project: {n}"))
        .collect();
    Reply::Body(json!({"stat": true, "data": g.to_api(), "warnings": warnings}))
}

async fn group_create(mut req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Write)?;
    let b = body(&mut req).await?;
    let g = group_from_body(pid, &b)?;
    let (g, missing) = run(req.state(), move |s| {
        let g = s.save_group(&who.name, None, g)?;
        let missing = missing_nodes(s, pid, &g)?;
        Ok((g, missing))
    })
    .await?;
    Ok(saved_group(&g, &missing))
}

async fn group_update(mut req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Write)?;
    let id = group_id(&req)?;
    let b = body(&mut req).await?;
    let g = group_from_body(pid, &b)?;
    let (g, missing) = run(req.state(), move |s| {
        let g = s.save_group(&who.name, Some(id), g)?;
        let missing = missing_nodes(s, pid, &g)?;
        Ok((g, missing))
    })
    .await?;
    Ok(saved_group(&g, &missing))
}

async fn group_delete(req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Write)?;
    let id = group_id(&req)?;
    run(req.state(), move |s| s.delete_group(pid, &who.name, id)).await?;
    Ok(Reply::Data(Value::Bool(true)))
}

async fn group_preview(req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Read)?;
    let id = group_id(&req)?;
    let batches = run(req.state(), move |s| {
        let g = s
            .group(pid, id)?
            .ok_or_else(|| Error::NotFound(format!("no group {id} in project {pid}")))?;
        let missing = missing_nodes(s, pid, &g)?;
        Ok((crate::engine::compute_batches(s, &who, pid, &g)?, missing))
    })
    .await?;
    let (batches, missing) = batches;
    // `missing`: nodes of a list group that the inventory lacks.
    Ok(Reply::Body(
        json!({"stat": true, "data": batches, "missing": missing}),
    ))
}

async fn oplog_list(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let q = query(&req)?;
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => return Err(Error::Bad("limit: must be 1 to 10000".into())),
        },
    };
    let entries = run(req.state(), move |s| s.oplog_list(pid, limit)).await?;
    Ok(Reply::Data(Value::Array(
        entries.iter().map(|e| e.to_api()).collect(),
    )))
}
