//! In-memory counters for `GET /metrics` (since start), and the Prometheus
//! text rendering.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    /// (plugin, result) → (runs, seconds)
    steps: Mutex<BTreeMap<(String, String), (u64, f64)>>,
    /// (method, route, code) → requests
    http: Mutex<BTreeMap<(String, String, u16), u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A route label without ids: numbers become `:id`, 12-character uuids
/// `:uuid`, anything after a log key or plugin type is folded, so the number
/// of label values stays small.
pub fn route_label(path: &str) -> String {
    let mut out = String::new();
    let first = path.split('/').find(|s| !s.is_empty()).unwrap_or("");
    let folded = first == "slave" || first == "plugin";
    for (i, seg) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        out.push('/');
        if folded && i >= 1 {
            out.push_str(if i == 1 { ":name" } else { "…" });
            if i >= 2 {
                break;
            }
            continue;
        }
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(":id");
        } else if crate::ids::is_uuid(seg) && !matches!(seg, "subtask" | "approval") {
            out.push_str(":uuid");
        } else if seg.len() > 32 {
            out.push('…');
        } else {
            out.push_str(seg);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

impl Metrics {
    pub fn step(&self, plugin: &str, ok: bool, seconds: f64) {
        let key = (
            plugin.to_string(),
            if ok { "success" } else { "fail" }.to_string(),
        );
        let mut m = lock(&self.steps);
        let e = m.entry(key).or_default();
        e.0 += 1;
        e.1 += seconds;
    }

    pub fn http(&self, method: &str, path: &str, code: u16) {
        let key = (method.to_string(), route_label(path), code);
        *lock(&self.http).entry(key).or_default() += 1;
    }

    /// Prometheus text format.
    pub fn render(&self, tasks: &[(String, u64)], waiting: u64, store_bytes: u64) -> String {
        let mut s = String::new();
        let esc = |v: &str| {
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let _ = writeln!(
            s,
            "# HELP jobx_tasks Tasks by status.\n# TYPE jobx_tasks gauge"
        );
        for (status, n) in tasks {
            let _ = writeln!(s, "jobx_tasks{{status=\"{}\"}} {n}", esc(status));
        }
        let _ = writeln!(s, "# HELP jobx_batches_waiting_confirmation Batches in WaitConfirm.\n# TYPE jobx_batches_waiting_confirmation gauge");
        let _ = writeln!(s, "jobx_batches_waiting_confirmation {waiting}");
        let _ = writeln!(s, "# HELP jobx_step_runs_total Step runs on nodes since start.\n# TYPE jobx_step_runs_total counter");
        let steps = lock(&self.steps).clone();
        for ((p, r), (n, _)) in &steps {
            let _ = writeln!(
                s,
                "jobx_step_runs_total{{plugin=\"{}\",result=\"{}\"}} {n}",
                esc(p),
                esc(r)
            );
        }
        let _ = writeln!(s, "# HELP jobx_step_duration_seconds_sum Time spent in step runs.\n# TYPE jobx_step_duration_seconds_sum counter");
        let mut per_plugin: BTreeMap<&str, f64> = BTreeMap::new();
        for ((p, _), (_, secs)) in &steps {
            *per_plugin.entry(p).or_default() += secs;
        }
        for (p, secs) in per_plugin {
            let _ = writeln!(
                s,
                "jobx_step_duration_seconds_sum{{plugin=\"{}\"}} {secs:.3}",
                esc(p)
            );
        }
        let _ = writeln!(s, "# HELP jobx_http_requests_total HTTP requests since start.\n# TYPE jobx_http_requests_total counter");
        for ((m, r, c), n) in lock(&self.http).iter() {
            let _ = writeln!(
                s,
                "jobx_http_requests_total{{method=\"{}\",route=\"{}\",code=\"{c}\"}} {n}",
                esc(m),
                esc(r)
            );
        }
        let _ = writeln!(
            s,
            "# HELP jobx_store_bytes Size of jobx.redb.\n# TYPE jobx_store_bytes gauge"
        );
        let _ = writeln!(s, "jobx_store_bytes {store_bytes}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fold_ids() {
        assert_eq!(route_label("/task/10/Ab3dE5fG7hJk"), "/task/:id/:uuid");
        assert_eq!(route_label("/group/7/3/node"), "/group/:id/:id/node");
        assert_eq!(
            route_label("/slave/ops-1/log/Ab3dE5fG7hJk"),
            "/slave/:name/…"
        );
        assert_eq!(route_label("/"), "/");
    }

    #[test]
    fn render_escapes_labels() {
        let m = Metrics::default();
        m.step("lo\"cal", true, 1.5);
        let out = m.render(&[("success".into(), 2)], 1, 4096);
        assert!(out.contains("jobx_tasks{status=\"success\"} 2"));
        assert!(out.contains("plugin=\"lo\\\"cal\""));
        assert!(out.contains("jobx_store_bytes 4096"));
    }
}
