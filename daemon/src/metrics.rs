//! In-memory counters for `GET /metrics` (since start), and the Prometheus
//! text rendering.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    /// (plugin, result) → (runs, seconds)
    steps: Mutex<BTreeMap<(String, String), (u64, f64)>>,
    /// (method, route pattern, code) → requests of known callers
    http: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Requests without valid credentials: one series, whatever they ask.
    unauthenticated: AtomicU64,
    /// webhook attempt outcome → attempts
    webhooks: Mutex<BTreeMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The router's route patterns (every `.at(…)` of `api/`, the catch-all
/// `*` aside; a test keeps the two lists equal). A request is labelled with
/// the pattern it matched, never with text of its path, so the number of
/// series is bounded by the API, not by what clients send.
pub const ROUTES: &[&str] = &[
    "/",
    "/api/jobx",
    "/approval/:projectid",
    "/approval/:projectid/:uuid",
    "/backup",
    "/flowline_version/:flowid",
    "/group/:projectid",
    "/group/:projectid/:id",
    "/group/:projectid/:id/node",
    "/group/:projectid/:name/byname",
    "/group/:projectid/:name/node/byname",
    "/group/:projectid/copy/byname",
    "/job/:projectid",
    "/job/:projectid/:name",
    "/log/:projectid",
    "/metrics",
    "/mon",
    "/monitor/metrics",
    "/node/:projectid",
    "/node/:projectid/:name",
    "/notify/deliveries",
    "/plugin/:type",
    "/plugin/:type/*rest",
    "/slave/:slave/log/:key",
    "/slave/:slave/ws",
    "/subtask/:projectid/:subtaskuuid/confirm",
    "/subtask/:projectid/:subtaskuuid/mystatus",
    "/subtask/:projectid/:taskuuid",
    "/task/:projectid",
    "/task/:projectid/:uuid",
    "/task/:projectid/:uuid/norollback",
    "/task/:projectid/:uuid/rollback",
    "/task/:projectid/analysis/date",
    "/task/:projectid/analysis/hour",
    "/task/:projectid/analysis/last",
    "/task/:projectid/analysis/runtime",
    "/task/:projectid/count",
    "/task/:projectid/job/byname",
    "/task/:projectid/total_count",
    "/task/flowline/status/:flowid/:version",
    "/third/interface/dry-run",
    "/third/interface/invoke",
    "/third/interface/query",
    "/third/interface/stop",
    "/third/option/groupname",
    "/ui",
    "/ui/",
    "/ui/:file",
    "/ui/api/group/:projectid/preview",
    "/ui/api/log/:projectid/:key",
    "/ui/api/projects",
    "/ui/api/task/:projectid/:uuid",
    "/ui/login",
    "/ui/logout",
    "/ui/session",
];

/// The label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// How well one pattern segment matched: a literal beats a parameter,
/// which beats a wildcard (the router's order of preference).
fn segment_rank(pattern_seg: &str) -> u8 {
    if pattern_seg.starts_with('*') {
        0
    } else if pattern_seg.starts_with(':') {
        1
    } else {
        2
    }
}

/// Whether `path` matches `pattern`; answers the per-segment ranks.
fn matches(pattern: &str, path: &str) -> Option<Vec<u8>> {
    let pat: Vec<&str> = pattern.split('/').skip(1).collect();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let mut ranks = Vec::with_capacity(pat.len());
    for (i, p) in pat.iter().enumerate() {
        if p.starts_with('*') {
            // One or more segments to the end.
            if i >= segs.len() || segs[i..].iter().all(|s| s.is_empty()) {
                return None;
            }
            ranks.push(0);
            return Some(ranks);
        }
        let s = segs.get(i)?;
        if p.starts_with(':') {
            if s.is_empty() {
                return None;
            }
        } else if p != s {
            return None;
        }
        ranks.push(segment_rank(p));
    }
    (segs.len() == pat.len()).then_some(ranks)
}

/// Where the same routes answer again for OPEN-C3's front end.
const OPENC3_PREFIX: &str = "/api/jobx";

fn pattern_of(path: &str) -> Option<&'static str> {
    ROUTES
        .iter()
        .filter_map(|p| matches(p, path).map(|r| (r, *p)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, p)| p)
}

/// The route pattern `path` matches (under OPEN-C3's prefix too), or
/// [`UNMATCHED`].
#[must_use]
pub fn route_label(path: &str) -> String {
    if let Some(p) = pattern_of(path) {
        return p.to_string();
    }
    match path.strip_prefix(OPENC3_PREFIX).and_then(pattern_of) {
        Some(p) => format!("{OPENC3_PREFIX}{p}"),
        None => UNMATCHED.to_string(),
    }
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

    /// An answered request of an authenticated caller.
    pub fn http(&self, method: &str, path: &str, code: u16) {
        let key = (method.to_string(), route_label(path), code);
        *lock(&self.http).entry(key).or_default() += 1;
    }

    /// An answered request without valid credentials.
    pub fn http_unauthenticated(&self) {
        self.unauthenticated.fetch_add(1, Ordering::Relaxed);
    }

    /// One webhook delivery attempt: delivered, retry, gave_up or dropped.
    pub fn webhook(&self, outcome: &str) {
        *lock(&self.webhooks).entry(outcome.to_string()).or_default() += 1;
    }

    /// Prometheus text format.
    pub fn render(
        &self,
        tasks: &[(String, u64)],
        waiting: u64,
        store_bytes: u64,
        log_bytes: u64,
    ) -> String {
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
        let _ = writeln!(s, "# HELP jobx_webhook_deliveries_total Webhook delivery attempts since start, by outcome.\n# TYPE jobx_webhook_deliveries_total counter");
        for (outcome, n) in lock(&self.webhooks).iter() {
            let _ = writeln!(
                s,
                "jobx_webhook_deliveries_total{{outcome=\"{}\"}} {n}",
                esc(outcome)
            );
        }
        let _ = writeln!(s, "# HELP jobx_http_unauthenticated_requests_total HTTP requests without valid credentials since start (not in jobx_http_requests_total).\n# TYPE jobx_http_unauthenticated_requests_total counter");
        let _ = writeln!(
            s,
            "jobx_http_unauthenticated_requests_total {}",
            self.unauthenticated.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP jobx_store_bytes Size of jobx.redb.\n# TYPE jobx_store_bytes gauge"
        );
        let _ = writeln!(s, "jobx_store_bytes {store_bytes}");
        let _ = writeln!(
            s,
            "# HELP jobx_store_log_bytes Bytes of the store that step logs occupy.\n# TYPE jobx_store_log_bytes gauge"
        );
        let _ = writeln!(s, "jobx_store_log_bytes {log_bytes}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_route_patterns() {
        assert_eq!(
            route_label("/task/10/Ab3dE5fG7hJk"),
            "/task/:projectid/:uuid"
        );
        assert_eq!(route_label("/task/10/count"), "/task/:projectid/count");
        assert_eq!(
            route_label("/task/10/analysis/hour"),
            "/task/:projectid/analysis/hour"
        );
        assert_eq!(route_label("/group/7/3/node"), "/group/:projectid/:id/node");
        assert_eq!(
            route_label("/slave/ops-1/log/Ab3dE5fG7hJk"),
            "/slave/:slave/log/:key"
        );
        assert_eq!(
            route_label("/plugin/agent-pull/poll/x/y"),
            "/plugin/:type/*rest"
        );
        assert_eq!(route_label("/plugin/agent-pull"), "/plugin/:type");
        assert_eq!(route_label("/"), "/");
        assert_eq!(route_label("/mon"), "/mon");
        assert_eq!(
            route_label("/api/jobx/task/10/count"),
            "/api/jobx/task/:projectid/count"
        );
        assert_eq!(route_label("/api/jobx/x7f3a"), UNMATCHED);
        for junk in [
            "/x7f3a",
            "/task",
            "/task/10/a/b/c/d",
            "/mon/x",
            "",
            "/plugin/",
            "/node//",
        ] {
            assert_eq!(route_label(junk), UNMATCHED, "{junk}");
        }
    }

    /// ROUTES lists exactly the patterns registered in `api/`.
    #[test]
    fn routes_match_the_router() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api");
        let mut found = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(dir).expect("src/api") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                for piece in text.split(".at(\"").skip(1) {
                    let pattern = piece.split('"').next().unwrap_or("");
                    if pattern != "*" {
                        found.insert(pattern.to_string());
                    }
                }
            }
        }
        let listed: std::collections::BTreeSet<String> =
            ROUTES.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            found, listed,
            "metrics::ROUTES and the registered routes differ"
        );
    }

    #[test]
    fn render_escapes_labels() {
        let m = Metrics::default();
        m.step("lo\"cal", true, 1.5);
        let out = m.render(&[("success".into(), 2)], 1, 4096, 1024);
        assert!(out.contains("jobx_tasks{status=\"success\"} 2"));
        assert!(out.contains("plugin=\"lo\\\"cal\""));
        assert!(out.contains("jobx_store_bytes 4096"));
        assert!(out.contains("jobx_store_log_bytes 1024"));
    }
}
