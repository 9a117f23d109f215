//! Task, subtask and step uuids: 12 characters of `[A-Za-z0-9]` from the OS
//! CSPRNG. The case of the last character tells a deploy (lowercase) from its
//! rollback partner (uppercase).

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

/// A fresh uuid; it always ends in a lowercase letter (a deploy uuid).
pub fn new_uuid() -> String {
    let mut v = pick(ALNUM, 11);
    v.extend(pick(LOWER, 1));
    String::from_utf8_lossy(&v).into_owned()
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
