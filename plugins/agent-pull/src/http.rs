//! Routing of `/plugin/agent-pull/…` requests.

use std::sync::Arc;
use std::time::Duration;

use jobx_plugin_api::{HttpRequest, HttpResponse, Responder};
use serde::de::DeserializeOwned;

use crate::files::{self, Pool};
use crate::hub::{json, refuse, Delivered, Hub};
use crate::proto::{Accept, Chunk, Exit, Hello, AGENT_HEADER, PREFIX};

/// The value of a query parameter.
fn query<'a>(q: &'a str, key: &str) -> Option<&'a str> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Parses a JSON body; an empty body is the type's default.
fn body<T: DeserializeOwned + Default>(req: &HttpRequest) -> Result<T, HttpResponse> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&req.body).map_err(|e| refuse(400, format!("invalid JSON body: {e}")))
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let v = req.header("authorization")?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(t.trim())
}

/// The operator's envelope, like the daemon's own API.
fn envelope(status: u16, info: &str) -> HttpResponse {
    HttpResponse::json(status, &serde_json::json!({"stat": false, "info": info}))
}

/// Serves one request; answers through `respond`, now or later.
pub fn serve(hub: &Arc<Hub>, pool: &Arc<Pool>, req: HttpRequest, respond: Responder) {
    let path = req.path.trim_end_matches('/');
    if path == "/agents" {
        respond.send(agents(hub, &req));
        return;
    }
    let Some(rest) = path.strip_prefix(PREFIX) else {
        respond.send(refuse(404, "not found"));
        return;
    };
    // Agents identify themselves by name and prove it with their token.
    let name = req.header(AGENT_HEADER).unwrap_or("").trim().to_string();
    let token = bearer(&req).unwrap_or("");
    if name.is_empty() || token.is_empty() || !hub.authenticate(&name, token) {
        respond.send(refuse(
            401,
            format!("unknown agent or wrong token: send {AGENT_HEADER}: <name> and Authorization: Bearer <token>"),
        ));
        return;
    }
    let post = req.method.eq_ignore_ascii_case("POST");
    let get = req.method.eq_ignore_ascii_case("GET");
    match rest {
        "/poll" if post => match body::<Hello>(&req) {
            Ok(hello) => {
                let wait = query(&req.query, "wait_ms")
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_millis);
                hub.poll(&name, hello, wait, respond);
            }
            Err(e) => respond.send(e),
        },
        "/heartbeat" if post => {
            respond.send(body::<Hello>(&req).map_or_else(|e| e, |h| hub.heartbeat(&name, h)))
        }
        "/accept" if post => {
            respond.send(body::<Accept>(&req).map_or_else(|e| e, |a| hub.accept(&name, a)))
        }
        "/exit" if post => {
            respond.send(body::<Exit>(&req).map_or_else(|e| e, |x| hub.exit(&name, x)))
        }
        "/output" if post => match body::<Chunk>(&req) {
            Ok(chunk) => match hub.output(&name, chunk) {
                Delivered::Answer(a) => respond.send(a),
                Delivered::Lines(out, lines, run) => {
                    // The host may make output wait while its log queue is
                    // full (back-pressure): deliver on a worker thread, not
                    // on the thread that serves HTTP.
                    let hub = hub.clone();
                    pool.submit(move || {
                        for (stream, text) in lines {
                            out.line(stream, &text);
                        }
                        hub.delivered(run);
                        respond.send(json(200, &serde_json::json!({"ok": true})));
                    });
                }
            },
            Err(e) => respond.send(e),
        },
        _ if get && rest.starts_with("/files/") => serve_files(
            hub,
            pool,
            &name,
            &rest["/files/".len()..],
            &req.query,
            respond,
        ),
        "/poll" | "/heartbeat" | "/accept" | "/exit" | "/output" => {
            respond.send(refuse(405, "use POST"))
        }
        _ => respond.send(refuse(404, "not found")),
    }
}

/// `GET /v1/files/<lease>` (the listing) and `/v1/files/<lease>/<n>?offset=`
/// (a piece of entry `n`).
fn serve_files(
    hub: &Arc<Hub>,
    pool: &Arc<Pool>,
    name: &str,
    rest: &str,
    query_text: &str,
    respond: Responder,
) {
    let (lease, index) = match rest.split_once('/') {
        Some((l, i)) => match i.parse::<usize>() {
            Ok(i) => (l, Some(i)),
            Err(_) => {
                respond.send(refuse(404, "not found"));
                return;
            }
        },
        None => (rest, None),
    };
    let (src, listed) = match hub.files(name, lease) {
        Ok(found) => found,
        Err(resp) => {
            respond.send(resp);
            return;
        }
    };
    let offset = query(query_text, "offset")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let (hub, name, lease) = (hub.clone(), name.to_string(), lease.to_string());
    pool.submit(move || {
        let listed = match listed {
            Some(l) => l,
            None => match files::list(&src) {
                Ok(l) => {
                    let l = Arc::new(l);
                    hub.set_files(&name, &lease, l.clone());
                    l
                }
                Err(e) => {
                    respond.send(refuse(422, e));
                    return;
                }
            },
        };
        let resp = match index {
            None => json(200, &listed.manifest),
            Some(i) => match (listed.paths.get(i), listed.manifest.entries.get(i)) {
                (Some(path), Some(entry)) if entry.kind == "file" => {
                    match files::piece(path, offset) {
                        Ok(bytes) => HttpResponse {
                            status: 200,
                            headers: vec![(
                                "content-type".to_string(),
                                "application/octet-stream".to_string(),
                            )],
                            body: bytes,
                        },
                        Err(e) => refuse(422, e),
                    }
                }
                (Some(_), Some(_)) => refuse(400, "that entry is not a file"),
                _ => refuse(404, "no such entry"),
            },
        };
        respond.send(resp);
    });
}

/// `GET /agents`: people with a jobx token holding a role on every project.
fn agents(hub: &Hub, req: &HttpRequest) -> HttpResponse {
    if !req.method.eq_ignore_ascii_case("GET") {
        return envelope(405, "use GET");
    }
    let Some(user) = &req.user else {
        return envelope(
            401,
            "authentication required: Authorization: Bearer <jobx token>",
        );
    };
    if !req.roles.contains_key("*") {
        return envelope(
            403,
            &format!("token {user:?} needs a role on \"*\" to list agents"),
        );
    }
    HttpResponse::json(200, &serde_json::json!({"stat": true, "data": hub.list()}))
}
