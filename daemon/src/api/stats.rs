//! `GET /task/:projectid/analysis/*`: statistics over the task time index.

use super::tasks::run;
use super::*;
use crate::store::TaskFilter;

pub fn routes(s: &mut tide::Server<Arc<App>>) {
    s.at("/task/:projectid/analysis/last").get(h(last));
    s.at("/task/:projectid/analysis/date").get(h(date));
    s.at("/task/:projectid/analysis/hour").get(h(hour));
    s.at("/task/:projectid/analysis/runtime").get(h(runtime));
}

/// Tasks created in the last 30 local days (today and the 29 before).
async fn last_30_days(req: &Req, pid: u64) -> Result<Vec<crate::model::TaskSummary>> {
    let now = crate::clock::now_ms();
    // Noon of today minus 29 days lands on the right date even across DST changes.
    let noon =
        crate::clock::local_day_start(&crate::clock::local_date(now)).unwrap_or(now) + 43_200_000;
    let first = crate::clock::local_date(noon - 29 * 86_400_000);
    let from = crate::clock::local_day_start(&first).unwrap_or(noon - 30 * 86_400_000);
    run(req.state(), move |app| {
        app.store
            .tasks_between::<crate::model::TaskSummary>(pid, from, i64::MAX)
    })
    .await
}

async fn last(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let q = query(&req)?;
    let count = match q.get("count") {
        None => 10,
        Some(c) => match c.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return Err(Error::Bad("count: must be 1 to 1000".into())),
        },
    };
    let f = TaskFilter {
        limit: count,
        ..Default::default()
    };
    let tasks = run(req.state(), move |app| app.store.tasks(pid, &f)).await?;
    let out: Vec<Value> = tasks
        .iter()
        .map(|t| json!({"user": t.user, "runtime": t.runtime(), "status": t.status, "name": t.name, "uuid": t.uuid}))
        .collect();
    Ok(Reply::Data(Value::Array(out)))
}

async fn date(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let tasks = last_30_days(&req, pid).await?;
    let rows = crate::stats::by_date(&tasks, crate::clock::local_date);
    Ok(Reply::Data(json!(rows
        .into_iter()
        .map(|(d, n, s)| json!([d, n, s]))
        .collect::<Vec<_>>())))
}

async fn hour(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let tasks = last_30_days(&req, pid).await?;
    let rows = crate::stats::by_hour(&tasks, crate::clock::local_hour);
    Ok(Reply::Data(json!(rows
        .into_iter()
        .map(|(h, n)| json!([h, n]))
        .collect::<Vec<_>>())))
}

async fn runtime(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let tasks = last_30_days(&req, pid).await?;
    let runtimes: Vec<i64> = tasks
        .iter()
        .filter(|t| t.is_finished())
        .filter_map(|t| Some(t.finish_ms? - t.start_ms?))
        .collect();
    let shares: Map<String, Value> = crate::stats::runtime_shares(&runtimes)
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
    Ok(Reply::Data(Value::Object(shares)))
}
