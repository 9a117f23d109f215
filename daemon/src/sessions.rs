//! Console sign-in sessions: an in-memory table from a random session id
//! to the token (by digest) that signed in, its expiry and its CSRF token.
//! A restart signs everyone out, which is what a lost table should do.
//! Time is passed in, so the table is tested without a clock.

use std::collections::HashMap;
use std::sync::Mutex;

/// Sessions kept at most; the oldest go first when a sign-in would exceed it.
pub const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// 32 random bytes, hex: the cookie value.
    pub id: String,
    /// SHA-256 of the token that signed in (the token itself is not kept).
    pub digest: [u8; 32],
    /// Sent back by the page in `X-CSRF-Token` on every write.
    pub csrf: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

pub struct Sessions {
    ttl_ms: i64,
    table: Mutex<HashMap<String, Session>>,
}

/// 32 bytes from the OS RNG as 64 hex digits.
pub fn random_hex() -> String {
    let mut b = [0u8; 32];
    if getrandom::getrandom(&mut b).is_err() {
        // Predictable session ids would be worse than not running.
        panic!("the operating system's random number generator failed");
    }
    hex(&b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares two secrets without an early exit on the first difference.
pub fn secret_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Sessions {
    pub fn new(ttl_secs: u64) -> Sessions {
        Sessions {
            ttl_ms: i64::try_from(ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        match self.table.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Signs in: a new session for the token with digest `digest`.
    pub fn create(&self, digest: [u8; 32], now_ms: i64) -> Session {
        self.create_with(digest, now_ms, random_hex(), random_hex())
    }

    fn create_with(&self, digest: [u8; 32], now_ms: i64, id: String, csrf: String) -> Session {
        let s = Session {
            id,
            digest,
            csrf,
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(self.ttl_ms),
        };
        let mut t = self.lock();
        if t.len() >= MAX_SESSIONS {
            t.retain(|_, s| s.expires_ms > now_ms);
        }
        while t.len() >= MAX_SESSIONS {
            let oldest = t
                .values()
                .min_by_key(|s| s.created_ms)
                .map(|s| s.id.clone());
            match oldest {
                Some(id) => t.remove(&id),
                None => break,
            };
        }
        t.insert(s.id.clone(), s.clone());
        s
    }

    /// The live session with this id; an expired one is removed.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        let mut t = self.lock();
        match t.get(id) {
            Some(s) if s.expires_ms > now_ms => Some(s.clone()),
            Some(_) => {
                t.remove(id);
                None
            }
            None => None,
        }
    }

    /// Signs out.
    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    /// Drops the sessions of tokens no longer configured (after a reload).
    pub fn retain_tokens(&self, still_known: impl Fn(&[u8; 32]) -> bool) {
        self.lock().retain(|_, s| still_known(&s.digest));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_hex() {
        let (a, b) = (random_hex(), random_hex());
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        let t = Sessions::new(60);
        let s = t.create([1; 32], 0);
        assert_ne!(s.id, s.csrf, "the CSRF token is not the cookie");
        assert_eq!(s.id.len(), 64);
    }

    #[test]
    fn expiry() {
        let t = Sessions::new(10);
        let s = t.create([7; 32], 1_000);
        assert_eq!(s.expires_ms, 11_000);
        assert_eq!(t.get(&s.id, 10_999).map(|x| x.digest), Some([7; 32]));
        assert_eq!(t.get(&s.id, 11_000), None, "expired at the deadline");
        assert_eq!(t.len(), 0, "an expired session is dropped when seen");
        assert_eq!(t.get("nope", 0), None);
    }

    #[test]
    fn sign_out_and_revocation() {
        let t = Sessions::new(3600);
        let a = t.create([1; 32], 0);
        let b = t.create([2; 32], 0);
        assert!(t.remove(&a.id));
        assert!(!t.remove(&a.id), "signing out twice is harmless");
        assert_eq!(t.get(&a.id, 1), None);
        assert!(t.get(&b.id, 1).is_some());
        t.retain_tokens(|d| d != &[2; 32]);
        assert_eq!(t.get(&b.id, 1), None, "token removed from the config");
    }

    #[test]
    fn csrf_compare() {
        assert!(secret_eq("abc123", "abc123"));
        assert!(!secret_eq("abc123", "abc124"));
        assert!(!secret_eq("abc123", "abc12"));
        assert!(!secret_eq("", "a"));
        assert!(secret_eq("", ""));
    }

    #[test]
    fn bounded_table() {
        let t = Sessions::new(3600);
        for i in 0..MAX_SESSIONS {
            t.create_with([0; 32], i as i64, format!("id{i}"), "c".into());
        }
        t.create_with([0; 32], 1_000_000, "new".into(), "c".into());
        assert_eq!(t.len(), MAX_SESSIONS);
        assert!(t.get("id0", 1_000_001).is_none(), "the oldest went");
        assert!(t.get("new", 1_000_001).is_some());
        assert!(t.get("id1", 1_000_001).is_some());
    }
}
