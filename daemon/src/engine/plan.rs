//! Pure decisions of the runner: step filters, the environment a step
//! sees, the final status of a task.

use crate::model::{Action, Approval, ApprovalStatus, Step, Subtask, Task, WaitKind, Waiting};
use std::collections::BTreeMap;

/// Does `step` run in batch `idx` (0-based) of `total` for this action?
pub fn step_applies(step: &Step, action: Action, idx: u32, total: u32) -> bool {
    let action_ok = match Action::parse(&step.action) {
        Some(only) => action == only,
        // `always`
        None => true,
    };
    let first = idx == 0;
    let last = idx + 1 == total;
    let batch_ok = match step.batches.as_str() {
        "firsttime" => first,
        "thelasttime" => last,
        "notfirsttime" => !first,
        "notthelasttime" => !last,
        _ => true,
    };
    action_ok && batch_ok
}

/// `_exit_` set to `1` or `true`: the first failed batch ends the task.
pub fn exit_on_failure(vars: &BTreeMap<String, String>) -> bool {
    matches!(vars.get("_exit_").map(String::as_str), Some("1" | "true"))
}

/// Task variables plus `ip` for this batch.
pub fn batch_vars(task: &Task, sub: &Subtask) -> BTreeMap<String, String> {
    let mut v = task.vars.clone();
    v.insert("ip".into(), sub.nodes.join(","));
    v
}

/// The context every step of a batch sees, besides `JOBX_NODE`: in its
/// environment and as `${JOBX_…}` in `args`, `src`, `dst` and `message`.
pub fn context_vars(task: &Task, sub: &Subtask) -> BTreeMap<String, String> {
    let mut v = batch_vars(task, sub);
    v.insert("JOBX_TASK".into(), task.uuid.clone());
    v.insert("JOBX_SUBTASK".into(), sub.uuid.clone());
    v.insert("JOBX_BATCH".into(), (sub.idx + 1).to_string());
    v.insert("JOBX_BATCHES".into(), task.batches.to_string());
    v.insert("JOBX_ACTION".into(), task.action.to_string());
    v
}

/// Names that always resolve in `${…}` (set by jobx, not by the task).
const CONTEXT_NAMES: [&str; 7] = [
    "ip",
    "JOBX_NODE",
    "JOBX_TASK",
    "JOBX_SUBTASK",
    "JOBX_BATCH",
    "JOBX_BATCHES",
    "JOBX_ACTION",
];

/// Whether a step's substituted fields differ per node (`${JOBX_NODE}`).
pub fn uses_node(step: &Step) -> bool {
    [
        step.args.as_deref(),
        step.src.as_deref(),
        step.dst.as_deref(),
    ]
    .into_iter()
    .flatten()
    .any(|t| crate::vars::references(t).iter().any(|n| n == "JOBX_NODE"))
}

/// The environment a step process gets on every node of the batch: the
/// step's `env`, then the task variables and the JOBX_* context (they win
/// over step env); the caller adds `JOBX_NODE` per node.
pub fn step_env(task: &Task, sub: &Subtask, step: &Step) -> BTreeMap<String, String> {
    let mut env = step.env.clone();
    env.extend(context_vars(task, sub));
    env
}

/// Every `${name}` a step uses must resolve at creation (`ip` always does).
pub fn check_step_vars(steps: &[Step], vars: &BTreeMap<String, String>) -> Result<(), String> {
    for (i, s) in steps.iter().enumerate() {
        let fields = [
            ("args", s.args.as_deref()),
            ("src", s.src.as_deref()),
            ("dst", s.dst.as_deref()),
            ("message", s.message.as_deref()),
        ];
        for (field, text) in fields {
            for name in crate::vars::references(text.unwrap_or("")) {
                if !CONTEXT_NAMES.contains(&name.as_str()) && !vars.contains_key(&name) {
                    return Err(format!(
                        "variable: step {} ({:?}) uses ${{{name}}} in {field}, which the task does not define",
                        i + 1,
                        s.name
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What a task waits for a person to do, derived from its batches, its
/// pending approvals and its rollback decision (`rollback_open`: whether a
/// decision is still accepted, see `check_rollback_allowed`).
pub fn waiting(
    task: &Task,
    subs: &[Subtask],
    approvals: &[Approval],
    rollback_open: bool,
) -> Option<Waiting> {
    if task.is_finished() {
        return rollback_open.then_some(Waiting {
            kind: WaitKind::RollbackDecision,
            on: None,
        });
    }
    if task.stopped_by.is_some() {
        return None;
    }
    if let Some(s) = subs.iter().find(|s| s.waiting()) {
        return Some(Waiting {
            kind: WaitKind::Confirm,
            on: Some(s.uuid.clone()),
        });
    }
    approvals
        .iter()
        .find(|a| a.taskuuid == task.uuid && a.status == ApprovalStatus::Pending)
        .map(|a| Waiting {
            kind: WaitKind::Approval,
            on: Some(a.uuid.clone()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(action: &str, batches: &str) -> Step {
        serde_json::from_value(serde_json::json!({
            "uuid": "u", "name": "n", "plugin": "local", "timeout": 1,
            "action": action, "batches": batches
        }))
        .expect("step")
    }

    #[test]
    fn filters() {
        let cases = [
            ("always", "always", "deploy", 0, 3, true),
            ("deploy", "always", "rollback", 0, 3, false),
            ("rollback", "always", "rollback", 0, 3, true),
            ("always", "firsttime", "deploy", 0, 3, true),
            ("always", "firsttime", "deploy", 1, 3, false),
            ("always", "thelasttime", "deploy", 2, 3, true),
            ("always", "thelasttime", "deploy", 1, 3, false),
            ("always", "notfirsttime", "deploy", 0, 3, false),
            ("always", "notfirsttime", "deploy", 2, 3, true),
            ("always", "notthelasttime", "deploy", 2, 3, false),
            ("always", "notthelasttime", "deploy", 0, 3, true),
            ("always", "firsttime", "deploy", 0, 1, true),
            ("always", "thelasttime", "deploy", 0, 1, true),
        ];
        for (a, b, act, idx, total, want) in cases {
            assert_eq!(
                step_applies(&step(a, b), Action::parse(act).expect("action"), idx, total),
                want,
                "{a} {b} {act} {idx}/{total}"
            );
        }
    }

    #[test]
    fn exit_flag() {
        let mut v = BTreeMap::new();
        assert!(!exit_on_failure(&v));
        v.insert("_exit_".to_string(), "true".to_string());
        assert!(exit_on_failure(&v));
        v.insert("_exit_".to_string(), "0".to_string());
        assert!(!exit_on_failure(&v));
    }
}
