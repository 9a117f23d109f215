//! `GET /notify/deliveries`: recent webhook delivery attempts.

use super::*;

pub fn routes(s: &mut tide::Server<Arc<App>>) {
    s.at("/notify/deliveries").get(h(deliveries));
}

/// `scheme://host:port` of a URL: what the listing shows (a path or query
/// may carry a receiver's secret, as chat webhooks do).
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{scheme}://{host}")
}

/// Attempts newest first. A caller sees the attempts of events of projects
/// it may read (an admin on `"*"` sees all).
/// Query: `limit` (1–1000, default 100), `before` (a `seq`, to page to
/// older ones), `event_id`, `projectid`.
async fn deliveries(req: Req) -> Result<Reply> {
    let who = principal(&req)?;
    let q = query(&req)?;
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return Err(Error::Bad("limit: must be 1 to 1000".into())),
        },
    };
    let before = match q.get("before") {
        None => None,
        Some(b) => Some(
            b.parse::<u64>()
                .map_err(|_| Error::Bad("before: must be a seq number".into()))?,
        ),
    };
    let project = match q.get("projectid") {
        None => None,
        Some(p) => Some(parse_project(p)?),
    };
    let event_id = q.get("event_id").cloned();
    let list = tasks::run(req.state(), move |app| {
        app.store.deliveries(before, limit, |a| {
            who.may(a.project, Role::Read)
                && project.is_none_or(|p| p == a.project)
                && event_id.as_ref().is_none_or(|e| e == &a.event_id)
        })
    })
    .await?;
    Ok(Reply::Data(Value::Array(
        list.iter()
            .map(|a| {
                let mut v = a.to_api();
                v["url"] = Value::String(origin(&a.url));
                v
            })
            .collect(),
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins_hide_paths() {
        assert_eq!(
            super::origin("http://hooks.example:8080/x/SECRET?a=1"),
            "http://hooks.example:8080"
        );
        assert_eq!(super::origin("https://h"), "https://h");
    }
}
