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

/// How the caller proved who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A token in a header (Bearer, Basic, appname/appkey).
    Token,
    /// The console's session cookie.
    Session,
    /// An OPEN-C3 sign-in cookie.
    #[allow(dead_code)]
    OpenC3,
}

/// Roles are read from the config once, as `Role`s, with a message that
/// names the bad value.
impl<'de> serde::Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let s = String::deserialize(d)?;
        Role::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not read, write, control or admin"))
        })
    }
}

/// The identity behind a valid token.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    roles: BTreeMap<String, Role>,
    pub via: Via,
}

impl Principal {
    /// The role on `project`: the higher of the project's own grant and `*`.
    pub fn role_on(&self, project: u64) -> Option<Role> {
        let own = self.roles.get(&project.to_string()).copied();
        let any = self.roles.get("*").copied();
        own.max(any)
    }

    /// The role granted on `*` (every project), if any.
    pub fn role_on_all(&self) -> Option<Role> {
        self.roles.get("*").copied()
    }

    pub fn may(&self, project: u64, need: Role) -> bool {
        self.role_on(project).is_some_and(|r| r >= need)
    }

    /// The `calltype` of tasks this caller creates: people in a browser
    /// start them from a page, everything else through the API.
    pub fn calltype(&self) -> &'static str {
        match self.via {
            Via::Token => "api",
            Via::Session | Via::OpenC3 => "page",
        }
    }

    /// The same identity, as reached through another way of signing in.
    pub fn with_via(mut self, via: Via) -> Principal {
        self.via = via;
        self
    }

    /// A person signed in through another service (OPEN-C3), no rights yet.
    pub fn signed_in(name: &str, via: Via) -> Principal {
        Principal {
            name: name.to_string(),
            roles: BTreeMap::new(),
            via,
        }
    }

    /// Adds `role` on `project`, as that service confirmed it.
    pub fn grant(mut self, project: u64, role: Role) -> Principal {
        let own = self.roles.entry(project.to_string()).or_insert(role);
        *own = (*own).max(role);
        self
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

/// The `[[auth.tokens]]` entry for a new token (its sha256, never the
/// token itself), from role specs `PROJECT=ROLE`.
pub fn token_entry(name: &str, token: &str, specs: &[String]) -> Result<String, String> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(format!(
            "token name {name:?}: must be non-empty, without quotes or control characters"
        ));
    }
    let mut roles = Vec::new();
    for spec in specs {
        let (project, role) = spec.split_once('=').ok_or_else(|| {
            format!("--role {spec:?}: must be PROJECT=ROLE, e.g. '*=admin' or 7=control")
        })?;
        if project != "*" && (project.is_empty() || !project.bytes().all(|b| b.is_ascii_digit())) {
            return Err(format!(
                "--role {spec:?}: the project must be a project id or \"*\""
            ));
        }
        let role = Role::parse(role).ok_or_else(|| {
            format!("--role {spec:?}: the role must be read, write, control or admin")
        })?;
        roles.push(format!("\"{project}\" = \"{}\"", role.as_str()));
    }
    let hex: String = digest(token).iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "[[auth.tokens]]\nname = \"{name}\"\nsha256 = \"{hex}\"\nroles = {{ {} }}\n",
        roles.join(", ")
    ))
}

impl Tokens {
    /// Whether some token holds `admin` on every project.
    pub fn has_global_admin(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.principal.roles.get("*") == Some(&Role::Admin))
    }

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
                let roles = t.roles.clone();
                Some(Entry {
                    digest: d,
                    principal: Principal {
                        name: t.name.clone(),
                        roles,
                        via: Via::Token,
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
                    via: Via::Token,
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

    /// Like `check`, and also the token's digest, which a console session
    /// keeps instead of the token itself.
    pub fn check_digest(&self, token: &str) -> Option<([u8; 32], Principal)> {
        let d = digest(token);
        self.check(token).map(|p| (d, p))
    }

    /// The identity of a token known by its digest, while it is still configured.
    pub fn by_digest(&self, d: &[u8; 32]) -> Option<Principal> {
        let mut found = None;
        for e in &self.entries {
            if ct_eq(&e.digest, d) && found.is_none() {
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

    #[test]
    fn token_entries() {
        let e = token_entry("bot", "secret", &["*=read".into(), "7=control".into()]).expect("ok");
        assert_eq!(
            e,
            "[[auth.tokens]]\nname = \"bot\"\nsha256 = \"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"\nroles = { \"*\" = \"read\", \"7\" = \"control\" }\n"
        );
        assert!(token_entry("bot", "s", &["7:admin".into()])
            .unwrap_err()
            .contains("PROJECT=ROLE"));
        assert!(token_entry("bot", "s", &["x=admin".into()])
            .unwrap_err()
            .contains("project id"));
        assert!(token_entry("bot", "s", &["7=boss".into()])
            .unwrap_err()
            .contains("read, write"));
        assert!(token_entry("a\"b", "s", &["7=read".into()]).is_err());
    }

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
                .filter_map(|(a, b)| Some((a.to_string(), Role::parse(b)?)))
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
    fn sessions_keep_a_digest_that_must_stay_configured() {
        let t = Tokens::from_config(&[cfg("bot", Some("secret-1"), None, &[("*", "read")])]);
        let (d, p) = t.check_digest("secret-1").expect("known token");
        assert_eq!(p.via, Via::Token);
        assert_eq!(p.calltype(), "api");
        assert_eq!(t.by_digest(&d).map(|p| p.name), Some("bot".to_string()));
        assert_eq!(p.with_via(Via::Session).calltype(), "page");
        assert!(t.check_digest("secret-2").is_none());
        let reloaded = Tokens::from_config(&[cfg("bot", Some("secret-3"), None, &[("*", "read")])]);
        assert!(
            reloaded.by_digest(&d).is_none(),
            "token removed by a reload"
        );
    }

    #[test]
    fn role_order() {
        assert!(
            Role::Read < Role::Write && Role::Write < Role::Control && Role::Control < Role::Admin
        );
    }
}
