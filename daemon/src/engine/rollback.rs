//! Rollback decisions (docs/semantics.md §5): whether a deploy may still be
//! rolled back, the decision itself, and the rollback task it creates.

use super::{in_project, new_subtask, Engine};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::logs::Keys;
use crate::model::{Action, BatchStatus, Decision, Subtask, Task, TaskStatus};
use serde_json::Value;
use std::sync::Arc;

/// Rollback decisions are accepted this long after the deploy started.
pub(super) const ROLLBACK_WINDOW_MS: i64 = 7 * 86400 * 1000;

impl Engine {
    /// `rollback` or `norollback` on a finished deploy.
    pub fn decide_rollback(
        self: &Arc<Self>,
        project: u64,
        uuid: &str,
        who: &Principal,
        rollback: bool,
    ) -> Result<Option<String>> {
        if !crate::ids::is_deploy(uuid) {
            return Err(Error::Bad(format!(
                "uuid: {uuid:?} is not a deploy uuid (12 characters ending in a lowercase letter)"
            )));
        }
        let rb_uuid = crate::ids::rollback_of(uuid);
        let created = self.store.tx(|tx| {
            let mut d = in_project(tx.task(uuid)?, project, uuid)?;
            check_rollback_allowed(&d, crate::clock::now_ms())?;
            d.decision = if rollback {
                Decision::Rollback
            } else {
                Decision::NoRollback
            };
            tx.put_task(&d)?;
            if !rollback {
                tx.oplog(project, &who.name, "NO ROLLBACK", &format!("task {uuid}"))?;
                return Ok(None);
            }
            let subs = tx.subtasks(uuid)?;
            let (mut rb, mut rb_subs) = rollback_task(&d, &subs, &rb_uuid, who);
            tx.insert_task(&mut rb, &mut rb_subs)?;
            tx.oplog(
                project,
                &who.name,
                "ROLLBACK",
                &format!("task {uuid} rollback {rb_uuid}"),
            )?;
            Ok(Some(rb.uuid))
        })?;
        let text = match &created {
            Some(rb) => format!("rollback decided by {}: task {rb}", who.name),
            None => format!("no rollback, decided by {}", who.name),
        };
        self.logs.append(&Keys::task(uuid), "", "info", &text);
        if let Some(rb) = &created {
            self.spawn_runner(rb.clone());
        }
        Ok(created)
    }
}

/// The rollback preconditions of docs/semantics.md §5, each with its own message.
pub fn check_rollback_allowed(d: &Task, now: i64) -> Result<()> {
    if d.action != Action::Deploy {
        return Err(Error::Bad(format!("task {} is not a deploy", d.uuid)));
    }
    if !d.is_finished() {
        return Err(Error::Conflict(format!(
            "deploy {} is still running; decide when it has ended",
            d.uuid
        )));
    }
    if d.status == TaskStatus::Refuse {
        return Err(Error::Conflict(format!(
            "deploy {} was refused; it cannot be rolled back",
            d.uuid
        )));
    }
    match d.decision {
        Decision::Pending => {}
        Decision::Rollback | Decision::NoRollback => {
            return Err(Error::Conflict(format!(
                "a decision was already made for deploy {}: {}",
                d.uuid, d.decision
            )))
        }
        Decision::None => {
            return Err(Error::Conflict(format!(
                "deploy {} has no _rollbackVersion_; no rollback decision is expected",
                d.uuid
            )))
        }
    }
    let start = d.start_ms.unwrap_or(d.created_ms);
    if now - start > ROLLBACK_WINDOW_MS {
        return Err(Error::Conflict(format!(
            "deploy {} started more than 7 days ago; rollback is no longer offered",
            d.uuid
        )));
    }
    Ok(())
}

/// The rollback partner: same job and group, `version` = the old
/// `_rollbackVersion_`, over the deploy's batches that had started.
pub(super) fn rollback_task(
    d: &Task,
    subs: &[Subtask],
    uuid: &str,
    who: &Principal,
) -> (Task, Vec<Subtask>) {
    let mut vars = d.vars.clone();
    let old = vars.remove("_rollbackVersion_").unwrap_or_default();
    vars.insert("version".into(), old.clone());
    let mut variable = d.variable.clone();
    if let Value::Object(m) = &mut variable {
        m.remove("_rollbackVersion_");
        m.insert("version".into(), Value::String(old));
    }
    let started: Vec<Vec<String>> = subs
        .iter()
        .filter(|s| !matches!(s.status, BatchStatus::Init | BatchStatus::Cancel))
        .map(|s| s.nodes.clone())
        .collect();
    let task = Task {
        id: 0,
        projectid: d.projectid,
        uuid: uuid.to_string(),
        name: d.name.clone(),
        group: d.group.clone(),
        user: who.name.clone(),
        slave: d.slave.clone(),
        status: TaskStatus::Init,
        created_ms: crate::clock::now_ms(),
        start_ms: None,
        finish_ms: None,
        calltype: d.calltype.clone(),
        reason: String::new(),
        variable,
        vars,
        steps: d.steps.clone(),
        nodes: d.nodes.clone(),
        batches: started.len() as u32,
        action: Action::Rollback,
        stopped_by: None,
        decision: Decision::None,
        policy: d.policy.clone(),
    };
    let subs = started
        .into_iter()
        .enumerate()
        .map(|(i, n)| new_subtask(uuid, i as u32, n))
        .collect();
    (task, subs)
}
