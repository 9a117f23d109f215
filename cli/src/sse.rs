//! Server-Sent Events (pure parser) and the log records they carry.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event: String,
    pub data: String,
}

/// Feeds lines, answers an event at each blank line.
#[derive(Default)]
pub struct Parser {
    event: String,
    data: Vec<String>,
}

impl Parser {
    pub fn line(&mut self, line: &str) -> Option<Event> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            if self.data.is_empty() && self.event.is_empty() {
                return None;
            }
            let ev = Event {
                event: if self.event.is_empty() {
                    "message".into()
                } else {
                    std::mem::take(&mut self.event)
                },
                data: self.data.join("\n"),
            };
            self.data.clear();
            return Some(ev);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => self.data.push(value.to_string()),
            _ => {}
        }
        None
    }
}

/// One log record as the API sends it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub node: String,
    pub stream: String,
    pub text: String,
}

impl Record {
    pub fn from_json(v: &Value) -> Record {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        Record {
            seq: v["seq"].as_u64().unwrap_or(0),
            node: s("node"),
            stream: s("stream"),
            text: s("text"),
        }
    }

    /// `[node] text`, as the server's text format shows it.
    pub fn line(&self) -> String {
        if self.node.is_empty() {
            self.text.clone()
        } else {
            format!("[{}] {}", self.node, self.text)
        }
    }

    /// A node's end of one step: its exit status or failure.
    pub fn node_finished_step(&self) -> bool {
        !self.node.is_empty()
            && self.stream == "info"
            && (self.text.starts_with("exit code ")
                || self.text.starts_with("failed: ")
                || self.text.starts_with("finished without an exit code")
                || self.text.starts_with("not started: "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_at_blank_lines() {
        let mut p = Parser::default();
        let mut got = Vec::new();
        for l in [
            "id: 1\n",
            "event: message\n",
            "data: {\"seq\":1}\n",
            "\n",
            ": comment\n",
            "data: a\n",
            "data: b\r\n",
            "\n",
            "event: end\n",
            "data: {}\n",
            "\n",
            "\n",
        ] {
            got.extend(p.line(l));
        }
        assert_eq!(
            got,
            [
                Event {
                    event: "message".into(),
                    data: "{\"seq\":1}".into()
                },
                Event {
                    event: "message".into(),
                    data: "a\nb".into()
                },
                Event {
                    event: "end".into(),
                    data: "{}".into()
                },
            ]
        );
    }

    #[test]
    fn records_render_like_the_text_log() {
        let r = Record::from_json(
            &serde_json::json!({"seq": 3, "node": "web1", "stream": "info", "text": "exit code 0"}),
        );
        assert_eq!(r.line(), "[web1] exit code 0");
        assert!(r.node_finished_step());
        let r = Record::from_json(
            &serde_json::json!({"seq": 4, "node": "", "stream": "info", "text": "batch 1/2: a"}),
        );
        assert_eq!(r.line(), "batch 1/2: a");
        assert!(!r.node_finished_step());
    }
}
