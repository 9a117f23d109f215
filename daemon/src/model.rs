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

    /// The task as the API shows it; `waiting` is derived by the engine.
    /// The same bytes as its list row (`TaskBrief::write_row`).
    pub fn to_api(&self, waiting: Option<&Waiting>) -> serde_json::Value {
        let mut row = Vec::new();
        self.brief()
            .write_row(waiting, crate::clock::now_ms(), &mut row);
        serde_json::from_slice(&row).unwrap_or(serde_json::Value::Null)
    }

    /// The task's list row (see `TaskBrief`).
    pub fn brief(&self) -> TaskBrief {
        let partner = partner_of(self.action, self.decision, &self.uuid);
        let (rollback_uuid, deploy_uuid) = if self.action == Action::Rollback {
            (None, partner)
        } else {
            (partner, None)
        };
        let fixed = RowFixed {
            action: self.action,
            batches: self.batches,
            calltype: &self.calltype,
            decision: self.decision,
            deploy_uuid,
            finishtimems: self.finish_ms.map(|m| m as f64 / 1000.0),
            group: &self.group,
            id: self.id,
            name: &self.name,
            policy: PolicyApi(&self.policy),
            projectid: self.projectid,
            reason: &self.reason,
            rollback_uuid,
            // Counting up while the task runs: written with each answer.
            runtime: (self.start_ms.is_none() || self.finish_ms.is_some())
                .then(|| runtime(self.start_ms, self.finish_ms, 0)),
            slave: &self.slave,
            starttimems: self.start_ms.map(|m| m as f64 / 1000.0),
            status: self.status,
            stopped_by: self.stopped_by.as_deref(),
            user: &self.user,
            uuid: &self.uuid,
            variable: crate::vars::yaml_text(&self.variable),
            variables: &self.variable,
        };
        let mut members = serde_json::to_string(&fixed).unwrap_or_else(|_| "{}".into());
        // `{…}` → `…`: the members go inside the row's braces.
        members.pop();
        members.remove(0);
        TaskBrief {
            id: self.id,
            projectid: self.projectid,
            created_ms: self.created_ms,
            start_ms: self.start_ms,
            finish_ms: self.finish_ms,
            status: self.status,
            decision: self.decision,
            action: self.action,
            stopped: self.stopped_by.is_some(),
            uuid: self.uuid.clone(),
            name: self.name.clone(),
            user: self.user.clone(),
            members,
        }
    }
}

/// The uuid of the partner task: the rollback of a deploy that was rolled
/// back, the deploy of a rollback.
fn partner_of(action: Action, decision: Decision, uuid: &str) -> Option<String> {
    if action == Action::Rollback {
        let mut u = uuid.to_string();
        let last = u.pop()?;
        u.push(last.to_ascii_lowercase());
        Some(u)
    } else if decision == Decision::Rollback {
        Some(crate::ids::rollback_of(uuid))
    } else {
        None
    }
}

/// A task's list row, stored beside the task (`task_briefs`) and written in
/// the same transaction whenever the task changes, so that listing never
/// decodes the job and node snapshots: the fields that filters, statistics
/// and `waiting` look at, and `members`, the row's members that change only
/// with the task, rendered once as JSON text when the task is written. A
/// list row is `members` plus the members that depend on the time of the
/// answer (local times, runtime, `waiting`), copied out without decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskBrief {
    pub id: u64,
    pub projectid: u64,
    pub created_ms: i64,
    pub start_ms: Option<i64>,
    pub finish_ms: Option<i64>,
    pub status: TaskStatus,
    pub decision: Decision,
    pub action: Action,
    /// A stop was asked for.
    pub stopped: bool,
    pub uuid: String,
    pub name: String,
    pub user: String,
    /// `"action":…,"batches":…,…`: JSON object members without the braces.
    pub members: String,
}

impl TaskBrief {
    pub fn runtime(&self) -> Option<String> {
        runtime(self.start_ms, self.finish_ms, crate::clock::now_ms())
    }

    pub fn view(&self) -> BriefView<'_> {
        BriefView {
            id: self.id,
            projectid: self.projectid,
            created_ms: self.created_ms,
            start_ms: self.start_ms,
            finish_ms: self.finish_ms,
            status: self.status,
            decision: self.decision,
            action: self.action,
            stopped: self.stopped,
            uuid: &self.uuid,
            name: &self.name,
            user: &self.user,
            members: &self.members,
        }
    }

    /// See `BriefView::waits_for_nothing`.
    pub fn waits_for_nothing(&self) -> bool {
        self.view().waits_for_nothing()
    }

    /// See `BriefView::write_row`.
    pub fn write_row(&self, waiting: Option<&Waiting>, now: i64, out: &mut Vec<u8>) {
        self.view().write_row(waiting, now, out)
    }
}

/// A brief read in place (its texts borrowed from the stored bytes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BriefView<'a> {
    pub id: u64,
    pub projectid: u64,
    pub created_ms: i64,
    pub start_ms: Option<i64>,
    pub finish_ms: Option<i64>,
    pub status: TaskStatus,
    pub decision: Decision,
    pub action: Action,
    pub stopped: bool,
    pub uuid: &'a str,
    pub name: &'a str,
    pub user: &'a str,
    pub members: &'a str,
}

impl BriefView<'_> {
    pub fn to_brief(self) -> TaskBrief {
        TaskBrief {
            id: self.id,
            projectid: self.projectid,
            created_ms: self.created_ms,
            start_ms: self.start_ms,
            finish_ms: self.finish_ms,
            status: self.status,
            decision: self.decision,
            action: self.action,
            stopped: self.stopped,
            uuid: self.uuid.to_string(),
            name: self.name.to_string(),
            user: self.user.to_string(),
            members: self.members.to_string(),
        }
    }

    /// Whether what the task waits for can be told without its row: a
    /// finished task without a pending rollback decision waits for nothing.
    pub fn waits_for_nothing(&self) -> bool {
        self.status.is_final() && self.decision != Decision::Pending
    }

    /// Appends the task's API row (a JSON object) to `out`.
    pub fn write_row(&self, waiting: Option<&Waiting>, now: i64, out: &mut Vec<u8>) {
        use std::io::Write;
        out.push(b'{');
        out.extend_from_slice(self.members.as_bytes());
        out.extend_from_slice(b",\"finishtime\":");
        local_time(self.finish_ms, out);
        if let (Some(_), None) = (self.start_ms, self.finish_ms) {
            if let Some(r) = runtime(self.start_ms, None, now) {
                // Digits and a dot: nothing to escape.
                let _ = write!(out, ",\"runtime\":\"{r}\"");
            }
        }
        out.extend_from_slice(b",\"starttime\":");
        local_time(self.start_ms, out);
        out.extend_from_slice(b",\"waiting\":");
        match waiting {
            Some(w) => {
                let _ = serde_json::to_writer(&mut *out, w.kind.as_str());
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"waiting_on\":");
        match waiting.and_then(|w| w.on.as_deref()) {
            Some(on) => {
                let _ = serde_json::to_writer(&mut *out, on);
            }
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
}

impl From<&TaskBrief> for TaskSummary {
    fn from(b: &TaskBrief) -> TaskSummary {
        TaskSummary {
            uuid: b.uuid.clone(),
            decision: b.decision,
            status: b.status,
            created_ms: b.created_ms,
            start_ms: b.start_ms,
            finish_ms: b.finish_ms,
        }
    }
}

fn runtime(start: Option<i64>, finish: Option<i64>, now: i64) -> Option<String> {
    let start = start?;
    let end = finish.unwrap_or(now);
    Some(format!("{:.3}", (end - start).max(0) as f64 / 1000.0))
}

/// `"YYYY-MM-DD HH:MM:SS"` in local time as `clock::local` writes it, or `null`.
fn local_time(ms: Option<i64>, out: &mut Vec<u8>) {
    use chrono::{Datelike, TimeZone, Timelike};
    let Some(ms) = ms else {
        out.extend_from_slice(b"null");
        return;
    };
    match chrono::Local.timestamp_millis_opt(ms).single() {
        // Written digit by digit: `format` would parse its pattern per call.
        Some(t) if (0..=9999).contains(&t.year()) => {
            let digits = |out: &mut Vec<u8>, n: u32, width: u32| {
                for i in (0..width).rev() {
                    out.push(b'0' + (n / 10u32.pow(i) % 10) as u8);
                }
            };
            out.push(b'"');
            digits(out, t.year() as u32, 4);
            out.push(b'-');
            digits(out, t.month(), 2);
            out.push(b'-');
            digits(out, t.day(), 2);
            out.push(b' ');
            digits(out, t.hour(), 2);
            out.push(b':');
            digits(out, t.minute(), 2);
            out.push(b':');
            digits(out, t.second(), 2);
            out.push(b'"');
        }
        _ => {
            let _ = serde_json::to_writer(&mut *out, &crate::clock::local(ms));
        }
    }
}

/// The members of a task row that change only when the task does, in
/// alphabetical order.
#[derive(Serialize)]
struct RowFixed<'a> {
    action: Action,
    batches: u32,
    calltype: &'a str,
    decision: Decision,
    deploy_uuid: Option<String>,
    finishtimems: Option<f64>,
    group: &'a str,
    id: u64,
    name: &'a str,
    policy: PolicyApi<'a>,
    projectid: u64,
    reason: &'a str,
    rollback_uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<Option<String>>,
    slave: &'a str,
    starttimems: Option<f64>,
    status: TaskStatus,
    stopped_by: Option<&'a str>,
    user: &'a str,
    uuid: &'a str,
    variable: String,
    variables: &'a serde_json::Value,
}

/// A policy with its keys in alphabetical order, as a JSON tree had them.
struct PolicyApi<'a>(&'a crate::policy::Policy);

impl Serialize for PolicyApi<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let p = self.0;
        let mut st = s.serialize_struct("Policy", 4)?;
        st.serialize_field("batch_wait", &p.batch_wait)?;
        st.serialize_field("pause_after", &p.pause_after)?;
        st.serialize_field("tolerate", &p.tolerate)?;
        st.serialize_field("tolerate_total", &p.tolerate_total)?;
        st.end()
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

    /// The batch as the API answers it, ready to serialize (no JSON tree).
    pub fn api(&self) -> SubtaskApi<'_> {
        let runtime = self.start_ms.map(|s| {
            let end = self.finish_ms.unwrap_or_else(crate::clock::now_ms);
            format!("{:.3}", (end - s).max(0) as f64 / 1000.0)
        });
        SubtaskApi {
            confirm: self.confirm.as_ref(),
            failed_nodes: &self.failed_nodes,
            finishtime: self.finish_ms.map(crate::clock::local),
            id: self.id,
            idx: self.idx,
            nodecount: self.nodes.len(),
            nodelist: NodeList(&self.nodes),
            nodes: &self.nodes,
            parent_uuid: &self.parent_uuid,
            reason: &self.reason,
            runtime,
            starttime: self.start_ms.map(crate::clock::local),
            status: self.status,
            uuid: &self.uuid,
        }
    }

    pub fn to_api(&self) -> serde_json::Value {
        serde_json::to_value(self.api()).unwrap_or(serde_json::Value::Null)
    }
}

/// A batch as the API answers it, fields in alphabetical order (see `TaskApi`).
#[derive(Serialize)]
pub struct SubtaskApi<'a> {
    confirm: Option<&'a Confirm>,
    failed_nodes: &'a [String],
    finishtime: Option<String>,
    id: u64,
    idx: u32,
    nodecount: usize,
    nodelist: NodeList<'a>,
    nodes: &'a [String],
    parent_uuid: &'a str,
    reason: &'a str,
    runtime: Option<String>,
    starttime: Option<String>,
    status: BatchStatus,
    uuid: &'a str,
}

/// Node names joined by commas, written without building the joined text.
struct NodeList<'a>(&'a [String]);

impl Serialize for NodeList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Joined(self.0))
    }
}

struct Joined<'a>(&'a [String]);

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(n)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The task row as `to_api` built it before rows were serialized
    /// straight: a JSON tree (kept here as the reference).
    fn tree_row(t: &Task, waiting: Option<&Waiting>) -> Value {
        let partner = partner_of(t.action, t.decision, &t.uuid);
        let (rollback_uuid, deploy_uuid) = if t.action == Action::Rollback {
            (None, partner)
        } else {
            (partner, None)
        };
        json!({
            "id": t.id,
            "projectid": t.projectid,
            "uuid": t.uuid,
            "name": t.name,
            "group": t.group,
            "user": t.user,
            "slave": t.slave,
            "status": t.status,
            "starttime": t.start_ms.map(crate::clock::local),
            "finishtime": t.finish_ms.map(crate::clock::local),
            "starttimems": t.start_ms.map(|m| m as f64 / 1000.0),
            "finishtimems": t.finish_ms.map(|m| m as f64 / 1000.0),
            "runtime": t.brief().runtime(),
            "calltype": t.calltype,
            "reason": t.reason,
            "variable": crate::vars::yaml_text(&t.variable),
            "variables": t.variable,
            "waiting": waiting.map(|w| w.kind.as_str()),
            "waiting_on": waiting.and_then(|w| w.on.clone()),
            "action": t.action,
            "decision": t.decision,
            "rollback_uuid": rollback_uuid,
            "deploy_uuid": deploy_uuid,
            "batches": t.batches,
            "stopped_by": t.stopped_by,
            "policy": t.policy,
        })
    }

    fn tree_subtask(s: &Subtask) -> Value {
        let runtime = s.start_ms.map(|st| {
            let end = s.finish_ms.unwrap_or_else(crate::clock::now_ms);
            format!("{:.3}", (end - st).max(0) as f64 / 1000.0)
        });
        json!({
            "id": s.id,
            "parent_uuid": s.parent_uuid,
            "uuid": s.uuid,
            "nodelist": s.nodes.join(","),
            "nodecount": s.nodes.len(),
            "starttime": s.start_ms.map(crate::clock::local),
            "finishtime": s.finish_ms.map(crate::clock::local),
            "runtime": runtime,
            "status": s.status,
            "confirm": s.confirm,
            "reason": s.reason,
            "idx": s.idx,
            "nodes": s.nodes,
            "failed_nodes": s.failed_nodes,
        })
    }

    fn task() -> Task {
        serde_json::from_value(json!({
            "id": 7, "projectid": 3, "uuid": "Abcdefghijkl", "name": "web \"quoted\"",
            "group": "g1", "user": "alice", "slave": "jobx1", "status": "success",
            "created_ms": 1_700_000_000_000i64, "start_ms": 1_700_000_000_123i64,
            "finish_ms": 1_700_000_004_567i64, "calltype": "page", "reason": "",
            "variable": {"version": "v2", "n": 3, "list": [1, "a"], "_rollbackVersion_": "v1"},
            "vars": {"version": "v2"}, "steps": [], "nodes": {}, "batches": 2,
            "action": "deploy", "stopped_by": null, "decision": "rollback",
            "policy": {"tolerate": "10%", "tolerate_total": "2", "pause_after": [1, 3], "batch_wait": 5}
        }))
        .expect("task")
    }

    /// A list row as a client reads it.
    fn row(t: &Task, waiting: Option<&Waiting>, now: i64) -> Value {
        let mut out = Vec::new();
        t.brief().write_row(waiting, now, &mut out);
        serde_json::from_slice(&out).expect("a row is JSON")
    }

    #[test]
    fn task_rows_hold_what_the_tree_held() {
        let mut t = task();
        let waits = [
            None,
            Some(Waiting {
                kind: WaitKind::Confirm,
                on: Some("Bcdefghijklm\"".into()),
            }),
            Some(Waiting {
                kind: WaitKind::RollbackDecision,
                on: None,
            }),
        ];
        for w in &waits {
            assert_eq!(row(&t, w.as_ref(), 0), tree_row(&t, w.as_ref()));
            assert_eq!(t.to_api(w.as_ref()), tree_row(&t, w.as_ref()));
        }
        // A rollback that has not started, with no variables and no policy.
        t.uuid = "AbcdefghijkL".into();
        t.action = Action::Rollback;
        t.decision = Decision::None;
        t.start_ms = None;
        t.finish_ms = None;
        t.status = TaskStatus::Init;
        t.variable = json!({});
        t.policy = Default::default();
        t.stopped_by = Some("bob".into());
        assert_eq!(row(&t, None, 0), tree_row(&t, None));
        // Running: the runtime counts up to the moment of the answer.
        t.start_ms = Some(1_700_000_000_000);
        t.status = TaskStatus::Running;
        assert_eq!(row(&t, None, 1_700_000_002_500)["runtime"], "2.500");
    }

    #[test]
    fn a_brief_keeps_what_filters_and_statistics_read() {
        let t = task();
        let b = t.brief();
        assert_eq!(
            (
                b.id,
                b.projectid,
                b.uuid.as_str(),
                b.name.as_str(),
                b.user.as_str()
            ),
            (7, 3, "Abcdefghijkl", "web \"quoted\"", "alice")
        );
        assert_eq!(
            (b.status, b.decision, b.stopped),
            (t.status, t.decision, false)
        );
        let s = TaskSummary::from(&b);
        assert_eq!(
            (s.uuid.as_str(), s.finish_ms),
            ("Abcdefghijkl", t.finish_ms)
        );
        assert_eq!(b.runtime().as_deref(), Some("4.444"));
        assert!(b.waits_for_nothing());
    }

    #[test]
    fn subtask_rows_are_the_bytes_the_tree_gave() {
        let mut s: Subtask = serde_json::from_value(json!({
            "id": 11, "parent_uuid": "Abcdefghijkl", "uuid": "Bcdefghijklm", "idx": 1,
            "nodes": ["n1", "n\"2", "n3"], "status": "fail", "confirm": "confirmed by bob",
            "start_ms": 1_700_000_000_123i64, "finish_ms": 1_700_000_004_567i64,
            "reason": "exit 1", "failed_step": 0, "failed_nodes": ["n1"], "retry": false
        }))
        .expect("subtask");
        assert_eq!(
            serde_json::to_string(&s.api()).expect("row"),
            tree_subtask(&s).to_string()
        );
        s.nodes.clear();
        s.confirm = None;
        s.start_ms = None;
        s.finish_ms = None;
        assert_eq!(
            serde_json::to_string(&s.api()).expect("row"),
            tree_subtask(&s).to_string()
        );
    }
}
