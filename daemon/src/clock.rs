//! Time as the API shows it: local time of the daemon host, and epoch millis.

use chrono::{Local, TimeZone};

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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
