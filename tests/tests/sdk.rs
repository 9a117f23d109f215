//! The plugin SDK end to end: the template plugin (examples/echo-plugin),
//! built by cargo, copied into a plugin directory next to the built-in
//! plugins and loaded by a real jobxd, runs job steps with its own
//! parameters; a plugin that sends JSON this jobx does not know is accepted.

use jobx_tests::daemon::{bin_dir, wait_for, Daemon, TempDir};
use jobx_tests::flow::{
    group, job, log_text, marker, nodes, processes_matching, start, subtasks, task, wait_finished,
};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// A built library in target/debug, or a failure saying how to build it.
fn built(file: &str, package: &str) -> PathBuf {
    let p = bin_dir().join(file);
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build -p {package}` (tests/run.sh runs `cargo build --workspace`)",
        p.display()
    );
    p
}

/// A plugin directory holding copies of the built-in plugins and `extra`
/// (source file, package, name in the directory).
fn plugin_dir(dir: &TempDir, extra: &[(&str, &str, &str)]) -> String {
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    let builtin = [
        ("libjobx_plugin_local.so", "jobx-plugin-local"),
        ("libjobx_plugin_ssh.so", "jobx-plugin-ssh"),
        ("libjobx_plugin_agent_pull.so", "jobx-plugin-agent-pull"),
    ];
    for (file, package) in builtin {
        std::fs::copy(built(file, package), plugins.join(file)).expect("copy plugin");
    }
    for (file, package, name) in extra {
        std::fs::copy(built(file, package), plugins.join(name)).expect("copy plugin");
    }
    plugins.display().to_string()
}

fn echo_daemon(dir: &TempDir, config: &str) -> Daemon {
    let plugins = plugin_dir(
        dir,
        &[(
            "libjobx_plugin_echo.so",
            "jobx-example-echo-plugin",
            "libjobx_plugin_echo.so",
        )],
    );
    let d = Daemon::start(&format!("[plugins]\ndir = [{plugins:?}]\n{config}"));
    assert!(
        d.stderr().contains("plugin echo loaded from"),
        "{}",
        d.stderr()
    );
    d
}

/// Starts a job of one long echo step printing `mark` on `names` and waits
/// until every node has printed it; answers the task uuid.
fn start_printing(d: &Daemon, names: &[&str], mark: &str, step: serde_json::Value) -> String {
    nodes(d, 10, names);
    group(d, 10, "g", "list", &names.join(","));
    job(d, 10, "long", json!([step]));
    let u = start(d, 10, "long", "g", json!({}));
    wait_for("the echo steps to print", T, || {
        let log = log_text(d, &u);
        names
            .iter()
            .all(|n| log.contains(&format!("[{n}] {mark}")))
            .then_some(())
    });
    assert!(!processes_matching(mark).is_empty());
    u
}

/// Waits until the first batch of task `u` has failed.
fn wait_first_batch_failed(d: &Daemon, u: &str) {
    wait_for("the first batch to fail", T, || {
        let s = subtasks(d, 10, u);
        (s.first()?["status"] == "fail").then_some(())
    });
}

#[test]
fn the_template_plugin_runs_steps_in_a_real_daemon() {
    let dir = TempDir::new("sdk-echo");
    let d = echo_daemon(&dir, "[plugins.echo]\nworkers = 2\nmax_repeat = 5\n");
    nodes(&d, 10, &["n1", "n2"]);
    group(&d, 10, "g", "list", "n1,n2");

    // The step carries only the plugin's own parameters: no script.
    job(
        &d,
        10,
        "hello",
        json!([
            {"plugin": "echo", "text": "hi"},
            {"plugin": "echo", "name": "twice", "text": "again and again", "repeat": 2},
            {"plugin": "local", "script": "echo local after echo"}
        ]),
    );
    let u = start(&d, 10, "hello", "g", json!({}));
    assert_eq!(wait_finished(&d, 10, &u, T)["status"], "success");
    let log = log_text(&d, &u);
    for node in ["n1", "n2"] {
        assert!(log.contains(&format!("[{node}] hi")), "{log}");
        assert_eq!(
            log.matches(&format!("[{node}] again and again")).count(),
            2,
            "{log}"
        );
        assert!(log.contains(&format!("[{node}] local after echo")), "{log}");
    }

    // `fail` fails the step with its message; the batch waits for a person.
    job(
        &d,
        10,
        "failing",
        json!([{"plugin": "echo", "text": "before failing", "fail": "asked to fail"}]),
    );
    let u = start(&d, 10, "failing", "g", json!({}));
    wait_first_batch_failed(&d, &u);
    let log = log_text(&d, &u);
    assert!(log.contains("[n1] before failing"), "{log}");
    assert!(log.contains("asked to fail"), "{log}");
    d.ok_put(&format!("/task/10/{u}"), json!({}));

    // Parameters the plugin refuses fail the step with the plugin's
    // message naming the parameter (jobxd cannot know them at save time).
    job(
        &d,
        10,
        "too-many",
        json!([{"plugin": "echo", "text": "x", "repeat": 6}]),
    );
    let u = start(&d, 10, "too-many", "g", json!({}));
    wait_first_batch_failed(&d, &u);
    let log = log_text(&d, &u);
    assert!(
        log.contains("echo step: repeat: at most 5 (set by [plugins.echo] max_repeat), not 6"),
        "{log}"
    );
    d.ok_put(&format!("/task/10/{u}"), json!({}));
}

#[test]
fn stopping_a_task_cancels_the_template_plugins_step() {
    let dir = TempDir::new("sdk-echo-stop");
    let d = echo_daemon(&dir, "");
    let mark = marker("echo-stop");
    let step = json!({"plugin": "echo", "text": mark, "repeat": 1000, "interval_ms": 200});
    let u = start_printing(&d, &["n1"], &mark, step);
    d.ok_put(&format!("/task/10/{u}"), json!({}));
    assert_eq!(wait_finished(&d, 10, &u, T)["status"], "fail");
    wait_for("the cancelled step's processes to end", T, || {
        processes_matching(&mark).is_empty().then_some(())
    });
    let log = log_text(&d, &u);
    assert!(log.contains("cancelled"), "{log}");
}

#[test]
fn the_template_plugins_steps_do_not_outlive_a_killed_daemon() {
    let dir = TempDir::new("sdk-echo-kill");
    let mut d = echo_daemon(&dir, "");
    let mark = marker("echo-lifeline");
    // A long pause after the first line: the tool writes nothing more
    // (which would end it by SIGPIPE), so only the lifeline can end it.
    let step = json!({"plugin": "echo", "text": mark, "repeat": 10, "interval_ms": 60000});
    let _u = start_printing(&d, &["n1", "n2"], &mark, step);
    // SIGKILL: no cleanup code of jobxd or the plugin runs; only the
    // lifeline pipe closing tells the steps.
    d.kill9();
    wait_for(
        "the steps to end with the daemon",
        Duration::from_secs(10),
        || processes_matching(&mark).is_empty().then_some(()),
    );
}

#[test]
fn check_config_names_the_template_plugins_bad_key() {
    let dir = TempDir::new("sdk-echo-check");
    let plugins = plugin_dir(
        &dir,
        &[(
            "libjobx_plugin_echo.so",
            "jobx-example-echo-plugin",
            "libjobx_plugin_echo.so",
        )],
    );
    let cfg = dir.path().join("jobxd.toml");
    let write = |echo: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[plugins]\ndir = [{plugins:?}]\n[storage]\ndata_dir = {:?}\n{echo}",
                dir.path().join("data").display().to_string()
            ),
        )
        .expect("config")
    };
    let check = || {
        std::process::Command::new(bin_dir().join("jobxd"))
            .arg("--config")
            .arg(&cfg)
            .arg("--check-config")
            .output()
            .expect("run jobxd")
    };
    write("[plugins.echo]\nworkers = 0\n");
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("[plugins.echo] workers: must be between 1 and 64, not 0"),
        "{err}"
    );
    write("[plugins.echo]\nworkers = 3\n");
    let out = check();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("echo"), "{said}");
}

#[test]
fn a_plugin_sending_json_this_jobx_does_not_know_is_accepted() {
    let dir = TempDir::new("sdk-newer");
    let plugins = plugin_dir(
        &dir,
        &[(
            "libjobx_fixture_crashy.so",
            "jobx-fixture-plugin",
            "libjobx_plugin_crashy.so",
        )],
    );
    let d = Daemon::start(&format!(
        "[plugins]\ndir = [{plugins:?}]\n[plugins.crashy]\nnewer_results = true\n"
    ));
    nodes(&d, 10, &["n1"]);
    group(&d, 10, "g", "list", "n1");
    job(
        &d,
        10,
        "newer",
        json!([{"plugin": "crashy", "script": "hello"}]),
    );
    let u = start(&d, 10, "newer", "g", json!({}));
    let t = wait_finished(&d, 10, &u, T);
    assert_eq!(t["status"], "success", "{t}");
    let log = log_text(&d, &u);
    assert!(log.contains("[n1] crashy says hello"), "{log}");
    // The result really carried the unknown fields...
    assert!(
        log.contains(r#""summary":{"changed":3}"#) && log.contains(r#""duration_ms":12"#),
        "{log}"
    );
    // ...and a line on a stream number this jobx does not know still shows.
    assert!(
        log.contains("a line on stream 7, which this jobx does not know"),
        "{log}"
    );
    assert_eq!(task(&d, 10, &u)["status"], "success");
}
