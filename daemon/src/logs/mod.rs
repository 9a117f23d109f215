//! Step logs: keys, a group-committing writer, and rendering.
//!
//! Records go to the store in batches (every ~50 ms or 256 KiB), so step
//! output never costs an fsync per line. Each record has a place in each of
//! the three keys of docs/semantics.md §7 (the task, the batch, the batch's
//! step) and is stored once, under the most specific one (`store::logs`).

mod render;
mod writer;

use std::sync::Arc;

pub use render::{ansi_to_html, html_escape, page};
pub use writer::{KeyedLog, LogWriter};

/// The keys a step's records are written under (cheap to clone: one is
/// kept with every queued record).
#[derive(Clone, Debug)]
pub struct Keys {
    pub task: Arc<str>,
    /// Empty for records of the whole task.
    pub subtask: Arc<str>,
    /// subtask uuid + step uuid + plugin type; empty for batch records.
    pub step: Arc<str>,
}

impl Keys {
    pub fn new(task: &str, subtask: &str, step: &str, plugin: &str) -> Keys {
        Keys {
            task: task.into(),
            subtask: subtask.into(),
            step: format!("{subtask}{step}{plugin}").into(),
        }
    }

    /// Keys for records that belong to a batch but no step.
    pub fn batch(task: &str, subtask: &str) -> Keys {
        Keys {
            task: task.into(),
            subtask: subtask.into(),
            step: "".into(),
        }
    }

    /// Keys for records of the whole task (stop, finish, decisions).
    pub fn task(task: &str) -> Keys {
        Keys {
            task: task.into(),
            subtask: "".into(),
            step: "".into(),
        }
    }

    /// task, subtask, step, empty ones included.
    pub fn slots(&self) -> [&Arc<str>; 3] {
        [&self.task, &self.subtask, &self.step]
    }

    /// The keys in use.
    pub fn all_arcs(&self) -> impl Iterator<Item = &Arc<str>> {
        self.slots().into_iter().filter(|k| !k.is_empty())
    }
}

/// What a log key names, by its shape: 12 characters for a task or batch
/// uuid, 24 + plugin type for a step.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyKind {
    Uuid(String),
    Step { subtask: String },
}

pub fn parse_key(key: &str) -> Option<KeyKind> {
    if key.len() == 12 && crate::ids::is_uuid(key) {
        return Some(KeyKind::Uuid(key.to_string()));
    }
    if key.len() > 24 && key.is_char_boundary(24) {
        let (uuids, plugin) = key.split_at(24);
        let ok_plugin = plugin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if crate::ids::is_uuid(&uuids[..12]) && crate::ids::is_uuid(&uuids[12..]) && ok_plugin {
            return Some(KeyKind::Step {
                subtask: uuids[..12].to_string(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shapes() {
        assert_eq!(
            parse_key("Ab3dE5fG7hJk"),
            Some(KeyKind::Uuid("Ab3dE5fG7hJk".into()))
        );
        assert_eq!(
            parse_key("Ab3dE5fG7hJkZZZZZZZZZZZZagent-pull"),
            Some(KeyKind::Step {
                subtask: "Ab3dE5fG7hJk".into()
            })
        );
        assert_eq!(parse_key("Ab3dE5fG7hJkZZZZZZZZZZZZ"), None);
        assert_eq!(parse_key("<script>"), None);
        assert_eq!(parse_key("Ab3dE5fG7hJkZZZZZZZZZZZZ<x>"), None);
        assert_eq!(parse_key("ééééééééééééééé"), None);
    }
}
