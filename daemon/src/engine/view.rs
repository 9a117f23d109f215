//! Tasks as people see them: what each one waits for (the `waiting` field)
//! and the list of tasks that wait for a person. Derived from the stored
//! batches, approvals and decisions, never stored twice.

use super::{check_rollback_allowed, plan, Engine, ROLLBACK_WINDOW_MS};
use crate::error::Result;
use crate::model::{Approval, Task, TaskSummary, Waiting};
use crate::store::TaskFilter;
use serde_json::Value;

impl Engine {
    /// What `t` waits for; `approvals` are its project's pending ones.
    fn waiting_with(&self, t: &Task, approvals: &[Approval], now: i64) -> Result<Option<Waiting>> {
        // Finished tasks need no batch read: only a rollback decision is left.
        let subs = if t.is_finished() {
            Vec::new()
        } else {
            self.store.subtasks(&t.uuid)?
        };
        let open = t.is_finished() && check_rollback_allowed(t, now).is_ok();
        Ok(plan::waiting(t, &subs, approvals, open))
    }

    pub fn waiting_of(&self, t: &Task) -> Result<Option<Waiting>> {
        let approvals = if t.is_finished() {
            Vec::new()
        } else {
            self.store.pending_approvals(t.projectid)?
        };
        self.waiting_with(t, &approvals, crate::clock::now_ms())
    }

    /// One task as the API answers it.
    pub fn task_json(&self, t: &Task) -> Result<Value> {
        Ok(t.to_api(self.waiting_of(t)?.as_ref()))
    }

    /// Tasks of `project` that wait for a person, newest first, filtered by
    /// `f` (its status is ignored). Only unfinished tasks and deploys started
    /// in the rollback window can wait, so the scan stays small.
    pub fn waiting_tasks(&self, project: u64, f: &TaskFilter) -> Result<Vec<Task>> {
        let now = crate::clock::now_ms();
        let mut candidates: Vec<Task> = Vec::new();
        for uuid in self.store.active_tasks()? {
            if let Some(t) = self.store.task(&uuid)? {
                if t.projectid == project {
                    candidates.push(t);
                }
            }
        }
        // Created before it started: a deploy started in the window was
        // created at most a little earlier than the window's start.
        let recent: Vec<TaskSummary> =
            self.store
                .tasks_between(project, now - ROLLBACK_WINDOW_MS - 86_400_000, i64::MAX)?;
        for s in recent {
            if s.is_finished() && s.decision == crate::model::Decision::Pending {
                if let Some(t) = self.store.task(&s.uuid)? {
                    candidates.push(t);
                }
            }
        }
        candidates.sort_by_key(|t| std::cmp::Reverse(t.id));
        candidates.dedup_by(|a, b| a.id == b.id);
        let approvals = self.store.pending_approvals(project)?;
        let mut out = Vec::new();
        for t in candidates {
            if out.len() >= f.limit {
                break;
            }
            if f.before_id.is_some_and(|b| t.id >= b) || !f.matches(&t) {
                continue;
            }
            if self.waiting_with(&t, &approvals, now)?.is_some() {
                out.push(t);
            }
        }
        Ok(out)
    }
}
