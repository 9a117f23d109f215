//! The calls of OPEN-C3's front end and CI scripts that jobx's own API does
//! not have (docs/openc3.md), and the original's answers served under
//! `[compat] openc3 = true`.

use super::openc3_auth::{authorize_on, Connector, CookieSignIn};
use super::*;
use crate::model::{Action, Decision, Task, TaskStatus};

pub fn routes(s: &mut tide::Server<Arc<App>>) {
    s.at("/group/:projectid/:name/node/byname")
        .get(h(group_nodes_byname));
    s.at("/group/:projectid/:name/byname")
        .delete(h(group_delete_byname));
    // A static segment wins over `:name` in tide's router.
    s.at("/group/:projectid/copy/byname")
        .post(h(group_copy_byname));
    s.at("/task/:projectid/total_count").get(h(total_count));
    s.at("/subtask/:projectid/:subtaskuuid/mystatus")
        .get(h(mystatus));
    s.at("/flowline_version/:flowid").get(h(flowline_version));
    s.at("/task/flowline/status/:flowid/:version")
        .get(h(flowline_status));
    s.at("/monitor/metrics").get(h(monitor_metrics));
    s.at("/slave/:slave/ws").get(super::ws::endpoint);
}

/// Registers the original's answers (`[compat] openc3`) and the cookie
/// sign-in (`[auth.openc3]`), in that order: the first rewrites what the
/// second refuses.
pub fn middleware(s: &mut tide::Server<Arc<App>>, config: &crate::config::Config) {
    if config.compat.openc3 {
        s.with(CompatAnswers);
    }
    if let Some(c) = config.auth.openc3.as_ref().and_then(Connector::new) {
        s.with(CookieSignIn(Arc::new(c)));
    }
}

/// Not signed in: the original answers 200 `{stat:false, code:10000}`, on
/// which its front end sends the user to the login page.
struct CompatAnswers;

#[tide::utils::async_trait]
impl tide::Middleware<Arc<App>> for CompatAnswers {
    async fn handle(&self, req: Req, next: tide::Next<'_, Arc<App>>) -> tide::Result {
        let path = req.url().path().to_string();
        let get = req.method() == tide::http::Method::Get;
        let mut res = next.run(req).await;
        // The batches of an absent task (the task page asks for those of a
        // rollback that did not run): the original answers an empty list.
        if get && res.status() == tide::StatusCode::NotFound && is_batch_list(&path) {
            return Ok(json_response(200, &json!({"stat": true, "data": []})));
        }
        // A Basic challenge (the log page) is for a browser prompt: keep it.
        if res.status() != tide::StatusCode::Unauthorized
            || !openc3_route(&path)
            || res.header("www-authenticate").is_some()
        {
            return Ok(res);
        }
        let body = res.take_body().into_string().await.unwrap_or_default();
        let info = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["info"].as_str().map(String::from))
            .unwrap_or_else(|| "authentication required".into());
        Ok(json_response(
            200,
            &json!({"stat": false, "code": 10000, "info": info}),
        ))
    }
}

/// Whether OPEN-C3's clients call this path: not the console, plugins
/// (agents), backups or Prometheus, whose clients expect a 401.
fn openc3_route(path: &str) -> bool {
    let p = super::openc3_auth::strip_prefix(path);
    let own = |prefix: &str| p == prefix || p.starts_with(&format!("{prefix}/"));
    !(own("/ui") || own("/plugin") || own("/backup") || own("/metrics"))
}

/// `/subtask/:projectid/:taskuuid`
fn is_batch_list(path: &str) -> bool {
    let segs: Vec<&str> = super::openc3_auth::strip_prefix(path)
        .trim_start_matches('/')
        .split('/')
        .collect();
    matches!(segs.as_slice(), ["subtask", pid, uuid]
        if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && crate::ids::is_uuid(uuid))
}

fn compat(app: &App) -> bool {
    app.config.compat.openc3
}

/// The row the original keeps for the rollback partner of a deploy where no
/// rollback will run: `_skip_` for a started deploy without
/// `_rollbackVersion_`, the job's name after `norollback`; both with
/// `slave` and `group` `_null_` and status `success`.
pub fn placeholder(d: &Task) -> Option<Value> {
    if d.action != Action::Deploy {
        return None;
    }
    let has_vars = d.variable.as_object().is_some_and(|m| !m.is_empty());
    let (name, user, calltype, text, object) = match d.decision {
        Decision::None if d.start_ms.is_some() && has_vars => {
            ("_skip_".to_string(), "sys", "sys", String::new(), json!({}))
        }
        Decision::NoRollback => {
            // The variables of the rollback that did not run: `version` is
            // the old `_rollbackVersion_`. The original writes its calltype as user.
            let mut v = d.variable.as_object().cloned().unwrap_or_default();
            if let Some(old) = v.remove("_rollbackVersion_") {
                v.insert("version".into(), old);
            }
            let v = Value::Object(v);
            let text = crate::vars::yaml_text(&v);
            (
                d.name.clone(),
                d.calltype.as_str(),
                d.calltype.as_str(),
                text,
                v,
            )
        }
        _ => return None,
    };
    Some(json!({
        "id": null,
        "projectid": d.projectid,
        "uuid": crate::ids::rollback_of(&d.uuid),
        "name": name,
        "group": "_null_",
        "user": user,
        "slave": "_null_",
        "status": TaskStatus::Success,
        "starttime": null,
        "finishtime": null,
        "starttimems": null,
        "finishtimems": null,
        "runtime": null,
        "calltype": calltype,
        "reason": "",
        "variable": text,
        "variables": object,
        "waiting": null,
        "action": Action::Rollback,
    }))
}

/// Whether a placeholder row passes the list filters as the original's
/// SQL would pass it (its start time is NULL, so any time filter drops it).
fn placeholder_matches(row: &Value, q: &BTreeMap<String, String>) -> bool {
    let set = |k: &str| q.get(k).filter(|v| !v.is_empty());
    let field = |k: &str| row[k].as_str().unwrap_or("");
    set("name").is_none_or(|n| field("name").contains(n.as_str()) && n != "_ci_")
        && set("user").is_none_or(|u| field("user") == u)
        && set("status").is_none_or(|s| field("status") == s)
        && set("taskuuid").is_none_or(|u| field("uuid") == u)
        && set("time_start").is_none()
        && set("time_end").is_none()
}

/// `GET /task/:projectid?allowslavenull=1…` under `[compat] openc3`: each
/// deploy's placeholder row right after it.
pub(super) fn with_placeholders(
    app: &App,
    tasks: &[Task],
    rows: Vec<Value>,
    q: &BTreeMap<String, String>,
) -> Vec<Value> {
    let wanted = q
        .get("allowslavenull")
        .is_some_and(|v| !v.is_empty() && v != "0");
    if !compat(app) || !wanted || tasks.len() != rows.len() {
        return rows;
    }
    let mut out = Vec::with_capacity(rows.len());
    for (t, row) in tasks.iter().zip(rows) {
        out.push(row);
        if let Some(p) = placeholder(t).filter(|p| placeholder_matches(p, q)) {
            out.push(p);
        }
    }
    out
}

/// `GET /task/:projectid/<uuid>` of an absent task under `[compat] openc3`:
/// the placeholder row of a rollback that will not run, else `data: null`.
pub(super) async fn absent_task(app: &Arc<App>, pid: u64, uuid: &str) -> Result<Option<Reply>> {
    if !compat(app) {
        return Ok(None);
    }
    let deploy = {
        let mut u = uuid.to_string();
        let last = u.pop().map(|c| c.to_ascii_lowercase());
        u.extend(last);
        u
    };
    if deploy == uuid || !crate::ids::is_uuid(uuid) {
        return Ok(Some(Reply::Data(Value::Null)));
    }
    let d = tasks::run(app, move |app| app.store.task(&deploy)).await?;
    let row = d
        .filter(|d| d.projectid == pid)
        .and_then(|d| placeholder(&d));
    Ok(Some(Reply::Data(row.unwrap_or(Value::Null))))
}

async fn group_nodes_byname(req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Read)?;
    let name = param(&req, "name")?;
    let batches = tasks::run(req.state(), move |app| {
        match app.store.group_by_name(pid, &name)? {
            None => Ok(Value::Array(Vec::new())),
            Some(g) => Ok(json!(crate::engine::compute_batches(
                &app.store, &who, pid, &g
            )?)),
        }
    })
    .await?;
    Ok(Reply::Data(batches))
}

async fn group_delete_byname(req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Write)?;
    let name = param(&req, "name")?;
    let n2 = name.clone();
    let found = tasks::run(req.state(), move |app| {
        match app.store.group_by_name(pid, &n2)? {
            Some(g) => app.store.delete_group(pid, &who.name, g.id).map(|_| true),
            None => Ok(false),
        }
    })
    .await?;
    // As the original: deleting a name that is not there is no error (a
    // flowline's delete removes both of its groups, which may not exist).
    Ok(Reply::Body(if found {
        json!({"stat": true})
    } else {
        json!({"stat": true, "info": format!("no group named {name:?}")})
    }))
}

/// A project id in a body: a number or a string of digits.
fn body_project(b: &Map<String, Value>, key: &str) -> Result<Option<u64>> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| Error::Bad(format!("{key}: must be a project id"))),
        Some(Value::String(s)) => parse_project(s)
            .map(Some)
            .map_err(|_| Error::Bad(format!("{key}: {s:?} is not a project id"))),
        Some(_) => Err(Error::Bad(format!("{key}: must be a project id"))),
    }
}

async fn group_copy_byname(mut req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Write)?;
    let b = body(&mut req).await?;
    known_fields(
        &b,
        &["fromname", "toname", "fromprojectid", "toprojectid"],
        "",
    )?;
    let from_name = req_str(&b, "fromname")?;
    let to_name = req_str(&b, "toname")?;
    crate::jobs::check_name("toname", &to_name).map_err(Error::Bad)?;
    let from = body_project(&b, "fromprojectid")?.unwrap_or(pid);
    let to = body_project(&b, "toprojectid")?.unwrap_or(pid);
    // Both ends are checked, not only the project in the path.
    authorize_on(&req, from, Role::Read).await?;
    let who = authorize_on(&req, to, Role::Write).await?;
    let copied = tasks::run(req.state(), move |app| {
        let Some(src) = app.store.group_by_name(from, &from_name)? else {
            return Ok(None);
        };
        let g = crate::model::Group {
            id: 0,
            projectid: to,
            name: to_name,
            edit_time: crate::clock::now_ms(),
            ..src
        };
        app.store.save_group(&who.name, None, g).map(Some)
    })
    .await?;
    Ok(match copied {
        Some(g) => Reply::Data(g.to_api()),
        // The original's answer: the copy flows of its front end go on.
        None => Reply::Body(json!({"stat": true, "info": "The source does not exist"})),
    })
}

fn date_start(q: &BTreeMap<String, String>, k: &str) -> Result<Option<i64>> {
    match q.get(k).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(d) => crate::clock::local_day_start(d)
            .map(Some)
            .ok_or_else(|| Error::Bad(format!("{k}: {d:?} is not a date YYYY-MM-DD"))),
    }
}

async fn total_count(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let q = query(&req)?;
    let from = date_start(&q, "time_start")?.unwrap_or(i64::MIN);
    let to = date_start(&q, "time_end")?
        .map(|d| d + 86_400_000)
        .unwrap_or(i64::MAX);
    let mut counts = tasks::run(req.state(), move |app| {
        app.store.status_counts_between(pid, from, to)
    })
    .await?;
    for s in [TaskStatus::Success, TaskStatus::Running, TaskStatus::Fail] {
        counts.entry(s.to_string()).or_insert(0);
    }
    Ok(Reply::Data(json!(counts)))
}

async fn mystatus(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let uuid = param(&req, "subtaskuuid")?;
    let found = tasks::run(req.state(), move |app| {
        let Some(s) = app.store.subtask(&uuid)? else {
            return Ok(None);
        };
        let t = app.engine.task_in(pid, &s.parent_uuid)?;
        let all = app.store.subtasks(&t.uuid)?;
        Ok(Some((t, all, uuid)))
    })
    .await?;
    let Some((t, all, uuid)) = found else {
        return Ok(Reply::Data(json!({
            "action": "nofind", "batches": 0, "deployenv": "nofind",
            "submitter": "nofind", "groups": 0
        })));
    };
    let env = |kind: &str| {
        t.group
            .strip_prefix(&format!("_ci_{kind}_"))
            .and_then(|r| r.strip_suffix('_'))
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    };
    let deployenv = if env("online") {
        "online"
    } else if env("test") {
        "test"
    } else {
        "nofind"
    };
    let batch = all.iter().position(|s| s.uuid == uuid).map_or(0, |i| i + 1);
    Ok(Reply::Data(json!({
        "action": t.action,
        "batches": batch,
        "deployenv": deployenv,
        "submitter": t.user,
        "groups": all.len(),
    })))
}

fn flow_id(req: &Req) -> Result<u64> {
    let s = param(req, "flowid")?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Bad(format!("flowid: {s:?} is not a flowline id")));
    }
    s.parse()
        .map_err(|_| Error::Bad(format!("flowid: {s:?} is too large")))
}

/// Among candidates (one per project, best first), the first the caller may read.
async fn first_readable(
    req: &Req,
    mut found: Vec<crate::store::NamedTask>,
) -> Result<Option<crate::store::NamedTask>> {
    for t in found.drain(..) {
        match authorize_on(req, t.projectid, Role::Read).await {
            Ok(_) => return Ok(Some(t)),
            Err(Error::Forbidden(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The version last deployed to production by a flowline: its newest
/// successful `_ci_<id>_` task with `_jobtype_: online` and a `version`.
async fn flowline_version(req: Req) -> Result<Reply> {
    principal(&req)?;
    let name = format!("_ci_{}_", flow_id(&req)?);
    let best = tasks::run(req.state(), move |app| {
        let mut per_project: BTreeMap<u64, crate::store::NamedTask> = BTreeMap::new();
        app.store.visit_tasks_named(&name, |t| {
            let online = t.vars.get("_jobtype_").map(String::as_str) == Some("online");
            let version = t.vars.get("version").is_some_and(|v| !v.is_empty());
            if t.status == TaskStatus::Success && online && version {
                // Ids grow: a later one within the project replaces the earlier.
                per_project.insert(t.projectid, t);
            }
            true
        })?;
        let mut v: Vec<_> = per_project.into_values().collect();
        v.sort_by_key(|t| std::cmp::Reverse(t.id));
        Ok(v)
    })
    .await?;
    Ok(Reply::Data(match first_readable(&req, best).await? {
        Some(t) => json!({
            "jobxuuid": t.uuid,
            "version": t.vars.get("version"),
            "create_time": t.finish_ms.map(crate::clock::local),
        }),
        None => json!({}),
    }))
}

/// The first task of a flowline that deployed `version`, with its variables as `var`.
async fn flowline_status(req: Req) -> Result<Reply> {
    principal(&req)?;
    let name = format!("_ci_{}_", flow_id(&req)?);
    let version = param(&req, "version")?;
    let shape = version.len() >= 2
        && version.starts_with(|c: char| c.is_ascii_alphanumeric())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if !shape {
        return Err(Error::Bad(format!(
            "version: {version:?} is not a version ([A-Za-z0-9][A-Za-z0-9._-]+)"
        )));
    }
    let firsts = tasks::run(req.state(), move |app| {
        let mut per_project: BTreeMap<u64, crate::store::NamedTask> = BTreeMap::new();
        app.store.visit_tasks_named(&name, |t| {
            if t.vars.get("version") == Some(&version) {
                per_project.entry(t.projectid).or_insert(t);
            }
            true
        })?;
        let mut v: Vec<_> = per_project.into_values().collect();
        v.sort_by_key(|t| t.id);
        Ok(v)
    })
    .await?;
    let Some(hit) = first_readable(&req, firsts).await? else {
        return Ok(Reply::Data(json!({"status": "unknown"})));
    };
    let uuid = hit.uuid.clone();
    let t = tasks::run(req.state(), move |app| app.store.task(&uuid)).await?;
    let Some(t) = t else {
        return Ok(Reply::Data(json!({"status": "unknown"})));
    };
    let mut row = t.to_api(None);
    row["var"] = json!(t.vars);
    Ok(Reply::Data(row))
}

/// A Prometheus label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The rows of OPEN-C3's system monitor page: the daemon's own health.
async fn monitor_metrics(req: Req) -> Result<Reply> {
    let app = req.state().clone();
    if !app.config.server.public_metrics {
        principal(&req)?;
    }
    let json_wanted = query(&req)?
        .get("json")
        .is_some_and(|v| !v.is_empty() && v != "0");
    let a2 = app.clone();
    let (alive, counts, waiting) = blocking::unblock(move || {
        let alive = a2.store.ping();
        let counts = a2.store.task_status_counts().unwrap_or_default();
        let waiting = a2.engine.waiting_batches().unwrap_or(0);
        (alive, counts, waiting)
    })
    .await;
    let size = std::fs::metadata(app.store.path())
        .map(|m| m.len())
        .unwrap_or(0);
    let now = crate::clock::now_ms();
    let count = |s: &str| counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    let mut rows: Vec<(&str, &str, String, u64)> = vec![
        (
            "jobx",
            if alive { "ok" } else { "err" },
            "jobx_store_up".into(),
            alive as u64,
        ),
        ("jobx", "ok", "jobx_store_bytes".into(), size),
        ("jobx", "ok", "jobx_batches_waiting_confirm".into(), waiting),
    ];
    for s in TaskStatus::ALL {
        rows.push(("jobx", "ok", format!("jobx_tasks_{s}"), count(s.as_str())));
    }
    let errors = rows.iter().filter(|r| r.1 != "ok").count() as u64;
    let stat = if errors > 0 { "err" } else { "ok" };
    rows.insert(0, ("system", stat, "openc3_system_error".into(), errors));
    if json_wanted {
        let data: Vec<Value> = rows
            .iter()
            .enumerate()
            .map(|(i, (ty, stat, key, val))| {
                json!({
                    "id": i, "time": crate::clock::local(now), "time_s": now / 1000,
                    "stat": stat, "host": app.slave, "type": ty, "key": key, "val": val,
                })
            })
            .collect();
        return Ok(Reply::Data(Value::Array(data)));
    }
    let host = label(&app.slave);
    Ok(Reply::Text(
        rows.iter()
            .map(|(ty, _, key, val)| format!("{key}{{host=\"{host}\",type=\"{ty}\"}} {val}\n"))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(decision: &str, started: bool) -> Task {
        serde_json::from_value(json!({
            "id": 7, "projectid": 3, "uuid": "abcdefghijkm", "name": "_ci_5_",
            "group": "_ci_online_5_", "user": "alice", "slave": "s", "status": "success",
            "created_ms": 1, "start_ms": if started { Some(2) } else { None }, "finish_ms": null,
            "calltype": "page", "reason": "",
            "variable": {"version": "r2", "_rollbackVersion_": "r1", "_jobtype_": "online"},
            "vars": {}, "steps": [], "nodes": {}, "batches": 1, "action": "deploy",
            "stopped_by": null, "decision": decision
        }))
        .expect("task json")
    }

    #[test]
    fn placeholders_as_the_original_writes_them() {
        let p = placeholder(&deploy("norollback", true)).expect("norollback row");
        assert_eq!(p["uuid"], "abcdefghijkM");
        assert_eq!(p["name"], "_ci_5_");
        assert_eq!(p["slave"], "_null_");
        assert_eq!(p["status"], "success");
        assert_eq!(p["variables"]["version"], "r1");
        assert!(p["variable"].as_str().unwrap_or("").contains("version: r1"));
        let p = placeholder(&deploy("", true)).expect("skip row");
        assert_eq!(p["name"], "_skip_");
        assert_eq!(p["user"], "sys");
        assert!(placeholder(&deploy("", false)).is_none());
        assert!(placeholder(&deploy("pending", true)).is_none());
        assert!(placeholder(&deploy("rollback", true)).is_none());
    }

    #[test]
    fn compat_answers_only_where_openc3_calls() {
        assert!(openc3_route("/api/jobx/task/1"));
        assert!(openc3_route("/monitor/metrics"));
        assert!(!openc3_route("/metrics"));
        assert!(!openc3_route("/plugin/agent-pull/poll"));
        assert!(!openc3_route("/ui/session"));
        assert!(!openc3_route("/backup"));
        assert!(is_batch_list("/api/jobx/subtask/10/AbcdefghijkL"));
        assert!(!is_batch_list("/subtask/10/AbcdefghijkL/confirm"));
        assert!(!is_batch_list("/subtask/x/AbcdefghijkL"));
    }

    #[test]
    fn placeholder_filters() {
        let p = placeholder(&deploy("norollback", true)).expect("row");
        let q = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(placeholder_matches(&p, &q("name", "_ci_5_")));
        assert!(!placeholder_matches(&p, &q("name", "_ci_")));
        assert!(!placeholder_matches(&p, &q("time_start", "2026-01-01")));
        assert!(placeholder_matches(&p, &q("status", "success")));
        assert!(!placeholder_matches(&p, &q("status", "fail")));
    }
}
