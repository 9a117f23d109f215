//! Harnesses for the end-to-end tests: a real `jobxd` process, real sshd
//! servers and a real headless Chromium.
pub mod browser;
pub mod daemon;
pub mod flow;
pub mod procs;
pub mod project;
pub mod sshd;

use std::time::{Duration, Instant};

/// Calls `f` every 20 ms until it answers `Some`, or `timeout` passes
/// (`None`). Every wait of the tests goes through here: they wait on a
/// condition with a deadline, never for a fixed time.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
