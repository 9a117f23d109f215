//! Bad input never produces a 5xx or a panic, and never changes stored data.

use jobx_tests::daemon::*;
use serde_json::json;

#[test]
fn garbage_on_every_route_is_a_4xx_and_changes_nothing() {
    let d = Daemon::start("");
    let p = d.project(10);
    p.nodes(&["a", "b"]);
    p.group("g", "list", "a;b");
    p.job("j", json!([{"plugin": "local", "script": "true"}]));
    let before: Vec<_> = ["/node/10", "/group/10", "/job/10", "/task/10"]
        .iter()
        .map(|p| d.data(p))
        .collect();
    let log_before = d.data("/log/10");

    let routes: &[(&str, &str)] = &[
        ("POST", "/node/10"),
        ("DELETE", "/node/10/%00"),
        ("POST", "/job/10"),
        ("GET", "/job/10/%FF%FE"),
        ("POST", "/group/10"),
        ("POST", "/group/10/1"),
        ("POST", "/group/10/99999999999999999999999"),
        ("GET", "/group/10/-1/node"),
        ("POST", "/task/10/job/byname"),
        ("PUT", "/task/10/AAAAAAAAAAAa"),
        ("PUT", "/task/10/../rollback"),
        ("PUT", "/task/10/ÄÄÄÄÄÄÄÄÄÄÄÄ/rollback"),
        ("PUT", "/subtask/10/AAAAAAAAAAAa/confirm"),
        ("PUT", "/approval/10/AAAAAAAAAAAa"),
        ("GET", "/task/10?limit=-5&before_id=x"),
        ("GET", "/task/10?time_start=2026-13-45"),
        ("GET", "/task/99999999999999999999999"),
        ("GET", "/slave/test-slave/log/%3Cscript%3E"),
        ("GET", "/slave/test-slave/log/AAAAAAAAAAAaBBBBBBBBBBBB%00"),
        ("POST", "/third/option/groupname"),
        ("POST", "/third/interface/dry-run"),
        ("POST", "/third/interface/invoke"),
        ("POST", "/third/interface/query"),
        ("POST", "/third/interface/stop"),
        ("GET", "/plugin/nope/x"),
    ];
    let deep = "[".repeat(5000) + &"]".repeat(5000);
    let bodies: Vec<String> = vec![
        "".into(),
        "{".into(),
        "null".into(),
        "[]".into(),
        "\"str\"".into(),
        deep,
        r#"{"name": 1e999, "nodes": {"x": 1}, "steps": "no", "group_type": ["list"], "variable": 5}"#.into(),
        r#"{"name": "x", "group_type": "percent", "percent": "99999999999999999999999999%"}"#.into(),
        r#"{"project_id": -1, "uuid": "AAAAAAAAAAAA", "retry_count": 1e10, "params": []}"#.into(),
        r#"{"project_id": 10, "uuid": "AAAAAAAAAAAA", "params": {"jobname": "j", "group": "g", "variable": {"a": {"b": 1}}}}"#.into(),
        r#"{"jobname": "j", "group": "val=", "variable": {"_pip_": ";;;"}}"#.into(),
        r#"{"action": "explode", "opinion": 7}"#.into(),
        "\u{feff}{\"name\": \"bom\"}".into(),
    ];
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(30))
        .build();
    for (method, path) in routes {
        for body in &bodies {
            let r = agent
                .request(method, &format!("{}{}", d.base, path))
                .set("Authorization", &format!("Bearer {ADMIN}"))
                .set("Content-Type", "application/json")
                .send_string(body);
            let status = match r {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(s, _)) => s,
                Err(e) => panic!("{method} {path}: {e}"),
            };
            assert!(status < 500, "{method} {path} with {:.60}: {status}", body);
        }
    }
    assert_eq!(d.req("GET", "/mon", None, None).0, 200, "still alive");
    let after: Vec<_> = ["/node/10", "/group/10", "/job/10", "/task/10"]
        .iter()
        .map(|p| d.data(p))
        .collect();
    assert_eq!(before, after, "nothing stored or changed");
    assert_eq!(d.data("/log/10"), log_before);
}
