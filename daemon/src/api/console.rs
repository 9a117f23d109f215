//! The operator's web console: static pages under `/ui/` (embedded in the
//! binary), sign-in with a token into a server-side session, and the few
//! JSON calls the pages need beyond the public API. The pages talk to the
//! same JSON API as curl, so authorization stays the API's.

use super::*;
use crate::auth::Via;
use crate::logs::{parse_key, KeyKind};
use crate::model::{BatchStatus, Step, Subtask, Task};
use crate::sessions::{secret_eq, Session};

/// The session cookie's name.
pub const COOKIE: &str = "jobx_session";

/// No inline script, nothing from elsewhere, not framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// An embedded file: path under `/ui/`, content type, bytes.
struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/app.js"),
    },
    Asset {
        name: "dom.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/dom.js"),
    },
    Asset {
        name: "pages.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/pages.js"),
    },
    Asset {
        name: "task.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/task.js"),
    },
    Asset {
        name: "app.css",
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../../console/app.css"),
    },
    Asset {
        name: "favicon.svg",
        mime: "image/svg+xml",
        body: include_bytes!("../../console/favicon.svg"),
    },
];

const INDEX: &str = include_str!("../../console/index.html");
const LOGIN: &str = include_str!("../../console/login.html");

pub fn routes(s: &mut tide::Server<Arc<App>>) {
    s.at("/").get(|_req: Req| async { Ok(redirect("/ui/")) });
    s.at("/ui").get(|_req: Req| async { Ok(redirect("/ui/")) });
    s.at("/ui/").get(index);
    s.at("/ui/login").get(login_page).post(login);
    s.at("/ui/logout").post(logout_endpoint);
    s.at("/ui/session").get(h(session));
    s.at("/ui/api/projects").get(h(projects));
    s.at("/ui/api/group/:projectid/preview")
        .post(h(group_preview));
    s.at("/ui/api/task/:projectid/:uuid").get(h(task_view));
    s.at("/ui/api/log/:projectid/:key").get(h(node_log));
    s.at("/ui/:file").get(asset);
}

fn redirect(to: &str) -> tide::Response {
    let mut r = tide::Response::new(302);
    r.insert_header("location", to);
    r
}

/// Headers every console response carries.
fn harden(mut r: tide::Response, cache: &str) -> tide::Response {
    r.insert_header("content-security-policy", CSP);
    r.insert_header("x-content-type-options", "nosniff");
    // Not "no-referrer": with it, browsers send `Origin: null` on form posts.
    r.insert_header("referrer-policy", "same-origin");
    r.insert_header("x-frame-options", "DENY");
    r.insert_header("cache-control", cache);
    r
}

fn html(status: u16, body: String) -> tide::Response {
    let mut r = tide::Response::new(status);
    r.set_content_type(mime::HTML);
    r.set_body(body);
    harden(r, "no-store")
}

/// A strong ETag of an embedded file (its SHA-256, shortened).
fn etag(body: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(body);
    let hex: String = d.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

async fn asset(req: Req) -> tide::Result {
    let name = req.param("file").unwrap_or("");
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return Ok(harden(
            render(Err(Error::NotFound("no such file".into()))),
            "no-store",
        ));
    };
    let tag = etag(a.body);
    // Revalidated on every load (a new daemon brings new files), answered 304 when unchanged.
    if req
        .header("if-none-match")
        .is_some_and(|v| v.iter().any(|v| v.as_str() == tag))
    {
        let mut r = tide::Response::new(304);
        r.insert_header("etag", tag.as_str());
        return Ok(harden(r, "no-cache"));
    }
    let mut r = tide::Response::new(200);
    r.insert_header("content-type", a.mime);
    r.insert_header("etag", tag.as_str());
    r.set_body(a.body);
    Ok(harden(r, "no-cache"))
}

async fn index(req: Req) -> tide::Result {
    // Without a live session, straight to the sign-in page.
    if session_of(&req).is_none() {
        return Ok(harden(redirect("/ui/login"), "no-store"));
    }
    Ok(html(200, INDEX.to_string()))
}

fn login_html(error: &str) -> String {
    LOGIN.replace("{{error}}", &crate::logs::html_escape(error))
}

async fn login_page(_req: Req) -> tide::Result {
    Ok(html(200, login_html("")))
}

/// Whether the request came over TLS (directly or through a proxy that says so).
fn is_tls(req: &Req) -> bool {
    req.header("x-forwarded-proto")
        .is_some_and(|v| v.last().as_str().eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value of a session (or of its removal with `None`).
pub fn cookie_header(id: Option<&str>, max_age_secs: u64, secure: bool) -> String {
    let (value, age) = match id {
        Some(id) => (id, max_age_secs),
        None => ("", 0),
    };
    let mut c = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={age}");
    if secure {
        c.push_str("; Secure");
    }
    c
}

async fn login(mut req: Req) -> tide::Result {
    if !origin_allowed(&req) {
        return Ok(html(403, login_html("cross-site request refused")));
    }
    let b = match body(&mut req).await {
        Ok(b) => b,
        Err(e) => return Ok(html(400, login_html(e.message()))),
    };
    let token = match opt_str(&b, "token") {
        Ok(Some(t)) if !t.trim().is_empty() => t,
        Ok(_) => return Ok(html(400, login_html("token: missing"))),
        Err(e) => return Ok(html(400, login_html(e.message()))),
    };
    let app = req.state().clone();
    let Some((digest, who)) = app.tokens().check_digest(token.trim()) else {
        return Ok(html(401, login_html("unknown token")));
    };
    let s = app.sessions.create(digest, crate::clock::now_ms());
    log::info!("console: {} signed in", who.name);
    let secure = app.config.console.secure_cookie || is_tls(&req);
    let mut r = redirect("/ui/");
    r.insert_header(
        "set-cookie",
        cookie_header(Some(&s.id), app.config.console.session_ttl_secs, secure),
    );
    Ok(harden(r, "no-store"))
}

async fn logout(req: Req) -> Result<Reply> {
    // principal() checks the CSRF token and the origin of this write.
    let who = principal(&req)?;
    if who.via != Via::Session {
        return Err(Error::Bad(
            "sign-out ends a console session; this request has none".into(),
        ));
    }
    if let Some(id) = cookie_value(&req) {
        req.state().sessions.remove(&id);
    }
    Ok(Reply::Body(json!({"stat": true, "info": "signed out"})))
}

/// Sign-out, and the browser forgets the cookie too.
async fn logout_endpoint(req: Req) -> tide::Result {
    let secure = req.state().config.console.secure_cookie || is_tls(&req);
    let ok = logout(req).await;
    let signed_out = ok.is_ok();
    let mut r = render(ok);
    if signed_out {
        r.insert_header("set-cookie", cookie_header(None, 0, secure));
    }
    Ok(harden(r, "no-store"))
}

/// `{user, roles, csrf, slave}` of the signed-in browser.
async fn session(req: Req) -> Result<Reply> {
    let (s, who) = session_of(&req)
        .ok_or_else(|| Error::Unauthorized("not signed in: sign in at /ui/login".into()))?;
    Ok(Reply::Data(json!({
        "user": who.name,
        "roles": who.roles(),
        "csrf": s.csrf,
        "slave": req.state().slave,
        "expires": crate::clock::local(s.expires_ms),
    })))
}

/// The value of `name` in a `Cookie` header.
pub fn cookie_in(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

fn cookie_value(req: &Req) -> Option<String> {
    req.header("cookie")?
        .iter()
        .find_map(|h| cookie_in(h.as_str(), COOKIE))
        .filter(|v| !v.is_empty())
}

/// The live session of the request and who it belongs to; a session whose
/// token is no longer configured is ended here.
fn session_of(req: &Req) -> Option<(Session, Principal)> {
    let id = cookie_value(req)?;
    let app = req.state();
    let s = app.sessions.get(&id, crate::clock::now_ms())?;
    match app.tokens().by_digest(&s.digest) {
        Some(p) => Some((s, p.with_via(Via::Session))),
        None => {
            app.sessions.remove(&id);
            None
        }
    }
}

/// Whether `origin` is the request's own: scheme and host as the browser
/// saw them (a proxy's `X-Forwarded-Proto` / `X-Forwarded-Host` count).
pub fn same_origin(origin: &str, hosts: &[&str], tls: bool) -> bool {
    let scheme = if tls { "https" } else { "http" };
    hosts
        .iter()
        .any(|h| !h.is_empty() && origin.eq_ignore_ascii_case(&format!("{scheme}://{h}")))
}

/// No `Origin` header (same-origin GETs, older clients), or our own.
fn origin_allowed(req: &Req) -> bool {
    let Some(origin) = req.header("origin") else {
        return true;
    };
    let hosts: Vec<&str> = ["x-forwarded-host", "host"]
        .iter()
        .filter_map(|h| req.header(*h).map(|v| v.last().as_str()))
        .collect();
    same_origin(origin.last().as_str(), &hosts, is_tls(req))
}

/// The last step of `principal()`: the console's session cookie. Writes
/// (anything but GET and HEAD) must carry the session's CSRF token and come
/// from our own origin. A write a browser sends from another site is refused
/// as such even when its cookie stayed behind (`SameSite=Strict`): it can
/// only be a forgery, and saying so beats a puzzling 401.
pub fn from_cookie(req: &Req) -> Result<Principal> {
    let write = !matches!(
        req.method(),
        tide::http::Method::Get | tide::http::Method::Head
    );
    if write && !origin_allowed(req) {
        return Err(Error::Forbidden("cross-site request refused".into()));
    }
    if cookie_value(req).is_none() {
        return Err(Error::Unauthorized(
            "authentication required: Authorization: Bearer <token>, or appname and appkey headers"
                .into(),
        ));
    }
    let (s, who) = session_of(req).ok_or_else(|| {
        Error::Unauthorized("console session expired or ended: sign in again at /ui/login".into())
    })?;
    if write {
        let csrf_ok = req
            .header("x-csrf-token")
            .is_some_and(|v| secret_eq(v.last().as_str(), &s.csrf));
        if !csrf_ok {
            return Err(Error::Forbidden("cross-site request refused".into()));
        }
    }
    Ok(who)
}

/// Projects the caller may read that hold anything, with counts.
async fn projects(req: Req) -> Result<Reply> {
    let who = principal(&req)?;
    let list = super::tasks::run(req.state(), |app| {
        app.store.projects(crate::clock::now_ms())
    })
    .await?;
    let visible: Vec<Value> = list
        .into_iter()
        .filter(|p| who.role_on(p.projectid).is_some())
        .map(|p| json!(p))
        .collect();
    Ok(Reply::Data(Value::Array(visible)))
}

/// Batches of an unsaved group text (the group editor's live preview).
async fn group_preview(mut req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Read)?;
    let b = body(&mut req).await?;
    known_fields(
        &b,
        &["group_type", "node", "percent", "labels", "name", "note"],
        "",
    )?;
    let gt = req_str(&b, "group_type")?;
    let ty = crate::batching::GroupType::parse(&gt)
        .ok_or_else(|| Error::Bad(format!("group_type: {gt:?} is not list or percent")))?;
    let field = match ty {
        crate::batching::GroupType::List => "node",
        crate::batching::GroupType::Percent => "percent",
    };
    let text = opt_str(&b, field)?.unwrap_or_default();
    if text.len() > 100_000 {
        return Err(Error::Bad(format!("{field}: longer than 100000 bytes")));
    }
    crate::batching::parse(ty, &text).map_err(|e| Error::Bad(format!("{field}: {e}")))?;
    let labels = opt_str(&b, "labels")?
        .unwrap_or_default()
        .trim()
        .to_string();
    crate::labels::Selector::parse_opt(&labels).map_err(|e| Error::Bad(format!("labels: {e}")))?;
    let g = crate::model::Group {
        labels,
        id: 0,
        projectid: pid,
        name: "preview".into(),
        note: String::new(),
        group_type: ty.as_str().to_string(),
        text,
        edit_time: 0,
    };
    let batches = super::tasks::run(req.state(), move |app| {
        let known = app.store.node_names(pid)?;
        let batches = crate::engine::compute_batches(&app.store, &who, pid, &g)?;
        Ok(unknown_nodes(&batches, &known))
    })
    .await?;
    Ok(Reply::Data(batches))
}

/// Batches as JSON, each node marked when the inventory does not hold it
/// (list groups may name nodes not added yet; a task would refuse them).
fn unknown_nodes(batches: &[Vec<String>], inventory: &[String]) -> Value {
    let known: std::collections::HashSet<&str> = inventory.iter().map(String::as_str).collect();
    Value::Array(
        batches
            .iter()
            .map(|b| {
                let missing: Vec<&String> =
                    b.iter().filter(|n| !known.contains(n.as_str())).collect();
                json!({"nodes": b, "unknown": missing})
            })
            .collect(),
    )
}

/// What one cell of the node × step grid shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Ok,
    Fail,
    Running,
    Pending,
    Skipped,
}

impl Cell {
    pub fn as_str(self) -> &'static str {
        match self {
            Cell::Ok => "ok",
            Cell::Fail => "fail",
            Cell::Running => "running",
            Cell::Pending => "pending",
            Cell::Skipped => "skipped",
        }
    }
}

/// What a node's result record in a step log says: the runner ends each
/// node's run with "exit code N", "failed: …", "finished without an exit
/// code" or "not started: task stopped"; other records say nothing.
pub fn node_result(text: &str) -> Option<Cell> {
    if let Some(code) = text.strip_prefix("exit code ") {
        return Some(if code.trim() == "0" {
            Cell::Ok
        } else {
            Cell::Fail
        });
    }
    if text.starts_with("failed: ") || text == "finished without an exit code" {
        return Some(Cell::Fail);
    }
    if text == "not started: task stopped" {
        return Some(Cell::Skipped);
    }
    None
}

/// Whether a record is a step's header ("step \"x\" (local) on a,b"): a new
/// run of the step starts there (a retry runs it again).
fn is_step_header(r: &crate::model::LogRecord) -> bool {
    r.node.is_empty()
        && r.stream == "info"
        && r.text.starts_with("step \"")
        && r.text.contains(") on ")
}

/// The nodes that finished the latest run of a step, from its log records in
/// order; `None` for a log too long to tell within `budget` records.
pub fn run_results<'a>(
    records: impl Iterator<Item = &'a crate::model::LogRecord>,
    budget: usize,
) -> Option<BTreeMap<String, Cell>> {
    let mut out = BTreeMap::new();
    for (n, r) in records.enumerate() {
        if n >= budget {
            return None;
        }
        if is_step_header(r) {
            out.clear();
        } else if r.stream == "info" && !r.node.is_empty() {
            if let Some(c) = node_result(&r.text) {
                out.insert(r.node.clone(), c);
            }
        }
    }
    Some(out)
}

/// Records read at most to tell which nodes finished a running step.
const RESULT_SCAN: usize = 5_000;

/// The running step of a batch: its index and the nodes done in its latest run.
pub struct Current {
    pub step: usize,
    pub done: BTreeMap<String, Cell>,
}

/// The cells of one batch, step by step: a state for the step and the
/// nodes that differ from it. `current` is the step a running batch is in
/// (the last one that wrote a log record) with the nodes already done.
pub fn batch_cells(
    task: &Task,
    s: &Subtask,
    current: Option<&Current>,
) -> Vec<(Cell, Vec<(String, Cell)>)> {
    let failed = |n: &String| s.failed_nodes.contains(n);
    let except = |c: Cell| -> Vec<(String, Cell)> {
        s.nodes
            .iter()
            .filter(|n| failed(n))
            .map(|n| (n.clone(), c))
            .collect()
    };
    task.steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            if !crate::engine::plan::step_applies(step, task.action, s.idx, task.batches) {
                return (Cell::Skipped, Vec::new());
            }
            match s.status {
                BatchStatus::Success => (Cell::Ok, Vec::new()),
                BatchStatus::Init => (Cell::Pending, Vec::new()),
                BatchStatus::Cancel => (Cell::Skipped, Vec::new()),
                BatchStatus::Running => {
                    let Some(cur) = current else {
                        return (Cell::Pending, Vec::new());
                    };
                    if i < cur.step {
                        return (Cell::Ok, Vec::new());
                    }
                    if i > cur.step {
                        return (Cell::Pending, Vec::new());
                    }
                    // A retry runs the step again on the nodes it failed on only.
                    let retrying = s.failed_step == Some(cur.step) && !s.failed_nodes.is_empty();
                    let all = if retrying { Cell::Ok } else { Cell::Running };
                    let nodes = s
                        .nodes
                        .iter()
                        .filter_map(|n| {
                            let base = if retrying && failed(n) {
                                Cell::Running
                            } else {
                                all
                            };
                            let c = match cur.done.get(n) {
                                Some(c) if base == Cell::Running => *c,
                                _ => base,
                            };
                            (c != all).then(|| (n.clone(), c))
                        })
                        .collect();
                    (all, nodes)
                }
                BatchStatus::Fail | BatchStatus::Refuse => match s.failed_step {
                    Some(f) if i < f => (Cell::Ok, Vec::new()),
                    Some(f) if i == f => {
                        if s.failed_nodes.len() >= s.nodes.len() || s.failed_nodes.is_empty() {
                            (Cell::Fail, Vec::new())
                        } else {
                            (Cell::Ok, except(Cell::Fail))
                        }
                    }
                    // A waiting batch may still run these after a retry.
                    Some(_) if s.waiting() => (Cell::Pending, Vec::new()),
                    Some(_) => (Cell::Skipped, Vec::new()),
                    None => (Cell::Fail, Vec::new()),
                },
            }
        })
        .collect()
}

fn step_key(s: &Subtask, step: &Step) -> String {
    format!("{}{}{}", s.uuid, step.uuid, step.plugin)
}

/// The step a running batch is in (the last applicable step with a log
/// record) and the nodes done in its latest run, read from at most
/// `RESULT_SCAN` records.
fn current_step(app: &App, task: &Task, s: &Subtask) -> Result<Option<Current>> {
    for (i, step) in task.steps.iter().enumerate().rev() {
        if !crate::engine::plan::step_applies(step, task.action, s.idx, task.batches) {
            continue;
        }
        let key = step_key(s, step);
        if app.store.logs(&key, 0, 1)?.is_empty() {
            continue;
        }
        let mut records = Vec::new();
        let mut at = 0;
        while records.len() <= RESULT_SCAN {
            let page = app.store.logs(&key, at, 1000)?;
            let Some((last, _)) = page.last() else { break };
            at = *last;
            let full = page.len() == 1000;
            records.extend(page.into_iter().map(|(_, r)| r));
            if !full {
                break;
            }
        }
        let done = run_results(records.iter(), RESULT_SCAN).unwrap_or_default();
        return Ok(Some(Current { step: i, done }));
    }
    Ok(None)
}

/// Everything the task page shows in one answer: the task, its steps, the
/// batches with their grids, its pending approvals and its rollback partner.
async fn task_view(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let uuid = param(&req, "uuid")?;
    super::tasks::run(req.state(), move |app| {
        let task = app.engine.task_in(pid, &uuid)?;
        let subs = app.store.subtasks(&uuid)?;
        let mut batches = Vec::with_capacity(subs.len());
        for s in &subs {
            let current = if s.status == BatchStatus::Running {
                current_step(app, &task, s)?
            } else {
                None
            };
            let cells: Vec<Value> = batch_cells(&task, s, current.as_ref())
                .into_iter()
                .zip(&task.steps)
                .map(|((all, nodes), step)| {
                    let nodes: Map<String, Value> = nodes
                        .into_iter()
                        .map(|(n, c)| (n, Value::String(c.as_str().into())))
                        .collect();
                    json!({"step": step.uuid, "key": step_key(s, step), "all": all.as_str(), "nodes": nodes})
                })
                .collect();
            let mut b = s.to_api();
            b["idx"] = json!(s.idx);
            b["nodes"] = json!(s.nodes);
            b["failed_nodes"] = json!(s.failed_nodes);
            b["cells"] = Value::Array(cells);
            batches.push(b);
        }
        let approvals: Vec<Value> = app
            .store
            .pending_approvals(pid)?
            .iter()
            .filter(|a| a.taskuuid == uuid)
            .map(|a| a.to_api())
            .collect();
        let partner_uuid = if crate::ids::is_deploy(&uuid) {
            crate::ids::rollback_of(&uuid)
        } else {
            uuid.to_ascii_lowercase_last()
        };
        let partner = app
            .store
            .task(&partner_uuid)?
            .filter(|t| t.projectid == pid)
            .map(|t| json!({"uuid": t.uuid, "status": t.status, "action": t.action}));
        let steps: Vec<Value> = task
            .steps
            .iter()
            .map(|s| json!({"uuid": s.uuid, "name": s.name, "plugin": s.plugin, "action": s.action, "batches": s.batches, "approvers": s.approvers}))
            .collect();
        let mut t = app.engine.task_json(&task)?;
        t["action"] = json!(task.action);
        t["decision"] = json!(task.decision);
        t["stopped_by"] = json!(task.stopped_by);
        t["batches"] = json!(task.batches);
        t["created"] = json!(crate::clock::local(task.created_ms));
        t["starttimems"] = json!(task.start_ms.map(|m| m as f64 / 1000.0));
        Ok(Reply::Data(json!({
            "task": t,
            "steps": steps,
            "batches": batches,
            "approvals": approvals,
            "partner": partner,
        })))
    })
    .await
}

trait LowerLast {
    fn to_ascii_lowercase_last(&self) -> String;
}

impl LowerLast for String {
    /// The deploy uuid of a rollback uuid: last letter lowercased.
    fn to_ascii_lowercase_last(&self) -> String {
        let mut s = self.clone();
        if let Some(last) = s.pop() {
            s.push(last.to_ascii_lowercase());
        }
        s
    }
}

/// Records scanned at most per call of the node-filtered log.
const SCAN_BUDGET: usize = 20_000;

/// One node's records of a log key, a page at a time: scans at most
/// `SCAN_BUDGET` records from `offset` and answers where to go on.
async fn node_log(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let key = param(&req, "key")?;
    let q = query(&req)?;
    let node = q
        .get("node")
        .cloned()
        .ok_or_else(|| Error::Bad("node: missing".into()))?;
    let offset = match q.get("offset") {
        None => 0,
        Some(o) => o
            .parse::<u64>()
            .map_err(|_| Error::Bad("offset: must be a number".into()))?,
    };
    let max = match q.get("max") {
        None => 500,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=2000).contains(&n) => n,
            _ => return Err(Error::Bad("max: must be 1 to 2000".into())),
        },
    };
    super::tasks::run(req.state(), move |app| {
        let owner = match parse_key(&key) {
            Some(KeyKind::Step { subtask }) => app.store.subtask(&subtask)?.map(|s| s.parent_uuid),
            Some(KeyKind::Uuid(u)) => match app.store.subtask(&u)? {
                Some(s) => Some(s.parent_uuid),
                None => Some(u),
            },
            None => None,
        };
        let t = match owner {
            Some(u) => app.store.task(&u)?,
            None => None,
        };
        if t.is_none_or(|t| t.projectid != pid) {
            return Err(Error::NotFound("no such log in this project".into()));
        }
        let mut out = Vec::new();
        let mut at = offset;
        let mut scanned = 0;
        let mut at_end = false;
        while out.len() < max && scanned < SCAN_BUDGET {
            let page = app.store.logs(&key, at, 1000)?;
            let n = page.len();
            for (seq, r) in page {
                at = seq;
                scanned += 1;
                if r.node == node {
                    out.push(json!({"seq": seq, "time": r.time as f64 / 1000.0, "node": r.node, "stream": r.stream, "text": r.text}));
                    if out.len() >= max {
                        break;
                    }
                }
            }
            if n < 1000 {
                at_end = out.len() < max || app.store.logs(&key, at, 1)?.is_empty();
                break;
            }
        }
        Ok(Reply::Data(json!({"records": out, "next_offset": at, "at_end": at_end})))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn step(name: &str, batches: &str) -> Step {
        serde_json::from_value(json!({
            "uuid": format!("{name:0>12}"), "name": name, "plugin": "local", "timeout": 60,
            "action": "always", "batches": batches, "kind": "cmd", "script": "true"
        }))
        .expect("step")
    }

    fn task(steps: Vec<Step>, batches: u32) -> Task {
        Task {
            id: 1,
            projectid: 1,
            uuid: "aaaaaaaaaaaa".into(),
            name: "j".into(),
            group: "g".into(),
            user: "u".into(),
            slave: "s".into(),
            status: crate::model::TaskStatus::Running,
            created_ms: 0,
            start_ms: None,
            finish_ms: None,
            calltype: "api".into(),
            reason: String::new(),
            variable: json!({}),
            vars: BTreeMap::new(),
            steps,
            nodes: BTreeMap::new(),
            batches,
            action: crate::model::Action::Deploy,
            stopped_by: None,
            decision: crate::model::Decision::None,
            policy: Default::default(),
        }
    }

    fn sub(idx: u32, status: &str, nodes: &[&str]) -> Subtask {
        Subtask {
            id: 1,
            parent_uuid: "aaaaaaaaaaaa".into(),
            uuid: "bbbbbbbbbbbb".into(),
            idx,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            status: BatchStatus::parse(status).expect("status"),
            confirm: None,
            start_ms: None,
            finish_ms: None,
            reason: String::new(),
            failed_step: None,
            failed_nodes: Vec::new(),
            retry: false,
        }
    }

    fn states(c: &[(Cell, Vec<(String, Cell)>)]) -> Vec<&'static str> {
        c.iter().map(|(a, _)| a.as_str()).collect()
    }

    #[test]
    fn grid_of_a_failed_waiting_batch() {
        let t = task(
            vec![
                step("a", "always"),
                step("b", "always"),
                step("c", "firsttime"),
            ],
            3,
        );
        let mut s = sub(1, "fail", &["n1", "n2", "n3"]);
        s.failed_step = Some(1);
        s.failed_nodes = vec!["n2".into()];
        s.confirm = Some(crate::model::Confirm::Waiting);
        let c = batch_cells(&t, &s, None);
        assert_eq!(states(&c), vec!["ok", "ok", "skipped"]);
        assert_eq!(c[1].1, vec![("n2".to_string(), Cell::Fail)]);
        // Not waiting any more (stopped): the later steps will never run.
        let t2 = task(
            vec![
                step("a", "always"),
                step("b", "always"),
                step("c", "always"),
            ],
            3,
        );
        s.confirm = Some(crate::model::Confirm::TaskStop);
        s.failed_step = Some(0);
        s.failed_nodes = vec!["n1".into(), "n2".into(), "n3".into()];
        assert_eq!(
            states(&batch_cells(&t2, &s, None)),
            vec!["fail", "skipped", "skipped"]
        );
    }

    #[test]
    fn grid_of_running_and_other_batches() {
        let t = task(
            vec![
                step("a", "always"),
                step("b", "always"),
                step("c", "always"),
            ],
            2,
        );
        let s = sub(0, "running", &["n1"]);
        let cur = |step| Current {
            step,
            done: BTreeMap::new(),
        };
        assert_eq!(
            states(&batch_cells(&t, &s, Some(&cur(1)))),
            vec!["ok", "running", "pending"]
        );
        assert_eq!(states(&batch_cells(&t, &s, None)), vec!["pending"; 3]);
        let mut r = sub(0, "running", &["n1", "n2"]);
        r.failed_step = Some(1);
        r.failed_nodes = vec!["n2".into()];
        let c = batch_cells(&t, &r, Some(&cur(1)));
        assert_eq!(states(&c), vec!["ok", "ok", "pending"]);
        assert_eq!(c[1].1, vec![("n2".to_string(), Cell::Running)]);
        assert_eq!(
            states(&batch_cells(&t, &sub(1, "success", &["n"]), None)),
            vec!["ok"; 3]
        );
        assert_eq!(
            states(&batch_cells(&t, &sub(1, "init", &["n"]), None)),
            vec!["pending"; 3]
        );
        assert_eq!(
            states(&batch_cells(&t, &sub(1, "cancel", &["n"]), None)),
            vec!["skipped"; 3]
        );
    }

    fn rec(node: &str, stream: &str, text: &str) -> crate::model::LogRecord {
        crate::model::LogRecord {
            time: 0,
            node: node.into(),
            stream: stream.into(),
            text: text.into(),
        }
    }

    #[test]
    fn nodes_done_in_the_latest_run_of_a_step() {
        assert_eq!(node_result("exit code 0"), Some(Cell::Ok));
        assert_eq!(node_result("exit code 3"), Some(Cell::Fail));
        assert_eq!(node_result("failed: timeout after 5 s"), Some(Cell::Fail));
        assert_eq!(
            node_result("not started: task stopped"),
            Some(Cell::Skipped)
        );
        assert_eq!(node_result("[output truncated at 10 bytes]"), None);
        let log = [
            rec("", "info", "step \"install\" (local) on a,b"),
            rec("a", "stdout", "exit code 0"),
            rec("a", "info", "exit code 0"),
            rec("b", "info", "exit code 3"),
            rec("", "info", "step \"install\": failed on b"),
            // the retry: b runs again, its old result no longer counts
            rec("", "info", "step \"install\" (local) on b"),
            rec("b", "stdout", "retrying"),
        ];
        let done = run_results(log.iter(), 100).expect("within budget");
        assert_eq!(done, BTreeMap::new());
        let done = run_results(log[..4].iter(), 100).expect("within budget");
        assert_eq!(done.get("a"), Some(&Cell::Ok));
        assert_eq!(done.get("b"), Some(&Cell::Fail));
        assert_eq!(run_results(log.iter(), 3), None, "too long to tell");
    }

    #[test]
    fn running_step_shows_the_nodes_already_done() {
        let t = task(vec![step("a", "always"), step("b", "always")], 1);
        let s = sub(0, "running", &["n1", "n2", "n3"]);
        let mut done = BTreeMap::new();
        done.insert("n1".to_string(), Cell::Ok);
        done.insert("n3".to_string(), Cell::Fail);
        let c = batch_cells(&t, &s, Some(&Current { step: 0, done }));
        assert_eq!(states(&c), vec!["running", "pending"]);
        assert_eq!(
            c[0].1,
            vec![("n1".to_string(), Cell::Ok), ("n3".to_string(), Cell::Fail)]
        );
    }

    #[test]
    fn cookies_and_origins() {
        assert_eq!(
            cookie_in("a=1; jobx_session=abc; b=2", COOKIE),
            Some("abc".into())
        );
        assert_eq!(cookie_in("jobx_sessionx=abc", COOKIE), None);
        assert_eq!(cookie_in("", COOKIE), None);
        let c = cookie_header(Some("id1"), 60, false);
        assert_eq!(
            c,
            "jobx_session=id1; Path=/; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        assert!(cookie_header(None, 60, true).ends_with("Max-Age=0; Secure"));
        assert!(same_origin(
            "http://127.0.0.1:8080",
            &["127.0.0.1:8080"],
            false
        ));
        assert!(same_origin(
            "https://ops.example",
            &["ops.example", "127.0.0.1:8080"],
            true
        ));
        assert!(
            !same_origin("http://ops.example", &["ops.example"], true),
            "scheme counts"
        );
        assert!(!same_origin(
            "http://evil.example",
            &["127.0.0.1:8080"],
            false
        ));
        assert!(!same_origin("null", &["127.0.0.1:8080"], false));
        assert!(!same_origin("http://", &[""], false));
    }

    #[test]
    fn preview_marks_unknown_nodes() {
        let v = unknown_nodes(&[vec!["a".into(), "x".into()]], &["a".into()]);
        assert_eq!(v, json!([{"nodes": ["a", "x"], "unknown": ["x"]}]));
    }

    #[test]
    fn assets_and_pages_are_embedded() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{}", a.name);
        }
        assert!(LOGIN.contains("id=\"token\"") && LOGIN.contains("{{error}}"));
        assert!(!INDEX.contains("<script>"), "no inline script");
        assert!(login_html("<b>").contains("&lt;b&gt;"));
    }
}
