//! The built `libjobx_plugin_echo.so`, loaded through `PluginSet::load`
//! exactly as jobxd loads it: the C ABI, the JSON and the symbol name are
//! the real ones.

use std::path::PathBuf;
use std::time::Duration;

use jobx_plugin_api::host::PluginSet;
use jobx_plugin_api::testing::Recorder;
use jobx_plugin_api::{Node, StepRequest, StepResult, Stream};
use serde_json::json;

const LIB: &str = "libjobx_plugin_echo.so";

/// The library cargo built with this test: the test executable lives in
/// `<target>/<profile>/deps/`, the library there or one level up.
fn built_library() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    [
        deps.join(LIB),
        deps.parent().map(|p| p.join(LIB)).unwrap_or_default(),
    ]
    .into_iter()
    .filter(|p| p.is_file())
    .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
    .unwrap_or_else(|| panic!("{LIB} not found next to {}", exe.display()))
}

/// A private plugin directory holding a copy of the library (the target
/// directory may hold other plugins mid-build).
fn plugin_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jobx-echo-load-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::copy(built_library(), dir.join(LIB)).expect("copy the plugin");
    dir
}

fn request(params: serde_json::Value) -> StepRequest {
    let serde_json::Value::Object(params) = params else {
        panic!("params are an object")
    };
    StepRequest {
        plugin: "echo".into(),
        node: Node {
            name: "web-1".into(),
            ..Node::default()
        },
        timeout_secs: 60,
        params,
        ..StepRequest::default()
    }
}

#[test]
fn loads_and_runs_a_step() {
    let dir = plugin_dir("run");
    let mut configs = serde_json::Map::new();
    configs.insert("echo".into(), json!({"workers": 2, "max_repeat": 10}));
    let set = PluginSet::load(std::slice::from_ref(&dir), &configs).expect("load the plugin");
    // The library stays mapped; the copy is no longer needed.
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(set.types(), ["echo"]);

    let rec = Recorder::new();
    set.start(
        "echo",
        &request(json!({"text": "hi", "repeat": 2})),
        rec.clone(),
    )
    .expect("started");
    assert_eq!(
        rec.wait_done(Duration::from_secs(10)),
        Some(StepResult::ok())
    );
    assert_eq!(rec.stdout(), ["hi", "hi"]);

    // A refused step (its parameters break the configured limit) still
    // ends exactly once, with the plugin's message.
    let rec = Recorder::new();
    set.start(
        "echo",
        &request(json!({"text": "x", "repeat": 11})),
        rec.clone(),
    )
    .expect("handed to the plugin");
    let r = rec.wait_done(Duration::from_secs(10)).expect("done");
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.starts_with("echo step: repeat: at most 10")),
        "{r:?}"
    );

    // Cancel through the ABI.
    let rec = Recorder::new();
    let run = set
        .start(
            "echo",
            &request(json!({"text": "tick", "repeat": 10, "interval_ms": 1000})),
            rec.clone(),
        )
        .expect("started");
    assert!(rec.wait_lines(1, Duration::from_secs(10)));
    run.cancel();
    assert_eq!(
        rec.wait_done(Duration::from_secs(10)),
        Some(StepResult::failed("cancelled"))
    );
    assert!(rec.text(Stream::Stdout).len() < 10);
    assert_eq!(rec.results().len(), 1);
}

#[test]
fn a_bad_config_fails_the_load_naming_the_key() {
    let dir = plugin_dir("bad");
    let mut configs = serde_json::Map::new();
    configs.insert("echo".into(), json!({"workers": "many"}));
    let err = PluginSet::load(std::slice::from_ref(&dir), &configs).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.contains(LIB), "{err}");
    assert!(
        err.contains("[plugins.echo] workers: invalid type"),
        "{err}"
    );
}
