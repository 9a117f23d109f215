//! The task API under load, against a real release `jobxd`:
//!
//! 1. task creation (`POST /task/:p/job/byname`) by `--clients` (32)
//!    clients until the project holds `--tasks` (100,000) tasks: creations
//!    per second (goal ≥ 1,000/s; each answer comes after the task is
//!    durable) and the p99 of one creation;
//! 2. once every task has finished, `GET /task/:p?limit=20` for
//!    `--seconds` (10) by the same number of clients: p99 (goal < 10 ms);
//! 3. the default 1,000-row page, likewise: requests per second (goal ≥ 500)
//!    and p99 (goal < 100 ms).
//!
//! ```text
//! bench/api/run.sh                       # release builds, then this binary
//! JOBX_BIN_DIR=target/release target/release/jobx-bench-api --tasks 100000
//! ```
//!
//! The job's one step is `true` through the local plugin; `--skip-step`
//! filters it out of deploys (`action: rollback`), so no process starts and
//! creation measures the daemon alone. `--keep-data DIR` keeps the filled
//! store; `--data-from DIR` starts from such a store instead of creating
//! tasks (to list the same 100,000 tasks with another build).
//! `--create N` creates only N tasks (a rate on top of the kept store).
//! `--stderr FILE` writes what the daemon logged to FILE at the end.

use jobx_tests::daemon::{wait_for, Daemon, ADMIN};
use serde_json::{json, Value};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROJECT: u64 = 1;

struct Args {
    tasks: usize,
    clients: usize,
    seconds: u64,
    rounds: usize,
    create: Option<usize>,
    skip_step: bool,
    keep_data: Option<PathBuf>,
    data_from: Option<PathBuf>,
    stderr: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        tasks: 100_000,
        clients: 32,
        seconds: 10,
        rounds: 3,
        create: None,
        skip_step: false,
        keep_data: None,
        data_from: None,
        stderr: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--skip-step" {
            a.skip_step = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag}: needs a value"))?;
        let n = || -> Result<usize, String> {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag}: {value:?} is not a number"))
        };
        match flag.as_str() {
            "--tasks" => a.tasks = n()?,
            "--clients" => a.clients = n()?,
            "--seconds" => a.seconds = n()? as u64,
            "--rounds" => a.rounds = n()?,
            "--create" => a.create = Some(n()?),
            "--keep-data" => a.keep_data = Some(PathBuf::from(&value)),
            "--data-from" => a.data_from = Some(PathBuf::from(&value)),
            "--stderr" => a.stderr = Some(PathBuf::from(&value)),
            _ => {
                return Err(format!(
                    "unknown option {flag} (--tasks, --clients, --seconds, --rounds, --create, \
                     --skip-step, --keep-data, --data-from, --stderr)"
                ))
            }
        }
    }
    if a.clients == 0 || a.seconds == 0 || a.rounds == 0 {
        return Err("--clients, --seconds and --rounds must be at least 1".into());
    }
    Ok(a)
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .max_idle_connections_per_host(4)
        .build()
}

/// One request; answers its status and the whole body read into `buf`.
fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&Value>,
    buf: &mut Vec<u8>,
) -> u16 {
    let r = agent
        .request(method, url)
        .set("Authorization", &format!("Bearer {ADMIN}"));
    let resp = match body {
        Some(b) => r.send_json(b.clone()),
        None => r.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    buf.clear();
    resp.into_reader()
        .read_to_end(buf)
        .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
    status
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `clients` threads that each make requests through `one` while
/// `more()` says so; answers (requests/s, p50, p99) of their latencies.
fn drive(
    clients: usize,
    more: impl Fn() -> bool + Send + Sync + 'static,
    one: impl Fn(&ureq::Agent, &mut Vec<u8>) + Send + Sync + 'static,
) -> (f64, Duration, Duration) {
    let work = Arc::new((more, one));
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let work = work.clone();
            std::thread::spawn(move || {
                let a = agent();
                let mut buf = Vec::with_capacity(1 << 20);
                let mut lat = Vec::new();
                while (work.0)() {
                    let t = Instant::now();
                    (work.1)(&a, &mut buf);
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect();
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    (
        lat.len() as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    )
}

/// Creates `n` tasks with `clients` clients; answers (tasks/s, p50, p99).
fn create(d: &Daemon, n: usize, clients: usize) -> (f64, Duration, Duration) {
    let left = AtomicUsize::new(n);
    let url = format!("{}/task/{PROJECT}/job/byname", d.base);
    let body = json!({"jobname": "bench", "group": "val=n1", "variable": {"version": "1.0.7"}});
    drive(
        clients,
        move || {
            left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1))
                .is_ok()
        },
        move |a, buf| {
            let st = call(a, "POST", &url, Some(&body), buf);
            assert_eq!(st, 200, "create: {}", String::from_utf8_lossy(buf));
        },
    )
}

/// `GET path` by `clients` clients for `secs`; answers (req/s, p50, p99).
fn load(d: &Daemon, path: &str, clients: usize, secs: u64) -> (f64, Duration, Duration) {
    let url = format!("{}{path}", d.base);
    let until = Instant::now() + Duration::from_secs(secs);
    drive(
        clients,
        move || Instant::now() < until,
        move |a, buf| {
            let st = call(a, "GET", &url, None, buf);
            assert_eq!(st, 200, "GET {url}: {}", String::from_utf8_lossy(buf));
        },
    )
}

fn rows(d: &Daemon, query: &str) -> Vec<Value> {
    d.data(&format!("/task/{PROJECT}?{query}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn copy_store(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create the data dir");
    std::fs::copy(from.join("jobx.redb"), to.join("jobx.redb")).expect("copy the store");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("jobx-bench-api: {e}");
            std::process::exit(2);
        }
    };
    let mut d = Daemon::start("[engine]\nmax_parallel = 64\n");
    if let Some(src) = &a.data_from {
        d.term();
        copy_store(src, &d.data_dir());
        d.restart();
        println!("store copied from {}", src.display());
    } else {
        d.ok_post(
            &format!("/node/{PROJECT}"),
            json!({"nodes": [{"name": "n1"}]}),
        );
        let action = if a.skip_step { "rollback" } else { "always" };
        d.ok_post(
            &format!("/job/{PROJECT}"),
            json!({"name": "bench", "steps": [{
                "name": "true", "plugin": "local", "kind": "cmd", "script": "true",
                "timeout": 60, "action": action, "batches": "always"
            }]}),
        );
    }
    let n = a
        .create
        .unwrap_or(if a.data_from.is_some() { 0 } else { a.tasks });
    if n > 0 {
        let (rate, p50, p99) = create(&d, n, a.clients);
        println!(
            "create: {n} tasks by {} clients: {rate:.0} tasks/s (goal >= 1000/s), p50 {:.1} ms, p99 {:.1} ms",
            a.clients,
            ms(p50),
            ms(p99)
        );
    }
    wait_for("every task to finish", Duration::from_secs(1800), || {
        (rows(&d, "status=running&limit=1").is_empty()
            && rows(&d, "status=init&limit=1").is_empty())
        .then_some(())
    });
    let first = rows(&d, "limit=20");
    let page = rows(&d, "");
    println!(
        "store: newest id {}, a default page has {} rows",
        first.last().map(|r| r["id"].clone()).unwrap_or(Value::Null),
        page.len()
    );
    let (mut p99_20, mut rps_1000, mut p99_1000) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=a.rounds {
        let (rps, p50, p99) = load(
            &d,
            &format!("/task/{PROJECT}?limit=20"),
            a.clients,
            a.seconds,
        );
        println!(
            "round {round}: limit=20: {rps:.0} req/s, p50 {:.1} ms, p99 {:.1} ms (goal p99 < 10 ms)",
            ms(p50),
            ms(p99)
        );
        p99_20.push(ms(p99));
        let (rps, p50, p99) = load(&d, &format!("/task/{PROJECT}"), a.clients, a.seconds);
        println!(
            "round {round}: 1000-row page: {rps:.0} req/s (goal >= 500), p50 {:.1} ms, p99 {:.1} ms (goal < 100 ms)",
            ms(p50),
            ms(p99)
        );
        rps_1000.push(rps);
        p99_1000.push(ms(p99));
    }
    println!(
        "median of {} rounds: limit=20 p99 {:.1} ms (goal < 10); 1000-row page {:.0} req/s (goal >= 500), p99 {:.1} ms (goal < 100)",
        a.rounds,
        median(p99_20),
        median(rps_1000),
        median(p99_1000)
    );
    if let Some(file) = &a.stderr {
        std::fs::write(file, d.stderr()).expect("write the daemon's stderr");
    }
    if let Some(keep) = &a.keep_data {
        d.term();
        copy_store(&d.data_dir(), keep);
        println!("store kept in {}", keep.display());
    }
}
