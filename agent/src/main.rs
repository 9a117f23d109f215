//! jobx-agent: runs jobx steps on a host the daemon cannot reach. It polls
//! the daemon's `agent-pull` plugin over HTTP(S) for work addressed to its
//! own name, runs it, and reports output and exit codes back.
//!
//! ```text
//! jobx-agent --server https://jobx.example.com --name web-1 --token-file /etc/jobx/agent.token
//! jobx-agent --config /etc/jobx/agent.toml
//! ```

#![forbid(unsafe_code)]

mod client;
mod cmd;
mod output;
// The plugin's own message definitions: both sides compile the same file.
#[allow(dead_code)]
#[path = "../../plugins/agent-pull/src/proto.rs"]
mod proto;
mod scp;
mod state;
mod step;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::client::Client;
use crate::proto::Answer;
use crate::state::{lock, log, Ctx, Stop, Timing};

const USAGE: &str =
    "usage: jobx-agent [--config FILE] [--server URL] [--name NODE] [--token-file FILE]
                  [--workdir DIR] [--ca-file FILE] [--kill-grace SECS] [--max-backoff SECS]

  --config FILE      TOML file with the same settings (server, name, token_file,
                     workdir, ca_file, kill_grace, max_backoff); flags override it
  --server URL       the jobx daemon, http://… or https://… (a path prefix is kept)
  --name NODE        this agent's name: it receives the steps of the node so named
  --token-file FILE  file holding this agent's token
  --workdir DIR      working directory of steps (default: the temporary directory)
  --ca-file FILE     PEM certificates to trust besides the built-in roots
  --kill-grace SECS  SIGTERM to SIGKILL grace when a step is stopped (default 3)
  --max-backoff SECS longest pause between reconnection attempts (default 30)";

#[derive(Deserialize, Default, Debug)]
#[serde(default, deny_unknown_fields)]
struct Options {
    server: Option<String>,
    name: Option<String>,
    token_file: Option<PathBuf>,
    workdir: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    kill_grace: Option<f64>,
    max_backoff: Option<f64>,
}

enum Parsed {
    Run(Options),
    Exit(String),
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    if (0.0..=86_400.0).contains(&v) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{name} must be a number of seconds, not {v}"))
    }
}

fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let mut cli = Options::default();
    let mut config: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (flag.as_str(), None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(Parsed::Exit(USAGE.to_string()));
        }
        if flag == "--version" {
            return Ok(Parsed::Exit(format!("jobx-agent {}", state::VERSION)));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?,
        };
        let number = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag} needs a number of seconds, not {v:?}"))
        };
        match flag {
            "--config" => config = Some(PathBuf::from(value)),
            "--server" => cli.server = Some(value),
            "--name" => cli.name = Some(value),
            "--token-file" => cli.token_file = Some(PathBuf::from(value)),
            "--workdir" => cli.workdir = Some(PathBuf::from(value)),
            "--ca-file" => cli.ca_file = Some(PathBuf::from(value)),
            "--kill-grace" => cli.kill_grace = Some(number(&value)?),
            "--max-backoff" => cli.max_backoff = Some(number(&value)?),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let mut opts = match config {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            toml::from_str::<Options>(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Options::default(),
    };
    macro_rules! over {
        ($($f:ident),*) => { $( if cli.$f.is_some() { opts.$f = cli.$f; } )* };
    }
    over!(
        server,
        name,
        token_file,
        workdir,
        ca_file,
        kill_grace,
        max_backoff
    );
    Ok(Parsed::Run(opts))
}

fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(token)
}

/// A pause of about `d` (between half and all of it), so that agents that
/// lost the daemon together do not all come back in the same instant.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 1];
    let r = if getrandom::getrandom(&mut b).is_ok() {
        b[0]
    } else {
        128
    };
    d.mul_f64(0.5 + f64::from(r) / 510.0)
}

enum Event {
    Signal(i32),
    Fatal(String),
}

/// Asks for work, forever; reconnects with capped backoff.
fn poll_loop(ctx: &Arc<Ctx>, max_backoff: Duration, events: &mpsc::Sender<Event>) {
    let mut backoff = Duration::from_secs(1);
    let mut connected = false;
    loop {
        if ctx.shutting_down() {
            return;
        }
        let t = ctx.timing();
        let path = format!("/poll?wait_ms={}", t.poll.as_millis());
        match ctx
            .client
            .post::<_, Answer>(&path, &ctx.hello(), t.poll + Duration::from_secs(20))
        {
            Ok(answer) => {
                if !connected {
                    log("connected to the daemon");
                    connected = true;
                }
                backoff = Duration::from_secs(1);
                ctx.contact();
                ctx.learn(&answer);
                ctx.apply(&answer);
                for work in answer.work {
                    step::spawn(ctx.clone(), work);
                }
            }
            Err(e) if e.is_unauthorized() => {
                let _ = events.send(Event::Fatal(format!(
                    "the daemon refused this agent's name or token: {e}"
                )));
                return;
            }
            Err(e) => {
                if connected || backoff == Duration::from_secs(1) {
                    log(format!("cannot reach the daemon: {e}; retrying"));
                }
                connected = false;
                orphans(ctx);
                std::thread::sleep(jittered(backoff));
                backoff = (backoff * 2).min(max_backoff.max(Duration::from_secs(1)));
            }
        }
    }
}

/// Without contact for `lost_after` the daemon has failed our steps: kill them.
fn orphans(ctx: &Ctx) {
    let lost_after = ctx.timing().lost_after;
    if ctx.silence() >= lost_after && !lock(&ctx.steps).is_empty() {
        log("no contact with the daemon: stopping the running steps");
        ctx.stop_all(Stop::Orphan);
    }
}

/// Heartbeats while steps run: keeps their leases alive, carries stop
/// requests back.
fn heartbeat_loop(ctx: &Arc<Ctx>) {
    loop {
        {
            let steps = lock(&ctx.steps);
            if steps.is_empty() {
                let _ = ctx
                    .steps_changed
                    .wait_timeout(steps, Duration::from_secs(5))
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
        }
        let t = ctx.timing();
        std::thread::sleep(t.heartbeat);
        let hello = ctx.hello();
        if hello.running.is_empty() {
            continue;
        }
        let timeout = (t.lost_after / 2).max(Duration::from_secs(2));
        match ctx.client.post::<_, Answer>("/heartbeat", &hello, timeout) {
            Ok(answer) => {
                ctx.contact();
                ctx.learn(&answer);
                ctx.apply(&answer);
            }
            Err(_) => orphans(ctx),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(&args) {
        Ok(code) => code,
        Err(e) => {
            log(e);
            2
        }
    };
    std::process::exit(code);
}

fn run(args: &[String]) -> Result<i32, String> {
    let opts = match parse_args(args)? {
        Parsed::Run(o) => o,
        Parsed::Exit(text) => {
            println!("{text}");
            return Ok(0);
        }
    };
    let server = opts.server.ok_or("--server is required")?;
    let name = opts.name.ok_or("--name is required")?;
    let token = read_token(&opts.token_file.ok_or("--token-file is required")?)?;
    let workdir = opts.workdir.unwrap_or_else(std::env::temp_dir);
    if !workdir.is_dir() {
        return Err(format!("workdir {} is not a directory", workdir.display()));
    }
    let kill_grace = seconds("kill_grace", opts.kill_grace.unwrap_or(3.0))?;
    let max_backoff = seconds("max_backoff", opts.max_backoff.unwrap_or(30.0))?;
    let client = Client::new(&server, &name, &token, opts.ca_file.as_deref())?;

    let ctx = Arc::new(Ctx {
        client,
        instance: state::random_id(),
        workdir,
        kill_grace,
        timing: Mutex::new(Timing::default()),
        steps: Mutex::new(HashMap::new()),
        steps_changed: Condvar::new(),
        last_ok: Mutex::new(Instant::now()),
        shutdown: Default::default(),
    });

    let (tx, rx) = mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let sig_tx = tx.clone();
    std::thread::Builder::new()
        .name("jobx-agent-signals".to_string())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = sig_tx.send(Event::Signal(sig));
            }
        })
        .map_err(|e| e.to_string())?;
    let c = ctx.clone();
    let poll_tx = tx.clone();
    std::thread::Builder::new()
        .name("jobx-agent-poll".to_string())
        .spawn(move || poll_loop(&c, max_backoff, &poll_tx))
        .map_err(|e| e.to_string())?;
    let c = ctx.clone();
    std::thread::Builder::new()
        .name("jobx-agent-heartbeat".to_string())
        .spawn(move || heartbeat_loop(&c))
        .map_err(|e| e.to_string())?;
    drop(tx);
    log(format!(
        "agent {name} {} started, server {server}",
        state::VERSION
    ));

    let code = match rx.recv() {
        Ok(Event::Signal(sig)) => {
            log(format!("signal {sig}: stopping"));
            0
        }
        Ok(Event::Fatal(msg)) => {
            log(msg);
            2
        }
        Err(_) => 1,
    };
    // Kill the running steps' process groups, then give them a moment to
    // report so their nodes fail at once rather than after `lost_after`.
    ctx.shutdown.store(true, Ordering::Release);
    ctx.stop_all(Stop::Shutdown);
    let end = Instant::now() + kill_grace + Duration::from_secs(6);
    let mut steps = lock(&ctx.steps);
    while !steps.is_empty() {
        let now = Instant::now();
        if now >= end {
            log(format!("{} step(s) did not finish reporting", steps.len()));
            break;
        }
        steps = ctx
            .steps_changed
            .wait_timeout(steps, end - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = std::env::temp_dir().join(format!("jobx-agent-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.toml");
        std::fs::write(
            &file,
            "server = \"https://a\"\nname = \"n1\"\ntoken_file = \"/t\"\nkill_grace = 1\n",
        )
        .unwrap();
        let Parsed::Run(o) =
            parse_args(&args(&["--config", file.to_str().unwrap(), "--name=n2"])).unwrap()
        else {
            panic!("expected options")
        };
        assert_eq!(o.server.as_deref(), Some("https://a"));
        assert_eq!(o.name.as_deref(), Some("n2"));
        assert_eq!(o.kill_grace, Some(1.0));
        std::fs::write(&file, "servr = \"x\"\n").unwrap();
        assert!(parse_args(&args(&["--config", file.to_str().unwrap()])).is_err());
        assert!(parse_args(&args(&["--bogus", "1"])).is_err());
        assert!(parse_args(&args(&["--kill-grace", "soon"])).is_err());
        assert!(matches!(
            parse_args(&args(&["--version"])),
            Ok(Parsed::Exit(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
