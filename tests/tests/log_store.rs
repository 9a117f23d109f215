//! Step log storage: a store written in the old one-row-per-record layout
//! opens and every log view answers as before; a step that prints far more
//! than the store takes at once finishes with bounded daemon memory and
//! every line kept up to the cap.

use jobx_tests::daemon::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/logs-v1")
}

/// Every view recorded from the old layout, read again from `d`.
fn assert_views_as_recorded(d: &Daemon) {
    let views = fixture().join("views");
    let mut checked = 0;
    for entry in std::fs::read_dir(&views).expect("views") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(key) = name.strip_suffix(".json") else {
            continue;
        };
        let want: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let (st, got) = d.get(
            &format!("/slave/test-slave/log/{key}?format=json&offset=0&max=10000"),
            ADMIN,
        );
        assert_eq!(st, 200, "{key}: {got}");
        let (w, g) = (&want["data"]["records"], &got["data"]["records"]);
        assert_eq!(
            w.as_array().map(Vec::len),
            g.as_array().map(Vec::len),
            "{key}: record count"
        );
        assert_eq!(w, g, "{key}: records");
        assert_eq!(
            want["data"]["next_offset"], got["data"]["next_offset"],
            "{key}"
        );
        assert_eq!(want["data"]["completed"], got["data"]["completed"], "{key}");
        // A page from the middle, too.
        let (_, mid) = d.get(
            &format!("/slave/test-slave/log/{key}?format=json&offset=5&max=3"),
            ADMIN,
        );
        let w_mid: Vec<&Value> = w
            .as_array()
            .expect("records")
            .iter()
            .skip(5)
            .take(3)
            .collect();
        let g_mid: Vec<&Value> = mid["data"]["records"]
            .as_array()
            .expect("records")
            .iter()
            .collect();
        assert_eq!(w_mid, g_mid, "{key}: offset 5");
        let text = std::fs::read_to_string(views.join(format!("{key}.txt"))).expect("text");
        let (st, got_text) = d.get(&format!("/slave/test-slave/log/{key}?format=text"), ADMIN);
        assert_eq!(st, 200);
        assert_eq!(got_text.as_str(), Some(text.as_str()), "{key}: text view");
        checked += 1;
    }
    assert_eq!(
        checked, 7,
        "the fixture has a task, 2 batches and 4 step keys"
    );
}

#[test]
fn a_store_in_the_old_log_layout_migrates_and_every_view_answers_the_same() {
    let mut d = Daemon::start("");
    d.term();
    std::fs::copy(fixture().join("jobx.redb"), d.data_dir().join("jobx.redb")).expect("copy");
    d.restart();
    assert!(
        d.stderr()
            .contains("log records moved to the segment layout"),
        "{}",
        d.stderr()
    );
    let task = std::fs::read_to_string(fixture().join("task")).expect("task");
    let t = d.data(&format!("/task/1/{}", task.trim()));
    assert_eq!(t["status"], "success");
    assert_views_as_recorded(&d);
    // Once moved, a restart finds nothing left to move and reads the same.
    let starts = d.stderr().matches("moved to the segment layout").count();
    d.term();
    d.restart();
    assert_eq!(
        d.stderr().matches("moved to the segment layout").count(),
        starts
    );
    assert_views_as_recorded(&d);
    // New output of the migrated project lands beside the old.
    let p = d.project(1);
    p.job(
        "after",
        json!([{"plugin": "local", "script": "echo after the move"}]),
    );
    let t2 = p.run("after", "pairs", json!({}));
    t2.wait_success();
    assert!(t2.log_text().contains("[a] after the move"));
    assert_views_as_recorded(&d);
}

/// The daemon's peak resident memory so far, in KiB (/proc VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_step_printing_a_gigabyte_finishes_in_bounded_memory_keeping_every_line_to_the_cap() {
    const CAP: u64 = 160 << 20;
    let d = Daemon::start(&format!("[logs]\nmax_bytes_per_step = {CAP}\n"));
    let p = d.project(10);
    p.nodes(&["big"]);
    p.group("one", "list", "big");
    // 11.5 M numbered lines of 95 bytes: 1.09 GB.
    let script = r#"awk 'BEGIN { pad = sprintf("%080d", 0); for (i = 1; i <= 11500000; i++) printf "line %08d %s\n", i, pad }'"#;
    let job = p.job(
        "flood",
        json!([{"plugin": "local", "script": script, "timeout": 1800}]),
    );
    let t = p.run("flood", "one", json!({}));
    let done = t.wait_finished_within(Duration::from_secs(900));
    assert_eq!(done["status"], "success", "{done}");
    let peak_mib = peak_rss_kib(d.pid()) / 1024;
    // The kept output alone is 160 MiB: an unbounded queue holds it all.
    eprintln!("jobxd peaked at {peak_mib} MiB");
    assert!(peak_mib < 150, "jobxd peaked at {peak_mib} MiB");

    let step = &job["steps"][0];
    let key = format!(
        "{}{}{}",
        t.batch_uuid(0),
        step["uuid"].as_str().expect("step uuid"),
        step["plugin"].as_str().expect("plugin")
    );
    let resp = ureq::get(&format!(
        "{}/slave/test-slave/log/{key}?format=text",
        d.base
    ))
    .set("Authorization", &format!("Bearer {ADMIN}"))
    .call()
    .expect("log");
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut tail = Vec::new();
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line.expect("line");
        let Some(rest) = line.strip_prefix("[big] line ") else {
            // The step's header comes first; what follows the lines is after.
            if n > 0 {
                tail.push(line);
            }
            continue;
        };
        n += 1;
        assert!(tail.is_empty(), "output after {tail:?}");
        assert_eq!(rest.get(..8), Some(format!("{n:08}").as_str()), "line {n}");
        bytes += line.len() as u64 - "[big] ".len() as u64 + 1;
    }
    // Every line up to the cap, in order; then the marks of what was not kept.
    assert!(bytes <= CAP && bytes > CAP - 200, "{bytes} bytes kept");
    assert_eq!(n, bytes / 95, "95 bytes a line");
    let tail = tail.join("\n");
    assert!(
        tail.contains(&format!("[output truncated at {CAP} bytes]")),
        "{tail}"
    );
    assert!(tail.contains("bytes of output not kept]"), "{tail}");
    assert!(tail.contains("exit code 0"), "{tail}");
}
