//! Which project ids hold anything, with a few counts per project (the
//! console's start page). Projects are found by seeking from one project id
//! to the next in each table, so the cost grows with the number of
//! projects, not of rows, except for the counts themselves.

use super::tasks::{
    ACTIVE, APPROVALS, APPROVAL_PENDING, SUBTASKS, SUBTASK_INDEX, TASKS, TASK_BRIEFS, TASK_INDEX,
    TASK_TIME,
};
use super::*;
use crate::model::{Approval, Subtask};
use std::collections::{BTreeMap, BTreeSet};

/// How far back `failed` and pending rollback decisions are counted: a
/// rollback is allowed within 7 days of a deploy's start.
pub const RECENT_MS: i64 = 7 * 86_400_000;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProjectSummary {
    pub projectid: u64,
    pub tasks: u64,
    /// Unfinished tasks that do not wait for a person.
    pub running: u64,
    /// Tasks that wait for a person: a confirmation, an approval or a rollback decision.
    pub waiting: u64,
    /// Tasks created in the last 7 days that ended `fail` or `refuse`.
    pub failed: u64,
    pub nodes: u64,
    pub groups: u64,
    pub jobs: u64,
}

/// The project of an unfinished task (its row's other fields are skipped).
#[derive(serde::Deserialize)]
struct Owner {
    projectid: u64,
}

/// Counts the rows of a table keyed by (project, …), project by project:
/// a seek to the first row of the next project id, then a count.
macro_rules! count_by_project {
    ($table:expr, $lowest:expr, $out:expr, $field:ident) => {{
        let table = $table;
        let mut from = 0u64;
        loop {
            let Some(first) = table.range((from, $lowest)..)?.next() else {
                break;
            };
            let pid = first?.0.value().0;
            let mut n = 0;
            for row in table.range((pid, $lowest)..)? {
                if row?.0.value().0 != pid {
                    break;
                }
                n += 1;
            }
            $out.entry(pid).or_default().$field += n;
            match pid.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
    }};
}

impl Store {
    /// Every project id that has nodes, groups, jobs or tasks, with counts.
    pub fn projects(&self, now_ms: i64) -> Result<Vec<ProjectSummary>> {
        self.read(|tx| {
            let mut out: BTreeMap<u64, ProjectSummary> = BTreeMap::new();
            count_by_project!(tx.open_table(NODES)?, "", out, nodes);
            count_by_project!(tx.open_table(JOBS)?, "", out, jobs);
            count_by_project!(tx.open_table(GROUP_INDEX)?, 0u64, out, groups);
            count_by_project!(tx.open_table(TASK_INDEX)?, 0u64, out, tasks);

            let tasks = tx.open_table(TASKS)?;
            let subs = tx.open_table(SUBTASKS)?;
            let sub_idx = tx.open_table(SUBTASK_INDEX)?;
            let approvals = tx.open_table(APPROVALS)?;
            // Tasks with a pending approval.
            let mut approving = BTreeSet::new();
            for row in tx.open_table(APPROVAL_PENDING)?.iter()? {
                let (k, _) = row?;
                let (_, uuid) = k.value();
                if let Some(a) = get_json::<_, Approval>(&approvals, uuid)? {
                    approving.insert(a.taskuuid);
                }
            }
            for row in tx.open_table(ACTIVE)?.iter()? {
                let (k, _) = row?;
                let uuid = k.value();
                let Some(t) = get_json::<_, Owner>(&tasks, uuid)? else {
                    continue;
                };
                let mut confirming = false;
                for r in sub_idx.range((uuid, 0)..=(uuid, u32::MAX))? {
                    let (_, su) = r?;
                    if let Some(s) = get_json::<_, Subtask>(&subs, su.value())? {
                        if s.waiting() {
                            confirming = true;
                            break;
                        }
                    }
                }
                let p = out.entry(t.projectid).or_default();
                if confirming || approving.contains(uuid) {
                    p.waiting += 1;
                } else {
                    p.running += 1;
                }
            }
            // Recent finished tasks: failures, and deploys waiting for a rollback decision.
            let time = tx.open_table(TASK_TIME)?;
            let briefs = tx.open_table(TASK_BRIEFS)?;
            let pids: Vec<u64> = out.keys().copied().collect();
            for pid in pids {
                let from = now_ms.saturating_sub(RECENT_MS);
                for row in time.range((pid, from, 0)..=(pid, i64::MAX, u64::MAX))? {
                    let (k, _) = row?;
                    let Some(t) = super::tasks::brief_at(&briefs, pid, k.value().2)? else {
                        continue;
                    };
                    let p = out.entry(pid).or_default();
                    if matches!(
                        t.status,
                        crate::model::TaskStatus::Fail | crate::model::TaskStatus::Refuse
                    ) {
                        p.failed += 1;
                    }
                    if t.status.is_final() && t.decision == crate::model::Decision::Pending {
                        p.waiting += 1;
                    }
                }
            }
            Ok(out
                .into_iter()
                .map(|(pid, mut p)| {
                    p.projectid = pid;
                    p
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Group, Node};

    fn temp_store(tag: &str) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("jobx-projects-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Store::open(&dir).expect("open store"), dir)
    }

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            host: None,
            port: None,
            user: None,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn projects_with_anything_and_their_counts() {
        let (s, dir) = temp_store("counts");
        assert_eq!(s.projects(0).expect("empty"), vec![]);
        s.upsert_nodes(3, "t", &[node("a"), node("b")])
            .expect("nodes");
        s.upsert_nodes(u64::MAX, "t", &[node("z")]).expect("nodes");
        s.save_group(
            "t",
            None,
            Group {
                id: 0,
                projectid: 9,
                name: "g".into(),
                note: String::new(),
                group_type: "list".into(),
                text: "a".into(),
                edit_time: 0,
                labels: String::new(),
            },
        )
        .expect("group");
        let p = s.projects(0).expect("projects");
        let ids: Vec<u64> = p.iter().map(|p| p.projectid).collect();
        assert_eq!(ids, vec![3, 9, u64::MAX]);
        assert_eq!(p[0].nodes, 2);
        assert_eq!(p[0].groups, 0);
        assert_eq!(p[1].groups, 1);
        assert_eq!(p[2].nodes, 1);
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
