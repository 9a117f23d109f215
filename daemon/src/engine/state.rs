//! The state transitions of tasks, batches and approvals, as pure
//! functions: the runner, restart recovery and the API all decide through
//! these, so each rule is written once.

use crate::model::{
    Approval, ApprovalStatus, BatchStatus, Confirm, Decision, Opinion, Subtask, TaskStatus,
};

/// An approval is decided by the first refusal, by an admin's word, or by
/// agreement (of one approver, or of all with `everyone`).
pub fn approval_status(a: &Approval) -> ApprovalStatus {
    if a.opinions.values().any(|o| *o == Opinion::Refuse) {
        return ApprovalStatus::Refuse;
    }
    // An admin who is not a listed approver decides for all.
    if a.opinions.keys().any(|n| !a.approvers.contains(n)) {
        return ApprovalStatus::Agree;
    }
    let agreed = |n: &String| a.opinions.get(n) == Some(&Opinion::Agree);
    let done = if a.everyone {
        a.approvers.iter().all(agreed)
    } else {
        a.approvers.iter().any(agreed) || !a.opinions.is_empty()
    };
    if done {
        ApprovalStatus::Agree
    } else {
        ApprovalStatus::Pending
    }
}

/// How a batch's run came out, as the runner saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// Every step passed (failures within the tolerance included); `gate`:
    /// a canary gate follows this batch.
    Passed { gate: bool },
    /// An approval step was refused.
    Refused,
    /// A step failed beyond the tolerance.
    Failed,
}

/// What a batch may do about its run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettleCtx {
    /// This run was a retry (its `retried by` stays on a pass).
    pub retry: bool,
    /// The task was stopped while the batch ran.
    pub stopped: bool,
    /// `_exit_`: a failed batch ends the task instead of waiting.
    pub exit: bool,
}

/// The status and `confirm` of a batch whose run ended: a pass is
/// `success` (waiting at a canary gate unless stopped), a refusal
/// `refuse`, a failure `fail` released with "task stop" if stopped, else
/// waiting for a person unless `_exit_`. `confirm` is what the batch had
/// during the run.
pub fn settle(
    confirm: Option<Confirm>,
    end: RunEnd,
    ctx: SettleCtx,
) -> (BatchStatus, Option<Confirm>) {
    match end {
        RunEnd::Passed { gate } => {
            let confirm = if gate && !ctx.stopped {
                Some(Confirm::Waiting)
            } else if ctx.retry {
                confirm
            } else {
                Some(Confirm::Passed)
            };
            (BatchStatus::Success, confirm)
        }
        RunEnd::Refused => (BatchStatus::Refuse, None),
        RunEnd::Failed => (BatchStatus::Fail, failed_confirm(ctx.stopped, ctx.exit)),
    }
}

fn failed_confirm(stopped: bool, exit: bool) -> Option<Confirm> {
    if stopped {
        Some(Confirm::TaskStop)
    } else if exit {
        None
    } else {
        Some(Confirm::Waiting)
    }
}

/// A batch found at restart recovery: one that was running failed and
/// waits for a person (unless `_exit_`); any other is left as it is (`None`).
pub fn interrupt(status: BatchStatus, exit: bool) -> Option<(BatchStatus, Option<Confirm>)> {
    (status == BatchStatus::Running).then(|| (BatchStatus::Fail, failed_confirm(false, exit)))
}

/// Is this batch settled so the task may move past it?
pub fn batch_settled(s: &Subtask) -> bool {
    match s.status {
        // A passed batch at a canary gate waits like a failed one.
        BatchStatus::Success => !s.waiting(),
        BatchStatus::Cancel => true,
        BatchStatus::Fail => matches!(s.confirm, Some(Confirm::ConfirmedBy(_))),
        BatchStatus::Init | BatchStatus::Running | BatchStatus::Refuse => false,
    }
}

/// Has this batch ended: nothing more runs in it (a batch waiting at a
/// canary gate has ended; a failed one only once confirmed).
pub fn batch_ended(s: &Subtask) -> bool {
    match s.status {
        BatchStatus::Success | BatchStatus::Cancel | BatchStatus::Refuse => true,
        BatchStatus::Fail => batch_settled(s),
        BatchStatus::Init | BatchStatus::Running => false,
    }
}

/// The end status of a task from its batches: `refuse` if any batch was
/// refused, `success` if all succeeded, else `fail`.
pub fn final_status(subs: &[Subtask], stopped: bool) -> TaskStatus {
    if subs.iter().any(|s| s.status == BatchStatus::Refuse) {
        TaskStatus::Refuse
    } else if !stopped && subs.iter().all(|s| s.status == BatchStatus::Success) {
        TaskStatus::Success
    } else {
        TaskStatus::Fail
    }
}

/// A task as it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ending {
    pub status: TaskStatus,
    pub reason: String,
    pub decision: Decision,
    /// Positions in the batches of those whose status or `confirm` changed.
    pub changed: Vec<usize>,
}

/// Ends a task: batches not started become `cancel`, a waiting (or
/// retry-marked) batch is released with "task stop", every batch that ran
/// gets a finish time; the task gets its final status, the reason, and
/// loses a pending rollback decision if it was refused.
pub fn finish(
    subs: &mut [Subtask],
    stopped_by: Option<&str>,
    decision: Decision,
    now: i64,
) -> Ending {
    let mut failed_batch = None;
    let mut changed = Vec::new();
    for (i, s) in subs.iter_mut().enumerate() {
        let before = (s.status, s.confirm.clone());
        if s.status == BatchStatus::Init {
            s.status = BatchStatus::Cancel;
        } else if s.waiting() || s.retry {
            s.confirm = Some(Confirm::TaskStop);
            s.retry = false;
        }
        if s.status == BatchStatus::Fail && failed_batch.is_none() {
            failed_batch = Some(s.idx + 1);
        }
        if s.finish_ms.is_none() && s.status != BatchStatus::Cancel {
            s.finish_ms = Some(now);
        }
        if (s.status, &s.confirm) != (before.0, &before.1) {
            changed.push(i);
        }
    }
    let status = final_status(subs, stopped_by.is_some());
    let reason = match (stopped_by, status, failed_batch) {
        (Some(who), _, _) => format!("stopped by {who}"),
        (None, TaskStatus::Refuse, _) => "refused by an approver".into(),
        (None, TaskStatus::Fail, Some(n)) => format!("batch {n} failed"),
        _ => String::new(),
    };
    // A refused deploy can not be rolled back.
    let decision = if status == TaskStatus::Refuse && decision == Decision::Pending {
        Decision::None
    } else {
        decision
    };
    Ending {
        status,
        reason,
        decision,
        changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sub(status: &str, confirm: Option<&str>) -> Subtask {
        serde_json::from_value(serde_json::json!({
            "id": 1, "parent_uuid": "p", "uuid": "s", "idx": 0, "nodes": [],
            "status": status, "confirm": confirm, "start_ms": null, "finish_ms": null,
            "reason": "", "failed_step": null, "failed_nodes": [], "retry": false
        }))
        .expect("subtask")
    }

    #[test]
    fn statuses() {
        assert_eq!(
            final_status(&[sub("success", Some(""))], false).as_str(),
            "success"
        );
        assert_eq!(final_status(&[], false).as_str(), "success");
        assert_eq!(
            final_status(&[sub("success", Some(""))], true).as_str(),
            "fail"
        );
        assert_eq!(
            final_status(
                &[
                    sub("fail", Some("confirmed by a")),
                    sub("success", Some(""))
                ],
                false
            )
            .as_str(),
            "fail"
        );
        assert_eq!(
            final_status(&[sub("refuse", None), sub("cancel", None)], false).as_str(),
            "refuse"
        );
        assert!(batch_settled(&sub("fail", Some("confirmed by x"))));
        assert!(!batch_settled(&sub("fail", Some("WaitConfirm"))));
        assert!(!batch_settled(&sub("init", None)));
        // a passed batch at a canary gate holds the task until confirmed
        assert!(!batch_settled(&sub("success", Some("WaitConfirm"))));
        assert!(batch_settled(&sub("success", Some("confirmed by x"))));
        assert!(batch_settled(&sub("success", Some(""))));
    }

    fn at(idx: u32, status: &str, confirm: Option<&str>) -> Subtask {
        let mut s = sub(status, confirm);
        s.idx = idx;
        s
    }

    fn c(text: &str) -> Option<Confirm> {
        Some(Confirm::parse(text))
    }

    #[test]
    fn settle_table() {
        let ctx = |retry, stopped, exit| SettleCtx {
            retry,
            stopped,
            exit,
        };
        let pass = RunEnd::Passed { gate: false };
        let gate = RunEnd::Passed { gate: true };
        // (confirm during the run, outcome, context, status, confirm after)
        type Case = (
            Option<Confirm>,
            RunEnd,
            SettleCtx,
            &'static str,
            Option<&'static str>,
        );
        let cases: [Case; 12] = [
            (None, pass, ctx(false, false, false), "success", Some("")),
            (
                c("retried by a"),
                pass,
                ctx(true, false, false),
                "success",
                Some("retried by a"),
            ),
            (
                None,
                gate,
                ctx(false, false, false),
                "success",
                Some("WaitConfirm"),
            ),
            (
                c("retried by a"),
                gate,
                ctx(true, false, false),
                "success",
                Some("WaitConfirm"),
            ),
            // a stopped task does not wait at its gate
            (None, gate, ctx(false, true, false), "success", Some("")),
            (
                None,
                RunEnd::Refused,
                ctx(false, false, false),
                "refuse",
                None,
            ),
            (
                c("retried by a"),
                RunEnd::Refused,
                ctx(true, true, true),
                "refuse",
                None,
            ),
            (
                None,
                RunEnd::Failed,
                ctx(false, false, false),
                "fail",
                Some("WaitConfirm"),
            ),
            (None, RunEnd::Failed, ctx(false, false, true), "fail", None),
            (
                None,
                RunEnd::Failed,
                ctx(false, true, false),
                "fail",
                Some("task stop"),
            ),
            (
                None,
                RunEnd::Failed,
                ctx(false, true, true),
                "fail",
                Some("task stop"),
            ),
            (
                c("retried by a"),
                RunEnd::Failed,
                ctx(true, false, false),
                "fail",
                Some("WaitConfirm"),
            ),
        ];
        for (before, end, cx, status, confirm) in cases {
            let (s, cf) = settle(before.clone(), end, cx);
            assert_eq!(
                (s.as_str(), cf.as_ref().map(|c| c.text().into_owned())),
                (status, confirm.map(String::from)),
                "{before:?} {end:?} {cx:?}"
            );
        }
    }

    #[test]
    fn interrupt_table() {
        let cases = [
            ("running", false, Some(("fail", Some("WaitConfirm")))),
            ("running", true, Some(("fail", None))),
            ("init", false, None),
            ("success", false, None),
            ("fail", false, None),
            ("cancel", true, None),
            ("refuse", false, None),
        ];
        for (status, exit, want) in cases {
            let got = interrupt(BatchStatus::parse(status).expect("status"), exit)
                .map(|(s, c)| (s.as_str(), c.map(|c| c.text().into_owned())));
            let want = want.map(|(s, c): (&str, Option<&str>)| (s, c.map(String::from)));
            assert_eq!(got, want, "{status} exit={exit}");
        }
    }

    #[test]
    fn ended_table() {
        // (status, confirm, settled, ended)
        let cases = [
            ("init", None, false, false),
            ("running", None, false, false),
            ("running", Some("retried by a"), false, false),
            ("success", Some(""), true, true),
            ("success", Some("retried by a"), true, true),
            ("success", Some("WaitConfirm"), false, true),
            ("success", Some("confirmed by a"), true, true),
            ("success", Some("task stop"), true, true),
            ("fail", Some("WaitConfirm"), false, false),
            ("fail", None, false, false),
            ("fail", Some("confirmed by a"), true, true),
            ("fail", Some("retried by a"), false, false),
            ("fail", Some("task stop"), false, false),
            ("refuse", None, false, true),
            ("cancel", None, true, true),
        ];
        for (status, confirm, settled, ended) in cases {
            let s = sub(status, confirm);
            assert_eq!(batch_settled(&s), settled, "settled {status} {confirm:?}");
            assert_eq!(batch_ended(&s), ended, "ended {status} {confirm:?}");
        }
    }

    #[test]
    fn finish_table() {
        struct Case {
            subs: Vec<Subtask>,
            stopped_by: Option<&'static str>,
            decision: Decision,
            status: &'static str,
            reason: &'static str,
            decision_after: Decision,
            batches_after: Vec<(&'static str, Option<&'static str>)>,
            changed: Vec<usize>,
        }
        let mut retrying = at(1, "fail", Some("retried by a"));
        retrying.retry = true;
        let cases = [
            Case {
                subs: vec![at(0, "success", Some("")), at(1, "success", Some(""))],
                stopped_by: None,
                decision: Decision::Pending,
                status: "success",
                reason: "",
                decision_after: Decision::Pending,
                batches_after: vec![("success", Some("")), ("success", Some(""))],
                changed: vec![],
            },
            Case {
                subs: vec![
                    at(0, "fail", None),
                    at(1, "init", None),
                    at(2, "init", None),
                ],
                stopped_by: None,
                decision: Decision::None,
                status: "fail",
                reason: "batch 1 failed",
                decision_after: Decision::None,
                batches_after: vec![("fail", None), ("cancel", None), ("cancel", None)],
                changed: vec![1, 2],
            },
            Case {
                subs: vec![
                    at(0, "success", Some("")),
                    at(1, "fail", Some("WaitConfirm")),
                    at(2, "init", None),
                ],
                stopped_by: Some("bob"),
                decision: Decision::Pending,
                status: "fail",
                reason: "stopped by bob",
                decision_after: Decision::Pending,
                batches_after: vec![
                    ("success", Some("")),
                    ("fail", Some("task stop")),
                    ("cancel", None),
                ],
                changed: vec![1, 2],
            },
            Case {
                subs: vec![at(0, "success", Some("")), retrying],
                stopped_by: Some("bob"),
                decision: Decision::None,
                status: "fail",
                reason: "stopped by bob",
                decision_after: Decision::None,
                batches_after: vec![("success", Some("")), ("fail", Some("task stop"))],
                changed: vec![1],
            },
            Case {
                // a canary gate released by a stop
                subs: vec![at(0, "success", Some("WaitConfirm")), at(1, "init", None)],
                stopped_by: Some("bob"),
                decision: Decision::None,
                status: "fail",
                reason: "stopped by bob",
                decision_after: Decision::None,
                batches_after: vec![("success", Some("task stop")), ("cancel", None)],
                changed: vec![0, 1],
            },
            Case {
                subs: vec![at(0, "refuse", None), at(1, "init", None)],
                stopped_by: None,
                decision: Decision::Pending,
                status: "refuse",
                reason: "refused by an approver",
                decision_after: Decision::None,
                batches_after: vec![("refuse", None), ("cancel", None)],
                changed: vec![1],
            },
            Case {
                subs: vec![at(0, "fail", Some("confirmed by a")), at(1, "fail", None)],
                stopped_by: None,
                decision: Decision::Pending,
                status: "fail",
                reason: "batch 1 failed",
                decision_after: Decision::Pending,
                batches_after: vec![("fail", Some("confirmed by a")), ("fail", None)],
                changed: vec![],
            },
        ];
        for (n, mut case) in cases.into_iter().enumerate() {
            let end = finish(&mut case.subs, case.stopped_by, case.decision, 7);
            assert_eq!(end.status.as_str(), case.status, "case {n}");
            assert_eq!(end.reason, case.reason, "case {n}");
            assert_eq!(end.decision, case.decision_after, "case {n}");
            assert_eq!(end.changed, case.changed, "case {n}");
            let after: Vec<_> = case
                .subs
                .iter()
                .map(|s| {
                    (
                        s.status.as_str(),
                        s.confirm.as_ref().map(|c| c.text().into_owned()),
                    )
                })
                .collect();
            let want: Vec<_> = case
                .batches_after
                .iter()
                .map(|(s, c)| (*s, c.map(String::from)))
                .collect();
            assert_eq!(after, want, "case {n}");
            for s in &case.subs {
                assert!(!s.retry, "case {n}: retry cleared");
                let ran = s.status != BatchStatus::Cancel;
                assert_eq!(s.finish_ms.is_some(), ran, "case {n}: finish time");
            }
        }
    }

    fn approval(approvers: &[&str], everyone: bool, opinions: &[(&str, &str)]) -> Approval {
        let opinions: BTreeMap<String, Opinion> = opinions
            .iter()
            .map(|(n, o)| (n.to_string(), Opinion::parse(o).expect("opinion")))
            .collect();
        Approval {
            uuid: "a".into(),
            projectid: 1,
            taskuuid: "t".into(),
            subtaskuuid: "s".into(),
            step: "ok?".into(),
            approvers: approvers.iter().map(|s| s.to_string()).collect(),
            message: String::new(),
            everyone,
            created_ms: 0,
            deadline_ms: 1,
            opinions,
            status: ApprovalStatus::Pending,
        }
    }

    #[test]
    fn approval_table() {
        // (approvers, everyone, opinions, status)
        type Case = (
            &'static [&'static str],
            bool,
            &'static [(&'static str, &'static str)],
            &'static str,
        );
        let cases: [Case; 9] = [
            (&["a", "b"], false, &[], "pending"),
            (&["a", "b"], false, &[("a", "agree")], "agree"),
            (&["a", "b"], false, &[("b", "refuse")], "refuse"),
            (&["a", "b"], true, &[("a", "agree")], "pending"),
            (
                &["a", "b"],
                true,
                &[("a", "agree"), ("b", "agree")],
                "agree",
            ),
            (
                &["a", "b"],
                true,
                &[("a", "agree"), ("b", "refuse")],
                "refuse",
            ),
            // an admin who is not listed decides for all
            (&["a", "b"], true, &[("root", "agree")], "agree"),
            (&["a", "b"], true, &[("root", "refuse")], "refuse"),
            (&[], false, &[], "pending"),
        ];
        for (approvers, everyone, opinions, want) in cases {
            let a = approval(approvers, everyone, opinions);
            assert_eq!(
                approval_status(&a).as_str(),
                want,
                "{approvers:?} everyone={everyone} {opinions:?}"
            );
        }
    }
}
