//! The console's task page: the node x step grid of each batch, read from
//! the store and the step logs, and one node's records of a log.

use super::*;
use crate::logs::{parse_key, KeyKind};
use crate::model::{BatchStatus, Step, Subtask, Task};

/// What one cell of the node × step grid shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Ok,
    Fail,
    Running,
    Pending,
    Skipped,
}

impl Cell {
    pub fn as_str(self) -> &'static str {
        match self {
            Cell::Ok => "ok",
            Cell::Fail => "fail",
            Cell::Running => "running",
            Cell::Pending => "pending",
            Cell::Skipped => "skipped",
        }
    }
}

/// What a node's result record in a step log says: the runner ends each
/// node's run with "exit code N", "failed: …", "finished without an exit
/// code" or "not started: task stopped"; other records say nothing.
pub fn node_result(text: &str) -> Option<Cell> {
    if let Some(code) = text.strip_prefix("exit code ") {
        return Some(if code.trim() == "0" {
            Cell::Ok
        } else {
            Cell::Fail
        });
    }
    if text.starts_with("failed: ") || text == "finished without an exit code" {
        return Some(Cell::Fail);
    }
    if text == "not started: task stopped" {
        return Some(Cell::Skipped);
    }
    None
}

/// Whether a record is a step's header ("step \"x\" (local) on a,b"): a new
/// run of the step starts there (a retry runs it again).
fn is_step_header(r: &crate::model::LogRecord) -> bool {
    r.node.is_empty()
        && r.stream == "info"
        && r.text.starts_with("step \"")
        && r.text.contains(") on ")
}

/// The nodes that finished the latest run of a step, from its log records in
/// order; `None` for a log too long to tell within `budget` records.
pub fn run_results<'a>(
    records: impl Iterator<Item = &'a crate::model::LogRecord>,
    budget: usize,
) -> Option<BTreeMap<String, Cell>> {
    let mut out = BTreeMap::new();
    for (n, r) in records.enumerate() {
        if n >= budget {
            return None;
        }
        if is_step_header(r) {
            out.clear();
        } else if r.stream == "info" && !r.node.is_empty() {
            if let Some(c) = node_result(&r.text) {
                out.insert(r.node.clone(), c);
            }
        }
    }
    Some(out)
}

/// Records read at most to tell which nodes finished a running step.
const RESULT_SCAN: usize = 5_000;

/// The running step of a batch: its index and the nodes done in its latest run.
pub struct Current {
    pub step: usize,
    pub done: BTreeMap<String, Cell>,
}

/// The cells of one batch, step by step: a state for the step and the
/// nodes that differ from it. `current` is the step a running batch is in
/// (the last one that wrote a log record) with the nodes already done.
pub fn batch_cells(
    task: &Task,
    s: &Subtask,
    current: Option<&Current>,
) -> Vec<(Cell, Vec<(String, Cell)>)> {
    let failed = |n: &String| s.failed_nodes.contains(n);
    let except = |c: Cell| -> Vec<(String, Cell)> {
        s.nodes
            .iter()
            .filter(|n| failed(n))
            .map(|n| (n.clone(), c))
            .collect()
    };
    task.steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            if !crate::engine::plan::step_applies(step, task.action, s.idx, task.batches) {
                return (Cell::Skipped, Vec::new());
            }
            match s.status {
                BatchStatus::Success => (Cell::Ok, Vec::new()),
                BatchStatus::Init => (Cell::Pending, Vec::new()),
                BatchStatus::Cancel => (Cell::Skipped, Vec::new()),
                BatchStatus::Running => {
                    let Some(cur) = current else {
                        return (Cell::Pending, Vec::new());
                    };
                    if i < cur.step {
                        return (Cell::Ok, Vec::new());
                    }
                    if i > cur.step {
                        return (Cell::Pending, Vec::new());
                    }
                    // A retry runs the step again on the nodes it failed on only.
                    let retrying = s.failed_step == Some(cur.step) && !s.failed_nodes.is_empty();
                    let all = if retrying { Cell::Ok } else { Cell::Running };
                    let nodes = s
                        .nodes
                        .iter()
                        .filter_map(|n| {
                            let base = if retrying && failed(n) {
                                Cell::Running
                            } else {
                                all
                            };
                            let c = match cur.done.get(n) {
                                Some(c) if base == Cell::Running => *c,
                                _ => base,
                            };
                            (c != all).then(|| (n.clone(), c))
                        })
                        .collect();
                    (all, nodes)
                }
                BatchStatus::Fail | BatchStatus::Refuse => match s.failed_step {
                    Some(f) if i < f => (Cell::Ok, Vec::new()),
                    Some(f) if i == f => {
                        if s.failed_nodes.len() >= s.nodes.len() || s.failed_nodes.is_empty() {
                            (Cell::Fail, Vec::new())
                        } else {
                            (Cell::Ok, except(Cell::Fail))
                        }
                    }
                    // A waiting batch may still run these after a retry.
                    Some(_) if s.waiting() => (Cell::Pending, Vec::new()),
                    Some(_) => (Cell::Skipped, Vec::new()),
                    None => (Cell::Fail, Vec::new()),
                },
            }
        })
        .collect()
}

fn step_key(s: &Subtask, step: &Step) -> String {
    format!("{}{}{}", s.uuid, step.uuid, step.plugin)
}

/// The step a running batch is in (the last applicable step with a log
/// record) and the nodes done in its latest run, read from at most
/// `RESULT_SCAN` records.
fn current_step(app: &App, task: &Task, s: &Subtask) -> Result<Option<Current>> {
    for (i, step) in task.steps.iter().enumerate().rev() {
        if !crate::engine::plan::step_applies(step, task.action, s.idx, task.batches) {
            continue;
        }
        let key = step_key(s, step);
        if app.store.logs(&key, 0, 1)?.is_empty() {
            continue;
        }
        let mut records = Vec::new();
        let mut at = 0;
        while records.len() <= RESULT_SCAN {
            let page = app.store.logs(&key, at, 1000)?;
            let Some((last, _)) = page.last() else { break };
            at = *last;
            let full = page.len() == 1000;
            records.extend(page.into_iter().map(|(_, r)| r));
            if !full {
                break;
            }
        }
        let done = run_results(records.iter(), RESULT_SCAN).unwrap_or_default();
        return Ok(Some(Current { step: i, done }));
    }
    Ok(None)
}

/// Everything the task page shows in one answer: the task, its steps, the
/// batches with their grids, its pending approvals and its rollback partner.
pub(super) async fn task_view(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let uuid = param(&req, "uuid")?;
    super::tasks::run(req.state(), move |app| {
        let task = app.engine.task_in(pid, &uuid)?;
        let subs = app.store.subtasks(&uuid)?;
        let mut batches = Vec::with_capacity(subs.len());
        for s in &subs {
            let current = if s.status == BatchStatus::Running {
                current_step(app, &task, s)?
            } else {
                None
            };
            let cells: Vec<Value> = batch_cells(&task, s, current.as_ref())
                .into_iter()
                .zip(&task.steps)
                .map(|((all, nodes), step)| {
                    let nodes: Map<String, Value> = nodes
                        .into_iter()
                        .map(|(n, c)| (n, Value::String(c.as_str().into())))
                        .collect();
                    json!({"step": step.uuid, "key": step_key(s, step), "all": all.as_str(), "nodes": nodes})
                })
                .collect();
            let mut b = s.to_api();
            b["idx"] = json!(s.idx);
            b["nodes"] = json!(s.nodes);
            b["failed_nodes"] = json!(s.failed_nodes);
            b["cells"] = Value::Array(cells);
            batches.push(b);
        }
        let approvals: Vec<Value> = app
            .store
            .pending_approvals(pid)?
            .iter()
            .filter(|a| a.taskuuid == uuid)
            .map(|a| a.to_api())
            .collect();
        let partner_uuid = if crate::ids::is_deploy(&uuid) {
            crate::ids::rollback_of(&uuid)
        } else {
            uuid.to_ascii_lowercase_last()
        };
        let partner = app
            .store
            .task(&partner_uuid)?
            .filter(|t| t.projectid == pid)
            .map(|t| json!({"uuid": t.uuid, "status": t.status, "action": t.action}));
        let steps: Vec<Value> = task
            .steps
            .iter()
            .map(|s| json!({"uuid": s.uuid, "name": s.name, "plugin": s.plugin, "action": s.action, "batches": s.batches, "approvers": s.approvers}))
            .collect();
        let mut t = app.engine.task_json(&task)?;
        t["action"] = json!(task.action);
        t["decision"] = json!(task.decision);
        t["stopped_by"] = json!(task.stopped_by);
        t["batches"] = json!(task.batches);
        t["created"] = json!(crate::clock::local(task.created_ms));
        t["starttimems"] = json!(task.start_ms.map(|m| m as f64 / 1000.0));
        Ok(Reply::Data(json!({
            "task": t,
            "steps": steps,
            "batches": batches,
            "approvals": approvals,
            "partner": partner,
        })))
    })
    .await
}

trait LowerLast {
    fn to_ascii_lowercase_last(&self) -> String;
}

impl LowerLast for String {
    /// The deploy uuid of a rollback uuid: last letter lowercased.
    fn to_ascii_lowercase_last(&self) -> String {
        let mut s = self.clone();
        if let Some(last) = s.pop() {
            s.push(last.to_ascii_lowercase());
        }
        s
    }
}

/// Records scanned at most per call of the node-filtered log.
const SCAN_BUDGET: usize = 20_000;

/// One node's records of a log key, a page at a time: scans at most
/// `SCAN_BUDGET` records from `offset` and answers where to go on.
pub(super) async fn node_log(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let key = param(&req, "key")?;
    let q = query(&req)?;
    let node = q
        .get("node")
        .cloned()
        .ok_or_else(|| Error::Bad("node: missing".into()))?;
    let offset = query_offset(&q)?;
    let max = query_count(&q, "max", 500, 2000)?;
    super::tasks::run(req.state(), move |app| {
        let owner = match parse_key(&key) {
            Some(KeyKind::Step { subtask }) => app.store.subtask(&subtask)?.map(|s| s.parent_uuid),
            Some(KeyKind::Uuid(u)) => match app.store.subtask(&u)? {
                Some(s) => Some(s.parent_uuid),
                None => Some(u),
            },
            None => None,
        };
        let t = match owner {
            Some(u) => app.store.task(&u)?,
            None => None,
        };
        if t.is_none_or(|t| t.projectid != pid) {
            return Err(Error::NotFound("no such log in this project".into()));
        }
        let mut out = Vec::new();
        let mut at = offset;
        let mut scanned = 0;
        let mut at_end = false;
        while out.len() < max && scanned < SCAN_BUDGET {
            let page = app.store.logs(&key, at, 1000)?;
            let n = page.len();
            for (seq, r) in page {
                at = seq;
                scanned += 1;
                if r.node == node {
                    out.push(json!({"seq": seq, "time": r.time as f64 / 1000.0, "node": r.node, "stream": r.stream, "text": r.text}));
                    if out.len() >= max {
                        break;
                    }
                }
            }
            if n < 1000 {
                at_end = out.len() < max || app.store.logs(&key, at, 1)?.is_empty();
                break;
            }
        }
        Ok(Reply::Data(json!({"records": out, "next_offset": at, "at_end": at_end})))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn step(name: &str, batches: &str) -> Step {
        serde_json::from_value(json!({
            "uuid": format!("{name:0>12}"), "name": name, "plugin": "local", "timeout": 60,
            "action": "always", "batches": batches, "kind": "cmd", "script": "true"
        }))
        .expect("step")
    }

    fn task(steps: Vec<Step>, batches: u32) -> Task {
        Task {
            id: 1,
            projectid: 1,
            uuid: "aaaaaaaaaaaa".into(),
            name: "j".into(),
            group: "g".into(),
            user: "u".into(),
            slave: "s".into(),
            status: crate::model::TaskStatus::Running,
            created_ms: 0,
            start_ms: None,
            finish_ms: None,
            calltype: "api".into(),
            reason: String::new(),
            variable: json!({}),
            vars: BTreeMap::new(),
            steps,
            nodes: BTreeMap::new(),
            batches,
            action: crate::model::Action::Deploy,
            stopped_by: None,
            decision: crate::model::Decision::None,
            policy: Default::default(),
        }
    }

    fn sub(idx: u32, status: &str, nodes: &[&str]) -> Subtask {
        Subtask {
            id: 1,
            parent_uuid: "aaaaaaaaaaaa".into(),
            uuid: "bbbbbbbbbbbb".into(),
            idx,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            status: BatchStatus::parse(status).expect("status"),
            confirm: None,
            start_ms: None,
            finish_ms: None,
            reason: String::new(),
            failed_step: None,
            failed_nodes: Vec::new(),
            retry: false,
        }
    }

    fn states(c: &[(Cell, Vec<(String, Cell)>)]) -> Vec<&'static str> {
        c.iter().map(|(a, _)| a.as_str()).collect()
    }

    #[test]
    fn grid_of_a_failed_waiting_batch() {
        let t = task(
            vec![
                step("a", "always"),
                step("b", "always"),
                step("c", "firsttime"),
            ],
            3,
        );
        let mut s = sub(1, "fail", &["n1", "n2", "n3"]);
        s.failed_step = Some(1);
        s.failed_nodes = vec!["n2".into()];
        s.confirm = Some(crate::model::Confirm::Waiting);
        let c = batch_cells(&t, &s, None);
        assert_eq!(states(&c), vec!["ok", "ok", "skipped"]);
        assert_eq!(c[1].1, vec![("n2".to_string(), Cell::Fail)]);
        // Not waiting any more (stopped): the later steps will never run.
        let t2 = task(
            vec![
                step("a", "always"),
                step("b", "always"),
                step("c", "always"),
            ],
            3,
        );
        s.confirm = Some(crate::model::Confirm::TaskStop);
        s.failed_step = Some(0);
        s.failed_nodes = vec!["n1".into(), "n2".into(), "n3".into()];
        assert_eq!(
            states(&batch_cells(&t2, &s, None)),
            vec!["fail", "skipped", "skipped"]
        );
    }

    #[test]
    fn grid_of_running_and_other_batches() {
        let t = task(
            vec![
                step("a", "always"),
                step("b", "always"),
                step("c", "always"),
            ],
            2,
        );
        let s = sub(0, "running", &["n1"]);
        let cur = |step| Current {
            step,
            done: BTreeMap::new(),
        };
        assert_eq!(
            states(&batch_cells(&t, &s, Some(&cur(1)))),
            vec!["ok", "running", "pending"]
        );
        assert_eq!(states(&batch_cells(&t, &s, None)), vec!["pending"; 3]);
        let mut r = sub(0, "running", &["n1", "n2"]);
        r.failed_step = Some(1);
        r.failed_nodes = vec!["n2".into()];
        let c = batch_cells(&t, &r, Some(&cur(1)));
        assert_eq!(states(&c), vec!["ok", "ok", "pending"]);
        assert_eq!(c[1].1, vec![("n2".to_string(), Cell::Running)]);
        assert_eq!(
            states(&batch_cells(&t, &sub(1, "success", &["n"]), None)),
            vec!["ok"; 3]
        );
        assert_eq!(
            states(&batch_cells(&t, &sub(1, "init", &["n"]), None)),
            vec!["pending"; 3]
        );
        assert_eq!(
            states(&batch_cells(&t, &sub(1, "cancel", &["n"]), None)),
            vec!["skipped"; 3]
        );
    }

    fn rec(node: &str, stream: &str, text: &str) -> crate::model::LogRecord {
        crate::model::LogRecord {
            time: 0,
            node: node.into(),
            stream: stream.into(),
            text: text.into(),
        }
    }

    #[test]
    fn nodes_done_in_the_latest_run_of_a_step() {
        assert_eq!(node_result("exit code 0"), Some(Cell::Ok));
        assert_eq!(node_result("exit code 3"), Some(Cell::Fail));
        assert_eq!(node_result("failed: timeout after 5 s"), Some(Cell::Fail));
        assert_eq!(
            node_result("not started: task stopped"),
            Some(Cell::Skipped)
        );
        assert_eq!(node_result("[output truncated at 10 bytes]"), None);
        let log = [
            rec("", "info", "step \"install\" (local) on a,b"),
            rec("a", "stdout", "exit code 0"),
            rec("a", "info", "exit code 0"),
            rec("b", "info", "exit code 3"),
            rec("", "info", "step \"install\": failed on b"),
            // the retry: b runs again, its old result no longer counts
            rec("", "info", "step \"install\" (local) on b"),
            rec("b", "stdout", "retrying"),
        ];
        let done = run_results(log.iter(), 100).expect("within budget");
        assert_eq!(done, BTreeMap::new());
        let done = run_results(log[..4].iter(), 100).expect("within budget");
        assert_eq!(done.get("a"), Some(&Cell::Ok));
        assert_eq!(done.get("b"), Some(&Cell::Fail));
        assert_eq!(run_results(log.iter(), 3), None, "too long to tell");
    }

    #[test]
    fn running_step_shows_the_nodes_already_done() {
        let t = task(vec![step("a", "always"), step("b", "always")], 1);
        let s = sub(0, "running", &["n1", "n2", "n3"]);
        let mut done = BTreeMap::new();
        done.insert("n1".to_string(), Cell::Ok);
        done.insert("n3".to_string(), Cell::Fail);
        let c = batch_cells(&t, &s, Some(&Current { step: 0, done }));
        assert_eq!(states(&c), vec!["running", "pending"]);
        assert_eq!(
            c[0].1,
            vec![("n1".to_string(), Cell::Ok), ("n3".to_string(), Cell::Fail)]
        );
    }
}
