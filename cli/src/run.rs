//! `jobx run`: the batch plan (the third-party dry-run, which checks
//! everything a start would and stores nothing), then the task under the
//! same uuid, then optionally following it.

use crate::args::RunArgs;
use crate::ctx::Ctx;
use crate::error::{CliError, Exit, Result};
use crate::follow::{follow, Opts, Show};
use crate::output::{cell, table};
use serde_json::{json, Map, Value};
use std::io::IsTerminal;

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh deploy uuid from `random`: 12 of [A-Za-z0-9], the last lowercase.
pub fn uuid_from(random: &[u8; 12]) -> String {
    let mut s: String = random[..11]
        .iter()
        .map(|b| ALNUM[*b as usize % ALNUM.len()] as char)
        .collect();
    s.push((b'a' + random[11] % 26) as char);
    s
}

fn new_uuid() -> Result<String> {
    let mut r = [0u8; 12];
    getrandom::getrandom(&mut r).map_err(|e| CliError::other(format!("no randomness: {e}")))?;
    Ok(uuid_from(&r))
}

/// The task's variables: the file, then `--var`, then the flags' own.
pub fn variables(
    file: Option<&str>,
    vars: &[(String, String)],
    exit_on_fail: bool,
    rollback: Option<&str>,
) -> std::result::Result<Map<String, Value>, String> {
    let mut m = Map::new();
    if let Some(text) = file {
        let t: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        for (k, v) in t {
            let s = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => return Err(format!("{k}: must be a string, number or boolean")),
            };
            m.insert(k, Value::String(s));
        }
    }
    for (k, v) in vars {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    if exit_on_fail {
        m.insert("_exit_".into(), "1".into());
    }
    if let Some(v) = rollback {
        m.insert("_rollbackVersion_".into(), v.into());
    }
    Ok(m)
}

/// The plan of a dry-run answer as a table.
pub fn plan_text(job: &str, group: &str, data: &Value, paint: crate::output::Paint) -> String {
    let batches = data["batches"].as_array().cloned().unwrap_or_default();
    let nodes: usize = batches
        .iter()
        .map(|b| b["nodes"].as_array().map_or(0, Vec::len))
        .sum();
    let rows: Vec<Vec<String>> = batches
        .iter()
        .map(|b| {
            vec![
                cell(&b["batch"]),
                cell(&b["nodes"]),
                cell(&b["steps"]).replace(',', ", "),
            ]
        })
        .collect();
    let mut s = format!(
        "plan: job {job} over {group}: {} batches, {nodes} nodes\n",
        batches.len()
    );
    if !rows.is_empty() {
        s.push_str(&table(&["BATCH", "NODES", "STEPS"], &rows, paint));
    }
    s
}

pub fn run(ctx: &Ctx, a: RunArgs) -> Result<Exit> {
    let p = ctx.project()?;
    let file = match &a.var_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| CliError::usage(format!("--var-file {}: {e}", f.display())))?,
        ),
        None => None,
    };
    let vars = variables(
        file.as_deref(),
        &a.vars,
        a.exit_on_fail,
        a.rollback_version.as_deref(),
    )
    .map_err(|e| CliError::usage(format!("--var-file: {e}")))?;
    let uuid = new_uuid()?;
    let params = json!({"jobname": a.job, "group": a.group, "variable": vars});
    // retry_count picks the last letter: the dry-run plans exactly this uuid.
    let retry = uuid.as_bytes()[11] - b'a';
    let plan = ctx.client.call(
        "POST",
        "/third/interface/dry-run",
        Some(&json!({"project_id": p, "uuid": uuid, "retry_count": retry, "params": params})),
    )?;
    let human = |s: &str| {
        if ctx.json {
            eprint!("{s}");
        } else {
            print!("{s}");
        }
    };
    human(&plan_text(&a.job, &a.group, &plan["data"], ctx.paint));
    let created = ctx.client.call(
        "POST",
        &format!("/task/{p}/job/byname"),
        Some(&json!({"jobname": a.job, "group": a.group, "variable": vars, "uuid": uuid})),
    )?;
    let uuid = created["uuid"].as_str().unwrap_or(&uuid).to_string();
    human(&format!("task {uuid} started\n"));
    if !a.follow {
        if ctx.json {
            ctx.print_json(&created["data"]);
        } else {
            println!(
                "  watch it: {}\n  its log:  {}",
                ctx.command(&format!("task wait -p {p} {uuid}")),
                ctx.command(&format!("log -f -p {p} {uuid}"))
            );
        }
        return Ok(Exit::Ok);
    }
    let bars = ctx.tty_out && std::io::stderr().is_terminal();
    follow(
        ctx,
        p,
        &uuid,
        Opts {
            show: if bars { Show::Bars } else { Show::Lines },
            log: a.log,
            interactive: ctx.interactive(),
            deadline: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_deploy_uuids() {
        for seed in [[0u8; 12], [255u8; 12], [61u8; 12]] {
            let u = uuid_from(&seed);
            assert_eq!(u.len(), 12);
            assert!(u.bytes().all(|b| b.is_ascii_alphanumeric()));
            assert!(u.as_bytes()[11].is_ascii_lowercase(), "{u}");
        }
    }

    #[test]
    fn variables_layer_file_flags_and_specials() {
        let m = variables(
            Some("version = \"1.0\"\nreplicas = 3\nfast = true\n"),
            &[("version".into(), "2.0".into())],
            true,
            Some("1.0"),
        )
        .expect("vars");
        assert_eq!(
            Value::Object(m),
            json!({"version": "2.0", "replicas": "3", "fast": "true", "_exit_": "1", "_rollbackVersion_": "1.0"})
        );
        assert!(variables(Some("a = [1]\n"), &[], false, None)
            .expect_err("array")
            .contains("a: must be"));
    }

    #[test]
    fn plan_lists_batches() {
        let data = json!({"batches": [
            {"batch": 1, "nodes": ["a"], "steps": ["install", "check"]},
            {"batch": 2, "nodes": ["b", "c"], "steps": ["install"]}]});
        let t = plan_text("deploy", "web", &data, crate::output::Paint { on: false });
        assert_eq!(
            t,
            "plan: job deploy over web: 2 batches, 3 nodes\nBATCH  NODES  STEPS\n1      a      install, check\n2      b,c    install\n"
        );
    }
}
