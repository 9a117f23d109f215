//! The `jobx` command line: the real binary (target/debug/jobx) against a
//! real jobxd, asserting what a person at the terminal sees: the text, the
//! exit codes, and what the server holds afterwards.

use jobx_tests::daemon::{bin_dir, wait_for, Daemon, TempDir, ADMIN};
use jobx_tests::flow;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A user of the command line: its own home (config dir) and environment.
struct User {
    home: TempDir,
    env: Vec<(String, String)>,
}

impl User {
    /// Connected through the environment, as admin.
    fn new(d: &Daemon) -> User {
        let mut u = User::bare();
        u.env.push(("JOBX_SERVER".into(), d.base.clone()));
        u.env.push(("JOBX_TOKEN".into(), ADMIN.into()));
        u
    }

    /// No server or token in the environment.
    fn bare() -> User {
        let home = TempDir::new("cli-home");
        let env = vec![
            ("HOME".into(), home.path().display().to_string()),
            (
                "XDG_CONFIG_HOME".into(),
                home.path().join("config").display().to_string(),
            ),
        ];
        User { home, env }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("jobx"));
        c.args(args)
            .env_remove("JOBX_SERVER")
            .env_remove("JOBX_TOKEN")
            .env_remove("NO_COLOR")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut c = self.cmd(args);
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c
            .spawn()
            .expect("start target/debug/jobx (cargo build -p jobx-cli)");
        if let Some(text) = stdin {
            let mut i = child.stdin.take().expect("stdin");
            i.write_all(text.as_bytes()).expect("write stdin");
        }
        finish(child, T, args)
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, None)
    }

    /// A command that must succeed.
    fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args);
        assert_eq!(o.code, 0, "jobx {args:?}:\n{o}");
        o
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }
}

/// Waits for the exit with a deadline (a hung client fails the test).
fn finish(mut child: Child, timeout: Duration, what: &[&str]) -> Out {
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = jobx_tests::poll(timeout, || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "jobx {what:?} did not exit within {timeout:?}\n{}",
            o.join().unwrap_or_default()
        );
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: o.join().unwrap_or_default(),
        stderr: e.join().unwrap_or_default(),
    }
}

/// The project file of the walk-through, in the canonical form export writes.
const PROJECT: &str = r#"# jobx project file: nodes, groups and jobs (jobx apply -f / jobx export)
project = 10

[[node]]
name = "web1"

[[node]]
name = "web2"

[[node]]
name = "web3"
host = "127.0.0.1"

[[node]]
name = "web4"
port = 2222
user = "deploy"

[[node]]
name = "web5"
labels = { role = "web", zone = "b" }

[[node]]
name = "web6"

[[group]]
name = "canary"
node = "web1;web2,web3"
note = "one, then two"

[[group]]
name = "rollout"
percent = "1:2:50%"

[[job]]
name = "deploy"

[[job.step]]
name = "install"
plugin = "local"
timeout = 30
env = { MODE = "fast" }
script = '''
echo "installing $version on $JOBX_NODE"
'''

[[job.step]]
name = "check"
plugin = "local"
interpreter = "sh"
script = '''
[ "$JOBX_NODE" != web3 ] || [ -e "$marker" ] || { echo "web3 is unhealthy"; exit 1; }
'''
"#;

fn oplog_len(d: &Daemon) -> usize {
    d.data("/log/10?limit=10000").as_array().map_or(0, Vec::len)
}

#[test]
fn apply_export_round_trip_no_change_prune_and_a_bad_group() {
    let d = Daemon::start("");
    let u = User::new(&d);
    let file = u.path("project.toml");
    std::fs::write(&file, PROJECT).expect("write project file");
    let f = file.to_str().expect("path");

    // First apply: everything is created, and said so object by object.
    let o = u.ok(&["apply", "-f", f]);
    for line in [
        "+ node web1\n",
        "+ node web6\n",
        "+ group canary\n",
        "+ group rollout\n",
        "+ job deploy\n",
        "9 to create, 0 to change, 0 to delete\n",
        "applied to project 10\n",
    ] {
        assert!(o.stdout.contains(line), "{line:?}\n{o}");
    }
    assert_eq!(d.data("/node/10").as_array().map(Vec::len), Some(6));
    let job = d.data("/job/10/deploy");
    assert_eq!(job["steps"].as_array().map(Vec::len), Some(2), "{job}");
    assert_eq!(job["steps"][0]["env"]["MODE"], "fast");

    // Export gives back the file, byte for byte.
    let o = u.ok(&["export", "-p", "10"]);
    assert_eq!(o.stdout, PROJECT);

    // A second apply changes nothing and says so.
    let before = oplog_len(&d);
    let o = u.ok(&["apply", "-f", f]);
    assert!(o.stdout.ends_with("no changes\n"), "{o}");
    assert_eq!(oplog_len(&d), before, "a second apply wrote nothing");

    // A change is shown field by field; --dry-run stops there.
    let changed = PROJECT
        .replace("percent = \"1:2:50%\"", "percent = \"2:50%\"")
        .replace("port = 2222", "port = 2200");
    std::fs::write(&file, &changed).expect("write");
    let o = u.ok(&["apply", "--dry-run", "-f", f]);
    assert!(
        o.stdout.contains("~ node web4\n    port: 2222 → 2200\n"),
        "{o}"
    );
    assert!(
        o.stdout
            .contains("~ group rollout\n    percent \"1:2:50%\" → percent \"2:50%\"\n"),
        "{o}"
    );
    assert!(o.stdout.contains("dry run: nothing changed"), "{o}");
    assert_eq!(u.ok(&["export", "-p", "10"]).stdout, PROJECT);
    u.ok(&["apply", "-f", f]);
    assert_eq!(u.ok(&["export", "-p", "10"]).stdout, changed);

    // A group deleted from the file: kept without --prune, deleted with it.
    let start = changed
        .find("[[group]]\nname = \"canary\"")
        .expect("canary");
    let end = changed
        .find("[[group]]\nname = \"rollout\"")
        .expect("rollout");
    let pruned = format!("{}{}", &changed[..start], &changed[end..]);
    std::fs::write(&file, &pruned).expect("write");
    let o = u.ok(&["apply", "-f", f]);
    assert!(
        o.stdout
            .contains("group canary: not in the file, kept (--prune deletes it)"),
        "{o}"
    );
    assert!(o.stdout.ends_with("no changes\n"), "{o}");
    let o = u.ok(&["apply", "--prune", "-f", f]);
    assert!(o.stdout.contains("- group canary\n"), "{o}");
    assert!(
        o.stdout.contains("0 to create, 0 to change, 1 to delete"),
        "{o}"
    );
    let groups = d.data("/group/10");
    let names: Vec<&str> = groups
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(names, ["rollout"]);
    assert_eq!(u.ok(&["export", "-p", "10"]).stdout, pruned);

    // A bad group text fails naming the group and the piece; nothing changes,
    // not even the node and job edits of the same file.
    let bad = pruned
        .replace("percent = \"2:50%\"", "percent = \"1:0\"")
        .replace("[[group]]", "[[node]]\nname = \"web7\"\n\n[[group]]")
        .replace("timeout = 30", "timeout = 31");
    std::fs::write(&file, &bad).expect("write");
    let before = oplog_len(&d);
    let o = u.run(&["apply", "-f", f]);
    assert_eq!(o.code, 2, "{o}");
    assert!(o.stderr.contains("group rollout: percent: "), "{o}");
    assert!(o.stderr.contains("\"0\""), "the piece is named: {o}");
    assert!(o.stderr.contains("nothing was changed"), "{o}");
    assert!(o.stderr.contains("(HTTP 400)"), "{o}");
    assert_eq!(oplog_len(&d), before, "nothing was written");
    assert_eq!(u.ok(&["export", "-p", "10"]).stdout, pruned);

    // A directory of files is one project.
    let dir = u.path("proj.d");
    std::fs::create_dir_all(&dir).expect("dir");
    let (head, jobs) = pruned.split_at(pruned.find("[[job]]").expect("job"));
    std::fs::write(dir.join("a-inventory.toml"), head).expect("write");
    std::fs::write(dir.join("b-jobs.toml"), jobs).expect("write");
    let o = u.ok(&["apply", "-f", dir.to_str().expect("dir")]);
    assert!(o.stdout.ends_with("no changes\n"), "{o}");
}

/// PROJECT plus the group "three" (web1, then web3, then web2): batch 2 is
/// web3, whose check fails until the marker file exists.
fn setup_rollout(d: &Daemon, u: &User) {
    let file = u.path("project.toml");
    let text = PROJECT.replace(
        "[[group]]\nname = \"rollout\"",
        "[[group]]\nname = \"three\"\nnode = \"web1;web3;web2\"\n\n[[group]]\nname = \"rollout\"",
    );
    std::fs::write(&file, text).expect("write project");
    u.ok(&["apply", "-f", file.to_str().expect("path")]);
    assert_eq!(
        d.data("/group/10").as_array().map(Vec::len),
        Some(3),
        "three groups"
    );
}

/// The `jobx …` command of a printed line, before its `#` comment.
fn printed_command(out: &str, starts: &str) -> Vec<String> {
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(starts))
        .unwrap_or_else(|| panic!("no line starting {starts:?} in\n{out}"));
    let cmd = line.split('#').next().unwrap_or("");
    cmd.split_whitespace().skip(1).map(String::from).collect()
}

#[test]
fn run_follow_without_a_terminal_exits_3_then_retry_and_wait() {
    let d = Daemon::start("");
    let u = User::new(&d);
    setup_rollout(&d, &u);
    let marker = u.path("web3-fixed");
    let var = format!("marker={}", marker.display());
    let o = u.run(&[
        "run",
        "deploy",
        "-p",
        "10",
        "--group",
        "three",
        "--var",
        "version=2.4.1",
        "--var",
        &var,
        "--follow",
        "--log",
    ]);
    assert_eq!(o.code, 3, "waiting for a person is exit 3:\n{o}");
    // The plan, then progress lines, the nodes' output, then what to do.
    for text in [
        "plan: job deploy over three: 3 batches, 3 nodes\n",
        "1      web1   install, check\n",
        "2      web3   install, check\n",
        "batch 1/3 [web1]: success (1/1 nodes",
        "[web3] installing 2.4.1 on web3",
        "[web3] web3 is unhealthy",
        "batch 2/3 failed on web3",
        "and waits for a person. Decide with one of:",
    ] {
        assert!(o.stdout.contains(text), "{text:?}\n{o}");
    }
    let started = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("task ")?.strip_suffix(" started"))
        .unwrap_or_else(|| panic!("no 'task … started' line\n{o}"))
        .to_string();
    let retry = printed_command(&o.stdout, "jobx batch retry");
    let confirm = printed_command(&o.stdout, "jobx batch confirm");
    let stop = printed_command(&o.stdout, "jobx task stop");
    let subs = flow::subtasks(&d, 10, &started);
    let batch2 = subs[1]["uuid"].as_str().expect("batch uuid").to_string();
    assert_eq!(retry, ["batch", "retry", "-p", "10", &batch2]);
    assert_eq!(confirm, ["batch", "confirm", "-p", "10", &batch2]);
    assert_eq!(stop, ["task", "stop", "-p", "10", &started]);
    assert_eq!(subs[1]["confirm"], "WaitConfirm");
    assert_eq!(flow::task(&d, 10, &started)["status"], "running");

    // While it waits, task wait says so too (exit 3, same commands).
    let o = u.run(&["task", "wait", "-p", "10", &started]);
    assert_eq!(o.code, 3, "{o}");
    assert!(o.stdout.contains("jobx batch retry -p 10"), "{o}");

    // Fix the cause, run the printed retry command, wait for the end.
    std::fs::write(&marker, "").expect("marker");
    let args: Vec<&str> = retry.iter().map(String::as_str).collect();
    let o = u.ok(&args);
    assert!(o.stdout.contains("retried"), "{o}");
    let o = u.run(&["task", "wait", "-p", "10", &started]);
    assert_eq!(o.code, 0, "{o}");
    assert!(o.stdout.contains(&format!("task {started} success")), "{o}");
    assert_eq!(flow::task(&d, 10, &started)["status"], "success");

    // With --exit-on-fail the task ends at the failed batch: exit 1.
    std::fs::remove_file(&marker).expect("rm marker");
    let o = u.run(&[
        "run",
        "deploy",
        "-p",
        "10",
        "-g",
        "three",
        "--var",
        &var,
        "--exit-on-fail",
        "--follow",
    ]);
    assert_eq!(o.code, 1, "{o}");
    assert!(o.stdout.contains(" fail"), "{o}");
}

/// A tmux server of this test alone (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            socket: format!("jobx-cli-{}", std::process::id()),
        }
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux (tests/run.sh installs it)")
    }

    /// Runs `script` under `sh -c` in a detached session `t` of
    /// `cols` × `rows`: a real terminal for the program under test.
    fn start(&self, cols: u16, rows: u16, script: &str) {
        let (cols, rows) = (cols.to_string(), rows.to_string());
        let o = self.cmd(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            &cols,
            "-y",
            &rows,
            "sh",
            "-c",
            script,
        ]);
        assert!(
            o.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(
            &self
                .cmd(&["capture-pane", "-p", "-J", "-S", "-200", "-t", "t"])
                .stdout,
        )
        .to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn the_prompt_in_a_terminal_retries_and_the_task_succeeds() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for the terminal test (tests/run.sh installs it)");
    }
    let d = Daemon::start("");
    let u = User::new(&d);
    setup_rollout(&d, &u);
    let marker = u.path("web3-fixed");
    let exit_file = u.path("exit-code");
    let mut line = String::from("env");
    for (k, v) in &u.env {
        line.push_str(&format!(" {k}={}", sh_quote(v)));
    }
    line.push_str(&format!(
        " {} run deploy -p 10 --group three --var marker={} --follow; echo $? > {}",
        sh_quote(&bin_dir().join("jobx").display().to_string()),
        sh_quote(&marker.display().to_string()),
        sh_quote(&exit_file.display().to_string()),
    ));
    let tmux = Tmux::new();
    tmux.start(160, 50, &format!("{line}; sleep 3600"));
    let question = "batch 2/3 failed on web3 (";
    wait_for("the prompt in the terminal", T, || {
        let p = tmux.pane();
        (p.contains(question) && p.contains("retry / continue / stop? [retry/continue/stop]"))
            .then_some(())
    });
    assert!(!exit_file.exists(), "jobx waits for the answer");
    std::fs::write(&marker, "").expect("marker");
    let o = tmux.cmd(&["send-keys", "-t", "t", "retry", "Enter"]);
    assert!(o.status.success());
    let code = wait_for("jobx to exit after the answer", T, || {
        std::fs::read_to_string(&exit_file)
            .ok()
            .filter(|s| s.ends_with('\n'))
    });
    let pane = tmux.pane();
    assert_eq!(code.trim(), "0", "exit code; the terminal showed:\n{pane}");
    assert!(pane.contains("retry: done"), "{pane}");
    assert!(pane.contains(" success after "), "{pane}");
    // The progress bars: nodes done / total per batch.
    assert!(
        pane.contains("1/1   nodes batch 3/3 [web2]: success"),
        "{pane}"
    );
    let tasks = d.data("/task/10");
    let t = tasks.as_array().and_then(|a| a.last()).expect("a task");
    assert_eq!(t["status"], "success", "{t}");
}

#[test]
fn log_follow_prints_lines_while_the_step_runs_and_ends_with_it() {
    let d = Daemon::start("");
    let u = User::new(&d);
    let marker = u.path("go-on");
    flow::nodes(&d, 10, &["solo"]);
    flow::group(&d, 10, "one", "list", "solo");
    flow::job(
        &d,
        10,
        "slow",
        json!([{"name": "wait", "plugin": "local",
                "script": "echo first line; while [ ! -e \"$marker\" ]; do sleep 0.05; done; echo second line"}]),
    );
    let task = flow::start(
        &d,
        10,
        "slow",
        "one",
        json!({"marker": marker.display().to_string()}),
    );
    let mut child = u
        .cmd(&["log", "-f", "-p", "10", &task])
        .spawn()
        .expect("start jobx log -f");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let mut until = |want: &str| {
        wait_for(&format!("{want:?} from jobx log -f"), T, || {
            while let Ok(l) = rx.try_recv() {
                seen.push(l);
            }
            seen.iter().any(|l| l.contains(want)).then_some(())
        });
    };
    until("[solo] first line");
    // The step still runs: the client keeps following.
    assert_eq!(flow::task(&d, 10, &task)["status"], "running");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "log -f ended early"
    );
    std::fs::write(&marker, "").expect("marker");
    until("[solo] second line");
    let status = wait_for("jobx log -f to end with the task", T, || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status:?}");
    assert_eq!(flow::task(&d, 10, &task)["status"], "success");

    // Without -f: the log so far; with --json, one JSON record a line.
    let o = u.ok(&["log", "-p", "10", &task]);
    assert!(
        o.stdout.contains("[solo] first line\n[solo] second line\n"),
        "{o}"
    );
    let o = u.ok(&["log", "--json", "-p", "10", &task]);
    let recs: Vec<Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(recs
        .iter()
        .any(|r| r["text"] == "second line" && r["node"] == "solo"));
}

/// What a `--json` answer must hold.
type Check = fn(&Value) -> bool;

#[test]
fn every_read_prints_json_with_json() {
    let d = Daemon::start("");
    let u = User::new(&d);
    setup_rollout(&d, &u);
    let marker = u.path("web3-fixed");
    std::fs::write(&marker, "").expect("marker");
    let var = format!("marker={}", marker.display());
    let o = u.ok(&[
        "run", "deploy", "-p", "10", "-g", "three", "--var", &var, "--follow", "--json",
    ]);
    let task: Value = serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}\n{o}"));
    assert_eq!(task["status"], "success");
    let uuid = task["uuid"].as_str().expect("uuid").to_string();
    let cases: Vec<(Vec<&str>, Check)> = vec![
        (vec!["node", "ls"], |v| {
            v.as_array().map(Vec::len) == Some(6)
        }),
        (vec!["group", "ls"], |v| {
            v.as_array().map(Vec::len) == Some(3)
        }),
        (vec!["group", "show", "three"], |v| {
            v["node"] == "web1;web3;web2"
        }),
        (vec!["group", "preview", "three"], |v| {
            *v == json!([["web1"], ["web3"], ["web2"]])
        }),
        (vec!["job", "ls"], |v| v[0]["name"] == "deploy"),
        (vec!["job", "show", "deploy"], |v| {
            v["steps"][1]["name"] == "check"
        }),
        (vec!["task", "ls"], |v| {
            v.as_array().map(Vec::len) == Some(1)
        }),
        (vec!["task", "show", "UUID"], |v| {
            v["task"]["status"] == "success" && v["batches"].as_array().map(Vec::len) == Some(3)
        }),
        (vec!["approval", "ls"], |v| *v == json!([])),
        (vec!["oplog"], |v| v[0]["title"] == "START TASK"),
        (vec!["export"], |v| {
            v["nodes"].as_array().map(Vec::len) == Some(6)
                && v["groups"][0]["node"] == "web1;web2,web3"
                && v["jobs"][0]["steps"][0]["uuid"].is_string()
        }),
        (vec!["stats"], |v| {
            v["last"][0]["status"] == "success" && v["count"]["success"] == 1
        }),
    ];
    for (args, check) in cases {
        let mut a: Vec<&str> = args
            .iter()
            .map(|s| if *s == "UUID" { uuid.as_str() } else { s })
            .collect();
        a.extend(["-p", "10", "--json"]);
        let o = u.ok(&a);
        let v: Value =
            serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{a:?}: {e}\n{o}"));
        assert!(check(&v), "{a:?}: {v}");
    }
    // The human forms of the same reads are tables and words.
    let o = u.ok(&["node", "ls", "-p", "10"]);
    assert!(
        o.stdout
            .starts_with("NAME  HOST       PORT  USER    LABELS\n"),
        "{o}"
    );
    assert!(
        o.stdout
            .contains("web5  web5       -     -       role=web,zone=b\n"),
        "{o}"
    );
    assert!(!o.stdout.contains('\x1b'), "no colours without a terminal");
    let o = u.ok(&["stats", "-p", "10"]);
    assert!(o.stdout.contains("this month: "), "{o}");
    assert!(o.stdout.contains("█"), "bar charts: {o}");
    let o = u.ok(&["completions", "bash"]);
    assert!(o.stdout.contains("complete -F"), "{o}");
}

#[test]
fn errors_show_the_server_message_and_name_an_unreachable_server() {
    let d = Daemon::start("");
    let mut u = User::new(&d);
    u.env.retain(|(k, _)| k != "JOBX_TOKEN");
    u.env.push(("JOBX_TOKEN".into(), "not-a-token".into()));
    let o = u.run(&["node", "ls", "-p", "10"]);
    assert_eq!(o.code, 2, "{o}");
    assert!(o.stderr.contains("unknown token (HTTP 401)"), "{o}");

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let o = u.run(&["--server", &url, "node", "ls", "-p", "10"]);
    assert_eq!(o.code, 2, "{o}");
    assert!(
        o.stderr
            .contains(&format!("cannot reach the jobx server at {url}")),
        "{o}"
    );

    // Usage errors are exit 2 too, before anything is sent; so is a missing project.
    assert_eq!(u.run(&["run", "deploy"]).code, 2);
    let o = u.run(&["node", "ls"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("no project: give -p ID"), "{o}");
    let help = User::bare().ok(&["--help"]);
    assert!(
        help.stdout.contains("3  the task waits for a person"),
        "{help}"
    );
}

#[test]
fn login_checks_the_token_and_saves_a_private_context() {
    let d = Daemon::start("");
    let u = User::bare();
    let config = u.path("config/jobx/config.toml");
    let o = u.run_with(
        &["login", "--server", &d.base, "--context", "lab", "-p", "10"],
        Some("wrong-token\n"),
    );
    assert_eq!(o.code, 2, "{o}");
    assert!(o.stderr.contains("unknown token (HTTP 401)"), "{o}");
    assert!(!config.exists(), "a refused token is not saved");

    let o = u.run_with(
        &["login", "--server", &d.base, "--context", "lab", "-p", "10"],
        Some(&format!("{ADMIN}\n")),
    );
    assert_eq!(o.code, 0, "{o}");
    assert!(o.stdout.contains("context \"lab\" saved"), "{o}");
    let mode = std::fs::metadata(&config)
        .expect("config written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The context serves server, token and project from now on.
    flow::nodes(&d, 10, &["from-context"]);
    let o = u.ok(&["node", "ls"]);
    assert!(o.stdout.contains("from-context"), "{o}");
    assert_eq!(u.run(&["--context", "nope", "node", "ls"]).code, 2);
}

#[test]
fn the_documented_project_file_applies_and_exports_unchanged() {
    let md = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/project-file.md"),
    )
    .expect("docs/project-file.md");
    let start = md.find("```toml\n").expect("a toml block") + 8;
    let text = &md[start..start + md[start..].find("```").expect("block end")];
    let d = Daemon::start("");
    let u = User::new(&d);
    let file = u.path("example.toml");
    std::fs::write(&file, text).expect("write");
    let o = u.ok(&["apply", "-f", file.to_str().expect("path")]);
    assert!(o.stdout.contains("applied to project 7"), "{o}");
    assert_eq!(u.ok(&["export", "-p", "7"]).stdout, text);
    let o = u.ok(&["apply", "-f", file.to_str().expect("path")]);
    assert!(o.stdout.ends_with("no changes\n"), "{o}");
}

#[test]
fn login_at_a_terminal_prompts_without_echo() {
    let d = Daemon::start("");
    let u = User::bare();
    let mut line = String::from("env");
    for (k, v) in &u.env {
        line.push_str(&format!(" {k}={}", sh_quote(v)));
    }
    let exit_file = u.path("exit-code");
    line.push_str(&format!(
        " {} login --server {} -p 10; echo $? > {}",
        sh_quote(&bin_dir().join("jobx").display().to_string()),
        sh_quote(&d.base),
        sh_quote(&exit_file.display().to_string()),
    ));
    let tmux = Tmux::new();
    tmux.start(160, 20, &format!("{line}; sleep 3600"));
    let prompt = format!("token for {}: ", d.base);
    wait_for("the token prompt", T, || {
        tmux.pane().contains(&prompt).then_some(())
    });
    assert!(tmux
        .cmd(&["send-keys", "-t", "t", "-l", ADMIN])
        .status
        .success());
    assert!(tmux
        .cmd(&["send-keys", "-t", "t", "Enter"])
        .status
        .success());
    let code = wait_for("jobx login to exit", T, || {
        std::fs::read_to_string(&exit_file)
            .ok()
            .filter(|s| s.ends_with('\n'))
    });
    let pane = tmux.pane();
    assert_eq!(code.trim(), "0", "{pane}");
    assert!(!pane.contains(ADMIN), "the token was echoed:\n{pane}");
    assert!(pane.contains("context \"default\" saved"), "{pane}");
    let saved = std::fs::read_to_string(u.path("config/jobx/config.toml")).expect("config");
    assert!(
        saved.contains(ADMIN) && saved.contains("project = 10"),
        "{saved}"
    );
}

#[test]
fn approvals_and_rollback_decisions_from_the_command_line() {
    let d = Daemon::start("");
    let u = User::new(&d);
    let file = u.path("gated.toml");
    std::fs::write(
        &file,
        r#"project = 10
[[node]]
name = "a1"
[[node]]
name = "a2"
[[group]]
name = "two"
node = "a1;a2"
[[job]]
name = "gated"
[[job.step]]
name = "hello"
plugin = "local"
script = "echo \"$JOBX_ACTION $version on $JOBX_NODE\""
[[job.step]]
name = "go on?"
plugin = "approval"
batches = "firsttime"
action = "deploy"
approvers = ["admin"]
message = "canary ${ip} fine with ${version}?"
"#,
    )
    .expect("write");
    u.ok(&["apply", "-f", file.to_str().expect("path")]);
    let o = u.run(&[
        "run",
        "gated",
        "-p",
        "10",
        "-g",
        "two",
        "--var",
        "version=3",
        "--rollback-version",
        "2",
        "--follow",
    ]);
    assert_eq!(o.code, 3, "an approval waits for a person:\n{o}");
    assert!(
        o.stdout
            .contains("the task waits for approval by admin: canary a1 fine with 3?"),
        "{o}"
    );
    let agree = printed_command(&o.stdout, "jobx approval agree");
    assert!(o.stdout.contains("jobx approval refuse -p 10 "), "{o}");
    let o = u.ok(&["approval", "ls", "-p", "10"]);
    assert!(o.stdout.contains("canary a1 fine with 3?"), "{o}");
    let args: Vec<&str> = agree.iter().map(String::as_str).collect();
    u.ok(&args);
    let task = d
        .data("/task/10")
        .as_array()
        .and_then(|a| a.last().cloned())
        .expect("task");
    let uuid = task["uuid"].as_str().expect("uuid").to_string();

    // The deploy ends; a rollback decision is expected and the commands are shown.
    let o = u.run(&["task", "wait", "-p", "10", &uuid]);
    assert_eq!(o.code, 0, "{o}");
    assert!(o.stdout.contains("a rollback decision is expected:"), "{o}");
    assert!(
        o.stdout
            .contains(&format!("jobx task rollback -p 10 {uuid}")),
        "{o}"
    );
    let o = u.ok(&["task", "rollback", "-p", "10", &uuid]);
    let mut rb = uuid.clone();
    let last = rb.pop().expect("last");
    rb.push(last.to_ascii_uppercase());
    assert!(
        o.stdout.contains(&format!("rollback task {rb} started")),
        "{o}"
    );
    let o = u.run(&["task", "wait", "-p", "10", &rb]);
    assert_eq!(
        o.code, 0,
        "the rollback skips the deploy-only approval:\n{o}"
    );
    let o = u.ok(&["log", "-p", "10", &rb]);
    assert!(o.stdout.contains("[a1] rollback 2 on a1"), "{o}");
    // One decision per deploy: a second one is the server's 409.
    let o = u.run(&["task", "norollback", "-p", "10", &uuid]);
    assert_eq!(o.code, 2, "{o}");
    assert!(o.stderr.contains("(HTTP 409)"), "{o}");
}

#[test]
fn colours_on_a_terminal_unless_no_color() {
    let d = Daemon::start("");
    let u = User::new(&d);
    flow::nodes(&d, 10, &["c1"]);
    let tmux = Tmux::new();
    let jobx = sh_quote(&bin_dir().join("jobx").display().to_string());
    let env: String = u
        .env
        .iter()
        .map(|(k, v)| format!(" {k}={}", sh_quote(v)))
        .collect();
    let script = format!(
        "env{env} {jobx} node ls -p 10; echo ---; env{env} NO_COLOR=1 {jobx} node ls -p 10; echo DONE; sleep 3600"
    );
    tmux.start(120, 20, &script);
    let pane = wait_for("both listings", T, || {
        let p = tmux.cmd(&["capture-pane", "-p", "-e", "-t", "t"]);
        let p = String::from_utf8_lossy(&p.stdout).to_string();
        p.contains("DONE").then_some(p)
    });
    let (coloured, plain) = pane.split_once("---").expect("separator");
    assert!(
        coloured.contains("\x1b[1mNAME"),
        "bold header on a terminal:\n{pane:?}"
    );
    assert!(
        !plain.contains("\x1b[1m"),
        "NO_COLOR: no colours:\n{pane:?}"
    );
    assert!(plain.contains("NAME"), "{pane:?}");
}

#[test]
fn follow_rides_out_a_daemon_restart() {
    let mut d = Daemon::start("");
    let u = User::new(&d);
    let marker = u.path("never");
    flow::nodes(&d, 10, &["r1", "r2"]);
    flow::group(&d, 10, "two", "list", "r1;r2");
    flow::job(
        &d,
        10,
        "hang",
        json!([{"name": "wait", "plugin": "local",
                "script": "echo started; while [ ! -e \"$marker\" ]; do sleep 0.05; done"}]),
    );
    let var = format!("marker={}", marker.display());
    let mut child = u
        .cmd(&[
            "run", "hang", "-p", "10", "-g", "two", "--var", &var, "--follow", "--log",
        ])
        .spawn()
        .expect("start jobx run");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let mut until = |want: &str| {
        wait_for(&format!("{want:?} from jobx run --follow"), T, || {
            while let Ok(l) = rx.try_recv() {
                seen.push(l);
            }
            seen.iter().any(|l| l.contains(want)).then_some(())
        });
    };
    until("[r1] started");
    // Killed mid-step: the client notices and keeps trying. Started again,
    // the batch is failed as interrupted and waits for a person; the follow
    // goes on through the restart to that.
    d.kill9();
    until("trying again");
    d.restart();
    until("Decide with one of:");
    let status = wait_for("jobx run to exit", T, || child.try_wait().ok().flatten());
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push(l);
    }
    let tasks = d.data("/task/10");
    let task = tasks
        .as_array()
        .and_then(|a| a.last())
        .and_then(|t| t["uuid"].as_str())
        .expect("task uuid")
        .to_string();
    let o = Out {
        code: status.code().unwrap_or(-1),
        stdout: seen.join("\n"),
        stderr: String::new(),
    };
    assert_eq!(o.code, 3, "{o}");
    assert!(o.stdout.contains("cannot reach the jobx server at"), "{o}");
    assert!(o.stdout.contains("trying again"), "{o}");
    assert!(o.stdout.contains("batch 1/2 failed on r1"), "{o}");
    assert!(o.stdout.contains("interrupted by daemon restart"), "{o}");
    assert!(
        o.stdout.contains(&format!("jobx task stop -p 10 {task}")),
        "{o}"
    );
}
