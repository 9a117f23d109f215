//! Webhook notifications. The engine writes an event to the store's outbox
//! in the same transaction as the state change that causes it; one
//! background thread (`worker`) delivers the outbox, with retries, so a slow
//! or failing receiver never holds a rollout back.

pub mod worker;

use crate::config::NotifyConfig;
use crate::error::Result;
use crate::model::{Approval, Subtask, Task};
use crate::store::Tx;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Mutex;

/// What an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A batch waits for a person (failed batch or canary gate).
    Waiting,
    /// An approval step asks its approvers.
    Approval,
    /// A task ended (any status).
    Finished,
    /// A batch failed.
    Failed,
    /// A finished deploy waits for its rollback decision.
    RollbackDecision,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Waiting,
        Kind::Approval,
        Kind::Finished,
        Kind::Failed,
        Kind::RollbackDecision,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Waiting => "waiting",
            Kind::Approval => "approval",
            Kind::Finished => "finished",
            Kind::Failed => "failed",
            Kind::RollbackDecision => "rollback_decision",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One queued delivery: an event for one webhook.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    pub id: u64,
    pub event_id: String,
    pub event: String,
    pub project: u64,
    pub url: String,
    pub body: String,
    /// Attempts made so far.
    pub attempt: u32,
    pub due_ms: i64,
    pub created_ms: i64,
}

/// One delivery attempt, as `GET /notify/deliveries` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    pub seq: u64,
    pub event_id: String,
    pub event: String,
    pub project: u64,
    pub url: String,
    /// 1-based.
    pub attempt: u32,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why the attempt failed without an answer (connection, timeout…).
    pub error: Option<String>,
    /// `delivered`, `retry`, `gave_up` or `dropped` (webhook no longer configured).
    pub outcome: String,
    pub time_ms: i64,
    pub next_retry_ms: Option<i64>,
}

impl Attempt {
    pub fn to_api(&self) -> Value {
        json!({
            "seq": self.seq,
            "event_id": self.event_id,
            "event": self.event,
            "project": self.project,
            "url": self.url,
            "attempt": self.attempt,
            "status": self.status,
            "error": self.error,
            "outcome": self.outcome,
            "time": crate::clock::local(self.time_ms),
            "time_ms": self.time_ms,
            "next_retry": self.next_retry_ms.map(crate::clock::local),
            "next_retry_ms": self.next_retry_ms,
        })
    }
}

/// A configured webhook.
#[derive(Clone, Debug)]
pub struct Hook {
    pub url: String,
    pub events: Vec<Kind>,
    pub secret: String,
}

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Seconds before the next attempt once attempt `n` (1-based) failed:
/// 1, 2, 4 … doubling, at most 300.
pub fn retry_delay_secs(n: u32) -> u64 {
    (1u64 << n.saturating_sub(1).min(9)).min(300)
}

/// The configured webhooks and the worker's wake-up channel.
pub struct Notifier {
    pub hooks: Vec<Hook>,
    pub max_attempts: u32,
    pub timeout_secs: u64,
    slave: String,
    wake: SyncSender<()>,
    woken: Mutex<Option<Receiver<()>>>,
}

impl Notifier {
    pub fn new(cfg: &NotifyConfig, slave: String) -> Notifier {
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        let hooks = cfg
            .webhooks
            .iter()
            .map(|w| Hook {
                url: w.url.clone(),
                events: if w.events.is_empty() {
                    Kind::ALL.to_vec()
                } else {
                    w.events.iter().filter_map(|e| Kind::parse(e)).collect()
                },
                secret: w.secret.clone(),
            })
            .collect();
        Notifier {
            hooks,
            max_attempts: cfg.max_attempts,
            timeout_secs: cfg.timeout_secs,
            slave,
            wake,
            woken: Mutex::new(Some(woken)),
        }
    }

    /// Tells the worker that the outbox changed (after the commit).
    pub fn kick(&self) {
        let _ = self.wake.try_send(());
    }

    /// The worker's end of the wake-up channel (taken once).
    pub(crate) fn take_receiver(&self) -> Option<Receiver<()>> {
        match self.woken.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        }
    }

    pub fn hook(&self, url: &str) -> Option<&Hook> {
        self.hooks.iter().find(|h| h.url == url)
    }

    /// Queues an event about `task` inside the caller's transaction, for
    /// every webhook that wants it (nothing is written when none does).
    pub fn emit(
        &self,
        tx: &Tx,
        kind: Kind,
        task: &Task,
        sub: Option<&Subtask>,
        approval: Option<&Approval>,
    ) -> Result<()> {
        let urls: Vec<String> = self
            .hooks
            .iter()
            .filter(|h| h.events.contains(&kind))
            .map(|h| h.url.clone())
            .collect();
        if urls.is_empty() {
            return Ok(());
        }
        let id = crate::ids::new_uuid();
        let body = event(
            &id,
            kind,
            &self.slave,
            crate::clock::now_ms(),
            task,
            sub,
            approval,
        );
        tx.enqueue_event(&id, kind.as_str(), task.projectid, &body.to_string(), &urls)
    }
}

/// The JSON document of an event (pure).
pub fn event(
    id: &str,
    kind: Kind,
    slave: &str,
    now_ms: i64,
    task: &Task,
    sub: Option<&Subtask>,
    approval: Option<&Approval>,
) -> Value {
    json!({
        "id": id,
        "event": kind.as_str(),
        "time": crate::clock::local(now_ms),
        "time_ms": now_ms,
        "slave": slave,
        "projectid": task.projectid,
        "task": {
            "uuid": task.uuid,
            "name": task.name,
            "group": task.group,
            "user": task.user,
            "action": task.action,
            "status": task.status,
            "reason": task.reason,
            "batches": task.batches,
            "decision": task.decision,
        },
        "batch": sub.map(|s| json!({
            "uuid": s.uuid,
            "number": s.idx + 1,
            "nodes": s.nodes,
            "status": s.status,
            "confirm": s.confirm,
            "reason": s.reason,
            "failed_nodes": s.failed_nodes,
        })),
        "approval": approval.map(|a| json!({
            "uuid": a.uuid,
            "step": a.step,
            "approvers": a.approvers,
            "message": a.message,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retry_schedule() {
        let got: Vec<u64> = (1..=11).map(retry_delay_secs).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay_secs(u32::MAX), 300);
    }

    #[test]
    fn kinds_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("done"), None);
    }
}
