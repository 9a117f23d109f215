//! The one delivery thread: takes the outbox's first due delivery, POSTs
//! it, and records the attempt (delivered, or queued again with a backoff),
//! so deliveries survive a restart and nothing waits on a receiver but this
//! thread.

use super::{retry_delay_secs, Attempt, Notifier, Pending};
use crate::engine::Engine;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

/// How long the thread sleeps when nothing is due and nobody wakes it.
const IDLE: Duration = Duration::from_secs(30);

pub struct Worker {
    stop: Arc<AtomicBool>,
    notifier: Arc<Notifier>,
    join: Option<std::thread::JoinHandle<()>>,
}

/// Starts the delivery thread (it idles when no webhook is configured).
pub fn start(engine: Arc<Engine>) -> Worker {
    let stop = Arc::new(AtomicBool::new(false));
    let notifier = engine.notify.clone();
    let join = notifier.take_receiver().and_then(|rx| {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("jobx-notify".into())
            .spawn(move || run(&engine, &rx, &stop))
            .map_err(|e| log::error!("cannot start the webhook delivery thread: {e}"))
            .ok()
    });
    Worker {
        stop,
        notifier,
        join,
    }
}

impl Worker {
    /// Stops the thread after the delivery in flight, if any.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.notifier.kick();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn run(e: &Engine, woken: &Receiver<()>, stop: &AtomicBool) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(e.notify.timeout_secs.max(1)))
        .redirects(0)
        .build();
    while !stop.load(Ordering::SeqCst) {
        let wait = match e.store.next_delivery() {
            Err(err) => {
                log::error!("webhook outbox: {err}");
                Duration::from_secs(5)
            }
            Ok(None) => IDLE,
            Ok(Some(p)) => {
                let now = crate::clock::now_ms();
                if p.due_ms > now {
                    Duration::from_millis((p.due_ms - now) as u64).min(IDLE)
                } else {
                    if let Err(err) = deliver(e, &agent, &p) {
                        log::error!("webhook outbox: {err}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    continue;
                }
            }
        };
        let _ = woken.recv_timeout(wait);
    }
}

/// One attempt on `p`, recorded in the store.
fn deliver(e: &Engine, agent: &ureq::Agent, p: &Pending) -> crate::error::Result<()> {
    let n = p.attempt + 1;
    let mut a = Attempt {
        seq: 0,
        event_id: p.event_id.clone(),
        event: p.event.clone(),
        project: p.project,
        url: p.url.clone(),
        attempt: n,
        status: None,
        error: None,
        outcome: String::new(),
        time_ms: crate::clock::now_ms(),
        next_retry_ms: None,
    };
    let Some(hook) = e.notify.hook(&p.url) else {
        a.outcome = "dropped".into();
        a.error = Some("webhook no longer configured".into());
        e.metrics.webhook("dropped");
        return e.store.record_attempt(p, a, None);
    };
    let result = agent
        .post(&p.url)
        .set("content-type", "application/json")
        .set("user-agent", concat!("jobxd/", env!("CARGO_PKG_VERSION")))
        .set("x-jobx-event", &p.event)
        .set("x-jobx-event-id", &p.event_id)
        .set("x-jobx-delivery-attempt", &n.to_string())
        .set(
            "x-jobx-signature",
            &super::signature(&hook.secret, p.body.as_bytes()),
        )
        .send_string(&p.body);
    match result {
        Ok(r) => {
            a.status = Some(r.status());
            // Read the answer so the connection can be reused.
            let _ = r.into_string();
        }
        Err(ureq::Error::Status(code, r)) => {
            a.status = Some(code);
            let _ = r.into_string();
        }
        Err(err) => a.error = Some(err.to_string()),
    }
    let ok = a.status.is_some_and(|s| (200..300).contains(&s));
    let retry_at = if ok {
        a.outcome = "delivered".into();
        None
    } else if n >= e.notify.max_attempts {
        a.outcome = "gave_up".into();
        None
    } else {
        a.outcome = "retry".into();
        Some(crate::clock::now_ms() + retry_delay_secs(n) as i64 * 1000)
    };
    a.next_retry_ms = retry_at;
    e.metrics.webhook(&a.outcome);
    if !ok {
        log::warn!(
            "webhook {} event {} attempt {n}: {}",
            p.url,
            p.event_id,
            a.error
                .clone()
                .unwrap_or_else(|| format!("HTTP {}", a.status.unwrap_or(0)))
        );
    }
    e.store.record_attempt(p, a, retry_at)
}
