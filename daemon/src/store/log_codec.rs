//! The byte layout of stored step logs (pure: no I/O).
//!
//! A log key's records are numbered 1, 2, … (its `seq`). The key's seq
//! range is cut into segments, each stored under (key, first seq):
//!
//! - a **data** segment holds the records whose home is this key, in order,
//!   as a block of encoded records (LZ4-compressed when that pays);
//! - a **ref** segment says "seqs `first..first+count` of this key are
//!   records `home_seq..home_seq+count` of key `home`".
//!
//! A record's home is its most specific key (the step's key, else the
//! batch's, else the task's); the batch and task keys refer to it. So each
//! line is stored once, and every key still reads as one ordered sequence.

use std::borrow::Cow;

/// A data segment takes records while they fit in this many bytes: with the
/// key and the page's own bookkeeping it then fills one 64 KiB store page
/// (redb gives a large value a page of the next power of two).
pub const CHUNK_BYTES: usize = 64 * 1024 - 512;
/// What a stored value costs in its page beyond its bytes (key, offsets).
const PAGE_OVERHEAD: usize = 256;
/// The store's page size; smaller values share pages.
const PAGE: usize = 4096;
/// The last data segment of a key is extended in place (rewritten) while it
/// is smaller than this; beyond, new records start a new segment. This bounds
/// what a slow, steady writer rewrites per commit.
pub const EXTEND_BELOW: usize = 16 * 1024;
/// Blocks smaller than this are stored uncompressed.
const COMPRESS_FROM: usize = 256;

const TAG_PLAIN: u8 = 1;
const TAG_LZ4: u8 = 2;
const TAG_REF: u8 = 3;

/// The stream of a record, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    Info,
}

impl Stream {
    pub fn parse(s: &str) -> Stream {
        match s {
            "stdout" => Stream::Stdout,
            "stderr" => Stream::Stderr,
            _ => Stream::Info,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Info => "info",
        }
    }

    fn byte(self) -> u8 {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
            Stream::Info => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Stream> {
        match b {
            0 => Some(Stream::Stdout),
            1 => Some(Stream::Stderr),
            2 => Some(Stream::Info),
            _ => None,
        }
    }
}

/// One record, borrowed from a decoded block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rec<'a> {
    pub time: i64,
    pub stream: Stream,
    pub node: &'a str,
    pub text: &'a str,
}

/// A stored segment, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Segment<'a> {
    /// `block` holds `count` encoded records (decompressed when it was).
    Data { count: u64, block: Cow<'a, [u8]> },
    Ref {
        count: u64,
        home: &'a str,
        home_seq: u64,
    },
}

impl Segment<'_> {
    pub fn count(&self) -> u64 {
        match self {
            Segment::Data { count, .. } | Segment::Ref { count, .. } => *count,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Corrupt(pub &'static str);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], at: &mut usize) -> Result<u64, Corrupt> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or(Corrupt("truncated number"))?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(Corrupt("number too long"))
}

fn get_bytes<'a>(b: &'a [u8], at: &mut usize) -> Result<&'a [u8], Corrupt> {
    let len = usize::try_from(get_varint(b, at)?).map_err(|_| Corrupt("length too large"))?;
    let end = at.checked_add(len).ok_or(Corrupt("length too large"))?;
    let s = b.get(*at..end).ok_or(Corrupt("truncated field"))?;
    *at = end;
    Ok(s)
}

fn get_str<'a>(b: &'a [u8], at: &mut usize) -> Result<&'a str, Corrupt> {
    std::str::from_utf8(get_bytes(b, at)?).map_err(|_| Corrupt("text is not UTF-8"))
}

/// Appends one record to a block.
pub fn encode_record(block: &mut Vec<u8>, time: i64, stream: Stream, node: &str, text: &str) {
    // Zig-zag so that a negative time stays short.
    put_varint(block, ((time << 1) ^ (time >> 63)) as u64);
    block.push(stream.byte());
    put_varint(block, node.len() as u64);
    block.extend_from_slice(node.as_bytes());
    put_varint(block, text.len() as u64);
    block.extend_from_slice(text.as_bytes());
}

/// The records of a block, in order.
pub fn records(block: &[u8]) -> Records<'_> {
    Records { block, at: 0 }
}

pub struct Records<'a> {
    block: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Rec<'a>, Corrupt>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.block.len() {
            return None;
        }
        Some(self.decode_one())
    }
}

impl<'a> Records<'a> {
    fn decode_one(&mut self) -> Result<Rec<'a>, Corrupt> {
        let b = self.block;
        let z = get_varint(b, &mut self.at)?;
        let time = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let sb = *b.get(self.at).ok_or(Corrupt("truncated record"))?;
        self.at += 1;
        let stream = Stream::from_byte(sb).ok_or(Corrupt("unknown stream"))?;
        let node = get_str(b, &mut self.at)?;
        let text = get_str(b, &mut self.at)?;
        Ok(Rec {
            time,
            stream,
            node,
            text,
        })
    }
}

/// The bytes of store pages a value of `n` bytes occupies.
fn pages_for(n: usize) -> usize {
    (n + PAGE_OVERHEAD).next_power_of_two().max(PAGE)
}

/// Whether storing `packed` instead of `plain` bytes saves space: within a
/// shared page, a tenth; above, whole pages (a value slightly smaller
/// would take as large a page).
fn compression_pays(plain: usize, packed: usize) -> bool {
    if plain + PAGE_OVERHEAD <= PAGE {
        packed < plain - plain / 10
    } else {
        pages_for(packed) < pages_for(plain)
    }
}

/// The bytes a record adds to a block (an upper bound).
pub fn record_size(node: &str, text: &str) -> usize {
    node.len() + text.len() + 1 + 3 * 10
}

/// A data segment of `count` records encoded in `block`.
pub fn encode_data(count: u64, block: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() / 2 + 16);
    if block.len() >= COMPRESS_FROM {
        let packed = lz4_flex::block::compress(block);
        if compression_pays(block.len() + 16, packed.len() + 16) {
            out.push(TAG_LZ4);
            put_varint(&mut out, count);
            put_varint(&mut out, block.len() as u64);
            out.extend_from_slice(&packed);
            return out;
        }
    }
    out.push(TAG_PLAIN);
    put_varint(&mut out, count);
    put_varint(&mut out, block.len() as u64);
    out.extend_from_slice(block);
    out
}

pub fn encode_ref(count: u64, home: &str, home_seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(home.len() + 12);
    out.push(TAG_REF);
    put_varint(&mut out, count);
    put_varint(&mut out, home_seq);
    out.extend_from_slice(home.as_bytes());
    out
}

/// Decodes a stored segment (decompressing a data block).
pub fn decode(v: &[u8]) -> Result<Segment<'_>, Corrupt> {
    let tag = *v.first().ok_or(Corrupt("empty segment"))?;
    let mut at = 1;
    let count = get_varint(v, &mut at)?;
    match tag {
        TAG_PLAIN | TAG_LZ4 => {
            let len = usize::try_from(get_varint(v, &mut at)?)
                .map_err(|_| Corrupt("length too large"))?;
            // A block is at most a chunk plus one record; a record is a line,
            // which plugins cap well below this.
            if len > 64 << 20 {
                return Err(Corrupt("block too large"));
            }
            let body = &v[at..];
            let block = if tag == TAG_PLAIN {
                if body.len() != len {
                    return Err(Corrupt("block length mismatch"));
                }
                Cow::Borrowed(body)
            } else {
                let raw = lz4_flex::block::decompress(body, len)
                    .map_err(|_| Corrupt("bad compressed block"))?;
                if raw.len() != len {
                    return Err(Corrupt("block length mismatch"));
                }
                Cow::Owned(raw)
            };
            Ok(Segment::Data { count, block })
        }
        TAG_REF => {
            let home_seq = get_varint(v, &mut at)?;
            let home = std::str::from_utf8(&v[at..]).map_err(|_| Corrupt("bad home key"))?;
            Ok(Segment::Ref {
                count,
                home,
                home_seq,
            })
        }
        _ => Err(Corrupt("unknown segment tag")),
    }
}

/// The block length of a stored data segment (None for a reference), read
/// from its header only: nothing is decompressed.
pub fn data_len(v: &[u8]) -> Result<Option<usize>, Corrupt> {
    let tag = *v.first().ok_or(Corrupt("empty segment"))?;
    let mut at = 1;
    get_varint(v, &mut at)?;
    match tag {
        TAG_PLAIN | TAG_LZ4 => usize::try_from(get_varint(v, &mut at)?)
            .map(Some)
            .map_err(|_| Corrupt("length too large")),
        TAG_REF => Ok(None),
        _ => Err(Corrupt("unknown segment tag")),
    }
}

/// The record count of a stored segment, read from its header only.
pub fn count_of(v: &[u8]) -> Result<u64, Corrupt> {
    let mut at = 1;
    get_varint(v, &mut at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_of(recs: &[(i64, Stream, &str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (t, s, n, x) in recs {
            encode_record(&mut b, *t, *s, n, x);
        }
        b
    }

    #[test]
    fn data_round_trips_plain_and_compressed() {
        let small = block_of(&[(1_700_000_000_000, Stream::Stdout, "a", "hi")]);
        let long: Vec<(i64, Stream, &str, &str)> = (0..500)
            .map(|i| (i, Stream::Stderr, "node-1", "the same line again and again"))
            .collect();
        let big = block_of(&long);
        for (count, block) in [(1u64, &small), (500, &big)] {
            let stored = encode_data(count, block);
            if block.len() > 1000 {
                assert_eq!(stored[0], TAG_LZ4);
                assert!(stored.len() < block.len() / 4, "{}", stored.len());
            } else {
                assert_eq!(stored[0], TAG_PLAIN);
            }
            assert_eq!(count_of(&stored), Ok(count));
            assert_eq!(data_len(&stored), Ok(Some(block.len())));
            match decode(&stored).expect("decode") {
                Segment::Data { count: c, block: b } => {
                    assert_eq!(c, count);
                    assert_eq!(b.as_ref(), block.as_slice());
                }
                other => panic!("{other:?}"),
            }
        }
        let recs: Vec<Rec> = records(&big).collect::<Result<_, _>>().expect("records");
        assert_eq!(recs.len(), 500);
        assert_eq!(
            recs[7],
            Rec {
                time: 7,
                stream: Stream::Stderr,
                node: "node-1",
                text: "the same line again and again"
            }
        );
    }

    #[test]
    fn records_keep_every_byte_and_negative_times() {
        let b = block_of(&[
            (-5, Stream::Info, "", ""),
            (
                i64::MAX,
                Stream::Stdout,
                "ü-node",
                "\u{1b}[31mred\u{1b}[0m ✓",
            ),
        ]);
        let recs: Vec<Rec> = records(&b).collect::<Result<_, _>>().expect("records");
        assert_eq!(recs[0].time, -5);
        assert_eq!(recs[0].text, "");
        assert_eq!(recs[1].time, i64::MAX);
        assert_eq!(recs[1].node, "ü-node");
        assert_eq!(recs[1].text, "\u{1b}[31mred\u{1b}[0m ✓");
    }

    #[test]
    fn compression_is_kept_only_where_it_saves_pages() {
        assert_eq!(pages_for(100), 4096);
        assert_eq!(pages_for(CHUNK_BYTES + 16), 64 * 1024);
        // A full block that compresses to 2/3 still takes a 64 KiB page.
        assert!(!compression_pays(60_000, 40_000));
        assert!(compression_pays(60_000, 30_000));
        // Small values share pages: a tenth saved counts.
        assert!(compression_pays(1_000, 800));
        assert!(!compression_pays(1_000, 950));
    }

    #[test]
    fn refs_round_trip() {
        let v = encode_ref(42, "AbcdefghijklZyxwvutsrqpolocal", 1_000_001);
        assert_eq!(data_len(&v), Ok(None));
        assert_eq!(
            decode(&v),
            Ok(Segment::Ref {
                count: 42,
                home: "AbcdefghijklZyxwvutsrqpolocal",
                home_seq: 1_000_001
            })
        );
    }

    #[test]
    fn damaged_segments_are_errors_not_panics() {
        let good = encode_data(3, &block_of(&[(1, Stream::Stdout, "a", "x"); 3]));
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        assert!(decode(&[9, 1]).is_err());
        assert!(decode(&[]).is_err());
        let mut bad = good.clone();
        bad[2] = 200; // claims a longer block
        assert!(decode(&bad).is_err());
        let garbage = [0xffu8; 40];
        assert!(records(&garbage).any(|r| r.is_err()));
        let mut lz = encode_data(500, &block_of(&[(1, Stream::Stdout, "a", "xxxxxxxx"); 500]));
        let n = lz.len();
        lz[n - 3] ^= 0x55;
        let _ = decode(&lz);
    }
}
