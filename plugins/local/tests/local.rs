//! The built `libjobx_plugin_local.so`, loaded through `PluginSet` exactly as
//! jobxd loads it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jobx_plugin_api::host::{PluginSet, RunHandle, RunSink};
use jobx_plugin_api::{StepKind, StepRequest, StepResult, Stream};

/// The directory of the plugin library built with this test: the test
/// executable lives in `<target>/<profile>/deps/`.
fn built_library() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    let candidates = [
        deps.join("libjobx_plugin_local.so"),
        deps.parent()
            .map(|p| p.join("libjobx_plugin_local.so"))
            .unwrap_or_default(),
    ];
    candidates
        .iter()
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "libjobx_plugin_local.so not found next to {}",
                exe.display()
            )
        })
}

/// One plugin set per test process, loaded from a private copy of the
/// library (the target directory may hold other plugins mid-build).
fn plugins() -> &'static PluginSet {
    static SET: OnceLock<PluginSet> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = scratch("plugins");
        std::fs::copy(built_library(), dir.join("libjobx_plugin_local.so")).expect("copy plugin");
        let mut configs = serde_json::Map::new();
        configs.insert("local".into(), serde_json::json!({"kill_grace_secs": 1}));
        let set = PluginSet::load(std::slice::from_ref(&dir), &configs).expect("load plugin");
        // The loaded library stays mapped; the copy is no longer needed.
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(set.types(), vec!["local".to_string()]);
        set
    })
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "jobx-local-test-{}-{name}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos * 1000 + N.fetch_add(1, Ordering::Relaxed)
}

#[derive(Default)]
struct Collect {
    lines: Mutex<Vec<(Stream, Vec<u8>)>>,
    done: Mutex<Vec<StepResult>>,
    cv: Condvar,
}

impl RunSink for Collect {
    fn line(&self, stream: Stream, text: &[u8]) {
        self.lines.lock().unwrap().push((stream, text.to_vec()));
        self.cv.notify_all();
    }
    fn done(&self, result: StepResult) {
        self.done.lock().unwrap().push(result);
        self.cv.notify_all();
    }
}

impl Collect {
    fn wait_done(&self, within: Duration) -> StepResult {
        let deadline = Instant::now() + within;
        let mut done = self.done.lock().unwrap();
        while done.is_empty() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no result within {within:?}; lines: {:?}", self.text()));
            done = self.cv.wait_timeout(done, left).unwrap().0;
        }
        assert_eq!(done.len(), 1);
        done[0].clone()
    }

    fn wait_line(&self, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let mut lines = self.lines.lock().unwrap();
        while !lines.iter().any(|(_, l)| l == want.as_bytes()) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no line {want:?} within {within:?}"));
            lines = self.cv.wait_timeout(lines, left).unwrap().0;
        }
    }

    fn stream(&self, stream: Stream) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    fn text(&self) -> Vec<(Stream, String)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(s, l)| (*s, String::from_utf8_lossy(l).into_owned()))
            .collect()
    }
}

fn cmd(script: &str, interpreter: &str, args: &[&str], env: &[(&str, &str)]) -> StepRequest {
    StepRequest {
        task: "t1".into(),
        step: "s1".into(),
        plugin: "local".into(),
        action: "deploy".into(),
        kind: StepKind::Cmd {
            script: script.into(),
            interpreter: interpreter.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        },
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        timeout_secs: 60,
        ..StepRequest::default()
    }
}

fn start(req: &StepRequest) -> (Arc<Collect>, RunHandle) {
    let sink = Arc::new(Collect::default());
    let handle = plugins().start("local", req, sink.clone()).expect("start");
    (sink, handle)
}

fn run(req: &StepRequest) -> (Arc<Collect>, StepResult) {
    let (sink, _handle) = start(req);
    let result = sink.wait_done(Duration::from_secs(30));
    (sink, result)
}

/// Pids whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if cmdline
                .windows(marker.len())
                .any(|w| w == marker.as_bytes())
            {
                found.push(pid);
            }
        }
    }
    found
}

fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn marker() -> String {
    format!("jobx-marker-{}-{}", std::process::id(), unique())
}

/// A script that starts a `sleep` grandchild whose argv[0] is `$MARK`.
const SLEEPER: &str = "(exec -a \"$MARK\" sleep 1000) &\necho started\nwait\n";

#[test]
fn output_lines_and_exit_code() {
    let (sink, result) = run(&cmd(
        "echo one\necho two >&2\nprintf 'no newline'",
        "bash",
        &[],
        &[],
    ));
    assert_eq!(result, StepResult::exited(0));
    assert_eq!(sink.stream(Stream::Stdout), vec!["one", "no newline"]);
    assert_eq!(sink.stream(Stream::Stderr), vec!["two"]);

    let (_, result) = run(&cmd("echo bye; exit 3", "sh", &[], &[]));
    assert_eq!(result, StepResult::exited(3));
    assert!(!result.is_success());
}

#[test]
fn a_script_killed_by_a_signal_exits_128_plus_it() {
    let (_, result) = run(&cmd("kill -s KILL $$", "bash", &[], &[]));
    assert_eq!(result, StepResult::exited(137));
}

#[test]
fn grandchildren_output_arrives_on_the_step_streams() {
    let (sink, result) = run(&cmd(
        "(echo from-child; sh -c 'echo from-grandchild >&2') &\nwait\necho leader",
        "bash",
        &[],
        &[],
    ));
    assert_eq!(result, StepResult::exited(0));
    assert_eq!(sink.stream(Stream::Stdout), vec!["from-child", "leader"]);
    assert_eq!(sink.stream(Stream::Stderr), vec!["from-grandchild"]);
}

#[test]
fn invalid_utf8_and_long_lines() {
    let (sink, result) = run(&cmd(
        "printf 'a\\377b\\n'; head -c 100000 /dev/zero | tr '\\0' x; echo",
        "bash",
        &[],
        &[],
    ));
    assert_eq!(result, StepResult::exited(0));
    let lines = sink.lines.lock().unwrap().clone();
    assert_eq!(lines[0], (Stream::Stdout, vec![b'a', 0xff, b'b']));
    let long: Vec<usize> = lines[1..].iter().map(|(_, l)| l.len()).collect();
    assert_eq!(long.iter().sum::<usize>(), 100000);
    assert!(long.iter().all(|&n| n <= 32 * 1024), "{long:?}");
}

#[test]
fn env_and_args_arrive_intact() {
    let tricky = "a b  'single' \"double\" $HOME `id` \\ ; | & * \n second line";
    let (sink, result) = run(&cmd(
        "printf '[%s]\\n' \"$TRICKY\" \"$version\" \"$JOBX_NODE\" \"$@\"",
        "bash",
        &["x y", "$HOME", "*", ""],
        &[
            ("TRICKY", tricky),
            ("version", "1.2.3"),
            ("JOBX_NODE", "web-1"),
        ],
    ));
    assert_eq!(result, StepResult::exited(0));
    let out = sink.stream(Stream::Stdout).join("\n");
    let want = format!("[{tricky}]\n[1.2.3]\n[web-1]\n[x y]\n[$HOME]\n[*]\n[]");
    assert_eq!(out, want);
}

#[test]
fn other_interpreters() {
    let (sink, result) = run(&cmd(
        "import sys, os\nprint(os.environ['V'], sys.argv[1:])\nsys.exit(4)",
        "python3",
        &["p q"],
        &[("V", "py")],
    ));
    assert_eq!(result, StepResult::exited(4), "{:?}", sink.text());
    assert_eq!(sink.stream(Stream::Stdout), vec!["py ['p q']"]);

    let (sink, result) = run(&cmd("print \"perl $ARGV[0]\\n\";", "perl", &["ok"], &[]));
    assert_eq!(result, StepResult::exited(0));
    assert_eq!(sink.stream(Stream::Stdout), vec!["perl ok"]);

    let (sink, result) = run(&cmd("echo abs", "/bin/sh", &[], &[]));
    assert_eq!(result, StepResult::exited(0));
    assert_eq!(sink.stream(Stream::Stdout), vec!["abs"]);
}

#[test]
fn unsupported_interpreter_fails_the_step() {
    let (_, result) = run(&cmd("x", "ruby", &[], &[]));
    assert!(result.error.unwrap().contains("unsupported interpreter"));
    let (_, result) = run(&cmd("x", "/nonexistent/interp", &[], &[]));
    assert_eq!(result.exit_code, Some(127));
}

#[test]
fn nul_bytes_fail_the_step_cleanly() {
    let (_, result) = run(&cmd("echo x", "sh", &[], &[("BAD", "a\0b")]));
    let err = result.error.expect("an error");
    assert!(err.contains("nul byte"), "{err}");
    let (_, result) = run(&cmd("echo x", "sh", &["a\0b"], &[]));
    assert!(result.error.is_some());
}

#[test]
fn working_directory_is_the_temp_dir() {
    let (sink, result) = run(&cmd("pwd", "sh", &[], &[]));
    assert_eq!(result, StepResult::exited(0));
    let pwd = PathBuf::from(&sink.stream(Stream::Stdout)[0]);
    assert_eq!(
        pwd.canonicalize().unwrap(),
        std::env::temp_dir().canonicalize().unwrap()
    );
}

#[test]
fn timeout_kills_the_whole_group() {
    let mark = marker();
    let mut req = cmd(SLEEPER, "bash", &[], &[("MARK", &mark)]);
    req.timeout_secs = 2;
    let (sink, _h) = start(&req);
    wait_until("grandchild started", Duration::from_secs(10), || {
        !processes_with(&mark).is_empty()
    });
    let result = sink.wait_done(Duration::from_secs(15));
    assert_eq!(result, StepResult::failed("timeout after 2 s"));
    wait_until("grandchild gone", Duration::from_secs(10), || {
        processes_with(&mark).is_empty()
    });
}

#[test]
fn cancel_kills_the_whole_group_even_if_term_is_ignored() {
    let mark = marker();
    // The script and its sleep ignore SIGTERM: only the SIGKILL after the
    // grace period (1 s in these tests) ends them.
    let script = format!("trap '' TERM\n{SLEEPER}");
    let (sink, handle) = start(&cmd(&script, "bash", &[], &[("MARK", &mark)]));
    sink.wait_line("started", Duration::from_secs(10));
    wait_until("grandchild started", Duration::from_secs(10), || {
        !processes_with(&mark).is_empty()
    });
    let t0 = Instant::now();
    handle.cancel();
    let result = sink.wait_done(Duration::from_secs(15));
    assert_eq!(result, StepResult::failed("cancelled"));
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "SIGKILL came before the grace period"
    );
    wait_until("grandchild gone", Duration::from_secs(10), || {
        processes_with(&mark).is_empty()
    });
    handle.cancel(); // after done: no effect
}

#[test]
fn background_leftovers_die_with_the_step() {
    let mark = marker();
    let (sink, result) = run(&cmd(
        "(exec -a \"$MARK\" sleep 1000) &\necho left it running",
        "bash",
        &[],
        &[("MARK", &mark)],
    ));
    assert_eq!(result, StepResult::exited(0));
    assert_eq!(sink.stream(Stream::Stdout), vec!["left it running"]);
    wait_until("leftover gone", Duration::from_secs(10), || {
        processes_with(&mark).is_empty()
    });
}

#[test]
fn many_runs_at_once() {
    let runs: Vec<_> = (0..40)
        .map(|i| {
            start(&cmd(
                "for n in 1 2 3; do echo \"$I.$n\"; done; exit $(( I % 3 ))",
                "sh",
                &[],
                &[("I", &i.to_string())],
            ))
        })
        .collect();
    for (i, (sink, _)) in runs.iter().enumerate() {
        let result = sink.wait_done(Duration::from_secs(60));
        assert_eq!(result, StepResult::exited((i % 3) as i32));
        assert_eq!(
            sink.stream(Stream::Stdout),
            vec![format!("{i}.1"), format!("{i}.2"), format!("{i}.3")]
        );
    }
}

/// Not a test by itself: run by `step_processes_die_with_the_daemon` in a
/// child process that plays the daemon and is then SIGKILLed.
#[test]
#[ignore]
fn daemon_child() {
    let Ok(mark) = std::env::var("JOBX_TEST_DAEMON_MARK") else {
        return;
    };
    let (sink, _h) = start(&cmd(SLEEPER, "bash", &[], &[("MARK", &mark)]));
    sink.wait_line("started", Duration::from_secs(10));
    println!("step-started");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn step_processes_die_with_the_daemon() {
    let mark = marker();
    let mut daemon = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "daemon_child", "--ignored", "--nocapture"])
        .env("JOBX_TEST_DAEMON_MARK", &mark)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn daemon stand-in");
    wait_until("step started in the child", Duration::from_secs(20), || {
        !processes_with(&mark).is_empty()
    });
    daemon.kill().expect("SIGKILL");
    let _ = daemon.wait();
    wait_until("step processes gone", Duration::from_secs(10), || {
        processes_with(&mark).is_empty()
    });
    // The watchdog also removed the script file the dead daemon left.
    let prefix = format!("jobx-s1-{}-", daemon.id());
    wait_until("script file removed", Duration::from_secs(10), || {
        std::fs::read_dir(std::env::temp_dir())
            .map(|entries| {
                !entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            })
            .unwrap_or(true)
    });
}

fn scp(src: &Path, dst: &str, chmod: Option<&str>, delete: bool) -> StepResult {
    let req = StepRequest {
        plugin: "local".into(),
        kind: StepKind::Scp {
            src: src.to_string_lossy().into_owned(),
            dst: dst.into(),
            chmod: chmod.map(String::from),
            chown: None,
            delete,
        },
        timeout_secs: 60,
        ..StepRequest::default()
    };
    run(&req).1
}

#[test]
fn scp_copies_files_and_mirrors_directories() {
    use std::os::unix::fs::PermissionsExt;
    let root = scratch("scp");
    let src = root.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha").unwrap();
    std::fs::write(src.join("sub/b.bin"), [0u8, 1, 2, 255]).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();

    // A single file into an existing directory, with chmod.
    let into = root.join("into");
    std::fs::create_dir_all(&into).unwrap();
    let result = scp(
        &src.join("a.txt"),
        into.to_str().unwrap(),
        Some("0751"),
        false,
    );
    assert_eq!(result, StepResult::ok());
    assert_eq!(
        std::fs::read_to_string(into.join("a.txt")).unwrap(),
        "alpha"
    );
    let mode = into.join("a.txt").metadata().unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o751);

    // A single file to a new path (parents created).
    let file = root.join("new/dir/copy.txt");
    assert_eq!(
        scp(&src.join("a.txt"), file.to_str().unwrap(), None, false),
        StepResult::ok()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "alpha");

    // A directory, mirrored: extra entries removed only with delete.
    let dst = root.join("dst");
    std::fs::create_dir_all(dst.join("old")).unwrap();
    std::fs::write(dst.join("extra.txt"), "x").unwrap();
    std::fs::write(dst.join("a.txt"), "stale").unwrap();
    assert_eq!(
        scp(&src, dst.to_str().unwrap(), None, false),
        StepResult::ok()
    );
    assert_eq!(std::fs::read_to_string(dst.join("a.txt")).unwrap(), "alpha");
    assert_eq!(
        std::fs::read(dst.join("sub/b.bin")).unwrap(),
        vec![0u8, 1, 2, 255]
    );
    assert_eq!(
        std::fs::read_link(dst.join("link")).unwrap(),
        PathBuf::from("a.txt")
    );
    assert!(dst.join("extra.txt").exists());
    assert_eq!(
        scp(&src, dst.to_str().unwrap(), None, true),
        StepResult::ok()
    );
    assert!(!dst.join("extra.txt").exists());
    assert!(!dst.join("old").exists());
    assert!(dst.join("sub/b.bin").exists());

    // Errors are results, not panics.
    let result = scp(&root.join("missing"), dst.to_str().unwrap(), None, false);
    assert!(result.error.unwrap().contains("cannot read"));
    let result = scp(&src, dst.to_str().unwrap(), Some("rwx"), false);
    assert!(result.error.unwrap().contains("invalid chmod"));

    let _ = std::fs::remove_dir_all(&root);
}
