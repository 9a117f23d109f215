//! Human output: aligned tables, plain words, colours only on a terminal
//! and never with NO_COLOR.

use serde_json::Value;

/// Colours on when standard output is a terminal and NO_COLOR is unset
/// (or empty, as no-color.org says).
pub fn color_wanted(is_tty: bool, no_color: Option<&str>) -> bool {
    is_tty && no_color.is_none_or(str::is_empty)
}

#[derive(Clone, Copy, Debug)]
pub struct Paint {
    pub on: bool,
}

impl Paint {
    fn wrap(self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    pub fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }

    pub fn green(self, s: &str) -> String {
        self.wrap("32", s)
    }

    pub fn red(self, s: &str) -> String {
        self.wrap("31", s)
    }

    pub fn yellow(self, s: &str) -> String {
        self.wrap("33", s)
    }

    /// A task or batch status in its colour.
    pub fn status(self, s: &str) -> String {
        match s {
            "success" => self.green(s),
            "fail" | "refuse" => self.red(s),
            "running" => self.yellow(s),
            _ => s.to_string(),
        }
    }
}

/// Removes ANSI escape sequences (for output that is not a terminal).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('[') => {
                chars.next();
                // CSI: parameters, then one final byte in @..~
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                chars.next();
                // OSC: up to BEL or ESC \
                while let Some(c) = chars.next() {
                    if c == '\x07' {
                        break;
                    }
                    if c == '\x1b' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    out
}

fn width(s: &str) -> usize {
    console::measure_text_width(s)
}

/// Columns aligned on display width; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>], paint: Paint) -> String {
    let n = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            widths[i] = widths[i].max(width(c));
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(widths[i].saturating_sub(width(c)) + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| paint.bold(h)).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.replace('\n', " "),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A horizontal bar of `value` out of `max`, `cols` wide at most.
pub fn bar(value: f64, max: f64, cols: usize) -> String {
    if max <= 0.0 || value <= 0.0 {
        return String::new();
    }
    let eighths = ((value / max) * cols as f64 * 8.0).round() as usize;
    let full = eighths / 8;
    let part = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"][eighths % 8];
    let s = "█".repeat(full) + part;
    if s.is_empty() {
        "▏".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(color_wanted(true, None));
        assert!(color_wanted(true, Some("")));
        assert!(!color_wanted(true, Some("1")));
        assert!(!color_wanted(false, None));
    }

    #[test]
    fn tables_align_on_display_width() {
        let t = table(
            &["NAME", "HOST"],
            &[
                vec!["web1".into(), "10.0.0.1".into()],
                vec!["wéb-long".into(), "-".into()],
            ],
            Paint { on: false },
        );
        assert_eq!(t, "NAME      HOST\nweb1      10.0.0.1\nwéb-long  -\n");
    }

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(strip_ansi("\x1b[31mred\x1b[0m plain"), "red plain");
        assert_eq!(strip_ansi("\x1b]0;title\x07x"), "x");
    }

    #[test]
    fn cells_and_bars() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(["a", "b"])), "a,b");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(bar(10.0, 10.0, 4), "████");
        assert_eq!(bar(5.0, 10.0, 4), "██");
        assert_eq!(bar(0.0, 10.0, 4), "");
        assert_eq!(bar(0.01, 10.0, 4), "▏");
    }
}
