//! Tasks, batches, approvals and step logs.

use super::stream::{Chunks, LogPages};
use super::*;
use crate::engine::NewTask;
use crate::logs::{page, parse_key, KeyKind};
use crate::model::{Opinion, Subtask, Task, TaskBrief, TaskStatus, Waiting};
use crate::store::{PageRow, TaskFilter};

pub fn routes(s: &mut tide::Server<Arc<App>>) {
    s.at("/task/:projectid").get(task_list);
    s.at("/task/:projectid/count").get(h(task_count));
    s.at("/task/:projectid/job/byname").post(h(task_create));
    s.at("/task/:projectid/:uuid")
        .get(h(task_get))
        .put(h(task_stop))
        .delete(h(task_stop));
    s.at("/task/:projectid/:uuid/rollback")
        .put(h(task_rollback));
    s.at("/task/:projectid/:uuid/norollback")
        .put(h(task_norollback));
    s.at("/subtask/:projectid/:taskuuid").get(subtask_list);
    s.at("/subtask/:projectid/:subtaskuuid/confirm")
        .put(h(subtask_confirm));
    s.at("/approval/:projectid").get(h(approval_list));
    s.at("/approval/:projectid/:uuid").put(h(approval_decide));
    s.at("/slave/:slave/log/:key").get(step_log);
}

/// Runs store work on the store's fixed pool of threads (never a thread
/// per waiting request).
pub(super) async fn run<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&App) -> Result<T> + Send + 'static,
) -> Result<T> {
    let a2 = app.clone();
    app.store.offload(move || f(&a2)).await
}

/// A JSON body serialized straight from `body` (no `Value` tree).
fn json_bytes(body: &impl serde::Serialize) -> tide::Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut r = tide::Response::new(200);
            r.set_content_type(mime::JSON);
            r.set_body(bytes);
            r
        }
        Err(e) => render(Err(Error::Internal(format!("encoding the answer: {e}")))),
    }
}

/// `{"stat": true, "data": …}` with the keys in the order of `render`'s.
#[derive(serde::Serialize)]
struct Envelope<T> {
    data: T,
    stat: bool,
}

/// The body of a task list: each row copied from its brief with the
/// members of the moment added (no JSON tree, no decoding of the rows).
fn task_rows_body(briefs: &[TaskBrief], waiting: &[Option<Waiting>]) -> Vec<u8> {
    let now = crate::clock::now_ms();
    let size: usize = briefs.iter().map(|b| b.members.len() + 200).sum();
    let mut out = Vec::with_capacity(size + 32);
    out.extend_from_slice(b"{\"data\":[");
    for (i, (b, w)) in briefs.iter().zip(waiting).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        b.write_row(w.as_ref(), now, &mut out);
    }
    out.extend_from_slice(b"],\"stat\":true}");
    out
}

fn json_body(body: Vec<u8>) -> tide::Response {
    let mut r = tide::Response::new(200);
    r.set_content_type(mime::JSON);
    r.set_body(body);
    r
}

/// The `variable` field: an object, or a JSON object in a string (form bodies).
pub(super) fn variable_of(b: &Map<String, Value>) -> Result<Value> {
    match b.get("variable") {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(Value::Object(m)) => Ok(Value::Object(m.clone())),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Value::Object(Map::new())),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(Error::Bad(
                "variable: must be an object of name: value".into(),
            )),
        },
        Some(_) => Err(Error::Bad(
            "variable: must be an object of name: value".into(),
        )),
    }
}

async fn task_create(mut req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Write)?;
    let b = body(&mut req).await?;
    let variable = variable_of(&b)?;
    // `_nodebatch_` may come as a body field or among the variables.
    let nodebatch = match opt_str(&b, "_nodebatch_")? {
        Some(nb) => Some(nb),
        None => match variable.get("_nodebatch_") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(Error::Bad("variable._nodebatch_: must be a string".into())),
        },
    };
    let new = NewTask {
        nodebatch,
        project: pid,
        jobname: req_str(&b, "jobname")?,
        group: opt_str(&b, "group")?,
        variable,
        uuid: opt_str(&b, "uuid")?,
        calltype: who.calltype().into(),
    };
    let (who2, state) = (who.clone(), req.state().clone());
    let (task, subs) = run(req.state(), move |app| app.engine.plan(&who2, &new)).await?;
    let task = state.engine.create_async(&who, task, subs).await?;
    Ok(Reply::Body(
        json!({"stat": true, "uuid": task.uuid, "data": task.to_api(None)}),
    ))
}

async fn task_list(req: Req) -> tide::Result {
    Ok(match task_list_inner(req).await {
        Ok(r) => r,
        Err(e) => render(Err(e)),
    })
}

async fn task_list_inner(req: Req) -> Result<tide::Response> {
    let (pid, _) = project(&req, Role::Read)?;
    let q = query(&req)?;
    let day = |k: &str| -> Result<Option<i64>> {
        match q.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(d) => crate::clock::local_day_start(d)
                .map(Some)
                .ok_or_else(|| Error::Bad(format!("{k}: {d:?} is not a date YYYY-MM-DD"))),
        }
    };
    let to_ms = day("time_end")?.map(|d| d + 86_400_000);
    let before_id = match q.get("before_id") {
        None => None,
        Some(b) => Some(
            b.parse::<u64>()
                .map_err(|_| Error::Bad("before_id: must be a task id".into()))?,
        ),
    };
    let status = q.get("status").filter(|s| !s.is_empty());
    // `waiting` is derived (what the task waits for), not a stored status.
    let waiting = status.is_some_and(|s| s == "waiting");
    let status = match status.filter(|_| !waiting) {
        None => None,
        Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| {
            Error::Bad(format!(
                "status: {s:?} is not init, running, success, fail, refuse or waiting"
            ))
        })?),
    };
    let f = TaskFilter {
        name: q.get("name").filter(|s| !s.is_empty()).cloned(),
        user: q.get("user").filter(|s| !s.is_empty()).cloned(),
        status,
        taskuuid: q.get("taskuuid").filter(|s| !s.is_empty()).cloned(),
        from_ms: day("time_start")?,
        to_ms,
        before_id,
        limit: query_count(&q, "limit", 1000, 10_000)?,
    };
    // OPEN-C3's placeholder rows go through JSON trees (a compatibility
    // path that reads the task rows).
    let placeholders = q
        .get("allowslavenull")
        .is_some_and(|v| !v.is_empty() && v != "0");
    let rows = run(req.state(), move |app| {
        if !waiting && !placeholders {
            return Ok(Err(list_page(app, pid, &f)?));
        }
        let mut briefs: Vec<TaskBrief> = if waiting {
            let tasks = app.engine.waiting_tasks(pid, &f)?;
            tasks.iter().map(Task::brief).collect()
        } else {
            app.store.tasks(pid, &f)?
        };
        // The newest `limit` rows, in ascending id as OPEN-C3 answers them.
        briefs.reverse();
        let waiting = app.engine.briefs_waiting(&briefs)?;
        if !placeholders {
            return Ok(Err(task_rows_body(&briefs, &waiting)));
        }
        let mut tasks = Vec::with_capacity(briefs.len());
        let mut rows = Vec::with_capacity(briefs.len());
        for (b, w) in briefs.iter().zip(&waiting) {
            if let Some(t) = app.store.task(&b.uuid)? {
                rows.push(t.to_api(w.as_ref()));
                tasks.push(t);
            }
        }
        Ok(Ok(super::openc3::with_placeholders(app, &tasks, rows, &q)))
    })
    .await?;
    Ok(match rows {
        Ok(values) => json_bytes(&Envelope {
            data: values,
            stat: true,
        }),
        Err(body) => json_body(body),
    })
}

/// The body of a plain list page: rows written as the store reads them,
/// the few that may wait completed here, then put in ascending id order.
fn list_page(app: &App, pid: u64, f: &TaskFilter) -> Result<Vec<u8>> {
    let now = crate::clock::now_ms();
    let mut page = app.store.task_page(pid, f, now)?;
    let mut ranges = Vec::with_capacity(page.rows.len());
    for row in page.rows {
        match row {
            PageRow::Written(r) => ranges.push(r),
            PageRow::Waits(b) => {
                let w = app.engine.briefs_waiting(std::slice::from_ref(&b))?;
                let start = page.bytes.len();
                b.write_row(w.first().and_then(Option::as_ref), now, &mut page.bytes);
                ranges.push(start..page.bytes.len());
            }
        }
    }
    // Read newest first; OPEN-C3 answers in ascending id.
    let mut out = Vec::with_capacity(page.bytes.len() + ranges.len() + 32);
    out.extend_from_slice(b"{\"data\":[");
    for (i, r) in ranges.into_iter().rev().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&page.bytes[r]);
    }
    out.extend_from_slice(b"],\"stat\":true}");
    Ok(out)
}

async fn task_count(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let now = crate::clock::now_ms();
    let tasks = run(req.state(), move |app| {
        app.store.tasks_between::<crate::model::TaskSummary>(
            pid,
            crate::clock::month_start(now),
            i64::MAX,
        )
    })
    .await?;
    let mut counts: BTreeMap<String, u64> =
        [TaskStatus::Success, TaskStatus::Running, TaskStatus::Fail]
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
    for t in &tasks {
        *counts.entry(t.status.to_string()).or_default() += 1;
    }
    Ok(Reply::Data(json!(counts)))
}

async fn task_get(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let uuid = param(&req, "uuid")?.to_string();
    let u2 = uuid.clone();
    let t = run(req.state(), move |app| {
        let t = app.engine.task_in(pid, &u2)?;
        app.engine.task_json(&t)
    })
    .await;
    if let Err(Error::NotFound(_)) = &t {
        if let Some(r) = super::openc3::absent_task(req.state(), pid, &uuid).await? {
            return Ok(r);
        }
    }
    Ok(Reply::Data(t?))
}

async fn task_stop(req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Control)?;
    let uuid = param(&req, "uuid")?.to_string();
    run(req.state(), move |app| app.engine.stop(pid, &uuid, &who)).await?;
    Ok(Reply::Body(json!({"stat": true})))
}

async fn task_rollback(req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Control)?;
    let uuid = param(&req, "uuid")?.to_string();
    let rb = run(req.state(), move |app| {
        app.engine.decide_rollback(pid, &uuid, &who, true)
    })
    .await?;
    Ok(Reply::Body(json!({"stat": true, "info": "ok", "uuid": rb})))
}

async fn task_norollback(req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Control)?;
    let uuid = param(&req, "uuid")?.to_string();
    run(req.state(), move |app| {
        app.engine.decide_rollback(pid, &uuid, &who, false)
    })
    .await?;
    Ok(Reply::Body(json!({"stat": true, "info": "ok"})))
}

async fn subtask_list(req: Req) -> tide::Result {
    Ok(match subtask_list_inner(req).await {
        Ok(r) => r,
        Err(e) => render(Err(e)),
    })
}

async fn subtask_list_inner(req: Req) -> Result<tide::Response> {
    let (pid, _) = project(&req, Role::Read)?;
    let uuid = param(&req, "taskuuid")?.to_string();
    let subs = run(req.state(), move |app| {
        app.engine.task_in(pid, &uuid)?;
        app.store.subtasks(&uuid)
    })
    .await?;
    let rows: Vec<_> = subs.iter().map(Subtask::api).collect();
    Ok(json_bytes(&Envelope {
        data: rows,
        stat: true,
    }))
}

async fn subtask_confirm(mut req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Control)?;
    let uuid = param(&req, "subtaskuuid")?.to_string();
    let b = body(&mut req).await?;
    known_fields(&b, &["action"], "")?;
    let retry = match opt_str(&b, "action")?.as_deref() {
        None | Some("") | Some("continue") => false,
        Some("retry") => true,
        Some(other) => {
            return Err(Error::Bad(format!(
                "action: {other:?} is not continue or retry"
            )))
        }
    };
    run(req.state(), move |app| {
        app.engine.confirm(pid, &uuid, &who, retry)
    })
    .await?;
    Ok(Reply::Data(Value::Bool(true)))
}

async fn approval_list(req: Req) -> Result<Reply> {
    let (pid, _) = project(&req, Role::Read)?;
    let list = run(req.state(), move |app| app.store.pending_approvals(pid)).await?;
    Ok(Reply::Data(Value::Array(
        list.iter().map(|a| a.to_api()).collect(),
    )))
}

async fn approval_decide(mut req: Req) -> Result<Reply> {
    let (pid, who) = project(&req, Role::Read)?;
    let uuid = param(&req, "uuid")?.to_string();
    let b = body(&mut req).await?;
    known_fields(&b, &["opinion"], "")?;
    let opinion = match opt_str(&b, "opinion")? {
        Some(o) => Opinion::parse(&o)
            .ok_or_else(|| Error::Bad(format!("opinion: {o:?} is not agree or refuse")))?,
        None => return Err(Error::Bad("opinion: missing (agree or refuse)".into())),
    };
    run(req.state(), move |app| {
        app.engine.decide(pid, &uuid, &who, opinion)
    })
    .await?;
    Ok(Reply::Data(Value::Bool(true)))
}

/// Whether the work behind a log key has ended (no more records will come).
fn log_completed(app: &App, task: &Task, sub: Option<&Subtask>) -> Result<bool> {
    let now = app.store.task(&task.uuid)?;
    if now.as_ref().is_none_or(Task::is_finished) {
        return Ok(true);
    }
    let Some(s) = sub else { return Ok(false) };
    let s = app.store.subtask(&s.uuid)?.unwrap_or_else(|| s.clone());
    Ok(crate::engine::state::batch_ended(&s))
}

/// Resolves a log key to its task (and batch) and checks read access.
fn log_owner(app: &App, key: &str) -> Result<(Task, Option<Subtask>)> {
    let kind = parse_key(key).ok_or_else(|| Error::NotFound("no such log".into()))?;
    let (task_uuid, sub) = match kind {
        KeyKind::Uuid(u) => match app.store.task(&u)? {
            Some(t) => return Ok((t, None)),
            None => {
                let s = app
                    .store
                    .subtask(&u)?
                    .ok_or_else(|| Error::NotFound("no such log".into()))?;
                (s.parent_uuid.clone(), Some(s))
            }
        },
        KeyKind::Step { subtask } => {
            let s = app
                .store
                .subtask(&subtask)?
                .ok_or_else(|| Error::NotFound("no such log".into()))?;
            (s.parent_uuid.clone(), Some(s))
        }
    };
    let t = app
        .store
        .task(&task_uuid)?
        .ok_or_else(|| Error::NotFound("no such log".into()))?;
    Ok((t, sub))
}

fn record_json(seq: u64, r: &crate::model::LogRecord) -> Value {
    json!({"seq": seq, "time": r.time as f64 / 1000.0, "node": r.node, "stream": r.stream, "text": r.text})
}

fn record_line(r: &crate::model::LogRecord) -> String {
    if r.node.is_empty() {
        r.text.clone()
    } else {
        format!("[{}] {}", r.node, r.text)
    }
}

/// Whether the client asks for a page (a browser).
fn wants_html(req: &Req) -> bool {
    req.header("accept")
        .is_some_and(|a| a.last().as_str().contains("text/html"))
}

async fn step_log(req: Req) -> tide::Result {
    let browser = wants_html(&req);
    Ok(match step_log_inner(req, browser).await {
        Ok(r) => r,
        Err(e) => {
            let unauthorized = matches!(e, Error::Unauthorized(_));
            let mut r = render(Err(e));
            if unauthorized && browser {
                // Lets a browser ask for the token name and token.
                r.insert_header(
                    "www-authenticate",
                    "Basic realm=\"jobx\", charset=\"UTF-8\"",
                );
            }
            r
        }
    })
}

async fn step_log_inner(req: Req, browser: bool) -> Result<tide::Response> {
    let app = req.state().clone();
    // Authenticate before looking anything up, so strangers learn nothing.
    let who = principal(&req)?;
    let slave = param(&req, "slave")?;
    if slave != app.slave {
        return Err(Error::NotFound(format!(
            "this daemon is {:?}, not {slave:?}",
            app.slave
        )));
    }
    let key = param(&req, "key")?.to_string();
    let k2 = key.clone();
    let (task, sub) = run(&app, move |app| log_owner(app, &k2)).await?;
    authorize(who, task.projectid, Role::Read)?;
    let q = query(&req)?;
    let format = q
        .get("format")
        .cloned()
        .unwrap_or_else(|| if browser { "html" } else { "text" }.into());
    match format.as_str() {
        "text" => {
            let (t2, s2) = (task.clone(), sub.clone());
            let upto = log_end(&app, &key, t2, s2).await?.0;
            let (mut out, body) = Chunks::new();
            async_std::task::spawn(async move {
                // Written as it is read: a long log never sits in memory whole.
                let mut pages = LogPages::new(key.clone(), 0, upto);
                loop {
                    let page = match pages.next(&app, usize::MAX).await {
                        Ok(p) if p.is_empty() => break,
                        Ok(p) => p,
                        Err(e) => {
                            log::error!("reading log {key}: {e}");
                            return;
                        }
                    };
                    for (_, r) in &page {
                        if !r.node.is_empty() {
                            out.push("[");
                            out.push(&r.node);
                            out.push("] ");
                        }
                        out.push(&r.text);
                        out.push("\n");
                        if !out.flush_full().await {
                            return; // the client went away
                        }
                    }
                }
                out.finish().await;
            });
            let mut r = tide::Response::new(200);
            r.set_content_type(mime::PLAIN);
            r.set_body(body);
            Ok(r)
        }
        "json" => {
            let offset = query_offset(&q)?;
            let max = query_count(&q, "max", 1000, 10_000)?;
            let (t2, s2) = (task.clone(), sub.clone());
            // Read completion first: records written before the end are then all visible.
            let completed = run(&app, move |app| log_completed(app, &t2, s2.as_ref())).await?;
            // At most `max` records and about JSON_PAGE_BYTES of their text
            // (always one record, however large).
            let mut pages = LogPages::new(key, offset, u64::MAX);
            let mut records = Vec::new();
            let (mut bytes, mut cut) = (0usize, false);
            'read: loop {
                let page = pages.next(&app, max - records.len()).await?;
                for (seq, r) in &page {
                    let n = super::stream::record_bytes(r);
                    if !records.is_empty() && bytes + n > JSON_PAGE_BYTES {
                        cut = true;
                        break 'read;
                    }
                    bytes += n;
                    records.push(record_json(*seq, r));
                    pages.offset = *seq;
                    if records.len() == max {
                        cut = true;
                        break 'read;
                    }
                }
                if page.is_empty() || pages.ended() {
                    break;
                }
            }
            let next = pages.offset;
            let complete = completed && !cut;
            Ok(render(Ok(Reply::Data(
                json!({"records": records, "next_offset": next, "completed": complete}),
            ))))
        }
        "sse" => Ok(sse(req, app, key, task, sub)),
        "html" => {
            let (t2, s2) = (task.clone(), sub.clone());
            let (upto, completed) = log_end(&app, &key, t2, s2).await?;
            let state = if completed {
                let (t3, s3) = (task.clone(), sub.clone());
                run(&app, move |app| end_state(app, &t3, s3.as_ref())).await?
            } else {
                "running".to_string()
            };
            let slave = percent_encoding::utf8_percent_encode(
                &app.slave,
                percent_encoding::NON_ALPHANUMERIC,
            )
            .to_string();
            let (mut out, body) = Chunks::new();
            async_std::task::spawn(async move {
                // Written as it is read: a long log never sits in memory whole.
                out.push(&page::head(&format!("jobx log {key}"), &state));
                let mut pages = LogPages::new(key.clone(), 0, upto);
                loop {
                    let batch = match pages.next(&app, usize::MAX).await {
                        Ok(p) if p.is_empty() => break,
                        Ok(p) => p,
                        Err(e) => {
                            log::error!("reading log {key}: {e}");
                            return;
                        }
                    };
                    for (_, r) in &batch {
                        page::record(&mut out, &r.stream, &r.node, &r.text);
                        if !out.flush_full().await {
                            return; // the client went away
                        }
                    }
                }
                // Records after the last one shown come over SSE.
                let last = pages.offset;
                let sse_url = format!("/slave/{slave}/log/{key}?format=sse&offset={last}");
                out.push(&page::tail(&sse_url, completed));
                out.finish().await;
            });
            let mut r = tide::Response::new(200);
            r.set_content_type(mime::HTML);
            r.set_body(body);
            Ok(r)
        }
        other => Err(Error::Bad(format!(
            "format: {other:?} is not text, json, sse or html"
        ))),
    }
}

/// Record text a JSON page holds at most (one record always).
const JSON_PAGE_BYTES: usize = 1 << 20;

/// How the work behind a log key ended, for people: the task's final
/// status and reason, or (a batch's key, its task still running) the batch's.
fn end_state(app: &App, task: &Task, sub: Option<&Subtask>) -> Result<String> {
    let with_reason = |what: String, reason: &str| {
        if reason.is_empty() {
            what
        } else {
            format!("{what} ({reason})")
        }
    };
    if let Some(t) = app.store.task(&task.uuid)?.filter(Task::is_finished) {
        return Ok(with_reason(format!("finished: {}", t.status), &t.reason));
    }
    match sub
        .map(|s| app.store.subtask(&s.uuid))
        .transpose()?
        .flatten()
    {
        Some(s) => Ok(with_reason(format!("batch ended: {}", s.status), &s.reason)),
        None => Ok("finished".into()),
    }
}

/// Where a streamed view of a log ends: the last record stored now, and
/// whether the key's work has ended (read first, so that every record
/// written before the end is then visible).
async fn log_end(
    app: &Arc<App>,
    key: &str,
    task: Task,
    sub: Option<Subtask>,
) -> Result<(u64, bool)> {
    let k = key.to_string();
    run(app, move |app| {
        let done = log_completed(app, &task, sub.as_ref())?;
        Ok((app.store.last_log_seq(&k)?, done))
    })
    .await
}

/// Server-Sent Events: every record as JSON (so embedded newlines are safe),
/// then `event: end` once the key's work has ended.
fn sse(req: Req, app: Arc<App>, key: String, task: Task, sub: Option<Subtask>) -> tide::Response {
    let start = query(&req)
        .ok()
        .and_then(|q| q.get("offset").and_then(|o| o.parse::<u64>().ok()))
        .unwrap_or(0);
    tide::sse::upgrade(req, move |_req, sender| {
        let (app, key, task, sub) = (app.clone(), key.clone(), task.clone(), sub.clone());
        async move {
            let mut pages = LogPages::new(key.clone(), start, u64::MAX);
            loop {
                let listener = app.engine.logs.listen();
                let (t2, s2) = (task.clone(), sub.clone());
                let to_500 = |e: Error| tide::Error::from_str(500, e.to_string());
                let done = run(&app, move |app| log_completed(app, &t2, s2.as_ref()))
                    .await
                    .map_err(to_500)?;
                // Byte-bounded reads; `more` when one was cut short.
                let page = pages.next(&app, usize::MAX).await.map_err(to_500)?;
                let more = !pages.ended();
                for (seq, r) in &page {
                    let mut v = record_json(*seq, r);
                    v["html"] = Value::String(crate::logs::ansi_to_html(&record_line(r)));
                    sender
                        .send("message", v.to_string(), Some(&seq.to_string()))
                        .await?;
                }
                if done && !more {
                    let (t3, s3) = (task.clone(), sub.clone());
                    let state = run(&app, move |app| end_state(app, &t3, s3.as_ref()))
                        .await
                        .map_err(to_500)?;
                    sender
                        .send("end", json!({ "state": state }).to_string(), None)
                        .await?;
                    return Ok(());
                }
                if !more {
                    // Wake on the next commit, or every 15 s to notice an end without new records.
                    listener
                        .or(async {
                            async_io::Timer::after(std::time::Duration::from_secs(15)).await;
                        })
                        .await;
                }
            }
        }
    })
}
