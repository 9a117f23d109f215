//! A response body fed chunk by chunk from a channel, so that large answers
//! (a long log as text) are streamed with bounded memory instead of built
//! whole.

use futures_lite::io::{AsyncBufRead, AsyncRead};
use futures_lite::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Chunks in flight between the producer and the connection.
pub const DEPTH: usize = 4;

pub struct ChunkReader {
    rx: Pin<Box<async_channel::Receiver<Vec<u8>>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    pub fn new(rx: async_channel::Receiver<Vec<u8>>) -> ChunkReader {
        ChunkReader {
            rx: Box::pin(rx),
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl AsyncBufRead for ChunkReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.pos >= this.buf.len() {
            match this.rx.as_mut().poll_next(cx) {
                Poll::Ready(Some(chunk)) => {
                    this.buf = chunk;
                    this.pos = 0;
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
