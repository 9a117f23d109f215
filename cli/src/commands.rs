//! The nouns and verbs that map onto one or two API calls each.

use crate::args::{ApprovalCmd, BatchCmd, GroupCmd, JobCmd, LogArgs, NodeAdd, NodeCmd, TaskCmd};
use crate::client::seg;
use crate::ctx::Ctx;
use crate::error::{CliError, Exit, Result};
use crate::follow::Msg;
use crate::output::{bar, cell, table};
use crate::sse::Record;
use serde_json::{json, Value};
use std::io::{BufRead, Write};

fn rows(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn cells(v: &Value, keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| cell(&v[*k])).collect()
}

fn print_table(ctx: &Ctx, headers: &[&str], rows: Vec<Vec<String>>) {
    if rows.is_empty() {
        println!("(none)");
    } else {
        print!("{}", table(headers, &rows, ctx.paint));
    }
}

pub fn node(ctx: &Ctx, cmd: NodeCmd) -> Result<Exit> {
    let p = ctx.project()?;
    match cmd {
        NodeCmd::Ls => {
            let nodes = ctx.client.get(&format!("/node/{p}"))?;
            if ctx.json {
                ctx.print_json(&nodes);
                return Ok(Exit::Ok);
            }
            let r = rows(&nodes)
                .iter()
                .map(|n| {
                    let labels: Vec<String> = n["labels"]
                        .as_object()
                        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect())
                        .unwrap_or_default();
                    let mut c = cells(n, &["name", "host", "port", "user"]);
                    c.push(if labels.is_empty() {
                        "-".into()
                    } else {
                        labels.join(",")
                    });
                    c
                })
                .collect();
            print_table(ctx, &["NAME", "HOST", "PORT", "USER", "LABELS"], r);
        }
        NodeCmd::Add(a) => node_add(ctx, p, a)?,
        NodeCmd::Rm { names } => {
            for n in names {
                ctx.client
                    .data("DELETE", &format!("/node/{p}/{}", seg(&n)), None)
                    .map_err(|e| e.context(&format!("node {n}")))?;
                println!("node {n} removed");
            }
        }
    }
    Ok(Exit::Ok)
}

fn node_add(ctx: &Ctx, p: u64, a: NodeAdd) -> Result<()> {
    let labels: serde_json::Map<String, Value> = a
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let nodes: Vec<Value> = a
        .names
        .iter()
        .map(|n| {
            let mut m = json!({"name": n, "labels": labels});
            if let Some(h) = &a.host {
                m["host"] = h.clone().into();
            }
            if let Some(port) = a.port {
                m["port"] = port.into();
            }
            if let Some(u) = &a.user {
                m["user"] = u.clone().into();
            }
            m
        })
        .collect();
    let all = ctx.client.data(
        "POST",
        &format!("/node/{p}"),
        Some(&json!({ "nodes": nodes })),
    )?;
    if ctx.json {
        ctx.print_json(&all);
    } else {
        println!(
            "saved {}; the inventory has {} nodes",
            a.names.join(", "),
            rows(&all).len()
        );
    }
    Ok(())
}

/// A group by name, or by id when no group has that name.
pub fn find_group(ctx: &Ctx, p: u64, which: &str) -> Result<u64> {
    let groups = ctx.client.get(&format!("/group/{p}"))?;
    let by_name = rows(&groups)
        .iter()
        .find(|g| g["name"].as_str() == Some(which));
    if let Some(id) = by_name.and_then(|g| g["id"].as_u64()) {
        return Ok(id);
    }
    match which.parse::<u64>() {
        Ok(id) if rows(&groups).iter().any(|g| g["id"].as_u64() == Some(id)) => Ok(id),
        _ => Err(CliError::usage(format!(
            "no group named {which:?} in project {p} (jobx group ls -p {p})"
        ))),
    }
}

pub fn group(ctx: &Ctx, cmd: GroupCmd) -> Result<Exit> {
    let p = ctx.project()?;
    match cmd {
        GroupCmd::Ls => {
            let mut groups = ctx.client.get(&format!("/group/{p}"))?;
            if ctx.json {
                ctx.print_json(&groups);
                return Ok(Exit::Ok);
            }
            if let Some(a) = groups.as_array_mut() {
                a.sort_by_key(|g| g["id"].as_u64());
            }
            let r = rows(&groups)
                .iter()
                .map(|g| cells(g, &["id", "name", "group_type", "note", "edit_time"]))
                .collect();
            print_table(ctx, &["ID", "NAME", "TYPE", "NOTE", "EDITED"], r);
        }
        GroupCmd::Show { group } => {
            let id = find_group(ctx, p, &group)?;
            let g = ctx.client.get(&format!("/group/{p}/{id}"))?;
            if ctx.json {
                ctx.print_json(&g);
                return Ok(Exit::Ok);
            }
            let ty = g["group_type"].as_str().unwrap_or("list");
            let text = if ty == "list" {
                &g["node"]
            } else {
                &g["percent"]
            };
            println!("group {} (id {id}, {ty})", cell(&g["name"]));
            println!("  text:   {}", text.as_str().unwrap_or(""));
            if g["note"].as_str().is_some_and(|n| !n.is_empty()) {
                println!("  note:   {}", cell(&g["note"]));
            }
            println!("  edited: {}", cell(&g["edit_time"]));
        }
        GroupCmd::Preview { group } => {
            let id = find_group(ctx, p, &group)?;
            let batches = ctx.client.get(&format!("/group/{p}/{id}/node"))?;
            if ctx.json {
                ctx.print_json(&batches);
                return Ok(Exit::Ok);
            }
            let r = rows(&batches)
                .iter()
                .enumerate()
                .map(|(i, b)| vec![(i + 1).to_string(), rows(b).len().to_string(), cell(b)])
                .collect();
            print_table(ctx, &["BATCH", "SIZE", "NODES"], r);
        }
        GroupCmd::Rm { group } => {
            let id = find_group(ctx, p, &group)?;
            ctx.client
                .data("DELETE", &format!("/group/{p}/{id}"), None)?;
            println!("group {group} removed");
        }
    }
    Ok(Exit::Ok)
}

pub fn job(ctx: &Ctx, cmd: JobCmd) -> Result<Exit> {
    let p = ctx.project()?;
    match cmd {
        JobCmd::Ls => {
            let jobs = ctx.client.get(&format!("/job/{p}"))?;
            if ctx.json {
                ctx.print_json(&jobs);
                return Ok(Exit::Ok);
            }
            let r = rows(&jobs)
                .iter()
                .map(|j| {
                    let steps: Vec<String> = rows(&j["steps"])
                        .iter()
                        .map(|s| format!("{} ({})", cell(&s["name"]), cell(&s["plugin"])))
                        .collect();
                    vec![cell(&j["name"]), steps.join(", "), cell(&j["edit_time"])]
                })
                .collect();
            print_table(ctx, &["NAME", "STEPS", "EDITED"], r);
        }
        JobCmd::Show { name } => {
            let j = ctx.client.get(&format!("/job/{p}/{}", seg(&name)))?;
            if ctx.json {
                ctx.print_json(&j);
                return Ok(Exit::Ok);
            }
            // The job as its part of a project file: what apply reads.
            let job = crate::project::Job::from_api(&j).map_err(CliError::other)?;
            let text = crate::project::emit(&crate::project::Project {
                jobs: vec![job],
                ..Default::default()
            });
            let body = text.split_once('\n').map(|(_, b)| b).unwrap_or(&text);
            print!("{}", body.trim_start());
            println!("# edited {}", cell(&j["edit_time"]));
        }
        JobCmd::Rm { name } => {
            ctx.client
                .data("DELETE", &format!("/job/{p}/{}", seg(&name)), None)?;
            println!("job {name} removed");
        }
    }
    Ok(Exit::Ok)
}

const TASK_COLS: [&str; 8] = [
    "uuid",
    "name",
    "group",
    "user",
    "status",
    "starttime",
    "runtime",
    "waiting",
];

fn task_row(ctx: &Ctx, t: &Value) -> Vec<String> {
    let mut c = cells(t, &TASK_COLS);
    c[4] = ctx.paint.status(&c[4]);
    c
}

pub fn task(ctx: &Ctx, cmd: TaskCmd) -> Result<Exit> {
    let p = ctx.project()?;
    match cmd {
        TaskCmd::Ls(l) => {
            let mut q = format!("/task/{p}?limit={}", l.limit.max(1));
            if let Some(s) = &l.status {
                q.push_str(&format!("&status={}", seg(s)));
            }
            if let Some(n) = &l.name {
                q.push_str(&format!("&name={}", seg(n)));
            }
            let mut tasks = ctx.client.get(&q)?;
            if let Some(a) = tasks.as_array_mut() {
                a.sort_by_key(|t| t["id"].as_u64());
            }
            if ctx.json {
                ctx.print_json(&tasks);
                return Ok(Exit::Ok);
            }
            let r = rows(&tasks).iter().map(|t| task_row(ctx, t)).collect();
            print_table(
                ctx,
                &[
                    "UUID", "JOB", "GROUP", "USER", "STATUS", "STARTED", "RUNTIME", "WAITING",
                ],
                r,
            );
        }
        TaskCmd::Show { uuid } => {
            let t = ctx.client.get(&format!("/task/{p}/{}", seg(&uuid)))?;
            let subs = ctx.client.get(&format!("/subtask/{p}/{}", seg(&uuid)))?;
            if ctx.json {
                ctx.print_json(&json!({"task": t, "batches": subs}));
                return Ok(Exit::Ok);
            }
            print_task(ctx, &t, &subs);
        }
        TaskCmd::Stop { uuid } => {
            ctx.client
                .call("DELETE", &format!("/task/{p}/{}", seg(&uuid)), None)?;
            println!("task {uuid}: stop requested");
        }
        TaskCmd::Wait { uuid, timeout } => {
            return crate::follow::wait(ctx, p, &uuid, timeout);
        }
        TaskCmd::Rollback { uuid } => {
            let v = ctx
                .client
                .call("PUT", &format!("/task/{p}/{}/rollback", seg(&uuid)), None)?;
            let rb = cell(&v["uuid"]);
            println!("rollback task {rb} started");
            println!(
                "  follow it: {}",
                ctx.command(&format!("task wait -p {p} {rb}"))
            );
        }
        TaskCmd::Norollback { uuid } => {
            ctx.client
                .call("PUT", &format!("/task/{p}/{}/norollback", seg(&uuid)), None)?;
            println!("task {uuid}: no rollback recorded");
        }
    }
    Ok(Exit::Ok)
}

pub fn print_task(ctx: &Ctx, t: &Value, subs: &Value) {
    let pt = ctx.paint;
    println!(
        "task {}  {}",
        pt.bold(&cell(&t["uuid"])),
        pt.status(&cell(&t["status"]))
    );
    for (label, key) in [
        ("job", "name"),
        ("group", "group"),
        ("user", "user"),
        ("started", "starttime"),
        ("finished", "finishtime"),
        ("runtime", "runtime"),
        ("reason", "reason"),
        ("waiting", "waiting"),
        ("decision", "decision"),
        ("rollback", "rollback_uuid"),
    ] {
        let v = cell(&t[key]);
        if v != "-" {
            println!("  {label:<9} {v}");
        }
    }
    if let Some(vars) = t["variables"].as_object().or(t["variable"].as_object()) {
        for (k, v) in vars {
            println!("  var       {k}={}", cell(v));
        }
    }
    let n = rows(subs).len();
    let r: Vec<Vec<String>> = rows(subs)
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                format!("{}/{n}", i + 1),
                cell(&s["uuid"]),
                cell(&s["nodelist"]),
                pt.status(&cell(&s["status"])),
                cell(&s["confirm"]),
                cell(&s["runtime"]),
                cell(&s["reason"]),
            ]
        })
        .collect();
    if !r.is_empty() {
        println!();
        print!(
            "{}",
            table(
                &["BATCH", "UUID", "NODES", "STATUS", "CONFIRM", "RUNTIME", "REASON"],
                &r,
                pt
            )
        );
    }
}

pub fn batch(ctx: &Ctx, cmd: BatchCmd) -> Result<Exit> {
    let p = ctx.project()?;
    let (uuid, body, said) = match &cmd {
        BatchCmd::Confirm { uuid } => (
            uuid,
            json!({"action": "continue"}),
            "confirmed: the task goes on with the next batch",
        ),
        BatchCmd::Retry { uuid } => (
            uuid,
            json!({"action": "retry"}),
            "retried: the failed step runs again on the failed nodes",
        ),
    };
    ctx.client.data(
        "PUT",
        &format!("/subtask/{p}/{}/confirm", seg(uuid)),
        Some(&body),
    )?;
    println!("batch {uuid} {said}");
    Ok(Exit::Ok)
}

pub fn approval(ctx: &Ctx, cmd: ApprovalCmd) -> Result<Exit> {
    let p = ctx.project()?;
    let (uuid, opinion) = match cmd {
        ApprovalCmd::Ls => {
            let list = ctx.client.get(&format!("/approval/{p}"))?;
            if ctx.json {
                ctx.print_json(&list);
                return Ok(Exit::Ok);
            }
            let r = rows(&list)
                .iter()
                .map(|a| {
                    cells(
                        a,
                        &[
                            "uuid",
                            "taskuuid",
                            "step",
                            "approvers",
                            "message",
                            "create_time",
                        ],
                    )
                })
                .collect();
            print_table(
                ctx,
                &["UUID", "TASK", "STEP", "APPROVERS", "MESSAGE", "ASKED"],
                r,
            );
            return Ok(Exit::Ok);
        }
        ApprovalCmd::Agree { uuid } => (uuid, "agree"),
        ApprovalCmd::Refuse { uuid } => (uuid, "refuse"),
    };
    ctx.client.data(
        "PUT",
        &format!("/approval/{p}/{}", seg(&uuid)),
        Some(&json!({ "opinion": opinion })),
    )?;
    println!("approval {uuid}: {opinion} recorded");
    Ok(Exit::Ok)
}

/// The daemon's name for log URLs: given, or the `slave` of the key's task,
/// or of any task of the project (every task of a daemon holds its name).
fn slave_name(ctx: &Ctx, key: &str, given: Option<String>) -> Result<String> {
    if let Some(s) = given {
        return Ok(s);
    }
    let p = ctx.project()?;
    let task_uuid: String = key.chars().take(12).collect();
    if let Ok(t) = ctx.client.get(&format!("/task/{p}/{}", seg(&task_uuid))) {
        if let Some(s) = t["slave"].as_str() {
            return Ok(s.to_string());
        }
    }
    let tasks = ctx.client.get(&format!("/task/{p}?limit=1"))?;
    rows(&tasks)
        .iter()
        .find_map(|t| t["slave"].as_str().map(String::from))
        .ok_or_else(|| {
            CliError::usage(format!(
                "project {p} has no tasks to read the daemon's name from: give --slave NAME"
            ))
        })
}

pub fn log(ctx: &Ctx, a: LogArgs) -> Result<Exit> {
    let slave = slave_name(ctx, &a.key, a.slave)?;
    let base = format!("/slave/{}/log/{}", seg(&slave), seg(&a.key));
    let keep_colour = ctx.paint.on;
    let mut out = std::io::stdout().lock();
    let mut emit = |r: &Record, raw: &Value| -> Result<()> {
        let line = if ctx.json {
            let mut v = raw.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("html");
            }
            v.to_string()
        } else if keep_colour {
            r.line()
        } else {
            crate::output::strip_ansi(&r.line())
        };
        writeln!(out, "{line}")
            .and_then(|_| out.flush())
            .map_err(|e| CliError::other(format!("writing output: {e}")))
    };
    if !a.follow {
        // Pages of JSON records: bounded memory however long the log.
        let mut offset = 0u64;
        loop {
            let page = ctx
                .client
                .get(&format!("{base}?format=json&offset={offset}&max=1000"))?;
            let recs = rows(&page["records"]);
            for v in recs {
                emit(&Record::from_json(v), v)?;
            }
            let next = page["next_offset"].as_u64().unwrap_or(offset);
            if recs.is_empty() || next == offset {
                return Ok(Exit::Ok);
            }
            offset = next;
        }
    }
    // Reconnects from its last record when the connection drops.
    let rx = crate::follow::stream_log(ctx.client.clone(), format!("{base}?format=sse"));
    loop {
        match rx.recv() {
            Ok(Msg::Rec(r, v)) => emit(&r, &v)?,
            Ok(Msg::End) => return Ok(Exit::Ok),
            Ok(Msg::Broken(e)) => return Err(CliError::other(format!("the log stream: {e}"))),
            Err(_) => {
                return Err(CliError::Connect {
                    server: ctx.conn.server.clone(),
                    detail: "the log stream ended before the log did".into(),
                })
            }
        }
    }
}

pub fn oplog(ctx: &Ctx, limit: u32) -> Result<Exit> {
    let p = ctx.project()?;
    let list = ctx
        .client
        .get(&format!("/log/{p}?limit={}", limit.clamp(1, 10_000)))?;
    if ctx.json {
        ctx.print_json(&list);
        return Ok(Exit::Ok);
    }
    let r = rows(&list)
        .iter()
        .map(|e| cells(e, &["create_time", "user", "title", "info"]))
        .collect();
    print_table(ctx, &["TIME", "USER", "WHAT", "ON"], r);
    Ok(Exit::Ok)
}

pub fn stats(ctx: &Ctx, count: u32) -> Result<Exit> {
    let p = ctx.project()?;
    let base = format!("/task/{p}/analysis");
    let last = ctx
        .client
        .get(&format!("{base}/last?count={}", count.clamp(1, 1000)))?;
    let date = ctx.client.get(&format!("{base}/date"))?;
    let hour = ctx.client.get(&format!("{base}/hour"))?;
    let runtime = ctx.client.get(&format!("{base}/runtime"))?;
    let month = ctx.client.get(&format!("/task/{p}/count"))?;
    if ctx.json {
        ctx.print_json(
            &json!({"last": last, "date": date, "hour": hour, "runtime": runtime, "count": month}),
        );
        return Ok(Exit::Ok);
    }
    let pt = ctx.paint;
    if let Some(m) = month.as_object() {
        let parts: Vec<String> = m
            .iter()
            .map(|(k, v)| format!("{} {}", cell(v), pt.status(k)))
            .collect();
        println!("{} {}\n", pt.bold("this month:"), parts.join(", "));
    }
    println!("{}", pt.bold("last tasks"));
    let r: Vec<Vec<String>> = rows(&last)
        .iter()
        .map(|t| {
            let mut c = cells(t, &["name", "user", "status", "runtime", "uuid"]);
            c[2] = pt.status(&c[2]);
            c
        })
        .collect();
    print_table(ctx, &["JOB", "USER", "STATUS", "RUNTIME", "UUID"], r);
    let num = |v: &Value| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0.0)
    };
    println!(
        "\n{}",
        pt.bold("tasks per day, last 30 days (total, success)")
    );
    let max = rows(&date).iter().map(|d| num(&d[1])).fold(0.0, f64::max);
    let r: Vec<Vec<String>> = rows(&date)
        .iter()
        .map(|d| {
            vec![
                cell(&d[0]),
                cell(&d[1]),
                cell(&d[2]),
                pt.green(&bar(num(&d[2]), max, 30)) + &bar(num(&d[1]) - num(&d[2]), max, 30),
            ]
        })
        .collect();
    print_table(ctx, &["DAY", "TOTAL", "SUCCESS", ""], r);
    println!("\n{}", pt.bold("tasks per hour of day"));
    let max = rows(&hour).iter().map(|h| num(&h[1])).fold(0.0, f64::max);
    let r: Vec<Vec<String>> = rows(&hour)
        .iter()
        .map(|h| vec![cell(&h[0]), cell(&h[1]), bar(num(&h[1]), max, 30)])
        .collect();
    print_table(ctx, &["HOUR", "TASKS", ""], r);
    println!(
        "\n{}",
        pt.bold("runtime of finished tasks (minutes, % of tasks)")
    );
    let r: Vec<Vec<String>> = ["0-1", "1-3", "3-5", "5-10", "10-30", "30+"]
        .iter()
        .map(|b| {
            let v = &runtime[*b];
            vec![
                b.to_string(),
                format!("{}%", cell(v)),
                bar(num(v), 100.0, 30),
            ]
        })
        .collect();
    print_table(ctx, &["MINUTES", "SHARE", ""], r);
    Ok(Exit::Ok)
}

/// `jobx login`: the token from a prompt (no echo) or standard input,
/// checked against the server, saved as a context (mode 0600).
pub fn login(g: &crate::args::Global) -> Result<Exit> {
    use std::io::IsTerminal;
    let path = crate::config::default_path()
        .ok_or_else(|| CliError::usage("neither XDG_CONFIG_HOME nor HOME is set"))?;
    let mut file = crate::config::load(&path)?;
    let env_server = std::env::var("JOBX_SERVER").ok();
    let server = g
        .server
        .clone()
        .or(env_server)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| CliError::usage("jobx login needs --server URL"))?;
    let server = server.trim_end_matches('/').to_string();
    let token = match (&g.token, &g.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| CliError::usage(format!("--token-file {}: {e}", f.display())))?,
        (None, None) if std::io::stdin().is_terminal() => {
            let term = console::Term::stderr();
            term.write_str(&format!("token for {server}: "))
                .and_then(|_| term.read_secure_line())
                .map_err(|e| CliError::other(format!("reading the token: {e}")))?
        }
        (None, None) => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map_err(|e| {
                CliError::other(format!("reading the token from standard input: {e}"))
            })?;
            line
        }
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(CliError::usage("no token given"));
    }
    // Any project path authenticates first: 401 = bad token; 403 = a good
    // token without a role on that project.
    let client = crate::client::Client::new(&server, &token);
    let probe = g.project.unwrap_or(0);
    match client.get(&format!("/node/{probe}")) {
        Ok(_) => {}
        Err(CliError::Api { status: 403, info }) => {
            if g.project.is_some() {
                eprintln!("warning: {info}");
            }
        }
        Err(e) => return Err(e),
    }
    let name = g.context.clone().unwrap_or_else(|| "default".to_string());
    let old_project = file.contexts.get(&name).and_then(|c| c.project);
    file.contexts.insert(
        name.clone(),
        crate::config::Context {
            server: server.clone(),
            token,
            project: g.project.or(old_project),
        },
    );
    file.current = Some(name.clone());
    crate::config::save(&path, &file)?;
    println!(
        "logged in to {server}: context {name:?} saved in {} and made current",
        path.display()
    );
    Ok(Exit::Ok)
}

pub fn completions(shell: clap_complete::Shell) -> Result<Exit> {
    use clap::CommandFactory;
    let mut cmd = crate::args::Cli::command();
    clap_complete::generate(shell, &mut cmd, "jobx", &mut std::io::stdout());
    Ok(Exit::Ok)
}
