//! What every command needs: the client, the project, how to print.

use crate::client::Client;
use crate::config::Conn;
use crate::error::{CliError, Result};
use crate::output::Paint;
use serde_json::Value;
use std::io::IsTerminal;

pub struct Ctx {
    pub client: Client,
    pub conn: Conn,
    pub json: bool,
    pub paint: Paint,
    /// Standard output is a terminal (log colours kept, progress bars).
    pub tty_out: bool,
}

impl Ctx {
    pub fn new(conn: Conn, json: bool) -> Ctx {
        let tty_out = std::io::stdout().is_terminal();
        let no_color = std::env::var("NO_COLOR").ok();
        Ctx {
            client: Client::new(&conn.server, &conn.token),
            paint: Paint {
                on: crate::output::color_wanted(tty_out, no_color.as_deref()),
            },
            tty_out,
            conn,
            json,
        }
    }

    pub fn project(&self) -> Result<u64> {
        self.conn.project.ok_or_else(|| {
            CliError::usage("no project: give -p ID (or a default with jobx login --project ID)")
        })
    }

    /// Both ends are a terminal: a person can answer questions.
    pub fn interactive(&self) -> bool {
        self.tty_out && std::io::stdin().is_terminal()
    }

    pub fn print_json(&self, v: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
        );
    }

    /// A command line a person can paste: the same server when it came from
    /// a flag (tokens are never printed).
    pub fn command(&self, rest: &str) -> String {
        if self.conn.server_flag {
            format!("jobx --server {} {rest}", self.conn.server)
        } else {
            format!("jobx {rest}")
        }
    }
}
