//! Rendering logs for people: text is HTML-escaped and ANSI colours become
//! our own markup, so log text can never become markup of its own. Written
//! into any `fmt::Write`, so a page can be streamed without copies.

use std::fmt::Write;

/// Escapes the five HTML-significant characters of `s` into `out`.
pub fn escape_into(out: &mut impl Write, s: &str) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        // ASCII bytes never sit inside a multi-byte character: `i` is a boundary.
        let _ = out.write_str(&s[start..i]);
        let _ = out.write_str(rep);
        start = i + 1;
    }
    let _ = out.write_str(&s[start..]);
}

/// Escapes the five HTML-significant characters.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

fn colour(code: u32) -> Option<&'static str> {
    Some(match code {
        30 | 90 => "#666",
        31 | 91 => "#e55",
        32 | 92 => "#5c5",
        33 | 93 => "#db3",
        34 | 94 => "#58f",
        35 | 95 => "#c6c",
        36 | 96 => "#3cc",
        37 | 97 => "#ddd",
        _ => return None,
    })
}

/// Writes `s` escaped into `out`, with SGR colour sequences (`ESC[31m`,
/// `ESC[1;32m`, `ESC[0m`) turned into spans; other escape sequences are
/// dropped. The text between sequences is escaped, the spans are ours, so
/// log text can never become markup. One pass, no copy of `s`.
pub fn ansi_into(out: &mut impl Write, s: &str) {
    let mut open = 0usize;
    let mut rest = s;
    while let Some(i) = rest.find('\u{1b}') {
        escape_into(out, &rest[..i]);
        rest = &rest[i + 1..];
        if !rest.starts_with('[') {
            continue;
        }
        let body_end = rest[1..].find(|c: char| c.is_ascii_alphabetic());
        let Some(end) = body_end else {
            rest = "";
            break;
        };
        let params = &rest[1..1 + end];
        let cmd = rest.as_bytes()[1 + end];
        rest = &rest[2 + end..];
        if cmd != b'm' {
            continue;
        }
        for p in params.split(';') {
            let code: u32 = p.parse().unwrap_or(0);
            if code == 0 {
                while open > 0 {
                    let _ = out.write_str("</span>");
                    open -= 1;
                }
            } else if code == 1 {
                let _ = out.write_str("<span style=\"font-weight:bold\">");
                open += 1;
            } else if let Some(c) = colour(code) {
                let _ = write!(out, "<span style=\"color:{c}\">");
                open += 1;
            }
        }
    }
    escape_into(out, rest);
    for _ in 0..open {
        let _ = out.write_str("</span>");
    }
}

/// [`ansi_into`] into a new string.
pub fn ansi_to_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    ansi_into(&mut out, s);
    out
}

/// The live log page, written in three parts so that it can be streamed:
/// [`page::head`], one [`page::record`] per record, then [`page::tail`],
/// whose script follows the SSE stream for records that come later.
pub mod page {
    use super::{ansi_into, escape_into, html_escape};
    use std::fmt::Write;

    /// Everything before the first record. `title` is escaped here.
    /// `state` (escaped here) says how the work stands: "running", or its
    /// final status and reason.
    pub fn head(title: &str, state: &str) -> String {
        let title = html_escape(title);
        let state = html_escape(state);
        format!(
            r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{background:#111;color:#ddd;font:13px monospace;margin:1em}} .stderr{{color:#f99}} .info{{color:#9cf}} div{{white-space:pre-wrap}}</style>
</head><body><h3>{title} <small id="state">{state}</small></h3>
<div id="log">"#
        )
    }

    /// One record, `[node] text` (the node left out when empty): escaped,
    /// then coloured, written straight into `out`.
    pub fn record(out: &mut impl Write, stream: &str, node: &str, text: &str) {
        let _ = out.write_str("<div class=\"");
        escape_into(out, stream);
        let _ = out.write_str("\">");
        if !node.is_empty() {
            // Node names hold no control characters: no sequence starts here.
            let _ = out.write_str("[");
            escape_into(out, node);
            let _ = out.write_str("] ");
        }
        ansi_into(out, text);
        let _ = out.write_str("</div>");
    }

    /// Everything after the last record; `sse_url` (escaped here) continues
    /// after it while the work runs.
    pub fn tail(sse_url: &str, completed: bool) -> String {
        let sse = html_escape(sse_url);
        let follow = if completed {
            ""
        } else {
            r#"<script>
const log = document.getElementById('log');
const src = new EventSource(document.getElementById('follow').dataset.sse);
src.onmessage = (e) => {
  const r = JSON.parse(e.data);
  const line = document.createElement('div');
  line.className = r.stream;
  line.innerHTML = r.html;
  log.appendChild(line);
  window.scrollTo(0, document.body.scrollHeight);
};
src.addEventListener('end', (e) => { src.close(); let st = 'finished'; try { st = JSON.parse(e.data).state || st; } catch (_) {} document.getElementById('state').textContent = st; });
</script>"#
        };
        format!(
            r#"</div>
<div id="follow" data-sse="{sse}" hidden></div>
{follow}
</body></html>
"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_before_colouring() {
        assert_eq!(
            html_escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        let h = ansi_to_html("\u{1b}[31m<b>red</b>\u{1b}[0m ok");
        assert_eq!(
            h,
            "<span style=\"color:#e55\">&lt;b&gt;red&lt;/b&gt;</span> ok"
        );
    }

    #[test]
    fn unclosed_and_unknown_sequences() {
        assert_eq!(
            ansi_to_html("\u{1b}[1;32mgo"),
            "<span style=\"font-weight:bold\"><span style=\"color:#5c5\">go</span></span>"
        );
        assert_eq!(ansi_to_html("a\u{1b}[2Kb"), "ab");
        assert_eq!(ansi_to_html("a\u{1b}[12"), "a");
        assert_eq!(ansi_to_html("a\u{1b}b"), "ab");
    }

    #[test]
    fn page_in_parts() {
        let mut body = String::new();
        page::record(&mut body, "stderr\"x", "", "<b>\u{1b}[32mok\u{1b}[0m");
        assert_eq!(
            body,
            "<div class=\"stderr&quot;x\">&lt;b&gt;<span style=\"color:#5c5\">ok</span></div>"
        );
        body.clear();
        page::record(&mut body, "stdout", "n<1>", "\u{1b}[1mé'");
        assert_eq!(
            body,
            "<div class=\"stdout\">[n&lt;1&gt;] <span style=\"font-weight:bold\">é&#39;</span></div>"
        );
        let head = page::head("log <1>", "running");
        assert!(head.contains("<title>log &lt;1&gt;</title>"));
        assert!(head.contains(">running</small>"));
        assert!(head.ends_with("<div id=\"log\">"));
        let tail = page::tail("/slave/a/log/k?format=sse&offset=3", false);
        assert!(tail.starts_with("</div>"));
        assert!(tail.contains("data-sse=\"/slave/a/log/k?format=sse&amp;offset=3\""));
        assert!(tail.contains("EventSource"));
        assert!(!page::tail("/x", true).contains("<script>"));
        assert!(page::head("t", "finished: fail (batch 1 failed)")
            .contains(">finished: fail (batch 1 failed)</small>"));
        assert!(page::head("t", "<b>").contains(">&lt;b&gt;</small>"));
    }
}
