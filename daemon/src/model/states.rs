//! The closed sets of task, batch and approval states, and the one place
//! that writes each of them as the string stored in rows and shown to
//! OPEN-C3 clients.

use serde::{Deserialize, Serialize};

/// A closed set of states stored and shown as fixed strings. The string of
/// each variant is written once, here: it is both the serde form (stored
/// rows, OPEN-C3 clients) and what `as_str`/`Display` give.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $var),+
        }

        impl $name {
            /// Every variant, in declaration order.
            #[allow(dead_code)] // listed whole for some sets only
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$var => $s),+
                }
            }

            /// The variant written as `s`, if any.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($s => Some($name::$var),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s)
                    .ok_or_else(|| serde::de::Error::unknown_variant(&s, &[$($s),+]))
            }
        }
    };
}

wire_enum! {
    /// The status of a task.
    TaskStatus {
        Init = "init",
        Running = "running",
        Success = "success",
        Fail = "fail",
        Refuse = "refuse",
    }
}

impl TaskStatus {
    /// Nothing runs any more after this status.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Success | TaskStatus::Fail | TaskStatus::Refuse
        )
    }
}

wire_enum! {
    /// The status of a batch (subtask).
    BatchStatus {
        Init = "init",
        Running = "running",
        Success = "success",
        Fail = "fail",
        Refuse = "refuse",
        /// Never started: the task ended before it.
        Cancel = "cancel",
    }
}

wire_enum! {
    /// The status of an approval step.
    ApprovalStatus {
        Pending = "pending",
        Agree = "agree",
        Refuse = "refuse",
        Timeout = "timeout",
        Cancel = "cancel",
    }
}

wire_enum! {
    /// One approver's word on an approval step.
    Opinion {
        Agree = "agree",
        Refuse = "refuse",
    }
}

wire_enum! {
    /// The rollback decision of a deploy.
    Decision {
        /// No decision is expected (no `_rollbackVersion_`).
        None = "",
        Pending = "pending",
        Rollback = "rollback",
        NoRollback = "norollback",
    }
}

/// Rows without a decision field expect none.
impl Default for Decision {
    fn default() -> Self {
        Decision::None
    }
}

wire_enum! {
    /// What a task does, and which steps run in it.
    Action {
        Deploy = "deploy",
        Rollback = "rollback",
    }
}

/// The `confirm` field of a batch: whether it waits for a person, and what
/// released it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirm {
    /// The batch passed; nothing to confirm (`""`).
    Passed,
    /// Waits for continue, retry or stop (`WaitConfirm`).
    Waiting,
    /// Released by a person to continue past it.
    ConfirmedBy(String),
    /// Set to re-run by a person.
    RetriedBy(String),
    /// Released because the task was stopped.
    TaskStop,
    /// Text this version does not write, kept as read so old rows load.
    Other(String),
}

const CONFIRMED_BY: &str = "confirmed by ";
const RETRIED_BY: &str = "retried by ";

impl Confirm {
    pub fn parse(s: &str) -> Confirm {
        match s {
            "" => Confirm::Passed,
            "WaitConfirm" => Confirm::Waiting,
            "task stop" => Confirm::TaskStop,
            _ => {
                if let Some(u) = s.strip_prefix(CONFIRMED_BY) {
                    Confirm::ConfirmedBy(u.to_string())
                } else if let Some(u) = s.strip_prefix(RETRIED_BY) {
                    Confirm::RetriedBy(u.to_string())
                } else {
                    Confirm::Other(s.to_string())
                }
            }
        }
    }

    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match self {
            Confirm::Passed => Cow::Borrowed(""),
            Confirm::Waiting => Cow::Borrowed("WaitConfirm"),
            Confirm::TaskStop => Cow::Borrowed("task stop"),
            Confirm::ConfirmedBy(u) => Cow::Owned(format!("{CONFIRMED_BY}{u}")),
            Confirm::RetriedBy(u) => Cow::Owned(format!("{RETRIED_BY}{u}")),
            Confirm::Other(s) => Cow::Borrowed(s),
        }
    }
}

impl std::fmt::Display for Confirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

impl Serialize for Confirm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

impl<'de> Deserialize<'de> for Confirm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Confirm::parse(&String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Approval, Subtask, Task, TaskSummary};

    /// Rows as the release before these types stored them (compact JSON,
    /// fields in declaration order, states as plain strings).
    const TASK: &str = r#"{"id":7,"projectid":3,"uuid":"Abcdefghijkl","name":"web","group":"g1","user":"alice","slave":"jobx1","status":"fail","created_ms":1000,"start_ms":1001,"finish_ms":2000,"calltype":"page","reason":"batch 1 failed","variable":{"_rollbackVersion_":"v1","version":"v2"},"vars":{"_rollbackVersion_":"v1","version":"v2"},"steps":[{"uuid":"s1","name":"run","plugin":"local","timeout":60,"action":"always","batches":"always","kind":"cmd","script":"true","interpreter":"sh"},{"uuid":"s2","name":"ok?","plugin":"approval","timeout":30,"action":"deploy","batches":"firsttime","approvers":["bob"],"message":"go","everyone":false}],"nodes":{"n1":{"name":"n1","host":"10.0.0.1","port":22,"labels":{"role":"web"}}},"batches":2,"action":"deploy","stopped_by":null,"decision":"pending","policy":{"tolerate":null,"tolerate_total":null,"pause_after":[],"batch_wait":0}}"#;

    fn subtask_row(status: &str, confirm: &str) -> String {
        format!(
            r#"{{"id":11,"parent_uuid":"Abcdefghijkl","uuid":"Bcdefghijklm","idx":0,"nodes":["n1"],"status":"{status}","confirm":{confirm},"start_ms":1001,"finish_ms":1500,"reason":"","failed_step":null,"failed_nodes":[],"retry":false}}"#
        )
    }

    fn approval_row(opinions: &str, status: &str) -> String {
        format!(
            r#"{{"uuid":"Cdefghijklmn","projectid":3,"taskuuid":"Abcdefghijkl","subtaskuuid":"Bcdefghijklm","step":"ok?","approvers":["bob","carol"],"message":"go","everyone":true,"created_ms":1002,"deadline_ms":31002,"opinions":{opinions},"status":"{status}"}}"#
        )
    }

    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(row: &str) -> T {
        let v: T = serde_json::from_str(row).expect("an old row loads");
        assert_eq!(serde_json::to_string(&v).expect("serialize"), row);
        v
    }

    #[test]
    fn old_task_rows_load_and_store_the_same_bytes() {
        let t: Task = round_trip(TASK);
        assert_eq!(t.status, TaskStatus::Fail);
        assert_eq!(t.action, Action::Deploy);
        assert_eq!(t.decision, Decision::Pending);
        let cases = [
            (
                "init",
                "deploy",
                "pending",
                TaskStatus::Init,
                Action::Deploy,
                Decision::Pending,
            ),
            (
                "running",
                "rollback",
                "",
                TaskStatus::Running,
                Action::Rollback,
                Decision::None,
            ),
            (
                "success",
                "deploy",
                "rollback",
                TaskStatus::Success,
                Action::Deploy,
                Decision::Rollback,
            ),
            (
                "success",
                "deploy",
                "norollback",
                TaskStatus::Success,
                Action::Deploy,
                Decision::NoRollback,
            ),
            (
                "refuse",
                "deploy",
                "",
                TaskStatus::Refuse,
                Action::Deploy,
                Decision::None,
            ),
        ];
        for (status, action, decision, want_status, want_action, want_decision) in cases {
            let row = TASK
                .replace(r#""status":"fail""#, &format!(r#""status":"{status}""#))
                .replace(
                    r#""action":"deploy","stopped_by""#,
                    &format!(r#""action":"{action}","stopped_by""#),
                )
                .replace(
                    r#""decision":"pending""#,
                    &format!(r#""decision":"{decision}""#),
                );
            let t: Task = round_trip(&row);
            assert_eq!(
                (t.status, t.action, t.decision),
                (want_status, want_action, want_decision),
                "{status} {action} {decision:?}"
            );
        }
        // A row written before decisions existed has none.
        let old = TASK.replace(r#","decision":"pending""#, "");
        let s: TaskSummary = serde_json::from_str(&old).expect("summary");
        assert_eq!((s.status, s.decision), (TaskStatus::Fail, Decision::None));
    }

    #[test]
    fn old_subtask_rows_load_and_store_the_same_bytes() {
        let cases = [
            ("init", "null", BatchStatus::Init, None),
            (
                "running",
                r#""""#,
                BatchStatus::Running,
                Some(Confirm::Passed),
            ),
            (
                "success",
                r#""""#,
                BatchStatus::Success,
                Some(Confirm::Passed),
            ),
            (
                "success",
                r#""WaitConfirm""#,
                BatchStatus::Success,
                Some(Confirm::Waiting),
            ),
            (
                "fail",
                r#""WaitConfirm""#,
                BatchStatus::Fail,
                Some(Confirm::Waiting),
            ),
            (
                "fail",
                r#""confirmed by alice""#,
                BatchStatus::Fail,
                Some(Confirm::ConfirmedBy("alice".into())),
            ),
            (
                "fail",
                r#""retried by bob smith""#,
                BatchStatus::Fail,
                Some(Confirm::RetriedBy("bob smith".into())),
            ),
            (
                "fail",
                r#""task stop""#,
                BatchStatus::Fail,
                Some(Confirm::TaskStop),
            ),
            ("refuse", "null", BatchStatus::Refuse, None),
            ("cancel", "null", BatchStatus::Cancel, None),
            // text this version never writes still loads, and is kept
            (
                "fail",
                r#""checked by ops""#,
                BatchStatus::Fail,
                Some(Confirm::Other("checked by ops".into())),
            ),
        ];
        for (status, confirm, want_status, want_confirm) in cases {
            let s: Subtask = round_trip(&subtask_row(status, confirm));
            assert_eq!(
                (s.status, s.confirm),
                (want_status, want_confirm),
                "{status} {confirm}"
            );
        }
    }

    #[test]
    fn old_approval_rows_load_and_store_the_same_bytes() {
        let cases = [
            ("{}", "pending", ApprovalStatus::Pending),
            (r#"{"bob":"agree"}"#, "pending", ApprovalStatus::Pending),
            (
                r#"{"bob":"agree","carol":"agree"}"#,
                "agree",
                ApprovalStatus::Agree,
            ),
            (r#"{"carol":"refuse"}"#, "refuse", ApprovalStatus::Refuse),
            ("{}", "timeout", ApprovalStatus::Timeout),
            ("{}", "cancel", ApprovalStatus::Cancel),
        ];
        for (opinions, status, want) in cases {
            let a: Approval = round_trip(&approval_row(opinions, status));
            assert_eq!(a.status, want);
        }
        let a: Approval = round_trip(&approval_row(
            r#"{"bob":"agree","carol":"refuse"}"#,
            "refuse",
        ));
        assert_eq!(a.opinions["bob"], Opinion::Agree);
        assert_eq!(a.opinions["carol"], Opinion::Refuse);
    }

    #[test]
    fn closed_sets_reject_unknown_text() {
        assert!(serde_json::from_str::<TaskStatus>(r#""done""#).is_err());
        assert!(serde_json::from_str::<BatchStatus>(r#""Success""#).is_err());
        assert!(serde_json::from_str::<Decision>(r#""maybe""#).is_err());
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(*s));
        }
    }

    #[test]
    fn the_api_shows_the_same_strings() {
        let t: Task = serde_json::from_str(TASK).expect("task");
        let v = t.to_api(None);
        assert_eq!(v["status"], "fail");
        assert_eq!(v["action"], "deploy");
        assert_eq!(v["decision"], "pending");
        let s: Subtask = serde_json::from_str(&subtask_row("fail", r#""task stop""#)).expect("sub");
        let v = s.to_api();
        assert_eq!(
            (v["status"].as_str(), v["confirm"].as_str()),
            (Some("fail"), Some("task stop"))
        );
        let s: Subtask = serde_json::from_str(&subtask_row("init", "null")).expect("sub");
        assert!(s.to_api()["confirm"].is_null());
    }
}
