//! `/plugin/<type>/…`: requests handed to an executor plugin's `http` hook.
//! The host hands over the body (read and capped by `ReadBody`) and, when the request carries a valid
//! jobx token, passes the token's name and roles; the plugin decides what
//! needs which (agents bring their own tokens).

use super::*;
use jobx_plugin_api::{HttpRequest, HttpResponse};

pub fn routes(s: &mut tide::Server<Arc<App>>) {
    s.at("/plugin/:type").all(plugin_http);
    s.at("/plugin/:type/*rest").all(plugin_http);
}

async fn plugin_http(mut req: Req) -> tide::Result {
    Ok(match forward(&mut req).await {
        Ok(r) => r,
        Err(e) => render(Err(e)),
    })
}

async fn forward(req: &mut Req) -> Result<tide::Response> {
    let ty = param(req, "type")?.to_string();
    let app = req.state().clone();
    if !app.engine.plugins.has(&ty) {
        return Err(Error::NotFound(format!(
            "no plugin of type {ty:?} is loaded"
        )));
    }
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
    // Already read and capped by the ReadBody middleware.
    let body = req
        .body_bytes()
        .await
        .map_err(|e| Error::Bad(format!("reading body: {e}")))?;
    let hreq = HttpRequest {
        method: req.method().to_string(),
        path,
        query: req.url().query().unwrap_or("").to_string(),
        headers,
        body,
        user,
        roles,
    };
    let (tx, rx) = async_channel::bounded::<HttpResponse>(1);
    app.engine
        .plugins
        .http(
            &ty,
            hreq,
            Box::new(move |r| {
                let _ = tx.try_send(r);
            }),
        )
        .map_err(Error::NotFound)?;
    // A held request (an agent's long-poll) is released when the daemon
    // stops, so that shutdown does not wait for it; agents retry.
    let answer = async { Some(rx.recv().await) }
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
    let resp = answer.map_err(|_| Error::Internal(format!("plugin {ty} did not answer")))?;
    // A plugin's answer is untrusted: a bad status or header must not panic the host.
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
    Ok(r)
}
