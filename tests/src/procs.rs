//! This machine's process table, from /proc. The servers and agents of the
//! tests run here too, so this is also how a test sees "the node".

/// Pids of every process.
pub fn pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The fields of `/proc/<pid>/stat` the tests read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: i32,
    pub pgid: i32,
    /// `R`, `S`, `Z`, …
    pub state: char,
}

impl Stat {
    /// Running, not a zombie waiting to be reaped.
    pub fn live(&self) -> bool {
        self.state != 'Z'
    }
}

/// `pid`'s stat, unless it is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
    let mut rest = s.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgid = rest.next()?.parse().ok()?;
    Some(Stat { ppid, pgid, state })
}

/// `pid`'s arguments (empty when it is gone).
pub fn argv(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `pid`'s command line, arguments joined by spaces.
pub fn cmdline(pid: i32) -> String {
    argv(pid).join(" ")
}

/// Live processes whose stat matches `f`.
pub fn live_where(f: impl Fn(&Stat) -> bool) -> Vec<i32> {
    pids()
        .into_iter()
        .filter(|&pid| stat(pid).is_some_and(|s| s.live() && f(&s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_with_its_parent_and_arguments() {
        let me = std::process::id() as i32;
        assert!(pids().contains(&me));
        let s = stat(me).expect("own stat");
        assert!(s.live());
        assert_eq!(s.ppid, std::os::unix::process::parent_id() as i32);
        assert_eq!(argv(me)[0], std::env::args().next().expect("argv[0]"));
        assert!(live_where(|s| s.pgid == stat(me).map_or(0, |m| m.pgid)).contains(&me));
        assert_eq!(stat(-1), None);
    }
}
