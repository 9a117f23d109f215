//! Step logs.

use super::*;
use crate::model::LogRecord;

/// (log key, seq) → LogRecord JSON.
pub(super) const LOGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("logs");

pub(crate) fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(LOGS)?;
    Ok(())
}

impl Store {
    /// Appends log records in one transaction (the log writer's group commit).
    pub fn append_logs(&self, records: &[(String, u64, LogRecord)]) -> Result<()> {
        self.write(|tx| {
            let mut t = tx.open_table(LOGS)?;
            for (key, seq, r) in records {
                t.insert((key.as_str(), *seq), to_json(r)?.as_slice())?;
            }
            Ok(())
        })
    }

    /// The last sequence number written under `key` (0 when none).
    pub fn last_log_seq(&self, key: &str) -> Result<u64> {
        self.read(|tx| {
            let t = tx.open_table(LOGS)?;
            let last = t.range((key, 0)..=(key, u64::MAX))?.next_back();
            match last {
                Some(row) => Ok(row?.0.value().1),
                None => Ok(0),
            }
        })
    }

    /// Records of `key` with seq > `offset`, at most `max`.
    pub fn logs(&self, key: &str, offset: u64, max: usize) -> Result<Vec<(u64, LogRecord)>> {
        self.read(|tx| {
            let t = tx.open_table(LOGS)?;
            let mut out = Vec::new();
            let start = offset.saturating_add(1);
            for row in t.range((key, start)..=(key, u64::MAX))? {
                let (k, v) = row?;
                out.push((k.value().1, from_json(v.value())?));
                if out.len() >= max {
                    break;
                }
            }
            Ok(out)
        })
    }
}
