//! Group commits: one thread takes the write requests that queued up while
//! the previous commit ran, runs them in one redb write transaction, commits
//! once (`Durability::Immediate`) and only then answers each of them. Many
//! tasks' transitions thus share one fsync, and every acknowledged change is
//! durable before it is acknowledged.
//!
//! A request that fails must leave nothing written, but redb cannot roll back
//! part of a transaction. So the group is aborted, the requests that ran
//! before the failing one are run again as a group of their own, and the
//! failing one then runs first in the next group: failing first, it is
//! answered its error and its transaction is aborted alone. Requests are
//! therefore `FnMut`: a request may run more than once, each time against
//! the state it finds, and only its last run is kept.

use super::tasks::Tx;
use crate::error::{Error, Result};
use redb::{Database, WriteTransaction};
use std::collections::VecDeque;
use std::sync::Arc;

/// Requests one transaction takes at most.
const MAX_GROUP: usize = 512;
/// Requests waiting for the writer at most; senders wait beyond that.
const QUEUE: usize = 8192;

/// One queued request: runs in a transaction, then learns how it ended.
trait Job: Send {
    fn run(&mut self, tx: &WriteTransaction) -> Result<()>;
    /// `Ok` once the transaction it ran in (last) committed.
    fn answer(self: Box<Self>, r: Result<()>);
}

struct Typed<T, F> {
    f: F,
    out: Option<T>,
    reply: async_channel::Sender<Result<T>>,
}

impl<T, F> Job for Typed<T, F>
where
    T: Send,
    F: FnMut(&Tx) -> Result<T> + Send,
{
    fn run(&mut self, tx: &WriteTransaction) -> Result<()> {
        self.out = Some((self.f)(&Tx(tx))?);
        Ok(())
    }

    fn answer(mut self: Box<Self>, r: Result<()>) {
        let r = r.and_then(|()| {
            self.out
                .take()
                .ok_or_else(|| Error::Internal("store writer: a request has no result".into()))
        });
        // The caller may have gone away (a dropped future); nothing to tell then.
        let _ = self.reply.try_send(r);
    }
}

pub(super) struct Writer {
    jobs: async_channel::Sender<Box<dyn Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn stopped() -> Error {
    Error::Internal("the store writer has stopped".into())
}

impl Writer {
    pub(super) fn start(db: Arc<Database>) -> Result<Writer> {
        let (jobs, rx) = async_channel::bounded(QUEUE);
        let thread = std::thread::Builder::new()
            .name("jobx-store-writer".into())
            .spawn(move || writer_loop(&db, &rx))
            .map_err(|e| Error::Internal(format!("cannot start the store writer: {e}")))?;
        Ok(Writer {
            jobs,
            thread: Some(thread),
        })
    }

    fn job<T, F>(f: F) -> (Box<dyn Job>, async_channel::Receiver<Result<T>>)
    where
        T: Send + 'static,
        F: FnMut(&Tx) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = async_channel::bounded(1);
        (
            Box::new(Typed {
                f,
                out: None,
                reply,
            }),
            rx,
        )
    }

    /// Runs `f` in the next group and waits (blocking) until it is durable.
    pub(super) fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Tx) -> Result<T> + Send + 'static,
    {
        let (job, rx) = Self::job(f);
        self.jobs.send_blocking(job).map_err(|_| stopped())?;
        rx.recv_blocking().map_err(|_| stopped())?
    }

    /// Runs `f` in the next group; the future ends once it is durable.
    /// Waiting takes no thread.
    pub(super) async fn write_async<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Tx) -> Result<T> + Send + 'static,
    {
        let (job, rx) = Self::job(f);
        self.jobs.send(job).await.map_err(|_| stopped())?;
        rx.recv().await.map_err(|_| stopped())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs.close();
        if let Some(t) = self.thread.take() {
            // The last reference may go away on the writer thread itself.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

fn writer_loop(db: &Database, rx: &async_channel::Receiver<Box<dyn Job>>) {
    let mut queue: VecDeque<Box<dyn Job>> = VecDeque::new();
    // After a failure: how many requests the next group takes (those that
    // passed before the failing one).
    let mut limit = MAX_GROUP;
    loop {
        if queue.is_empty() {
            match rx.recv_blocking() {
                Ok(j) => queue.push_back(j),
                Err(_) => return, // closed: the store is being dropped
            }
        }
        while queue.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => queue.push_back(j),
                Err(_) => break,
            }
        }
        let take = std::mem::replace(&mut limit, MAX_GROUP).min(queue.len());
        let tx = match db.begin_write() {
            Ok(tx) => tx,
            Err(e) => {
                let e = Error::from(e);
                for j in queue.drain(..take) {
                    j.answer(Err(e.clone()));
                }
                continue;
            }
        };
        let mut ran: Vec<Box<dyn Job>> = Vec::with_capacity(take);
        let mut failed = None;
        for _ in 0..take {
            let Some(mut j) = queue.pop_front() else {
                break;
            };
            match j.run(&tx) {
                Ok(()) => ran.push(j),
                Err(e) => {
                    failed = Some((j, e));
                    break;
                }
            }
        }
        match failed {
            None => {
                let r = tx.commit().map_err(Error::from);
                for j in ran {
                    j.answer(r.clone());
                }
            }
            Some((j, e)) if ran.is_empty() => {
                // Alone in its transaction: nothing of it is written.
                let _ = tx.abort();
                j.answer(Err(e));
            }
            Some((j, _)) => {
                let _ = tx.abort();
                limit = ran.len();
                queue.push_front(j);
                for r in ran.into_iter().rev() {
                    queue.push_front(r);
                }
            }
        }
    }
}
