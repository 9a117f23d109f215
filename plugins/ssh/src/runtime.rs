//! A small fixed pool of threads running every run of the plugin as an
//! async task, and the stop signal of a run.
//!
//! Waiting nodes (for a session slot, for a connection, for output, for the
//! ssh process to exit) are futures, not threads: processes and pipes are
//! driven by `async-process` and `async-io`, whose reactor is one more
//! thread. So the plugin uses a constant number of threads however many
//! nodes run at once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::Executor;
use futures_lite::future;

/// The plugin's executor.
#[derive(Clone)]
pub struct Runtime {
    ex: Arc<Executor<'static>>,
}

impl Runtime {
    /// Starts `threads` worker threads (they live as long as the process:
    /// plugins are never unloaded).
    pub fn start(threads: usize) -> Result<Runtime, String> {
        let ex = Arc::new(Executor::new());
        for i in 0..threads.max(1) {
            let ex = ex.clone();
            std::thread::Builder::new()
                .name(format!("jobx-ssh-{i}"))
                .spawn(move || async_io::block_on(ex.run(future::pending::<()>())))
                .map_err(|e| format!("cannot start ssh plugin threads: {e}"))?;
        }
        // Reaps exited ssh processes on these threads instead of a thread of
        // async-process's own.
        ex.spawn(async_process::driver()).detach();
        Ok(Runtime { ex })
    }

    /// Runs `fut` in the background.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.ex.spawn(fut).detach();
    }
}

/// Why a run was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The host cancelled it.
    Cancelled,
    /// It ran longer than its timeout (seconds).
    Timeout(u64),
}

impl StopReason {
    /// The result message, as the other executors word it.
    pub fn message(self) -> String {
        match self {
            StopReason::Cancelled => "cancelled".to_string(),
            StopReason::Timeout(secs) => format!("timeout after {secs} s"),
        }
    }
}

/// Fires when the run is cancelled or its timeout passes.
#[derive(Clone)]
pub struct Stop {
    cancel: async_channel::Receiver<()>,
    deadline: Option<Instant>,
    timeout_secs: u64,
}

impl Stop {
    /// A stop signal ending at cancellation (the sender closed) or after
    /// `timeout_secs` from now (0 = no timeout).
    pub fn new(cancel: async_channel::Receiver<()>, timeout_secs: u64) -> Stop {
        let deadline = (timeout_secs > 0)
            .then(|| Instant::now().checked_add(Duration::from_secs(timeout_secs)))
            .flatten();
        Stop {
            cancel,
            deadline,
            timeout_secs,
        }
    }

    /// Waits until the run must stop.
    pub async fn wait(&self) -> StopReason {
        let cancelled = async {
            // Closing the channel is the signal; a message would do too.
            let _ = self.cancel.recv().await;
            StopReason::Cancelled
        };
        let timed_out = async {
            match self.deadline {
                Some(d) => {
                    async_io::Timer::at(d).await;
                    StopReason::Timeout(self.timeout_secs)
                }
                None => future::pending().await,
            }
        };
        future::or(cancelled, timed_out).await
    }

    /// Runs `fut` unless the run is stopped first.
    pub async fn guard<T>(&self, fut: impl Future<Output = T>) -> Result<T, StopReason> {
        future::or(async { Ok(fut.await) }, async { Err(self.wait().await) }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_fires_on_cancel_and_on_timeout() {
        let (tx, rx) = async_channel::bounded(1);
        let stop = Stop::new(rx, 0);
        tx.close();
        assert_eq!(future::block_on(stop.wait()), StopReason::Cancelled);

        let (_tx, rx) = async_channel::bounded::<()>(1);
        let stop = Stop::new(rx, 1);
        let t = Instant::now();
        assert_eq!(future::block_on(stop.wait()), StopReason::Timeout(1));
        assert!(t.elapsed() >= Duration::from_millis(900));
        assert_eq!(StopReason::Timeout(1).message(), "timeout after 1 s");

        let (_tx, rx) = async_channel::bounded::<()>(1);
        let stop = Stop::new(rx, 0);
        assert_eq!(future::block_on(stop.guard(async { 5 })), Ok(5));
    }

    #[test]
    fn runtime_runs_tasks() {
        let rt = Runtime::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            async_io::Timer::after(Duration::from_millis(10)).await;
            let _ = tx.send(7);
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(7));
    }
}
