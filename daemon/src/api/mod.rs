//! HTTP routes (tide). Handlers are thin: parse, authorize, call, render.
//! Everything tide-specific stays in this module.

mod backup;
mod console;
mod inventory;
mod notify;
mod openc3;
mod openc3_auth;
mod plugin_http;
mod stats;
mod stream;
mod tasks;
mod third;
mod ws;

use crate::auth::{Principal, Role};
use crate::error::{Error, Result};
use crate::state::App;
use futures_lite::{AsyncReadExt, FutureExt};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use tide::http::mime;

pub type Req = tide::Request<Arc<App>>;

/// What a handler answers.
pub enum Reply {
    /// `{"stat": true, "data": …}`
    Data(Value),
    /// A complete JSON body (calls that add `uuid`, `info`, `msg`).
    Body(Value),
    /// Plain text.
    Text(String),
}

fn json_response(status: u16, body: &Value) -> tide::Response {
    let mut r = tide::Response::new(status);
    r.set_content_type(mime::JSON);
    r.set_body(body.to_string());
    r
}

pub fn render(result: Result<Reply>) -> tide::Response {
    match result {
        Ok(Reply::Data(d)) => json_response(200, &json!({"stat": true, "data": d})),
        Ok(Reply::Body(b)) => json_response(200, &b),
        Ok(Reply::Text(t)) => {
            let mut r = tide::Response::new(200);
            r.set_content_type(mime::PLAIN);
            r.set_body(t);
            r
        }
        Err(e) => {
            if let Error::Internal(m) = &e {
                log::error!("internal error: {m}");
            }
            json_response(e.status(), &json!({"stat": false, "info": e.message()}))
        }
    }
}

/// Adapts an `async fn(Req) -> Result<Reply>` into a tide endpoint.
fn h<F, Fut>(f: F) -> impl tide::Endpoint<Arc<App>>
where
    F: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply>> + Send + 'static,
{
    move |req: Req| {
        let f = f.clone();
        async move { Ok(render(f(req).await)) }
    }
}

/// The caller's identity from `Authorization: Bearer`, `appname` + `appkey`,
/// or the console's session cookie.
pub fn principal(req: &Req) -> Result<Principal> {
    // Put there by a middleware that signed the caller in (OPEN-C3's cookie).
    if let Some(p) = req.ext::<Principal>() {
        return Ok(p.clone());
    }
    let tokens = req.state().tokens();
    if let Some(auth) = req.header("authorization") {
        let v = auth.last().as_str();
        // Browsers (the live log page) authenticate with Basic: token name as
        // user, token as password; they resend it on the page's SSE request.
        if let Some(b64) = v
            .strip_prefix("Basic ")
            .or_else(|| v.strip_prefix("basic "))
        {
            let (name, token) = crate::auth::basic_credentials(b64.trim())
                .ok_or_else(|| Error::Unauthorized("malformed Basic credentials".into()))?;
            return tokens
                .check_named(&name, &token)
                .ok_or_else(|| Error::Unauthorized("unknown token name or token".into()));
        }
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .ok_or_else(|| {
                Error::Unauthorized("Authorization must be \"Bearer <token>\"".into())
            })?;
        return tokens
            .check(token.trim())
            .ok_or_else(|| Error::Unauthorized("unknown token".into()));
    }
    match (req.header("appname"), req.header("appkey")) {
        (Some(name), Some(key)) => tokens
            .check_named(name.last().as_str(), key.last().as_str())
            .ok_or_else(|| Error::Unauthorized("unknown appname/appkey".into())),
        // The console's session cookie (writes need its CSRF token).
        _ => console::from_cookie(req),
    }
}

/// Checks that an authenticated caller holds `need` on `project`.
pub fn authorize(p: Principal, project: u64, need: Role) -> Result<Principal> {
    if p.may(project, need) {
        Ok(p)
    } else {
        Err(Error::Forbidden(format!(
            "token {:?} needs the {} role on project {project}",
            p.name,
            need.as_str()
        )))
    }
}

/// Parses a project id from the text given (path or body).
pub fn parse_project(s: &str) -> Result<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Bad(format!(
            "projectid: {s:?} is not a project id (digits)"
        )));
    }
    s.parse()
        .map_err(|_| Error::Bad(format!("projectid: {s:?} is too large")))
}

/// A path parameter, percent-decoded (names may hold spaces, `/`, UTF-8);
/// `projectid` is taken as written (`^\d+$`, so `%31` is no project id).
pub fn param(req: &Req, name: &str) -> Result<String> {
    let raw = req
        .param(name)
        .map_err(|_| Error::Bad(format!("{name}: missing in path")))?;
    if name == "projectid" {
        return Ok(raw.to_string());
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(String::from)
        .map_err(|_| Error::Bad(format!("{name}: {raw:?} is not UTF-8 once decoded")))
}

/// `:projectid` of the path, authorized for `need`.
pub fn project(req: &Req, need: Role) -> Result<(u64, Principal)> {
    // Who is asking comes first: without a valid token the answer is 401,
    // whatever the rest of the request looks like.
    let p = principal(req)?;
    let pid = parse_project(&param(req, "projectid")?)?;
    Ok((pid, authorize(p, pid, need)?))
}

/// The query string as a map (last value wins).
pub fn query(req: &Req) -> Result<BTreeMap<String, String>> {
    let q = req.url().query().unwrap_or("");
    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .map(|v| v.into_iter().collect())
        .map_err(|e| Error::Bad(format!("query string: {e}")))
}

/// A count from the query string (`limit`, `max`): `default` when absent,
/// else 1 to `max`, or a 400 naming the parameter.
pub fn query_count(
    q: &BTreeMap<String, String>,
    key: &str,
    default: usize,
    max: usize,
) -> Result<usize> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Error::Bad(format!("{key}: must be 1 to {max}"))),
        },
    }
}

/// `offset` of a log page: 0 when absent.
pub fn query_offset(q: &BTreeMap<String, String>) -> Result<u64> {
    q.get("offset").map_or(Ok(0), |o| {
        o.parse::<u64>()
            .map_err(|_| Error::Bad("offset: must be a number".into()))
    })
}

/// Reads the request body (already read and capped by `ReadBody`) as a JSON
/// object; flat form bodies become an object of strings.
pub async fn body(req: &mut Req) -> Result<Map<String, Value>> {
    let is_form = req
        .content_type()
        .is_some_and(|m| m.essence() == "application/x-www-form-urlencoded");
    let buf = req
        .body_bytes()
        .await
        .map_err(|e| Error::Bad(format!("reading body: {e}")))?;
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    // curl -d labels JSON as a form; a body that starts with `{` is JSON whatever the label says.
    let looks_json = buf.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if is_form && !looks_json {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&buf)
            .map_err(|e| Error::Bad(format!("form body: {e}")))?;
        return Ok(pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect());
    }
    match serde_json::from_slice::<Value>(&buf) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::Bad("body: must be a JSON object".into())),
        Err(e) => Err(Error::Bad(format!("body: invalid JSON: {e}"))),
    }
}

/// A string field of a body: missing → None, wrong type → 400 naming it.
pub fn opt_str(b: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::Bad(format!("{key}: must be a string"))),
    }
}

/// Refuses a field of one of jobx's own bodies that it does not know
/// (`at` names where the object sits, empty for the body itself).
pub fn known_fields(b: &Map<String, Value>, known: &[&str], at: &str) -> Result<()> {
    crate::fields::check_known(b, known, at).map_err(Error::Bad)
}

pub fn req_str(b: &Map<String, Value>, key: &str) -> Result<String> {
    opt_str(b, key)?.ok_or_else(|| Error::Bad(format!("{key}: missing")))
}

async fn mon(req: Req) -> Result<Reply> {
    let app = req.state().clone();
    if app.store.ping() {
        Ok(Reply::Text("ok".into()))
    } else {
        Err(Error::Internal("store does not answer".into()))
    }
}

async fn metrics(req: Req) -> Result<Reply> {
    let app = req.state().clone();
    if !app.config.server.public_metrics {
        principal(&req)?;
    }
    let a2 = app.clone();
    let (tasks, waiting, log_bytes) = blocking::unblock(move || {
        Ok::<_, Error>((
            a2.store.task_status_counts()?,
            a2.engine.waiting_batches()?,
            a2.store.log_bytes()?,
        ))
    })
    .await?;
    let size = std::fs::metadata(app.store.path())
        .map(|m| m.len())
        .unwrap_or(0);
    Ok(Reply::Text(
        app.engine.metrics.render(&tasks, waiting, size, log_bytes),
    ))
}

/// Routes that check their callers themselves: health checks, plugins'
/// routes (agents use their own tokens), the console's sign-in form.
fn authenticates_itself(path: &str) -> bool {
    let path = openc3_auth::strip_prefix(path);
    path == "/mon" || path == "/ui/login" || path == "/plugin" || path.starts_with("/plugin/")
}

/// Set on a response when its request came from a known caller (metrics
/// count only those by route).
#[derive(Clone, Copy)]
struct Known;

/// An answer given before the body was read: the connection is closed,
/// since the unread body would be taken for the next request.
fn early(mut r: tide::Response) -> tide::Result {
    r.insert_header("connection", "close");
    Ok(r)
}

/// Request limits, then every body read up front:
/// - a request that announces a body is authenticated from its headers
///   first; without valid credentials it is a 401 and the body is never read
///   (except on routes that authenticate themselves);
/// - the body must arrive within `server.body_timeout` (408) and fit in
///   `server.max_body_bytes` (413).
///
/// A handler that answers without reading the body would leave its bytes on
/// a kept-alive connection, where they would be taken for the next request;
/// and the limits then hold for every route, plugins' included.
struct ReadBody;

#[tide::utils::async_trait]
impl tide::Middleware<Arc<App>> for ReadBody {
    async fn handle(&self, mut req: Req, next: tide::Next<'_, Arc<App>>) -> tide::Result {
        let limits = &req.state().config.server;
        let (max, timeout) = (limits.max_body_bytes, limits.body_timeout);
        let own_auth = authenticates_itself(req.url().path());
        let caller = principal(&req);
        let announced =
            req.len().is_some_and(|n| n > 0) || req.header("transfer-encoding").is_some();
        if announced && !own_auth {
            if let Err(e) = caller {
                return early(render(Err(e)));
            }
        }
        if req.len().is_some_and(|n| n > max) {
            return early(render(Err(Error::TooLarge(format!(
                "request body larger than {max} bytes (server.max_body_bytes)"
            )))));
        }
        let mut buf = Vec::new();
        let mut reader = req.take_body().into_reader().take(max as u64 + 1);
        let read = async { Some(reader.read_to_end(&mut buf).await) }
            .or(async {
                async_io::Timer::after(std::time::Duration::from_secs(timeout)).await;
                None
            })
            .await;
        match read {
            None => {
                let info =
                    format!("request body not received within {timeout} s (server.body_timeout)");
                return early(json_response(408, &json!({"stat": false, "info": info})));
            }
            Some(Err(e)) => return early(render(Err(Error::Bad(format!("reading body: {e}"))))),
            Some(Ok(_)) if buf.len() > max => {
                return early(render(Err(Error::TooLarge(format!(
                    "request body larger than {max} bytes (server.max_body_bytes)"
                )))))
            }
            Some(Ok(_)) => {}
        }
        req.set_body(buf);
        let mut res = next.run(req).await;
        // Routes that authenticate themselves refuse strangers with 401/403.
        let known = if own_auth {
            !matches!(res.status() as u16, 401 | 403)
        } else {
            caller.is_ok()
        };
        if known {
            res.insert_ext(Known);
        }
        Ok(res)
    }
}

/// Counts every answered request: a known caller's by method, route
/// pattern and status code; the rest in one series, so that strangers
/// cannot add series.
struct CountRequests;

#[tide::utils::async_trait]
impl tide::Middleware<Arc<App>> for CountRequests {
    async fn handle(&self, req: Req, next: tide::Next<'_, Arc<App>>) -> tide::Result {
        let app = req.state().clone();
        let method = req.method().to_string();
        let path = req.url().path().to_string();
        let res = next.run(req).await;
        if res.ext::<Known>().is_some() {
            app.engine.metrics.http(&method, &path, res.status() as u16);
        } else {
            app.engine.metrics.http_unauthenticated();
        }
        Ok(res)
    }
}

async fn not_found(_req: Req) -> Result<Reply> {
    Err(Error::NotFound("no such endpoint".into()))
}

/// Builds the tide application with every route.
pub fn routes(app: Arc<App>) -> tide::Server<Arc<App>> {
    let mut s = tide::with_state(app.clone());
    s.with(CountRequests);
    openc3::middleware(&mut s, &app.config);
    s.with(ReadBody);
    // OPEN-C3's front end calls every route under /api/jobx (its nginx strips
    // the prefix); the same routes answer there, behind the same middleware.
    let mut prefixed = tide::with_state(app);
    endpoints(&mut prefixed);
    s.at("/api/jobx").nest(prefixed);
    endpoints(&mut s);
    s
}

fn endpoints(s: &mut tide::Server<Arc<App>>) {
    s.at("/mon").get(h(mon));
    backup::routes(s);
    s.at("/metrics").get(h(metrics));
    inventory::routes(s);
    stats::routes(s);
    tasks::routes(s);
    notify::routes(s);
    third::routes(s);
    plugin_http::routes(s);
    console::routes(s);
    openc3::routes(s);
    s.at("*").all(h(not_found));
    s.at("/").all(h(not_found));
}
