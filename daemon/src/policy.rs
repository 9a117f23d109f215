//! The rollout policy of a task: how many failed nodes a batch and the
//! whole task tolerate, after which batches a person must look (canary
//! gates), and the pause between batches. Pure: parsing and decisions.
//!
//! Stays one file: the code is about 340 lines; the rest is its table tests.
//!
//! A policy comes from the task variables (`_tolerate_`, `_tolerate_total_`,
//! `_pause_after_`, `_batch_wait_`) or from the job's `policy` object
//! (`tolerate`, `tolerate_total`, `pause_after`, `batch_wait`); a variable
//! wins over the job, piece by piece. Without any, a task behaves as OPEN-C3:
//! no failure tolerated, no gate, no pause.

use crate::model::Subtask;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The longest pause between batches (one day).
pub const MAX_BATCH_WAIT: u64 = 86_400;

/// How many failed nodes are allowed: a count, or a whole percentage of
/// the nodes it applies to (rounded down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Threshold {
    Count(u32),
    Percent(u32),
}

impl Threshold {
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let t = text.trim();
        let bad =
            || format!("{t:?} is not a count (2) or a whole percentage from 0% to 100% (10%)");
        if let Some(p) = t.strip_suffix('%') {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            return match p.parse::<u32>() {
                Ok(n) if n <= 100 => Ok(Threshold::Percent(n)),
                _ => Err(bad()),
            };
        }
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse::<u32>()
            .map(Threshold::Count)
            .map_err(|_| format!("{t:?} is too large"))
    }

    /// The number of failed nodes allowed out of `nodes`.
    pub fn allowed(self, nodes: usize) -> usize {
        match self {
            Threshold::Count(n) => n as usize,
            Threshold::Percent(p) => nodes * p as usize / 100,
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Count(n) => write!(f, "{n}"),
            Threshold::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl TryFrom<String> for Threshold {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Threshold::parse(&s)
    }
}

impl From<Threshold> for String {
    fn from(t: Threshold) -> String {
        t.to_string()
    }
}

/// The parsed policy of a task (stored with it; the default is OPEN-C3's
/// behaviour).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Failed nodes a batch may have and still pass (of the batch's nodes).
    pub tolerate: Option<Threshold>,
    /// Failed nodes the whole task may collect (of the task's nodes).
    pub tolerate_total: Option<Threshold>,
    /// 1-based batch numbers after which the task waits for a person.
    pub pause_after: Vec<u32>,
    /// Seconds between the end of one batch and the start of the next.
    pub batch_wait: u64,
}

fn parse_batch_list(text: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for piece in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match piece.parse::<u32>() {
            Ok(n) if n >= 1 => {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
            _ => return Err(format!("{piece:?} is not a batch number (1, 2, …)")),
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn parse_wait(text: &str) -> Result<u64, String> {
    let t = text.trim();
    match t.parse::<u64>() {
        Ok(n) if n <= MAX_BATCH_WAIT && t.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "{t:?} is not a whole number of seconds from 0 to {MAX_BATCH_WAIT}"
        )),
    }
}

/// The text of a job policy value: strings as they are, numbers as digits.
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Policy {
    /// A job's `policy` object (`null` = none). Errors name the field.
    pub fn from_job(v: &Value) -> Result<Policy, String> {
        let m =
            match v {
                Value::Null => return Ok(Policy::default()),
                Value::Object(m) => m,
                _ => return Err(
                    "policy: must be an object {tolerate, tolerate_total, pause_after, batch_wait}"
                        .into(),
                ),
            };
        let mut p = Policy::default();
        for (k, v) in m {
            if v.is_null() {
                continue;
            }
            let at = format!("policy.{k}");
            let text =
                || value_text(v).ok_or_else(|| format!("{at}: must be a string or a number"));
            match k.as_str() {
                "tolerate" => p.tolerate = Some(Threshold::parse(&text()?).map_err(|e| format!("{at}: {e}"))?),
                "tolerate_total" => {
                    p.tolerate_total =
                        Some(Threshold::parse(&text()?).map_err(|e| format!("{at}: {e}"))?)
                }
                "pause_after" => {
                    let list = match v {
                        Value::Array(items) => items
                            .iter()
                            .map(|i| value_text(i).ok_or_else(|| format!("{at}: must list batch numbers")))
                            .collect::<Result<Vec<_>, _>>()?
                            .join(","),
                        _ => text()?,
                    };
                    p.pause_after = parse_batch_list(&list).map_err(|e| format!("{at}: {e}"))?;
                }
                "batch_wait" => p.batch_wait = parse_wait(&text()?).map_err(|e| format!("{at}: {e}"))?,
                other => {
                    return Err(format!(
                        "policy: unknown field {other:?} (known: tolerate, tolerate_total, pause_after, batch_wait)"
                    ))
                }
            }
        }
        Ok(p)
    }

    /// The task's policy: the job's, with each piece given as a task
    /// variable (non-empty) in its place. `batches` is the task's number of
    /// batches: a gate after a batch that does not exist is an error.
    pub fn resolve(
        vars: &BTreeMap<String, String>,
        job: &Policy,
        batches: usize,
    ) -> Result<Policy, String> {
        let var = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let mut p = job.clone();
        if let Some(v) = var("_tolerate_") {
            p.tolerate =
                Some(Threshold::parse(v).map_err(|e| format!("variable._tolerate_: {e}"))?);
        }
        if let Some(v) = var("_tolerate_total_") {
            p.tolerate_total =
                Some(Threshold::parse(v).map_err(|e| format!("variable._tolerate_total_: {e}"))?);
        }
        let mut gate_source = "policy.pause_after";
        if let Some(v) = var("_pause_after_") {
            p.pause_after =
                parse_batch_list(v).map_err(|e| format!("variable._pause_after_: {e}"))?;
            gate_source = "variable._pause_after_";
        }
        if let Some(v) = var("_batch_wait_") {
            p.batch_wait = parse_wait(v).map_err(|e| format!("variable._batch_wait_: {e}"))?;
        }
        if let Some(n) = p.pause_after.iter().find(|n| **n as usize > batches) {
            return Err(format!(
                "{gate_source}: there is no batch {n} (the task has {batches})"
            ));
        }
        Ok(p)
    }

    pub fn is_default(&self) -> bool {
        *self == Policy::default()
    }

    /// Is there a canary gate after batch `number` (1-based) of `batches`?
    /// Not after the last batch: nothing follows that a gate could hold.
    pub fn gate_after(&self, number: u32, batches: u32) -> bool {
        number < batches && self.pause_after.contains(&number)
    }

    /// Milliseconds still to wait before batch `idx` (0-based) may start,
    /// given when the batch before it finished; `None` when it may start.
    pub fn wait_before(&self, idx: u32, prev_finish_ms: Option<i64>, now_ms: i64) -> Option<u64> {
        if idx == 0 || self.batch_wait == 0 {
            return None;
        }
        let due = prev_finish_ms? + (self.batch_wait as i64) * 1000;
        (due > now_ms).then(|| (due - now_ms) as u64)
    }
}

/// How a node ended a batch. An unreachable node is a failed node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeOutcome {
    Ok,
    Failed,
    /// Executors report an unreachable node as a failed run, so the runner
    /// never tells the two apart; the variant keeps the rule in the tests.
    #[allow(dead_code)]
    Unreachable,
}

/// Why a batch failed under its policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// More failed nodes in the batch than `_tolerate_` allows.
    Batch {
        failed: usize,
        nodes: usize,
        allowed: usize,
    },
    /// The task's failed nodes so far, this batch's included, are more
    /// than `_tolerate_total_` allows.
    Total { failed: usize, allowed: usize },
}

/// The verdict on a batch from its nodes' outcomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// Some nodes failed, no more than allowed: the batch passes.
    Tolerated {
        failed: usize,
        nodes: usize,
    },
    Failed(Exceeded),
}

/// Settles a batch: at most `allowed` failed nodes pass it. `task_nodes`
/// is the task's number of nodes (for a percentage `_tolerate_total_`),
/// `failed_before` the failed nodes of the batches before this one.
pub fn settle(
    p: &Policy,
    outcomes: &[NodeOutcome],
    task_nodes: usize,
    failed_before: usize,
) -> Verdict {
    let failed = outcomes.iter().filter(|o| **o != NodeOutcome::Ok).count();
    if failed == 0 {
        return Verdict::Passed;
    }
    let nodes = outcomes.len();
    let allowed = p.tolerate.map_or(0, |t| t.allowed(nodes));
    if failed > allowed {
        return Verdict::Failed(Exceeded::Batch {
            failed,
            nodes,
            allowed,
        });
    }
    if let Some(cap) = p.tolerate_total {
        let total = failed_before + failed;
        let allowed = cap.allowed(task_nodes);
        if total > allowed {
            return Verdict::Failed(Exceeded::Total {
                failed: total,
                allowed,
            });
        }
    }
    Verdict::Tolerated { failed, nodes }
}

impl Verdict {
    /// The batch's reason text, or `None` where the step's own reason
    /// stands (a failure without any tolerance configured).
    pub fn reason(&self, p: &Policy) -> Option<String> {
        match self {
            Verdict::Passed => None,
            Verdict::Tolerated { failed, nodes } => Some(format!(
                "{failed} of {nodes} nodes failed (tolerated: _tolerate_={})",
                p.tolerate.map(|t| t.to_string()).unwrap_or_default()
            )),
            Verdict::Failed(Exceeded::Batch { failed, nodes, allowed }) => p.tolerate.map(|t| {
                format!("{failed} of {nodes} nodes failed, more than _tolerate_={t} allows ({allowed})")
            }),
            Verdict::Failed(Exceeded::Total { failed, allowed }) => Some(format!(
                "{failed} nodes failed in this task so far, more than _tolerate_total_={} allows ({allowed})",
                p.tolerate_total.map(|t| t.to_string()).unwrap_or_default()
            )),
        }
    }
}

/// Failed nodes of the batches before `idx` that ended (passed with
/// tolerated failures, or failed and were confirmed): what counts against
/// `_tolerate_total_`.
pub fn failed_before(subs: &[Subtask], idx: u32) -> usize {
    subs.iter()
        .filter(|s| {
            s.idx < idx
                && matches!(
                    s.status,
                    crate::model::BatchStatus::Success | crate::model::BatchStatus::Fail
                )
        })
        .map(|s| s.failed_nodes.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeOutcome::{Failed as F, Ok as O, Unreachable as U};

    fn pol(tol: Option<&str>, total: Option<&str>) -> Policy {
        Policy {
            tolerate: tol.map(|t| Threshold::parse(t).expect("threshold")),
            tolerate_total: total.map(|t| Threshold::parse(t).expect("threshold")),
            ..Policy::default()
        }
    }

    #[test]
    fn thresholds_parse_and_round_down() {
        let cases: [(&str, Option<Threshold>); 12] = [
            ("0", Some(Threshold::Count(0))),
            ("2", Some(Threshold::Count(2))),
            (" 7 ", Some(Threshold::Count(7))),
            ("10%", Some(Threshold::Percent(10))),
            ("0%", Some(Threshold::Percent(0))),
            ("100%", Some(Threshold::Percent(100))),
            ("101%", None),
            ("-1", None),
            ("1.5", None),
            ("%10", None),
            ("abc", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(Threshold::parse(text).ok(), want, "{text:?}");
        }
        assert_eq!(Threshold::Percent(10).allowed(4), 0);
        assert_eq!(Threshold::Percent(25).allowed(4), 1);
        assert_eq!(Threshold::Percent(50).allowed(5), 2);
        assert_eq!(Threshold::Percent(100).allowed(4), 4);
        assert_eq!(Threshold::Count(9).allowed(4), 9);
        assert!(Threshold::parse("99999999999").is_err());
    }

    #[test]
    fn batch_decisions() {
        // (tolerate, outcomes, verdict)
        let cases: Vec<(Option<&str>, Vec<NodeOutcome>, Verdict)> = vec![
            (None, vec![O, O, O, O], Verdict::Passed),
            (
                None,
                vec![O, F, O, O],
                Verdict::Failed(Exceeded::Batch {
                    failed: 1,
                    nodes: 4,
                    allowed: 0,
                }),
            ),
            (
                Some("0"),
                vec![O, F, O, O],
                Verdict::Failed(Exceeded::Batch {
                    failed: 1,
                    nodes: 4,
                    allowed: 0,
                }),
            ),
            (
                Some("1"),
                vec![O, F, O, O],
                Verdict::Tolerated {
                    failed: 1,
                    nodes: 4,
                },
            ),
            (
                Some("1"),
                vec![F, F, O, O],
                Verdict::Failed(Exceeded::Batch {
                    failed: 2,
                    nodes: 4,
                    allowed: 1,
                }),
            ),
            // unreachable nodes count as failed
            (
                Some("1"),
                vec![U, O, O, O],
                Verdict::Tolerated {
                    failed: 1,
                    nodes: 4,
                },
            ),
            (
                Some("1"),
                vec![U, F, O, O],
                Verdict::Failed(Exceeded::Batch {
                    failed: 2,
                    nodes: 4,
                    allowed: 1,
                }),
            ),
            (
                Some("0%"),
                vec![U, O],
                Verdict::Failed(Exceeded::Batch {
                    failed: 1,
                    nodes: 2,
                    allowed: 0,
                }),
            ),
            // more than the batch: every node may fail
            (
                Some("9"),
                vec![F, U, F],
                Verdict::Tolerated {
                    failed: 3,
                    nodes: 3,
                },
            ),
            (
                Some("100%"),
                vec![F, F, U, F],
                Verdict::Tolerated {
                    failed: 4,
                    nodes: 4,
                },
            ),
            // floor(4 × 25 / 100) = 1; floor(4 × 49 / 100) = 1; 50% of 4 = 2
            (
                Some("25%"),
                vec![F, O, O, O],
                Verdict::Tolerated {
                    failed: 1,
                    nodes: 4,
                },
            ),
            (
                Some("49%"),
                vec![F, F, O, O],
                Verdict::Failed(Exceeded::Batch {
                    failed: 2,
                    nodes: 4,
                    allowed: 1,
                }),
            ),
            (
                Some("50%"),
                vec![F, F, O, O],
                Verdict::Tolerated {
                    failed: 2,
                    nodes: 4,
                },
            ),
            // 10% of 4 rounds down to 0
            (
                Some("10%"),
                vec![F, O, O, O],
                Verdict::Failed(Exceeded::Batch {
                    failed: 1,
                    nodes: 4,
                    allowed: 0,
                }),
            ),
            (Some("3"), vec![], Verdict::Passed),
        ];
        for (tol, outcomes, want) in cases {
            assert_eq!(
                settle(&pol(tol, None), &outcomes, 100, 0),
                want,
                "{tol:?} {outcomes:?}"
            );
        }
    }

    /// (tolerate, total, outcomes, task nodes, failed before, verdict)
    type CapCase = (
        &'static str,
        &'static str,
        Vec<NodeOutcome>,
        usize,
        usize,
        Verdict,
    );

    #[test]
    fn cumulative_cap() {
        let cases: Vec<CapCase> = vec![
            (
                "1",
                "2",
                vec![F, O],
                6,
                0,
                Verdict::Tolerated {
                    failed: 1,
                    nodes: 2,
                },
            ),
            (
                "1",
                "2",
                vec![F, O],
                6,
                1,
                Verdict::Tolerated {
                    failed: 1,
                    nodes: 2,
                },
            ),
            // the batch that crosses the cap fails
            (
                "1",
                "2",
                vec![F, O],
                6,
                2,
                Verdict::Failed(Exceeded::Total {
                    failed: 3,
                    allowed: 2,
                }),
            ),
            (
                "2",
                "2",
                vec![F, U],
                6,
                1,
                Verdict::Failed(Exceeded::Total {
                    failed: 3,
                    allowed: 2,
                }),
            ),
            // a percentage of the task's nodes: floor(10 × 20 / 100) = 2
            (
                "1",
                "20%",
                vec![F, O],
                10,
                1,
                Verdict::Tolerated {
                    failed: 1,
                    nodes: 2,
                },
            ),
            (
                "1",
                "20%",
                vec![F, O],
                10,
                2,
                Verdict::Failed(Exceeded::Total {
                    failed: 3,
                    allowed: 2,
                }),
            ),
            (
                "100%",
                "0",
                vec![F, O],
                10,
                0,
                Verdict::Failed(Exceeded::Total {
                    failed: 1,
                    allowed: 0,
                }),
            ),
            // the per-batch limit is judged first
            (
                "0",
                "5",
                vec![F, O],
                10,
                0,
                Verdict::Failed(Exceeded::Batch {
                    failed: 1,
                    nodes: 2,
                    allowed: 0,
                }),
            ),
            // a passing batch never crosses the cap
            ("1", "0", vec![O, O], 10, 9, Verdict::Passed),
        ];
        for (tol, total, outcomes, task_nodes, before, want) in cases {
            assert_eq!(
                settle(&pol(Some(tol), Some(total)), &outcomes, task_nodes, before),
                want,
                "{tol} {total} {outcomes:?} {before}"
            );
        }
    }

    #[test]
    fn reasons() {
        let p = pol(Some("1"), Some("2"));
        assert_eq!(
            Verdict::Tolerated {
                failed: 1,
                nodes: 4
            }
            .reason(&p)
            .as_deref(),
            Some("1 of 4 nodes failed (tolerated: _tolerate_=1)")
        );
        let v = Verdict::Failed(Exceeded::Total {
            failed: 3,
            allowed: 2,
        });
        assert!(v
            .reason(&p)
            .unwrap_or_default()
            .contains("_tolerate_total_=2"));
        // without a tolerance the step's own reason stands
        let v = Verdict::Failed(Exceeded::Batch {
            failed: 1,
            nodes: 4,
            allowed: 0,
        });
        assert_eq!(v.reason(&Policy::default()), None);
    }

    #[test]
    fn gates() {
        let p = Policy {
            pause_after: vec![1, 3],
            ..Policy::default()
        };
        let cases = [
            (1, 4, true),
            (2, 4, false),
            (3, 4, true),
            (4, 4, false),
            (1, 1, false),
            (3, 3, false),
        ];
        for (n, total, want) in cases {
            assert_eq!(p.gate_after(n, total), want, "{n}/{total}");
        }
        assert!(!Policy::default().gate_after(1, 4));
    }

    #[test]
    fn pacing() {
        let p = Policy {
            batch_wait: 2,
            ..Policy::default()
        };
        assert_eq!(p.wait_before(0, None, 1000), None);
        assert_eq!(p.wait_before(1, Some(1000), 1000), Some(2000));
        assert_eq!(p.wait_before(1, Some(1000), 2500), Some(500));
        assert_eq!(p.wait_before(1, Some(1000), 3000), None);
        assert_eq!(Policy::default().wait_before(1, Some(1000), 1000), None);
    }

    #[test]
    fn variables_win_over_the_job() {
        let job = Policy::from_job(&serde_json::json!({
            "tolerate": "10%", "tolerate_total": 3, "pause_after": [2, 1, 2], "batch_wait": 5
        }))
        .expect("job policy");
        assert_eq!(job.pause_after, vec![1, 2]);
        assert_eq!(job.tolerate, Some(Threshold::Percent(10)));
        let mut vars = BTreeMap::new();
        vars.insert("_tolerate_".to_string(), "1".to_string());
        vars.insert("_pause_after_".to_string(), "3".to_string());
        vars.insert("_batch_wait_".to_string(), " ".to_string());
        let p = Policy::resolve(&vars, &job, 4).expect("policy");
        assert_eq!(p.tolerate, Some(Threshold::Count(1)));
        assert_eq!(p.tolerate_total, Some(Threshold::Count(3)));
        assert_eq!(p.pause_after, vec![3]);
        assert_eq!(p.batch_wait, 5);
        assert!(Policy::resolve(&BTreeMap::new(), &Policy::default(), 0)
            .expect("none")
            .is_default());
    }

    #[test]
    fn errors_name_the_piece() {
        let cases = [
            ("_tolerate_", "x", "variable._tolerate_"),
            ("_tolerate_", "150%", "variable._tolerate_"),
            ("_tolerate_total_", "-2", "variable._tolerate_total_"),
            ("_pause_after_", "0", "variable._pause_after_"),
            ("_pause_after_", "1,x", "variable._pause_after_"),
            ("_pause_after_", "9", "there is no batch 9"),
            ("_batch_wait_", "86401", "variable._batch_wait_"),
            ("_batch_wait_", "1.5", "variable._batch_wait_"),
            ("_batch_wait_", "-1", "variable._batch_wait_"),
        ];
        for (name, value, want) in cases {
            let mut vars = BTreeMap::new();
            vars.insert(name.to_string(), value.to_string());
            let e = Policy::resolve(&vars, &Policy::default(), 3).unwrap_err();
            assert!(e.contains(want), "{name}={value}: {e}");
        }
        let e = Policy::from_job(&serde_json::json!({"tolerat": 1})).unwrap_err();
        assert!(e.contains("tolerat"), "{e}");
        let e = Policy::from_job(&serde_json::json!({"batch_wait": true})).unwrap_err();
        assert!(e.contains("policy.batch_wait"), "{e}");
        let e = Policy::from_job(&serde_json::json!([1])).unwrap_err();
        assert!(e.starts_with("policy"), "{e}");
        let job = Policy::from_job(&serde_json::json!({"pause_after": "5"})).expect("job");
        let e = Policy::resolve(&BTreeMap::new(), &job, 2).unwrap_err();
        assert!(e.starts_with("policy.pause_after"), "{e}");
    }

    #[test]
    fn stored_form_reads_back() {
        let p = Policy {
            tolerate: Some(Threshold::Percent(10)),
            tolerate_total: Some(Threshold::Count(2)),
            pause_after: vec![1],
            batch_wait: 3,
        };
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(v["tolerate"], "10%");
        assert_eq!(v["tolerate_total"], "2");
        let back: Policy = serde_json::from_value(v).expect("back");
        assert_eq!(back, p);
        let old: Policy = serde_json::from_str("{}").expect("empty");
        assert!(old.is_default());
    }
}
