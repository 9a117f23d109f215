//! HTTP routes (tide). Handlers are thin: parse, authorize, call, render.
//! Everything tide-specific stays in this module.

mod console;
mod inventory;
mod plugin_http;
mod stats;
mod stream;
mod tasks;
mod third;

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

/// A path parameter, percent-decoded (names may hold spaces, `/`, UTF-8).
pub fn param(req: &Req, name: &str) -> Result<String> {
    let raw = req
        .param(name)
        .map_err(|_| Error::Bad(format!("{name}: missing in path")))?;
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
    let (tasks, waiting) = blocking::unblock(move || {
        Ok::<_, Error>((a2.store.task_status_counts()?, a2.engine.waiting_batches()?))
    })
    .await?;
    let size = std::fs::metadata(app.store.path())
        .map(|m| m.len())
        .unwrap_or(0);
    Ok(Reply::Text(
        app.engine.metrics.render(&tasks, waiting, size),
    ))
}

/// Reads every request body up front (capped at `server.max_body_bytes`,
/// 413 beyond). A handler that answers without reading the body would leave
/// its bytes on a kept-alive connection, where they would be taken for the
/// next request; and the cap then holds for every route, plugins' included.
struct ReadBody;

#[tide::utils::async_trait]
impl tide::Middleware<Arc<App>> for ReadBody {
    async fn handle(&self, mut req: Req, next: tide::Next<'_, Arc<App>>) -> tide::Result {
        let max = req.state().config.server.max_body_bytes;
        let too_large = || {
            let mut r = render(Err(Error::TooLarge(format!(
                "request body larger than {max} bytes"
            ))));
            // The rest of the body is not read: the connection can not be reused.
            r.insert_header("connection", "close");
            r
        };
        if req.len().is_some_and(|n| n > max) {
            return Ok(too_large());
        }
        let mut buf = Vec::new();
        let read = req
            .take_body()
            .into_reader()
            .take(max as u64 + 1)
            .read_to_end(&mut buf)
            .await;
        if let Err(e) = read {
            return Ok(render(Err(Error::Bad(format!("reading body: {e}")))));
        }
        if buf.len() > max {
            return Ok(too_large());
        }
        req.set_body(buf);
        Ok(next.run(req).await)
    }
}

/// Counts every answered request by method, route and status code.
struct CountRequests;

#[tide::utils::async_trait]
impl tide::Middleware<Arc<App>> for CountRequests {
    async fn handle(&self, req: Req, next: tide::Next<'_, Arc<App>>) -> tide::Result {
        let app = req.state().clone();
        let method = req.method().to_string();
        let path = req.url().path().to_string();
        let res = next.run(req).await;
        app.engine.metrics.http(&method, &path, res.status() as u16);
        Ok(res)
    }
}

async fn not_found(_req: Req) -> Result<Reply> {
    Err(Error::NotFound("no such endpoint".into()))
}

/// Builds the tide application with every route.
pub fn routes(app: Arc<App>) -> tide::Server<Arc<App>> {
    let mut s = tide::with_state(app);
    s.with(CountRequests);
    s.with(ReadBody);
    s.at("/mon").get(h(mon));
    s.at("/backup").get(crate::ops::backup::endpoint);
    s.at("/metrics").get(h(metrics));
    inventory::routes(&mut s);
    stats::routes(&mut s);
    tasks::routes(&mut s);
    third::routes(&mut s);
    plugin_http::routes(&mut s);
    console::routes(&mut s);
    s.at("*").all(h(not_found));
    s.at("/").all(h(not_found));
    s
}
