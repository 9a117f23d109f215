//! "Prepare these nodes": the optional plugin hook the engine calls for the
//! next batch while the current one runs. A plugin without it loads and
//! runs as before; the ssh plugin uses it to open and authenticate the next
//! batch's master connections early, and its steps then use them.

use jobx_tests::daemon::*;
use jobx_tests::project::TaskRef;
use jobx_tests::sshd::SshdFleet;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// The name of the optional symbol that carries the hook.
const HOOK_SYMBOL: &[u8] = b"jobx_plugin_v1_extensions";

/// Whether a shared library's symbol names include `name`.
fn exports(lib: &Path, name: &[u8]) -> bool {
    let bytes = std::fs::read(lib).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
    bytes.windows(name.len()).any(|w| w == name)
}

#[test]
fn a_plugin_without_the_hook_loads_and_runs_every_batch() {
    // The fixture exports its own `jobx_plugin_v1` table by hand, as a
    // plugin built before the hook existed does: no extension symbol.
    let fixture = bin_dir().join("libjobx_fixture_crashy.so");
    assert!(
        !exports(&fixture, HOOK_SYMBOL),
        "the fixture must be a plugin without the hook"
    );
    assert!(
        exports(&bin_dir().join("libjobx_plugin_local.so"), HOOK_SYMBOL),
        "plugins built with export_plugin! carry the hook"
    );
    let dir = TempDir::new("prepare-nohook");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    for (from, to) in [
        ("libjobx_plugin_local.so", "libjobx_plugin_local.so"),
        ("libjobx_fixture_crashy.so", "libjobx_plugin_crashy.so"),
    ] {
        std::fs::copy(bin_dir().join(from), plugins.join(to))
            .unwrap_or_else(|e| panic!("copy {from} (cargo build -p jobx-fixture-plugin): {e}"));
    }
    let d = Daemon::start(&format!(
        "[plugins]\ndir = [{:?}]\n",
        plugins.display().to_string()
    ));
    assert!(
        d.stderr().contains("plugin crashy loaded from"),
        "{}",
        d.stderr()
    );
    let p = d.project(10);
    p.nodes(&["n1", "n2", "n3"]);
    p.group("g", "list", "n1;n2;n3");
    p.job(
        "mixed",
        json!([
            {"plugin": "crashy", "script": "hello"},
            {"plugin": "local", "script": "echo local on $JOBX_NODE"}
        ]),
    );
    let task = p.run("mixed", "g", json!({}));
    let t = task.wait_finished();
    let log = task.log_text();
    assert_eq!(t["status"], "success", "{log}");
    assert_eq!(task.subtasks().len(), 3);
    for n in ["n1", "n2", "n3"] {
        assert!(log.contains(&format!("[{n}] crashy says hello")), "{log}");
        assert!(log.contains(&format!("[{n}] local on {n}")), "{log}");
    }
}

/// How many times server `i` of the fleet authenticated a client.
fn logins(fleet: &SshdFleet, i: usize) -> usize {
    fleet.server(i).log().matches("Accepted publickey").count()
}

fn status_of(task: &TaskRef, batch: usize) -> String {
    task.subtasks()
        .get(batch)
        .and_then(|s| s["status"].as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn the_next_batch_master_is_up_before_its_first_step_and_is_the_one_it_uses() {
    let fleet = SshdFleet::start(3).expect("sshd fleet (tests/run.sh installs openssh-server)");
    let d = Daemon::start(&format!(
        "[plugins.ssh]\nidentity_file = {:?}\nuser = {:?}\nconnect_timeout = 5\n",
        fleet.identity_file().display().to_string(),
        fleet.user()
    ));
    let list: Vec<Value> = (0..3)
        .map(|i| {
            let s = fleet.server(i);
            json!({"name": format!("s{}", i + 1), "host": s.host(), "port": s.port()})
        })
        .collect();
    d.ok_post("/node/10", json!({ "nodes": list }));
    let p = d.project(10);
    p.group("one-by-one", "list", "s1;s2;s3");
    // Each node's step waits for its gate file (the servers run on this
    // machine), so the test decides when each batch may end.
    let gates = TempDir::new("prepare-gates");
    p.job(
        "gated",
        json!([{
            "name": "gated",
            "plugin": "ssh",
            "script": "while [ ! -e \"$gate/$JOBX_NODE\" ]; do sleep 0.05; done; echo released $JOBX_NODE"
        }]),
    );
    let gate = |n: &str| std::fs::write(gates.path().join(n), "").expect("gate file");
    let task = p.run(
        "gated",
        "one-by-one",
        json!({"gate": gates.path().display().to_string()}),
    );

    // Batch 1 runs on s1; meanwhile s2's master is opened and authenticated
    // although batch 2 has not started a step.
    wait_for("s1's step to log in", T, || {
        (logins(&fleet, 0) == 1).then_some(())
    });
    wait_for("s2's master to be opened early", T, || {
        (logins(&fleet, 1) == 1).then_some(())
    });
    assert_eq!(status_of(&task, 0), "running");
    assert_eq!(status_of(&task, 1), "init", "batch 2 has not started");
    // Only the next batch is prepared, not the one after it.
    assert_eq!(logins(&fleet, 2), 0, "{}", fleet.server(2).log());

    gate("s1");
    wait_for("batch 2 to start", T, || {
        (status_of(&task, 1) == "running").then_some(())
    });
    wait_for("s3's master to be opened early", T, || {
        (logins(&fleet, 2) == 1).then_some(())
    });
    assert_eq!(status_of(&task, 2), "init", "batch 3 has not started");

    gate("s2");
    gate("s3");
    let t = task.wait_finished();
    let log = task.log_text();
    assert_eq!(t["status"], "success", "{log}");
    for (i, n) in ["s1", "s2", "s3"].iter().enumerate() {
        assert!(log.contains(&format!("[{n}] released {n}")), "{log}");
        // The step ran over the master opened early: no second login.
        assert_eq!(logins(&fleet, i), 1, "{n}: {}", fleet.server(i).log());
    }
}
