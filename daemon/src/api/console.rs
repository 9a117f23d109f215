//! The operator's web console: static pages under `/ui/` (embedded in the
//! binary), sign-in with a token into a server-side session, and the few
//! JSON calls the pages need beyond the public API. The pages talk to the
//! same JSON API as curl, so authorization stays the API's.
//! The task page's grid and the node log are in `console/task_page.rs`.

mod task_page;

use super::*;
use crate::auth::Via;
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

/// One embedded file of `daemon/console/`, served as `/ui/<name>`.
macro_rules! asset {
    ($name:literal, $mime:literal) => {
        Asset {
            name: $name,
            mime: $mime,
            body: include_bytes!(concat!("../../console/", $name)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("pages.js", "text/javascript; charset=utf-8"),
    asset!("task.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
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
    s.at("/ui/api/task/:projectid/:uuid")
        .get(h(task_page::task_view));
    s.at("/ui/api/log/:projectid/:key")
        .get(h(task_page::node_log));
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
#[cfg(test)]
mod tests {
    use super::*;

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
