//! Load benchmark for the agent-pull plugin: one real `jobxd` and thousands
//! of simulated agents speaking the agent protocol, as async tasks in this
//! one process (one keep-alive connection each).
//!
//! ```text
//! cargo build --release -p jobxd -p jobx-plugin-agent-pull -p jobx-bench-agent
//! target/release/jobx-bench-agent --agents 10000 --batch 2000 --jobxd target/release/jobxd --rounds 3
//! # against a baseline build (its plugins beside it), alternating per round:
//! target/release/jobx-bench-agent --jobxd target/release/jobxd --baseline /tmp/old/jobxd --rounds 5
//! ```
//!
//! Each round starts jobxd on 127.0.0.1 with a temporary data dir, connects
//! every agent, waits until all hold a poll, runs one task whose single `cmd`
//! step goes to every agent (batches of `--batch` nodes), and reports:
//! dispatch latency (the daemon queueing a step → the agent receiving it)
//! p50/p99/max, requests per second while dispatching and while idle, and
//! the daemon's resident memory before the agents connect, with every poll
//! held, and its peak. After the rounds it prints the min and median of
//! peak RSS and dispatch p99 beside the goals (P4: 10,000 agents in less
//! than 300 MB, p99 below 1 s), and with `--baseline` the min and median of
//! the ratios jobx / baseline. Everything stays on the loopback interface
//! and ends by itself (`--deadline`, per round).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use serde_json::{json, Value};

const ADMIN: &str = "bench-admin-token";

struct Options {
    agents: usize,
    batch: usize,
    jobxd: String,
    deadline: Duration,
    idle: Duration,
    /// `[storage] cache_mb` of the daemon; `None` keeps its default.
    cache_mb: Option<u64>,
    rounds: usize,
    /// A second jobxd (its plugins beside it) run in alternation with `jobxd`.
    baseline: Option<String>,
}

/// The goals (P4): peak resident memory and dispatch p99.
const GOAL_RSS_MB: f64 = 300.0;
const GOAL_P99_MS: i64 = 1000;

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        agents: 10_000,
        batch: 2_000,
        jobxd: "target/release/jobxd".to_string(),
        deadline: Duration::from_secs(600),
        idle: Duration::from_secs(20),
        cache_mb: None,
        rounds: 3,
        baseline: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--agents" => o.agents = num()? as usize,
            "--batch" => o.batch = num()? as usize,
            "--jobxd" => o.jobxd = value.clone(),
            "--deadline" => o.deadline = Duration::from_secs(num()?),
            "--idle" => o.idle = Duration::from_secs(num()?),
            "--cache-mb" => o.cache_mb = Some(num()?),
            "--rounds" => o.rounds = num()? as usize,
            "--baseline" => o.baseline = Some(value.clone()),
            _ => {
                return Err(format!(
                    "unknown option {flag}; options: --agents N --batch N --jobxd PATH --deadline SECS --idle SECS --cache-mb N --rounds N --baseline PATH"
                ))
            }
        }
    }
    if o.agents == 0 || o.batch == 0 || o.rounds == 0 {
        return Err("--agents, --batch and --rounds must be positive".to_string());
    }
    Ok(o)
}

/// The daemon under test; killed when dropped.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Daemon {
    fn start(o: &Options, jobxd: &str) -> Result<Daemon, String> {
        let jobxd = std::path::Path::new(jobxd)
            .canonicalize()
            .map_err(|e| format!("{jobxd}: {e}"))?;
        let plugins = jobxd
            .parent()
            .ok_or("jobxd has no directory")?
            .to_path_buf();
        static ROUND: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "jobx-bench-{}-{}",
            std::process::id(),
            ROUND.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let agents: Vec<String> = (0..o.agents)
            .map(|i| format!("{{ name = \"a{i}\", token = \"tok-{i}\" }}"))
            .collect();
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nname = \"bench\"\nmax_connections = {}\n\n[storage]\ndata_dir = {:?}\n{}\n\
             [engine]\nmax_parallel = {}\n\n[plugins]\ndir = [{:?}]\n\n\
             [[auth.tokens]]\nname = \"admin\"\ntoken = \"{ADMIN}\"\nroles = {{ \"*\" = \"admin\" }}\n\n\
             [plugins.agent-pull]\nlost_after = 60\nconnect_timeout = 300\npoll_hold = 50\nagents = [\n{}\n]\n",
            // Every agent keeps a connection, plus room for the API client.
            o.agents + 64,
            dir.join("data").display().to_string(),
            o.cache_mb
                .map(|mb| format!("cache_mb = {mb}\n"))
                .unwrap_or_default(),
            o.agents,
            plugins.display().to_string(),
            agents.join(",\n")
        );
        let path = dir.join("jobxd.toml");
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        let mut child = Command::new(&jobxd)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn,jobxd=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", jobxd.display()))?;
        let err = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                } else if line.contains("ERROR") {
                    eprintln!("jobxd: {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "jobxd did not start listening".to_string())?;
        let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        Ok(Daemon { child, addr, dir })
    }

    /// Peak and current resident memory of the daemon, in KiB.
    fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    fn api(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(120))
            .build();
        let req = agent
            .request(method, &format!("http://{}{path}", self.addr))
            .set("Authorization", &format!("Bearer {ADMIN}"));
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        }
        .map_err(|e| format!("{method} {path}: {e}"))?;
        resp.into_json()
            .map_err(|e| format!("{method} {path}: {e}"))
    }
}

/// Shared counters of the simulated agents.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    errors: AtomicU64,
    received: AtomicUsize,
    latencies_ms: Mutex<Vec<i64>>,
    /// Failed requests by what failed, e.g. `/poll: connection closed`.
    failures: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Stats {
    fn fail(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.failures.lock() {
            *f.entry(what).or_default() += 1;
        }
    }
}

fn describe(r: &std::io::Result<(u16, Vec<u8>)>) -> String {
    match r {
        Ok((status, body)) => format!(
            "HTTP {status} {}",
            String::from_utf8_lossy(body)
                .chars()
                .take(80)
                .collect::<String>()
        ),
        Err(e) => e.to_string(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The read half of a shared connection.
struct ReadHalf(Rc<Async<TcpStream>>);

impl futures_lite::io::AsyncRead for ReadHalf {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

/// One keep-alive HTTP/1.1 connection, just enough for the protocol.
struct Conn {
    reader: AsyncBufReader<ReadHalf>,
    writer: Rc<Async<TcpStream>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = Rc::new(Async::<TcpStream>::connect(addr).await?);
        Ok(Conn {
            reader: AsyncBufReader::new(ReadHalf(stream.clone())),
            writer: stream,
        })
    }

    async fn post(
        &mut self,
        path: &str,
        name: &str,
        token: &str,
        body: &Value,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let body = body.to_string();
        let head = format!(
            "POST /plugin/agent-pull/v1{path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
             X-Jobx-Agent: {name}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut w = &*self.writer;
        w.write_all(head.as_bytes()).await?;
        w.write_all(body.as_bytes()).await?;
        w.flush().await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            return Err(bad("connection closed"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                return Err(bad("connection closed in headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                    chunked = true;
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("bad chunk"))?;
                let mut part = vec![0u8; size + 2];
                self.reader.read_exact(&mut part).await?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&part[..size]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body).await?;
        }
        Ok((status, body))
    }
}

/// One simulated agent: poll, accept, one output chunk, exit, poll again.
async fn agent(addr: SocketAddr, i: usize, stats: Arc<Stats>, stop: Rc<std::cell::Cell<bool>>) {
    let name = format!("a{i}");
    let token = format!("tok-{i}");
    let hello = json!({"instance": format!("bench-{i}"), "version": "bench"});
    let mut conn = None;
    while !stop.get() {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    stats.fail(format!("connect: {e}"));
                    Timer::after(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        let answer = match c.post("/poll?wait_ms=50000", &name, &token, &hello).await {
            Ok((200, body)) => serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            other => {
                stats.fail(format!("/poll: {}", describe(&other)));
                conn = None;
                Timer::after(Duration::from_millis(500)).await;
                continue;
            }
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let work = answer["work"].as_array().cloned().unwrap_or_default();
        for w in work {
            let got = now_ms();
            if let Some(q) = w["queued_ms"].as_i64() {
                if let Ok(mut l) = stats.latencies_ms.lock() {
                    l.push(got - q);
                }
            }
            stats.received.fetch_add(1, Ordering::Relaxed);
            let lease = w["lease"].clone();
            let steps = [
                (
                    "/accept",
                    json!({"lease": lease, "instance": format!("bench-{i}")}),
                ),
                (
                    "/output",
                    json!({"lease": lease, "seq": 0, "lines": [{"stream": "stdout", "text": format!("hello from {name}")}]}),
                ),
                (
                    "/exit",
                    json!({"lease": lease, "chunks": 1, "exit_code": 0}),
                ),
            ];
            for (path, body) in steps {
                match c.post(path, &name, &token, &body).await {
                    Ok((200, _)) => {
                        stats.requests.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        stats.fail(format!("{path}: {}", describe(&other)));
                        break;
                    }
                }
            }
        }
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    lim.current = lim.maximum;
    let _ = setrlimit(Resource::Nofile, lim);
}

fn wait_until(
    what: &str,
    deadline: Instant,
    mut f: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("gave up waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What one round measured.
struct Figures {
    /// Resident memory (KiB) with the inventory set up, before any agent.
    base_kib: u64,
    /// Resident memory (KiB) with every agent holding a poll.
    idle_kib: u64,
    /// Resident memory (KiB) after the dispatch.
    after_kib: u64,
    /// Peak resident memory (KiB) of the round.
    peak_kib: u64,
    p50: i64,
    p99: i64,
    max: i64,
    dispatch_s: f64,
    dispatch_rps: f64,
    idle_rps: f64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One daemon, every agent connected, one task to all of them.
fn round(o: &Options, jobxd: &str) -> Result<Figures, String> {
    let end = Instant::now() + o.deadline;
    let daemon = Daemon::start(o, jobxd)?;
    let addr = daemon.addr;
    println!(
        "jobxd {jobxd} on {addr}, {} agents, batches of {}",
        o.agents, o.batch
    );

    let names: Vec<Value> = (0..o.agents)
        .map(|i| json!({"name": format!("a{i}")}))
        .collect();
    daemon.api("POST", "/node/1", Some(json!({"nodes": names})))?;
    let batches: Vec<String> = (0..o.agents)
        .collect::<Vec<_>>()
        .chunks(o.batch)
        .map(|c| {
            c.iter()
                .map(|i| format!("a{i}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    daemon.api(
        "POST",
        "/group/1",
        Some(json!({"name": "all", "group_type": "list", "node": batches.join(";")})),
    )?;
    daemon.api(
        "POST",
        "/job/1",
        Some(json!({"name": "bench", "steps": [{"plugin": "agent-pull", "script": "true"}]})),
    )?;
    let (_, base_kib) = daemon.rss();

    // The agents run on their own thread, one executor, one task each.
    let stats = Arc::new(Stats::default());
    let agent_stats = stats.clone();
    let n = o.agents;
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let agents_thread = std::thread::spawn(move || {
        let ex = async_executor::LocalExecutor::new();
        let stop = Rc::new(std::cell::Cell::new(false));
        let mut tasks = Vec::with_capacity(n);
        async_io::block_on(ex.run(async {
            for i in 0..n {
                tasks.push(ex.spawn(agent(addr, i, agent_stats.clone(), stop.clone())));
                if i % 200 == 199 {
                    Timer::after(Duration::from_millis(20)).await;
                }
            }
            // Wait for the signal to stop, without blocking the executor.
            while stop_rx.try_recv().is_err() {
                Timer::after(Duration::from_millis(100)).await;
            }
            stop.set(true);
        }));
    });
    // Stops the agents however the round ends.
    let stop_agents = |daemon: Daemon| {
        let _ = stop_tx.send(());
        drop(daemon);
        let _ = agents_thread.join();
    };

    let t0 = Instant::now();
    let connected = wait_until("every agent to poll", end, || {
        let list = daemon.api("GET", "/plugin/agent-pull/agents", None)?;
        let waiting = list["data"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|x| x["waiting"] == true).count());
        Ok(waiting == o.agents)
    });
    if let Err(e) = connected {
        stop_agents(daemon);
        return Err(e);
    }
    println!(
        "all {} agents connected and polling after {:.1} s",
        o.agents,
        t0.elapsed().as_secs_f64()
    );

    // Idle: every agent holds a poll.
    let r0 = stats.requests.load(Ordering::Relaxed);
    let i0 = Instant::now();
    std::thread::sleep(o.idle.min(end.saturating_duration_since(Instant::now())));
    let idle_rps =
        (stats.requests.load(Ordering::Relaxed) - r0) as f64 / i0.elapsed().as_secs_f64();
    let (idle_peak, idle_kib) = daemon.rss();

    // Dispatch: one step to every agent.
    let r1 = stats.requests.load(Ordering::Relaxed);
    let d0 = Instant::now();
    let mut status = String::new();
    let mut uuid = String::new();
    let dispatched = daemon
        .api(
            "POST",
            "/task/1/job/byname",
            Some(json!({"jobname": "bench", "group": "all"})),
        )
        .and_then(|task| {
            uuid = task["uuid"].as_str().ok_or("no task uuid")?.to_string();
            wait_until("the task to finish", end, || {
                let t = daemon.api("GET", &format!("/task/1/{uuid}"), None)?;
                status = t["data"]["status"].as_str().unwrap_or("").to_string();
                Ok(status == "success" || status == "fail")
            })
        });
    if let Err(e) = dispatched {
        stop_agents(daemon);
        return Err(e);
    }
    let dispatch_s = d0.elapsed().as_secs_f64();
    let dispatch_rps = (stats.requests.load(Ordering::Relaxed) - r1) as f64 / dispatch_s;
    let (peak, after_kib) = daemon.rss();
    // Counted now: stopping the daemon breaks every held poll.
    let errors = stats.errors.load(Ordering::Relaxed);
    let failures = stats.failures.lock().map(|f| f.clone()).unwrap_or_default();
    stop_agents(daemon);

    let mut lat = stats
        .latencies_ms
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let f = Figures {
        base_kib,
        idle_kib,
        after_kib,
        peak_kib: peak.max(idle_peak),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        max: lat.last().copied().unwrap_or(0),
        dispatch_s,
        dispatch_rps,
        idle_rps,
    };
    println!("task {uuid}: {status} in {:.1} s", f.dispatch_s);
    println!(
        "dispatch latency (queued → received), {} steps: p50 {} ms, p99 {} ms (goal < {GOAL_P99_MS} ms), max {} ms",
        lat.len(),
        f.p50,
        f.p99,
        f.max
    );
    println!(
        "requests/s: {:.0} while dispatching, {:.1} while idle",
        f.dispatch_rps, f.idle_rps
    );
    println!(
        "jobxd RSS: {:.1} MiB before the agents, {:.1} MiB with every poll held ({:.1} KiB per held poll), {:.1} MiB after dispatch, peak {:.1} MiB (goal < {GOAL_RSS_MB} MB = {:.1} MiB)",
        mib(f.base_kib),
        mib(f.idle_kib),
        f.idle_kib.saturating_sub(f.base_kib) as f64 / o.agents as f64,
        mib(f.after_kib),
        mib(f.peak_kib),
        GOAL_RSS_MB * 1e6 / 1048576.0
    );
    println!("agent-side errors (reconnects, refused requests): {errors}");
    for (what, n) in failures {
        println!("  {n} × {what}");
    }
    if status != "success" || lat.len() != o.agents {
        return Err(format!(
            "expected {} steps to succeed, {} received, task {status}",
            o.agents,
            lat.len()
        ));
    }
    Ok(f)
}

/// Min and median of some figures.
fn min_median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let median = match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    (v.first().copied().unwrap_or(0.0), median)
}

/// Prints min and median of a build's rounds beside the goals.
fn summary(label: &str, rounds: &[Figures]) {
    let peak = min_median(rounds.iter().map(|f| mib(f.peak_kib)).collect());
    let idle = min_median(rounds.iter().map(|f| mib(f.idle_kib)).collect());
    let p99 = min_median(rounds.iter().map(|f| f.p99 as f64).collect());
    let goal_mib = GOAL_RSS_MB * 1e6 / 1048576.0;
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("{label}, {} round(s), min / median:", rounds.len());
    println!(
        "  peak RSS      {:7.1} / {:7.1} MiB   goal < {GOAL_RSS_MB} MB ({goal_mib:.1} MiB): {}",
        peak.0,
        peak.1,
        met(peak.1 < goal_mib)
    );
    println!("  RSS, polls held {:5.1} / {:7.1} MiB", idle.0, idle.1);
    println!(
        "  dispatch p99  {:7.0} / {:7.0} ms    goal < {GOAL_P99_MS} ms: {}",
        p99.0,
        p99.1,
        met(p99.1 < GOAL_P99_MS as f64)
    );
}

fn run(o: Options) -> Result<(), String> {
    raise_fd_limit();
    let mut mine = Vec::new();
    let mut base = Vec::new();
    for r in 0..o.rounds {
        println!("\n== round {} of {}", r + 1, o.rounds);
        // Alternate which goes first, so drift in the machine's load
        // does not favour one of them.
        let order: Vec<(&str, bool)> = match &o.baseline {
            None => vec![(o.jobxd.as_str(), false)],
            Some(b) if r % 2 == 0 => vec![(o.jobxd.as_str(), false), (b.as_str(), true)],
            Some(b) => vec![(b.as_str(), true), (o.jobxd.as_str(), false)],
        };
        for (path, is_base) in order {
            let f = round(&o, path)?;
            if is_base {
                base.push(f);
            } else {
                mine.push(f);
            }
        }
    }
    println!();
    summary(&format!("jobx ({})", o.jobxd), &mine);
    if let Some(b) = &o.baseline {
        summary(&format!("baseline ({b})"), &base);
        let ratio = |f: &dyn Fn(&Figures) -> f64| {
            min_median(mine.iter().zip(&base).map(|(m, b)| f(m) / f(b)).collect())
        };
        let peak = ratio(&|f| f.peak_kib as f64);
        let p99 = ratio(&|f| f.p99.max(1) as f64);
        println!(
            "ratio jobx / baseline, min / median: peak RSS {:.2} / {:.2}, dispatch p99 {:.2} / {:.2}",
            peak.0, peak.1, p99.0, p99.1
        );
    }
    Ok(())
}

fn main() {
    match parse_args().and_then(run) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("jobx-bench-agent: {e}");
            std::process::exit(1);
        }
    }
}
