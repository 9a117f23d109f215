//! A bounded worker pool: a fixed number of threads take steps from a
//! bounded queue, so a thousand waiting nodes cost a thousand queue
//! entries, not a thousand threads.
//!
//! `start` only enqueues and `cancel` only flips state and signals, so both
//! return at once, as the `Executor` contract asks. A queued step that is
//! cancelled ends without ever starting.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use jobx_plugin_api::{Reporter, RunId, StepResult};

use crate::params::Params;
use crate::run::{self, Control, Ending};

/// One accepted step.
pub struct Job {
    /// Which run this is (for `cancel`).
    pub run: RunId,
    /// The step's own parameters, already checked.
    pub params: Params,
    /// Environment additions for the tool.
    pub env: Vec<(String, String)>,
    /// The step's time limit (0: none) and when it expires. The limit
    /// counts from `start`: time spent queued is time the step runs.
    pub timeout_secs: u64,
    /// See `timeout_secs`.
    pub deadline: Option<Instant>,
    /// Where output and the result go.
    pub out: Reporter,
}

struct State {
    queue: VecDeque<Job>,
    running: HashMap<RunId, Arc<Control>>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    workers: usize,
    queue_cap: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pool. Dropping it lets the workers finish their current step and
/// exit; steps still queued end as failed.
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// Starts `workers` threads and a queue of at most `queue_cap` steps.
    pub fn spawn(workers: usize, queue_cap: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                running: HashMap::new(),
                closed: false,
            }),
            work: Condvar::new(),
            workers,
            queue_cap,
        });
        let pool = Pool { shared };
        for i in 0..workers {
            let shared = pool.shared.clone();
            std::thread::Builder::new()
                .name(format!("jobx-echo-{i}"))
                .spawn(move || worker(&shared))?;
        }
        Ok(pool)
    }

    /// Queues a step; `Err` (nothing started, the step fails with the
    /// message) when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), String> {
        let mut s = self.shared.lock();
        let idle = self.shared.workers.saturating_sub(s.running.len());
        if s.queue.len() >= idle + self.shared.queue_cap {
            return Err(format!(
                "the echo executor is busy: {} steps running, {} queued ([plugins.echo] workers, queue)",
                s.running.len(),
                s.queue.len()
            ));
        }
        if s.queue.len() >= idle {
            job.out.info(format!(
                "waiting for a free echo worker ({} running)",
                s.running.len()
            ));
        }
        s.queue.push_back(job);
        drop(s);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Ends a run: a queued one at once, a running one by killing its
    /// tool. Unknown or finished runs are ignored.
    pub fn cancel(&self, run: RunId) {
        let mut s = self.shared.lock();
        if let Some(i) = s.queue.iter().position(|j| j.run == run) {
            let job = s.queue.remove(i);
            drop(s);
            if let Some(job) = job {
                job.out.done(Ending::Cancelled.result());
            }
            return;
        }
        if let Some(ctl) = s.running.get(&run).cloned() {
            drop(s);
            ctl.end(Ending::Cancelled);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let queued: Vec<Job> = {
            let mut s = self.shared.lock();
            s.closed = true;
            s.queue.drain(..).collect()
        };
        self.shared.work.notify_all();
        for job in queued {
            job.out
                .done(StepResult::failed("the echo executor was shut down"));
        }
    }
}

fn worker(shared: &Shared) {
    loop {
        let (job, ctl) = {
            let mut s = shared.lock();
            loop {
                if s.closed {
                    return;
                }
                if let Some(job) = s.queue.pop_front() {
                    let ctl = Arc::new(Control::default());
                    s.running.insert(job.run, ctl.clone());
                    break (job, ctl);
                }
                s = shared.work.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        };
        // A bug in one step must not take the worker (and the pool) down.
        let result = catch_unwind(AssertUnwindSafe(|| execute(&job, &ctl)))
            .unwrap_or_else(|_| StepResult::failed("the echo executor failed on this step"));
        shared.lock().running.remove(&job.run);
        job.out.done(result);
    }
}

/// The step itself: the tool, then the `fail` parameter.
fn execute(job: &Job, ctl: &Control) -> StepResult {
    let result = run::run(
        &job.params,
        &job.env,
        job.timeout_secs,
        job.deadline,
        ctl,
        &job.out,
    );
    match &job.params.fail {
        Some(msg) if result.is_success() => {
            job.out
                .line(jobx_plugin_api::Stream::Stderr, msg.as_bytes());
            StepResult::failed(msg.clone())
        }
        _ => result,
    }
}
