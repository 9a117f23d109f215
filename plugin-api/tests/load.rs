//! Loading real libraries with `PluginSet::load`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use jobx_plugin_api::host::{PluginSet, RunSink};
use jobx_plugin_api::{StepKind, StepRequest, StepResult, Stream};

fn scratch(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "jobx-plugin-api-test-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Builds the fixture library into `dir` under `file_name`.
fn build_fixture(dir: &Path, file_name: &str, cfg: Option<&str>) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/other_abi.rs");
    let out = dir.join(file_name);
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args([
        "--edition",
        "2021",
        "--crate-type",
        "cdylib",
        "--crate-name",
        "other_abi",
    ])
    .arg("-o")
    .arg(&out)
    .arg(&src);
    if let Some(cfg) = cfg {
        cmd.args(["--cfg", cfg]);
    }
    let status = cmd.status().expect("run rustc");
    assert!(status.success(), "rustc failed to build the fixture");
    out
}

#[test]
fn a_library_of_another_abi_version_is_refused() {
    let dir = scratch("v2");
    let file = build_fixture(&dir, "libjobx_plugin_future.so", None);
    let err = PluginSet::load(std::slice::from_ref(&dir), &serde_json::Map::new()).unwrap_err();
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("ABI version 2"), "{err}");
    assert!(err.contains("supports ABI version 1"), "{err}");

    let _ = std::fs::remove_dir_all(&dir);

    let dir = scratch("v99");
    let file = build_fixture(&dir, "libjobx_plugin_liar.so", Some("v1_symbol"));
    let err = PluginSet::load(std::slice::from_ref(&dir), &serde_json::Map::new()).unwrap_err();
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("ABI version 99"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn other_files_and_missing_dirs_are_skipped() {
    let dir = scratch("skip");
    std::fs::write(dir.join("README"), "not a plugin").unwrap();
    std::fs::write(dir.join("libother.so"), "not a plugin either").unwrap();
    let set = PluginSet::load(
        &[PathBuf::from("/nonexistent/jobx/plugins"), dir.clone()],
        &serde_json::Map::new(),
    )
    .unwrap();
    assert!(set.types().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_broken_library_is_named() {
    let dir = scratch("broken");
    let file = dir.join("libjobx_plugin_broken.so");
    std::fs::write(&file, "garbage").unwrap();
    let err = PluginSet::load(std::slice::from_ref(&dir), &serde_json::Map::new()).unwrap_err();
    assert!(err.contains(&file.display().to_string()), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The local plugin as built in this target directory, if it has been built
/// (`cargo build`, or `cargo test` of the workspace).
fn local_plugin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    [
        deps.join("libjobx_plugin_local.so"),
        deps.parent()?.join("libjobx_plugin_local.so"),
    ]
    .into_iter()
    .filter(|p| p.is_file())
    .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

struct Sink(
    Mutex<Vec<(Stream, Vec<u8>)>>,
    Mutex<Option<mpsc::Sender<StepResult>>>,
);

impl RunSink for Sink {
    fn line(&self, stream: Stream, text: &[u8]) {
        self.0.lock().unwrap().push((stream, text.to_vec()));
    }
    fn done(&self, result: StepResult) {
        if let Some(tx) = self.1.lock().unwrap().take() {
            let _ = tx.send(result);
        }
    }
}

#[test]
fn the_local_plugin_loads_and_runs_a_step() {
    let Some(lib) = local_plugin() else {
        eprintln!("libjobx_plugin_local.so is not built in this target directory; skipped");
        return;
    };
    // Two directories holding the same plugin: the first one wins.
    let first = scratch("local-a");
    let second = scratch("local-b");
    std::fs::copy(&lib, first.join("libjobx_plugin_local.so")).unwrap();
    std::fs::copy(&lib, second.join("libjobx_plugin_local.so")).unwrap();
    let set = PluginSet::load(&[first.clone(), second.clone()], &serde_json::Map::new()).unwrap();
    assert_eq!(set.types(), vec!["local".to_string()]);
    assert_eq!(
        set.files(),
        vec![("local".to_string(), first.join("libjobx_plugin_local.so"))]
    );
    assert_eq!(
        set.shadowed(),
        vec![("local".to_string(), second.join("libjobx_plugin_local.so"))]
    );

    let (tx, rx) = mpsc::channel();
    let sink = Arc::new(Sink(Mutex::new(Vec::new()), Mutex::new(Some(tx))));
    let req = StepRequest {
        kind: StepKind::Cmd {
            script: "echo \"hello $WHO\"; exit 5".into(),
            interpreter: "sh".into(),
            args: vec![],
        },
        env: [("WHO".to_string(), "world".to_string())].into(),
        timeout_secs: 30,
        ..StepRequest::default()
    };
    set.start("local", &req, sink.clone()).unwrap();
    let result = rx.recv_timeout(Duration::from_secs(30)).expect("result");
    assert_eq!(result, StepResult::exited(5));
    assert_eq!(
        *sink.0.lock().unwrap(),
        vec![(Stream::Stdout, b"hello world".to_vec())]
    );

    // A configuration the plugin rejects stops the load, naming the file.
    let mut configs = serde_json::Map::new();
    configs.insert("local".into(), serde_json::json!({"no_such_key": 1}));
    let err = PluginSet::load(std::slice::from_ref(&first), &configs).unwrap_err();
    assert!(
        err.contains("libjobx_plugin_local.so: plugin local:"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(first);
    let _ = std::fs::remove_dir_all(second);
}
