//! The stored entities, as JSON documents in redb and on the wire.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Node {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Node {
    /// The address to reach the node at: `host`, defaulting to the name.
    pub fn address(&self) -> &str {
        self.host.as_deref().unwrap_or(&self.name)
    }

    pub fn to_api(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "host": self.address(),
            "port": self.port,
            "user": self.user,
            "labels": self.labels,
        })
    }
}

/// One step of a job, validated (see `jobs::validate_steps`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub uuid: String,
    pub name: String,
    pub plugin: String,
    pub timeout: u64,
    pub action: String,
    pub batches: String,
    /// `cmd` or `scp` for executor steps; absent for approvals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chmod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub everyone: Option<bool>,
    /// Parameters of custom plugins, passed through untouched.
    #[serde(default, flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    pub steps: Vec<Step>,
    pub edit_time: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Group {
    pub id: u64,
    pub projectid: u64,
    pub name: String,
    pub note: String,
    pub group_type: String,
    /// The group text (`node` for list groups, `percent` for percent groups).
    pub text: String,
    pub edit_time: i64,
}

impl Group {
    pub fn to_api(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "projectid": self.projectid,
            "name": self.name,
            "note": self.note,
            "group_type": self.group_type,
            "edit_time": crate::clock::local(self.edit_time),
        });
        let field = if self.group_type == "list" {
            "node"
        } else {
            "percent"
        };
        v[field] = serde_json::Value::String(self.text.clone());
        v
    }

    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "note": self.note,
            "group_type": self.group_type,
            "edit_time": crate::clock::local(self.edit_time),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpLog {
    pub id: u64,
    pub user: String,
    pub title: String,
    pub info: String,
    pub time: i64,
}

impl OpLog {
    pub fn to_api(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "user": self.user,
            "title": self.title,
            "info": self.info,
            "create_time": crate::clock::local(self.time),
        })
    }
}
