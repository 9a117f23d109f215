//! The redb store: the only code that touches redb. Every state change
//! commits with `Durability::Immediate` (redb's default) before the caller
//! acknowledges it; an operation-log entry is written in the same
//! transaction as the change it describes.

mod briefs;
mod compat;
mod inventory;
mod log_codec;
mod logs;
mod maintenance;
mod outbox;
mod projects;
mod tasks;
mod workers;
mod writer;

pub use compat::NamedTask;
pub use log_codec::Stream as LogStream;
pub use logs::NewLog;
pub use tasks::{PageRow, TaskFilter, Tx};

use crate::error::{Error, Result};
use crate::model::OpLog;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Counters: next ids.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (project, node name) → Node JSON.
pub(crate) const NODES: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("nodes");
/// (project, inventory seq) → node name: the inventory order.
pub(crate) const NODE_ORDER: TableDefinition<(u64, u64), &str> = TableDefinition::new("node_order");
/// (project, node name) → inventory seq (to delete from NODE_ORDER).
pub(crate) const NODE_SEQ: TableDefinition<(u64, &str), u64> = TableDefinition::new("node_seq");
/// (project, job name) → Job JSON.
pub(crate) const JOBS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("jobs");
/// group id → Group JSON.
pub(crate) const GROUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("groups");
/// (project, group name) → group id: names are unique per project.
pub(crate) const GROUP_NAMES: TableDefinition<(u64, &str), u64> =
    TableDefinition::new("group_names");
/// (project, group id): the groups of a project.
pub(crate) const GROUP_INDEX: TableDefinition<(u64, u64), ()> = TableDefinition::new("group_index");
/// (project, entry id) → OpLog JSON.
pub(crate) const OPLOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("oplog");

pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    /// Group commits of task transitions (see `writer.rs`).
    writer: writer::Writer,
    /// The fixed pool that store work runs on (see `workers.rs`).
    workers: workers::Workers,
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

pub(crate) fn from_json<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    Ok(serde_json::from_slice(b)?)
}

/// The JSON row under `key`, from a table of either kind of transaction.
pub(crate) fn get_json<'k, K, T>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: impl std::borrow::Borrow<K::SelfType<'k>>,
) -> Result<Option<T>>
where
    K: redb::Key + 'static,
    T: DeserializeOwned,
{
    match table.get(key)? {
        Some(v) => Ok(Some(from_json(v.value())?)),
        None => Ok(None),
    }
}

/// Takes the next value of a named counter (starting at 1).
pub(crate) fn next_id(tx: &WriteTransaction, counter: &str) -> Result<u64> {
    let mut t = tx.open_table(META)?;
    let next = t.get(counter)?.map(|v| v.value()).unwrap_or(0) + 1;
    t.insert(counter, next)?;
    Ok(next)
}

/// Appends an operation-log entry inside the caller's transaction.
pub(crate) fn oplog(
    tx: &WriteTransaction,
    project: u64,
    user: &str,
    title: &str,
    info: &str,
) -> Result<()> {
    let id = next_id(tx, "oplog")?;
    let e = OpLog {
        id,
        user: user.to_string(),
        title: title.to_string(),
        info: info.to_string(),
        time: crate::clock::now_ms(),
    };
    tx.open_table(OPLOG)?
        .insert((project, id), to_json(&e)?.as_slice())?;
    Ok(())
}

/// `[storage] cache_mb` when the configuration does not set it: enough for
/// the hot pages of an ops host's store without redb's 1 GiB default.
pub const DEFAULT_CACHE_MB: u64 = 64;
/// The largest `[storage] cache_mb` accepted (64 GiB).
pub const MAX_CACHE_MB: u64 = 65_536;

impl Store {
    /// Opens (or creates) `<data_dir>/jobx.redb` with the default cache.
    #[cfg(test)]
    pub fn open(data_dir: &Path) -> Result<Store> {
        Store::open_with_cache(data_dir, DEFAULT_CACHE_MB)
    }

    /// Opens (or creates) `<data_dir>/jobx.redb` with a page cache of
    /// `cache_mb` megabytes and makes sure every table exists.
    pub fn open_with_cache(data_dir: &Path, cache_mb: u64) -> Result<Store> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            Error::Internal(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join("jobx.redb");
        let cache = usize::try_from(cache_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        let db = Database::builder()
            .set_cache_size(cache)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::Internal(format!(
                    "cannot open {}: the store is in use by another process \
                     (is another jobxd running with the same data_dir?)",
                    path.display()
                )),
                other => Error::from(other),
            })?;
        let db = Arc::new(db);
        let store = Store {
            writer: writer::Writer::start(db.clone())?,
            workers: workers::Workers::start(workers::threads())?,
            db,
            path,
        };
        store.write(|tx| {
            tx.open_table(META)?;
            tx.open_table(NODES)?;
            tx.open_table(NODE_ORDER)?;
            tx.open_table(NODE_SEQ)?;
            tx.open_table(JOBS)?;
            tx.open_table(GROUPS)?;
            tx.open_table(GROUP_NAMES)?;
            tx.open_table(GROUP_INDEX)?;
            outbox::create_tables(tx)?;
            logs::create_tables(tx)?;
            tasks::create_tables(tx)
        })?;
        store.backfill_briefs()?;
        let moved = store.migrate_logs()?;
        if moved > 0 {
            log::info!("store: {moved} log records moved to the segment layout");
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a write transaction and commits durably; on error nothing is written.
    pub fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        let tx = self.db.begin_write()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in the next group commit (one transaction and one fsync
    /// shared with the writes queued meanwhile) and waits until it is
    /// durable. On error nothing of `f` is written. `f` may run more than
    /// once (see `writer.rs`); only its last run counts.
    pub fn grouped<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Tx) -> Result<T> + Send + 'static,
    {
        self.writer.write(f)
    }

    /// `grouped` for async callers: waiting for the commit takes no thread.
    pub async fn grouped_async<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Tx) -> Result<T> + Send + 'static,
    {
        self.writer.write_async(f).await
    }

    /// Runs blocking store work on the store's fixed pool of threads.
    pub async fn offload<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.workers.run(f).await
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    pub fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
        let tx = self.db.begin_read()?;
        f(&tx)
    }

    /// `GET /mon`: the store answers a read.
    pub fn ping(&self) -> bool {
        self.read(|tx| {
            tx.open_table(META)?.get("oplog")?;
            Ok(())
        })
        .is_ok()
    }

    /// The operation log of a project, newest first.
    pub fn oplog_list(&self, project: u64, limit: usize) -> Result<Vec<OpLog>> {
        self.read(|tx| {
            let t = tx.open_table(OPLOG)?;
            let mut out = Vec::new();
            for row in t.range((project, 0)..=(project, u64::MAX))?.rev() {
                let (_, v) = row?;
                out.push(from_json(v.value())?);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }
}
