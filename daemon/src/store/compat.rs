//! Reads behind the OPEN-C3 calls that jobx's own API does not make: tasks
//! by name over every project (flowlines), task counts in a time range.

use super::tasks::{TASKS, TASK_BRIEFS, TASK_INDEX, TASK_TIME};
use super::*;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The few fields of a task the flowline calls look at.
#[derive(Clone, Debug, Deserialize)]
pub struct NamedTask {
    pub id: u64,
    pub projectid: u64,
    pub uuid: String,
    pub name: String,
    pub status: crate::model::TaskStatus,
    pub finish_ms: Option<i64>,
    /// Normalised variables (name → text).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

impl Store {
    /// Visits every task named exactly `name`, project by project in id
    /// order, until `visit` answers false. Memory stays constant; the walk
    /// reads every task row (there is no index by name).
    pub fn visit_tasks_named(
        &self,
        name: &str,
        mut visit: impl FnMut(NamedTask) -> bool,
    ) -> Result<()> {
        self.read(|tx| {
            let idx = tx.open_table(TASK_INDEX)?;
            let tasks = tx.open_table(TASKS)?;
            // Rows without the name's JSON text are skipped before decoding.
            let needle = serde_json::to_vec(name)?;
            for row in idx.iter()? {
                let (_, uuid) = row?;
                let Some(raw) = tasks.get(uuid.value())? else {
                    continue;
                };
                let bytes = raw.value();
                if !bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                    continue;
                }
                let t: NamedTask = from_json(bytes)?;
                if t.name == name && !visit(t) {
                    break;
                }
            }
            Ok(())
        })
    }

    /// Number of tasks per status among those of `project` created in `[from, to)`.
    pub fn status_counts_between(
        &self,
        project: u64,
        from: i64,
        to: i64,
    ) -> Result<BTreeMap<String, u64>> {
        self.read(|tx| {
            let idx = tx.open_table(TASK_TIME)?;
            let briefs = tx.open_table(TASK_BRIEFS)?;
            let mut out = BTreeMap::new();
            for row in idx.range((project, from, 0)..(project, to, 0))? {
                let (k, _) = row?;
                if let Some(t) = super::tasks::brief_at(&briefs, project, k.value().2)? {
                    *out.entry(t.status.to_string()).or_insert(0) += 1;
                }
            }
            Ok(out)
        })
    }
}
