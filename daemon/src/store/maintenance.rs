//! Store upkeep that runs beside the API: pruning the step logs of tasks
//! that finished long ago, and a consistent copy of the whole store.
//!
//! Pruning works in many short write transactions (one task and at most a
//! few thousand records each), so the log writer and the API never wait
//! long for the single redb writer; readers are never blocked (MVCC).
//!
//! Which tasks have expired is kept in an index of our own, filled lazily:
//! the global task id counter only grows, so a cursor ("every task with an
//! id up to N has been looked at") finds new tasks through `task_index`
//! without scanning old ones. A task seen finished goes into `log_expiry`
//! by finish time; a task seen unfinished goes into `log_watch` and is
//! looked at again on each pass until it finishes. The index is only a
//! hint: before deleting anything the task row is read again in the same
//! transaction, so a task that was retried or is running again keeps its
//! logs. This costs each pass O(projects + new tasks + running tasks +
//! expired tasks) instead of a scan of every task row.

use super::*;
use crate::model::Task;
use redb::{
    Durability, Key, MultimapTableHandle, ReadableTableMetadata, TableError, TableHandle, Value,
};
use std::ops::Bound;

use super::logs::LOG_SEGMENTS;
use super::tasks::{
    ACTIVE, APPROVALS, APPROVAL_PENDING, STATUS_COUNT, SUBTASKS, SUBTASK_INDEX, TASKS, TASK_INDEX,
    TASK_TIME,
};

/// Cursors of the upkeep work.
const MAINT: TableDefinition<&str, u64> = TableDefinition::new("maintenance");
/// (finish ms, task uuid): finished tasks whose logs may still be stored.
const LOG_EXPIRY: TableDefinition<(i64, &str), ()> = TableDefinition::new("log_expiry");
/// Tasks that were unfinished when last looked at.
const LOG_WATCH: TableDefinition<&str, ()> = TableDefinition::new("log_watch");

/// `MAINT` key: every task with an id up to this has been indexed.
const SEEN_ID: &str = "retention_seen_task_id";

/// Task JSON read per indexing transaction, so one transaction stays short
/// even when task rows carry thousands of nodes.
const INDEX_BYTES: usize = 4 << 20;

/// Rows copied per transaction of a backup.
const COPY_CHUNK: usize = 20_000;

/// What one pruning transaction did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub task: String,
    pub records: u64,
    /// All records of the task are gone (or it turned out not to be expired).
    pub done: bool,
}

/// When a task's logs may go: finished, and when.
fn finished_at(t: &Task) -> Option<i64> {
    if !t.is_finished() {
        return None;
    }
    Some(t.finish_ms.or(t.start_ms).unwrap_or(t.created_ms))
}

/// A log key of batch `sub`: the batch uuid itself or one of its steps.
fn is_batch_key(key: &str, sub: &str) -> bool {
    key == sub
        || crate::logs::parse_key(key)
            == Some(crate::logs::KeyKind::Step {
                subtask: sub.to_string(),
            })
}

fn read_task(
    tasks: &impl ReadableTable<&'static str, &'static [u8]>,
    uuid: &str,
) -> Result<Option<(Task, usize)>> {
    match tasks.get(uuid)? {
        Some(v) => {
            let bytes = v.value();
            Ok(Some((from_json(bytes)?, bytes.len())))
        }
        None => Ok(None),
    }
}

impl Store {
    /// Looks at tasks created since the last call (at most `limit` task ids)
    /// and files them under `log_expiry` or `log_watch`. Returns how many
    /// task ids were covered; 0 means the index is up to date.
    pub fn retention_index_new(&self, limit: u64) -> Result<u64> {
        self.write(|tx| {
            let last_id = tx
                .open_table(META)?
                .get("task")?
                .map(|v| v.value())
                .unwrap_or(0);
            let mut maint = tx.open_table(MAINT)?;
            let seen = maint.get(SEEN_ID)?.map(|v| v.value()).unwrap_or(0);
            if seen >= last_id {
                return Ok(0);
            }
            let mut upto = seen.saturating_add(limit.max(1)).min(last_id);
            // Ids are global, the index is per project: visit each project's slice.
            let idx = tx.open_table(TASK_INDEX)?;
            let mut found: Vec<(u64, String)> = Vec::new();
            let mut project = 0u64;
            loop {
                let next = idx.range((project, 0)..)?.next();
                let Some(row) = next else { break };
                let p = row?.0.value().0;
                for row in idx.range((p, seen + 1)..=(p, upto))? {
                    let (k, uuid) = row?;
                    found.push((k.value().1, uuid.value().to_string()));
                }
                match p.checked_add(1) {
                    Some(n) => project = n,
                    None => break,
                }
            }
            found.sort();
            let tasks = tx.open_table(TASKS)?;
            let mut expiry = tx.open_table(LOG_EXPIRY)?;
            let mut watch = tx.open_table(LOG_WATCH)?;
            let mut bytes = 0usize;
            for (id, uuid) in found {
                if bytes >= INDEX_BYTES {
                    // Stop early; the next call continues after the last task filed.
                    upto = id - 1;
                    break;
                }
                let Some((t, len)) = read_task(&tasks, &uuid)? else {
                    continue;
                };
                bytes += len;
                match finished_at(&t) {
                    Some(ms) => expiry.insert((ms, uuid.as_str()), ())?,
                    None => watch.insert(uuid.as_str(), ())?,
                };
            }
            maint.insert(SEEN_ID, upto)?;
            Ok(upto - seen)
        })
    }

    /// Looks again at up to `limit` watched tasks after `after` (exclusive);
    /// finished ones move to `log_expiry`. Returns where to continue, or
    /// None when the end of the watch list was reached.
    pub fn retention_recheck(&self, after: Option<&str>, limit: usize) -> Result<Option<String>> {
        self.write(|tx| {
            let mut watch = tx.open_table(LOG_WATCH)?;
            let lower = match after {
                Some(a) => Bound::Excluded(a),
                None => Bound::Unbounded,
            };
            let mut chunk = Vec::new();
            for row in watch.range::<&str>((lower, Bound::Unbounded))? {
                chunk.push(row?.0.value().to_string());
                if chunk.len() >= limit.max(1) {
                    break;
                }
            }
            let tasks = tx.open_table(TASKS)?;
            let mut expiry = tx.open_table(LOG_EXPIRY)?;
            for uuid in &chunk {
                match read_task(&tasks, uuid)? {
                    None => {
                        watch.remove(uuid.as_str())?;
                    }
                    Some((t, _)) => {
                        if let Some(ms) = finished_at(&t) {
                            watch.remove(uuid.as_str())?;
                            expiry.insert((ms, uuid.as_str()), ())?;
                        }
                    }
                }
            }
            Ok(if chunk.len() >= limit.max(1) {
                chunk.pop()
            } else {
                None
            })
        })
    }

    /// Deletes up to `budget` log segments of the task that finished first,
    /// if it finished before `cutoff_ms`. None when nothing has expired.
    pub fn prune_expired_logs(&self, cutoff_ms: i64, budget: usize) -> Result<Option<Pruned>> {
        self.write(|tx| {
            let mut expiry = tx.open_table(LOG_EXPIRY)?;
            let first = match expiry.first()? {
                Some((k, _)) => {
                    let (ms, uuid) = k.value();
                    (ms, uuid.to_string())
                }
                None => return Ok(None),
            };
            let (ms, uuid) = first;
            if ms >= cutoff_ms {
                return Ok(None);
            }
            let mut out = Pruned {
                task: uuid.clone(),
                records: 0,
                done: true,
            };
            // The index is a hint: the task row decides, read in this transaction.
            let tasks = tx.open_table(TASKS)?;
            let now_finished = read_task(&tasks, &uuid)?.map(|(t, _)| finished_at(&t));
            match now_finished {
                None => {
                    expiry.remove((ms, uuid.as_str()))?;
                    return Ok(Some(out));
                }
                Some(None) => {
                    // Running again (a retry): watch it until it ends.
                    expiry.remove((ms, uuid.as_str()))?;
                    tx.open_table(LOG_WATCH)?.insert(uuid.as_str(), ())?;
                    return Ok(Some(out));
                }
                Some(Some(at)) if at != ms => {
                    expiry.remove((ms, uuid.as_str()))?;
                    expiry.insert((at, uuid.as_str()), ())?;
                    return Ok(Some(out));
                }
                Some(Some(_)) => {}
            }
            // Log keys of a task: its uuid, and per batch the batch uuid and
            // batch uuid + step uuid + plugin (one key range per batch).
            let mut prefixes = Vec::new();
            for row in tx
                .open_table(SUBTASK_INDEX)?
                .range((uuid.as_str(), 0)..=(uuid.as_str(), u32::MAX))?
            {
                prefixes.push(row?.1.value().to_string());
            }
            // Whole segments go; `budget` bounds the segments per transaction.
            let mut logs = tx.open_table(LOG_SEGMENTS)?;
            let mut doomed: Vec<(String, u64)> = Vec::new();
            let mut records = 0u64;
            for row in logs.range((uuid.as_str(), 0)..=(uuid.as_str(), u64::MAX))? {
                if doomed.len() >= budget {
                    break;
                }
                let (k, v) = row?;
                records += super::log_codec::count_of(v.value())?;
                doomed.push((uuid.clone(), k.value().1));
            }
            for prefix in &prefixes {
                if doomed.len() >= budget {
                    break;
                }
                for row in logs.range((prefix.as_str(), 0)..)? {
                    let (k, v) = row?;
                    let (key, seq) = k.value();
                    if !key.starts_with(prefix.as_str()) {
                        break;
                    }
                    if doomed.len() >= budget {
                        break;
                    }
                    if is_batch_key(key, prefix) {
                        records += super::log_codec::count_of(v.value())?;
                        doomed.push((key.to_string(), seq));
                    }
                }
            }
            for (key, seq) in &doomed {
                logs.remove((key.as_str(), *seq))?;
            }
            out.records = records;
            out.done = doomed.len() < budget;
            if out.done {
                expiry.remove((ms, uuid.as_str()))?;
            }
            Ok(Some(out))
        })
    }

    /// Copies every table, as of one read snapshot, into a new store written
    /// to `file`. Writers carry on meanwhile; the copy is a complete store
    /// file that `Store::open` accepts as `<data_dir>/jobx.redb`.
    pub fn snapshot_into(&self, file: std::fs::File) -> Result<u64> {
        let src = self.db.begin_read()?;
        let backend = redb::backends::FileBackend::new(file)?;
        let dst = redb::Builder::new().create_with_backend(backend)?;
        let mut copied = Vec::new();
        let mut rows = 0;
        rows += copy_table(&src, &dst, META, &mut copied)?;
        rows += copy_table(&src, &dst, NODES, &mut copied)?;
        rows += copy_table(&src, &dst, NODE_ORDER, &mut copied)?;
        rows += copy_table(&src, &dst, NODE_SEQ, &mut copied)?;
        rows += copy_table(&src, &dst, JOBS, &mut copied)?;
        rows += copy_table(&src, &dst, GROUPS, &mut copied)?;
        rows += copy_table(&src, &dst, GROUP_NAMES, &mut copied)?;
        rows += copy_table(&src, &dst, GROUP_INDEX, &mut copied)?;
        rows += copy_table(&src, &dst, OPLOG, &mut copied)?;
        rows += copy_table(&src, &dst, TASKS, &mut copied)?;
        rows += copy_table(&src, &dst, TASK_INDEX, &mut copied)?;
        rows += copy_table(&src, &dst, TASK_TIME, &mut copied)?;
        rows += copy_table(&src, &dst, super::tasks::TASK_BRIEFS, &mut copied)?;
        rows += copy_table(&src, &dst, ACTIVE, &mut copied)?;
        rows += copy_table(&src, &dst, SUBTASKS, &mut copied)?;
        rows += copy_table(&src, &dst, SUBTASK_INDEX, &mut copied)?;
        rows += copy_table(&src, &dst, APPROVALS, &mut copied)?;
        rows += copy_table(&src, &dst, APPROVAL_PENDING, &mut copied)?;
        rows += copy_table(&src, &dst, LOG_SEGMENTS, &mut copied)?;
        rows += copy_table(&src, &dst, STATUS_COUNT, &mut copied)?;
        rows += copy_table(&src, &dst, MAINT, &mut copied)?;
        rows += copy_table(&src, &dst, LOG_EXPIRY, &mut copied)?;
        rows += copy_table(&src, &dst, LOG_WATCH, &mut copied)?;
        rows += copy_table(&src, &dst, super::outbox::OUTBOX, &mut copied)?;
        rows += copy_table(&src, &dst, super::outbox::OUTBOX_DUE, &mut copied)?;
        rows += copy_table(&src, &dst, super::outbox::DELIVERIES, &mut copied)?;
        // A table added elsewhere and not listed above would be silently
        // missing from backups: refuse instead.
        for t in src.list_tables()? {
            if !copied.iter().any(|c| c == t.name()) {
                return Err(Error::Internal(format!(
                    "backup: table {:?} is not known to the backup code",
                    t.name()
                )));
            }
        }
        if let Some(t) = src.list_multimap_tables()?.next() {
            return Err(Error::Internal(format!(
                "backup: multimap table {:?} is not known to the backup code",
                t.name()
            )));
        }
        // The chunks were committed without fsync; this commit makes them all durable.
        let tx = dst.begin_write()?;
        tx.commit()?;
        dst.close()?;
        Ok(rows)
    }
}

impl Store {
    /// Opens a store file read-only (a backup) and counts its tasks; an
    /// error if it is not a complete store.
    pub fn check_file(path: &Path) -> Result<u64> {
        let db = redb::ReadOnlyDatabase::open(path)?;
        let tx = db.begin_read()?;
        tx.open_table(META)?;
        let tasks = tx.open_table(TASKS)?.len()?;
        Ok(tasks)
    }
}

/// Copies one table (if it exists) in chunks of committed transactions.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &redb::ReadTransaction,
    dst: &redb::Database,
    def: TableDefinition<K, V>,
    copied: &mut Vec<String>,
) -> Result<u64> {
    let table = match src.open_table(def) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    copied.push(def.name().to_string());
    let mut rows = table.iter()?;
    let mut n = 0u64;
    loop {
        let mut tx = dst.begin_write()?;
        tx.set_durability(Durability::None)
            .map_err(|e| Error::Internal(format!("backup: {e}")))?;
        let mut in_chunk = 0;
        {
            let mut out = tx.open_table(def)?;
            for row in rows.by_ref() {
                let (k, v) = row?;
                out.insert(k.value(), v.value())?;
                in_chunk += 1;
                if in_chunk >= COPY_CHUNK {
                    break;
                }
            }
        }
        tx.commit()?;
        n += in_chunk as u64;
        if in_chunk < COPY_CHUNK {
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let p =
                std::env::temp_dir().join(format!("jobx-maint-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("temp dir");
            Dir(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A task row as the engine stores it, with `subs` batches.
    fn put_task(s: &Store, id: u64, uuid: &str, status: &str, finish: Option<i64>, subs: &[&str]) {
        let task = serde_json::json!({
            "id": id, "projectid": 10, "uuid": uuid, "name": "j", "group": "g",
            "user": "u", "slave": "s", "status": status, "created_ms": 1,
            "start_ms": 2, "finish_ms": finish, "calltype": "api", "reason": "",
            "variable": {}, "vars": {}, "steps": [], "nodes": {}, "batches": subs.len(),
            "action": "deploy", "stopped_by": null, "decision": "",
        });
        // Fails loudly if the task model changed shape.
        let _: Task = serde_json::from_value(task.clone()).expect("task JSON matches the model");
        s.write(|tx| {
            tx.open_table(TASKS)?
                .insert(uuid, serde_json::to_vec(&task)?.as_slice())?;
            tx.open_table(TASK_INDEX)?.insert((10, id), uuid)?;
            let mut meta = tx.open_table(META)?;
            let last = meta.get("task")?.map(|v| v.value()).unwrap_or(0);
            meta.insert("task", last.max(id))?;
            let mut idx = tx.open_table(SUBTASK_INDEX)?;
            for (i, sub) in subs.iter().enumerate() {
                idx.insert((uuid, i as u32), *sub)?;
            }
            Ok(())
        })
        .expect("store task");
    }

    /// `n` records under each of `keys`, each key holding its own.
    fn log(s: &Store, keys: &[&str], n: u64) {
        let at: Vec<[(&str, u64); 1]> = keys
            .iter()
            .flat_map(|k| (1..=n).map(move |seq| [(*k, seq)]))
            .collect();
        let lines: Vec<super::super::NewLog> = at
            .iter()
            .map(|at| super::super::NewLog {
                at,
                time: 1,
                stream: super::super::LogStream::Stdout,
                node: "a",
                text: "hi",
            })
            .collect();
        s.append_logs(&lines).expect("append logs");
    }

    fn count(s: &Store, key: &str) -> usize {
        s.logs(key, 0, usize::MAX).expect("logs").len()
    }

    fn prune_all(s: &Store, cutoff: i64, budget: usize) -> Vec<Pruned> {
        while s.retention_index_new(2).expect("index") > 0 {}
        let mut at = None;
        while let Some(next) = s.retention_recheck(at.as_deref(), 1).expect("recheck") {
            at = Some(next);
        }
        let mut out = Vec::new();
        while let Some(p) = s.prune_expired_logs(cutoff, budget).expect("prune") {
            out.push(p);
            assert!(out.len() < 1000, "pruning does not end");
        }
        out
    }

    const OLD: &str = "Aaaaaaaaaaa1";
    const OLD_SUB: &str = "Bbbbbbbbbbb1";
    const NEW: &str = "Aaaaaaaaaaa2";
    const NEW_SUB: &str = "Bbbbbbbbbbb2";
    const RUN: &str = "Aaaaaaaaaaa3";
    const RUN_SUB: &str = "Bbbbbbbbbbb3";
    /// A neighbour key that sorts right after OLD_SUB's range.
    const OTHER_SUB: &str = "Bbbbbbbbbbb1x";

    #[test]
    fn prunes_every_key_of_old_tasks_in_bounded_steps() {
        let d = Dir::new("prune");
        let s = Store::open(&d.0).expect("open");
        put_task(&s, 1, OLD, "success", Some(1_000), &[OLD_SUB]);
        put_task(&s, 2, NEW, "fail", Some(5_000), &[NEW_SUB]);
        put_task(&s, 3, RUN, "running", None, &[RUN_SUB]);
        let old_step = format!("{OLD_SUB}Ccccccccccc1local");
        let new_step = format!("{NEW_SUB}Ccccccccccc2local");
        log(&s, &[OLD, OLD_SUB, &old_step, OTHER_SUB], 5);
        log(&s, &[NEW, NEW_SUB, &new_step], 5);
        log(&s, &[RUN, RUN_SUB], 5);

        let steps = prune_all(&s, 2_000, 1);
        // Three keys of one segment (5 records) each, one segment per
        // transaction, then one that finds the task empty.
        assert_eq!(steps.len(), 4, "{steps:?}");
        assert!(steps.iter().all(|p| p.task == OLD && p.records <= 5));
        assert_eq!(steps.iter().map(|p| p.records).sum::<u64>(), 15);
        for k in [OLD, OLD_SUB, old_step.as_str()] {
            assert_eq!(count(&s, k), 0, "{k}");
        }
        for k in [OTHER_SUB, NEW, NEW_SUB, new_step.as_str(), RUN, RUN_SUB] {
            assert_eq!(count(&s, k), 5, "{k}");
        }
        assert!(s.task(OLD).expect("read").is_some(), "task rows stay");
        // Nothing left to do until the cutoff moves.
        assert!(prune_all(&s, 2_000, 1).is_empty());

        // The running task finishes; a later pass takes it with the other.
        put_task(&s, 3, RUN, "success", Some(6_000), &[RUN_SUB]);
        let steps = prune_all(&s, 10_000, 100);
        let tasks: Vec<&str> = steps.iter().map(|p| p.task.as_str()).collect();
        assert_eq!(tasks, [NEW, RUN]);
        for k in [NEW, NEW_SUB, new_step.as_str(), RUN, RUN_SUB] {
            assert_eq!(count(&s, k), 0, "{k}");
        }
    }

    #[test]
    fn a_task_running_again_keeps_its_logs() {
        let d = Dir::new("retry");
        let s = Store::open(&d.0).expect("open");
        put_task(&s, 1, OLD, "fail", Some(1_000), &[OLD_SUB]);
        log(&s, &[OLD, OLD_SUB], 3);
        while s.retention_index_new(10).expect("index") > 0 {}
        // Retried after being indexed as finished: running now.
        put_task(&s, 1, OLD, "running", None, &[OLD_SUB]);
        assert_eq!(prune_all(&s, 2_000, 10).len(), 1);
        assert_eq!(count(&s, OLD), 3);
        // It finishes again, later: the new finish time counts.
        put_task(&s, 1, OLD, "success", Some(3_000), &[OLD_SUB]);
        assert!(prune_all(&s, 2_000, 10).is_empty());
        assert_eq!(count(&s, OLD), 3);
        assert_eq!(prune_all(&s, 4_000, 10).len(), 1);
        assert_eq!(count(&s, OLD), 0);
    }

    #[test]
    fn snapshot_is_a_complete_store() {
        let d = Dir::new("snap");
        let s = Store::open(&d.0).expect("open");
        put_task(&s, 1, OLD, "running", None, &[OLD_SUB]);
        log(&s, &[OLD, OLD_SUB], 50_001);
        s.retention_index_new(10).expect("index");
        let copy_dir = d.0.join("restored");
        std::fs::create_dir_all(&copy_dir).expect("dir");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(copy_dir.join("jobx.redb"))
            .expect("create");
        let rows = s.snapshot_into(file).expect("snapshot");
        // 100,002 records in segments of up to 64 KiB of lines.
        assert!(rows > 10, "{rows}");
        // Writes after the snapshot are not in it.
        log(&s, &["Zzzzzzzzzzz9"], 1);
        drop(s);
        let r = Store::open(&copy_dir).expect("the copy opens as a store");
        assert_eq!(
            r.task(OLD).expect("read").map(|t| t.status.to_string()),
            Some("running".into())
        );
        assert_eq!(count(&r, OLD), 50_001);
        assert_eq!(count(&r, OLD_SUB), 50_001);
        assert_eq!(count(&r, "Zzzzzzzzzzz9"), 0);
        assert_eq!(r.last_log_seq(OLD).expect("seq"), 50_001);
        drop(r);
        assert_eq!(
            Store::check_file(&copy_dir.join("jobx.redb")).expect("check"),
            1
        );
        let junk = d.0.join("junk.redb");
        std::fs::write(&junk, b"not a store").expect("write");
        assert!(Store::check_file(&junk).is_err());
    }
}
