//! The console under load, in headless Chromium against a real `jobxd`:
//!
//! 1. the task page of a task with `--nodes` nodes (2,000) in `--batches`
//!    batches (10) and two steps, whose last batch failed and waits for
//!    confirmation: the time from navigation start until every grid cell is
//!    drawn and Stop, Continue and Retry are on the page (goal < 1 s);
//! 2. the log view of a step that printed `--lines` lines (1,000,000): the
//!    time until its first lines show (goal < 1 s), then `--pages` scrolls to
//!    the bottom, each of which must load the next lines, while the daemon's
//!    resident memory (VmRSS, sampled every 20 ms) is compared with its idle
//!    value (goal: bounded, it pages and never holds the whole log).
//!
//! ```text
//! bench/console/run.sh                 # release build of jobxd, local plugin, this binary
//! JOBX_BIN_DIR=target/release target/release/jobx-bench-console --runs 5
//! ```
//!
//! Times are read in the page (`performance.now()`, milliseconds since the
//! navigation started) by a check that runs every 20 ms, so they are upper
//! bounds by up to one check. Sign-in goes through the login page.

use jobx_tests::browser::{Browser, By};
use jobx_tests::daemon::{wait_for, Daemon, ADMIN};
use jobx_tests::flow::{group, job, start, subtasks, wait_finished};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    nodes: usize,
    batches: usize,
    lines: usize,
    pages: usize,
    runs: usize,
    cache_mb: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        nodes: 2000,
        batches: 10,
        lines: 1_000_000,
        pages: 100,
        runs: 5,
        cache_mb: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag}: needs a value"))?;
        let n: usize = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
        match flag.as_str() {
            "--nodes" => a.nodes = n,
            "--batches" => a.batches = n,
            "--lines" => a.lines = n,
            "--pages" => a.pages = n,
            "--runs" => a.runs = n,
            "--cache-mb" => a.cache_mb = Some(n),
            _ => {
                return Err(format!(
                "unknown option {flag} (--nodes, --batches, --lines, --pages, --runs, --cache-mb)"
            ))
            }
        }
    }
    if a.nodes == 0 || a.batches == 0 || a.runs == 0 || a.lines == 0 {
        return Err("--nodes, --batches, --lines and --runs must be at least 1".into());
    }
    Ok(a)
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("jobx-bench-console: {e}");
            std::process::exit(2);
        }
    };
    let mut config = format!(
        "[engine]\nmax_parallel = 200\n\n[logs]\nmax_bytes_per_step = {}\n",
        // room for every line of the big step
        64 * 1024 * 1024
    );
    if let Some(mb) = a.cache_mb {
        // the store's page cache: the part of the daemon's memory that
        // grows with what was read, up to this size
        config.push_str(&format!("\n[storage]\ncache_mb = {mb}\n"));
    }
    let d = Daemon::start(&config);
    let b = Browser::start("bench-console");
    sign_in(&b, &d);
    let page = task_page(&d, &b, &a);
    let log = log_view(&d, &b, &a);
    println!();
    println!("figure                                   value        goal");
    println!(
        "task page interactive ({} nodes, {} batches), median of {}  {:>7.0} ms   < 1000 ms  {}",
        a.nodes,
        a.batches,
        a.runs,
        page.median,
        verdict(page.median < 1000.0)
    );
    println!(
        "  slowest of the runs                    {:>7.0} ms",
        page.max
    );
    println!(
        "log view of {} lines: first lines shown {:>7.0} ms   < 1000 ms  {}",
        a.lines,
        log.open_ms,
        verdict(log.open_ms < 1000.0)
    );
    println!(
        "  the same from the task page: click the cell → first lines {:>5.0} ms   < 1000 ms  {}",
        log.cell_ms,
        verdict(log.cell_ms < 1000.0)
    );
    println!(
        "  one scroll page (median / slowest)    {:>5.0} / {:.0} ms over {} pages, {} lines shown, last {:?}",
        log.page_median, log.page_max, a.pages, log.shown, log.last
    );
    println!(
        "jobxd VmRSS with the log stored (settled) / peak while viewing  {} / {} MiB (+{} MiB)   bounded: + < 32 MiB  {}",
        mib(log.rss_idle),
        mib(log.rss_peak),
        mib(log.rss_peak.saturating_sub(log.rss_idle)),
        verdict(log.rss_peak.saturating_sub(log.rss_idle) < 32 * 1024)
    );
    println!(
        "  VmRSS before the big step ran {} MiB; after the view closed {} MiB",
        mib(log.rss_before),
        mib(log.rss_after)
    );
    println!(
        "  (the step's output is {} MiB of text; a view that held it would grow by more)",
        mib(log.text_bytes / 1024)
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT MET"
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn sign_in(b: &Browser, d: &Daemon) {
    b.goto(&format!("{}/ui/login", d.base));
    b.type_into(&By::css("#token"), ADMIN);
    b.click(&By::button("Sign in"));
    b.wait_text(&By::css("#user"), Duration::from_secs(10), "admin", |t| {
        t.trim() == "admin"
    });
}

/// Polls `check` (a script answering a number when done, else null) every
/// 20 ms; answers the number.
fn wait_js(b: &Browser, what: &str, timeout: Duration, check: &str, args: Vec<Value>) -> f64 {
    b.wait_for(what, timeout, |b| b.exec(check, args.clone()).as_f64())
}

struct PageFigures {
    median: f64,
    max: f64,
}

fn task_page(d: &Daemon, b: &Browser, a: &Args) -> PageFigures {
    let names: Vec<String> = (1..=a.nodes).map(|i| format!("node{i:05}")).collect();
    let list: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
    d.ok_post("/node/10", json!({ "nodes": list }));
    let size = a.nodes.div_ceil(a.batches);
    group(d, 10, "wide", "percent", &size.to_string());
    job(
        d,
        10,
        "wide",
        json!([
            {"name": "install", "plugin": "local", "script": "[ \"$JOBX_BATCH\" != \"$JOBX_BATCHES\" ]"},
            {"name": "check", "plugin": "local", "script": "true"}
        ]),
    );
    let t0 = Instant::now();
    let uuid = start(d, 10, "wide", "wide", json!({}));
    let last = a.batches - 1;
    wait_for(
        "the last batch to wait for confirmation",
        Duration::from_secs(1800),
        || {
            let s = subtasks(d, 10, &uuid);
            (s.len() == a.batches && s.get(last)?["confirm"] == "WaitConfirm").then_some(())
        },
    );
    println!(
        "setup: {} nodes ran in {} batches in {:.1} s; batch {} waits for confirmation",
        a.nodes,
        a.batches,
        t0.elapsed().as_secs_f64(),
        a.batches
    );
    let cells = a.nodes * 2;
    let check = "const want = arguments[0];
        const n = document.querySelectorAll('td.cell').length;
        const seen = t => Array.from(document.querySelectorAll('button'))
          .some(x => x.textContent.trim() === t && x.offsetParent !== null && !x.disabled);
        return n === want && seen('Stop') && seen('Continue') && seen('Retry') ? performance.now() : null;";
    let url = format!("{}/ui/#/p/10/task/{uuid}", d.base);
    let mut times = Vec::new();
    for run in 0..a.runs {
        b.goto("about:blank");
        b.goto(&url);
        let ms = wait_js(
            b,
            &format!("{cells} cells and the Stop, Continue and Retry buttons"),
            Duration::from_secs(60),
            check,
            vec![json!(cells)],
        );
        println!("task page run {}: interactive after {ms:.0} ms", run + 1);
        times.push(ms);
        if run == 0 {
            b.screenshot("task-page");
        }
    }
    times.sort_by(|x, y| x.total_cmp(y));
    PageFigures {
        median: times[times.len() / 2],
        max: times[times.len() - 1],
    }
}

struct LogFigures {
    open_ms: f64,
    cell_ms: f64,
    page_median: f64,
    page_max: f64,
    shown: u64,
    last: String,
    rss_before: u64,
    rss_idle: u64,
    rss_peak: u64,
    rss_after: u64,
    text_bytes: u64,
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// VmRSS once it has moved by less than 2 MiB over 2 s (at most 60 s).
fn settled_rss(pid: u32) -> u64 {
    let mut prev = rss_kib(pid).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = rss_kib(pid).unwrap_or(0);
        if now.abs_diff(prev) < 2048 || Instant::now() >= deadline {
            return now;
        }
        prev = now;
    }
}

/// Samples VmRSS every 20 ms into a shared maximum until stopped.
struct Sampler {
    peak: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let peak = Arc::new(Mutex::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let (Some(r), Ok(mut m)) = (rss_kib(pid), p.lock()) {
                    *m = (*m).max(r);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.lock().map(|m| *m).unwrap_or(0)
    }
}

fn log_view(d: &Daemon, b: &Browser, a: &Args) -> LogFigures {
    d.ok_post("/node/10", json!({"nodes": [{"name": "loud1"}]}));
    group(d, 10, "loud", "list", "loud1");
    job(
        d,
        10,
        "loud",
        json!([{"name": "spew", "plugin": "local", "timeout": 3600,
                "script": format!("seq 1 {} | sed 's/^/line /'", a.lines)}]),
    );
    let step = d.data("/job/10/loud")["steps"][0]["uuid"]
        .as_str()
        .expect("step uuid")
        .to_string();
    let rss_before = settled_rss(d.pid());
    let t0 = Instant::now();
    let uuid = start(d, 10, "loud", "loud", json!({}));
    let t = wait_finished(d, 10, &uuid, Duration::from_secs(3600));
    assert_eq!(t["status"], "success", "{t}");
    let sub = subtasks(d, 10, &uuid)[0]["uuid"]
        .as_str()
        .expect("batch uuid")
        .to_string();
    println!(
        "setup: a step printed {} lines; stored in {:.1} s",
        a.lines,
        t0.elapsed().as_secs_f64()
    );
    let text_bytes: u64 = (1..=a.lines as u64)
        .map(|i| "line ".len() as u64 + i.to_string().len() as u64 + 1)
        .sum();
    // idle: the daemon with the big log stored, nothing viewing it, once
    // its memory has settled after the writes
    b.goto("about:blank");
    let rss_idle = settled_rss(d.pid());

    let viewing = Sampler::start(d.pid());
    let key = format!("{sub}{step}local");
    b.goto(&format!("{}/ui/#/p/10/log/{key}", d.base));
    let open_ms = wait_js(
        b,
        "the first log lines",
        Duration::from_secs(60),
        "const l = document.querySelector('.logbox .line');
         return l && l.offsetParent !== null ? performance.now() : null;",
        vec![],
    );
    b.screenshot("log-open");
    let count = "return document.querySelectorAll('.logbox .line').length;";
    let mut pages = Vec::new();
    for _ in 0..a.pages {
        let before = b.exec(count, vec![]).as_u64().unwrap_or(0);
        let t = Instant::now();
        b.exec(
            "const box = document.querySelector('.logbox');
             box.scrollTop = box.scrollHeight;",
            vec![],
        );
        b.wait_for("the next page of lines", Duration::from_secs(30), |b| {
            (b.exec(count, vec![]).as_u64().unwrap_or(0) > before).then_some(())
        });
        pages.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    b.screenshot("log-scrolled");
    let shown = b.exec(count, vec![]).as_u64().unwrap_or(0);
    let last = b
        .exec(
            "const l = document.querySelectorAll('.logbox .line');
             return l.length ? l[l.length - 1].textContent : '';",
            vec![],
        )
        .as_str()
        .unwrap_or("")
        .to_string();
    // the step's header comes before its output, so line N is near record N
    let n: u64 = last
        .strip_prefix("line ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the last line shown is {last:?}, not an output line"));
    assert!(
        n <= shown && shown - n <= 3,
        "{shown} records shown, the last is {last:?}"
    );
    // the same output from the grid: click the node's cell on the task page
    b.goto(&format!("{}/ui/#/p/10/task/{uuid}", d.base));
    let cell = By::css(&format!("td.cell[data-node='loud1'][data-step='{step}']"));
    b.wait_visible(&cell, Duration::from_secs(30));
    let t = Instant::now();
    b.click(&cell);
    b.wait_for("the cell's output in #log", Duration::from_secs(60), |b| {
        b.exec(
            "const l = document.querySelector('#log .line');
             return l && l.offsetParent !== null ? true : null;",
            vec![],
        )
        .as_bool()
    });
    let cell_ms = t.elapsed().as_secs_f64() * 1000.0;
    b.screenshot("cell-log");
    let rss_peak = viewing.finish();
    b.goto("about:blank");
    let rss_after = settled_rss(d.pid());
    pages.sort_by(|x, y| x.total_cmp(y));
    LogFigures {
        open_ms,
        cell_ms,
        page_median: pages.get(pages.len() / 2).copied().unwrap_or(0.0),
        page_max: pages.last().copied().unwrap_or(0.0),
        shown,
        last,
        rss_before,
        rss_idle,
        rss_peak,
        rss_after,
        text_bytes,
    }
}
