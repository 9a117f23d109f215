//! Task, subtask and step uuids: 12 characters of `[A-Za-z0-9]`. The first
//! seven are the creation time in milliseconds, in base 62 with digits in
//! ASCII order, so uuids sort by creation and the rows of tasks created
//! together sit together in the store's B-trees (a commit of many new tasks
//! touches a few pages, not one random page per task; seven digits last
//! until 2081). The last five start
//! from the OS CSPRNG and count up within a millisecond, so this process
//! never draws the same uuid twice. The case of the last character tells a
//! deploy (lowercase) from its rollback partner (uppercase).

use std::sync::Mutex;

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

/// Draws `n` unbiased indexes below `alphabet.len()` (rejection sampling).
fn pick(alphabet: &[u8], n: usize) -> Vec<u8> {
    let limit = 256 - (256 % alphabet.len());
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        if getrandom::getrandom(&mut buf).is_err() {
            // The OS RNG does not fail on Linux after boot; if it ever does,
            // refusing to run is safer than predictable ids.
            panic!("the operating system's random number generator failed");
        }
        for &b in &buf {
            if (b as usize) < limit && out.len() < n {
                out.push(alphabet[b as usize % alphabet.len()]);
            }
        }
    }
    out
}

/// Base-62 digits in ASCII order, so that encoded numbers sort as numbers.
const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const TIME_DIGITS: u32 = 7;
/// Values of the last five characters: four base-62 digits and a letter.
const TAIL_SPACE: u64 = 62 * 62 * 62 * 62 * 26;

/// `n` base-62 digits of `v` (mod 62^n), most significant first.
fn base62(mut v: u64, n: u32, out: &mut Vec<u8>) {
    let start = out.len();
    for _ in 0..n {
        out.push(DIGITS[(v % 62) as usize]);
        v /= 62;
    }
    out[start..].reverse();
}

/// The uuid of (time, tail): pure, so its order is testable.
fn encode(ms: u64, tail: u64) -> String {
    let mut v = Vec::with_capacity(12);
    base62(ms, TIME_DIGITS, &mut v);
    base62(tail / 26, 4, &mut v);
    v.push(LOWER[(tail % 26) as usize]);
    String::from_utf8_lossy(&v).into_owned()
}

/// The last (time, tail) drawn: a uuid in the same millisecond (or after
/// the clock stepped back) takes the next tail.
static LAST: Mutex<(u64, u64)> = Mutex::new((0, 0));

fn random_tail() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        panic!("the operating system's random number generator failed");
    }
    // The lower half of the space, so a millisecond has room to count up.
    u64::from_le_bytes(b) % (TAIL_SPACE / 2)
}

/// A fresh uuid; it always ends in a lowercase letter (a deploy uuid).
pub fn new_uuid() -> String {
    let now = u64::try_from(crate::clock::now_ms()).unwrap_or(0);
    let mut last = match LAST.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let (ms, tail) = if now > last.0 {
        (now, random_tail())
    } else if last.1 + 1 < TAIL_SPACE {
        (last.0, last.1 + 1)
    } else {
        (last.0 + 1, random_tail())
    };
    *last = (ms, tail);
    encode(ms, tail)
}

/// A random secret for generated tokens (48 alphanumerics, ~285 bits).
pub fn new_token() -> String {
    String::from_utf8_lossy(&pick(ALNUM, 48)).into_owned()
}

pub fn is_uuid(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A deploy uuid ends in a lowercase letter.
pub fn is_deploy(s: &str) -> bool {
    is_uuid(s) && s.bytes().last().is_some_and(|b| b.is_ascii_lowercase())
}

/// The rollback partner of a deploy uuid: last letter uppercased.
pub fn rollback_of(deploy: &str) -> String {
    let mut s = deploy.to_string();
    if let Some(last) = s.pop() {
        s.push(last.to_ascii_uppercase());
    }
    s
}

/// The third-party task uuid: the caller's first 11 characters plus the attempt
/// letter `a` + retry_count.
pub fn third_party_uuid(caller: &str, retry_count: u8) -> Option<String> {
    if !is_uuid(caller) || retry_count > 25 {
        return None;
    }
    let mut s: String = caller.chars().take(11).collect();
    s.push((b'a' + retry_count) as char);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_uuids_are_deploy_uuids() {
        for _ in 0..1000 {
            let u = new_uuid();
            assert!(is_uuid(&u), "{u}");
            assert!(is_deploy(&u), "{u}");
        }
    }

    #[test]
    fn uuids_sort_by_creation_and_never_repeat() {
        let ids: Vec<String> = (0..20_000).map(|_| new_uuid()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} then {}", w[0], w[1]);
        }
    }

    #[test]
    fn encoding_keeps_the_order_of_time_then_tail() {
        assert_eq!(encode(0, 0), "00000000000a");
        assert_eq!(encode(0, 25), "00000000000z");
        assert_eq!(encode(0, 26), "00000000001a");
        let pairs = [
            (5, 0),
            (5, 1),
            (5, TAIL_SPACE - 1),
            (6, 0),
            (62u64.pow(6), 3),
        ];
        for w in pairs.windows(2) {
            assert!(encode(w[0].0, w[0].1) < encode(w[1].0, w[1].1), "{w:?}");
        }
        // 2026-12-02 in milliseconds is seven digits.
        assert_eq!(encode(1_796_169_600_000, 0).len(), 12);
    }

    #[test]
    fn rollback_partner_uppercases_last_letter() {
        assert_eq!(rollback_of("Ab3dE5fG7hJk"), "Ab3dE5fG7hJK");
        assert!(!is_deploy("Ab3dE5fG7hJK"));
        assert!(!is_deploy("Ab3dE5fG7hJ1"));
    }

    #[test]
    fn uuid_format() {
        assert!(!is_uuid("short"));
        assert!(!is_uuid("Ab3dE5fG7hJk1"));
        assert!(!is_uuid("Ab3dE5fG7h-k"));
        assert!(!is_uuid("Ab3dE5fG7hJé"));
    }

    #[test]
    fn third_party_attempt_letters() {
        assert_eq!(
            third_party_uuid("abcdefghijkZ", 0).as_deref(),
            Some("abcdefghijka")
        );
        assert_eq!(
            third_party_uuid("abcdefghijkZ", 25).as_deref(),
            Some("abcdefghijkz")
        );
        assert_eq!(third_party_uuid("abcdefghijkZ", 26), None);
        assert_eq!(third_party_uuid("bad", 0), None);
    }
}
