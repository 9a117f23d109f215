//! Step logs: keys, a group-committing writer, and rendering.
//!
//! Records go to the store in batches (every ~50 ms or 256 KiB), so step
//! output never costs an fsync per line. Each record is written under the
//! three keys of docs/semantics.md §7: the task, the batch, and the batch's step.

mod render;
mod writer;

pub use render::{ansi_to_html, html_escape, page};
pub use writer::LogWriter;

/// The keys a step's records are written under.
#[derive(Clone, Debug)]
pub struct Keys {
    pub task: String,
    pub subtask: String,
    /// subtask uuid + step uuid + plugin type.
    pub step: String,
}

impl Keys {
    pub fn new(task: &str, subtask: &str, step: &str, plugin: &str) -> Keys {
        Keys {
            task: task.to_string(),
            subtask: subtask.to_string(),
            step: format!("{subtask}{step}{plugin}"),
        }
    }

    /// Keys for records that belong to a batch but no step.
    pub fn batch(task: &str, subtask: &str) -> Keys {
        Keys {
            task: task.to_string(),
            subtask: subtask.to_string(),
            step: String::new(),
        }
    }

    /// Keys for records of the whole task (stop, finish, decisions).
    pub fn task(task: &str) -> Keys {
        Keys {
            task: task.to_string(),
            subtask: String::new(),
            step: String::new(),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &str> {
        [
            self.task.as_str(),
            self.subtask.as_str(),
            self.step.as_str(),
        ]
        .into_iter()
        .filter(|k| !k.is_empty())
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
