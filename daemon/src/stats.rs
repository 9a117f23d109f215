//! Task statistics (pure): per-day and per-hour counts and the runtime
//! distribution of `GET /task/:projectid/analysis/*`.

use crate::model::{TaskStatus, TaskSummary};
use std::collections::BTreeMap;

/// Runtime buckets in minutes: [lower, upper) with the label the API uses.
pub const BUCKETS: [(&str, f64, f64); 6] = [
    ("0-1", 0.0, 1.0),
    ("1-3", 1.0, 3.0),
    ("3-5", 3.0, 5.0),
    ("5-10", 5.0, 10.0),
    ("10-30", 10.0, 30.0),
    ("30+", 30.0, f64::INFINITY),
];

/// `[date, total, success]` per local day that has tasks, ascending.
pub fn by_date(tasks: &[TaskSummary], date_of: impl Fn(i64) -> String) -> Vec<(String, u64, u64)> {
    let mut m: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for t in tasks {
        let e = m.entry(date_of(t.created_ms)).or_default();
        e.0 += 1;
        if t.status == TaskStatus::Success {
            e.1 += 1;
        }
    }
    m.into_iter().map(|(d, (n, s))| (d, n, s)).collect()
}

/// `[hour, count]` per local hour of day that has tasks, ascending.
pub fn by_hour(tasks: &[TaskSummary], hour_of: impl Fn(i64) -> String) -> Vec<(String, u64)> {
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        *m.entry(hour_of(t.created_ms)).or_default() += 1;
    }
    m.into_iter().collect()
}

/// The share of finished tasks per runtime bucket, as percentages with two
/// decimals that add up to exactly 100.00 (largest-remainder rounding), or
/// all "0.00" when there are none.
pub fn runtime_shares(runtimes_ms: &[i64]) -> Vec<(&'static str, String)> {
    let mut counts = [0u64; 6];
    for &ms in runtimes_ms {
        let minutes = ms.max(0) as f64 / 60_000.0;
        if let Some(i) = BUCKETS
            .iter()
            .position(|(_, lo, hi)| minutes >= *lo && minutes < *hi)
        {
            counts[i] += 1;
        }
    }
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return BUCKETS
            .iter()
            .map(|(l, _, _)| (*l, "0.00".to_string()))
            .collect();
    }
    // Work in hundredths of a percent: 10000 units to hand out.
    let exact: Vec<u128> = counts.iter().map(|&c| c as u128 * 10_000).collect();
    let mut units: Vec<u128> = exact.iter().map(|e| e / total as u128).collect();
    let given: u128 = units.iter().sum();
    let mut order: Vec<usize> = (0..6).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(exact[i] % total as u128));
    for &i in order.iter().take((10_000 - given) as usize) {
        units[i] += 1;
    }
    BUCKETS
        .iter()
        .zip(units)
        .map(|((l, _, _), u)| (*l, format!("{}.{:02}", u / 100, u % 100)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(v: &[(&str, String)]) -> f64 {
        v.iter()
            .map(|(_, s)| s.parse::<f64>().unwrap_or(f64::NAN))
            .sum()
    }

    #[test]
    fn bucket_edges() {
        let min = 60_000;
        let v = runtime_shares(&[
            0,
            min - 1,
            min,
            3 * min - 1,
            3 * min,
            5 * min,
            10 * min,
            30 * min - 1,
            30 * min,
            100 * min,
        ]);
        let got: Vec<&str> = v.iter().map(|(_, s)| s.as_str()).collect();
        // 0-1: 2, 1-3: 2, 3-5: 1, 5-10: 1, 10-30: 2, 30+: 2 of 10
        assert_eq!(got, ["20.00", "20.00", "10.00", "10.00", "20.00", "20.00"]);
    }

    #[test]
    fn shares_sum_to_100() {
        let v = runtime_shares(&[0, 0, 2 * 60_000]);
        assert_eq!(v[0].1, "66.67");
        assert_eq!(v[1].1, "33.33");
        assert!((sum(&v) - 100.0).abs() < 1e-9);
        let v = runtime_shares(&[0, 60_000, 180_000, 300_000, 600_000, 1_800_000, 1]);
        assert!((sum(&v) - 100.0).abs() < 1e-9, "{v:?}");
        let none = runtime_shares(&[]);
        assert!(none.iter().all(|(_, s)| s == "0.00"));
    }
}
