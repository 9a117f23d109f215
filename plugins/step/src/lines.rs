//! Splitting a byte stream into output lines.

/// Longest line reported as one; longer lines are split into pieces of
/// this size so one runaway line cannot grow memory without bound.
pub const MAX_LINE: usize = 32 * 1024;

/// Accumulates bytes and yields complete lines (without `\n`).
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Adds `data`, calling `emit` for every complete line (or full piece).
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) if self.buf.len() + i <= MAX_LINE => {
                    if self.buf.is_empty() {
                        emit(&data[..i]);
                    } else {
                        self.buf.extend_from_slice(&data[..i]);
                        emit(&self.buf);
                        self.buf.clear();
                    }
                    data = &data[i + 1..];
                }
                _ => {
                    // No newline within reach: fill up to the cap.
                    let room = MAX_LINE - self.buf.len();
                    let take = room.min(data.len());
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.buf.len() == MAX_LINE {
                        emit(&self.buf);
                        self.buf.clear();
                    }
                }
            }
        }
    }

    /// Emits what is left (a last line without a newline).
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            emit(&self.buf);
            self.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(l.to_vec()));
        }
        s.finish(|l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn lines_across_chunks() {
        assert_eq!(
            split(&[b"a\nb", b"c\n\nd"]),
            vec![b"a".to_vec(), b"bc".to_vec(), vec![], b"d".to_vec()]
        );
        assert_eq!(split(&[b"x\n"]), vec![b"x".to_vec()]);
        assert!(split(&[b""]).is_empty());
        assert_eq!(split(&[&[0xff, 0xfe, b'\n']]), vec![vec![0xff, 0xfe]]);
    }

    #[test]
    fn long_lines_are_split_at_the_cap() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut data = long.clone();
        data.push(b'\n');
        data.extend_from_slice(b"tail");
        let out = split(&[&data[..100], &data[100..]]);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].len(), MAX_LINE);
        assert_eq!(out[1].len(), MAX_LINE);
        assert_eq!(out[2].len(), 10);
        assert_eq!(out[3], b"tail");
        // A line of exactly the cap is one line.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(split(&[&exact]), vec![vec![b'y'; MAX_LINE]]);
    }
}
