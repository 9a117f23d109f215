//! OPEN-C3 sign-in. A request that carries OPEN-C3's session cookie and no
//! other credentials is resolved the way OPEN-C3's JOBX resolves it, through
//! the Connector:
//!
//! - `GET /connectorx/username?cookie=<c>` → `{stat:true, data:{user, company}}`
//!   (`user` null once the session has expired);
//! - `GET /connectorx/point?point=openc3_jobx_<x>&treeid=<project>&cookie=<c>`
//!   → `{stat:true, data: 1 | 0}`.
//!
//! The caller becomes a `Principal` (`Via::OpenC3`) holding exactly the role
//! that the point confirmed, on the project of the path only; rights on other
//! projects are asked for when a handler needs them (`authorize_on`).
//! Answers are cached for `cache_ttl_secs`.

use super::*;
use crate::auth::Via;
use crate::config::OpenC3Auth;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most; beyond, expired ones go, then everything.
const MAX_CACHED: usize = 10_000;
/// Largest Connector answer read.
const MAX_ANSWER: u64 = 64 * 1024;

const READ: &str = "openc3_jobx_read";
const WRITE: &str = "openc3_jobx_write";
const DELETE: &str = "openc3_jobx_delete";
const CONTROL: &str = "openc3_jobx_control";

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    User([u8; 32]),
    Point([u8; 32], u64, &'static str),
}

#[derive(Clone)]
enum Answer {
    User(Option<String>),
    Point(bool),
}

/// The Connector client with its short-lived cache.
pub struct Connector {
    cfg: OpenC3Auth,
    host: String,
    port: u16,
    prefix: String,
    cache: Mutex<HashMap<Key, (Instant, Answer)>>,
}

/// What a cookie sign-in leaves on the request, for rights asked later.
#[derive(Clone)]
pub struct Session {
    cookie: String,
    connector: Arc<Connector>,
}

fn digest(cookie: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(cookie.as_bytes()).into()
}

impl Connector {
    pub fn new(cfg: &OpenC3Auth) -> Option<Connector> {
        let (host, port, prefix) = cfg.connector_addr()?;
        Some(Connector {
            cfg: cfg.clone(),
            host,
            port,
            prefix,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, k: &Key) -> Option<Answer> {
        let ttl = Duration::from_secs(self.cfg.cache_ttl_secs);
        let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.get(k)
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, a)| a.clone())
    }

    fn remember(&self, k: Key, a: Answer) {
        if self.cfg.cache_ttl_secs == 0 {
            return;
        }
        let ttl = Duration::from_secs(self.cfg.cache_ttl_secs);
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= MAX_CACHED {
            c.retain(|_, (at, _)| at.elapsed() < ttl);
            if c.len() >= MAX_CACHED {
                c.clear();
            }
        }
        c.insert(k, (Instant::now(), a));
    }

    /// One GET to the Connector, answered as JSON with `stat: true`.
    async fn call(&self, path_and_query: String) -> std::result::Result<Value, String> {
        // An IPv6 address is bracketed in a URL.
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let url = format!(
            "http://{host}:{}{}{}",
            self.port, self.prefix, path_and_query
        );
        let url = tide::http::Url::parse(&url).map_err(|e| format!("bad URL {url}: {e}"))?;
        let mut rq = tide::http::Request::new(tide::http::Method::Get, url);
        rq.insert_header("accept", "application/json");
        let addr = (self.host.clone(), self.port);
        let exchange = async {
            let stream = async_std::net::TcpStream::connect((addr.0.as_str(), addr.1))
                .await
                .map_err(|e| format!("connect {}:{}: {e}", addr.0, addr.1))?;
            let mut resp = async_h1::connect(stream, rq)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = resp.status();
            let mut buf = Vec::new();
            resp.take_body()
                .into_reader()
                .take(MAX_ANSWER)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| format!("reading answer: {e}"))?;
            if !status.is_success() {
                return Err(format!("answered HTTP {status}"));
            }
            serde_json::from_slice::<Value>(&buf).map_err(|_| "answer is not JSON".to_string())
        };
        let timeout = Duration::from_secs(self.cfg.timeout_secs);
        let v = exchange
            .or(async {
                async_io::Timer::after(timeout).await;
                Err(format!("no answer within {} s", timeout.as_secs()))
            })
            .await?;
        if v["stat"] != Value::Bool(true) {
            let info = v["info"].as_str().unwrap_or("stat is not true");
            return Err(format!("refused the call: {info}"));
        }
        Ok(v)
    }

    fn enc(s: &str) -> String {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    /// The signed-in user of a cookie; None when the session is unknown or expired.
    pub async fn username(&self, cookie: &str) -> std::result::Result<Option<String>, String> {
        let k = Key::User(digest(cookie));
        if let Some(Answer::User(u)) = self.cached(&k) {
            return Ok(u);
        }
        let v = self
            .call(format!("/connectorx/username?cookie={}", Self::enc(cookie)))
            .await?;
        let user = v["data"]["user"]
            .as_str()
            .or_else(|| v["data"].as_str())
            .filter(|u| !u.is_empty())
            .map(String::from);
        self.remember(k, Answer::User(user.clone()));
        Ok(user)
    }

    /// Whether the cookie's user holds `point` on `project`.
    pub async fn point(
        &self,
        cookie: &str,
        project: u64,
        point: &'static str,
    ) -> std::result::Result<bool, String> {
        let k = Key::Point(digest(cookie), project, point);
        if let Some(Answer::Point(b)) = self.cached(&k) {
            return Ok(b);
        }
        let v = self
            .call(format!(
                "/connectorx/point?point={point}&treeid={project}&cookie={}",
                Self::enc(cookie)
            ))
            .await?;
        // The original treats any true value as granted (1, "1", true).
        let granted = match &v["data"] {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Value::String(s) => !s.is_empty() && s != "0",
            _ => false,
        };
        self.remember(k, Answer::Point(granted));
        Ok(granted)
    }
}

/// The path without OPEN-C3's `/api/jobx` prefix.
pub fn strip_prefix(path: &str) -> &str {
    match path.strip_prefix("/api/jobx") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => path,
    }
}

/// The project a path is about (`/<kind>/<projectid>/…`), if any.
pub fn path_project(path: &str) -> Option<u64> {
    let mut segs = strip_prefix(path).trim_start_matches('/').split('/');
    let kind = segs.next()?;
    let pid = segs.next()?;
    let known = matches!(
        kind,
        "group" | "task" | "subtask" | "node" | "job" | "approval" | "log"
    );
    if !known || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// The point the original checks for a call, and the jobx role it stands for.
pub fn needed(method: &str, path: &str) -> (&'static str, Role) {
    let path = strip_prefix(path).trim_start_matches('/');
    let kind = path.split('/').next().unwrap_or("");
    match (method, kind) {
        ("GET" | "HEAD", _) => (READ, Role::Read),
        // An approver decides with read rights; the approver list is checked by the call.
        ("PUT", "approval") => (READ, Role::Read),
        ("DELETE", "group" | "node" | "job") => (DELETE, Role::Write),
        ("PUT" | "DELETE", "task" | "subtask") => (CONTROL, Role::Control),
        _ => (WRITE, Role::Write),
    }
}

/// The point that stands for a jobx role; OPEN-C3 has none for admin.
fn point_of(role: Role) -> Option<&'static str> {
    match role {
        Role::Read => Some(READ),
        Role::Write => Some(WRITE),
        Role::Control => Some(CONTROL),
        Role::Admin => None,
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == name && !v.is_empty()).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Routes that never take a cookie sign-in: health, the console, plugins.
fn exempt(path: &str) -> bool {
    let p = strip_prefix(path);
    p == "/mon" || p == "/ui" || p.starts_with("/ui/") || p.starts_with("/plugin/")
}

fn has_other_credentials(req: &Req) -> bool {
    req.header("authorization").is_some()
        || (req.header("appname").is_some() && req.header("appkey").is_some())
        || req
            .header("cookie")
            .is_some_and(|c| cookie_value(c.last().as_str(), "jobx_session").is_some())
}

fn bad_gateway(e: &str) -> tide::Response {
    log::warn!("OPEN-C3 connector: {e}");
    json_response(
        502,
        &json!({"stat": false, "info": format!("OPEN-C3 connector: {e}")}),
    )
}

/// The middleware: resolves the cookie and attaches the `Principal`.
pub struct CookieSignIn(pub Arc<Connector>);

#[tide::utils::async_trait]
impl tide::Middleware<Arc<App>> for CookieSignIn {
    async fn handle(&self, mut req: Req, next: tide::Next<'_, Arc<App>>) -> tide::Result {
        let path = req.url().path().to_string();
        if exempt(&path) || has_other_credentials(&req) {
            return Ok(next.run(req).await);
        }
        let name = &self.0.cfg.cookie;
        let Some(cookie) = req
            .header("cookie")
            .and_then(|c| c.iter().find_map(|v| cookie_value(v.as_str(), name)))
        else {
            return Ok(next.run(req).await);
        };
        // The browser says when another site sent the request: a cookie is
        // no credential then (OPEN-C3's proxy allows any origin with credentials).
        if req
            .header("sec-fetch-site")
            .is_some_and(|s| s.last().as_str() == "cross-site")
        {
            return Ok(render(Err(Error::Forbidden(
                "cross-site request refused".into(),
            ))));
        }
        let user = match self.0.username(&cookie).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                return Ok(render(Err(Error::Unauthorized(
                    "the OPEN-C3 sign-in is unknown or has expired; sign in again".into(),
                ))))
            }
            Err(e) => return Ok(bad_gateway(&e)),
        };
        let mut who = Principal::signed_in(&user, Via::OpenC3);
        if let Some(pid) = path_project(&path) {
            let (point, role) = needed(req.method().as_ref(), &path);
            match self.0.point(&cookie, pid, point).await {
                Ok(true) => who = who.grant(pid, role),
                Ok(false) => {}
                Err(e) => return Ok(bad_gateway(&e)),
            }
        }
        req.set_ext(who);
        req.set_ext(Session {
            cookie,
            connector: self.0.clone(),
        });
        Ok(next.run(req).await)
    }
}

/// The caller, holding `need` on `project` — a project that may not be the
/// one of the path (a copy's other end, the task behind a log). A cookie
/// sign-in asks the Connector for that project's point.
pub async fn authorize_on(req: &Req, project: u64, need: Role) -> Result<Principal> {
    let who = principal(req)?;
    if who.may(project, need) {
        return Ok(who);
    }
    let session = req.ext::<Session>().cloned();
    if let (Via::OpenC3, Some(s), Some(point)) = (who.via, session, point_of(need)) {
        let granted = s
            .connector
            .point(&s.cookie, project, point)
            .await
            .map_err(|e| Error::Internal(format!("OPEN-C3 connector: {e}")))?;
        if granted {
            return Ok(who.grant(project, need));
        }
    }
    authorize(who, project, need)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_and_points_of_paths() {
        assert_eq!(path_project("/api/jobx/group/12/3"), Some(12));
        assert_eq!(path_project("/task/7"), Some(7));
        assert_eq!(path_project("/task/flowline/status/1/2"), None);
        assert_eq!(path_project("/monitor/metrics"), None);
        assert_eq!(path_project("/api/jobxgroup/1"), None);
        assert_eq!(needed("GET", "/api/jobx/task/1"), (READ, Role::Read));
        assert_eq!(needed("DELETE", "/group/1/x/byname"), (DELETE, Role::Write));
        assert_eq!(needed("DELETE", "/task/1/abc"), (CONTROL, Role::Control));
        assert_eq!(
            needed("PUT", "/api/jobx/subtask/1/u/confirm"),
            (CONTROL, Role::Control)
        );
        assert_eq!(needed("POST", "/task/1/job/byname"), (WRITE, Role::Write));
        assert_eq!(needed("PUT", "/approval/1/u"), (READ, Role::Read));
    }

    #[test]
    fn cookies_by_name() {
        assert_eq!(
            cookie_value("a=1; sid=XyZ==; b=2", "sid"),
            Some("XyZ==".into())
        );
        assert_eq!(cookie_value("sidx=1", "sid"), None);
        assert_eq!(cookie_value("sid=", "sid"), None);
        assert_eq!(cookie_value("sid=\"q\"", "sid"), Some("q".into()));
    }

    #[test]
    fn prefix_only_as_a_whole_segment() {
        assert_eq!(strip_prefix("/api/jobx/task/1"), "/task/1");
        assert_eq!(strip_prefix("/api/jobxx"), "/api/jobxx");
        assert!(exempt("/api/jobx/mon"));
        assert!(!exempt("/task/1"));
    }
}
