//! The runner of one task: batches in order, steps in order, the nodes of
//! a step in parallel (bounded), waiting for people where the task must.
//! It holds no state of its own that matters: after every change it writes
//! the store, and after every wake-up it re-reads it.

use super::state::{self, RunEnd, SettleCtx};
use super::{lock, plan, Engine};
use crate::error::Result;
use crate::logs::Keys;
use crate::model::{
    Approval, ApprovalStatus, BatchStatus, Decision, Opinion, Step, Subtask, Task, TaskStatus,
};
use crate::notify::Kind;
use crate::policy::{NodeOutcome, Verdict};
use event_listener::Event;
use futures_lite::FutureExt;
use jobx_plugin_api::host::RunSink;
use jobx_plugin_api::{StepKind, StepRequest, StepResult, Stream};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Grace the host allows past a step's own timeout before it cancels the
/// run itself (the plugin is expected to enforce the timeout first).
const HOST_GRACE: Duration = Duration::from_secs(30);

pub async fn run(e: Arc<Engine>, uuid: String, wake: Arc<Event>) {
    if let Err(err) = drive(&e, &uuid, &wake).await {
        log::error!("task {uuid}: runner stopped: {err}");
    }
}

async fn blocking<T: Send + 'static>(
    e: &Arc<Engine>,
    f: impl FnOnce(&Engine) -> Result<T> + Send + 'static,
) -> Result<T> {
    let e = e.clone();
    blocking::unblock(move || f(&e)).await
}

fn load(e: &Engine, uuid: &str) -> Result<(Task, Vec<Subtask>)> {
    e.store.tx(|tx| {
        let t = tx
            .task(uuid)?
            .ok_or_else(|| crate::error::Error::Internal(format!("task {uuid} vanished")))?;
        Ok((t, tx.subtasks(uuid)?))
    })
}

enum Next {
    Run(Box<Subtask>),
    Wait,
    Finish,
}

async fn drive(e: &Arc<Engine>, uuid: &str, wake: &Event) -> Result<()> {
    let id = uuid.to_string();
    blocking(e, move |e| {
        e.store.tx(|tx| {
            if let Some(mut t) = tx.task(&id)? {
                if t.status == TaskStatus::Init {
                    t.status = TaskStatus::Running;
                    t.start_ms = Some(crate::clock::now_ms());
                    tx.put_task(&t)?;
                }
            }
            Ok(())
        })
    })
    .await?;
    loop {
        // Listen before reading, so a change between the read and the wait is not missed.
        let listener = wake.listen();
        let id = uuid.to_string();
        let (task, subs) = blocking(e, move |e| load(e, &id)).await?;
        if task.is_finished() {
            return Ok(());
        }
        match next_step(&task, &subs) {
            Next::Finish => {
                let id = uuid.to_string();
                blocking(e, move |e| finish(e, &id)).await?;
                return Ok(());
            }
            Next::Wait => listener.await,
            Next::Run(sub) => {
                if let Some(ms) = pacing(&task, &subs, &sub) {
                    e.logs.append(
                        &Keys::batch(&task.uuid, &sub.uuid),
                        "",
                        "info",
                        &format!(
                            "batch {}/{} starts in {:.1} s (_batch_wait_={})",
                            sub.idx + 1,
                            task.batches,
                            ms as f64 / 1000.0,
                            task.policy.batch_wait
                        ),
                    );
                    // A stop (or any change) wakes the listener and ends the wait.
                    listener
                        .or(async {
                            async_io::Timer::after(Duration::from_millis(ms)).await;
                        })
                        .await;
                    continue;
                }
                prepare_next(e, &task, &subs, &sub);
                run_batch(e, &task, *sub).await?
            }
        }
    }
}

/// "Prepare these nodes": as batch `sub` starts, hands the nodes of the
/// next batch to each plugin its steps will use (once per plugin type), so
/// that slow set-up such as opening ssh connections overlaps this batch.
/// Never waits for the plugins; an error is only worth a debug line.
fn prepare_next(e: &Engine, task: &Task, subs: &[Subtask], sub: &Subtask) {
    let Some(next) = subs
        .iter()
        .find(|s| s.idx == sub.idx + 1 && s.status == BatchStatus::Init)
    else {
        return;
    };
    let mut asked = std::collections::BTreeSet::new();
    for step in &task.steps {
        if !plan::step_applies(step, task.action, next.idx, task.batches)
            || !e.plugins.can_prepare(&step.plugin)
            || !asked.insert(step.plugin.as_str())
        {
            continue;
        }
        let req = jobx_plugin_api::PrepareRequest {
            task: task.uuid.clone(),
            plugin: step.plugin.clone(),
            batch: next.idx + 1,
            batches: task.batches,
            nodes: next.nodes.iter().map(|n| plugin_node(task, n)).collect(),
            user: step.user.clone(),
            data_dir: e.data_dir.clone(),
        };
        if let Err(msg) = e.plugins.prepare(&req) {
            log::debug!(
                "task {}: plugin {} could not prepare batch {}: {msg}",
                task.uuid,
                step.plugin,
                next.idx + 1
            );
        }
    }
}

/// Milliseconds batch `sub` must still wait under `_batch_wait_` (not on a retry).
fn pacing(task: &Task, subs: &[Subtask], sub: &Subtask) -> Option<u64> {
    if sub.retry || sub.status != BatchStatus::Init {
        return None;
    }
    let prev = subs.iter().find(|s| s.idx + 1 == sub.idx)?;
    task.policy
        .wait_before(sub.idx, prev.finish_ms, crate::clock::now_ms())
}

/// What the task does next, from its stored state.
fn next_step(task: &Task, subs: &[Subtask]) -> Next {
    if task.stopped_by.is_some() {
        return Next::Finish;
    }
    for s in subs {
        if state::batch_settled(s) {
            continue;
        }
        return match s.status {
            BatchStatus::Init => Next::Run(Box::new(s.clone())),
            BatchStatus::Refuse => Next::Finish,
            BatchStatus::Fail if s.retry => Next::Run(Box::new(s.clone())),
            BatchStatus::Fail if s.waiting() => Next::Wait,
            // A failed batch that does not wait (`_exit_`) ends the task.
            BatchStatus::Fail => Next::Finish,
            // Running batches belong to this runner; seeing one here means it
            // was interrupted, which recovery turns into a failure.
            _ => Next::Wait,
        };
    }
    Next::Finish
}

/// Ends the task: batches not started become `cancel`, a waiting batch is
/// released with "task stop", and the task gets its final status.
fn finish(e: &Engine, uuid: &str) -> Result<()> {
    e.logs.flush();
    let t = e.store.tx(|tx| {
        let Some(mut t) = tx.task(uuid)? else {
            return Ok(None);
        };
        let mut subs = tx.subtasks(uuid)?;
        let now = crate::clock::now_ms();
        let end = state::finish(&mut subs, t.stopped_by.as_deref(), t.decision, now);
        for &i in &end.changed {
            tx.put_subtask(&subs[i])?;
        }
        t.status = end.status;
        t.finish_ms = Some(now);
        t.reason = end.reason;
        t.decision = end.decision;
        tx.put_task(&t)?;
        e.notify.emit(tx, Kind::Finished, &t, None, None)?;
        if t.decision == Decision::Pending {
            e.notify.emit(tx, Kind::RollbackDecision, &t, None, None)?;
        }
        Ok(Some(t))
    })?;
    e.notify.kick();
    if let Some(t) = t {
        let mut text = format!("task finished: {}", t.status);
        if !t.reason.is_empty() {
            text.push_str(&format!(" ({})", t.reason));
        }
        if t.decision == Decision::Pending {
            text.push_str("; waits for a rollback decision (rollback or norollback)");
        }
        e.logs.append(&Keys::task(uuid), "", "info", &text);
        e.logs.flush();
    }
    e.logs.notify();
    log::info!("task {uuid} finished");
    Ok(())
}

/// Outcome of one step over the batch's nodes.
struct StepOutcome {
    failed: Vec<String>,
    refused: bool,
    reason: String,
}

async fn run_batch(e: &Arc<Engine>, task: &Task, mut sub: Subtask) -> Result<()> {
    let retry = sub.retry;
    let from = if retry {
        sub.failed_step.unwrap_or(0)
    } else {
        0
    };
    let retry_nodes = sub.failed_nodes.clone();
    sub.status = BatchStatus::Running;
    sub.retry = false;
    sub.reason.clear();
    sub.finish_ms = None;
    if !retry {
        sub.confirm = None;
    }
    if sub.start_ms.is_none() {
        sub.start_ms = Some(crate::clock::now_ms());
    }
    let s2 = sub.clone();
    blocking(e, move |e| e.store.tx(|tx| tx.put_subtask(&s2))).await?;
    let batch_keys = Keys::batch(&task.uuid, &sub.uuid);
    e.logs.append(
        &batch_keys,
        "",
        "info",
        &format!(
            "batch {}/{}{}: {}",
            sub.idx + 1,
            task.batches,
            if retry { " (retry)" } else { "" },
            sub.nodes.join(",")
        ),
    );
    let mut outcome = StepOutcome {
        failed: Vec::new(),
        refused: false,
        reason: String::new(),
    };
    let mut failed_at = None;
    let policy = &task.policy;
    // Failed nodes of earlier batches count against `_tolerate_total_`.
    let before = if policy.tolerate_total.is_some() {
        let (tid, idx) = (task.uuid.clone(), sub.idx);
        blocking(e, move |e| {
            Ok(crate::policy::failed_before(&e.store.subtasks(&tid)?, idx))
        })
        .await?
    } else {
        0
    };
    // Nodes that failed in this batch and were tolerated sit out its later steps.
    let mut batch_failed: Vec<String> = Vec::new();
    // The same nodes as a set: membership checks stay linear in batch size.
    let mut failed_set: std::collections::HashSet<String> = Default::default();
    let mut tolerated: Option<String> = None;
    for (i, step) in task.steps.iter().enumerate().skip(from) {
        let keys = Keys::new(&task.uuid, &sub.uuid, &step.uuid, &step.plugin);
        if !plan::step_applies(step, task.action, sub.idx, task.batches) {
            e.logs.append(
                &keys,
                "",
                "info",
                &format!(
                    "step {:?} skipped (filter action={} batches={})",
                    step.name, step.action, step.batches
                ),
            );
            continue;
        }
        if e.is_stopping(&task.uuid) {
            outcome.reason = "stopped".into();
            failed_at = Some(i);
            outcome.failed = sub.nodes.clone();
            break;
        }
        let nodes: Vec<String> = if retry && i == from {
            retry_nodes.clone()
        } else {
            sub.nodes
                .iter()
                .filter(|n| !failed_set.contains(*n))
                .cloned()
                .collect()
        };
        if nodes.is_empty() && step.plugin != "approval" {
            e.logs
                .append(&keys, "", "info", &format!("step {:?} skipped: no node left", step.name));
            continue;
        }
        e.logs.append(
            &keys,
            "",
            "info",
            &format!(
                "step {:?} ({}) on {}",
                step.name,
                step.plugin,
                nodes.join(",")
            ),
        );
        let o = if step.plugin == "approval" {
            run_approval(e, task, &sub, step, &keys).await?
        } else {
            run_step(e, task, &sub, step, &nodes, &keys).await
        };
        let result = if o.refused {
            "refused".to_string()
        } else if o.failed.is_empty() {
            "success".to_string()
        } else {
            format!("failed on {}", o.failed.join(","))
        };
        e.logs.append(
            &keys,
            "",
            "info",
            &format!("step {:?}: {result}", step.name),
        );
        // Approvals are not node failures: no tolerance applies to them.
        if o.refused || (!o.failed.is_empty() && step.plugin == "approval") {
            outcome = o;
            failed_at = Some(i);
            break;
        }
        if !o.failed.is_empty() {
            batch_failed.extend(o.failed.iter().cloned());
            failed_set.extend(o.failed.iter().cloned());
            let outcomes: Vec<NodeOutcome> = sub
                .nodes
                .iter()
                .map(|n| {
                    if failed_set.contains(n) {
                        NodeOutcome::Failed
                    } else {
                        NodeOutcome::Ok
                    }
                })
                .collect();
            let verdict = crate::policy::settle(policy, &outcomes, task.nodes.len(), before);
            let why = verdict.reason(policy);
            if let Verdict::Failed(_) = verdict {
                outcome = StepOutcome {
                    failed: batch_failed.clone(),
                    refused: false,
                    reason: match why {
                        Some(w) => format!("{}; {w}", o.reason),
                        None => o.reason,
                    },
                };
                failed_at = Some(i);
                break;
            }
            e.logs.append(
                &batch_keys,
                "",
                "info",
                &format!(
                    "batch {}/{}: {}",
                    sub.idx + 1,
                    task.batches,
                    why.clone().unwrap_or_default()
                ),
            );
            tolerated = why;
        }
    }
    let gate = policy.gate_after(sub.idx + 1, task.batches);
    let task_uuid = task.uuid.clone();
    let sub_uuid = sub.uuid.clone();
    let exit = plan::exit_on_failure(&task.vars);
    let batches = task.batches;
    blocking(e, move |e| {
        e.logs.flush();
        let waits = e.store.tx(|tx| {
            let Some(mut s) = tx.subtask(&sub_uuid)? else {
                return Ok(None);
            };
            let t = tx.task(&task_uuid)?;
            let stopped_by = t.as_ref().and_then(|t| t.stopped_by.clone());
            s.finish_ms = Some(crate::clock::now_ms());
            let end = match failed_at {
                None => RunEnd::Passed { gate },
                Some(_) if outcome.refused => RunEnd::Refused,
                Some(_) => RunEnd::Failed,
            };
            let ctx = SettleCtx {
                retry,
                stopped: stopped_by.is_some(),
                exit,
            };
            (s.status, s.confirm) = state::settle(s.confirm.take(), end, ctx);
            match failed_at {
                None => {
                    s.failed_step = None;
                    // Tolerated failures stay listed on the passed batch.
                    s.failed_nodes = batch_failed.clone();
                    s.reason = match (s.waiting(), tolerated.as_deref()) {
                        (true, Some(t)) => format!("canary gate; {t}"),
                        (true, None) => "canary gate".into(),
                        (false, t) => t.unwrap_or_default().to_string(),
                    };
                }
                Some(i) => {
                    s.failed_step = Some(i);
                    s.failed_nodes = outcome.failed.clone();
                    s.reason = match stopped_by {
                        Some(who) if !outcome.refused => format!("stopped by {who}"),
                        _ => outcome.reason.clone(),
                    };
                }
            }
            tx.put_subtask(&s)?;
            if let Some(t) = &t {
                if s.status == BatchStatus::Fail {
                    e.notify.emit(tx, Kind::Failed, t, Some(&s), None)?;
                }
                if s.waiting() {
                    e.notify.emit(tx, Kind::Waiting, t, Some(&s), None)?;
                }
            }
            Ok(s.waiting().then(|| {
                if s.status == BatchStatus::Success {
                    return format!(
                        "batch {}/{} passed; waits at a canary gate (_pause_after_): continue or stop",
                        s.idx + 1,
                        batches
                    );
                }
                format!(
                    "batch {}/{} failed ({}); waits for confirmation: continue, retry or stop",
                    s.idx + 1,
                    batches,
                    s.reason
                )
            }))
        })?;
        e.notify.kick();
        if let Some(text) = waits {
            e.logs.append(&Keys::batch(&task_uuid, &sub_uuid), "", "info", &text);
        }
        // Followers of this batch's logs learn that it ended.
        e.logs.notify();
        Ok(())
    })
    .await
}

/// Collects one run's output into the log and its result into a channel.
struct NodeSink {
    logs: crate::logs::LogWriter,
    keys: Keys,
    node: String,
    cap: u64,
    written: AtomicU64,
    dropped: AtomicU64,
    done: async_channel::Sender<StepResult>,
}

impl RunSink for NodeSink {
    fn line(&self, stream: Stream, text: &[u8]) {
        let n = text.len() as u64 + 1;
        let before = self.written.fetch_add(n, Ordering::Relaxed);
        if before + n > self.cap {
            if self.dropped.fetch_add(n, Ordering::Relaxed) == 0 {
                self.logs.append(
                    &self.keys,
                    &self.node,
                    "info",
                    &format!("[output truncated at {} bytes]", self.cap),
                );
            }
            return;
        }
        let s = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Info => "info",
        };
        self.logs
            .append(&self.keys, &self.node, s, &String::from_utf8_lossy(text));
    }

    fn done(&self, result: StepResult) {
        let _ = self.done.try_send(result);
    }
}

/// A step's executor work with `${…}` resolved from `vars`.
fn step_kind(step: &Step, vars: &BTreeMap<String, String>) -> std::result::Result<StepKind, String> {
    if step.kind.as_deref() == Some("scp") {
        return Ok(StepKind::Scp {
            src: crate::vars::substitute(step.src.as_deref().unwrap_or(""), vars)?,
            dst: crate::vars::substitute(step.dst.as_deref().unwrap_or(""), vars)?,
            chmod: step.chmod.clone(),
            chown: step.chown.clone(),
            delete: step.delete.unwrap_or(false),
        });
    }
    let words = crate::vars::split_args(step.args.as_deref().unwrap_or(""))?;
    let args = words
        .iter()
        .map(|w| crate::vars::substitute(w, vars))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(StepKind::Cmd {
        script: step.script.clone().unwrap_or_default(),
        interpreter: step.interpreter.clone().unwrap_or_else(|| "bash".into()),
        args,
    })
}

/// A step's request, prepared once per step. When the step uses
/// `${JOBX_NODE}`, its work is resolved again per node from `node_vars`.
struct Prepared {
    template: StepRequest,
    node_vars: Option<BTreeMap<String, String>>,
}

/// The request of a step, the same on every node of the batch (variables,
/// arguments and parameters are resolved once per step, not per node).
fn request_template(
    e: &Engine,
    task: &Task,
    sub: &Subtask,
    step: &Step,
) -> std::result::Result<Prepared, String> {
    let vars = plan::context_vars(task, sub);
    let per_node = plan::uses_node(step);
    let kind = if per_node {
        // Checked once here so a bad reference fails the step, not each node.
        let mut probe = vars.clone();
        probe.insert("JOBX_NODE".into(), String::new());
        step_kind(step, &probe)?
    } else {
        step_kind(step, &vars)?
    };
    // A plugin gets only its own parameters (a custom plugin's step fields
    // beyond the common ones), never jobx's internal step record.
    let params = step.extra.clone();
    let template = StepRequest {
        task: task.uuid.clone(),
        subtask: sub.uuid.clone(),
        step: step.uuid.clone(),
        step_name: step.name.clone(),
        plugin: step.plugin.clone(),
        action: task.action.to_string(),
        batch: sub.idx + 1,
        batches: task.batches,
        node: jobx_plugin_api::Node::default(),
        kind,
        user: step.user.clone(),
        env: plan::step_env(task, sub, step),
        timeout_secs: step.timeout,
        params,
        data_dir: e.data_dir.clone(),
    };
    Ok(Prepared {
        template,
        node_vars: per_node.then_some(vars),
    })
}

/// What a plugin is told about `node`, from the task's node snapshot.
fn plugin_node(task: &Task, node: &str) -> jobx_plugin_api::Node {
    let n = task.nodes.get(node);
    jobx_plugin_api::Node {
        name: node.to_string(),
        host: n
            .map(|n| n.address().to_string())
            .unwrap_or_else(|| node.to_string()),
        port: n.and_then(|n| n.port),
        user: n.and_then(|n| n.user.clone()),
        labels: n.map(|n| n.labels.clone()).unwrap_or_default(),
    }
}

/// The step's request for one node of the batch.
fn request_for(p: &Prepared, task: &Task, step: &Step, node: &str) -> StepRequest {
    let mut req = p.template.clone();
    req.node = plugin_node(task, node);
    req.env.insert("JOBX_NODE".into(), node.to_string());
    if let Some(vars) = &p.node_vars {
        let mut vars = vars.clone();
        vars.insert("JOBX_NODE".into(), node.to_string());
        // The template resolved with the same names, so this cannot fail.
        if let Ok(kind) = step_kind(step, &vars) {
            req.kind = kind;
        }
    }
    req
}

/// Runs a step on `nodes`, at most `max_parallel` at once; answers the nodes it failed on.
async fn run_step(
    e: &Arc<Engine>,
    task: &Task,
    sub: &Subtask,
    step: &Step,
    nodes: &[String],
    keys: &Keys,
) -> StepOutcome {
    let template = match request_template(e, task, sub, step) {
        Ok(t) => Arc::new(t),
        Err(msg) => {
            for node in nodes {
                e.logs.append(keys, node, "info", &format!("failed: {msg}"));
            }
            return StepOutcome {
                failed: nodes.to_vec(),
                refused: false,
                reason: format!("step {:?}: {msg}", step.name),
            };
        }
    };
    let permits = async_channel::bounded::<()>(e.max_parallel.max(1));
    for _ in 0..e.max_parallel.max(1) {
        let _ = permits.0.try_send(());
    }
    let failed = Arc::new(Mutex::new(Vec::new()));
    let mut joins = Vec::with_capacity(nodes.len());
    // One shared copy for every node: a task holds its whole node snapshot,
    // and a copy per node would cost memory and time quadratic in batch size.
    let (task, step) = (Arc::new(task.clone()), Arc::new(step.clone()));
    for (i, node) in nodes.iter().enumerate() {
        let (e, task, step, template, keys) = (
            e.clone(),
            task.clone(),
            step.clone(),
            template.clone(),
            keys.clone(),
        );
        let node = node.clone();
        let permits = permits.clone();
        let failed = failed.clone();
        joins.push(async_std::task::spawn(async move {
            if permits.1.recv().await.is_err() {
                return;
            }
            let ok = run_node(&e, &task, &step, &template, &node, &keys).await;
            let _ = permits.0.try_send(());
            if !ok {
                lock(&failed).push(i);
            }
        }));
    }
    for j in joins {
        j.await;
    }
    let mut failed = std::mem::take(&mut *lock(&failed));
    // Report failures in batch order, not completion order.
    failed.sort_unstable();
    let failed: Vec<String> = failed.into_iter().map(|i| nodes[i].clone()).collect();
    let reason = if failed.is_empty() {
        String::new()
    } else {
        format!("step {:?} failed on {}", step.name, failed.join(","))
    };
    StepOutcome {
        failed,
        refused: false,
        reason,
    }
}

/// One node: start the plugin run, wait for its result. Answers success.
async fn run_node(
    e: &Arc<Engine>,
    task: &Task,
    step: &Step,
    template: &Prepared,
    node: &str,
    keys: &Keys,
) -> bool {
    if e.is_stopping(&task.uuid) {
        e.logs
            .append(keys, node, "info", "not started: task stopped");
        return false;
    }
    let req = request_for(template, task, step, node);
    let (tx, rx) = async_channel::bounded(1);
    let sink = Arc::new(NodeSink {
        logs: e.logs.clone(),
        keys: keys.clone(),
        node: node.to_string(),
        cap: e.max_log_bytes,
        written: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        done: tx,
    });
    let handle = match e.plugins.start(&step.plugin, &req, sink.clone()) {
        Ok(h) => h,
        Err(msg) => {
            e.logs.append(keys, node, "info", &format!("failed: {msg}"));
            return false;
        }
    };
    let run_id = handle.run_id();
    lock(&e.runs)
        .entry(task.uuid.clone())
        .or_default()
        .insert(run_id, handle.clone());
    // A stop may have landed between the check above and the registration.
    if e.is_stopping(&task.uuid) {
        handle.cancel();
    }
    let began = std::time::Instant::now();
    let limit = Duration::from_secs(step.timeout) + HOST_GRACE;
    let result = async { rx.recv().await.ok() }
        .or(async {
            async_io::Timer::after(limit).await;
            None
        })
        .await;
    let result = match result {
        Some(r) => r,
        None => {
            handle.cancel();
            let late = async { rx.recv().await.ok() }
                .or(async {
                    async_io::Timer::after(HOST_GRACE).await;
                    None
                })
                .await;
            late.unwrap_or_else(|| {
                StepResult::failed(format!(
                    "timeout after {} s (executor did not report)",
                    step.timeout
                ))
            })
        }
    };
    if let Some(m) = lock(&e.runs).get_mut(&task.uuid) {
        m.remove(&run_id);
    }
    let dropped = sink.dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        e.logs.append(
            keys,
            node,
            "info",
            &format!("[{dropped} bytes of output not kept]"),
        );
    }
    let ok = result.is_success();
    e.metrics
        .step(&step.plugin, ok, began.elapsed().as_secs_f64());
    let text = match (&result.error, result.exit_code) {
        (Some(err), _) => format!("failed: {err}"),
        (None, Some(code)) => format!("exit code {code}"),
        (None, None) => "finished without an exit code".into(),
    };
    e.logs.append(keys, node, "info", &text);
    ok
}

/// Waits for the approvers (or the timeout, or a stop).
async fn run_approval(
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
