//! The messages of the agent protocol (version 1): JSON bodies of the
//! requests under `/plugin/agent-pull/v1/`. The plugin and `jobx-agent`
//! both compile this file, so the two sides cannot drift apart; the
//! protocol itself is described in the plugin's README.

use std::collections::BTreeMap;

use jobx_plugin_api::{StepKind, Stream};
use serde::{Deserialize, Serialize};

/// The path prefix of every agent endpoint, after `/plugin/agent-pull`.
pub const PREFIX: &str = "/v1";

/// The header naming the agent; the token goes in `Authorization: Bearer`.
pub const AGENT_HEADER: &str = "x-jobx-agent";

/// What an agent says about itself on `poll` and `heartbeat`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Hello {
    /// Random per agent process: a new value tells the daemon that the
    /// agent restarted and lost whatever it was running.
    pub instance: String,
    /// The agent's version, shown in the agent list.
    pub version: String,
    /// Leases the agent is running or still reporting.
    pub running: Vec<String>,
}

/// The answer to `poll` and `heartbeat`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Answer {
    /// Steps handed out to this agent (poll only).
    pub work: Vec<Work>,
    /// Leases whose step must be stopped: kill the process group, then
    /// report the exit as usual.
    pub cancel: Vec<String>,
    /// Leases of `Hello::running` the daemon does not know (or no longer
    /// assigns to this agent): kill that work and drop it without reporting.
    pub stale: Vec<String>,
    /// How often to heartbeat while running a step, in milliseconds.
    pub heartbeat_ms: u64,
    /// After this long without contact the daemon fails the agent's
    /// steps as `agent lost`; the agent kills them too.
    pub lost_after_ms: u64,
    /// The longest the daemon holds a poll, in milliseconds.
    pub poll_ms: u64,
}

/// One step handed to an agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Work {
    /// Identifies this hand-out; every report about the step carries it.
    pub lease: String,
    /// Task uuid.
    pub task: String,
    /// Batch uuid.
    pub subtask: String,
    /// Step uuid.
    pub step: String,
    /// The step's name in the job.
    pub step_name: String,
    /// `deploy` or `rollback`.
    pub action: String,
    /// 1-based batch number.
    pub batch: u32,
    /// Number of batches.
    pub batches: u32,
    /// The node (the agent's own name).
    pub node: String,
    /// What to run: `"kind": "cmd"` or `"scp"` and the kind's fields.
    #[serde(flatten)]
    pub kind: StepKind,
    /// Environment additions for the step (task variables, `JOBX_*`).
    pub env: BTreeMap<String, String>,
    /// 0 = no limit.
    pub timeout_secs: u64,
    /// When the daemon queued the step, epoch milliseconds.
    pub queued_ms: i64,
}

/// Body of `accept`: the agent claims an offered step before running it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Accept {
    /// The lease from [`Work::lease`].
    pub lease: String,
    /// The agent's [`Hello::instance`].
    pub instance: String,
}

/// Body of `output`: one chunk of output lines.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Chunk {
    /// The step's lease.
    pub lease: String,
    /// 0, 1, 2, … per lease; a chunk sent again with a seen `seq` is
    /// acknowledged and not stored again.
    pub seq: u64,
    /// The lines, in order.
    pub lines: Vec<Line>,
}

/// One output line, without its newline. `text` when the bytes are UTF-8,
/// otherwise `base64`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// `stdout`, `stderr` or `info` (the agent's own messages).
    pub stream: Stream,
    /// The line as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The line's bytes, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

impl Line {
    /// Encodes `bytes`, as text when they are UTF-8.
    pub fn new(stream: Stream, bytes: &[u8]) -> Line {
        match std::str::from_utf8(bytes) {
            Ok(text) => Line {
                stream,
                text: Some(text.to_string()),
                base64: None,
            },
            Err(_) => Line {
                stream,
                text: None,
                base64: Some(jobx_plugin_api::base64::encode(bytes)),
            },
        }
    }

    /// The line's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match (&self.text, &self.base64) {
            (Some(t), None) => Ok(t.as_bytes().to_vec()),
            (None, Some(b)) => jobx_plugin_api::base64::decode(b)
                .map_err(|e| format!("invalid base64 in an output line: {e}")),
            _ => Err("an output line needs exactly one of text and base64".to_string()),
        }
    }

    /// Roughly how many bytes the line takes in a request.
    pub fn weight(&self) -> usize {
        32 + self.text.as_ref().map_or(0, String::len) + self.base64.as_ref().map_or(0, String::len)
    }
}

/// Body of `exit`: how the step ended. Sent once every output chunk has
/// been acknowledged.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Exit {
    /// The step's lease.
    pub lease: String,
    /// How many output chunks were sent (the next unused `seq`).
    pub chunks: u64,
    /// The exit code, when the step ran and exited.
    pub exit_code: Option<i32>,
    /// Why it failed otherwise (`timeout after 5 s`, `killed by signal 9`, …).
    pub error: Option<String>,
}

/// An error answer: `{"error": "…"}`; `stale` is set on 409 answers about
/// a lease the daemon does not hand to this agent (any more).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Refusal {
    /// What is wrong.
    pub error: String,
    /// The lease is unknown or no longer this agent's: kill that work.
    pub stale: bool,
}

/// What `GET /v1/files/<lease>` answers for an `scp` step: the source tree
/// on the daemon host.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Manifest {
    /// The file name of the source (used when copying a file into a directory).
    pub name: String,
    /// Entries in pre-order (a directory before what it holds). The first
    /// entry is the source itself, with an empty `path`.
    pub entries: Vec<Entry>,
}

/// One file, directory or symbolic link of an `scp` source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Entry {
    /// Relative to the source, `/`-separated; empty for the source itself.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// Permission bits.
    pub mode: u32,
    /// Size of a file in bytes.
    pub size: u64,
    /// Target of a symbolic link.
    pub target: Option<String>,
}
