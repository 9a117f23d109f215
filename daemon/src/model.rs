//! The stored entities, as JSON documents in redb and on the wire.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod states;
pub use states::*;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Node {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Node {
    /// The address to reach the node at: `host`, defaulting to the name.
    pub fn address(&self) -> &str {
        self.host.as_deref().unwrap_or(&self.name)
    }

    pub fn to_api(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "host": self.address(),
            "port": self.port,
            "user": self.user,
            "labels": self.labels,
        })
    }
}

/// One step of a job, validated (see `jobs::validate_steps`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub uuid: String,
    pub name: String,
    pub plugin: String,
    pub timeout: u64,
    pub action: String,
    pub batches: String,
    /// `cmd` or `scp` for executor steps; absent for approvals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chmod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub everyone: Option<bool>,
    /// Parameters of custom plugins, passed through untouched.
    #[serde(default, flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    pub steps: Vec<Step>,
    pub edit_time: i64,
    /// Rollout policy of the job's tasks (task variables win over it).
    #[serde(default, skip_serializing_if = "crate::policy::Policy::is_default")]
    pub policy: crate::policy::Policy,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Group {
    pub id: u64,
    pub projectid: u64,
    pub name: String,
    pub note: String,
    pub group_type: String,
    /// The group text (`node` for list groups, `percent` for percent groups).
    pub text: String,
    pub edit_time: i64,
    /// Label selector applied to the inventory before the batching rule
    /// (`labels::Selector`); empty = every node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub labels: String,
}

impl Group {
    pub fn to_api(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "projectid": self.projectid,
            "name": self.name,
            "note": self.note,
            "group_type": self.group_type,
            "edit_time": crate::clock::local(self.edit_time),
            "labels": self.labels,
        });
        let field = if self.group_type == "list" {
            "node"
        } else {
            "percent"
        };
        v[field] = serde_json::Value::String(self.text.clone());
        v
    }

    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "note": self.note,
            "group_type": self.group_type,
            "edit_time": crate::clock::local(self.edit_time),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpLog {
    pub id: u64,
    pub user: String,
    pub title: String,
    pub info: String,
    pub time: i64,
}

impl OpLog {
    pub fn to_api(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "user": self.user,
            "title": self.title,
            "info": self.info,
            "create_time": crate::clock::local(self.time),
        })
    }
}

/// What a task waits for a person to do (the `waiting` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitKind {
    /// A failed batch waits in `WaitConfirm`.
    Confirm,
    /// An approval step waits for its approvers.
    Approval,
    /// A finished deploy with `_rollbackVersion_` waits for rollback / norollback.
    RollbackDecision,
}

impl WaitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitKind::Confirm => "confirm",
            WaitKind::Approval => "approval",
            WaitKind::RollbackDecision => "rollback_decision",
        }
    }
}

/// What a task waits for, and on which batch or approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub kind: WaitKind,
    /// The batch uuid (confirm) or approval uuid (approval).
    pub on: Option<String>,
}

/// One execution of a job over a group (a deploy, or a rollback partner).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    pub id: u64,
    pub projectid: u64,
    pub uuid: String,
    /// The job name.
    pub name: String,
    /// The group the batches came from (name, `val=…`, `_pip_` or a node).
    pub group: String,
    pub user: String,
    pub slave: String,
    pub status: TaskStatus,
    pub created_ms: i64,
    pub start_ms: Option<i64>,
    pub finish_ms: Option<i64>,
    pub calltype: String,
    pub reason: String,
    /// The `variable` object exactly as given at creation.
    pub variable: serde_json::Value,
    /// Normalised variables (name → text) the steps see.
    pub vars: BTreeMap<String, String>,
    /// The job as it was when the task was created.
    pub steps: Vec<Step>,
    /// The nodes of the batches as they were when the task was created.
    pub nodes: BTreeMap<String, Node>,
    pub batches: u32,
    pub action: Action,
    /// Set once by a stop; never cleared (the stop is sticky).
    pub stopped_by: Option<String>,
    /// Rollback decision of a deploy.
    pub decision: Decision,
    /// Failure tolerance, canary gates and pacing, parsed at creation.
    #[serde(default)]
    pub policy: crate::policy::Policy,
}

impl Task {
    pub fn is_finished(&self) -> bool {
        self.status.is_final()
    }

    pub fn runtime(&self) -> Option<String> {
        let start = self.start_ms?;
        let end = self.finish_ms.unwrap_or_else(crate::clock::now_ms);
        Some(format!("{:.3}", (end - start).max(0) as f64 / 1000.0))
    }

    /// The uuid of the partner task: the rollback of a deploy that was
    /// rolled back, the deploy of a rollback.
    pub fn partner(&self) -> Option<String> {
        if self.action == Action::Rollback {
            let mut u = self.uuid.clone();
            let last = u.pop()?;
            u.push(last.to_ascii_lowercase());
            Some(u)
        } else if self.decision == Decision::Rollback {
            Some(crate::ids::rollback_of(&self.uuid))
        } else {
            None
        }
    }

    /// The task as the API shows it; `waiting` is derived by the engine.
    pub fn to_api(&self, waiting: Option<&Waiting>) -> serde_json::Value {
        let partner = self.partner();
        let (rollback_uuid, deploy_uuid) = if self.action == Action::Rollback {
            (None, partner)
        } else {
            (partner, None)
        };
        serde_json::json!({
            "id": self.id,
            "projectid": self.projectid,
            "uuid": self.uuid,
            "name": self.name,
            "group": self.group,
            "user": self.user,
            "slave": self.slave,
            "status": self.status,
            "starttime": self.start_ms.map(crate::clock::local),
            "finishtime": self.finish_ms.map(crate::clock::local),
            "starttimems": self.start_ms.map(|m| m as f64 / 1000.0),
            "finishtimems": self.finish_ms.map(|m| m as f64 / 1000.0),
            "runtime": self.runtime(),
            "calltype": self.calltype,
            "reason": self.reason,
            "variable": crate::vars::yaml_text(&self.variable),
            "variables": self.variable,
            "waiting": waiting.map(|w| w.kind.as_str()),
            "waiting_on": waiting.and_then(|w| w.on.clone()),
            "action": self.action,
            "decision": self.decision,
            "rollback_uuid": rollback_uuid,
            "deploy_uuid": deploy_uuid,
            "batches": self.batches,
            "stopped_by": self.stopped_by,
            "policy": self.policy,
        })
    }
}

/// The few fields of a task that statistics need; reading only these
/// skips the task's job and node snapshots.
#[derive(Clone, Debug, Deserialize)]
pub struct TaskSummary {
    #[serde(default)]
    pub uuid: String,
    #[serde(default)]
    pub decision: Decision,
    pub status: TaskStatus,
    pub created_ms: i64,
    pub start_ms: Option<i64>,
    pub finish_ms: Option<i64>,
}

impl TaskSummary {
    pub fn is_finished(&self) -> bool {
        self.status.is_final()
    }
}

/// One batch of a task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Subtask {
    pub id: u64,
    pub parent_uuid: String,
    pub uuid: String,
    /// 0-based position in the task.
    pub idx: u32,
    pub nodes: Vec<String>,
    pub status: BatchStatus,
    pub confirm: Option<Confirm>,
    pub start_ms: Option<i64>,
    pub finish_ms: Option<i64>,
    pub reason: String,
    /// Where a failed batch stopped: the step index and the nodes it failed on
    /// (what a retry re-runs).
    pub failed_step: Option<usize>,
    pub failed_nodes: Vec<String>,
    /// Set by "retry": the next run starts at `failed_step` on `failed_nodes`.
    pub retry: bool,
}

impl Subtask {
    pub fn waiting(&self) -> bool {
        self.confirm == Some(Confirm::Waiting)
    }

    pub fn to_api(&self) -> serde_json::Value {
        let runtime = self.start_ms.map(|s| {
            let end = self.finish_ms.unwrap_or_else(crate::clock::now_ms);
            format!("{:.3}", (end - s).max(0) as f64 / 1000.0)
        });
        serde_json::json!({
            "id": self.id,
            "parent_uuid": self.parent_uuid,
            "uuid": self.uuid,
            "nodelist": self.nodes.join(","),
            "nodecount": self.nodes.len(),
            "starttime": self.start_ms.map(crate::clock::local),
            "finishtime": self.finish_ms.map(crate::clock::local),
            "runtime": runtime,
            "status": self.status,
            "confirm": self.confirm,
            "reason": self.reason,
            "idx": self.idx,
            "nodes": self.nodes,
            "failed_nodes": self.failed_nodes,
        })
    }
}

/// A pending or decided approval step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Approval {
    pub uuid: String,
    pub projectid: u64,
    pub taskuuid: String,
    pub subtaskuuid: String,
    pub step: String,
    pub approvers: Vec<String>,
    pub message: String,
    pub everyone: bool,
    pub created_ms: i64,
    pub deadline_ms: i64,
    pub opinions: BTreeMap<String, Opinion>,
    pub status: ApprovalStatus,
}

impl Approval {
    pub fn to_api(&self) -> serde_json::Value {
        serde_json::json!({
            "uuid": self.uuid,
            "taskuuid": self.taskuuid,
            "subtaskuuid": self.subtaskuuid,
            "step": self.step,
            "approvers": self.approvers,
            "message": self.message,
            "everyone": self.everyone,
            "opinions": self.opinions,
            "status": self.status,
            "create_time": crate::clock::local(self.created_ms),
        })
    }
}

/// One line of step output or one step event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogRecord {
    pub time: i64,
    pub node: String,
    /// stdout, stderr or info.
    pub stream: String,
    pub text: String,
}
