//! The third-party interface (docs/semantics.md §6): callers keep their own ids;
//! `retry_count` picks the attempt letter of the task uuid.

use super::tasks::{run, variable_of};
use super::*;
use crate::engine::{plan, state, NewTask};
use crate::model::{Decision, Subtask, Task, TaskStatus};

pub fn routes(s: &mut tide::Server<Arc<App>>) {
    s.at("/third/option/groupname").post(h(groupnames));
    s.at("/third/interface/dry-run").post(h(dry_run));
    s.at("/third/interface/invoke").post(h(invoke));
    s.at("/third/interface/query").post(h(query_task));
    s.at("/third/interface/stop").post(h(stop));
}

fn project_id(b: &Map<String, Value>) -> Result<u64> {
    match b.get("project_id") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| Error::Bad("project_id: must be a project id".into())),
        Some(Value::String(s)) => parse_project(s)
            .map_err(|_| Error::Bad(format!("project_id: {s:?} is not a project id"))),
        None | Some(Value::Null) => Err(Error::Bad("project_id: missing".into())),
        Some(_) => Err(Error::Bad("project_id: must be a project id".into())),
    }
}

/// The task uuid of a caller id and attempt.
fn task_uuid(b: &Map<String, Value>) -> Result<String> {
    let caller = req_str(b, "uuid")?;
    let retry = match b.get("retry_count") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|n| *n <= 25)
            .ok_or_else(|| Error::Bad("retry_count: must be 0 to 25".into()))?,
        Some(Value::String(s)) => s
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= 25)
            .ok_or_else(|| Error::Bad("retry_count: must be 0 to 25".into()))?,
        Some(_) => return Err(Error::Bad("retry_count: must be 0 to 25".into())),
    };
    crate::ids::third_party_uuid(&caller, retry as u8).ok_or_else(|| {
        Error::Bad(format!(
            "uuid: {caller:?} must be 12 characters of [A-Za-z0-9]"
        ))
    })
}

fn new_task(b: &Map<String, Value>, pid: u64, uuid: String) -> Result<NewTask> {
    let Some(Value::Object(params)) = b.get("params") else {
        return Err(Error::Bad(
            "params: must be an object {jobname, group, variable?}".into(),
        ));
    };
    known_fields(params, &["jobname", "group", "variable"], "params")?;
    Ok(NewTask {
        project: pid,
        jobname: req_str(params, "jobname").map_err(|e| Error::Bad(format!("params.{e}")))?,
        group: opt_str(params, "group").map_err(|e| Error::Bad(format!("params.{e}")))?,
        variable: variable_of(params).map_err(|e| Error::Bad(format!("params.{e}")))?,
        uuid: Some(uuid),
        calltype: "api".into(),
        nodebatch: None,
    })
}

async fn groupnames(mut req: Req) -> Result<Reply> {
    let who = principal(&req)?;
    let b = body(&mut req).await?;
    let pid = project_id(&b)?;
    authorize(who, pid, Role::Read)?;
    let groups = run(req.state(), move |app| app.store.groups(pid)).await?;
    Ok(Reply::Data(json!(groups
        .iter()
        .map(|g| g.name.clone())
        .collect::<Vec<_>>())))
}

/// The common part of dry-run and invoke: the caller (write on the
/// project), the task uuid and what to plan.
async fn write_request(req: &mut Req) -> Result<(Principal, String, NewTask)> {
    let who = principal(req)?;
    let b = body(req).await?;
    let pid = project_id(&b)?;
    let who = authorize(who, pid, Role::Write)?;
    let uuid = task_uuid(&b)?;
    let mut new = new_task(&b, pid, uuid.clone())?;
    new.calltype = who.calltype().into();
    Ok((who, uuid, new))
}

async fn dry_run(mut req: Req) -> Result<Reply> {
    let (who, uuid, new) = write_request(&mut req).await?;
    let (task, subs) = run(req.state(), move |app| app.engine.plan(&who, &new)).await?;
    let batches: Vec<Value> = subs
        .iter()
        .map(|s| {
            let steps: Vec<&str> = task
                .steps
                .iter()
                .filter(|st| plan::step_applies(st, task.action, s.idx, task.batches))
                .map(|st| st.name.as_str())
                .collect();
            json!({"batch": s.idx + 1, "nodes": s.nodes, "steps": steps})
        })
        .collect();
    let steps: Vec<Value> = task
        .steps
        .iter()
        .map(|s| json!({"uuid": s.uuid, "name": s.name, "plugin": s.plugin, "action": s.action, "batches": s.batches}))
        .collect();
    Ok(Reply::Body(
        json!({"stat": true, "uuid": uuid, "msg": "ok", "data": {"batches": batches, "steps": steps, "policy": task.policy}}),
    ))
}

async fn invoke(mut req: Req) -> Result<Reply> {
    let (who, uuid, new) = write_request(&mut req).await?;
    let pid = new.project;
    let u2 = uuid.clone();
    let created = run(req.state(), move |app| {
        if let Some(t) = app.store.task(&u2)? {
            if t.projectid != pid {
                return Err(Error::Conflict(format!(
                    "uuid: task {u2} belongs to another project"
                )));
            }
            return Ok(None);
        }
        let (task, subs) = app.engine.plan(&who, &new)?;
        match app.engine.create(&who, task, subs) {
            Ok(t) => Ok(Some(t)),
            // A concurrent invoke with the same uuid won the race: same answer as a repeat.
            Err(Error::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await?;
    Ok(Reply::Body(match created {
        Some(t) => json!({"stat": true, "uuid": uuid, "data": t.to_api(None)}),
        None => {
            json!({"stat": true, "uuid": uuid, "info": "This task has been successfully created"})
        }
    }))
}

/// The third-party view of a deploy (and its rollback, if any).
fn query_state(deploy: &Task, dsubs: &[Subtask], rollback: Option<(&Task, &[Subtask])>) -> Value {
    let (task, subs, ty) = match rollback {
        Some((t, s)) => (t, s, "rollback"),
        None if deploy.decision == Decision::Pending => (deploy, dsubs, "deploy"),
        None => (deploy, dsubs, "deployonly"),
    };
    let waiting = subs.iter().any(|s| s.waiting());
    let done = subs.iter().filter(|s| state::batch_ended(s)).count();
    let status = if !task.is_finished() || (ty == "deploy" && deploy.decision == Decision::Pending)
    {
        "running"
    } else if task.status == TaskStatus::Success {
        "complete"
    } else {
        "fail"
    };
    let msg = if waiting {
        "Wait for manual treatment"
    } else if ty == "deploy" && task.is_finished() {
        "Wait for manual treatment: rollback or norollback"
    } else {
        ""
    };
    json!({"stat": true, "uuid": task.uuid, "status": status, "type": ty, "progress": [done, subs.len()], "msg": msg})
}

async fn query_task(mut req: Req) -> Result<Reply> {
    // Strangers learn nothing, not even whether a task exists.
    let who = principal(&req)?;
    let b = body(&mut req).await?;
    let uuid = task_uuid(&b)?;
    let u2 = uuid.clone();
    let found = run(req.state(), move |app| {
        let Some(d) = app.store.task(&u2)? else {
            return Ok(None);
        };
        let ds = app.store.subtasks(&u2)?;
        let rb_uuid = crate::ids::rollback_of(&u2);
        let rb = match app.store.task(&rb_uuid)? {
            Some(r) => Some((app.store.subtasks(&rb_uuid)?, r)),
            None => None,
        };
        Ok(Some((d, ds, rb)))
    })
    .await?;
    let Some((d, ds, rb)) = found else {
        return Err(Error::NotFound(format!("no task {uuid}")));
    };
    authorize(who, d.projectid, Role::Read)?;
    let v = query_state(&d, &ds, rb.as_ref().map(|(s, t)| (t, s.as_slice())));
    Ok(Reply::Body(v))
}

async fn stop(mut req: Req) -> Result<Reply> {
    let who = principal(&req)?;
    let b = body(&mut req).await?;
    let uuid = task_uuid(&b)?;
    let u2 = uuid.clone();
    let (d, rb) = run(req.state(), move |app| {
        let d = app
            .store
            .task(&u2)?
            .ok_or_else(|| Error::NotFound(format!("no task {u2}")))?;
        Ok((d, app.store.task(&crate::ids::rollback_of(&u2))?))
    })
    .await?;
    let who = authorize(who, d.projectid, Role::Control)?;
    let target = rb.unwrap_or(d);
    let (pid, tu) = (target.projectid, target.uuid.clone());
    run(req.state(), move |app| app.engine.stop(pid, &tu, &who)).await?;
    Ok(Reply::Body(
        json!({"stat": true, "uuid": target.uuid, "msg": "stopping"}),
    ))
}
