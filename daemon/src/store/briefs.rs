//! The stored form of a task's brief (`task_briefs`): a small binary
//! record, so that a list reads a few fixed fields and copies the rendered
//! members without parsing JSON.
//!
//! Layout (version 1, integers little-endian): version `1`; id, projectid,
//! created_ms, start_ms, finish_ms (8 bytes each, absent times as 0 with
//! the flag clear); status, decision, action (positions in their `ALL`);
//! flags (1: start_ms, 2: finish_ms, 4: stopped); then uuid, name, user and
//! members, each as a 4-byte length and UTF-8 bytes.

use crate::model::{Action, BriefView, Decision, TaskBrief, TaskStatus};

const VERSION: u8 = 1;
/// The form of the stored briefs (recorded in `meta`; another form is rewritten at start).
pub(super) const FORM: u64 = VERSION as u64;
const FIXED: usize = 1 + 5 * 8 + 4;

fn position<T: PartialEq>(all: &[T], v: &T) -> u8 {
    all.iter().position(|x| x == v).unwrap_or(0) as u8
}

pub(super) fn encode(b: &TaskBrief) -> Vec<u8> {
    let texts = [&b.uuid, &b.name, &b.user, &b.members];
    let mut out = Vec::with_capacity(FIXED + texts.iter().map(|t| t.len() + 4).sum::<usize>());
    out.push(VERSION);
    out.extend_from_slice(&b.id.to_le_bytes());
    out.extend_from_slice(&b.projectid.to_le_bytes());
    out.extend_from_slice(&b.created_ms.to_le_bytes());
    out.extend_from_slice(&b.start_ms.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&b.finish_ms.unwrap_or(0).to_le_bytes());
    out.push(position(TaskStatus::ALL, &b.status));
    out.push(position(Decision::ALL, &b.decision));
    out.push(position(Action::ALL, &b.action));
    out.push(
        u8::from(b.start_ms.is_some())
            | u8::from(b.finish_ms.is_some()) << 1
            | u8::from(b.stopped) << 2,
    );
    for t in texts {
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(t.as_bytes());
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn text(&mut self) -> Option<&'a str> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

/// The brief in `bytes`; `None` if they are not a brief this build reads.
pub(super) fn decode(bytes: &[u8]) -> Option<TaskBrief> {
    decode_view(bytes).map(|v| v.to_brief())
}

/// The brief in `bytes`, its texts borrowed from them.
pub(super) fn decode_view(bytes: &[u8]) -> Option<BriefView<'_>> {
    let mut r = Reader(bytes);
    if r.u8()? != VERSION {
        return None;
    }
    let (id, projectid, created_ms) = (r.u64()?, r.u64()?, r.i64()?);
    let (start, finish) = (r.i64()?, r.i64()?);
    let status = *TaskStatus::ALL.get(r.u8()? as usize)?;
    let decision = *Decision::ALL.get(r.u8()? as usize)?;
    let action = *Action::ALL.get(r.u8()? as usize)?;
    let flags = r.u8()?;
    let b = BriefView {
        id,
        projectid,
        created_ms,
        start_ms: (flags & 1 != 0).then_some(start),
        finish_ms: (flags & 2 != 0).then_some(finish),
        status,
        decision,
        action,
        stopped: flags & 4 != 0,
        uuid: r.text()?,
        name: r.text()?,
        user: r.text()?,
        members: r.text()?,
    };
    r.0.is_empty().then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brief() -> TaskBrief {
        TaskBrief {
            id: 7,
            projectid: u64::MAX,
            created_ms: -5,
            start_ms: Some(0),
            finish_ms: None,
            status: TaskStatus::Refuse,
            decision: Decision::NoRollback,
            action: Action::Rollback,
            stopped: true,
            uuid: "AbcdefghijkL".into(),
            name: "wéb \"x\"".into(),
            user: String::new(),
            members: r#""action":"rollback""#.into(),
        }
    }

    #[test]
    fn a_brief_reads_back_as_written() {
        let b = brief();
        assert_eq!(decode(&encode(&b)), Some(b.clone()));
        let mut c = b;
        c.start_ms = None;
        c.finish_ms = Some(i64::MIN);
        c.stopped = false;
        assert_eq!(decode(&encode(&c)), Some(c));
    }

    #[test]
    fn damaged_or_foreign_bytes_are_not_a_brief() {
        let bytes = encode(&brief());
        for n in 0..bytes.len() {
            assert_eq!(decode(&bytes[..n]), None, "cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        let mut other = bytes;
        other[0] = 2;
        assert_eq!(decode(&other), None);
        assert_eq!(decode(b"{\"id\":1}"), None);
    }
}
