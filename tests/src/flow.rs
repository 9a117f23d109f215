//! Helpers for tests that run tasks: set up a project, start a task, wait
//! for states, read logs, look for step processes on this machine.

use crate::daemon::{wait_for, Daemon, ADMIN};
use serde_json::{json, Value};
use std::time::Duration;

/// Adds nodes named `names` to `project`.
pub fn nodes(d: &Daemon, project: u64, names: &[&str]) {
    let list: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
    d.ok_post(&format!("/node/{project}"), json!({ "nodes": list }));
}

pub fn group(d: &Daemon, project: u64, name: &str, ty: &str, text: &str) -> u64 {
    let field = if ty == "list" { "node" } else { "percent" };
    let v = d.ok_post(
        &format!("/group/{project}"),
        json!({"name": name, "group_type": ty, field: text}),
    );
    v["data"]["id"].as_u64().expect("group id")
}

pub fn job(d: &Daemon, project: u64, name: &str, steps: Value) -> Value {
    d.ok_post(
        &format!("/job/{project}"),
        json!({"name": name, "steps": steps}),
    )["data"]
        .clone()
}

/// Starts a task; answers its uuid.
pub fn start(d: &Daemon, project: u64, jobname: &str, group: &str, variable: Value) -> String {
    let v = d.ok_post(
        &format!("/task/{project}/job/byname"),
        json!({"jobname": jobname, "group": group, "variable": variable}),
    );
    v["uuid"].as_str().expect("task uuid").to_string()
}

pub fn task(d: &Daemon, project: u64, uuid: &str) -> Value {
    d.data(&format!("/task/{project}/{uuid}"))
}

pub fn subtasks(d: &Daemon, project: u64, uuid: &str) -> Vec<Value> {
    d.data(&format!("/subtask/{project}/{uuid}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until the task has ended; answers it.
pub fn wait_finished(d: &Daemon, project: u64, uuid: &str, timeout: Duration) -> Value {
    wait_for(&format!("task {uuid} to finish"), timeout, || {
        let t = task(d, project, uuid);
        matches!(t["status"].as_str(), Some("success" | "fail" | "refuse")).then_some(t)
    })
}

/// Waits until batch `idx` of the task waits for confirmation; answers the batches.
pub fn wait_confirm(
    d: &Daemon,
    project: u64,
    uuid: &str,
    idx: usize,
    timeout: Duration,
) -> Vec<Value> {
    wait_for(
        &format!("batch {idx} of {uuid} to wait for confirmation"),
        timeout,
        || {
            let s = subtasks(d, project, uuid);
            (s.get(idx)?["confirm"] == "WaitConfirm").then_some(s)
        },
    )
}

/// The plain-text log of a key.
pub fn log_text(d: &Daemon, key: &str) -> String {
    let (st, v) = d.get(&format!("/slave/test-slave/log/{key}?format=text"), ADMIN);
    assert_eq!(st, 200, "log {key}: {v}");
    v.as_str()
        .map(String::from)
        .unwrap_or_else(|| v.to_string())
}

/// Processes on this machine (other than the caller) whose command line
/// contains `marker`, as (pid, command line). sshd and agents run on this
/// machine, so this is also how tests see what is left "on the node".
pub fn processes_matching(marker: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    crate::procs::pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .map(|pid| (pid, crate::procs::cmdline(pid)))
        .filter(|(_, cmd)| cmd.contains(marker))
        .collect()
}

/// A marker unique to this test run, for finding step processes.
pub fn marker(tag: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("jobxmark-{tag}-{}-{n}-{nanos}", std::process::id())
}
