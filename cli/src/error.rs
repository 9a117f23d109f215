//! Errors and the documented exit codes.

use std::fmt;

/// The exit codes of `jobx` (listed in `jobx --help` and docs/cli.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done; a followed task ended `success`.
    Ok = 0,
    /// A followed or awaited task ended `fail` or `refuse`.
    TaskFailed = 1,
    /// Bad usage, an API error or no connection.
    Error = 2,
    /// The task waits for a person (a failed batch, an approval).
    Waiting = 3,
}

#[derive(Debug)]
pub enum CliError {
    /// Bad arguments or files (found before anything was sent).
    Usage(String),
    /// The server refused: its `info` and the HTTP status.
    Api {
        status: u16,
        info: String,
    },
    /// No answer from the server.
    Connect {
        server: String,
        detail: String,
    },
    Other(String),
}

impl CliError {
    pub fn usage(m: impl Into<String>) -> CliError {
        CliError::Usage(m.into())
    }

    pub fn other(m: impl Into<String>) -> CliError {
        CliError::Other(m.into())
    }

    /// The same error with what was being done in front.
    pub fn context(self, what: &str) -> CliError {
        match self {
            CliError::Api { status, info } => CliError::Api {
                status,
                info: format!("{what}: {info}"),
            },
            CliError::Usage(m) => CliError::Usage(format!("{what}: {m}")),
            CliError::Other(m) => CliError::Other(format!("{what}: {m}")),
            c @ CliError::Connect { .. } => c,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Other(m) => write!(f, "{m}"),
            CliError::Api { status, info } => write!(f, "{info} (HTTP {status})"),
            CliError::Connect { server, detail } => {
                write!(f, "cannot reach the jobx server at {server}: {detail}")
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, CliError>;
