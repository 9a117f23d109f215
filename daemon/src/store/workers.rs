//! A small fixed pool of threads for store work (reads, and waits on
//! writes that cannot be awaited): the API and the runners queue closures
//! here instead of growing a thread per waiting request. The queue is
//! bounded; a full queue makes the caller wait, without a thread.

use crate::error::{Error, Result};
use std::panic::AssertUnwindSafe;

type Work = Box<dyn FnOnce() + Send>;

/// Threads of the pool: two per core (at least 4, at most 16). Store reads
/// are short and mostly from memory; more threads would only switch more.
pub fn threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 2).clamp(4, 16)
}
const QUEUE: usize = 4096;

pub(super) struct Workers {
    jobs: async_channel::Sender<Work>,
}

impl Workers {
    pub(super) fn start(threads: usize) -> Result<Workers> {
        let (jobs, rx) = async_channel::bounded::<Work>(QUEUE);
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("jobx-store-{i}"))
                .spawn(move || {
                    while let Ok(work) = rx.recv_blocking() {
                        // A panicking closure must not shrink the pool.
                        if std::panic::catch_unwind(AssertUnwindSafe(work)).is_err() {
                            log::error!("a store worker's job panicked");
                        }
                    }
                })
                .map_err(|e| Error::Internal(format!("cannot start store workers: {e}")))?;
        }
        Ok(Workers { jobs })
    }

    /// Runs `f` on the pool; the future ends with its result.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = async_channel::bounded(1);
        let work: Work = Box::new(move || {
            let _ = tx.try_send(f());
        });
        self.jobs
            .send(work)
            .await
            .map_err(|_| Error::Internal("the store workers have stopped".into()))?;
        rx.recv()
            .await
            .map_err(|_| Error::Internal("a store worker's job failed".into()))?
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Idle threads end; one running a job ends after it.
        self.jobs.close();
    }
}
