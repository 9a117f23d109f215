//! The sequence most end-to-end tests start with — nodes, a group, a job,
//! a task, a wait — as a project handle and a task handle over one daemon.
//! Built on `flow`, so both speak to the daemon the same way.
//!
//! ```no_run
//! # use jobx_tests::daemon::Daemon;
//! # use serde_json::json;
//! let d = Daemon::start("");
//! let p = d.project(10);
//! p.nodes(&["a", "b"]);
//! p.group("g", "list", "a;b");
//! p.job("deploy", json!([{"plugin": "local", "script": "true"}]));
//! let t = p.run("deploy", "g", json!({}));
//! assert_eq!(t.wait_finished()["status"], "success");
//! ```

use crate::daemon::Daemon;
use crate::flow;
use serde_json::{json, Value};
use std::time::Duration;

/// How long a wait of this module lasts when the test names none.
pub const WAIT: Duration = Duration::from_secs(30);

impl Daemon {
    /// A handle on project `id` of this daemon.
    pub fn project(&self, id: u64) -> Project<'_> {
        Project { d: self, id }
    }
}

/// One project of a running daemon; every call goes through the HTTP API
/// as admin.
#[derive(Clone, Copy)]
pub struct Project<'d> {
    pub d: &'d Daemon,
    pub id: u64,
}

impl<'d> Project<'d> {
    /// Adds (or updates) nodes named `names`.
    pub fn nodes(&self, names: &[&str]) {
        flow::nodes(self.d, self.id, names);
    }

    /// Saves a group (`ty` is "list" or "percent"); answers its id.
    pub fn group(&self, name: &str, ty: &str, text: &str) -> u64 {
        flow::group(self.d, self.id, name, ty, text)
    }

    /// The batches group `id` plans over the current inventory.
    pub fn group_batches(&self, id: u64) -> Vec<Vec<String>> {
        serde_json::from_value(self.d.data(&format!("/group/{}/{id}/node", self.id)))
            .expect("batches")
    }

    /// Saves job `name` with `steps`; answers the stored job.
    pub fn job(&self, name: &str, steps: Value) -> Value {
        flow::job(self.d, self.id, name, steps)
    }

    /// Starts job `jobname` on `group` with `variable`.
    pub fn run(&self, jobname: &str, group: &str, variable: Value) -> TaskRef<'d> {
        let uuid = flow::start(self.d, self.id, jobname, group, variable);
        self.task(&uuid)
    }

    /// A handle on a task that exists already (started by another route).
    pub fn task(&self, uuid: &str) -> TaskRef<'d> {
        TaskRef {
            p: *self,
            uuid: uuid.to_string(),
        }
    }

    /// The plain-text log of any key (task, batch or step).
    pub fn log_text(&self, key: &str) -> String {
        flow::log_text(self.d, key)
    }
}

/// One task of a project.
#[derive(Clone)]
pub struct TaskRef<'d> {
    pub p: Project<'d>,
    pub uuid: String,
}

impl TaskRef<'_> {
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// The task as the API shows it now.
    pub fn get(&self) -> Value {
        flow::task(self.p.d, self.p.id, &self.uuid)
    }

    /// Its batches as the API shows them now.
    pub fn subtasks(&self) -> Vec<Value> {
        flow::subtasks(self.p.d, self.p.id, &self.uuid)
    }

    /// The uuid of batch `idx`.
    pub fn batch_uuid(&self, idx: usize) -> String {
        let subs = self.subtasks();
        subs.get(idx)
            .and_then(|s| s["uuid"].as_str())
            .unwrap_or_else(|| panic!("batch {idx} of {}: {subs:?}", self.uuid))
            .to_string()
    }

    /// Waits (up to `WAIT`) until the task has ended; answers it.
    pub fn wait_finished(&self) -> Value {
        self.wait_finished_within(WAIT)
    }

    pub fn wait_finished_within(&self, timeout: Duration) -> Value {
        flow::wait_finished(self.p.d, self.p.id, &self.uuid, timeout)
    }

    /// Waits until the task has ended and requires it to have succeeded.
    pub fn wait_success(&self) -> Value {
        let t = self.wait_finished();
        assert_eq!(t["status"], "success", "task {}: {t}", self.uuid);
        t
    }

    /// Waits (up to `WAIT`) until batch `idx` waits for confirmation;
    /// answers the batches.
    pub fn wait_confirm(&self, idx: usize) -> Vec<Value> {
        flow::wait_confirm(self.p.d, self.p.id, &self.uuid, idx, WAIT)
    }

    /// The plain-text log of the whole task.
    pub fn log_text(&self) -> String {
        flow::log_text(self.p.d, &self.uuid)
    }

    /// Confirms waiting batch `idx` as admin: `action` "continue" or
    /// "retry", or `None` for the daemon's default.
    pub fn confirm(&self, idx: usize, action: Option<&str>) -> Value {
        let body = match action {
            Some(a) => json!({ "action": a }),
            None => json!({}),
        };
        let b = self.batch_uuid(idx);
        self.p
            .d
            .ok_put(&format!("/subtask/{}/{b}/confirm", self.p.id), body)
    }

    /// Stops the task as admin.
    pub fn stop(&self) -> Value {
        self.p
            .d
            .ok_put(&format!("/task/{}/{}", self.p.id, self.uuid), json!({}))
    }

    /// Asks for the rollback of this deploy as admin; answers the rollback
    /// task and the whole reply.
    pub fn rollback(&self) -> (Self, Value) {
        let v = self.p.d.ok_put(
            &format!("/task/{}/{}/rollback", self.p.id, self.uuid),
            json!({}),
        );
        let rb = v["uuid"].as_str().expect("rollback uuid").to_string();
        (self.p.task(&rb), v)
    }

    /// A request on one of the task's own routes (`/task/:p/:uuid{rest}`)
    /// with `token`, for tests that look at the refusals.
    pub fn put_as(&self, rest: &str, token: &str) -> (u16, Value) {
        self.p.d.put(
            &format!("/task/{}/{}{rest}", self.p.id, self.uuid),
            token,
            json!({}),
        )
    }
}
