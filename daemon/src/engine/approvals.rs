//! The approval step: one approval per batch, waited for until the
//! approvers decide, its deadline passes or the task is stopped.

use super::runner::{blocking, StepOutcome};
use super::{lock, plan, Engine};
use crate::error::Result;
use crate::logs::Keys;
use crate::model::{Approval, ApprovalStatus, Opinion, Step, Subtask, Task};
use crate::notify::Kind;
use futures_lite::FutureExt;
use std::sync::Arc;
use std::time::Duration;

/// Waits for the approvers (or the timeout, or a stop).
pub(super) async fn run_approval(
    e: &Arc<Engine>,
    task: &Task,
    sub: &Subtask,
    step: &Step,
    keys: &Keys,
) -> Result<StepOutcome> {
    // An approval is one per batch: `${JOBX_NODE}` names the batch's nodes.
    let mut vars = plan::context_vars(task, sub);
    vars.insert("JOBX_NODE".into(), sub.nodes.join(","));
    let message =
        crate::vars::substitute(step.message.as_deref().unwrap_or(""), &vars).unwrap_or_default();
    let now = crate::clock::now_ms();
    let a = Approval {
        uuid: crate::ids::new_uuid(),
        projectid: task.projectid,
        taskuuid: task.uuid.clone(),
        subtaskuuid: sub.uuid.clone(),
        step: step.name.clone(),
        approvers: step.approvers.clone().unwrap_or_default(),
        message: message.clone(),
        everyone: step.everyone.unwrap_or(false),
        created_ms: now,
        deadline_ms: now.saturating_add((step.timeout as i64).saturating_mul(1000)),
        opinions: Default::default(),
        status: ApprovalStatus::Pending,
    };
    let (a2, t2, s2) = (a.clone(), task.clone(), sub.clone());
    blocking(e, move |e| {
        e.store.tx(|tx| {
            tx.put_approval(&a2)?;
            e.notify.emit(tx, Kind::Approval, &t2, Some(&s2), Some(&a2))
        })?;
        e.notify.kick();
        Ok(())
    })
    .await?;
    e.logs.append(
        keys,
        "",
        "info",
        &format!(
            "approval requested from {}: {message} (approval {})",
            a.approvers.join(", "),
            a.uuid
        ),
    );
    let wake = lock(&e.wakers).get(&task.uuid).cloned();
    let Some(wake) = wake else {
        return Ok(StepOutcome {
            failed: sub.nodes.clone(),
            refused: false,
            reason: "no runner".into(),
        });
    };
    loop {
        let listener = wake.listen();
        let id = a.uuid.clone();
        let tid = task.uuid.clone();
        let (cur, stop) = blocking(e, move |e| {
            Ok((
                e.store.approval(&id)?,
                e.store.task(&tid)?.and_then(|t| t.stopped_by),
            ))
        })
        .await?;
        let Some(cur) = cur else {
            return Ok(StepOutcome {
                failed: sub.nodes.clone(),
                refused: false,
                reason: "approval vanished".into(),
            });
        };
        let settle = |status: ApprovalStatus, e: &Arc<Engine>| {
            let mut c = cur.clone();
            c.status = status;
            let e = e.clone();
            async move { blocking(&e, move |e| e.store.tx(|tx| tx.put_approval(&c))).await }
        };
        match cur.status {
            ApprovalStatus::Agree => {
                e.logs.append(
                    keys,
                    "",
                    "info",
                    &format!("approved by {}", agreed_by(&cur)),
                );
                return Ok(StepOutcome {
                    failed: Vec::new(),
                    refused: false,
                    reason: String::new(),
                });
            }
            ApprovalStatus::Refuse => {
                e.logs.append(keys, "", "info", "refused");
                return Ok(StepOutcome {
                    failed: Vec::new(),
                    refused: true,
                    reason: format!("approval {:?} refused", step.name),
                });
            }
            ApprovalStatus::Pending => {}
            other @ (ApprovalStatus::Timeout | ApprovalStatus::Cancel) => {
                return Ok(StepOutcome {
                    failed: sub.nodes.clone(),
                    refused: false,
                    reason: format!("approval {other}"),
                });
            }
        }
        if let Some(who) = stop {
            settle(ApprovalStatus::Cancel, e).await?;
            return Ok(StepOutcome {
                failed: sub.nodes.clone(),
                refused: false,
                reason: format!("stopped by {who}"),
            });
        }
        let left = cur.deadline_ms - crate::clock::now_ms();
        if left <= 0 {
            settle(ApprovalStatus::Timeout, e).await?;
            e.logs.append(
                keys,
                "",
                "info",
                &format!("no decision within {} s", step.timeout),
            );
            return Ok(StepOutcome {
                failed: sub.nodes.clone(),
                refused: false,
                reason: format!(
                    "approval {:?} timed out after {} s",
                    step.name, step.timeout
                ),
            });
        }
        listener
            .or(async {
                async_io::Timer::after(Duration::from_millis(left as u64)).await;
            })
            .await;
    }
}

fn agreed_by(a: &Approval) -> String {
    a.opinions
        .iter()
        .filter(|(_, o)| **o == Opinion::Agree)
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
