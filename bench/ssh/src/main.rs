//! Wall-time comparison of jobx with `ansible-playbook` and with a plain
//! ssh + ControlMaster loop, running the same three-command job over real
//! OpenSSH servers in batches.
//!
//! ```text
//! bench/ssh/run.sh                      # venv + ansible-core, release build, this binary
//! JOBX_BIN_DIR=target/release target/release/jobx-bench-ssh \
//!     --ansible-playbook target/bench-ssh/venv/bin/ansible-playbook
//! ```
//!
//! It starts `--hosts` sshd servers on 127.0.0.2, 127.0.0.3, … (one per
//! loopback address, each on a free port) and runs, in each of `--rounds`
//! rounds, every contender once (the order rotates from round to round) on
//! the job `uname -a`; `echo deployed-$(hostname) > /dev/null`; `sleep 0.2`,
//! `--batch` hosts at a time, each command on every host of the batch
//! before the next command:
//!
//! - **jobx**: a fresh `jobxd` (fresh data dir, so no master connection or
//!   known host from an earlier run) with the ssh plugin; the time runs
//!   from just before `POST /task/10/job/byname` until a poll of
//!   `GET /task/10/<uuid>` sees the task finished;
//! - **jobx without prepare**: the same, with a copy of the ssh plugin whose
//!   optional "prepare these nodes" symbol is renamed, so the daemon loads
//!   it as a plugin without the hook (what jobx did before the hook);
//! - **ControlMaster loop**: per batch, open the masters of its hosts in
//!   parallel (`ssh -M -N -f`, `ControlPersist`), then run each command on
//!   every host of the batch in parallel over them: what a script that
//!   connects batch by batch does;
//! - **ansible**: a playbook with `serial`, `gather_facts: false` and the
//!   same three commands, run by `ansible-playbook` with a fresh
//!   `ControlPath` directory; the time is the whole process, start to exit.
//!
//! The servers set `HOME` (sshd's `SetEnv`) to a directory with an empty
//! `.bashrc`, so every contender's commands run in the same clean shell,
//! not one that starts a heavy profile. Every contender must succeed on
//! every host, otherwise the bench stops with its output. Idle master
//! connections a run leaves behind are closed after the run, by pid, so
//! that they neither carry over nor take CPU from the next run. Each round
//! gives the ratios of jobx's time to the others'; the bench prints their
//! minimum and median with the goal beside them. Everything talks to
//! loopback addresses only, and all servers stop when the bench ends.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobx_tests::daemon::{bin_dir, Daemon, TempDir};
use jobx_tests::flow::{group, job, log_text, start, subtasks, task};
use jobx_tests::sshd::{processes_matching, SshdFleet, SshdOptions};
use serde_json::json;

/// The project every jobx object lives in.
const PROJECT: u64 = 10;
/// The three commands, as the job's steps name them.
const COMMANDS: [(&str, &str); 3] = [
    ("uname", "uname -a"),
    ("deployed", "echo deployed-$(hostname) > /dev/null"),
    ("sleep", "sleep 0.2"),
];
/// Longest a single run may take before the bench gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the task is polled while jobx runs it.
const POLL: Duration = Duration::from_millis(10);
/// The goal for jobx against ansible-playbook (at most this ratio).
const GOAL_ANSIBLE: f64 = 0.10;
/// The goal for jobx against the ControlMaster loop (below this ratio).
const GOAL_LOOP: f64 = 1.0;
/// The optional symbol that carries the ssh plugin's "prepare" hook, and
/// the name of the same length it gets in the copy without it.
const HOOK_SYMBOL: &[u8] = b"jobx_plugin_v1_extensions";
const HIDDEN_SYMBOL: &[u8] = b"jobx_plugin_v1_extensionX";

struct Options {
    hosts: usize,
    batch: usize,
    rounds: usize,
    ansible_playbook: PathBuf,
    python: String,
    /// A directory with another build of `libjobx_plugin_ssh.so`, run as
    /// one more contender (e.g. the plugin before a change).
    baseline_plugin: Option<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        hosts: 20,
        batch: 5,
        rounds: 5,
        ansible_playbook: PathBuf::from("ansible-playbook"),
        python: "/usr/bin/python3".to_string(),
        baseline_plugin: None,
    };
    let usage = "options: --hosts N --batch N --rounds N --ansible-playbook PATH --python PATH \
                 --baseline-plugin DIR";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(usage.to_string());
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--hosts" => o.hosts = num()?,
            "--batch" => o.batch = num()?,
            "--rounds" | "--runs" => o.rounds = num()?,
            // Made absolute: ansible-playbook runs in its own directory.
            "--ansible-playbook" if value.contains('/') => {
                o.ansible_playbook = std::fs::canonicalize(value)
                    .map_err(|e| format!("--ansible-playbook {value}: {e}"))?
            }
            "--ansible-playbook" => o.ansible_playbook = PathBuf::from(value),
            "--python" => o.python = value.clone(),
            "--baseline-plugin" => {
                let dir = std::fs::canonicalize(value)
                    .map_err(|e| format!("--baseline-plugin {value}: {e}"))?;
                if !dir.join("libjobx_plugin_ssh.so").is_file() {
                    return Err(format!(
                        "--baseline-plugin {value}: no libjobx_plugin_ssh.so in it"
                    ));
                }
                o.baseline_plugin = Some(dir);
            }
            _ => return Err(format!("unknown option {flag}; {usage}")),
        }
    }
    if o.hosts == 0 || o.batch == 0 || o.rounds == 0 {
        return Err("--hosts, --batch and --rounds must be positive".to_string());
    }
    if o.hosts > 250 {
        return Err("--hosts: at most 250 (one loopback address each)".to_string());
    }
    Ok(o)
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("jobx-bench-ssh: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&o) {
        eprintln!("jobx-bench-ssh: {e}");
        std::process::exit(1);
    }
}

/// What runs the job.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Jobx,
    JobxWithoutPrepare,
    JobxBaseline,
    Loop,
    Ansible,
}

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Contender::Jobx => "jobx",
            Contender::JobxWithoutPrepare => "jobx without prepare",
            Contender::JobxBaseline => "jobx, baseline plugin",
            Contender::Loop => "ControlMaster loop",
            Contender::Ansible => "ansible-playbook",
        }
    }
}

/// Wall times of one round, by contender, and the machine's busy CPU
/// seconds during each run.
#[derive(Default)]
struct Round {
    times: Vec<(Contender, f64)>,
    cpu: Vec<(Contender, f64)>,
}

/// Busy CPU seconds of the whole machine so far (all cores; `/proc/stat`,
/// in USER_HZ = 1/100 s): every process of a run, jobx, ssh clients and
/// the servers alike, since they all run here.
fn machine_cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle, iowait.
    let busy: f64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy / 100.0
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// Opens the masters of `batch` in parallel, as a script would (`-N -f`:
/// ssh returns once the master is up), and waits for all of them.
fn open_masters(fleet: &SshdFleet, batch: &[usize], ctl_dir: &Path) -> Result<(), String> {
    let mut masters = Vec::new();
    for &i in batch {
        let host = fleet.server(i).host();
        let what = format!("master to {host}");
        let child = Command::new("ssh")
            .args(loop_args(fleet, i, &ctl_dir.join(format!("h{i}"))))
            .args([
                "-o",
                "ControlMaster=yes",
                "-o",
                "ControlPersist=60",
                "-N",
                "-f",
                "--",
                &host,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{what}: cannot run ssh: {e}"))?;
        masters.push((what, child));
    }
    wait_all(masters).map(|_| ())
}

/// What the connections alone cost: the loop's master phase (each batch's
/// masters in parallel, batch after batch) with nothing run over them.
/// Answers (wall, machine CPU seconds).
fn connections_alone(fleet: &SshdFleet, o: &Options, tag: &str) -> Result<(f64, f64), String> {
    let ctl_dir = fleet.dir().join(format!("probe-{tag}"));
    std::fs::create_dir_all(&ctl_dir).map_err(|e| format!("create {}: {e}", ctl_dir.display()))?;
    let hosts: Vec<usize> = (0..o.hosts).collect();
    let cpu0 = machine_cpu_seconds();
    let t0 = Instant::now();
    for batch in hosts.chunks(o.batch) {
        open_masters(fleet, batch, &ctl_dir)?;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = machine_cpu_seconds() - cpu0;
    close_masters(fleet);
    Ok((wall, cpu))
}

impl Round {
    fn time(&self, c: Contender) -> Option<f64> {
        self.times.iter().find(|(k, _)| *k == c).map(|(_, t)| *t)
    }

    fn cpu(&self, c: Contender) -> Option<f64> {
        self.cpu.iter().find(|(k, _)| *k == c).map(|(_, t)| *t)
    }

    fn ratio(&self, a: Contender, b: Contender) -> Option<f64> {
        Some(self.time(a)? / self.time(b)?)
    }
}

fn run(o: &Options) -> Result<(), String> {
    let version = match ansible_version(&o.ansible_playbook) {
        Ok(v) => Some(v),
        Err(e) => {
            println!("ansible-playbook is not available ({e}): comparing with the ControlMaster loop only");
            None
        }
    };
    // A HOME with an empty .bashrc for every login on the servers.
    let home = TempDir::new("bench-ssh-home");
    std::fs::write(home.path().join(".bashrc"), "")
        .map_err(|e| format!("write {}/.bashrc: {e}", home.path().display()))?;
    let opts = SshdOptions {
        extra_config: vec![format!("SetEnv HOME={}", home.path().display())],
    };
    let fleet = SshdFleet::start_with(o.hosts, &opts).map_err(|e| format!("starting sshd: {e}"))?;
    let out = fleet
        .ssh(0, "echo $HOME")
        .map_err(|e| format!("ssh to the first server: {e}"))?;
    let seen = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || seen != home.path().display().to_string() {
        return Err(format!(
            "the servers' login shells do not start in the clean HOME (got {seen:?}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let names: Vec<String> = (1..=o.hosts).map(|i| format!("h{i:02}")).collect();
    let batches = o.hosts.div_ceil(o.batch);
    let last = fleet.server(o.hosts - 1);
    println!(
        "{} sshd on 127.0.0.2..{} (user {}, HOME with an empty .bashrc), batches of {} ({} batches), \
         {} rounds; on every host: {}",
        o.hosts,
        last.host(),
        fleet.user(),
        o.batch,
        batches,
        o.rounds,
        COMMANDS.map(|(_, c)| c).join("; "),
    );
    let mut contenders = vec![
        Contender::Jobx,
        Contender::JobxWithoutPrepare,
        Contender::Loop,
    ];
    if let Some(dir) = &o.baseline_plugin {
        println!(
            "baseline ssh plugin: {}/libjobx_plugin_ssh.so",
            dir.display()
        );
        contenders.push(Contender::JobxBaseline);
    }
    if let Some(v) = &version {
        println!(
            "{} (startup alone, `--version`: {:.3} s)",
            v.text, v.seconds
        );
        let inherited = inherited_ansible_env();
        if !inherited.is_empty() {
            println!("ansible settings from the environment: {inherited}");
        }
        contenders.push(Contender::Ansible);
    }

    let work = fleet.dir().join("ansible");
    std::fs::create_dir(&work).map_err(|e| format!("create {}: {e}", work.display()))?;
    write_ansible_files(&work, &fleet, &names, o)?;
    let without = TempDir::new("bench-ssh-nohook");
    plugin_without_hook(without.path())?;

    // The floor no tool on this machine can go below: the same
    // connections, opened the same way, cost this much CPU.
    let mut probe = Vec::new();
    for i in 0..3 {
        probe.push(connections_alone(&fleet, o, &i.to_string())?);
    }
    let probe_cpu: Vec<f64> = probe.iter().map(|p| p.1).collect();
    let probe_wall: Vec<f64> = probe.iter().map(|p| p.0).collect();
    println!(
        "the {} connections alone (the loop's master phase, nothing run; 3 runs): wall median {:.3} s, \
         machine CPU median {:.3} s = {:.3} s on {} cores",
        o.hosts,
        median(&probe_wall),
        median(&probe_cpu),
        median(&probe_cpu) / cores(),
        cores()
    );

    let mut rounds = Vec::new();
    for r in 1..=o.rounds {
        let mut round = Round::default();
        let mut order = contenders.clone();
        order.rotate_left((r - 1) % contenders.len());
        for c in order {
            let cpu0 = machine_cpu_seconds();
            let (wall, note) = match c {
                Contender::Jobx => run_jobx(&fleet, &names, o, None)?,
                Contender::JobxWithoutPrepare => run_jobx(&fleet, &names, o, Some(without.path()))?,
                Contender::JobxBaseline => {
                    run_jobx(&fleet, &names, o, o.baseline_plugin.as_deref())?
                }
                Contender::Loop => run_loop(&fleet, r, o)?,
                Contender::Ansible => run_ansible(&fleet, &work, r, o)?,
            };
            let cpu = machine_cpu_seconds() - cpu0;
            println!(
                "round {r}  {:<22} {wall:>8.3} s   machine CPU {cpu:.2} s   ({note})",
                c.label()
            );
            round.times.push((c, wall));
            round.cpu.push((c, cpu));
        }
        rounds.push(round);
    }

    println!();
    println!("{} rounds; per contender: min / median wall time", o.rounds);
    for &c in &contenders {
        let t: Vec<f64> = rounds.iter().filter_map(|r| r.time(c)).collect();
        println!(
            "  {:<22} min {:>7.3} s  median {:>7.3} s   runs: {}",
            c.label(),
            min(&t),
            median(&t),
            list(&t)
        );
    }
    println!(
        "machine CPU seconds per run (all processes; {} cores): median",
        cores()
    );
    for &c in &contenders {
        let t: Vec<f64> = rounds.iter().filter_map(|r| r.cpu(c)).collect();
        println!(
            "  {:<22} {:>7.2} s   runs: {}",
            c.label(),
            median(&t),
            list(&t)
        );
    }
    println!("ratios, computed per round: min / median (goal)");
    let mut pairs = vec![
        (
            Contender::Jobx,
            Contender::Loop,
            format!("< {GOAL_LOOP:.2}"),
        ),
        (
            Contender::JobxWithoutPrepare,
            Contender::Loop,
            format!("< {GOAL_LOOP:.2}"),
        ),
        (
            Contender::Jobx,
            Contender::JobxWithoutPrepare,
            "the hook's effect".to_string(),
        ),
    ];
    if o.baseline_plugin.is_some() {
        pairs.push((
            Contender::Jobx,
            Contender::JobxBaseline,
            "this plugin against the baseline".to_string(),
        ));
    }
    if version.is_some() {
        pairs.insert(
            0,
            (
                Contender::Jobx,
                Contender::Ansible,
                format!("<= {GOAL_ANSIBLE:.2}"),
            ),
        );
        pairs.insert(
            1,
            (
                Contender::JobxWithoutPrepare,
                Contender::Ansible,
                format!("<= {GOAL_ANSIBLE:.2}"),
            ),
        );
    }
    for (a, b, goal) in pairs {
        let r: Vec<f64> = rounds.iter().filter_map(|x| x.ratio(a, b)).collect();
        println!(
            "  {:<46} {:>6.3} / {:>6.3}   (goal {goal})   rounds: {}",
            format!("{} / {}", a.label(), b.label()),
            min(&r),
            median(&r),
            list(&r)
        );
    }
    Ok(())
}

/// Copies the ssh plugin into `dir` with its optional hook symbol renamed
/// (same length, so nothing else in the file moves): the daemon then finds
/// no hook and loads it as a plugin built without one.
fn plugin_without_hook(dir: &Path) -> Result<(), String> {
    let from = bin_dir().join("libjobx_plugin_ssh.so");
    let mut bytes = std::fs::read(&from).map_err(|e| format!("read {}: {e}", from.display()))?;
    let mut renamed = 0;
    let mut i = 0;
    while let Some(at) = bytes[i..]
        .windows(HOOK_SYMBOL.len())
        .position(|w| w == HOOK_SYMBOL)
    {
        let at = i + at;
        bytes[at..at + HIDDEN_SYMBOL.len()].copy_from_slice(HIDDEN_SYMBOL);
        renamed += 1;
        i = at + HIDDEN_SYMBOL.len();
    }
    if renamed == 0 {
        return Err(format!(
            "{} has no {} symbol to hide",
            from.display(),
            String::from_utf8_lossy(HOOK_SYMBOL)
        ));
    }
    let to = dir.join("libjobx_plugin_ssh.so");
    std::fs::write(&to, bytes).map_err(|e| format!("write {}: {e}", to.display()))
}

/// Variables the bench sets for every ansible run (the others pass through).
const ANSIBLE_ENV_SET: [&str; 8] = [
    "ANSIBLE_CONFIG",
    "ANSIBLE_HOME",
    "ANSIBLE_HOST_KEY_CHECKING",
    "ANSIBLE_SSH_CONTROL_PATH_DIR",
    "ANSIBLE_LOCAL_TEMP",
    "ANSIBLE_REMOTE_TEMP",
    "ANSIBLE_NOCOLOR",
    "ANSIBLE_FORCE_COLOR",
];

/// `ANSIBLE_*` variables of the bench's environment that reach
/// ansible-playbook unchanged (e.g. `ANSIBLE_PIPELINING=True`), as text.
fn inherited_ansible_env() -> String {
    let mut vars: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ANSIBLE_") && !ANSIBLE_ENV_SET.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vars.sort();
    vars.join(" ")
}

struct Version {
    text: String,
    seconds: f64,
}

/// `ansible-playbook --version`: its first line, and how long the call took
/// (the interpreter and import cost every playbook run pays too).
fn ansible_version(playbook: &Path) -> Result<Version, String> {
    let t0 = Instant::now();
    let out = Command::new(playbook)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "running {} --version: {e} (bench/ssh/run.sh installs ansible-core in a virtualenv)",
                playbook.display()
            )
        })?;
    let seconds = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "{} --version failed: {}",
            playbook.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("ansible-playbook")
        .trim()
        .to_string();
    Ok(Version { text, seconds })
}

/// One jobx run: a fresh daemon, whose plugins come from `plugin_dir`
/// (the build's own when `None`).
fn run_jobx(
    fleet: &SshdFleet,
    names: &[String],
    o: &Options,
    plugin_dir: Option<&Path>,
) -> Result<(f64, String), String> {
    let mut config = format!(
        "[plugins.ssh]\nidentity_file = {:?}\nuser = {:?}\nconnect_timeout = 10\n",
        fleet.identity_file().display().to_string(),
        fleet.user()
    );
    if let Some(dir) = plugin_dir {
        let _ = write!(
            config,
            "[plugins]\ndir = [{:?}]\n",
            dir.display().to_string()
        );
    }
    let d = Daemon::start(&config);
    let nodes: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let s = fleet.server(i);
            json!({"name": n, "host": s.host(), "port": s.port()})
        })
        .collect();
    d.ok_post(&format!("/node/{PROJECT}"), json!({ "nodes": nodes }));
    let list = names
        .chunks(o.batch)
        .map(|c| c.join(","))
        .collect::<Vec<_>>()
        .join(";");
    group(&d, PROJECT, "fleet", "list", &list);
    let steps: Vec<_> = COMMANDS
        .iter()
        .map(|(name, script)| json!({"name": name, "plugin": "ssh", "script": script}))
        .collect();
    job(&d, PROJECT, "three", json!(steps));

    let t0 = Instant::now();
    let uuid = start(&d, PROJECT, "three", "fleet", json!({}));
    let finished = loop {
        let t = task(&d, PROJECT, &uuid);
        if matches!(t["status"].as_str(), Some("success" | "fail" | "refuse")) {
            break t;
        }
        if t0.elapsed() > RUN_TIMEOUT {
            return Err(format!(
                "jobx task {uuid} still running after {RUN_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(POLL);
    };
    let wall = t0.elapsed().as_secs_f64();

    let log = log_text(&d, &uuid);
    if finished["status"] != "success" {
        return Err(format!(
            "jobx task ended {}: {}\n{log}",
            finished["status"], finished["reason"]
        ));
    }
    let subs = subtasks(&d, PROJECT, &uuid);
    if subs.len() != names.len().div_ceil(o.batch) {
        return Err(format!("jobx ran {} batches:\n{log}", subs.len()));
    }
    for n in names {
        if !log.contains(&format!("[{n}] Linux ")) {
            return Err(format!("jobx log has no `uname -a` line for {n}:\n{log}"));
        }
    }
    // Seconds since the epoch, with milliseconds.
    let secs = |k: &str| finished[k].as_f64().unwrap_or(0.0);
    let daemon = secs("finishtimems") - secs("starttimems");
    let spans = timeline(&log_records(&d, &uuid)?, secs("starttimems"));
    let closed = close_masters(fleet);
    drop(d);
    Ok((
        wall,
        format!("daemon's own start..finish {daemon:.3} s; {spans}; {closed} idle masters closed"),
    ))
}

/// One record of a task log: time (s), node, stream, text.
struct Record {
    time: f64,
    node: String,
    stream: String,
    text: String,
}

/// Every record of the task's log, page by page.
fn log_records(d: &Daemon, uuid: &str) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    loop {
        let (st, v) = d.get(
            &format!("/slave/test-slave/log/{uuid}?format=json&offset={offset}&max=10000"),
            jobx_tests::daemon::ADMIN,
        );
        if st != 200 {
            return Err(format!("log of {uuid}: {st} {v}"));
        }
        let page = &v["data"];
        let records = page["records"].as_array().cloned().unwrap_or_default();
        if records.is_empty() {
            return Ok(out);
        }
        for r in &records {
            out.push(Record {
                time: r["time"].as_f64().unwrap_or(0.0),
                node: r["node"].as_str().unwrap_or("").to_string(),
                stream: r["stream"].as_str().unwrap_or("").to_string(),
                text: r["text"].as_str().unwrap_or("").to_string(),
            });
        }
        offset = page["next_offset"]
            .as_u64()
            .unwrap_or(offset + records.len() as u64);
    }
}

/// Where a jobx run's time went, from its log records (times in ms as the
/// daemon stamps them): the start of the task to the first step; each
/// step's span, from its header to the last node's result; and the gaps
/// from a step's last node result to the next step's header, within a
/// batch and between batches (what the engine spends between steps).
fn timeline(records: &[Record], start: f64) -> String {
    // (header time, last node result time) per step, in order.
    let mut steps: Vec<(f64, f64)> = Vec::new();
    for r in records {
        if r.node.is_empty() && r.stream == "info" && r.text.starts_with("step \"") {
            if r.text.contains("\" (ssh) on ") {
                steps.push((r.time, r.time));
            }
        } else if !r.node.is_empty() && r.stream == "info" && r.text.starts_with("exit code") {
            if let Some(last) = steps.last_mut() {
                last.1 = last.1.max(r.time);
            }
        }
    }
    if steps.is_empty() {
        return "no step records".to_string();
    }
    let per_batch = COMMANDS.len();
    let ms = |s: f64| s * 1000.0;
    let mut text = format!(
        "start..first step {:.0} ms, first step (connects) {:.0} ms",
        ms(steps[0].0 - start),
        ms(steps[0].1 - steps[0].0)
    );
    for (k, (name, _)) in COMMANDS.iter().enumerate() {
        // The first batch's first step pays for connecting: left out.
        let spans: Vec<f64> = steps
            .iter()
            .enumerate()
            .filter(|(i, _)| i % per_batch == k && *i != 0)
            .map(|(_, (h, e))| ms(e - h))
            .collect();
        let _ = write!(text, ", {name} median {:.0} ms", median(&spans));
    }
    let (mut within, mut between) = (Vec::new(), Vec::new());
    for i in 1..steps.len() {
        let gap = ms(steps[i].0 - steps[i - 1].1);
        if i % per_batch == 0 {
            between.push(gap);
        } else {
            within.push(gap);
        }
    }
    let _ = write!(
        text,
        ", gaps: in a batch median {:.0} / max {:.0} ms, between batches median {:.0} / max {:.0} ms",
        median(&within),
        within.iter().copied().fold(0.0, f64::max),
        median(&between),
        between.iter().copied().fold(0.0, f64::max)
    );
    text
}

/// The ssh options every command of the loop uses.
fn loop_args(fleet: &SshdFleet, i: usize, ctl: &Path) -> Vec<String> {
    let s = fleet.server(i);
    let mut a: Vec<String> = ["-F", "/dev/null", "-i"].map(String::from).to_vec();
    a.push(fleet.identity_file().display().to_string());
    for opt in [
        "BatchMode=yes".to_string(),
        "StrictHostKeyChecking=no".to_string(),
        "UserKnownHostsFile=/dev/null".to_string(),
        "LogLevel=ERROR".to_string(),
        format!("ControlPath={}", ctl.display()),
    ] {
        a.push("-o".into());
        a.push(opt);
    }
    a.push("-p".into());
    a.push(s.port().to_string());
    a.push("-l".into());
    a.push(fleet.user().to_string());
    a
}

/// Waits for every child; answers an error naming what failed.
fn wait_all(children: Vec<(String, Child)>) -> Result<Vec<String>, String> {
    let mut outputs = Vec::with_capacity(children.len());
    let mut failed = Vec::new();
    for (what, child) in children {
        match child.wait_with_output() {
            Ok(out) if out.status.success() => {
                outputs.push(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Ok(out) => failed.push(format!(
                "{what}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => failed.push(format!("{what}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(outputs)
    } else {
        Err(failed.join("\n"))
    }
}

/// The baseline a script gives: batch by batch, open the batch's masters in
/// parallel, then run each command on all of its hosts in parallel over
/// them, waiting for every host before the next command.
fn run_loop(fleet: &SshdFleet, round: usize, o: &Options) -> Result<(f64, String), String> {
    let ctl_dir = fleet.dir().join(format!("loop-{round}"));
    std::fs::create_dir_all(&ctl_dir).map_err(|e| format!("create {}: {e}", ctl_dir.display()))?;
    let hosts: Vec<usize> = (0..o.hosts).collect();
    let spawn = |i: usize, extra: &[&str], what: String| -> Result<(String, Child), String> {
        let ctl = ctl_dir.join(format!("h{i}"));
        Command::new("ssh")
            .args(loop_args(fleet, i, &ctl))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map(|c| (what.clone(), c))
            .map_err(|e| format!("{what}: cannot run ssh: {e}"))
    };
    let t0 = Instant::now();
    for batch in hosts.chunks(o.batch) {
        open_masters(fleet, batch, &ctl_dir)?;
        for (_, cmd) in COMMANDS {
            let mut runs = Vec::new();
            for &i in batch {
                let host = fleet.server(i).host();
                runs.push(spawn(
                    i,
                    &["-o", "ControlMaster=no", "--", &host, cmd],
                    format!("`{cmd}` on {host}"),
                )?);
            }
            let outputs = wait_all(runs)?;
            if cmd.starts_with("uname") {
                if let Some(bad) = outputs.iter().find(|o| !o.starts_with("Linux ")) {
                    return Err(format!("`{cmd}` printed {bad:?}"));
                }
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let closed = close_masters(fleet);
    Ok((wall, format!("{closed} idle masters closed")))
}

fn write_ansible_files(
    work: &Path,
    fleet: &SshdFleet,
    names: &[String],
    o: &Options,
) -> Result<(), String> {
    let mut inv = String::from("[fleet]\n");
    for (i, n) in names.iter().enumerate() {
        let s = fleet.server(i);
        let _ = writeln!(
            inv,
            "{n} ansible_host={} ansible_port={}",
            s.host(),
            s.port()
        );
    }
    let _ = write!(
        inv,
        "\n[fleet:vars]\n\
         ansible_user={user}\n\
         ansible_ssh_private_key_file={key}\n\
         ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n\
         ansible_python_interpreter={python}\n",
        user = fleet.user(),
        key = fleet.identity_file().display(),
        python = o.python,
    );
    let playbook = format!(
        "- name: three commands\n  \
           hosts: fleet\n  \
           serial: {batch}\n  \
           gather_facts: false\n  \
           tasks:\n    \
             - name: uname\n      \
               ansible.builtin.command: uname -a\n    \
             - name: deployed\n      \
               ansible.builtin.shell: echo deployed-$(hostname) > /dev/null\n    \
             - name: sleep\n      \
               ansible.builtin.command: sleep 0.2\n",
        batch = o.batch,
    );
    // Only this file is read: no /etc/ansible/ansible.cfg, ~/.ansible.cfg
    // or ./ansible.cfg from wherever the bench is started.
    let cfg = "[defaults]\nhost_key_checking = False\nretry_files_enabled = False\n";
    for (name, text) in [
        ("inventory.ini", inv.as_str()),
        ("playbook.yml", playbook.as_str()),
        ("ansible.cfg", cfg),
    ] {
        let p = work.join(name);
        std::fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))?;
    }
    Ok(())
}

fn run_ansible(
    fleet: &SshdFleet,
    work: &Path,
    run: usize,
    o: &Options,
) -> Result<(f64, String), String> {
    // Fresh per run: no master connection from an earlier run is reused.
    let run_dir = work.join(format!("run-{run}"));
    let control = run_dir.join("cp");
    let local_tmp = run_dir.join("tmp");
    let remote_tmp = run_dir.join("remote-tmp");
    for d in [&control, &local_tmp, &remote_tmp] {
        std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    let log_path = run_dir.join("output.txt");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("create {}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("{}: {e}", log_path.display()))?;

    let t0 = Instant::now();
    let status = Command::new(&o.ansible_playbook)
        .current_dir(work)
        .args(["-i", "inventory.ini", "playbook.yml"])
        .env("ANSIBLE_CONFIG", work.join("ansible.cfg"))
        .env("ANSIBLE_HOME", work.join("home"))
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", &control)
        .env("ANSIBLE_LOCAL_TEMP", &local_tmp)
        .env("ANSIBLE_REMOTE_TEMP", &remote_tmp)
        .env("ANSIBLE_NOCOLOR", "1")
        .env_remove("ANSIBLE_FORCE_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .status()
        .map_err(|e| format!("running {}: {e}", o.ansible_playbook.display()))?;
    let wall = t0.elapsed().as_secs_f64();

    let output = std::fs::read_to_string(&log_path)
        .map_err(|e| format!("read {}: {e}", log_path.display()))?;
    if !status.success() {
        return Err(format!("ansible-playbook exited with {status}:\n{output}"));
    }
    let recap: Vec<&str> = output
        .lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .filter(|l| l.contains(" ok="))
        .collect();
    let clean = recap
        .iter()
        .filter(|l| {
            l.contains(" ok=3 ") && l.contains(" unreachable=0 ") && l.contains(" failed=0 ")
        })
        .count();
    if clean != o.hosts {
        return Err(format!(
            "ansible ran all three tasks on {clean} of {} hosts:\n{output}",
            o.hosts
        ));
    }
    let closed = close_masters(fleet);
    Ok((wall, format!("{closed} idle masters closed")))
}

/// Stops the idle ssh master connections left to the fleet (both tools keep
/// them with `ControlPersist`) and answers how many there were. They are
/// the ssh client processes whose command line names a path under the
/// fleet's directory: jobx's masters keep their arguments (`-i <key>`),
/// ansible's rename themselves to `ssh: <control path> [mux]`.
fn close_masters(fleet: &SshdFleet) -> usize {
    let dir = fleet.dir().display().to_string();
    let find = || {
        processes_matching(&dir)
            .into_iter()
            .filter(|(_, cmd)| {
                let exe = cmd.split(' ').next().unwrap_or("");
                exe == "ssh:"
                    || (Path::new(exe).file_name() == Some("ssh".as_ref())
                        && cmd.contains("ControlPersist"))
            })
            .map(|(pid, _)| pid)
            .collect::<Vec<_>>()
    };
    let found = find();
    for &pid in &found {
        // SAFETY: plain kill(2) on an ssh process started for this fleet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = find();
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for pid in left {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    found.len()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::min)
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|t| format!("{t:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}
