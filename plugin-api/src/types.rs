//! The serde types that cross the plugin boundary as JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One target host of a step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Node {
    /// The node's name as it appears in the group (also `JOBX_NODE`).
    pub name: String,
    /// Address to connect to. The host fills it in (it defaults to `name`);
    /// use [`Node::address`] to read it.
    pub host: String,
    /// Port to connect to, if the group gives one.
    pub port: Option<u16>,
    /// Login user given for this node, if any.
    pub user: Option<String>,
    /// Free-form labels of the node.
    pub labels: BTreeMap<String, String>,
}

impl Node {
    /// The address to use: `host`, or `name` when `host` is empty.
    pub fn address(&self) -> &str {
        if self.host.is_empty() {
            &self.name
        } else {
            &self.host
        }
    }
}

fn default_interpreter() -> String {
    "bash".to_string()
}

/// What a step does. Serialized with a `"kind"` tag (`"cmd"` or `"scp"`)
/// next to the other fields of [`StepRequest`].
///
/// Kinds may be added within ABI v1: the enum is non-exhaustive, and a kind
/// this plugin's SDK does not know arrives as [`StepKind::Unknown`], which
/// a plugin fails with a clear message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum StepKind {
    /// Run a script.
    Cmd {
        /// The script text, unchanged: it reads task variables from its environment.
        script: String,
        /// `bash`, `sh`, `python3`, `perl` (looked up in `PATH`) or an absolute path.
        #[serde(default = "default_interpreter")]
        interpreter: String,
        /// Arguments for the script, already split and `${var}`-substituted by the host.
        #[serde(default)]
        args: Vec<String>,
    },
    /// Copy a file or a directory (recursively) to the node.
    Scp {
        /// Source path on the daemon host.
        src: String,
        /// Destination path on the node.
        dst: String,
        /// Octal mode to apply to what was copied, e.g. `"0755"`.
        #[serde(default)]
        chmod: Option<String>,
        /// Owner to apply, `user` or `user:group`.
        #[serde(default)]
        chown: Option<String>,
        /// Mirror: remove files under `dst` that `src` does not have.
        #[serde(default)]
        delete: bool,
    },
    /// A kind added after this SDK version; its fields are not read.
    #[serde(other)]
    Unknown,
}

impl StepKind {
    /// The message a plugin fails a step of an unknown kind with.
    pub const UNKNOWN: &'static str =
        "this plugin does not know the step's kind (a newer jobxd?); update the plugin";
}

impl Default for StepKind {
    fn default() -> Self {
        StepKind::Cmd {
            script: String::new(),
            interpreter: default_interpreter(),
            args: Vec::new(),
        }
    }
}

/// Everything an executor needs to run one step on one node.
///
/// The host calls `start` once per (step, node) and bounds parallelism itself.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct StepRequest {
    /// Task uuid (12 characters).
    pub task: String,
    /// Subtask (batch) uuid.
    pub subtask: String,
    /// Step uuid.
    pub step: String,
    /// The step's name as written in the job.
    pub step_name: String,
    /// The plugin type the step names.
    pub plugin: String,
    /// `deploy` or `rollback`.
    pub action: String,
    /// 1-based batch number.
    pub batch: u32,
    /// Number of batches of the task.
    pub batches: u32,
    /// The one node this run is for.
    pub node: Node,
    /// What to do; flattened, so the JSON has `"kind": "cmd"` and the
    /// variant's fields at the top level.
    #[serde(flatten)]
    pub kind: StepKind,
    /// Step-level login user (remote executors).
    pub user: Option<String>,
    /// The complete environment additions computed by the host: task
    /// variables, `ip`, the step's env and the `JOBX_*` context. Values are
    /// raw strings; never interpolate them into shell text.
    pub env: BTreeMap<String, String>,
    /// The step fails with `timeout after N s` when it runs longer.
    pub timeout_secs: u64,
    /// A custom plugin's own parameters: the job step's fields other than
    /// the common ones (`uuid`, `name`, `plugin`, `timeout`, `action`,
    /// `batches`) and the typed executor fields (`kind`, `script`,
    /// `interpreter`, `args`, `user`, `env`, `src`, `dst`, `chmod`, `chown`,
    /// `delete`), untouched. Empty for the built-in executors.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The daemon's data directory (for control sockets, known_hosts, scratch files).
    pub data_dir: String,
}

/// "Prepare these nodes": what the host hands [`Executor::prepare`](crate::Executor::prepare)
/// for the next batch of a task while the current batch runs.
///
/// Advisory only: the host does not wait for it, may never send it (the
/// first batch, a retried batch, a plugin loaded without the hook), and may
/// send it for a batch that then never runs (the task fails or is stopped).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct PrepareRequest {
    /// Task uuid.
    pub task: String,
    /// The plugin type whose steps will run on the nodes.
    pub plugin: String,
    /// 1-based number of the batch the nodes belong to.
    pub batch: u32,
    /// Number of batches of the task.
    pub batches: u32,
    /// The nodes of that batch, filled in as in [`StepRequest::node`].
    pub nodes: Vec<Node>,
    /// The step-level login user of the first step of this plugin that will
    /// run on them, if it sets one (as [`StepRequest::user`]).
    pub user: Option<String>,
    /// The daemon's data directory (as [`StepRequest::data_dir`]).
    pub data_dir: String,
}

/// Which stream a line of output belongs to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The step's standard output.
    Stdout,
    /// The step's standard error.
    Stderr,
    /// The plugin's own messages, e.g. `connecting to web-1`.
    Info,
}

impl Stream {
    /// The number used for this stream by the C ABI (`0`, `1`, `2`).
    pub fn to_raw(self) -> u32 {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
            Stream::Info => 2,
        }
    }

    /// The stream for an ABI number; unknown numbers become [`Stream::Info`].
    pub fn from_raw(raw: u32) -> Stream {
        match raw {
            0 => Stream::Stdout,
            1 => Stream::Stderr,
            _ => Stream::Info,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Info => "info",
        })
    }
}

/// How a run ended. Success iff `error` is `None` and `exit_code` is `Some(0)`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct StepResult {
    /// The step's exit code, if it got to run and exit.
    pub exit_code: Option<i32>,
    /// Why the run failed other than by its exit code, e.g.
    /// `timeout after 60 s`, `cancelled`, `connection refused`.
    pub error: Option<String>,
}

impl StepResult {
    /// Exit code 0, no error.
    pub fn ok() -> StepResult {
        StepResult::exited(0)
    }

    /// The step ran and exited with `code`.
    pub fn exited(code: i32) -> StepResult {
        StepResult {
            exit_code: Some(code),
            error: None,
        }
    }

    /// The run failed for a reason other than an exit code.
    pub fn failed(msg: impl Into<String>) -> StepResult {
        StepResult {
            exit_code: None,
            error: Some(msg.into()),
        }
    }

    /// Whether the step succeeded.
    pub fn is_success(&self) -> bool {
        self.error.is_none() && self.exit_code == Some(0)
    }
}

/// An HTTP request routed by the host to `/plugin/<type>/…`.
///
/// In JSON, `body` is a base64 string (standard alphabet, with padding), so
/// any bytes survive.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path after `/plugin/<type>`, starting with `/` (or empty).
    pub path: String,
    /// The raw query string without `?`.
    pub query: String,
    /// Request headers in arrival order; names as received.
    pub headers: Vec<(String, String)>,
    /// The request body.
    #[serde(with = "crate::base64::serde_bytes")]
    pub body: Vec<u8>,
    /// The name of the jobx token the request carried, if it was valid.
    pub user: Option<String>,
    /// That token's roles (project id or `*` → role).
    pub roles: BTreeMap<String, String>,
}

impl HttpRequest {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plugin's answer to an [`HttpRequest`]. `body` is base64 in JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    #[serde(with = "crate::base64::serde_bytes")]
    pub body: Vec<u8>,
}

impl Default for HttpResponse {
    fn default() -> Self {
        HttpResponse {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

impl HttpResponse {
    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<String>) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![(
                "content-type".to_string(),
                "text/plain; charset=utf-8".to_string(),
            )],
            body: body.into().into_bytes(),
        }
    }

    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body: value.to_string().into_bytes(),
        }
    }

    /// `404 not found`.
    pub fn not_found() -> HttpResponse {
        HttpResponse::text(404, "not found")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn step_request_json_shape() {
        let req = StepRequest {
            task: "abcdefabcdef".into(),
            node: Node {
                name: "web-1".into(),
                ..Node::default()
            },
            kind: StepKind::Cmd {
                script: "echo hi".into(),
                interpreter: "sh".into(),
                args: vec!["a b".into()],
            },
            timeout_secs: 60,
            ..StepRequest::default()
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["kind"], "cmd");
        assert_eq!(v["script"], "echo hi");
        assert_eq!(v["args"], json!(["a b"]));
        let back: StepRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back, req);
        assert_eq!(back.node.address(), "web-1");
    }

    #[test]
    fn scp_defaults() {
        let v = json!({"kind": "scp", "src": "/a", "dst": "/b", "batch": 2});
        let req: StepRequest = serde_json::from_value(v).unwrap();
        assert_eq!(req.batch, 2);
        assert_eq!(
            req.kind,
            StepKind::Scp {
                src: "/a".into(),
                dst: "/b".into(),
                chmod: None,
                chown: None,
                delete: false
            }
        );
        let cmd: StepRequest =
            serde_json::from_value(json!({"kind": "cmd", "script": "x"})).unwrap();
        assert_eq!(
            cmd.kind,
            StepKind::Cmd {
                script: "x".into(),
                interpreter: "bash".into(),
                args: vec![]
            }
        );
    }

    #[test]
    fn a_newer_step_kind_arrives_as_unknown() {
        let v = json!({"kind": "rsync", "src": "/a", "mirror": true});
        let req: StepRequest = serde_json::from_value(v).unwrap();
        assert_eq!(req.kind, StepKind::Unknown);
    }

    #[test]
    fn result_helpers() {
        assert!(StepResult::ok().is_success());
        assert!(!StepResult::exited(1).is_success());
        assert!(!StepResult::failed("x").is_success());
        let r: StepResult = serde_json::from_str("{}").unwrap();
        assert_eq!(r, StepResult::default());
    }

    #[test]
    fn http_body_is_base64() {
        let req = HttpRequest {
            method: "POST".into(),
            body: vec![0xff, 0, b'a'],
            headers: vec![("Content-Type".into(), "x".into())],
            ..HttpRequest::default()
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["body"], "/wBh");
        let back: HttpRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back.body, vec![0xff, 0, b'a']);
        assert_eq!(back.header("content-type"), Some("x"));
        let resp: HttpResponse = serde_json::from_value(json!({"status": 204})).unwrap();
        assert_eq!(resp.status, 204);
        assert!(resp.body.is_empty());
    }

    #[test]
    fn stream_raw_roundtrip() {
        for s in [Stream::Stdout, Stream::Stderr, Stream::Info] {
            assert_eq!(Stream::from_raw(s.to_raw()), s);
        }
        assert_eq!(Stream::from_raw(77), Stream::Info);
    }
}
