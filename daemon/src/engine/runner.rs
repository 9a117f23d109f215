//! The runner of one task: batches in order, steps in order, the nodes of
//! a step in parallel (bounded), waiting for people where the task must.
//! It holds no state of its own that matters: after every change it writes
//! the store, and after every wake-up it re-reads it. The node runs are in
//! `nodes.rs`, the approval step in `approvals.rs`.

use super::state::{self, RunEnd, SettleCtx};
use super::{approvals, nodes, plan, Engine};
use crate::error::Result;
use crate::logs::Keys;
use crate::model::{BatchStatus, Decision, Subtask, Task, TaskStatus};
use crate::notify::Kind;
use crate::policy::{NodeOutcome, Verdict};
use crate::store::Tx;
use event_listener::Event;
use futures_lite::FutureExt;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn run(e: Arc<Engine>, uuid: String, wake: Arc<Event>) {
    if let Err(err) = drive(&e, &uuid, &wake).await {
        log::error!("task {uuid}: runner stopped: {err}");
    }
}

/// Runs store work of the runner on the store's fixed pool of threads.
pub(super) async fn blocking<T: Send + 'static>(
    e: &Arc<Engine>,
    f: impl FnOnce(&Engine) -> Result<T> + Send + 'static,
) -> Result<T> {
    let e2 = e.clone();
    e.store.offload(move || f(&e2)).await
}

/// Waits until queued log records are stored (see `Engine::log_wait`).
async fn flush_logs(e: &Engine) {
    let logs = e.logs.clone();
    e.log_wait(move || logs.flush()).await;
}

async fn load(e: &Arc<Engine>, uuid: &str) -> Result<(Task, Vec<Subtask>)> {
    let id = uuid.to_string();
    blocking(e, move |e| {
        e.store
            .task_with_subtasks(&id)?
            .ok_or_else(|| crate::error::Error::Internal(format!("task {id} vanished")))
    })
    .await
}

/// Marks a task that has not started `running` (inside the caller's transaction).
fn start_task(tx: &Tx, uuid: &str) -> Result<()> {
    if let Some(mut t) = tx.task(uuid)? {
        if t.status == TaskStatus::Init {
            t.status = TaskStatus::Running;
            t.start_ms = Some(crate::clock::now_ms());
            tx.put_task(&t)?;
        }
    }
    Ok(())
}

enum Next {
    Run(Box<Subtask>),
    Wait,
    Finish,
}

async fn drive(e: &Arc<Engine>, uuid: &str, wake: &Event) -> Result<()> {
    loop {
        // Listen before reading, so a change between the read and the wait is not missed.
        let listener = wake.listen();
        let (task, subs) = load(e, uuid).await?;
        if task.is_finished() {
            return Ok(());
        }
        let next = next_step(&task, &subs);
        let paced = match &next {
            Next::Run(sub) => pacing(&task, &subs, sub),
            _ => None,
        };
        // The task's start shares the transaction of its first batch's
        // start or of its end; only a wait writes it alone.
        if task.status == TaskStatus::Init && (matches!(next, Next::Wait) || paced.is_some()) {
            let id = uuid.to_string();
            e.store.grouped_async(move |tx| start_task(tx, &id)).await?;
        }
        match next {
            Next::Finish => {
                flush_logs(e).await;
                let (id, notify) = (uuid.to_string(), e.notify.clone());
                let t = e
                    .store
                    .grouped_async(move |tx| finish_in(tx, &notify, &id))
                    .await?;
                finished(e, uuid, t);
                return Ok(());
            }
            Next::Wait => listener.await,
            Next::Run(sub) => {
                if let Some(ms) = paced {
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
            nodes: next
                .nodes
                .iter()
                .map(|n| nodes::plugin_node(task, n))
                .collect(),
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

/// Ends the task inside the caller's transaction: batches not started
/// become `cancel`, a waiting batch is released with "task stop", and the
/// task gets its final status. A task that never started gets its start too.
fn finish_in(tx: &Tx, notify: &crate::notify::Notifier, uuid: &str) -> Result<Option<Task>> {
    let Some(mut t) = tx.task(uuid)? else {
        return Ok(None);
    };
    let mut subs = tx.subtasks(uuid)?;
    let now = crate::clock::now_ms();
    let end = state::finish(&mut subs, t.stopped_by.as_deref(), t.decision, now);
    for &i in &end.changed {
        tx.put_subtask(&subs[i])?;
    }
    if t.start_ms.is_none() {
        t.start_ms = Some(now);
    }
    t.status = end.status;
    t.finish_ms = Some(now);
    t.reason = end.reason;
    t.decision = end.decision;
    tx.put_task(&t)?;
    notify.emit(tx, Kind::Finished, &t, None, None)?;
    if t.decision == Decision::Pending {
        notify.emit(tx, Kind::RollbackDecision, &t, None, None)?;
    }
    Ok(Some(t))
}

/// After the end of a task is durable: webhooks and its last log record
/// (stored, and followers woken, when the runner ends: `spawn_runner`).
fn finished(e: &Engine, uuid: &str, t: Option<Task>) {
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
    }
    log::info!("task {uuid} finished");
}

/// Outcome of one step over the batch's nodes.
pub(super) struct StepOutcome {
    pub(super) failed: Vec<String>,
    pub(super) refused: bool,
    pub(super) reason: String,
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
    let (s2, tid, starts) = (
        sub.clone(),
        task.uuid.clone(),
        task.status == TaskStatus::Init,
    );
    e.store
        .grouped_async(move |tx| {
            if starts {
                start_task(tx, &tid)?;
            }
            tx.put_subtask(&s2)
        })
        .await?;
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
            e.logs.append(
                &keys,
                "",
                "info",
                &format!("step {:?} skipped: no node left", step.name),
            );
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
            approvals::run_approval(e, task, &sub, step, &keys).await?
        } else {
            nodes::run_step(e, task, &sub, step, &nodes, &keys).await
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
    flush_logs(e).await;
    let notify = e.notify.clone();
    let (waits, end) = e
        .store
        .grouped_async(move |tx| {
            let Some(mut s) = tx.subtask(&sub_uuid)? else {
                return Ok((None, None));
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
            let Some(t) = t else {
                return Ok((None, None));
            };
            if s.status == BatchStatus::Fail {
                notify.emit(tx, Kind::Failed, &t, Some(&s), None)?;
            }
            if s.waiting() {
                notify.emit(tx, Kind::Waiting, &t, Some(&s), None)?;
            }
            let waits = s.waiting().then(|| {
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
            });
            // The last batch's end and the task's end share one transaction.
            let subs = tx.subtasks(&task_uuid)?;
            if matches!(next_step(&t, &subs), Next::Finish) {
                return Ok((waits, Some(finish_in(tx, &notify, &task_uuid)?)));
            }
            Ok((waits, None))
        })
        .await?;
    e.notify.kick();
    if let Some(text) = waits {
        e.logs
            .append(&Keys::batch(&task.uuid, &sub.uuid), "", "info", &text);
    }
    // Followers of this batch's logs learn that it ended.
    e.logs.notify();
    if let Some(t) = end {
        finished(e, &task.uuid, t);
    }
    Ok(())
}
