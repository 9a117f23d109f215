//! The node runs of a step: its request built once per step (and per node
//! where it names `${JOBX_NODE}`), one plugin run per node at most
//! `max_parallel` at once, and each run's output into the log.

use super::runner::StepOutcome;
use super::{lock, plan, Engine};
use crate::logs::Keys;
use crate::model::{Step, Subtask, Task};
use crate::store::LogStream;
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

/// Collects one run's output into the log and its result into a channel.
struct NodeSink {
    logs: crate::logs::LogWriter,
    keys: Keys,
    /// `keys` resolved for output lines.
    out: crate::logs::KeyedLog,
    node: Arc<str>,
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
            Stream::Stdout => LogStream::Stdout,
            Stream::Stderr => LogStream::Stderr,
            Stream::Info => LogStream::Info,
        };
        // Waits while the log queue is full: the producer slows down.
        self.logs.append_output(&self.out, &self.node, s, text);
    }

    fn done(&self, result: StepResult) {
        let _ = self.done.try_send(result);
    }
}

/// A step's executor work with `${…}` resolved from `vars`.
fn step_kind(
    step: &Step,
    vars: &BTreeMap<String, String>,
) -> std::result::Result<StepKind, String> {
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
pub(super) fn plugin_node(task: &Task, node: &str) -> jobx_plugin_api::Node {
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
pub(super) async fn run_step(
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
        out: e.logs.keyed(keys),
        node: Arc::from(node),
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
