//! Watching a task: progress per batch (bars on a terminal, plain lines
//! otherwise), its log, and what to do when it waits for a person.

use crate::client::{seg, Client};
use crate::ctx::Ctx;
use crate::error::{CliError, Exit, Result};
use crate::output::cell;
use crate::sse::{Parser, Record};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Bars,
    Lines,
    Quiet,
}

pub struct Opts {
    pub show: Show,
    pub log: bool,
    pub interactive: bool,
    pub deadline: Option<Instant>,
}

/// What the log stream's reader hands over: a record (parsed, and as sent).
pub enum Msg {
    Rec(Record, Value),
    End,
    Broken(String),
}

/// How long a follow waits for a server that stopped answering (a restart).
const LOST_FOR: Duration = Duration::from_secs(60);

/// Reads the task's event stream on its own thread; when the connection
/// drops (a daemon restart) it reconnects from the last record it got.
pub fn stream_log(client: Client, base: String) -> mpsc::Receiver<Msg> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut last = 0u64;
        let mut lost: Option<Instant> = None;
        loop {
            match client.stream(&format!("{base}&offset={last}")) {
                Ok(stream) => {
                    lost = None;
                    let mut parser = Parser::default();
                    for line in stream.lines() {
                        let Ok(line) = line else { break };
                        let Some(ev) = parser.line(&line) else {
                            continue;
                        };
                        let msg = match ev.event.as_str() {
                            "end" => Msg::End,
                            _ => match serde_json::from_str::<Value>(&ev.data) {
                                Ok(v) => Msg::Rec(Record::from_json(&v), v),
                                Err(_) => continue,
                            },
                        };
                        let end = matches!(msg, Msg::End);
                        if let Msg::Rec(r, _) = &msg {
                            last = last.max(r.seq);
                        }
                        if tx.send(msg).is_err() || end {
                            return;
                        }
                    }
                }
                Err(e @ CliError::Connect { .. }) => {
                    if lost.get_or_insert_with(Instant::now).elapsed() > LOST_FOR {
                        let _ = tx.send(Msg::Broken(e.to_string()));
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Msg::Broken(e.to_string()));
                    return;
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    rx
}

/// Where the running batch is, from its log records.
#[derive(Default, Debug, PartialEq)]
pub struct LogState {
    /// The last record's sequence number.
    pub seq: u64,
    pub batch: Option<usize>,
    pub step: String,
    pub done: BTreeSet<String>,
}

impl LogState {
    pub fn on(&mut self, r: &Record) {
        self.seq = self.seq.max(r.seq);
        if r.node.is_empty() && r.stream == "info" {
            // "batch 2/3: a,b" or "batch 2/3 (retry): a"
            if let Some(rest) = r.text.strip_prefix("batch ") {
                if let Some(i) = rest.split('/').next().and_then(|n| n.parse::<usize>().ok()) {
                    self.batch = i.checked_sub(1);
                    self.step.clear();
                    self.done.clear();
                }
            } else if let Some(rest) = r.text.strip_prefix("step ") {
                // "step \"install\" (local) on a,b"
                if let Some((label, _)) = rest.rsplit_once(" on ") {
                    self.step = label.to_string();
                    self.done.clear();
                }
            }
        } else if r.node_finished_step() {
            self.done.insert(r.node.clone());
        }
    }
}

/// What a task waits for.
#[derive(Debug, PartialEq)]
pub enum Waiting {
    /// A batch in WaitConfirm (`passed` = a canary gate after a success).
    Confirm {
        sub: String,
        pos: usize,
        total: usize,
        failed: String,
        reason: String,
        passed: bool,
    },
    Approval {
        uuid: String,
        approvers: String,
        message: String,
    },
}

pub fn is_final(status: &str) -> bool {
    matches!(status, "success" | "fail" | "refuse")
}

fn exit_of(status: &str) -> Exit {
    if status == "success" {
        Exit::Ok
    } else {
        Exit::TaskFailed
    }
}

/// The batch waiting for confirmation, if any (pure).
pub fn waiting_batch(subs: &[Value]) -> Option<Waiting> {
    let total = subs.len();
    subs.iter().enumerate().find_map(|(i, s)| {
        (s["confirm"].as_str() == Some("WaitConfirm")).then(|| {
            let failed = match s["failed_nodes"].as_array() {
                Some(a) if !a.is_empty() => cell(&s["failed_nodes"]),
                _ => cell(&s["nodelist"]),
            };
            Waiting::Confirm {
                sub: cell(&s["uuid"]),
                pos: i + 1,
                total,
                failed,
                reason: s["reason"].as_str().unwrap_or("").to_string(),
                passed: s["status"].as_str() == Some("success"),
            }
        })
    })
}

/// Commands with their `#` comments lined up.
fn command_lines(cmds: &[(String, &str)]) -> String {
    let w = cmds.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    cmds.iter()
        .map(|(c, why)| format!("  {c:<w$}  # {why}\n"))
        .collect()
}

/// The commands that decide, one a line, as a person pastes them.
pub fn decide_commands(ctx: &Ctx, p: u64, task: &str, w: &Waiting) -> String {
    let c = |rest: String| ctx.command(&rest);
    match w {
        Waiting::Confirm {
            sub,
            pos,
            total,
            failed,
            reason,
            passed,
        } => {
            let mut cmds = Vec::new();
            let head = if *passed {
                format!("batch {pos}/{total} passed and waits at a gate for a person. Decide with one of:\n")
            } else {
                let why = if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                };
                cmds.push((
                    c(format!("batch retry -p {p} {sub}")),
                    "run the failed step again on the failed nodes",
                ));
                format!("batch {pos}/{total} failed on {failed}{why} and waits for a person. Decide with one of:\n")
            };
            cmds.push((
                c(format!("batch confirm -p {p} {sub}")),
                "go on with the next batch",
            ));
            cmds.push((c(format!("task stop -p {p} {task}")), "stop the task"));
            head + &command_lines(&cmds)
        }
        Waiting::Approval {
            uuid,
            approvers,
            message,
        } => format!(
            "the task waits for approval by {approvers}: {message}\nDecide with one of:\n{}",
            command_lines(&[
                (c(format!("approval agree -p {p} {uuid}")), "agree"),
                (
                    c(format!("approval refuse -p {p} {uuid}")),
                    "refuse: the task ends refuse"
                ),
            ])
        ),
    }
}

struct Snapshot {
    task: Value,
    subs: Vec<Value>,
}

fn snapshot(ctx: &Ctx, p: u64, uuid: &str) -> Result<Snapshot> {
    let task = ctx.client.get(&format!("/task/{p}/{}", seg(uuid)))?;
    let subs = ctx.client.get(&format!("/subtask/{p}/{}", seg(uuid)))?;
    Ok(Snapshot {
        task,
        subs: subs.as_array().cloned().unwrap_or_default(),
    })
}

fn waiting(ctx: &Ctx, p: u64, uuid: &str, snap: &Snapshot) -> Result<Option<Waiting>> {
    if is_final(snap.task["status"].as_str().unwrap_or("")) {
        return Ok(None);
    }
    if let Some(w) = waiting_batch(&snap.subs) {
        return Ok(Some(w));
    }
    // `waiting` names approvals; without that field, look whenever a batch runs.
    let ask = match snap.task.get("waiting") {
        Some(Value::String(s)) => s == "approval",
        Some(Value::Null) => false,
        _ => snap.subs.iter().any(|s| s["status"] == "running"),
    };
    if !ask {
        return Ok(None);
    }
    let list = ctx.client.get(&format!("/approval/{p}"))?;
    Ok(list.as_array().and_then(|l| {
        l.iter()
            .find(|a| a["taskuuid"].as_str() == Some(uuid))
            .map(|a| Waiting::Approval {
                uuid: cell(&a["uuid"]),
                approvers: cell(&a["approvers"]).replace(',', ", "),
                message: a["message"].as_str().unwrap_or("").to_string(),
            })
    }))
}

/// One batch's progress as a line (pure): also the bar's message.
pub fn batch_line(i: usize, total: usize, s: &Value, log: &LogState) -> (u64, u64, String) {
    let len = s["nodecount"].as_u64().unwrap_or(0);
    let status = s["status"].as_str().unwrap_or("");
    let waits = s["confirm"].as_str() == Some("WaitConfirm");
    let (pos, what) = match status {
        "success" if waits => (len, "success, waits at a gate".to_string()),
        "success" => (len, "success".to_string()),
        "running" => {
            let here = log.batch == Some(i);
            let step = if here && !log.step.is_empty() {
                format!(" {}", log.step)
            } else {
                String::new()
            };
            let pos = if here { log.done.len() as u64 } else { 0 };
            (pos.min(len), format!("running{step}"))
        }
        "fail" => {
            let on = match s["failed_nodes"].as_array() {
                Some(a) if !a.is_empty() => format!(" on {}", cell(&s["failed_nodes"])),
                _ => String::new(),
            };
            let wait = if waits { ", waits for a person" } else { "" };
            let done =
                len.saturating_sub(s["failed_nodes"].as_array().map_or(0, |a| a.len() as u64));
            (done, format!("fail{on}{wait}"))
        }
        "init" => (0, "waiting its turn".to_string()),
        other => (0, other.to_string()),
    };
    (
        pos,
        len,
        format!("batch {}/{total} [{}]: {what}", i + 1, cell(&s["nodelist"])),
    )
}

/// Progress output: indicatif bars, plain lines, or nothing.
struct Progress {
    show: Show,
    multi: MultiProgress,
    bars: Vec<ProgressBar>,
    last: Vec<String>,
    to_stderr: bool,
}

impl Progress {
    fn new(show: Show, to_stderr: bool) -> Progress {
        let multi = MultiProgress::with_draw_target(if show == Show::Bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Progress {
            show,
            multi,
            bars: Vec::new(),
            last: Vec::new(),
            to_stderr,
        }
    }

    fn println(&self, line: &str) {
        match self.show {
            Show::Bars => {
                let _ = self.multi.println(line);
            }
            _ if self.to_stderr => eprintln!("{line}"),
            _ => println!("{line}"),
        }
    }

    fn update(&mut self, subs: &[Value], log: &LogState) {
        let total = subs.len();
        for (i, s) in subs.iter().enumerate() {
            let (pos, len, line) = batch_line(i, total, s, log);
            let runtime = s["runtime"]
                .as_str()
                .map(|r| format!(" {r}s"))
                .unwrap_or_default();
            match self.show {
                Show::Bars => {
                    if self.bars.len() <= i {
                        let b = self.multi.add(ProgressBar::new(len));
                        b.set_style(
                            ProgressStyle::with_template(
                                "[{bar:24.green/white}] {pos:>3}/{len:<3} nodes {msg}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                        self.bars.push(b);
                    }
                    let b = &self.bars[i];
                    b.set_length(len);
                    b.set_position(pos);
                    b.set_message(format!("{line}{runtime}"));
                }
                Show::Lines => {
                    if self.last.len() <= i {
                        self.last.push(String::new());
                    }
                    let key = format!("{pos}/{len} {line}");
                    if self.last[i] != key {
                        self.println(&format!("{line} ({pos}/{len} nodes{runtime})"));
                        self.last[i] = key;
                    }
                }
                Show::Quiet => {}
            }
        }
    }

    fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.multi.suspend(f)
    }

    fn finish(&self) {
        for b in &self.bars {
            b.abandon();
        }
    }
}

/// Asks until one of `choices` (or its first letter) is answered; None at
/// the end of input.
fn ask(question: &str, choices: &[&str]) -> Option<String> {
    let stdin = std::io::stdin();
    loop {
        eprint!("{question} [{}] ", choices.join("/"));
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let a = line.trim().to_lowercase();
        if let Some(c) = choices
            .iter()
            .find(|c| **c == a || (!a.is_empty() && c.starts_with(&a)))
        {
            return Some(c.to_string());
        }
        eprintln!("answer one of: {}", choices.join(", "));
    }
}

/// Follows a task until it ends (exit by its status) or waits for a
/// person without one to ask (exit 3).
pub fn follow(ctx: &Ctx, p: u64, uuid: &str, o: Opts) -> Result<Exit> {
    let mut progress = Progress::new(o.show, ctx.json);
    let want_log = o.show != Show::Quiet || o.log;
    let mut logstate = LogState::default();
    let mut records = None;
    let mut ended = false;
    let mut waved: BTreeSet<String> = BTreeSet::new();
    let mut lost: Option<Instant> = None;
    loop {
        let observed =
            snapshot(ctx, p, uuid).and_then(|snap| waiting(ctx, p, uuid, &snap).map(|w| (snap, w)));
        let (snap, wait) = match observed {
            Ok(x) => {
                if lost.take().is_some() {
                    progress.println("(the server answers again)");
                }
                x
            }
            Err(e @ CliError::Connect { .. }) => {
                match lost {
                    None => {
                        progress.println(&format!("({e}; trying again)"));
                        lost = Some(Instant::now());
                    }
                    Some(t) if t.elapsed() > LOST_FOR => return Err(e),
                    Some(_) => {}
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            Err(e) => return Err(e),
        };
        if records.is_none() {
            if let (true, Some(slave)) = (want_log, snap.task["slave"].as_str()) {
                let path = format!("/slave/{}/log/{}?format=sse", seg(slave), seg(uuid));
                // The stream resumes from its last record after a reconnection.
                records = Some(stream_log(ctx.client.clone(), path));
            }
        }
        progress.update(&snap.subs, &logstate);
        let status = snap.task["status"].as_str().unwrap_or("").to_string();
        if is_final(&status) {
            // The rest of the log first: it ends with the task.
            if let Some(r) = &records {
                drain(
                    r,
                    &mut logstate,
                    &progress,
                    o.log,
                    &mut ended,
                    Duration::from_secs(5),
                );
            }
            progress.update(&snap.subs, &logstate);
            progress.finish();
            return finished(ctx, p, uuid, &snap.task, &progress, o.interactive);
        }
        if let Some(w) = wait {
            let key = match &w {
                Waiting::Confirm { sub, .. } => sub.clone(),
                Waiting::Approval { uuid, .. } => uuid.clone(),
            };
            if !waved.contains(&key) {
                // Everything the log holds so far, before the question.
                if let (Some(r), Some(slave)) = (&records, snap.task["slave"].as_str()) {
                    let log = format!("/slave/{}/log/{}", seg(slave), seg(uuid));
                    let until = Instant::now() + Duration::from_secs(5);
                    loop {
                        let more = ctx
                            .client
                            .get(&format!("{log}?format=json&offset={}&max=1", logstate.seq))
                            .is_ok_and(|v| v["records"].as_array().is_some_and(|a| !a.is_empty()));
                        if !more || ended || Instant::now() >= until {
                            break;
                        }
                        drain(
                            r,
                            &mut logstate,
                            &progress,
                            o.log,
                            &mut ended,
                            Duration::from_millis(200),
                        );
                    }
                }
                let asked = if o.interactive {
                    progress.suspend(|| decide(ctx, p, uuid, &w))?
                } else {
                    None
                };
                match asked {
                    Some(true) => continue,
                    Some(false) => {
                        waved.insert(key);
                    }
                    None => {
                        progress.finish();
                        let text = decide_commands(ctx, p, uuid, &w);
                        if ctx.json {
                            eprint!("{text}");
                        } else {
                            print!("{text}");
                        }
                        return Ok(Exit::Waiting);
                    }
                }
            }
        }
        if o.deadline.is_some_and(|d| Instant::now() >= d) {
            progress.finish();
            return Err(CliError::other(format!(
                "task {uuid} is still {status}: gave up waiting"
            )));
        }
        match &records {
            Some(r) if !ended => drain(r, &mut logstate, &progress, o.log, &mut ended, POLL),
            _ => std::thread::sleep(POLL),
        }
    }
}

/// Takes log records for up to `time`, or until the stream ends.
fn drain(
    rx: &mpsc::Receiver<Msg>,
    state: &mut LogState,
    progress: &Progress,
    print: bool,
    ended: &mut bool,
    time: Duration,
) {
    let until = Instant::now() + time;
    while !*ended {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match rx.recv_timeout(left) {
            Ok(Msg::Rec(r, _)) => {
                state.on(&r);
                if print {
                    let line = r.line();
                    progress.println(&if progress.show == Show::Bars {
                        line
                    } else {
                        crate::output::strip_ansi(&line)
                    });
                }
            }
            Ok(Msg::End) | Err(mpsc::RecvTimeoutError::Disconnected) => *ended = true,
            Ok(Msg::Broken(e)) => {
                progress.println(&format!("(log: {e})"));
                *ended = true;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => return,
        }
    }
}

/// Asks a person at the terminal and acts. Some(true) = acted (follow on),
/// Some(false) = wait without asking again, None = no answer (end of input).
fn decide(ctx: &Ctx, p: u64, task: &str, w: &Waiting) -> Result<Option<bool>> {
    match w {
        Waiting::Confirm {
            sub,
            pos,
            total,
            failed,
            reason,
            passed,
        } => {
            let (q, choices): (String, &[&str]) = if *passed {
                (
                    format!("batch {pos}/{total} passed and waits at a gate: continue / stop?"),
                    &["continue", "stop"],
                )
            } else {
                let why = if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                };
                (
                    format!(
                        "batch {pos}/{total} failed on {failed}{why}: retry / continue / stop?"
                    ),
                    &["retry", "continue", "stop"],
                )
            };
            let Some(a) = ask(&q, choices) else {
                return Ok(None);
            };
            let r = match a.as_str() {
                "stop" => ctx
                    .client
                    .call("DELETE", &format!("/task/{p}/{}", seg(task)), None)
                    .map(|_| ()),
                action => ctx
                    .client
                    .data(
                        "PUT",
                        &format!("/subtask/{p}/{}/confirm", seg(sub)),
                        Some(&json!({ "action": action })),
                    )
                    .map(|_| ()),
            };
            match r {
                Ok(()) => eprintln!("{a}: done"),
                Err(e) => eprintln!("{a}: {e}"),
            }
            Ok(Some(true))
        }
        Waiting::Approval {
            uuid,
            approvers,
            message,
        } => {
            let q = format!("approval by {approvers} requested: {message}\nagree / refuse / wait?");
            let Some(a) = ask(&q, &["agree", "refuse", "wait"]) else {
                return Ok(None);
            };
            if a == "wait" {
                return Ok(Some(false));
            }
            match ctx.client.data(
                "PUT",
                &format!("/approval/{p}/{}", seg(uuid)),
                Some(&json!({ "opinion": a })),
            ) {
                Ok(_) => {
                    eprintln!("{a}: recorded");
                    Ok(Some(true))
                }
                Err(e) => {
                    eprintln!("{a}: {e}; waiting for the approvers");
                    Ok(Some(false))
                }
            }
        }
    }
}

/// The end: a summary line, the rollback decision if one is expected.
fn finished(
    ctx: &Ctx,
    p: u64,
    uuid: &str,
    task: &Value,
    progress: &Progress,
    interactive: bool,
) -> Result<Exit> {
    let status = task["status"].as_str().unwrap_or("");
    let reason = task["reason"].as_str().filter(|r| !r.is_empty());
    let line = format!(
        "task {uuid} {}{} after {}s",
        ctx.paint.status(status),
        reason.map(|r| format!(" ({r})")).unwrap_or_default(),
        cell(&task["runtime"])
    );
    progress.println(&line);
    let pending = task["decision"].as_str() == Some("pending")
        || task["waiting"].as_str() == Some("rollback_decision");
    if pending {
        let answer = if interactive {
            ask(
                "the deploy expects a rollback decision: rollback / norollback / later?",
                &["rollback", "norollback", "later"],
            )
        } else {
            None
        };
        match answer.as_deref() {
            Some(d @ ("rollback" | "norollback")) => {
                let v = ctx
                    .client
                    .call("PUT", &format!("/task/{p}/{}/{d}", seg(uuid)), None)?;
                if d == "rollback" {
                    let rb = cell(&v["uuid"]);
                    progress.println(&format!(
                        "rollback task {rb} started: {}",
                        ctx.command(&format!("task wait -p {p} {rb}"))
                    ));
                } else {
                    progress.println("no rollback recorded");
                }
            }
            _ => progress.println(&format!(
                "a rollback decision is expected:\n  {}\n  {}",
                ctx.command(&format!("task rollback -p {p} {uuid}")),
                ctx.command(&format!("task norollback -p {p} {uuid}"))
            )),
        }
    }
    if ctx.json {
        ctx.print_json(task);
    }
    Ok(exit_of(status))
}

/// `jobx task wait`.
pub fn wait(ctx: &Ctx, p: u64, uuid: &str, timeout: Option<u64>) -> Result<Exit> {
    follow(
        ctx,
        p,
        uuid,
        Opts {
            show: Show::Quiet,
            log: false,
            interactive: false,
            deadline: timeout.map(|t| Instant::now() + Duration::from_secs(t)),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(node: &str, text: &str) -> Record {
        Record {
            seq: 0,
            node: node.into(),
            stream: "info".into(),
            text: text.into(),
        }
    }

    #[test]
    fn log_records_move_the_batch_and_step() {
        let mut s = LogState::default();
        s.on(&rec("", "batch 2/3: a,b"));
        s.on(&rec("", "step \"install\" (local) on a,b"));
        s.on(&rec("a", "exit code 0"));
        assert_eq!(s.batch, Some(1));
        assert_eq!(s.step, "\"install\" (local)");
        assert_eq!(s.done.len(), 1);
        s.on(&rec("", "step \"check\" (local) on a,b"));
        assert!(s.done.is_empty());
        s.on(&rec("", "batch 2/3 (retry): b"));
        assert_eq!((s.batch, s.step.as_str()), (Some(1), ""));
    }

    #[test]
    fn the_waiting_batch_is_found_with_its_failed_nodes() {
        let subs = vec![
            json!({"uuid": "a", "status": "success", "confirm": "", "nodelist": "n1"}),
            json!({"uuid": "b", "status": "fail", "confirm": "WaitConfirm", "nodelist": "n2,n3", "failed_nodes": ["n3"], "reason": "x"}),
            json!({"uuid": "c", "status": "init", "confirm": null, "nodelist": "n4"}),
        ];
        assert_eq!(
            waiting_batch(&subs),
            Some(Waiting::Confirm {
                sub: "b".into(),
                pos: 2,
                total: 3,
                failed: "n3".into(),
                reason: "x".into(),
                passed: false
            })
        );
        assert_eq!(waiting_batch(&subs[..1]), None);
    }

    #[test]
    fn batch_lines_count_nodes() {
        let mut log = LogState::default();
        log.on(&rec("", "batch 1/2: a,b"));
        log.on(&rec("", "step \"s\" (local) on a,b"));
        log.on(&rec("b", "exit code 0"));
        let s = json!({"status": "running", "nodecount": 2, "nodelist": "a,b", "confirm": null});
        assert_eq!(
            batch_line(0, 2, &s, &log),
            (1, 2, "batch 1/2 [a,b]: running \"s\" (local)".to_string())
        );
        let s = json!({"status": "fail", "nodecount": 2, "nodelist": "a,b", "confirm": "WaitConfirm", "failed_nodes": ["a"]});
        assert_eq!(
            batch_line(1, 2, &s, &log),
            (
                1,
                2,
                "batch 2/2 [a,b]: fail on a, waits for a person".to_string()
            )
        );
    }
}
