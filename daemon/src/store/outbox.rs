//! The notification outbox: events waiting for delivery (written in the
//! same transaction as the state change that causes them), and the most
//! recent delivery attempts.

use super::tasks::Tx;
use super::*;
use crate::notify::{Attempt, Pending};

/// outbox id → Pending JSON: one row per (event, webhook).
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// (due time ms, outbox id): the delivery worker takes the first row.
pub(super) const OUTBOX_DUE: TableDefinition<(i64, u64), ()> = TableDefinition::new("outbox_due");
/// attempt seq → Attempt JSON, the newest `ATTEMPTS_KEPT`.
pub(super) const DELIVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("deliveries");

/// Delivery attempts kept for `GET /notify/deliveries`.
pub const ATTEMPTS_KEPT: u64 = 10_000;

pub(crate) fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(OUTBOX)?;
    tx.open_table(OUTBOX_DUE)?;
    tx.open_table(DELIVERIES)?;
    Ok(())
}

impl Tx<'_> {
    /// Queues one event for each of `urls`, due now, in this transaction.
    pub fn enqueue_event(
        &self,
        event_id: &str,
        event: &str,
        project: u64,
        body: &str,
        urls: &[String],
    ) -> Result<()> {
        let now = crate::clock::now_ms();
        for url in urls {
            let id = next_id(self.0, "outbox")?;
            let p = Pending {
                id,
                event_id: event_id.to_string(),
                event: event.to_string(),
                project,
                url: url.clone(),
                body: body.to_string(),
                attempt: 0,
                due_ms: now,
                created_ms: now,
            };
            self.0
                .open_table(OUTBOX)?
                .insert(id, to_json(&p)?.as_slice())?;
            self.0.open_table(OUTBOX_DUE)?.insert((now, id), ())?;
        }
        Ok(())
    }
}

impl Store {
    /// The delivery due first (possibly in the future), if any.
    pub fn next_delivery(&self) -> Result<Option<Pending>> {
        self.read(|tx| {
            let due = tx.open_table(OUTBOX_DUE)?;
            let Some(first) = due.first()? else {
                return Ok(None);
            };
            let (_, id) = first.0.value();
            get_json(&tx.open_table(OUTBOX)?, id)
        })
    }

    /// Records an attempt on `p`: with `retry_at` the delivery stays queued
    /// for then, without it leaves the outbox. One transaction.
    pub fn record_attempt(&self, p: &Pending, mut a: Attempt, retry_at: Option<i64>) -> Result<()> {
        self.write(|tx| {
            let mut due = tx.open_table(OUTBOX_DUE)?;
            due.remove((p.due_ms, p.id))?;
            let mut outbox = tx.open_table(OUTBOX)?;
            match retry_at {
                Some(at) => {
                    let mut next = p.clone();
                    next.attempt = a.attempt;
                    next.due_ms = at;
                    outbox.insert(p.id, to_json(&next)?.as_slice())?;
                    due.insert((at, p.id), ())?;
                }
                None => {
                    outbox.remove(p.id)?;
                }
            }
            a.seq = next_id(tx, "delivery")?;
            let mut log = tx.open_table(DELIVERIES)?;
            log.insert(a.seq, to_json(&a)?.as_slice())?;
            // Bounded: the oldest attempts give way.
            loop {
                let oldest = match log.first()? {
                    Some(row) => row.0.value(),
                    None => break,
                };
                if oldest + ATTEMPTS_KEPT > a.seq {
                    break;
                }
                log.remove(oldest)?;
            }
            Ok(())
        })
    }

    /// Attempts newest first, older than `before` (a seq), that `visible`
    /// lets through, at most `limit`.
    pub fn deliveries(
        &self,
        before: Option<u64>,
        limit: usize,
        visible: impl Fn(&Attempt) -> bool,
    ) -> Result<Vec<Attempt>> {
        self.read(|tx| {
            let t = tx.open_table(DELIVERIES)?;
            let hi = before.map(|b| b.saturating_sub(1)).unwrap_or(u64::MAX);
            let mut out = Vec::new();
            for row in t.range(..=hi)?.rev() {
                let a: Attempt = from_json(row?.1.value())?;
                if visible(&a) {
                    out.push(a);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    /// Deliveries still queued.
    #[cfg(test)]
    pub fn outbox_len(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        self.read(|tx| Ok(tx.open_table(OUTBOX)?.len()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(p: &Pending, n: u32) -> Attempt {
        Attempt {
            seq: 0,
            event_id: p.event_id.clone(),
            event: p.event.clone(),
            project: p.project,
            url: p.url.clone(),
            attempt: n,
            status: Some(500),
            error: None,
            outcome: "retry".into(),
            time_ms: 0,
            next_retry_ms: None,
        }
    }

    #[test]
    fn queued_retried_delivered_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("jobx-outbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open(&dir).expect("open");
        assert!(s.next_delivery().expect("read").is_none());
        s.tx(|tx| {
            tx.enqueue_event(
                "Ev1",
                "finished",
                10,
                "{}",
                &["http://a/".to_string(), "http://b/".to_string()],
            )
        })
        .expect("enqueue");
        assert_eq!(s.outbox_len().expect("len"), 2);
        let p = s.next_delivery().expect("read").expect("one due");
        assert_eq!(p.url, "http://a/");
        // a retry far ahead puts the other one first
        s.record_attempt(&p, attempt(&p, 1), Some(i64::MAX - 1))
            .expect("retry");
        let q = s.next_delivery().expect("read").expect("due");
        assert_eq!(q.url, "http://b/");
        s.record_attempt(&q, attempt(&q, 1), None).expect("done");
        drop(s);
        let s = Store::open(&dir).expect("reopen");
        let p2 = s.next_delivery().expect("read").expect("still queued");
        assert_eq!((p2.url.as_str(), p2.attempt), ("http://a/", 1));
        assert_eq!(s.outbox_len().expect("len"), 1);
        let all = s.deliveries(None, 10, |_| true).expect("attempts");
        assert_eq!(all.len(), 2);
        assert!(all[0].seq > all[1].seq, "newest first");
        let only_b = s
            .deliveries(None, 10, |a| a.url.ends_with("b/"))
            .expect("filtered");
        assert_eq!(only_b.len(), 1);
        let older = s.deliveries(Some(all[0].seq), 10, |_| true).expect("page");
        assert_eq!(older.len(), 1);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
