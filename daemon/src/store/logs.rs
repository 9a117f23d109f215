//! Step logs: each record stored once, in segments (layout in `log_codec`).
//!
//! Stores written before this layout kept one JSON row per record and key
//! (`logs`); `migrate_logs` moves them into segments when the store opens.

use super::log_codec::{self as codec, Corrupt, Rec, Segment, Stream};
use super::*;
use crate::model::LogRecord;
use redb::{ReadableTableMetadata, TableHandle};
use std::collections::HashMap;

/// (log key, first seq) → a segment (`log_codec`).
pub(crate) const LOG_SEGMENTS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("log_segments");
/// The old layout: (log key, seq) → LogRecord JSON. Only read to migrate.
const OLD_LOGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("logs");

/// Old rows moved per migration transaction.
const MIGRATE_ROWS: usize = 20_000;

pub(crate) fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(LOG_SEGMENTS)?;
    Ok(())
}

impl From<Corrupt> for Error {
    fn from(c: Corrupt) -> Error {
        Error::Internal(format!("stored log segment is damaged: {}", c.0))
    }
}

/// A record to append, with its seq under each of its keys.
pub struct NewLog<'a> {
    /// (key, seq) pairs, the record's home (most specific key) first.
    pub at: &'a [(&'a str, u64)],
    pub time: i64,
    pub stream: Stream,
    pub node: &'a str,
    pub text: &'a str,
}

/// What one commit writes under one key, in seq order.
enum Run<'a> {
    Data {
        first: u64,
        count: u64,
        block: Vec<u8>,
    },
    Ref {
        first: u64,
        count: u64,
        home: &'a str,
        home_seq: u64,
    },
}

/// Cuts a commit's records into runs per key (pure).
fn plan<'a>(lines: &[NewLog<'a>]) -> Vec<(&'a str, Vec<Run<'a>>)> {
    let mut keys: Vec<(&'a str, Vec<Run<'a>>)> = Vec::new();
    let mut index: HashMap<&'a str, usize> = HashMap::new();
    // Consecutive records mostly share their keys (one run's output): the
    // same string, so a pointer check saves hashing it per record.
    let mut recent: [(*const u8, usize); 3] = [(std::ptr::null(), 0); 3];
    for l in lines {
        let Some(&(home, home_seq)) = l.at.first() else {
            continue;
        };
        for (i, &(key, seq)) in l.at.iter().enumerate() {
            let hit = recent
                .get(i)
                .filter(|r| r.0 == key.as_ptr() && keys[r.1].0.len() == key.len());
            let slot = match hit {
                Some(r) => r.1,
                None => {
                    let n = *index.entry(key).or_insert_with(|| {
                        keys.push((key, Vec::new()));
                        keys.len() - 1
                    });
                    if let Some(r) = recent.get_mut(i) {
                        *r = (key.as_ptr(), n);
                    }
                    n
                }
            };
            let list = &mut keys[slot].1;
            if i == 0 {
                push_data(list, seq, l);
            } else {
                push_ref(list, seq, home, home_seq);
            }
        }
    }
    keys
}

fn push_data(list: &mut Vec<Run<'_>>, seq: u64, l: &NewLog<'_>) {
    if let Some(Run::Data {
        first,
        count,
        block,
    }) = list.last_mut()
    {
        let fits = block.len() + codec::record_size(l.node, l.text) <= codec::CHUNK_BYTES;
        if *first + *count == seq && fits {
            codec::encode_record(block, l.time, l.stream, l.node, l.text);
            *count += 1;
            return;
        }
    }
    let mut block = Vec::with_capacity(l.text.len() + l.node.len() + 16);
    codec::encode_record(&mut block, l.time, l.stream, l.node, l.text);
    list.push(Run::Data {
        first: seq,
        count: 1,
        block,
    });
}

fn push_ref<'a>(list: &mut Vec<Run<'a>>, seq: u64, home: &'a str, home_seq: u64) {
    if let Some(Run::Ref {
        first,
        count,
        home: h,
        home_seq: hs,
    }) = list.last_mut()
    {
        if *first + *count == seq && *h == home && *hs + *count == home_seq {
            *count += 1;
            return;
        }
    }
    list.push(Run::Ref {
        first: seq,
        count: 1,
        home,
        home_seq,
    });
}

type Segments<'t> = redb::Table<'t, (&'static str, u64), &'static [u8]>;

/// Writes a key's runs; the first one extends the key's last stored segment
/// when it continues it (a small data block, or a ref to the same home).
fn write_runs(t: &mut Segments<'_>, key: &str, runs: Vec<Run<'_>>) -> Result<()> {
    let mut runs = runs.into_iter();
    let Some(head) = runs.next() else {
        return Ok(());
    };
    let last = match t.range((key, 0)..=(key, u64::MAX))?.next_back() {
        Some(row) => {
            let (k, v) = row?;
            let v = v.value();
            // Only a segment the head run might extend is copied and decoded
            // (a full 64 KiB block is neither, however often a step prints).
            let extendable = match (codec::data_len(v)?, &head) {
                (Some(len), Run::Data { block, .. }) => {
                    len < codec::EXTEND_BELOW && len + block.len() <= codec::CHUNK_BYTES
                }
                (None, Run::Ref { .. }) => true,
                _ => false,
            };
            extendable.then(|| (k.value().1, v.to_vec()))
        }
        None => None,
    };
    let mut head = Some(head);
    if let (Some((at, stored)), Some(run)) = (&last, &head) {
        let merged = match (codec::decode(stored)?, run) {
            (
                Segment::Data { count, block },
                Run::Data {
                    first,
                    count: n,
                    block: more,
                },
            ) if at + count == *first
                && block.len() < codec::EXTEND_BELOW
                && block.len() + more.len() <= codec::CHUNK_BYTES =>
            {
                let mut all = block.into_owned();
                all.extend_from_slice(more);
                Some(codec::encode_data(count + n, &all))
            }
            (
                Segment::Ref {
                    count,
                    home,
                    home_seq,
                },
                Run::Ref {
                    first,
                    count: n,
                    home: h,
                    home_seq: hs,
                },
            ) if at + count == *first && home == *h && home_seq + count == *hs => {
                Some(codec::encode_ref(count + n, home, home_seq))
            }
            _ => None,
        };
        if let Some(v) = merged {
            t.insert((key, *at), v.as_slice())?;
            head = None;
        }
    }
    for run in head.into_iter().chain(runs) {
        match run {
            Run::Data {
                first,
                count,
                block,
            } => {
                t.insert((key, first), codec::encode_data(count, &block).as_slice())?;
            }
            Run::Ref {
                first,
                count,
                home,
                home_seq,
            } => {
                t.insert(
                    (key, first),
                    codec::encode_ref(count, home, home_seq).as_slice(),
                )?;
            }
        }
    }
    Ok(())
}

fn to_record(r: Rec<'_>) -> LogRecord {
    LogRecord {
        time: r.time,
        node: r.node.to_string(),
        stream: r.stream.as_str().to_string(),
        text: r.text.to_string(),
    }
}

/// Records of `key` from seq `start` on, at most `max`, appended to `out`.
/// Refs are followed one level only: a home key holds its records itself.
fn read_key(
    t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    key: &str,
    start: u64,
    max: usize,
    follow_refs: bool,
    out: &mut Vec<(u64, LogRecord)>,
) -> Result<()> {
    let goal = out.len().saturating_add(max);
    // The segment that holds `start` begins at or before it.
    let begin = match t.range((key, 0)..=(key, start))?.next_back() {
        Some(row) => row?.0.value().1,
        None => start,
    };
    for row in t.range((key, begin)..=(key, u64::MAX))? {
        if out.len() >= goal {
            break;
        }
        let (k, v) = row?;
        let first = k.value().1;
        let seg = codec::decode(v.value())?;
        if first.saturating_add(seg.count()) <= start {
            continue;
        }
        let skip = start.saturating_sub(first);
        match seg {
            Segment::Data { block, .. } => {
                for (i, r) in codec::records(&block).enumerate().skip(skip as usize) {
                    if out.len() >= goal {
                        break;
                    }
                    out.push((first + i as u64, to_record(r?)));
                }
            }
            Segment::Ref {
                count,
                home,
                home_seq,
            } => {
                if !follow_refs {
                    return Err(Corrupt("a reference to a reference").into());
                }
                let want = usize::try_from(count - skip)
                    .unwrap_or(usize::MAX)
                    .min(goal - out.len());
                let from = out.len();
                read_key(t, home, home_seq + skip, want, false, out)?;
                // Renumber: the home's seqs become this key's.
                for (j, entry) in out[from..].iter_mut().enumerate() {
                    entry.0 = first + skip + j as u64;
                }
            }
        }
    }
    Ok(())
}

impl Store {
    /// Appends log records in one transaction (the log writer's group commit).
    pub fn append_logs(&self, lines: &[NewLog<'_>]) -> Result<()> {
        let plan = plan(lines);
        self.write(|tx| {
            let mut t = tx.open_table(LOG_SEGMENTS)?;
            for (key, runs) in plan {
                write_runs(&mut t, key, runs)?;
            }
            Ok(())
        })
    }

    /// Bytes of the store's pages that hold step logs (data, index and the
    /// unused rest of their pages).
    pub fn log_bytes(&self) -> Result<u64> {
        self.read(|tx| {
            let s = tx.open_table(LOG_SEGMENTS)?.stats()?;
            Ok(s.stored_bytes() + s.metadata_bytes() + s.fragmented_bytes())
        })
    }

    /// The last sequence number written under `key` (0 when none).
    pub fn last_log_seq(&self, key: &str) -> Result<u64> {
        self.read(|tx| {
            let t = tx.open_table(LOG_SEGMENTS)?;
            let last = t.range((key, 0)..=(key, u64::MAX))?.next_back();
            match last {
                Some(row) => {
                    let (k, v) = row?;
                    Ok(k.value().1 + codec::count_of(v.value())?.saturating_sub(1))
                }
                None => Ok(0),
            }
        })
    }

    /// Records of `key` with seq > `offset`, at most `max`.
    pub fn logs(&self, key: &str, offset: u64, max: usize) -> Result<Vec<(u64, LogRecord)>> {
        self.read(|tx| {
            let t = tx.open_table(LOG_SEGMENTS)?;
            let mut out = Vec::new();
            read_key(&t, key, offset.saturating_add(1), max, true, &mut out)?;
            Ok(out)
        })
    }

    /// Moves logs of the old one-row-per-record layout into segments, a
    /// bounded number of rows per transaction (safe to interrupt: each
    /// transaction moves its rows). Answers how many rows moved.
    pub(crate) fn migrate_logs(&self) -> Result<u64> {
        let mut moved = 0u64;
        loop {
            let (n, done) = self.write(|tx| {
                if !tx.list_tables()?.any(|t| t.name() == OLD_LOGS.name()) {
                    return Ok((0, true));
                }
                let mut old = tx.open_table(OLD_LOGS)?;
                let mut rows: Vec<(String, u64, LogRecord)> = Vec::new();
                for row in old.iter()? {
                    if rows.len() >= MIGRATE_ROWS {
                        break;
                    }
                    let (k, v) = row?;
                    let (key, seq) = k.value();
                    rows.push((key.to_string(), seq, from_json(v.value())?));
                }
                if rows.is_empty() {
                    drop(old);
                    tx.delete_table(OLD_LOGS)?;
                    return Ok((0, true));
                }
                for (key, seq, _) in &rows {
                    old.remove((key.as_str(), *seq))?;
                }
                drop(old);
                // Each old row becomes a record of its own key: the views
                // answer exactly what they answered before.
                let at: Vec<[(&str, u64); 1]> =
                    rows.iter().map(|(k, s, _)| [(k.as_str(), *s)]).collect();
                let lines: Vec<NewLog> = rows
                    .iter()
                    .zip(&at)
                    .map(|((_, _, r), at)| NewLog {
                        at,
                        time: r.time,
                        stream: Stream::parse(&r.stream),
                        node: &r.node,
                        text: &r.text,
                    })
                    .collect();
                let mut t = tx.open_table(LOG_SEGMENTS)?;
                for (key, runs) in plan(&lines) {
                    write_runs(&mut t, key, runs)?;
                }
                Ok((rows.len() as u64, false))
            })?;
            moved += n;
            if done {
                return Ok(moved);
            }
            log::info!("store: moved {moved} log records to the segment layout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn store(tag: &str) -> (Dir, Store) {
        let p = std::env::temp_dir().join(format!(
            "jobx-logs-{tag}-{}-{}",
            std::process::id(),
            crate::clock::now_ms()
        ));
        std::fs::create_dir_all(&p).expect("dir");
        let s = Store::open(&p).expect("open");
        (Dir(p), s)
    }

    const T: &str = "Taskaaaaaaaa";
    const B: &str = "Batchbbbbbbb";
    const S1: &str = "BatchbbbbbbbStep1xxxxxxxlocal";
    const S2: &str = "BatchbbbbbbbStep2xxxxxxxlocal";

    /// Appends records the way the log writer numbers them.
    struct Feed {
        seqs: HashMap<String, u64>,
    }
    impl Feed {
        fn put(&mut self, s: &Store, batch: &[(&[&str], &str)]) {
            let mut ats: Vec<Vec<(String, u64)>> = Vec::new();
            for (keys, _) in batch {
                let mut at = Vec::new();
                // Home first: the most specific key is the last one given.
                for k in keys.iter().rev() {
                    let n = self.seqs.entry(k.to_string()).or_insert(0);
                    *n += 1;
                    at.push((k.to_string(), *n));
                }
                ats.push(at);
            }
            let borrowed: Vec<Vec<(&str, u64)>> = ats
                .iter()
                .map(|a| a.iter().map(|(k, n)| (k.as_str(), *n)).collect())
                .collect();
            let lines: Vec<NewLog> = batch
                .iter()
                .zip(&borrowed)
                .map(|((_, text), at)| NewLog {
                    at,
                    time: 7,
                    stream: Stream::Stdout,
                    node: "n1",
                    text,
                })
                .collect();
            s.append_logs(&lines).expect("append");
        }
    }

    fn texts(s: &Store, key: &str, offset: u64, max: usize) -> Vec<(u64, String)> {
        s.logs(key, offset, max)
            .expect("logs")
            .into_iter()
            .map(|(n, r)| (n, r.text))
            .collect()
    }

    #[test]
    fn every_key_reads_its_records_in_order_each_stored_once() {
        let (_d, s) = store("views");
        let mut f = Feed {
            seqs: HashMap::new(),
        };
        f.put(&s, &[(&[T], "task started"), (&[T, B], "batch 1 started")]);
        f.put(
            &s,
            &[
                (&[T, B, S1], "s1 a"),
                (&[T, B, S2], "s2 a"),
                (&[T, B, S1], "s1 b"),
            ],
        );
        f.put(&s, &[(&[T, B, S1], "s1 c"), (&[T, B], "batch 1 ended")]);
        let all: Vec<String> = texts(&s, T, 0, 100).into_iter().map(|x| x.1).collect();
        assert_eq!(
            all,
            [
                "task started",
                "batch 1 started",
                "s1 a",
                "s2 a",
                "s1 b",
                "s1 c",
                "batch 1 ended"
            ]
        );
        let nums: Vec<u64> = texts(&s, T, 0, 100).into_iter().map(|x| x.0).collect();
        assert_eq!(nums, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            texts(&s, B, 2, 2),
            [(3, "s2 a".to_string()), (4, "s1 b".to_string())]
        );
        assert_eq!(
            texts(&s, S1, 1, 10),
            [(2, "s1 b".to_string()), (3, "s1 c".to_string())]
        );
        assert_eq!(texts(&s, S2, 0, 10), [(1, "s2 a".to_string())]);
        assert_eq!(s.last_log_seq(T).expect("seq"), 7);
        assert_eq!(s.last_log_seq(B).expect("seq"), 6);
        assert_eq!(s.last_log_seq(S1).expect("seq"), 3);
        assert_eq!(s.last_log_seq("Nothinghere1").expect("seq"), 0);
        assert!(texts(&s, T, 7, 10).is_empty());
        // Each step line's text is stored once: the views hold references.
        let text_bytes = s
            .read(|tx| {
                let t = tx.open_table(LOG_SEGMENTS)?;
                let mut n = 0;
                for row in t.iter()? {
                    if let Segment::Data { block, .. } = codec::decode(row?.1.value())? {
                        for r in codec::records(&block) {
                            n += usize::from(r?.text == "s1 a");
                        }
                    }
                }
                Ok(n)
            })
            .expect("scan");
        assert_eq!(text_bytes, 1);
    }

    #[test]
    fn a_long_stream_is_cut_into_chunks_and_reads_from_any_offset() {
        let (_d, s) = store("chunks");
        let mut f = Feed {
            seqs: HashMap::new(),
        };
        let lines: Vec<String> = (1..=20_000)
            .map(|i| format!("line {i:05} {}", "x".repeat(40)))
            .collect();
        for part in lines.chunks(3_000) {
            let batch: Vec<(&[&str], &str)> =
                part.iter().map(|l| (&[T, B, S1][..], l.as_str())).collect();
            f.put(&s, &batch);
        }
        let segments = s
            .read(|tx| {
                Ok(tx
                    .open_table(LOG_SEGMENTS)?
                    .range((S1, 0)..=(S1, u64::MAX))?
                    .count())
            })
            .expect("count");
        assert!(segments > 10, "{segments} segments");
        for key in [T, B, S1] {
            let mut at = 0;
            let mut n = 0;
            loop {
                let page = texts(&s, key, at, 777);
                if page.is_empty() {
                    break;
                }
                for (seq, text) in &page {
                    n += 1;
                    assert_eq!(*seq, n as u64);
                    assert_eq!(text, &lines[n - 1]);
                }
                at = page[page.len() - 1].0;
            }
            assert_eq!(n, 20_000, "{key}");
        }
        assert_eq!(texts(&s, T, 12_344, 1), [(12_345, lines[12_344].clone())]);
    }
}
