//! `jobx`: the command line of the jobx daemon. It speaks only the HTTP
//! API; see docs/cli.md.

#![forbid(unsafe_code)]

mod apply;
mod args;
mod client;
mod commands;
mod config;
mod ctx;
mod diff;
mod error;
mod follow;
mod output;
mod project;
mod run;
mod sse;

use args::{Cli, Cmd};
use clap::Parser;
use error::{CliError, Exit, Result};

fn connect(g: &args::Global) -> Result<ctx::Ctx> {
    let file = match config::default_path() {
        Some(p) => config::load(&p)?,
        None => config::ConfigFile::default(),
    };
    let given = config::Given {
        server: g.server.clone(),
        token: g.token.clone(),
        token_file: g.token_file.clone(),
        context: g.context.clone(),
        project: g.project,
        env_server: std::env::var("JOBX_SERVER").ok(),
        env_token: std::env::var("JOBX_TOKEN").ok(),
    };
    let conn = config::resolve(&given, &file)?;
    Ok(ctx::Ctx::new(conn, g.json))
}

fn dispatch(cli: Cli) -> Result<Exit> {
    match cli.cmd {
        Cmd::Login => commands::login(&cli.global),
        Cmd::Completions { shell } => commands::completions(shell),
        cmd => {
            let ctx = connect(&cli.global)?;
            match cmd {
                Cmd::Node(c) => commands::node(&ctx, c),
                Cmd::Group(c) => commands::group(&ctx, c),
                Cmd::Job(c) => commands::job(&ctx, c),
                Cmd::Apply(a) => apply::apply(&ctx, cli.global.project, a),
                Cmd::Export(a) => apply::export(&ctx, a),
                Cmd::Run(a) => run::run(&ctx, a),
                Cmd::Task(c) => commands::task(&ctx, c),
                Cmd::Batch(c) => commands::batch(&ctx, c),
                Cmd::Approval(c) => commands::approval(&ctx, c),
                Cmd::Log(a) => commands::log(&ctx, a),
                Cmd::Oplog(a) => commands::oplog(&ctx, a.limit),
                Cmd::Stats(a) => commands::stats(&ctx, a.count),
                Cmd::Login | Cmd::Completions { .. } => Err(CliError::other("unreachable")),
            }
        }
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(e.exit_code());
        }
    };
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jobx: {e}");
            Exit::Error
        }
    };
    std::process::exit(code as i32);
}
