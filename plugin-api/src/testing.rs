//! Test support for executors: a [`Recorder`] collects what one run
//! reports, so a unit test can call [`Executor::start`](crate::Executor::start)
//! directly and wait for the result, without loading a library.
//!
//! ```
//! use std::time::Duration;
//! use jobx_plugin_api::testing::Recorder;
//! use jobx_plugin_api::{StepResult, Stream};
//!
//! let rec = Recorder::new();
//! let out = rec.reporter();
//! std::thread::spawn(move || {
//!     out.line(Stream::Stdout, b"hello");
//!     out.done(StepResult::ok());
//! });
//! let result = rec.wait_done(Duration::from_secs(5)).expect("the run ended");
//! assert!(result.is_success());
//! assert_eq!(rec.stdout(), ["hello"]);
//! ```
//!
//! A `Recorder` is also a [`RunSink`], so the same type collects runs
//! started through `host::PluginSet::start` in load tests.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{Reporter, RunSink, StepResult, Stream};

#[derive(Default)]
struct Recorded {
    lines: Vec<(Stream, Vec<u8>)>,
    results: Vec<StepResult>,
}

/// Collects the output lines and the result(s) of one run.
#[derive(Default)]
pub struct Recorder {
    state: Mutex<Recorded>,
    changed: Condvar,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Recorder")
            .field("lines", &s.lines.len())
            .field("results", &s.results)
            .finish()
    }
}

impl Recorder {
    /// A new, empty recorder.
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    /// A [`Reporter`] that delivers to this recorder, to pass to `start`.
    pub fn reporter(self: &Arc<Self>) -> Reporter {
        Reporter::from_sink(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every line so far, in order, as (stream, text); invalid UTF-8 is
    /// replaced.
    pub fn lines(&self) -> Vec<(Stream, String)> {
        self.lock()
            .lines
            .iter()
            .map(|(s, l)| (*s, String::from_utf8_lossy(l).into_owned()))
            .collect()
    }

    /// The lines of one stream so far.
    pub fn text(&self, stream: Stream) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l)
            .collect()
    }

    /// The stdout lines so far.
    pub fn stdout(&self) -> Vec<String> {
        self.text(Stream::Stdout)
    }

    /// Every `done` received. A correct run has exactly one; a
    /// [`Reporter`] never delivers more, a raw host sink might.
    pub fn results(&self) -> Vec<StepResult> {
        self.lock().results.clone()
    }

    /// Waits until `f` holds for (lines, results), or `timeout` passes;
    /// answers whether it held.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&[(Stream, Vec<u8>)], &[StepResult]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if f(&s.lines, &s.results) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the run to end; its first result, or `None` at the deadline.
    pub fn wait_done(&self, timeout: Duration) -> Option<StepResult> {
        self.wait_until(timeout, |_, r| !r.is_empty());
        self.lock().results.first().cloned()
    }

    /// Waits until at least `n` lines have arrived; answers whether they did.
    pub fn wait_lines(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |l, _| l.len() >= n)
    }
}

impl RunSink for Recorder {
    fn line(&self, stream: Stream, text: &[u8]) {
        self.lock().lines.push((stream, text.to_vec()));
        self.changed.notify_all();
    }

    fn done(&self, result: StepResult) {
        self.lock().results.push(result);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_lines_and_one_result() {
        let rec = Recorder::new();
        let out = rec.reporter();
        out.line(Stream::Stderr, &[0xff, b'x']);
        out.info("note");
        assert!(rec.wait_lines(2, Duration::from_secs(1)));
        assert_eq!(rec.wait_done(Duration::from_millis(10)), None);
        out.clone().done(StepResult::exited(3));
        out.done(StepResult::ok());
        assert_eq!(rec.results(), vec![StepResult::exited(3)]);
        assert_eq!(rec.text(Stream::Stderr), ["\u{fffd}x"]);
        assert_eq!(rec.text(Stream::Info), ["note"]);
        assert!(rec.stdout().is_empty());
    }

    #[test]
    fn a_dropped_reporter_still_ends_the_run() {
        let rec = Recorder::new();
        drop(rec.reporter());
        let r = rec.wait_done(Duration::from_secs(1)).expect("done");
        assert!(!r.is_success());
    }
}
