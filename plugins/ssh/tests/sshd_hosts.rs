//! The ssh plugin loaded as a real plugin library (through the host side of
//! jobx-plugin-api) and run against real sshd servers on loopback addresses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jobx_plugin_api::host::{PluginSet, RunHandle, RunSink};
use jobx_plugin_api::{Node, StepKind, StepRequest, StepResult, Stream};
use jobx_tests::sshd::{processes_matching, unused_endpoint, wait_until, SshdFleet};
use serde_json::{json, Value};

const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A directory holding only the built ssh plugin (a link to it), so that
/// loading it does not load the other plugins of the target directory.
fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        let deps = exe.parent().expect("deps dir");
        let lib = [
            deps.to_path_buf(),
            deps.parent().expect("target dir").to_path_buf(),
        ]
        .into_iter()
        .map(|d| d.join("libjobx_plugin_ssh.so"))
        .find(|p| p.exists())
        .expect("libjobx_plugin_ssh.so next to the test binary");
        remove_stale_plugin_dirs();
        let dir = std::env::temp_dir().join(format!("jobx-ssh-plugin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("plugin dir");
        let link = dir.join("libjobx_plugin_ssh.so");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link).expect("link plugin");
        dir
    })
}

/// Directories of earlier test processes that are gone.
fn remove_stale_plugin_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("jobx-ssh-plugin-") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn load(config: Value) -> PluginSet {
    let mut configs = serde_json::Map::new();
    configs.insert("ssh".into(), config);
    PluginSet::load(&[plugin_dir().to_path_buf()], &configs).expect("load the ssh plugin")
}

/// The plugin configured for a fleet.
fn load_for(fleet: &SshdFleet, extra: Value) -> PluginSet {
    let mut cfg = json!({
        "identity_file": fleet.identity_file(),
        "user": fleet.user(),
        "connect_timeout": 5,
    });
    if let (Some(c), Value::Object(e)) = (cfg.as_object_mut(), extra) {
        c.extend(e);
    }
    load(cfg)
}

#[derive(Default)]
struct Collect {
    lines: Mutex<Vec<(Stream, String)>>,
    done: Mutex<Option<StepResult>>,
    cv: Condvar,
}

impl RunSink for Collect {
    fn line(&self, stream: Stream, text: &[u8]) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.push((stream, String::from_utf8_lossy(text).into_owned()));
    }
    fn done(&self, result: StepResult) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        self.cv.notify_all();
    }
}

impl Collect {
    fn wait(&self, limit: Duration) -> StepResult {
        let deadline = Instant::now() + limit;
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while done.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "run did not finish: {:?}", self.all());
            done = self
                .cv
                .wait_timeout(done, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        done.clone().unwrap_or_default()
    }

    fn stream(&self, s: Stream) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .filter(|(st, _)| *st == s)
            .map(|(_, l)| l.clone())
            .collect()
    }

    fn all(&self) -> Vec<(Stream, String)> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn data_dir(fleet: &SshdFleet) -> String {
    let d = fleet.dir().join("data");
    std::fs::create_dir_all(&d).expect("data dir");
    d.display().to_string()
}

fn request(fleet: &SshdFleet, i: usize, kind: StepKind) -> StepRequest {
    let s = fleet.server(i);
    let name = format!("node-{i}");
    let mut env = BTreeMap::new();
    env.insert("JOBX_NODE".to_string(), name.clone());
    StepRequest {
        task: "Ab3dE5fG7hJk".into(),
        subtask: "Sb3dE5fG7hJk".into(),
        step: "st3dE5fG7hJk".into(),
        step_name: "test".into(),
        plugin: "ssh".into(),
        action: "deploy".into(),
        batch: 1,
        batches: 1,
        node: Node {
            name,
            host: s.host(),
            port: Some(s.port()),
            ..Node::default()
        },
        kind,
        env,
        timeout_secs: 60,
        data_dir: data_dir(fleet),
        ..StepRequest::default()
    }
}

fn cmd(script: &str) -> StepKind {
    StepKind::Cmd {
        script: script.into(),
        interpreter: "bash".into(),
        args: vec![],
    }
}

fn start(set: &PluginSet, req: &StepRequest) -> (Arc<Collect>, RunHandle) {
    let sink = Arc::new(Collect::default());
    let handle = set.start("ssh", req, sink.clone()).expect("start");
    (sink, handle)
}

fn run(set: &PluginSet, req: &StepRequest) -> (StepResult, Arc<Collect>) {
    let (sink, _h) = start(set, req);
    (sink.wait(RUN_LIMIT), sink)
}

fn unique_marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("jobx-{what}-{}-{nanos:x}", std::process::id())
}

fn accepted_logins(fleet: &SshdFleet, i: usize) -> usize {
    fleet.server(i).log().matches("Accepted publickey").count()
}

#[test]
fn six_nodes_each_run_the_step_with_their_own_output_over_one_connection() {
    let fleet = SshdFleet::start(6).expect("sshd fleet");
    let set = load_for(&fleet, json!({}));
    let script = "echo \"hello from $JOBX_NODE via ${SSH_CONNECTION##* }\"; echo to-stderr >&2";
    let runs: Vec<_> = (0..6)
        .map(|i| start(&set, &request(&fleet, i, cmd(script))))
        .collect();
    for (i, (sink, _h)) in runs.iter().enumerate() {
        let result = sink.wait(RUN_LIMIT);
        assert!(result.is_success(), "node {i}: {result:?} {:?}", sink.all());
        let s = fleet.server(i);
        // SSH_CONNECTION ends with the server's port: the step ran on that sshd.
        assert_eq!(
            sink.stream(Stream::Stdout),
            [format!("hello from node-{i} via {}", s.port())]
        );
        assert_eq!(sink.stream(Stream::Stderr), ["to-stderr"]);
    }
    // A second step reuses each node's master connection.
    for i in 0..6 {
        let (result, sink) = run(&set, &request(&fleet, i, cmd("echo again")));
        assert!(result.is_success(), "{result:?} {:?}", sink.all());
        assert_eq!(accepted_logins(&fleet, i), 1, "{}", fleet.server(i).log());
    }
}

#[test]
fn variables_and_arguments_with_spaces_quotes_and_dollars_arrive_intact() {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let set = load_for(&fleet, json!({}));
    let values = [
        "two words",
        "it's \"quoted\"",
        "$HOME ${PATH} $(id) `id`",
        "semi; colon && rm -rf /tmp/nothing | cat",
        "back\\slash\\n and *glob* ?",
        "line one\nline two",
        "",
    ];
    let mut req = request(
        &fleet,
        0,
        StepKind::Cmd {
            script: "for n in v0 v1 v2 v3 v4 v5 v6; do printf '<%s>\\n' \"${!n}\"; done\n\
                     for a in \"$@\"; do printf '[%s]\\n' \"$a\"; done\n\
                     printf 'version=%s batch=%s\\n' \"$version\" \"$JOBX_BATCH\"\n"
                .into(),
            interpreter: "bash".into(),
            args: values.iter().map(|v| v.to_string()).collect(),
        },
    );
    for (i, v) in values.iter().enumerate() {
        req.env.insert(format!("v{i}"), v.to_string());
    }
    req.env
        .insert("version".into(), "1.2.3 \"final\" $rel".into());
    req.env.insert("JOBX_BATCH".into(), "1".into());
    let (result, sink) = run(&set, &req);
    assert!(result.is_success(), "{result:?} {:?}", sink.all());
    let text = sink.stream(Stream::Stdout).join("\n");
    let mut want = String::new();
    for v in values {
        want.push_str(&format!("<{v}>\n"));
    }
    for v in values {
        want.push_str(&format!("[{v}]\n"));
    }
    want.push_str("version=1.2.3 \"final\" $rel batch=1");
    assert_eq!(text, want);

    // Other interpreters get the same environment.
    req.kind = StepKind::Cmd {
        script: "import os, sys\nprint(os.environ['v1'], sys.argv[1])\n".into(),
        interpreter: "python3".into(),
        args: vec!["x y".into()],
    };
    let (result, sink) = run(&set, &req);
    assert!(result.is_success(), "{result:?} {:?}", sink.all());
    assert_eq!(sink.stream(Stream::Stdout), ["it's \"quoted\" x y"]);
}

#[test]
fn large_scripts_and_values_arrive_whole() {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let set = load_for(&fleet, json!({}));
    let mut script = "# padding to make the script large\n".repeat(10_000);
    script.push_str("printf '%s' \"$big\" | wc -c\nprintf '%s' \"$1\" | wc -c\n");
    let big = "x$'\" ".repeat(20_000);
    let mut req = request(
        &fleet,
        0,
        StepKind::Cmd {
            script,
            interpreter: "sh".into(),
            args: vec![big.clone()],
        },
    );
    req.env.insert("big".into(), big);
    let (result, sink) = run(&set, &req);
    assert!(result.is_success(), "{result:?} {:?}", sink.all());
    let counts: Vec<String> = sink
        .stream(Stream::Stdout)
        .iter()
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(counts, ["100000", "100000"]);
}

#[test]
fn an_extra_ssh_config_file_is_read_first() {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let s = fleet.server(0);
    let extra = fleet.dir().join("extra ssh config");
    std::fs::write(
        &extra,
        format!(
            "Host web-alias\n  HostName {}\n  Port {}\n  User {}\n",
            s.host(),
            s.port(),
            fleet.user()
        ),
    )
    .expect("write");
    let set = load(json!({
        "identity_file": fleet.identity_file(),
        "ssh_config": extra,
    }));
    let mut req = request(&fleet, 0, cmd("echo via alias"));
    req.node.host = "web-alias".into();
    req.node.port = None;
    let (result, sink) = run(&set, &req);
    assert!(result.is_success(), "{result:?} {:?}", sink.all());
    assert_eq!(sink.stream(Stream::Stdout), ["via alias"]);
}

fn write_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).expect("mkdir");
    std::fs::write(root.join("a.txt"), "alpha\n").expect("write");
    std::fs::write(root.join("sub/b.txt"), "beta\n").expect("write");
    std::fs::write(root.join("sub/deeper/c d.txt"), "gamma\n").expect("write");
}

fn copy_kind(src: &Path, dst: &Path, chmod: Option<&str>, delete: bool) -> StepKind {
    StepKind::Scp {
        src: src.display().to_string(),
        dst: dst.display().to_string(),
        chmod: chmod.map(String::from),
        chown: None,
        delete,
    }
}

fn copies_files_and_directories(file_copy: &str) {
    use std::os::unix::fs::PermissionsExt;
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let set = load_for(&fleet, json!({ "file_copy": file_copy }));
    let local = fleet.dir().join("local");
    write_tree(&local.join("site"));
    std::fs::write(local.join("app.conf"), "key = value\n").expect("write");
    // sshd runs on this machine: "remote" paths are checked directly.
    let remote = fleet.dir().join("remote");

    // A file to a path whose parent does not exist yet.
    let dst = remote.join("etc/app.conf");
    let req = request(
        &fleet,
        0,
        copy_kind(&local.join("app.conf"), &dst, Some("0640"), false),
    );
    let (result, sink) = run(&set, &req);
    assert!(result.is_success(), "{result:?} {:?}", sink.all());
    let program = if file_copy == "scp" { "scp" } else { "rsync" };
    assert!(
        sink.stream(Stream::Info)
            .iter()
            .any(|l| l.ends_with(&format!("with {program}"))),
        "{:?}",
        sink.all()
    );
    assert_eq!(
        std::fs::read_to_string(&dst).expect("copied"),
        "key = value\n"
    );
    let mode = std::fs::metadata(&dst).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o640);

    // A file into an existing directory.
    let req = request(
        &fleet,
        0,
        copy_kind(&local.join("app.conf"), &remote.join("etc"), None, false),
    );
    let (result, sink) = run(&set, &req);
    assert!(result.is_success(), "{result:?} {:?}", sink.all());

    // A directory over an existing one with a stale file, mirrored.
    let site = remote.join("www");
    std::fs::create_dir_all(&site).expect("mkdir");
    std::fs::write(site.join("stale.txt"), "old").expect("write");
    let req = request(&fleet, 0, copy_kind(&local.join("site"), &site, None, true));
    let (result, sink) = run(&set, &req);
    assert!(result.is_success(), "{result:?} {:?}", sink.all());
    assert_eq!(
        std::fs::read_to_string(site.join("a.txt")).expect("a"),
        "alpha\n"
    );
    assert_eq!(
        std::fs::read_to_string(site.join("sub/deeper/c d.txt")).expect("c"),
        "gamma\n"
    );
    assert!(
        !site.join("stale.txt").exists(),
        "delete mirrors the source"
    );
    assert!(!site.join("site").exists(), "the directory is not nested");

    // Without delete, extra files stay.
    std::fs::write(site.join("keep.txt"), "keep").expect("write");
    let req = request(
        &fleet,
        0,
        copy_kind(&local.join("site"), &site, None, false),
    );
    let (result, sink) = run(&set, &req);
    assert!(result.is_success(), "{result:?} {:?}", sink.all());
    assert!(site.join("keep.txt").exists());
    assert!(site.join("sub/b.txt").exists());

    // A missing source fails before anything runs.
    let req = request(
        &fleet,
        0,
        copy_kind(&local.join("nope"), &site, None, false),
    );
    let (result, _) = run(&set, &req);
    assert!(!result.is_success());
    assert!(
        result.error.as_deref().unwrap_or("").contains("nope"),
        "{result:?}"
    );
}

#[test]
fn scp_steps_copy_files_and_directories_with_rsync() {
    copies_files_and_directories("auto");
}

#[test]
fn scp_steps_copy_files_and_directories_with_scp() {
    copies_files_and_directories("scp");
}

#[test]
fn a_failing_node_fails_alone_with_its_exit_code() {
    let fleet = SshdFleet::start(3).expect("sshd fleet");
    let set = load_for(&fleet, json!({}));
    let script = "if [ \"$JOBX_NODE\" = node-1 ]; then echo broken >&2; exit 3; fi; echo fine";
    let runs: Vec<_> = (0..3)
        .map(|i| start(&set, &request(&fleet, i, cmd(script))))
        .collect();
    let results: Vec<_> = runs.iter().map(|(s, _)| s.wait(RUN_LIMIT)).collect();
    assert!(
        results[0].is_success() && results[2].is_success(),
        "{results:?}"
    );
    assert_eq!(results[1], StepResult::exited(3));
    assert_eq!(runs[1].0.stream(Stream::Stderr), ["broken"]);

    // A step that exits 255 itself is not mistaken for a connection failure.
    let (result, _) = run(&set, &request(&fleet, 0, cmd("exit 255")));
    assert_eq!(result, StepResult::exited(255));
}

#[test]
fn an_unreachable_node_fails_fast_as_unreachable() {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let set = load_for(&fleet, json!({ "connect_timeout": 10 }));
    let (addr, port) = unused_endpoint().expect("free port");
    let mut req = request(&fleet, 0, cmd("echo never"));
    req.node.host = addr.to_string();
    req.node.port = Some(port);
    let t = Instant::now();
    let (result, sink) = run(&set, &req);
    let error = result.error.clone().unwrap_or_default();
    assert!(error.starts_with("unreachable: "), "{result:?}");
    assert!(error.contains("Connection refused"), "{error}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(sink.stream(Stream::Stdout).is_empty());

    // The reachable node is not held up by it.
    let (result, _) = run(&set, &request(&fleet, 0, cmd("true")));
    assert!(result.is_success(), "{result:?}");
}

#[test]
fn a_changed_host_key_fails_the_node_and_is_not_replaced() {
    let mut fleet = SshdFleet::start(2).expect("sshd fleet");
    let set = load_for(&fleet, json!({}));
    for i in 0..2 {
        let (result, _) = run(&set, &request(&fleet, i, cmd("true")));
        assert!(result.is_success(), "{result:?}");
    }
    let known_hosts = fleet.dir().join("data/known_hosts");
    let before = std::fs::read_to_string(&known_hosts).expect("known_hosts written");
    fleet.regenerate_host_key(1).expect("new host key");

    let (result, sink) = run(&set, &request(&fleet, 1, cmd("echo should-not-run")));
    let error = result.error.clone().unwrap_or_default();
    assert!(error.starts_with("host key mismatch"), "{result:?}");
    assert!(sink.stream(Stream::Stdout).is_empty());
    assert_eq!(
        std::fs::read_to_string(&known_hosts).expect("known_hosts"),
        before,
        "the recorded key is kept"
    );
    // The other node is unaffected.
    let (result, _) = run(&set, &request(&fleet, 0, cmd("true")));
    assert!(result.is_success(), "{result:?}");
}

#[test]
fn unknown_host_keys_are_refused_under_strict_checking() {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let set = load_for(&fleet, json!({ "strict_host_key_checking": "yes" }));
    let (result, _) = run(&set, &request(&fleet, 0, cmd("true")));
    let error = result.error.unwrap_or_default();
    assert!(error.starts_with("host key verification failed"), "{error}");

    // With the key in the configured known_hosts it connects.
    let kh = fleet.dir().join("trusted_hosts");
    std::fs::write(&kh, fleet.known_hosts().expect("keys")).expect("write");
    let set = load_for(
        &fleet,
        json!({ "strict_host_key_checking": "yes", "known_hosts": kh }),
    );
    let (result, _) = run(&set, &request(&fleet, 0, cmd("true")));
    assert!(result.is_success(), "{result:?}");
}

/// A step that leaves a marked child and a marked grandchild running.
fn marked_sleep(marker: &str) -> StepKind {
    cmd(&format!(
        "(exec -a {marker}-child sleep 300) &\nexec -a {marker} sleep 301\n"
    ))
}

#[test]
fn cancel_during_sleep_leaves_no_remote_process() {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let set = load_for(&fleet, json!({}));
    let marker = unique_marker("cancel");
    let (sink, handle) = start(&set, &request(&fleet, 0, marked_sleep(&marker)));
    assert!(
        wait_until(Duration::from_secs(20), || processes_matching(&marker)
            .len()
            == 2),
        "step did not start: {:?}",
        sink.all()
    );
    let t = Instant::now();
    handle.cancel();
    let result = sink.wait(RUN_LIMIT);
    assert_eq!(result, StepResult::failed("cancelled"));
    // The shell's own "Terminated" notice does not leak into the output.
    assert!(sink.stream(Stream::Stderr).is_empty(), "{:?}", sink.all());
    assert!(
        wait_until(Duration::from_secs(5), || processes_matching(&marker)
            .is_empty()),
        "left running: {:?}",
        processes_matching(&marker)
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn timeout_kills_the_remote_process_group() {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let set = load_for(&fleet, json!({}));
    let marker = unique_marker("timeout");
    let mut req = request(&fleet, 0, marked_sleep(&marker));
    req.timeout_secs = 2;
    let (result, sink) = run(&set, &req);
    assert_eq!(
        result,
        StepResult::failed("timeout after 2 s"),
        "{:?}",
        sink.all()
    );
    assert!(
        wait_until(Duration::from_secs(5), || processes_matching(&marker)
            .is_empty()),
        "left running: {:?}",
        processes_matching(&marker)
    );
}

#[test]
fn processes_left_behind_by_a_finished_step_are_killed() {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let set = load_for(&fleet, json!({}));
    let marker = unique_marker("leftover");
    let script = format!("(exec -a {marker} sleep 300) >/dev/null 2>&1 &\necho started");
    let (result, sink) = run(&set, &request(&fleet, 0, cmd(&script)));
    assert!(result.is_success(), "{result:?} {:?}", sink.all());
    assert!(
        wait_until(Duration::from_secs(5), || processes_matching(&marker)
            .is_empty()),
        "left running: {:?}",
        processes_matching(&marker)
    );
}

#[test]
fn thirty_concurrent_runs_on_one_default_sshd_all_succeed() {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let set = load_for(&fleet, json!({}));
    let runs: Vec<_> = (0..30)
        .map(|k| {
            let mut req = request(&fleet, 0, cmd("sleep 0.3; echo \"run $K\""));
            req.env.insert("K".into(), k.to_string());
            start(&set, &req)
        })
        .collect();
    for (k, (sink, _h)) in runs.iter().enumerate() {
        let result = sink.wait(RUN_LIMIT);
        assert!(result.is_success(), "run {k}: {result:?} {:?}", sink.all());
        assert_eq!(sink.stream(Stream::Stdout), [format!("run {k}")]);
    }
    let log = fleet.server(0).log();
    assert_eq!(accepted_logins(&fleet, 0), 1, "{log}");
    assert!(!log.contains("no more sessions"), "{log}");
    assert!(!log.contains("drop connection"), "{log}");
}

#[test]
fn thirty_connections_set_up_at_once_against_one_default_sshd_all_succeed() {
    // Each data dir has its own control sockets, so these are 30 distinct
    // master connections to one sshd, wanted at once: more than sshd's
    // default MaxStartups (10:30:100) lets through unconditionally, so the
    // plugin must pace them.
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let set = load_for(&fleet, json!({ "connect_timeout": 20 }));
    let runs: Vec<_> = (0..30)
        .map(|k| {
            let mut req = request(&fleet, 0, cmd("echo \"conn $K\""));
            let dir = fleet.dir().join(format!("d{k}"));
            std::fs::create_dir_all(&dir).expect("data dir");
            req.data_dir = dir.display().to_string();
            req.env.insert("K".into(), k.to_string());
            start(&set, &req)
        })
        .collect();
    for (k, (sink, _h)) in runs.iter().enumerate() {
        let result = sink.wait(RUN_LIMIT);
        assert!(result.is_success(), "run {k}: {result:?} {:?}", sink.all());
        assert_eq!(sink.stream(Stream::Stdout), [format!("conn {k}")]);
    }
    assert_eq!(accepted_logins(&fleet, 0), 30);
    let log = fleet.server(0).log();
    assert!(!log.contains("past MaxStartups"), "{log}");
}

/// Entry point of the child process of the next test: loads the plugin,
/// starts a marked step and waits to be killed.
#[test]
#[ignore = "helper process for host_killed_with_sigkill_leaves_no_remote_process"]
fn child_host_process() {
    let Ok(spec) = std::env::var("JOBX_SSH_TEST_CHILD") else {
        return;
    };
    let spec: Value = serde_json::from_str(&spec).expect("child spec");
    let set = load(spec["config"].clone());
    let req: StepRequest = serde_json::from_value(spec["request"].clone()).expect("request");
    let (_sink, _h) = start(&set, &req);
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn host_killed_with_sigkill_leaves_no_remote_process() {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let marker = unique_marker("sigkill");
    let spec = json!({
        "config": {
            "identity_file": fleet.identity_file(),
            "user": fleet.user(),
        },
        "request": request(&fleet, 0, marked_sleep(&marker)),
    });
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "child_host_process", "--ignored", "--nocapture"])
        .env("JOBX_SSH_TEST_CHILD", spec.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child host");
    let started = wait_until(Duration::from_secs(30), || {
        processes_matching(&marker).len() == 2
    });
    if !started {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the child host did not start the step");
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(
        wait_until(Duration::from_secs(10), || processes_matching(&marker)
            .is_empty()),
        "left running: {:?}",
        processes_matching(&marker)
    );
}
