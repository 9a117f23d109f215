//! Contract edge cases found in review, each through the real binary.

use jobx_tests::daemon::*;
use serde_json::json;

#[test]
fn a_task_uuid_can_not_take_a_batch_uuid_and_read_its_log() {
    let d = Daemon::start("");
    let p = d.project(10);
    p.nodes(&["n1"]);
    p.job(
        "secret",
        json!([{"plugin": "local", "script": "echo the-secret-of-10"}]),
    );
    let task = p.run("secret", "val=n1", json!({}));
    task.wait_finished();
    let batch = task.subtasks()[0]["uuid"]
        .as_str()
        .expect("batch uuid")
        .to_string();

    // Project 11 picks the batch's uuid for a task of its own.
    let (st, _) = d.post("/node/11", OTHER, json!({"nodes": [{"name": "m1"}]}));
    assert_eq!(st, 200);
    let (st, _) = d.post(
        "/job/11",
        OTHER,
        json!({"name": "j", "steps": [{"plugin": "local", "script": "true"}]}),
    );
    assert_eq!(st, 200);
    let (st, v) = d.post(
        "/task/11/job/byname",
        OTHER,
        json!({"jobname": "j", "group": "val=m1", "uuid": batch}),
    );
    assert_eq!(st, 409, "a batch uuid is taken: {v}");
    // The attempt letter that makes the third-party task uuid the batch's.
    let retry_count = batch.as_bytes()[11] - b'a';
    let (st, v) = d.post(
        "/third/interface/invoke",
        OTHER,
        json!({"project_id": 11, "uuid": batch, "retry_count": retry_count, "params": {"jobname": "j", "group": "val=m1"}}),
    );
    assert_eq!(st, 409, "a batch uuid is taken: {v}");

    // The batch's log stays project 10's: not readable from project 11,
    // readable by project 10's own readers.
    let path = format!("/slave/test-slave/log/{batch}?format=text");
    assert_eq!(d.get(&path, OTHER).0, 403);
    let (st, v) = d.get(&path, CONTROL10);
    assert_eq!(st, 200, "{v}");
    assert!(v.to_string().contains("the-secret-of-10"), "{v}");
}
#[test]
fn names_in_paths_are_percent_decoded() {
    let d = Daemon::start("");
    let p = d.project(10);
    p.nodes(&["web 1", "ü/2"]);
    p.job("deploy app", json!([{"plugin": "local", "script": "true"}]));
    let (st, v) = d.get("/job/10/deploy%20app", ADMIN);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["name"], "deploy app");
    assert_eq!(d.delete("/job/10/deploy%20app", ADMIN).0, 200);
    assert_eq!(d.data("/job/10"), json!([]));
    assert_eq!(d.delete("/node/10/web%201", ADMIN).0, 200);
    assert_eq!(d.delete("/node/10/%C3%BC%2F2", ADMIN).0, 200);
    assert_eq!(d.data("/node/10"), json!([]));
    // bytes that are not UTF-8 are bad input, not a missing thing
    let (st, v) = d.get("/job/10/%FF%FE", ADMIN);
    assert_eq!(st, 400, "{v}");
    assert!(v["info"].as_str().unwrap_or("").contains("name"), "{v}");
}
#[test]
fn third_party_calls_without_a_token_are_401_whether_the_task_exists_or_not() {
    let d = Daemon::start("");
    let p = d.project(10);
    p.nodes(&["n1"]);
    p.job("j", json!([{"plugin": "local", "script": "true"}]));
    let v = d.ok_post(
        "/third/interface/invoke",
        json!({"project_id": 10, "uuid": "Caller000001", "params": {"jobname": "j", "group": "val=n1"}}),
    );
    let uuid = v["uuid"].as_str().expect("uuid").to_string();
    p.task(&uuid).wait_finished();
    for path in ["/third/interface/query", "/third/interface/stop"] {
        for caller in ["Caller000001", "Nobody000001"] {
            let (st, v) = d.req("POST", path, None, Some(&json!({"uuid": caller})));
            assert_eq!(st, 401, "{path} {caller}: {v}");
        }
    }
    for path in ["/third/option/groupname", "/third/interface/dry-run"] {
        let (st, v) = d.req("POST", path, None, Some(&json!({})));
        assert_eq!(st, 401, "{path}: {v}");
    }
}

#[test]
fn nodebatch_is_honoured_only_by_job_byname_and_auth_comes_first() {
    let d = Daemon::start("");
    let p = d.project(10);
    p.nodes(&["n1", "n2"]);
    p.job("j", json!([{"plugin": "local", "script": "true"}]));
    // job/byname: the top-level field picks one node
    let v = d.ok_post(
        "/task/10/job/byname",
        json!({"jobname": "j", "_nodebatch_": "n2"}),
    );
    let u = v["uuid"].as_str().expect("uuid").to_string();
    assert_eq!(p.task(&u).subtasks()[0]["nodelist"], "n2");
    assert_eq!(
        p.task(&u).get()["variables"],
        json!({}),
        "the variable stays as given"
    );
    // third-party invoke: `_nodebatch_` among the variables does not replace `group`
    let (st, v) = d.post(
        "/third/interface/invoke",
        ADMIN,
        json!({"project_id": 10, "uuid": "NodeBatch001", "params": {"jobname": "j", "variable": {"_nodebatch_": "n1"}}}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["info"].as_str().unwrap_or("").contains("group"), "{v}");
    // no token: 401 even when the project id is malformed
    assert_eq!(d.req("GET", "/task/abc", None, None).0, 401);
    assert_eq!(d.req("GET", "/group/x/1", None, None).0, 401);
    assert_eq!(d.get("/task/abc", ADMIN).0, 400);
}
