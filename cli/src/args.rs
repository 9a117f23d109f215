//! The command line (clap): nouns and verbs, parsed at the edge.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub const EXIT_HELP: &str = "\
Exit codes:
  0  done (a followed or awaited task ended success)
  1  the task ended fail or refuse
  2  usage error, API error (the server's message and HTTP status are shown)
     or no connection (the server's URL is named)
  3  the task waits for a person: a failed batch to retry, confirm or stop,
     or an approval; the commands that decide are printed

Connection: --server / JOBX_SERVER / the config file's current context
(default http://127.0.0.1:8080); --token, --token-file / JOBX_TOKEN / the
context's token. `jobx login` writes contexts to
$XDG_CONFIG_HOME/jobx/config.toml (default ~/.config/jobx/config.toml).";

#[derive(Parser, Debug)]
#[command(
    name = "jobx",
    version,
    about = "jobx: run jobs on fleets of hosts in batches, from a terminal",
    after_help = EXIT_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Cmd,
}

const GLOBAL: &str = "Global options";

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// The jobx daemon, http://host:port or https://…
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    pub server: Option<String>,
    /// The API token (prefer --token-file or JOBX_TOKEN: flags are visible in ps)
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        conflicts_with = "token_file",
        help_heading = GLOBAL
    )]
    pub token: Option<String>,
    /// A file holding the API token
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub token_file: Option<PathBuf>,
    /// A context of the config file, instead of its current one
    #[arg(long, global = true, value_name = "NAME", help_heading = GLOBAL)]
    pub context: Option<String>,
    /// The project id (default: the context's project)
    #[arg(short = 'p', long, global = true, value_name = "ID", help_heading = GLOBAL)]
    pub project: Option<u64>,
    /// Print the server's data as JSON instead of tables
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Check a token against a server and save both as a context
    Login,
    /// The project's inventory
    #[command(subcommand)]
    Node(NodeCmd),
    /// Groups: how nodes are split into batches
    #[command(subcommand)]
    Group(GroupCmd),
    /// Jobs: ordered steps
    #[command(subcommand)]
    Job(JobCmd),
    /// Make the project's nodes, groups and jobs what a TOML file says
    Apply(ApplyArgs),
    /// Print the project's nodes, groups and jobs as the file apply reads
    Export(ExportArgs),
    /// Start a job over a group (prints the batch plan first)
    Run(RunArgs),
    /// Tasks: list, show, stop, wait, rollback decisions
    #[command(subcommand)]
    Task(TaskCmd),
    /// Decide about a failed batch that waits for a person
    #[command(subcommand)]
    Batch(BatchCmd),
    /// Approval steps waiting for an answer
    #[command(subcommand)]
    Approval(ApprovalCmd),
    /// Print a task's, batch's or step's log; -f follows it to its end
    Log(LogArgs),
    /// The operation log: who changed what
    Oplog(OplogArgs),
    /// Task statistics: last tasks, per day, per hour, runtimes
    Stats(StatsArgs),
    /// Shell completions: jobx completions bash > /etc/bash_completion.d/jobx
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// List the inventory in its order
    Ls,
    /// Add nodes (or change them: same name)
    Add(NodeAdd),
    /// Remove nodes
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct NodeAdd {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Address to reach the node at (default: its name)
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
    /// Remote account (ssh)
    #[arg(long)]
    pub user: Option<String>,
    /// A label, KEY=VALUE (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = key_value)]
    pub labels: Vec<(String, String)>,
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    Ls,
    /// A group's text (by name or id)
    Show {
        group: String,
    },
    /// The batches a group gives now
    Preview {
        group: String,
    },
    Rm {
        group: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    Ls,
    Show { name: String },
    Rm { name: String },
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// A project file, or a directory of *.toml files
    #[arg(short = 'f', long = "file", value_name = "FILE|DIR")]
    pub file: PathBuf,
    /// Print the changes, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Delete nodes, groups and jobs the file does not have
    #[arg(long)]
    pub prune: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to FILE instead of standard output
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The job's name
    pub job: String,
    /// The group (its name), or val=a,b for one batch of those nodes
    #[arg(short = 'g', long)]
    pub group: String,
    /// A variable, NAME=VALUE (repeatable; wins over --var-file)
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = key_value)]
    pub vars: Vec<(String, String)>,
    /// Variables from a TOML file (NAME = "value" lines)
    #[arg(long, value_name = "FILE")]
    pub var_file: Option<PathBuf>,
    /// End the task at the first failed batch instead of waiting (_exit_)
    #[arg(long)]
    pub exit_on_fail: bool,
    /// The version a rollback would go back to (_rollbackVersion_)
    #[arg(long, value_name = "VERSION")]
    pub rollback_version: Option<String>,
    /// Watch the task to its end: a progress bar per batch
    #[arg(long)]
    pub follow: bool,
    /// With --follow: print the nodes' output too
    #[arg(long)]
    pub log: bool,
}

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// The newest tasks (oldest first, newest last)
    Ls(TaskLs),
    /// A task and its batches
    Show { uuid: String },
    /// Stop a task (sticky)
    Stop { uuid: String },
    /// Wait until the task ends (exit 0 success, 1 fail) or waits for a person (3)
    Wait {
        uuid: String,
        /// Give up after this many seconds (exit 2)
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Roll a finished deploy back (starts the rollback task)
    Rollback { uuid: String },
    /// Record that a finished deploy needs no rollback
    Norollback { uuid: String },
}

#[derive(Args, Debug)]
pub struct TaskLs {
    /// init, running, success, fail, refuse or waiting
    #[arg(long)]
    pub status: Option<String>,
    /// Job name contains
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

#[derive(Subcommand, Debug)]
pub enum BatchCmd {
    /// Accept the failure and go on with the next batch
    Confirm { uuid: String },
    /// Re-run the failed step on the nodes where it failed
    Retry { uuid: String },
}

#[derive(Subcommand, Debug)]
pub enum ApprovalCmd {
    Ls,
    Agree { uuid: String },
    Refuse { uuid: String },
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// A task uuid, a batch uuid, or batch + step uuid + plugin
    pub key: String,
    /// Follow the log until the work behind it ends
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The daemon's name (default: read from the project's tasks)
    #[arg(long)]
    pub slave: Option<String>,
}

#[derive(Args, Debug)]
pub struct OplogArgs {
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// How many of the last tasks to list
    #[arg(long, default_value_t = 10)]
    pub count: u32,
}

/// `KEY=VALUE`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("jobx").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_vars_and_global_flags_anywhere() {
        let c = parse(&[
            "run",
            "deploy",
            "-p",
            "7",
            "--group",
            "web",
            "--var",
            "version=2.4.1",
            "--var",
            "x=a=b",
            "--follow",
            "--json",
        ])
        .expect("parses");
        assert_eq!(c.global.project, Some(7));
        assert!(c.global.json);
        let Cmd::Run(r) = c.cmd else {
            panic!("not run")
        };
        assert_eq!(r.job, "deploy");
        assert_eq!(
            r.vars,
            [
                ("version".to_string(), "2.4.1".to_string()),
                ("x".to_string(), "a=b".to_string())
            ]
        );
        assert!(r.follow && !r.log);
    }

    #[test]
    fn bad_usage_is_refused() {
        for args in [
            &["run", "deploy"][..],
            &["run", "deploy", "-g", "g", "--var", "novalue"],
            &["node", "frob"],
            &["-p", "seven", "node", "ls"],
            &["apply"],
            &["--token", "a", "--token-file", "f", "node", "ls"],
            &["completions", "tcsh"],
        ] {
            let e = parse(args).expect_err(&format!("{args:?}"));
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn help_lists_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("3  the task waits for a person"), "{help}");
    }

    #[test]
    fn key_values() {
        assert_eq!(key_value("a=1"), Ok(("a".into(), "1".into())));
        assert_eq!(key_value("a="), Ok(("a".into(), "".into())));
        assert!(key_value("=1").is_err());
    }
}
