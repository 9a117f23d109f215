//! Tasks, subtasks and approvals.
//!
//! Indexes are tables of their own, written in the same transaction as the
//! row they index: tasks by (project, id) for listing, by (project, created
//! time, id) for statistics, the set of unfinished tasks for recovery,
//! subtasks by (task, position), and pending approvals by project.

use super::*;
use crate::model::{Approval, Subtask, Task, TaskStatus};

pub(super) const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
pub(super) const TASK_INDEX: TableDefinition<(u64, u64), &str> = TableDefinition::new("task_index");
pub(super) const TASK_TIME: TableDefinition<(u64, i64, u64), &str> =
    TableDefinition::new("task_time");
pub(super) const ACTIVE: TableDefinition<&str, ()> = TableDefinition::new("active_tasks");
pub(super) const SUBTASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("subtasks");
pub(super) const SUBTASK_INDEX: TableDefinition<(&str, u32), &str> =
    TableDefinition::new("subtask_index");
pub(super) const APPROVALS: TableDefinition<&str, &[u8]> = TableDefinition::new("approvals");
pub(super) const APPROVAL_PENDING: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("approval_pending");
/// status → number of tasks in it (for metrics without a scan).
pub(super) const STATUS_COUNT: TableDefinition<&str, u64> =
    TableDefinition::new("task_status_count");

pub(crate) fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(TASKS)?;
    tx.open_table(TASK_INDEX)?;
    tx.open_table(TASK_TIME)?;
    tx.open_table(ACTIVE)?;
    tx.open_table(SUBTASKS)?;
    tx.open_table(SUBTASK_INDEX)?;
    tx.open_table(APPROVALS)?;
    tx.open_table(APPROVAL_PENDING)?;
    tx.open_table(STATUS_COUNT)?;
    Ok(())
}

/// The batches of a task in order, from either kind of transaction.
fn subtasks_of(
    idx: &impl ReadableTable<(&'static str, u32), &'static str>,
    subs: &impl ReadableTable<&'static str, &'static [u8]>,
    task: &str,
) -> Result<Vec<Subtask>> {
    let mut out = Vec::new();
    for row in idx.range((task, 0)..=(task, u32::MAX))? {
        let (_, uuid) = row?;
        if let Some(v) = subs.get(uuid.value())? {
            out.push(from_json(v.value())?);
        }
    }
    Ok(out)
}

/// The pending approvals of a project, from either kind of transaction.
fn pending_of(
    idx: &impl ReadableTable<(u64, &'static str), ()>,
    all: &impl ReadableTable<&'static str, &'static [u8]>,
    project: u64,
) -> Result<Vec<Approval>> {
    let mut out = Vec::new();
    for row in idx.range((project, "")..)? {
        let (k, _) = row?;
        let (p, uuid) = k.value();
        if p != project {
            break;
        }
        if let Some(a) = get_json(all, uuid)? {
            out.push(a);
        }
    }
    Ok(out)
}

/// A write transaction over tasks: read-modify-write of several rows that
/// commit together (or not at all).
pub struct Tx<'a>(pub(super) &'a WriteTransaction);

impl Tx<'_> {
    pub fn task(&self, uuid: &str) -> Result<Option<Task>> {
        get_json(&self.0.open_table(TASKS)?, uuid)
    }

    pub fn put_task(&self, t: &Task) -> Result<()> {
        let old = self.task(&t.uuid)?.map(|o| o.status);
        if old != Some(t.status) {
            let mut counts = self.0.open_table(STATUS_COUNT)?;
            if let Some(o) = old {
                let n = counts.get(o.as_str())?.map(|v| v.value()).unwrap_or(0);
                counts.insert(o.as_str(), n.saturating_sub(1))?;
            }
            let n = counts
                .get(t.status.as_str())?
                .map(|v| v.value())
                .unwrap_or(0);
            counts.insert(t.status.as_str(), n + 1)?;
        }
        self.0
            .open_table(TASKS)?
            .insert(t.uuid.as_str(), to_json(t)?.as_slice())?;
        let mut active = self.0.open_table(ACTIVE)?;
        if t.is_finished() {
            active.remove(t.uuid.as_str())?;
        } else {
            active.insert(t.uuid.as_str(), ())?;
        }
        Ok(())
    }

    pub fn subtask(&self, uuid: &str) -> Result<Option<Subtask>> {
        get_json(&self.0.open_table(SUBTASKS)?, uuid)
    }

    pub fn put_subtask(&self, s: &Subtask) -> Result<()> {
        self.0
            .open_table(SUBTASKS)?
            .insert(s.uuid.as_str(), to_json(s)?.as_slice())?;
        Ok(())
    }

    pub fn subtasks(&self, task: &str) -> Result<Vec<Subtask>> {
        let idx = self.0.open_table(SUBTASK_INDEX)?;
        let subs = self.0.open_table(SUBTASKS)?;
        subtasks_of(&idx, &subs, task)
    }

    pub fn approval(&self, uuid: &str) -> Result<Option<Approval>> {
        get_json(&self.0.open_table(APPROVALS)?, uuid)
    }

    pub fn pending_approvals(&self, project: u64) -> Result<Vec<Approval>> {
        let idx = self.0.open_table(APPROVAL_PENDING)?;
        let all = self.0.open_table(APPROVALS)?;
        pending_of(&idx, &all, project)
    }

    pub fn put_approval(&self, a: &Approval) -> Result<()> {
        self.0
            .open_table(APPROVALS)?
            .insert(a.uuid.as_str(), to_json(a)?.as_slice())?;
        let mut pending = self.0.open_table(APPROVAL_PENDING)?;
        if a.status == crate::model::ApprovalStatus::Pending {
            pending.insert((a.projectid, a.uuid.as_str()), ())?;
        } else {
            pending.remove((a.projectid, a.uuid.as_str()))?;
        }
        Ok(())
    }

    pub fn oplog(&self, project: u64, user: &str, title: &str, info: &str) -> Result<()> {
        oplog(self.0, project, user, title, info)
    }

    /// Stores a new task with its batches; 409 if the uuid is taken.
    pub fn insert_task(&self, t: &mut Task, subs: &mut [Subtask]) -> Result<()> {
        if self.0.open_table(TASKS)?.get(t.uuid.as_str())?.is_some() {
            return Err(Error::Conflict(format!(
                "task uuid {} is already used",
                t.uuid
            )));
        }
        t.id = next_id(self.0, "task")?;
        self.0
            .open_table(TASK_INDEX)?
            .insert((t.projectid, t.id), t.uuid.as_str())?;
        self.0
            .open_table(TASK_TIME)?
            .insert((t.projectid, t.created_ms, t.id), t.uuid.as_str())?;
        let mut idx = self.0.open_table(SUBTASK_INDEX)?;
        for s in subs.iter_mut() {
            s.id = next_id(self.0, "subtask")?;
            idx.insert((t.uuid.as_str(), s.idx), s.uuid.as_str())?;
            self.put_subtask(s)?;
        }
        drop(idx);
        self.put_task(t)
    }
}

/// Filters of `GET /task/:projectid`.
#[derive(Default, Debug)]
pub struct TaskFilter {
    pub name: Option<String>,
    pub user: Option<String>,
    pub status: Option<TaskStatus>,
    pub taskuuid: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub before_id: Option<u64>,
    pub limit: usize,
}

impl TaskFilter {
    pub fn matches(&self, t: &Task) -> bool {
        self.name
            .as_ref()
            .is_none_or(|n| t.name.contains(n.as_str()))
            && self.user.as_ref().is_none_or(|u| &t.user == u)
            && self.status.is_none_or(|s| t.status == s)
            && self.taskuuid.as_ref().is_none_or(|u| &t.uuid == u)
            && self.from_ms.is_none_or(|f| t.created_ms >= f)
            && self.to_ms.is_none_or(|e| t.created_ms < e)
    }
}

impl Store {
    /// Runs `f` over a task transaction and commits durably.
    pub fn tx<T>(&self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        self.write(|tx| f(&Tx(tx)))
    }

    pub fn task(&self, uuid: &str) -> Result<Option<Task>> {
        self.read(|tx| get_json(&tx.open_table(TASKS)?, uuid))
    }

    pub fn subtasks(&self, task: &str) -> Result<Vec<Subtask>> {
        self.read(|tx| {
            let idx = tx.open_table(SUBTASK_INDEX)?;
            let subs = tx.open_table(SUBTASKS)?;
            subtasks_of(&idx, &subs, task)
        })
    }

    pub fn subtask(&self, uuid: &str) -> Result<Option<Subtask>> {
        self.read(|tx| get_json(&tx.open_table(SUBTASKS)?, uuid))
    }

    /// Tasks of a project, newest first, filtered. With a time filter the
    /// time index bounds the scan (order: creation time, which follows ids).
    pub fn tasks(&self, project: u64, f: &TaskFilter) -> Result<Vec<Task>> {
        self.read(|tx| {
            let tasks = tx.open_table(TASKS)?;
            let mut out = Vec::new();
            // Keeps a matching task; answers whether the page is full.
            let mut keep = |uuid: &str| -> Result<bool> {
                if let Some(t) = get_json::<_, Task>(&tasks, uuid)? {
                    if f.matches(&t) {
                        out.push(t);
                    }
                }
                Ok(out.len() >= f.limit)
            };
            let hi = f.before_id.map(|b| b.saturating_sub(1)).unwrap_or(u64::MAX);
            if f.from_ms.is_some() || f.to_ms.is_some() {
                let lo = f.from_ms.unwrap_or(i64::MIN);
                let to = f.to_ms.unwrap_or(i64::MAX);
                let idx = tx.open_table(TASK_TIME)?;
                // Newest first straight from the time index, stopping at the
                // limit: memory stays bounded however wide the range is.
                for row in idx.range((project, lo, 0)..(project, to, 0))?.rev() {
                    let (k, uuid) = row?;
                    if k.value().2 <= hi && keep(uuid.value())? {
                        break;
                    }
                }
            } else {
                let idx = tx.open_table(TASK_INDEX)?;
                for row in idx.range((project, 0)..=(project, hi))?.rev() {
                    if keep(row?.1.value())? {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    /// Tasks of a project created in `[from, to)`, oldest first, read as
    /// `T` (a `TaskSummary` skips the job and node snapshots).
    pub fn tasks_between<T: DeserializeOwned>(
        &self,
        project: u64,
        from: i64,
        to: i64,
    ) -> Result<Vec<T>> {
        self.read(|tx| {
            let idx = tx.open_table(TASK_TIME)?;
            let tasks = tx.open_table(TASKS)?;
            let mut out = Vec::new();
            for row in idx.range((project, from, 0)..(project, to, 0))? {
                if let Some(t) = get_json(&tasks, row?.1.value())? {
                    out.push(t);
                }
            }
            Ok(out)
        })
    }

    /// Uuids of tasks not finished (for restart recovery).
    pub fn active_tasks(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            let t = tx.open_table(ACTIVE)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                out.push(row?.0.value().to_string());
            }
            Ok(out)
        })
    }

    pub fn pending_approvals(&self, project: u64) -> Result<Vec<Approval>> {
        self.read(|tx| {
            let idx = tx.open_table(APPROVAL_PENDING)?;
            let all = tx.open_table(APPROVALS)?;
            pending_of(&idx, &all, project)
        })
    }

    pub fn approval(&self, uuid: &str) -> Result<Option<Approval>> {
        self.read(|tx| get_json(&tx.open_table(APPROVALS)?, uuid))
    }
}

impl Store {
    /// Number of tasks per status.
    pub fn task_status_counts(&self) -> Result<Vec<(String, u64)>> {
        self.read(|tx| {
            let t = tx.open_table(STATUS_COUNT)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_string(), v.value()));
            }
            Ok(out)
        })
    }
}
