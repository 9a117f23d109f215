//! `/plugin/<type>/…`: requests handed to an executor plugin's `http` hook.
//! The host hands over the body (read and capped by `ReadBody`) and, when the request carries a valid
//! jobx token, passes the token's name and roles; the plugin decides what
//! needs which (agents bring their own tokens).
//!
//! A plugin may hold a request for long (an agent's long-poll), and
//! thousands of them at once: the request is read into the plugin's
//! [`HttpRequest`] in a future of its own, freed before the wait, so a held
//! request keeps only a one-shot slot for the answer.

use super::*;
use event_listener::Event;
use jobx_plugin_api::{HttpRequest, HttpResponse};
use std::sync::Mutex;

pub fn routes(s: &mut tide::Server<Arc<App>>) {
    s.at("/plugin/:type").all(plugin_http);
    s.at("/plugin/:type/*rest").all(plugin_http);
}

/// Not an `async fn`: its argument would stay in the future while the
/// plugin holds the answer.
fn plugin_http(req: Req) -> impl Future<Output = tide::Result> + Send + 'static {
    let handed = Box::pin(hand_over(req));
    async move {
        let answer = match handed.await {
            Ok(waiting) => waiting.answer().await,
            Err(e) => Err(e),
        };
        Ok(match answer {
            Ok(r) => r,
            Err(e) => render(Err(e)),
        })
    }
}

/// Where the plugin's answer lands; it may come from any thread, once.
#[derive(Default)]
struct Slot {
    answer: Mutex<Option<HttpResponse>>,
    /// The plugin dropped its responder without answering.
    dropped: std::sync::atomic::AtomicBool,
    ready: Event,
}

/// Fills the slot when called, or marks it dropped when never called.
struct Reply(Option<Arc<Slot>>);

impl Reply {
    fn send(mut self, r: HttpResponse) {
        if let Some(slot) = self.0.take() {
            *slot.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            slot.ready.notify(usize::MAX);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.dropped
                .store(true, std::sync::atomic::Ordering::SeqCst);
            slot.ready.notify(usize::MAX);
        }
    }
}

/// A request handed to a plugin, its answer still to come.
struct Waiting {
    ty: String,
    slot: Arc<Slot>,
}

impl Waiting {
    /// The plugin's answer when it comes; 503 when the daemon stops first.
    async fn answer(self) -> Result<tide::Response> {
        // A held request (an agent's long-poll) is released when the daemon
        // stops, so that shutdown does not wait for it; agents retry.
        let slot = &self.slot;
        let answer = async {
            loop {
                let listener = slot.ready.listen();
                if let Some(a) = slot.answer.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    return Some(Ok(a));
                }
                if slot.dropped.load(std::sync::atomic::Ordering::SeqCst) {
                    return Some(Err(()));
                }
                listener.await;
            }
        }
        .or(async {
            crate::ops::stopping().await;
            None
        })
        .await;
        let Some(answer) = answer else {
            let mut r = tide::Response::new(503);
            r.insert_header("retry-after", "1");
            r.insert_header("connection", "close");
            r.set_content_type(tide::http::mime::JSON);
            r.set_body(json!({"stat": false, "info": "jobxd is stopping; retry"}).to_string());
            return Ok(r);
        };
        let ty = &self.ty;
        let resp = answer.map_err(|_| Error::Internal(format!("plugin {ty} did not answer")))?;
        Ok(response(resp))
    }
}

/// Reads the request and hands it to the plugin.
async fn hand_over(mut req: Req) -> Result<Waiting> {
    let ty = param(&req, "type")?.to_string();
    let app = req.state().clone();
    if !app.engine.plugins.has(&ty) {
        return Err(Error::NotFound(format!(
            "no plugin of type {ty:?} is loaded"
        )));
    }
    // Already read and capped by the ReadBody middleware.
    let body = req
        .body_bytes()
        .await
        .map_err(|e| Error::Bad(format!("reading body: {e}")))?;
    let hreq = plugin_request(&req, &ty, body);
    drop(req);
    let slot = Arc::new(Slot::default());
    let reply = Reply(Some(slot.clone()));
    app.engine
        .plugins
        .http(&ty, hreq, Box::new(move |r| reply.send(r)))
        .map_err(Error::NotFound)?;
    Ok(Waiting { ty, slot })
}

/// The plugin's view of the request.
fn plugin_request(req: &Req, ty: &str, body: Vec<u8>) -> HttpRequest {
    let prefix = format!("/plugin/{ty}");
    let path = req
        .url()
        .path()
        .strip_prefix(&prefix)
        .unwrap_or("")
        .to_string();
    let (user, roles) = match principal(req) {
        Ok(p) => (Some(p.name.clone()), p.roles()),
        Err(_) => (None, BTreeMap::new()),
    };
    let headers = req
        .iter()
        .map(|(name, values)| {
            (
                name.as_str().to_string(),
                values.last().as_str().to_string(),
            )
        })
        .collect();
    HttpRequest {
        method: req.method().to_string(),
        path,
        query: req.url().query().unwrap_or("").to_string(),
        headers,
        body,
        user,
        roles,
    }
}

/// The plugin's answer as a response. It is untrusted: a bad status or
/// header must not panic the host.
fn response(resp: HttpResponse) -> tide::Response {
    let status = tide::StatusCode::try_from(resp.status).unwrap_or(tide::StatusCode::BadGateway);
    let mut r = tide::Response::new(status);
    for (k, v) in &resp.headers {
        let name_ok = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        let value_ok = v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
        if name_ok && value_ok {
            r.insert_header(k.as_str(), v.as_str());
        }
    }
    r.set_body(resp.body);
    r
}
