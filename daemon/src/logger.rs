//! A small stderr logger behind the `log` facade; `RUST_LOG` sets the level
//! (error, warn, info, debug, trace; default info). journald adds timestamps.

use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if self.enabled(r.metadata()) {
            let mut e = std::io::stderr().lock();
            let _ = writeln!(e, "{} {}: {}", r.level(), r.target(), r.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

/// Parses `RUST_LOG`: a bare level, or `target=level` pairs of which the
/// last bare level wins (targets are not filtered separately).
pub fn level_from(spec: Option<&str>) -> LevelFilter {
    let mut level = LevelFilter::Info;
    for part in spec.unwrap_or("").split(',') {
        let l = part.rsplit('=').next().unwrap_or("").trim();
        if let Ok(parsed) = l.parse::<LevelFilter>() {
            level = parsed;
        }
    }
    level
}

pub fn init() {
    let spec = std::env::var("RUST_LOG").ok();
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level_from(spec.as_deref()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level_from(None), LevelFilter::Info);
        assert_eq!(level_from(Some("debug")), LevelFilter::Debug);
        assert_eq!(level_from(Some("jobxd=warn")), LevelFilter::Warn);
        assert_eq!(level_from(Some("nonsense")), LevelFilter::Info);
    }
}
