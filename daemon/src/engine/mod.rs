//! The task engine: creating tasks, one async runner per unfinished task,
//! stop, confirm/retry, approvals, rollback decisions and restart recovery.
//!
//! The store is the single source of truth. API calls change state in one
//! durable transaction and then wake the task's runner, which re-reads the
//! state and acts on it; so a restarted daemon resumes from the same rows.

mod approvals;
mod nodes;
pub mod plan;
mod recovery;
mod rollback;
mod runner;
pub mod state;
mod view;

pub use rollback::check_rollback_allowed;
use rollback::ROLLBACK_WINDOW_MS;

use crate::auth::{Principal, Role};
use crate::error::{Error, Result};
use crate::logs::{Keys, LogWriter};
use crate::model::{
    Action, ApprovalStatus, BatchStatus, Confirm, Decision, Group, Node, Opinion, Subtask, Task,
    TaskBrief, TaskStatus, Waiting,
};
use crate::store::Store;
use event_listener::Event;
use jobx_plugin_api::host::{PluginSet, RunHandle};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

pub struct Engine {
    pub store: Arc<Store>,
    pub plugins: Arc<PluginSet>,
    pub logs: LogWriter,
    pub metrics: crate::metrics::Metrics,
    /// Webhooks: events are queued in the transaction of their change.
    pub notify: Arc<crate::notify::Notifier>,
    max_parallel: usize,
    max_log_bytes: u64,
    data_dir: String,
    slave: String,
    /// Wakes the runner of a task after its state changed.
    wakers: Mutex<HashMap<String, Arc<Event>>>,
    /// Tasks with a stop flag, mirrored from the store so that nodes about
    /// to start can check it without a read transaction.
    stopping: Mutex<std::collections::HashSet<String>>,
    /// Plugin runs in flight, per task (what stop cancels).
    runs: Mutex<HashMap<String, HashMap<u64, RunHandle>>>,
    /// Turns to wait for a log commit on a thread (see `log_wait`).
    log_turns: (async_channel::Sender<()>, async_channel::Receiver<()>),
}

/// Threads that wait for log commits at most (a batch's records before it
/// settles, a task's before its counters are dropped); other waits queue
/// for a turn without a thread. One commit answers every waiting thread.
const LOG_WAITERS: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// What a caller asks for when starting a task.
pub struct NewTask {
    pub project: u64,
    pub jobname: String,
    pub group: Option<String>,
    pub variable: Value,
    pub uuid: Option<String>,
    pub calltype: String,
    /// `_nodebatch_` (job/byname only): a group name or one node, in place of `group`.
    pub nodebatch: Option<String>,
}

impl Engine {
    pub fn new(
        store: Arc<Store>,
        plugins: Arc<PluginSet>,
        cfg: &crate::config::Config,
        slave: String,
    ) -> std::io::Result<Arc<Engine>> {
        let logs = LogWriter::start(store.clone())?;
        Ok(Arc::new(Engine {
            store,
            plugins,
            logs,
            metrics: Default::default(),
            notify: Arc::new(crate::notify::Notifier::new(&cfg.notify, slave.clone())),
            max_parallel: cfg.engine.max_parallel,
            max_log_bytes: cfg.logs.max_bytes_per_step,
            data_dir: cfg.storage.data_dir.display().to_string(),
            slave,
            wakers: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
            stopping: Mutex::new(Default::default()),
            log_turns: turns(LOG_WAITERS),
        }))
    }

    /// Batches of unfinished tasks waiting in WaitConfirm.
    pub fn waiting_batches(&self) -> Result<u64> {
        let mut n = 0;
        for uuid in self.store.active_tasks()? {
            n += self
                .store
                .subtasks(&uuid)?
                .iter()
                .filter(|s| s.waiting())
                .count() as u64;
        }
        Ok(n)
    }

    /// Whether a stop was requested for a task (in-memory mirror of the store).
    pub fn is_stopping(&self, task: &str) -> bool {
        lock(&self.stopping).contains(task)
    }

    /// Wakes a task's runner so it re-reads the store.
    pub fn wake(&self, task: &str) {
        if let Some(ev) = lock(&self.wakers).get(task) {
            ev.notify(usize::MAX);
        }
    }

    /// Resolves job, group, batches and variables into a task and its
    /// batches, storing nothing (also the third-party dry-run).
    pub fn plan(&self, who: &Principal, req: &NewTask) -> Result<(Task, Vec<Subtask>)> {
        let store = &self.store;
        let vars = crate::vars::normalize(Some(&req.variable)).map_err(Error::Bad)?;
        crate::jobs::check_name("jobname", &req.jobname).map_err(Error::Bad)?;
        let job = store.job(req.project, &req.jobname)?.ok_or_else(|| {
            Error::NotFound(format!(
                "jobname: no job {:?} in project {}",
                req.jobname, req.project
            ))
        })?;
        let uuid = match &req.uuid {
            Some(u) if crate::ids::is_deploy(u) => u.clone(),
            Some(u) => {
                return Err(Error::Bad(format!(
                    "uuid: {u:?} must be 12 characters of [A-Za-z0-9] ending in a lowercase letter"
                )))
            }
            None => crate::ids::new_uuid(),
        };
        if store.task(&uuid)?.is_some() {
            return Err(Error::Conflict(format!("uuid: task {uuid} already exists")));
        }
        // Task and batch uuids share the log key space (docs/semantics.md §7).
        if store.subtask(&uuid)?.is_some() {
            return Err(Error::Conflict(format!(
                "uuid: {uuid} is already a batch uuid"
            )));
        }
        let inventory = store.nodes(req.project)?;
        let by_name: BTreeMap<&str, &Node> =
            inventory.iter().map(|n| (n.name.as_str(), n)).collect();
        let (label, batches, strict) = self.resolve_batches(who, req, &vars)?;
        let mut nodes = BTreeMap::new();
        for name in batches.iter().flatten() {
            match by_name.get(name.as_str()) {
                Some(n) => {
                    nodes.insert(name.clone(), (*n).clone());
                }
                None if !strict => {
                    nodes.insert(
                        name.clone(),
                        Node {
                            name: name.clone(),
                            host: None,
                            port: None,
                            user: None,
                            labels: BTreeMap::new(),
                        },
                    );
                }
                None => return Err(Error::Bad(format!("group: node not in project: {name}"))),
            }
        }
        plan::check_step_vars(&job.steps, &vars).map_err(Error::Bad)?;
        let policy = crate::policy::Policy::resolve(&vars, &job.policy, batches.len())
            .map_err(Error::Bad)?;
        let decision = match vars.get("_rollbackVersion_") {
            Some(v) if !v.is_empty() => Decision::Pending,
            _ => Decision::None,
        };
        let now = crate::clock::now_ms();
        let task = Task {
            id: 0,
            projectid: req.project,
            uuid: uuid.clone(),
            name: job.name.clone(),
            group: label,
            user: who.name.clone(),
            slave: self.slave.clone(),
            status: TaskStatus::Init,
            created_ms: now,
            start_ms: None,
            finish_ms: None,
            calltype: req.calltype.clone(),
            reason: String::new(),
            variable: req.variable.clone(),
            vars,
            steps: job.steps,
            nodes,
            batches: batches.len() as u32,
            action: Action::Deploy,
            stopped_by: None,
            decision,
            policy,
        };
        let subs = batches
            .into_iter()
            .enumerate()
            .map(|(i, nodes)| new_subtask(&uuid, i as u32, nodes))
            .collect();
        Ok((task, subs))
    }

    /// The batches of a new task and the label shown as its `group`. The
    /// flag says whether every node must be in the inventory.
    fn resolve_batches(
        &self,
        who: &Principal,
        req: &NewTask,
        vars: &BTreeMap<String, String>,
    ) -> Result<(String, Vec<Vec<String>>, bool)> {
        if let Some(pip) = vars.get("_pip_").filter(|p| !p.trim().is_empty()) {
            let b = crate::batching::parse_list(pip)
                .map_err(|e| Error::Bad(format!("variable._pip_: {e}")))?;
            return Ok(("_pip_".into(), b, true));
        }
        if let Some(nb) = req.nodebatch.as_deref().filter(|p| !p.trim().is_empty()) {
            let nb = nb.trim();
            if let Some(g) = self.store.group_by_name(req.project, nb)? {
                return Ok((
                    g.name.clone(),
                    self.group_batches(who, req.project, &g)?,
                    true,
                ));
            }
            if nb.contains([',', ';']) || nb.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::Bad(format!(
                    "_nodebatch_: {nb:?} is neither a group name nor one node or address"
                )));
            }
            return Ok((nb.to_string(), vec![vec![nb.to_string()]], false));
        }
        let group = req
            .group
            .as_deref()
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .ok_or_else(|| Error::Bad("group: missing (a group name or val=node1,node2)".into()))?;
        if let Some(list) = group.strip_prefix("val=") {
            let nodes: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if nodes.is_empty() {
                return Err(Error::Bad("group: val= names no nodes".into()));
            }
            let b = crate::batching::parse_list(&nodes.join(","))
                .map_err(|e| Error::Bad(format!("group: {e}")))?;
            return Ok((group.to_string(), b, true));
        }
        let g = self
            .store
            .group_by_name(req.project, group)?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "group: no group {group:?} in project {}",
                    req.project
                ))
            })?;
        Ok((
            g.name.clone(),
            self.group_batches(who, req.project, &g)?,
            true,
        ))
    }

    fn group_batches(&self, who: &Principal, project: u64, g: &Group) -> Result<Vec<Vec<String>>> {
        compute_batches(&self.store, who, project, g)
    }

    /// Stores a planned task (409 if its uuid is taken) and starts its runner.
    pub fn create(
        self: &Arc<Self>,
        who: &Principal,
        task: Task,
        subs: Vec<Subtask>,
    ) -> Result<Task> {
        let task = self.store.grouped(insert(&who.name, task, subs))?;
        self.spawn_runner(task.uuid.clone());
        Ok(task)
    }

    /// `create` for async callers: the insert shares a group commit with
    /// other writes, and waiting for it takes no thread.
    pub async fn create_async(
        self: &Arc<Self>,
        who: &Principal,
        task: Task,
        subs: Vec<Subtask>,
    ) -> Result<Task> {
        let task = self
            .store
            .grouped_async(insert(&who.name, task, subs))
            .await?;
        self.spawn_runner(task.uuid.clone());
        Ok(task)
    }

    fn spawn_runner(self: &Arc<Self>, uuid: String) {
        let ev = Arc::new(Event::new());
        lock(&self.wakers).insert(uuid.clone(), ev.clone());
        let me = self.clone();
        async_std::task::spawn(async move {
            runner::run(me.clone(), uuid.clone(), ev).await;
            lock(&me.wakers).remove(&uuid);
            lock(&me.runs).remove(&uuid);
            lock(&me.stopping).remove(&uuid);
            // Forgetting flushes first: the task's last records are stored
            // before its followers are woken.
            let logs = me.logs.clone();
            me.log_wait(move || logs.forget_task(&uuid)).await;
            me.logs.notify();
        });
    }

    /// Runs `f`, which waits for a log commit, on a thread of the blocking
    /// pool, never more than `LOG_WAITERS` at a time.
    pub(crate) async fn log_wait(&self, f: impl FnOnce() + Send + 'static) {
        let (give, take) = &self.log_turns;
        // The channel lives as long as the engine: it cannot be closed here.
        let _ = take.recv().await;
        blocking::unblock(f).await;
        let _ = give.send(()).await;
    }

    /// What each listed task waits for, through the one rule
    /// (`waiting_of`). A finished task without a pending rollback decision
    /// waits for nothing; only the others' rows are read.
    pub fn briefs_waiting(&self, briefs: &[TaskBrief]) -> Result<Vec<Option<Waiting>>> {
        briefs
            .iter()
            .map(|b| {
                if b.waits_for_nothing() {
                    return Ok(None);
                }
                match self.store.task(&b.uuid)? {
                    Some(t) => self.waiting_of(&t),
                    None => Ok(None),
                }
            })
            .collect()
    }

    /// A task of `project`, or 404.
    pub fn task_in(&self, project: u64, uuid: &str) -> Result<Task> {
        check_uuid(uuid)?;
        in_project(self.store.task(uuid)?, project, uuid)
    }

    /// Sticky stop. A finished task is left as it is.
    pub fn stop(&self, project: u64, uuid: &str, who: &Principal) -> Result<()> {
        check_uuid(uuid)?;
        let (id, name) = (uuid.to_string(), who.name.clone());
        let stopped = self.store.grouped(move |tx| {
            let mut t = in_project(tx.task(&id)?, project, &id)?;
            if t.is_finished() || t.stopped_by.is_some() {
                return Ok(false);
            }
            t.stopped_by = Some(name.clone());
            tx.put_task(&t)?;
            tx.oplog(project, &name, "STOP TASK", &format!("task {id}"))?;
            Ok(true)
        })?;
        if stopped {
            self.logs.append(
                &Keys::task(uuid),
                "",
                "info",
                &format!("stopped by {}", who.name),
            );
            lock(&self.stopping).insert(uuid.to_string());
            let handles: Vec<RunHandle> = lock(&self.runs)
                .get(uuid)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            for h in handles {
                h.cancel();
            }
            self.wake(uuid);
        }
        Ok(())
    }

    /// Confirm (`continue`) or `retry` a batch waiting in WaitConfirm.
    pub fn confirm(
        &self,
        project: u64,
        sub_uuid: &str,
        who: &Principal,
        retry: bool,
    ) -> Result<()> {
        if !crate::ids::is_uuid(sub_uuid) {
            return Err(Error::Bad(format!(
                "uuid: {sub_uuid:?} is not a batch uuid"
            )));
        }
        let (sid, name) = (sub_uuid.to_string(), who.name.clone());
        let task_uuid = self.store.grouped(move |tx| {
            let sub_uuid = sid.as_str();
            let mut s = tx
                .subtask(sub_uuid)?
                .ok_or_else(|| Error::NotFound(format!("no batch {sub_uuid}")))?;
            let t = tx
                .task(&s.parent_uuid)?
                .filter(|t| t.projectid == project)
                .ok_or_else(|| {
                    Error::NotFound(format!("no batch {sub_uuid} in project {project}"))
                })?;
            if !s.waiting() || t.is_finished() || t.stopped_by.is_some() {
                return Err(Error::Conflict(format!(
                    "batch {sub_uuid} is not waiting for confirmation (status {}, confirm {})",
                    s.status,
                    s.confirm.as_ref().map_or("none".into(), Confirm::text)
                )));
            }
            if retry && s.status == BatchStatus::Success {
                return Err(Error::Conflict(format!(
                    "batch {sub_uuid} passed and waits at a canary gate: continue, or stop the task"
                )));
            }
            if retry {
                s.confirm = Some(Confirm::RetriedBy(name.clone()));
                s.retry = true;
                tx.oplog(
                    project,
                    &name,
                    "RETRY BATCH",
                    &format!("task {} batch {}", t.uuid, s.idx + 1),
                )?;
            } else {
                s.confirm = Some(Confirm::ConfirmedBy(name.clone()));
                tx.oplog(
                    project,
                    &name,
                    "CONFIRM BATCH",
                    &format!("task {} batch {}", t.uuid, s.idx + 1),
                )?;
            }
            tx.put_subtask(&s)?;
            Ok(t.uuid)
        })?;
        let what = if retry { "retried" } else { "confirmed" };
        self.logs.append(
            &Keys::batch(&task_uuid, sub_uuid),
            "",
            "info",
            &format!("{what} by {}", who.name),
        );
        self.wake(&task_uuid);
        Ok(())
    }

    /// An approver's opinion on a pending approval.
    pub fn decide(
        &self,
        project: u64,
        uuid: &str,
        who: &Principal,
        opinion: Opinion,
    ) -> Result<()> {
        if !crate::ids::is_uuid(uuid) {
            return Err(Error::Bad(format!(
                "uuid: {uuid:?} is not an approval uuid"
            )));
        }
        let task = self.store.tx(|tx| {
            let mut a = tx
                .approval(uuid)?
                .filter(|a| a.projectid == project)
                .ok_or_else(|| {
                    Error::NotFound(format!("no approval {uuid} in project {project}"))
                })?;
            let listed = a.approvers.iter().any(|n| n == &who.name);
            if !listed && !who.may(project, Role::Admin) {
                return Err(Error::Forbidden(format!(
                    "{} is not an approver of this step (approvers: {})",
                    who.name,
                    a.approvers.join(", ")
                )));
            }
            if a.status != ApprovalStatus::Pending {
                return Err(Error::Conflict(format!(
                    "approval {uuid} is already decided: {}",
                    a.status
                )));
            }
            a.opinions.insert(who.name.clone(), opinion);
            a.status = state::approval_status(&a);
            tx.put_approval(&a)?;
            tx.oplog(
                project,
                &who.name,
                "APPROVAL",
                &format!("task {} approval {uuid} {opinion}", a.taskuuid),
            )?;
            Ok((a.taskuuid, a.subtaskuuid))
        })?;
        let (task, sub) = task;
        let what = match opinion {
            Opinion::Agree => "agreed",
            Opinion::Refuse => "refused",
        };
        self.logs.append(
            &Keys::batch(&task, &sub),
            "",
            "info",
            &format!("{what} by {}", who.name),
        );
        self.wake(&task);
        Ok(())
    }
}

/// The write that stores a new task, its batches and its `START TASK`
/// entry (it may run again in a later group, see `Store::grouped`).
fn insert(
    user: &str,
    task: Task,
    subs: Vec<Subtask>,
) -> impl FnMut(&crate::store::Tx) -> Result<Task> + Send + 'static {
    let user = user.to_string();
    move |tx| {
        let (mut task, mut subs) = (task.clone(), subs.clone());
        tx.insert_task(&mut task, &mut subs)?;
        tx.oplog(
            task.projectid,
            &user,
            "START TASK",
            &format!("task {} job {}", task.uuid, task.name),
        )?;
        Ok(task)
    }
}

/// `n` turns: a bounded channel holding `n` tokens.
fn turns(n: usize) -> (async_channel::Sender<()>, async_channel::Receiver<()>) {
    let (give, take) = async_channel::bounded(n);
    for _ in 0..n {
        let _ = give.try_send(());
    }
    (give, take)
}

fn check_uuid(uuid: &str) -> Result<()> {
    if crate::ids::is_uuid(uuid) {
        Ok(())
    } else {
        Err(Error::Bad(format!("uuid: {uuid:?} is not a task uuid")))
    }
}

/// The task if it belongs to `project`; another project's task is not found.
fn in_project(t: Option<Task>, project: u64, uuid: &str) -> Result<Task> {
    t.filter(|t| t.projectid == project)
        .ok_or_else(|| Error::NotFound(format!("no task {uuid} in project {project}")))
}

fn new_subtask(task: &str, idx: u32, nodes: Vec<String>) -> Subtask {
    Subtask {
        id: 0,
        parent_uuid: task.to_string(),
        uuid: crate::ids::new_uuid(),
        idx,
        nodes,
        status: BatchStatus::Init,
        confirm: None,
        start_ms: None,
        finish_ms: None,
        reason: String::new(),
        failed_step: None,
        failed_nodes: Vec::new(),
        retry: false,
    }
}

/// Batches of a group computed from the current inventories. Other projects
/// named by a selection rule are read only if the caller may read them too.
pub fn compute_batches(
    store: &Store,
    who: &Principal,
    pid: u64,
    g: &Group,
) -> Result<Vec<Vec<String>>> {
    let ty = crate::batching::GroupType::parse(&g.group_type)
        .ok_or_else(|| Error::Internal(format!("stored group {} has a bad type", g.id)))?;
    let rule = crate::batching::parse(ty, &g.text)
        .map_err(|e| Error::Bad(format!("group {}: {e}", g.name)))?;
    let mut others = BTreeMap::new();
    for other in rule.referenced_projects() {
        if other != pid && !who.may(other, Role::Read) {
            return Err(Error::Forbidden(format!(
                "group {} reads project {other}, which token {:?} may not read",
                g.name, who.name
            )));
        }
        others.insert(other, store.node_names(other)?);
    }
    let Some(sel) = crate::labels::Selector::parse_opt(&g.labels)
        .map_err(|e| Error::Internal(format!("stored group {}: labels: {e}", g.id)))?
    else {
        let inventory = store.node_names(pid)?;
        return rule
            .batches(&inventory, &|p| others.get(&p).cloned().unwrap_or_default())
            .map_err(|e| Error::Bad(format!("group {}: {e}", g.name)));
    };
    // The selector picks from the inventory before the batching rule runs;
    // list groups keep their named nodes that match (and those not in the
    // inventory, which the task then refuses by name).
    let all = store.nodes(pid)?;
    let matched: Vec<String> = all
        .iter()
        .filter(|n| sel.matches(&n.labels))
        .map(|n| n.name.clone())
        .collect();
    let batches = rule
        .batches(&matched, &|p| others.get(&p).cloned().unwrap_or_default())
        .map_err(|e| Error::Bad(format!("group {}: {e}", g.name)))?;
    if ty != crate::batching::GroupType::List {
        return Ok(batches);
    }
    let by_name: BTreeMap<&str, &Node> = all.iter().map(|n| (n.name.as_str(), n)).collect();
    Ok(batches
        .into_iter()
        .map(|b| {
            b.into_iter()
                .filter(|n| {
                    by_name
                        .get(n.as_str())
                        .is_none_or(|node| sel.matches(&node.labels))
                })
                .collect::<Vec<_>>()
        })
        .filter(|b| !b.is_empty())
        .collect())
}
