//! Tasks, subtasks and approvals.
//!
//! Indexes are tables of their own, written in the same transaction as the
//! row they index: tasks by (project, id) for listing, by (project, created
//! time, id) for statistics, the set of unfinished tasks for recovery,
//! subtasks by (task, position), and pending approvals by project.
//!
//! Each task has a brief beside it (`task_briefs`, by (project, id)): its
//! list row without the job and node snapshots, written in the same
//! transaction as the task row. Listing and statistics read only briefs.

use super::briefs;
use super::*;
use crate::model::{Approval, BriefView, Subtask, Task, TaskBrief, TaskStatus};

pub(super) const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
pub(super) const TASK_INDEX: TableDefinition<(u64, u64), &str> = TableDefinition::new("task_index");
pub(super) const TASK_TIME: TableDefinition<(u64, i64, u64), &str> =
    TableDefinition::new("task_time");
/// (project, task id) → the task's brief (`briefs.rs`).
pub(super) const TASK_BRIEFS: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("task_briefs");
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
    tx.open_table(TASK_BRIEFS)?;
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
        let mut briefs = self.0.open_table(TASK_BRIEFS)?;
        // The old status from the brief: the task row is not decoded.
        let known = briefs
            .get((t.projectid, t.id))?
            .and_then(|v| briefs::decode(v.value()));
        let old = match known {
            Some(b) => Some(b.status),
            None => self.task(&t.uuid)?.map(|o| o.status),
        };
        briefs.insert((t.projectid, t.id), briefs::encode(&t.brief()).as_slice())?;
        drop(briefs);
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
        self.matches_fields(&t.name, &t.user, t.status, &t.uuid, t.created_ms)
    }

    pub fn matches_view(&self, t: &BriefView<'_>) -> bool {
        self.matches_fields(t.name, t.user, t.status, t.uuid, t.created_ms)
    }

    fn matches_fields(
        &self,
        name: &str,
        user: &str,
        status: TaskStatus,
        uuid: &str,
        created_ms: i64,
    ) -> bool {
        self.name.as_ref().is_none_or(|n| name.contains(n.as_str()))
            && self.user.as_ref().is_none_or(|u| user == u)
            && self.status.is_none_or(|s| status == s)
            && self.taskuuid.as_ref().is_none_or(|u| uuid == u)
            && self.from_ms.is_none_or(|f| created_ms >= f)
            && self.to_ms.is_none_or(|e| created_ms < e)
    }
}

/// A page of the task list, newest first (`Store::task_page`).
pub struct TaskPage {
    /// The rows written so far, one after the other.
    pub bytes: Vec<u8>,
    pub rows: Vec<PageRow>,
}

pub enum PageRow {
    /// A row in `TaskPage::bytes`.
    Written(std::ops::Range<usize>),
    /// A task that may wait for something: its row is not written yet.
    Waits(TaskBrief),
}

/// Tasks whose briefs one backfill transaction writes at most.
const BACKFILL_BATCH: usize = 1000;
/// The `meta` counter holding the form of the stored briefs.
const BRIEF_FORM: &str = "task_brief_form";

fn damaged((project, id): (u64, u64)) -> Error {
    Error::Internal(format!(
        "the brief of task {id} in project {project} cannot be read"
    ))
}

/// The brief of task `id`, from either kind of transaction.
pub(super) fn brief_at(
    briefs: &impl ReadableTable<(u64, u64), &'static [u8]>,
    project: u64,
    id: u64,
) -> Result<Option<TaskBrief>> {
    match briefs.get((project, id))? {
        Some(v) => briefs::decode(v.value())
            .map(Some)
            .ok_or_else(|| damaged((project, id))),
        None => Ok(None),
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

    /// A task and its batches, read in one snapshot.
    pub fn task_with_subtasks(&self, uuid: &str) -> Result<Option<(Task, Vec<Subtask>)>> {
        self.read(|tx| {
            let Some(t) = get_json::<_, Task>(&tx.open_table(TASKS)?, uuid)? else {
                return Ok(None);
            };
            let idx = tx.open_table(SUBTASK_INDEX)?;
            let subs = tx.open_table(SUBTASKS)?;
            Ok(Some((t, subtasks_of(&idx, &subs, uuid)?)))
        })
    }

    /// The briefs of a project's tasks, newest first, filtered (see `scan`).
    pub fn tasks(&self, project: u64, f: &TaskFilter) -> Result<Vec<TaskBrief>> {
        let mut out = Vec::new();
        self.scan(project, f, |b| {
            out.push(b.to_brief());
            Ok(())
        })?;
        Ok(out)
    }

    /// A page of a project's task list, newest first, filtered: the rows
    /// of tasks that wait for nothing are written out as they are read
    /// (their texts are never copied out of the store's pages); the others
    /// come back as briefs, for the caller to learn what they wait for.
    pub fn task_page(&self, project: u64, f: &TaskFilter, now: i64) -> Result<TaskPage> {
        let mut page = TaskPage {
            bytes: Vec::with_capacity(f.limit.min(1000) * 700),
            rows: Vec::with_capacity(f.limit.min(10_000)),
        };
        self.scan(project, f, |b| {
            if b.waits_for_nothing() {
                let start = page.bytes.len();
                b.write_row(None, now, &mut page.bytes);
                page.rows.push(PageRow::Written(start..page.bytes.len()));
            } else {
                page.rows.push(PageRow::Waits(b.to_brief()));
            }
            Ok(())
        })?;
        Ok(page)
    }

    /// Visits the briefs of a project's tasks, newest first, that match
    /// `f`, at most `f.limit` of them. With a time filter the time index
    /// bounds the scan (order: creation time, which follows ids). Memory
    /// stays bounded by the limit however many match.
    fn scan(
        &self,
        project: u64,
        f: &TaskFilter,
        mut visit: impl FnMut(BriefView<'_>) -> Result<()>,
    ) -> Result<()> {
        self.read(|tx| {
            let briefs = tx.open_table(TASK_BRIEFS)?;
            let hi = f.before_id.map(|b| b.saturating_sub(1)).unwrap_or(u64::MAX);
            let mut n = 0;
            if f.limit == 0 {
                return Ok(());
            }
            if f.from_ms.is_some() || f.to_ms.is_some() {
                let lo = f.from_ms.unwrap_or(i64::MIN);
                let to = f.to_ms.unwrap_or(i64::MAX);
                let idx = tx.open_table(TASK_TIME)?;
                for row in idx.range((project, lo, 0)..(project, to, 0))?.rev() {
                    let (k, _) = row?;
                    let id = k.value().2;
                    if id > hi {
                        continue;
                    }
                    let Some(v) = briefs.get((project, id))? else {
                        continue;
                    };
                    let b = briefs::decode_view(v.value()).ok_or_else(|| damaged((project, id)))?;
                    if f.matches_view(&b) {
                        visit(b)?;
                        n += 1;
                        if n >= f.limit {
                            break;
                        }
                    }
                }
            } else {
                for row in briefs.range((project, 0)..=(project, hi))?.rev() {
                    let (k, v) = row?;
                    let b = briefs::decode_view(v.value()).ok_or_else(|| damaged(k.value()))?;
                    if f.matches_view(&b) {
                        visit(b)?;
                        n += 1;
                        if n >= f.limit {
                            break;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Tasks of a project created in `[from, to)`, oldest first, read as
    /// `T` from their briefs (a `TaskSummary`).
    pub fn tasks_between<T: for<'b> From<&'b TaskBrief>>(
        &self,
        project: u64,
        from: i64,
        to: i64,
    ) -> Result<Vec<T>> {
        self.read(|tx| {
            let idx = tx.open_table(TASK_TIME)?;
            let briefs = tx.open_table(TASK_BRIEFS)?;
            let mut out = Vec::new();
            for row in idx.range((project, from, 0)..(project, to, 0))? {
                let (k, _) = row?;
                if let Some(b) = brief_at(&briefs, project, k.value().2)? {
                    out.push(T::from(&b));
                }
            }
            Ok(out)
        })
    }

    /// Writes the briefs of tasks stored without one in this build's form
    /// (a store written before briefs existed), in transactions of
    /// `BACKFILL_BATCH` tasks. Cheap when nothing is missing: the form is
    /// recorded in `meta` and the two tables' lengths are equal.
    pub(super) fn backfill_briefs(&self) -> Result<()> {
        use redb::ReadableTableMetadata;
        let (form, tasks, briefs) = self.read(|tx| {
            let form = tx.open_table(META)?.get(BRIEF_FORM)?.map(|v| v.value());
            Ok((
                form,
                tx.open_table(TASKS)?.len()?,
                tx.open_table(TASK_BRIEFS)?.len()?,
            ))
        })?;
        if form == Some(briefs::FORM) && tasks == briefs {
            return Ok(());
        }
        if tasks == 0 {
            // A new store: nothing to write but its form.
            return self.write(|tx| {
                tx.open_table(META)?.insert(BRIEF_FORM, briefs::FORM)?;
                Ok(())
            });
        }
        log::info!("store: writing the list rows (briefs) of stored tasks");
        let mut after: Option<String> = None;
        let mut written = 0u64;
        loop {
            let from = after.clone();
            let last = self.write(|tx| {
                let tasks = tx.open_table(TASKS)?;
                let mut briefs = tx.open_table(TASK_BRIEFS)?;
                let mut range = match &from {
                    Some(u) => tasks.range::<&str>((
                        std::ops::Bound::Excluded(u.as_str()),
                        std::ops::Bound::Unbounded,
                    ))?,
                    None => tasks.range::<&str>(..)?,
                };
                let mut last = None;
                for _ in 0..BACKFILL_BATCH {
                    let Some(row) = range.next() else { break };
                    let (k, v) = row?;
                    let t: Task = from_json(v.value())?;
                    let current = briefs
                        .get((t.projectid, t.id))?
                        .is_some_and(|b| briefs::decode(b.value()).is_some());
                    if !current {
                        briefs
                            .insert((t.projectid, t.id), briefs::encode(&t.brief()).as_slice())?;
                        written += 1;
                    }
                    last = Some(k.value().to_string());
                }
                if last.is_none() {
                    tx.open_table(META)?.insert(BRIEF_FORM, briefs::FORM)?;
                }
                Ok(last)
            })?;
            match last {
                Some(u) => after = Some(u),
                None => break,
            }
        }
        log::info!("store: wrote {written} task briefs");
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, BatchStatus, Decision};
    use std::sync::Arc;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("jobx-tasks-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn task(project: u64, uuid: &str, name: &str) -> Task {
        Task {
            id: 0,
            projectid: project,
            uuid: uuid.into(),
            name: name.into(),
            group: "val=n1".into(),
            user: "alice".into(),
            slave: "s".into(),
            status: TaskStatus::Success,
            created_ms: 1_000,
            start_ms: Some(1_001),
            finish_ms: Some(2_000),
            calltype: "api".into(),
            reason: String::new(),
            variable: serde_json::json!({"version": "1"}),
            vars: Default::default(),
            steps: Vec::new(),
            nodes: Default::default(),
            batches: 1,
            action: Action::Deploy,
            stopped_by: None,
            decision: Decision::None,
            policy: Default::default(),
        }
    }

    fn batch(task: &str, uuid: &str) -> Subtask {
        Subtask {
            id: 0,
            parent_uuid: task.into(),
            uuid: uuid.into(),
            idx: 0,
            nodes: vec!["n1".into()],
            status: BatchStatus::Success,
            confirm: None,
            start_ms: None,
            finish_ms: None,
            reason: String::new(),
            failed_step: None,
            failed_nodes: Vec::new(),
            retry: false,
        }
    }

    /// Writes tasks the way the store did before briefs: the task rows and
    /// their indexes, no brief.
    fn write_old_rows(s: &Store, tasks: impl Iterator<Item = Task>) {
        s.write(|tx| {
            for mut t in tasks {
                t.id = next_id(tx, "task")?;
                tx.open_table(TASKS)?
                    .insert(t.uuid.as_str(), to_json(&t)?.as_slice())?;
                tx.open_table(TASK_INDEX)?
                    .insert((t.projectid, t.id), t.uuid.as_str())?;
                tx.open_table(TASK_TIME)?
                    .insert((t.projectid, t.created_ms, t.id), t.uuid.as_str())?;
            }
            Ok(())
        })
        .expect("old rows");
    }

    #[test]
    fn a_store_written_before_briefs_gets_them_at_open() {
        let dir = temp_dir("backfill");
        let s = Store::open(&dir).expect("open");
        // More than one backfill transaction's worth.
        let n = BACKFILL_BATCH + 5;
        write_old_rows(
            &s,
            (0..n).map(|i| task(4, &format!("Task{i:07}x"), &format!("job{i}"))),
        );
        let all = TaskFilter {
            limit: 10_000,
            ..Default::default()
        };
        assert!(s.tasks(4, &all).expect("list").is_empty(), "no briefs yet");
        drop(s);
        let s = Store::open(&dir).expect("reopen");
        let listed = s.tasks(4, &all).expect("list");
        assert_eq!(listed.len(), n);
        // Newest first, each brief the one of its task row.
        assert_eq!(listed[0].id, n as u64);
        let row = s.task(&listed[0].uuid).expect("read").expect("task");
        assert_eq!(listed[0], row.brief());
        let between: Vec<crate::model::TaskSummary> =
            s.tasks_between(4, 0, i64::MAX).expect("between");
        assert_eq!(between.len(), n);
        // Briefs in another form (an earlier build's) are written again.
        s.write(|tx| {
            tx.open_table(TASK_BRIEFS)?
                .insert((4, 1), br#"{"id":1}"#.as_slice())?;
            tx.open_table(META)?.remove(BRIEF_FORM)?;
            Ok(())
        })
        .expect("foreign brief");
        assert!(s.tasks(4, &all).is_err(), "a damaged brief is an error");
        drop(s);
        let s = Store::open(&dir).expect("reopen");
        assert_eq!(s.tasks(4, &all).expect("list").len(), n);
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn briefs_follow_their_task_and_filter_as_tasks_did() {
        let dir = temp_dir("briefs");
        let s = Store::open(&dir).expect("open");
        for (i, name) in ["web", "db", "web-canary"].iter().enumerate() {
            let mut t = task(5, &format!("Brief{i:06}x"), name);
            t.status = TaskStatus::Init;
            let mut subs = vec![batch(&t.uuid, &format!("Batch{i:06}x"))];
            s.tx(|tx| tx.insert_task(&mut t, &mut subs))
                .expect("insert");
        }
        let f = |name: Option<&str>, status: Option<TaskStatus>| TaskFilter {
            name: name.map(String::from),
            status,
            limit: 10,
            ..Default::default()
        };
        let names = |v: Vec<TaskBrief>| v.into_iter().map(|b| b.name).collect::<Vec<_>>();
        assert_eq!(
            names(s.tasks(5, &f(Some("web"), None)).expect("list")),
            ["web-canary", "web"]
        );
        // A change of the task shows in its brief, in the same commit.
        s.tx(|tx| {
            let mut t = tx.task("Brief000001x")?.expect("db");
            t.status = TaskStatus::Fail;
            t.reason = "exit 1".into();
            tx.put_task(&t)
        })
        .expect("update");
        let failed = s.tasks(5, &f(None, Some(TaskStatus::Fail))).expect("list");
        assert_eq!(names(failed.clone()), ["db"]);
        assert!(failed[0].members.contains(r#""reason":"exit 1""#));
        let counts: std::collections::BTreeMap<String, u64> = s
            .task_status_counts()
            .expect("counts")
            .into_iter()
            .collect();
        assert_eq!((counts["init"], counts["fail"]), (2, 1));
        // Another project's tasks are not listed.
        assert!(s.tasks(6, &f(None, None)).expect("list").is_empty());
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_page_writes_the_rows_of_tasks_that_wait_for_nothing() {
        let dir = temp_dir("page");
        let s = Store::open(&dir).expect("open");
        for (i, status) in [TaskStatus::Success, TaskStatus::Running, TaskStatus::Fail]
            .into_iter()
            .enumerate()
        {
            let mut t = task(9, &format!("Page{i:07}x"), "job");
            t.status = status;
            t.finish_ms = status.is_final().then_some(2_000);
            s.tx(|tx| tx.insert_task(&mut t, &mut [])).expect("insert");
        }
        let f = TaskFilter {
            limit: 10,
            ..Default::default()
        };
        let page = s.task_page(9, &f, 5_000).expect("page");
        let kinds: Vec<String> = page
            .rows
            .iter()
            .map(|r| match r {
                PageRow::Written(r) => {
                    let v: serde_json::Value =
                        serde_json::from_slice(&page.bytes[r.clone()]).expect("a JSON row");
                    let t = s
                        .task(v["uuid"].as_str().expect("uuid"))
                        .expect("read")
                        .expect("task");
                    assert_eq!(v, t.to_api(None));
                    format!("row {}", v["status"].as_str().unwrap_or(""))
                }
                PageRow::Waits(b) => format!("waits? {}", b.status),
            })
            .collect();
        assert_eq!(kinds, ["row fail", "waits? running", "row success"]);
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failing_write_in_a_group_leaves_nothing_and_the_others_commit() {
        let dir = temp_dir("group");
        let s = Arc::new(Store::open(&dir).expect("open"));
        let threads: Vec<_> = (0..40)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let uuid = format!("Group{i:06}x");
                    s.grouped(move |tx| {
                        let mut t = task(7, &uuid, "job");
                        let mut subs = vec![batch(&uuid, &format!("Gbat{i:07}x"))];
                        tx.insert_task(&mut t, &mut subs)?;
                        if i % 7 == 3 {
                            // Fails after writing: none of it may stay.
                            return Err(Error::Conflict(format!("refused {i}")));
                        }
                        Ok(t.id)
                    })
                })
            })
            .collect();
        let mut ids = Vec::new();
        for (i, h) in threads.into_iter().enumerate() {
            match h.join().expect("thread") {
                Ok(id) => ids.push(id),
                Err(e) => {
                    assert_eq!(i % 7, 3, "only the refused fail: {e}");
                    assert_eq!(e, Error::Conflict(format!("refused {i}")));
                }
            }
        }
        assert_eq!(ids.len(), 40 - 6);
        let all = TaskFilter {
            limit: 100,
            ..Default::default()
        };
        let listed = s.tasks(7, &all).expect("list");
        assert_eq!(listed.len(), ids.len());
        for i in 0..40 {
            let stored = s.task(&format!("Group{i:06}x")).expect("read");
            assert_eq!(stored.is_some(), i % 7 != 3, "task {i}");
            let sub = s.subtask(&format!("Gbat{i:07}x")).expect("read");
            assert_eq!(sub.is_some(), i % 7 != 3, "batch {i}");
        }
        // Answers come after the commit: what was acknowledged is there.
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 40 - 6, "every acknowledged task has its own id");
        drop(listed);
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_group_write_is_durable_across_a_reopen() {
        let dir = temp_dir("durable");
        let s = Store::open(&dir).expect("open");
        let id = async_std::task::block_on(s.grouped_async(|tx| {
            let mut t = task(8, "Durable0001x", "job");
            tx.insert_task(&mut t, &mut [])?;
            Ok(t.id)
        }))
        .expect("write");
        drop(s);
        let s = Store::open(&dir).expect("reopen");
        let t = s.task("Durable0001x").expect("read").expect("stored");
        assert_eq!(t.id, id);
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
