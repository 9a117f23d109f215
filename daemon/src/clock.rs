//! Time as the API shows it: local time of the daemon host, and epoch millis.

use chrono::{Local, TimeZone};

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    // Called per log line: the system clock directly, without calendar math.
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// `YYYY-MM-DD HH:MM:SS` in the host's local time.
pub fn local(ms: i64) -> String {
    match Local.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => String::new(),
    }
}

/// `YYYY-MM-DD` in local time.
pub fn local_date(ms: i64) -> String {
    match Local.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%d").to_string(),
        None => String::new(),
    }
}

/// Epoch millis of local midnight starting `date` (`YYYY-MM-DD`).
pub fn local_day_start(date: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let t = d.and_hms_opt(0, 0, 0)?;
    Local
        .from_local_datetime(&t)
        .earliest()
        .map(|t| t.timestamp_millis())
}

/// Epoch millis of local midnight starting the current month.
pub fn month_start(now_ms: i64) -> i64 {
    let date = local_date(now_ms);
    let first = format!("{}-01", &date[..date.len().min(7)]);
    local_day_start(&first).unwrap_or(0)
}

/// Local hour (`00`–`23`) of an instant.
pub fn local_hour(ms: i64) -> String {
    match Local.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%H").to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_edges() {
        let start = local_day_start("2026-03-15").expect("valid date");
        assert_eq!(local_date(start), "2026-03-15");
        assert_eq!(local_date(start - 1), "2026-03-14");
        assert_eq!(local(start), "2026-03-15 00:00:00");
        assert!(local_day_start("2026-02-30").is_none());
        assert!(local_day_start("yesterday").is_none());
        assert_eq!(local_date(month_start(start)), "2026-03-01");
    }
}
