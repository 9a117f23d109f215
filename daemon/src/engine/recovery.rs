//! Restart recovery: what a daemon does with the tasks it finds unfinished
//! when it starts.

use super::{lock, plan, state, Engine};
use crate::error::Result;
use crate::logs::Keys;
use crate::model::ApprovalStatus;
use std::sync::Arc;

impl Engine {
    /// Restart recovery (docs/semantics.md §8): batches that were running become
    /// `fail` "interrupted by daemon restart" and wait for a person; then
    /// every unfinished task gets a runner again.
    pub fn recover(self: &Arc<Self>) -> Result<usize> {
        let active = self.store.active_tasks()?;
        let now = crate::clock::now_ms();
        for uuid in &active {
            self.store.tx(|tx| {
                let Some(t) = tx.task(uuid)? else {
                    return Ok(());
                };
                if t.stopped_by.is_some() {
                    lock(&self.stopping).insert(uuid.clone());
                }
                for mut s in tx.subtasks(uuid)? {
                    let exit = plan::exit_on_failure(&t.vars);
                    let Some((status, confirm)) = state::interrupt(s.status, exit) else {
                        continue;
                    };
                    s.status = status;
                    s.reason = "interrupted by daemon restart".into();
                    s.finish_ms = Some(now);
                    s.retry = false;
                    s.confirm = confirm;
                    if s.failed_step.is_none() {
                        s.failed_step = Some(0);
                        s.failed_nodes = s.nodes.clone();
                    }
                    tx.put_subtask(&s)?;
                    self.notify
                        .emit(tx, crate::notify::Kind::Failed, &t, Some(&s), None)?;
                    if s.waiting() {
                        self.notify
                            .emit(tx, crate::notify::Kind::Waiting, &t, Some(&s), None)?;
                    }
                    let then = if s.waiting() {
                        "waits for confirmation"
                    } else {
                        "the task ends (_exit_)"
                    };
                    self.logs.append(
                        &Keys::batch(uuid, &s.uuid),
                        "",
                        "info",
                        &format!(
                            "batch {}/{} interrupted by daemon restart; {then}",
                            s.idx + 1,
                            t.batches
                        ),
                    );
                }
                // The interrupted batch's approval is no longer awaited.
                for mut a in tx.pending_approvals(t.projectid)? {
                    if a.taskuuid == *uuid {
                        a.status = ApprovalStatus::Cancel;
                        tx.put_approval(&a)?;
                    }
                }
                Ok(())
            })?;
            log::info!("resuming task {uuid}");
            self.spawn_runner(uuid.clone());
        }
        Ok(active.len())
    }
}
