//! A response body fed chunk by chunk from a channel, and log records read
//! in byte-bounded pages, so that large answers (a long log as a page or as
//! text) are streamed with bounded memory instead of built whole.

use crate::error::Result;
use crate::model::LogRecord;
use crate::state::App;
use futures_lite::io::{AsyncBufRead, AsyncRead};
use futures_lite::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Chunks in flight between the producer and the connection.
pub const DEPTH: usize = 4;

pub struct ChunkReader {
    rx: Pin<Box<async_channel::Receiver<Vec<u8>>>>,
    buf: Vec<u8>,
    pos: usize,
    /// Spent chunks go back to the writer to be filled again.
    back: Option<async_channel::Sender<Vec<u8>>>,
}

impl ChunkReader {
    pub fn new(rx: async_channel::Receiver<Vec<u8>>) -> ChunkReader {
        ChunkReader {
            rx: Box::pin(rx),
            buf: Vec::new(),
            pos: 0,
            back: None,
        }
    }
}

impl AsyncBufRead for ChunkReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.pos >= this.buf.len() {
            match this.rx.as_mut().poll_next(cx) {
                Poll::Ready(Some(chunk)) => {
                    let mut spent = std::mem::replace(&mut this.buf, chunk);
                    this.pos = 0;
                    if let Some(back) = &this.back {
                        spent.clear();
                        let _ = back.try_send(spent);
                    }
                }
                // The producer finished (or gave up): end of body.
                Poll::Ready(None) => return Poll::Ready(Ok(&[])),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(&this.buf[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.buf.len());
    }
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let avail = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(b)) => b,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}

/// A chunk is sent once this much is buffered.
pub const CHUNK: usize = 64 * 1024;
/// Text of the log records read from the store at once (about; a read takes
/// at least one record). Small reads keep what a stream holds, and what it
/// leaves to the allocator, small.
pub const READ_BYTES: usize = 256 << 10;
/// Records read from the store at once, at most.
const READ_RECORDS: usize = 2000;

/// The writing end of a streamed body: text is cut into chunks of exactly
/// [`CHUNK`] bytes (the last one shorter), at most [`DEPTH`] of them wait
/// for the connection. Equal chunks are reused by the allocator, where
/// buffers of every size would scatter the heap.
pub struct Chunks {
    tx: async_channel::Sender<Vec<u8>>,
    buf: Vec<u8>,
    full: std::collections::VecDeque<Vec<u8>>,
    /// Chunks the connection has sent, to be filled again: a stream uses a
    /// handful of buffers however long it is, instead of one per chunk.
    spare: async_channel::Receiver<Vec<u8>>,
}

impl Chunks {
    /// The writer and the response body it feeds.
    pub fn new() -> (Chunks, tide::Body) {
        let (tx, rx) = async_channel::bounded::<Vec<u8>>(DEPTH);
        let (back, spare) = async_channel::bounded::<Vec<u8>>(DEPTH + 2);
        let mut reader = ChunkReader::new(rx);
        reader.back = Some(back);
        let body = tide::Body::from_reader(reader, None);
        (
            Chunks {
                tx,
                buf: Vec::with_capacity(CHUNK),
                full: std::collections::VecDeque::new(),
                spare,
            },
            body,
        )
    }

    fn fresh(&self) -> Vec<u8> {
        match self.spare.try_recv() {
            Ok(v) if v.capacity() >= CHUNK => v,
            _ => Vec::with_capacity(CHUNK),
        }
    }

    pub fn push(&mut self, s: &str) {
        let mut b = s.as_bytes();
        while !b.is_empty() {
            let n = (CHUNK - self.buf.len()).min(b.len());
            self.buf.extend_from_slice(&b[..n]);
            b = &b[n..];
            if self.buf.len() == CHUNK {
                let next = self.fresh();
                let chunk = std::mem::replace(&mut self.buf, next);
                self.full.push_back(chunk);
            }
        }
    }

    /// Sends the full chunks; false once the client went away.
    pub async fn flush_full(&mut self) -> bool {
        while let Some(chunk) = self.full.pop_front() {
            if self.tx.send(chunk).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Sends what is left; the body ends when `self` is dropped.
    pub async fn finish(mut self) {
        if self.flush_full().await && !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            let _ = self.tx.send(chunk).await;
        }
    }
}

impl std::fmt::Write for Chunks {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s);
        Ok(())
    }
}

/// Reads a log key's records in order, in reads of about [`READ_BYTES`] of
/// text, so that memory stays bounded however large the log or its records.
pub struct LogPages {
    key: String,
    /// The last sequence number handed out.
    pub offset: u64,
    /// Records after this one are not read (a snapshot of the log's end).
    upto: u64,
    /// Records to ask for next, from the size of the last ones.
    per_read: usize,
    ended: bool,
}

/// Bytes a record counts for against the read budget.
pub fn record_bytes(r: &LogRecord) -> usize {
    r.text.len() + r.node.len() + 32
}

/// How many records to read next, after records of `avg` bytes on average.
fn next_read(avg: usize) -> usize {
    (READ_BYTES / avg.max(1)).clamp(1, READ_RECORDS)
}

impl LogPages {
    pub fn new(key: String, offset: u64, upto: u64) -> LogPages {
        LogPages {
            key,
            offset,
            upto,
            per_read: 64,
            ended: false,
        }
    }

    /// The next records, at most `max`; empty at the end (or past `upto`).
    /// [`LogPages::ended`] then says whether this read reached the end, or
    /// more records may follow at once.
    pub async fn next(&mut self, app: &Arc<App>, max: usize) -> Result<Vec<(u64, LogRecord)>> {
        if self.offset >= self.upto {
            self.ended = true;
            return Ok(Vec::new());
        }
        let want = self.per_read.min(max).max(1);
        let (key, offset) = (self.key.clone(), self.offset);
        let mut page =
            super::tasks::run(app, move |app| app.store.logs(&key, offset, want)).await?;
        self.ended = page.len() < want;
        if let Some(i) = page.iter().position(|(s, _)| *s > self.upto) {
            page.truncate(i);
            self.ended = true;
            self.upto = self.offset.max(page.last().map_or(0, |(s, _)| *s));
        }
        if let Some((last, _)) = page.last() {
            self.offset = *last;
            let bytes: usize = page.iter().map(|(_, r)| record_bytes(r)).sum();
            self.per_read = next_read(bytes / page.len());
        }
        Ok(page)
    }

    /// Whether the last read reached the end.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_shrink_with_record_size() {
        assert_eq!(next_read(100), READ_RECORDS);
        assert_eq!(next_read(1000), READ_BYTES / 1000);
        assert_eq!(next_read(32 * 1024 + 40), READ_BYTES / (32 * 1024 + 40));
        assert_eq!(next_read(10 << 20), 1);
        assert_eq!(next_read(0), READ_RECORDS);
        assert_eq!(next_read(1), READ_RECORDS);
    }

    #[test]
    fn chunks_arrive_in_order() {
        let (mut c, body) = Chunks::new();
        futures_lite::future::block_on(async move {
            let reader = async {
                let mut s = String::new();
                let mut r = body;
                futures_lite::AsyncReadExt::read_to_string(&mut r, &mut s)
                    .await
                    .expect("read");
                s
            };
            let writer = async {
                for i in 0..20_000 {
                    c.push(&format!("{i}\n"));
                    assert!(c.flush_full().await);
                }
                c.finish().await;
            };
            let (s, ()) = futures_lite::future::zip(reader, writer).await;
            let want: String = (0..20_000).map(|i| format!("{i}\n")).collect();
            assert_eq!(s, want);
        });
    }
}
