//! Wall-time comparison of jobx and `ansible-playbook` running the same
//! three-command job over real OpenSSH servers, in batches.
//!
//! ```text
//! bench/ssh/run.sh                      # venv + ansible-core, release build, this binary
//! JOBX_BIN_DIR=target/release target/release/jobx-bench-ssh \
//!     --ansible-playbook target/bench-ssh/venv/bin/ansible-playbook
//! ```
//!
//! It starts `--hosts` sshd servers on 127.0.0.2, 127.0.0.3, … (one per
//! loopback address, each on a free port) and runs, `--runs` times each and
//! alternating, the job `hostname`; `uname -r`; `echo done $X` on every host,
//! `--batch` hosts at a time:
//!
//! - with jobx: a fresh `jobxd` (fresh data dir, so no master connection or
//!   known host from an earlier run) with the ssh plugin; the time runs from
//!   just before `POST /task/10/job/byname` until a poll of
//!   `GET /task/10/<uuid>` sees the task finished;
//! - with ansible: a playbook with `serial`, `gather_facts: false` and three
//!   `command`/`shell` tasks, run by `ansible-playbook` with a fresh
//!   `ControlPath` directory; the time is the whole `ansible-playbook`
//!   process, start to exit.
//!
//! Both must succeed on every host; otherwise the bench stops with the
//! tool's output. Idle ssh master connections a run leaves behind (jobx's
//! and ansible's `ControlPersist`) are closed after the run, by pid, so that
//! they neither carry over nor take CPU from the next run. Everything talks
//! to loopback addresses only, and all servers stop when the bench ends.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobx_tests::daemon::Daemon;
use jobx_tests::flow::{group, job, log_text, start, subtasks, task};
use jobx_tests::sshd::{processes_matching, SshdFleet};
use serde_json::json;

/// The project every jobx object lives in.
const PROJECT: u64 = 10;
/// The value of `$X` in the third command.
const X: &str = "bench";
/// Longest a single run may take before the bench gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the task is polled while jobx runs it.
const POLL: Duration = Duration::from_millis(10);

struct Options {
    hosts: usize,
    batch: usize,
    runs: usize,
    ansible_playbook: PathBuf,
    python: String,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        hosts: 20,
        batch: 5,
        runs: 3,
        ansible_playbook: PathBuf::from("ansible-playbook"),
        python: "/usr/bin/python3".to_string(),
    };
    let usage = "options: --hosts N --batch N --runs N --ansible-playbook PATH --python PATH";
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
            "--runs" => o.runs = num()?,
            // Made absolute: ansible-playbook runs in its own directory.
            "--ansible-playbook" if value.contains('/') => {
                o.ansible_playbook = std::fs::canonicalize(value)
                    .map_err(|e| format!("--ansible-playbook {value}: {e}"))?
            }
            "--ansible-playbook" => o.ansible_playbook = PathBuf::from(value),
            "--python" => o.python = value.clone(),
            _ => return Err(format!("unknown option {flag}; {usage}")),
        }
    }
    if o.hosts == 0 || o.batch == 0 || o.runs == 0 {
        return Err("--hosts, --batch and --runs must be positive".to_string());
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

fn run(o: &Options) -> Result<(), String> {
    let version = ansible_version(&o.ansible_playbook)?;
    let fleet = SshdFleet::start(o.hosts).map_err(|e| format!("starting sshd: {e}"))?;
    let out = fleet
        .ssh(0, "true")
        .map_err(|e| format!("ssh to the first server: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "plain ssh to the first server failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let names: Vec<String> = (1..=o.hosts).map(|i| format!("h{i:02}")).collect();
    let batches = o.hosts.div_ceil(o.batch);
    let last = fleet.server(o.hosts - 1);
    println!(
        "{} sshd on 127.0.0.2..{} (user {}), batches of {} ({} batches), \
         3 commands per host: hostname; uname -r; echo done $X",
        o.hosts,
        last.host(),
        fleet.user(),
        o.batch,
        batches,
    );
    println!(
        "{} (startup alone, `--version`: {:.3} s)",
        version.text, version.seconds
    );
    let inherited = inherited_ansible_env();
    if !inherited.is_empty() {
        println!("ansible settings from the environment: {inherited}");
    }

    let work = fleet.dir().join("ansible");
    std::fs::create_dir(&work).map_err(|e| format!("create {}: {e}", work.display()))?;
    write_ansible_files(&work, &fleet, &names, o)?;

    let mut jobx_times = Vec::new();
    let mut ansible_times = Vec::new();
    for r in 1..=o.runs {
        let j = run_jobx(&fleet, &names, o)?;
        println!(
            "run {r}  jobx     {:>8.3} s   (daemon's own start..finish: {:.3} s; {} idle ssh masters closed)",
            j.wall, j.daemon, j.closed
        );
        jobx_times.push(j.wall);
        let a = run_ansible(&fleet, &work, r, o)?;
        println!(
            "run {r}  ansible  {:>8.3} s   ({} idle ssh masters closed)",
            a.wall, a.closed
        );
        ansible_times.push(a.wall);
    }
    let mj = median(&jobx_times);
    let ma = median(&ansible_times);
    println!();
    println!("jobx     runs: {}  median {mj:.3} s", list(&jobx_times));
    println!("ansible  runs: {}  median {ma:.3} s", list(&ansible_times));
    println!(
        "ratio (median ansible / median jobx): {:.1}x",
        if mj > 0.0 { ma / mj } else { f64::NAN }
    );
    Ok(())
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

struct JobxRun {
    wall: f64,
    daemon: f64,
    closed: usize,
}

fn run_jobx(fleet: &SshdFleet, names: &[String], o: &Options) -> Result<JobxRun, String> {
    let d = Daemon::start(&format!(
        "[plugins.ssh]\nidentity_file = {:?}\nuser = {:?}\nconnect_timeout = 10\n",
        fleet.identity_file().display().to_string(),
        fleet.user()
    ));
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
    job(
        &d,
        PROJECT,
        "three",
        json!([
            {"name": "hostname", "plugin": "ssh", "script": "hostname"},
            {"name": "kernel", "plugin": "ssh", "script": "uname -r"},
            {"name": "done", "plugin": "ssh", "script": "echo done $X"}
        ]),
    );

    let t0 = Instant::now();
    let uuid = start(&d, PROJECT, "three", "fleet", json!({ "X": X }));
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
        if !log.contains(&format!("[{n}] done {X}")) {
            return Err(format!("jobx log has no `done` line for {n}:\n{log}"));
        }
    }
    // Seconds since the epoch, with milliseconds.
    let secs = |k: &str| finished[k].as_f64().unwrap_or(0.0);
    let daemon = secs("finishtimems") - secs("starttimems");
    let closed = close_masters(fleet);
    drop(d);
    Ok(JobxRun {
        wall,
        daemon,
        closed,
    })
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
           environment:\n    \
             X: {X}\n  \
           tasks:\n    \
             - name: hostname\n      \
               ansible.builtin.command: hostname\n    \
             - name: kernel\n      \
               ansible.builtin.command: uname -r\n    \
             - name: done\n      \
               ansible.builtin.shell: echo done $X\n",
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

struct AnsibleRun {
    wall: f64,
    closed: usize,
}

fn run_ansible(
    fleet: &SshdFleet,
    work: &Path,
    run: usize,
    o: &Options,
) -> Result<AnsibleRun, String> {
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
    Ok(AnsibleRun { wall, closed })
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

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|t| format!("{t:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}
