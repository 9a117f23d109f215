//! Tokens and roles. Tokens are kept as SHA-256 digests and compared in
//! constant time; a role is granted per project id or on `*`.

use crate::config::TokenConfig;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
    Control,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "control" => Some(Role::Control),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Control => "control",
            Role::Admin => "admin",
        }
    }
}

/// The identity behind a valid token.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    roles: BTreeMap<String, Role>,
}

impl Principal {
    /// The role on `project`: the higher of the project's own grant and `*`.
    pub fn role_on(&self, project: u64) -> Option<Role> {
        let own = self.roles.get(&project.to_string()).copied();
        let any = self.roles.get("*").copied();
        own.max(any)
    }

    pub fn may(&self, project: u64, need: Role) -> bool {
        self.role_on(project).is_some_and(|r| r >= need)
    }

    pub fn roles(&self) -> BTreeMap<String, String> {
        self.roles
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().to_string()))
            .collect()
    }
}

struct Entry {
    digest: [u8; 32],
    principal: Principal,
}

/// The configured tokens.
pub struct Tokens {
    entries: Vec<Entry>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_hex(h: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if h.len() != 64 {
        return None;
    }
    for (i, chunk) in h.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    diff == 0
}

impl Tokens {
    /// Builds the table from validated configuration.
    pub fn from_config(tokens: &[TokenConfig]) -> Tokens {
        let entries = tokens
            .iter()
            .filter_map(|t| {
                let d = match (&t.token, &t.sha256) {
                    (Some(tok), _) => Some(digest(tok)),
                    (None, Some(h)) => parse_hex(&h.to_ascii_lowercase()),
                    _ => None,
                }?;
                let roles = t
                    .roles
                    .iter()
                    .filter_map(|(p, r)| Role::parse(r).map(|r| (p.clone(), r)))
                    .collect();
                Some(Entry {
                    digest: d,
                    principal: Principal {
                        name: t.name.clone(),
                        roles,
                    },
                })
            })
            .collect();
        Tokens { entries }
    }

    /// A single admin token on every project (the generated `admin.token`).
    pub fn admin(token: &str) -> Tokens {
        let mut roles = BTreeMap::new();
        roles.insert("*".to_string(), Role::Admin);
        Tokens {
            entries: vec![Entry {
                digest: digest(token),
                principal: Principal {
                    name: "admin".into(),
                    roles,
                },
            }],
        }
    }

    /// Looks a presented token up; checks every entry so the time taken does
    /// not depend on which one matched.
    pub fn check(&self, token: &str) -> Option<Principal> {
        let d = digest(token);
        let mut found = None;
        for e in &self.entries {
            if ct_eq(&e.digest, &d) && found.is_none() {
                found = Some(e.principal.clone());
            }
        }
        found
    }

    /// Like `check`, but the token's name must match too (appname/appkey headers).
    pub fn check_named(&self, name: &str, token: &str) -> Option<Principal> {
        self.check(token).filter(|p| p.name == name)
    }
}

/// Decodes HTTP Basic credentials (`base64(name:token)`).
pub fn basic_credentials(b64: &str) -> Option<(String, String)> {
    // Credentials are short; a huge header is not worth decoding.
    if b64.len() > 16 * 1024 {
        return None;
    }
    let raw = jobx_plugin_api::base64::decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (name, token) = text.split_once(':')?;
    Some((name.to_string(), token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(
        name: &str,
        token: Option<&str>,
        sha: Option<&str>,
        roles: &[(&str, &str)],
    ) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            token: token.map(Into::into),
            sha256: sha.map(Into::into),
            roles: roles
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn roles_per_project_and_star() {
        let t = Tokens::from_config(&[cfg(
            "bot",
            Some("secret-1"),
            None,
            &[("*", "read"), ("7", "control")],
        )]);
        let p = t.check("secret-1").expect("known token");
        assert_eq!(p.name, "bot");
        assert_eq!(p.role_on(7), Some(Role::Control));
        assert_eq!(p.role_on(8), Some(Role::Read));
        assert!(p.may(7, Role::Write));
        assert!(!p.may(8, Role::Write));
        assert!(t.check("secret-2").is_none());
    }

    #[test]
    fn sha256_tokens() {
        // sha256("hello-token")
        let h = format!("{:x}", Sha256::digest(b"hello-token"));
        let t = Tokens::from_config(&[cfg("h", None, Some(&h.to_uppercase()), &[("1", "admin")])]);
        assert!(t.check("hello-token").is_some());
        assert!(t.check("hello-token2").is_none());
        assert!(t.check_named("h", "hello-token").is_some());
        assert!(t.check_named("x", "hello-token").is_none());
    }

    #[test]
    fn basic_auth() {
        // base64("reader:tok:en") — the token may contain ':'
        assert_eq!(
            basic_credentials("cmVhZGVyOnRvazplbg=="),
            Some(("reader".to_string(), "tok:en".to_string()))
        );
        assert_eq!(
            basic_credentials("YWI6Yw=="),
            Some(("ab".into(), "c".into()))
        );
        assert_eq!(basic_credentials("YTpi"), Some(("a".into(), "b".into())));
        assert_eq!(basic_credentials("not base64!"), None);
        assert_eq!(basic_credentials("YQ=="), None, "no colon");
        assert_eq!(basic_credentials("Y==="), None);
    }

    #[test]
    fn role_order() {
        assert!(
            Role::Read < Role::Write && Role::Write < Role::Control && Role::Control < Role::Admin
        );
    }
}
