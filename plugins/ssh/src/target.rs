//! Who to log in as where, the control socket path, and the ssh argv.
//!
//! Everything here is pure: it builds argument vectors for `ssh`, never a
//! local shell string.

use std::path::{Path, PathBuf};

use jobx_plugin_api::{Node, StepRequest};

use crate::config::Config;

/// Where a step logs in: the key of one master connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Address as given by the node (name, IPv4, IPv6 or an ssh config alias).
    pub host: String,
    /// Port, when the node gives one (otherwise ssh's config decides).
    pub port: Option<u16>,
    /// Login user; `None` leaves it to ssh (the user's ssh config, then the
    /// daemon's own user).
    pub user: Option<String>,
}

impl Target {
    /// The target of a step. Login user: the step's, else the node's, else
    /// `[plugins.ssh] user`, else none (ssh's default).
    pub fn for_step(req: &StepRequest, cfg: &Config) -> Result<Target, String> {
        Target::for_node(&req.node, &req.user, cfg)
    }

    /// The target of `node` for a step whose own login user is `step_user`:
    /// the step's user, else the node's, else the configured one.
    pub fn for_node(
        node: &Node,
        step_user: &Option<String>,
        cfg: &Config,
    ) -> Result<Target, String> {
        let host = node.address().to_string();
        check_host(&host)?;
        let user = [step_user, &node.user, &cfg.user]
            .into_iter()
            .flatten()
            .find(|u| !u.is_empty())
            .cloned();
        if let Some(u) = &user {
            crate::config::check_user(u)?;
        }
        Ok(Target {
            host,
            port: node.port,
            user,
        })
    }

    /// `user@host:port` for messages.
    pub fn display(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }

    /// `[user@]host:path` for scp and rsync (IPv6 addresses in brackets).
    pub fn remote_path(&self, path: &str) -> String {
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        if self.host.contains(':') {
            s.push_str(&format!("[{}]", self.host));
        } else {
            s.push_str(&self.host);
        }
        s.push(':');
        // A path starting with ':' would turn `host::path` into an rsync
        // daemon address.
        if path.starts_with(':') {
            s.push_str("./");
        }
        s.push_str(path);
        s
    }
}

/// A host must be a single word that ssh cannot read as an option.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the node has no address".into());
    }
    if host.starts_with('-') || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid node address {host:?}"));
    }
    Ok(())
}

/// A path as an ssh option value: `%` is a token in ssh paths, whitespace
/// would split the value.
fn ssh_value(path: &str) -> String {
    let escaped = path.replace('%', "%%");
    if escaped.chars().any(char::is_whitespace) {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

/// Characters that need no quoting anywhere the control path appears
/// (ssh `%` tokens, rsync's `-e` word splitting).
fn is_plain_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
}

/// Longest usable control path: a unix socket path holds 107 bytes and ssh
/// binds the master to `<path>.<16 random chars>` before renaming it.
const MAX_CONTROL_PATH: usize = 107 - 17;

/// 64-bit FNV-1a: a stable hash for socket names (the names must stay the
/// same across daemon restarts so persisted masters are found again).
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The control socket for `target` given the settings that shape the
/// connection. It lives in `<data_dir>/ssh/` when that path is short and
/// plain enough; otherwise in `fallback_dir` (a private directory outside
/// the data dir).
pub fn control_path(
    data_dir: &Path,
    fallback_dir: &Path,
    target: &Target,
    cfg: &Config,
) -> PathBuf {
    let identity = format!(
        "{}\0{}\0{}\0{}\0{}\0{}\0{}",
        data_dir.display(),
        target.host,
        target.port.map(|p| p.to_string()).unwrap_or_default(),
        target.user.as_deref().unwrap_or(""),
        cfg.identity_file.as_deref().unwrap_or(""),
        cfg.ssh_config.as_deref().unwrap_or(""),
        cfg.known_hosts.as_deref().unwrap_or(""),
    );
    let name = format!("{:016x}", fnv1a64(identity.as_bytes()));
    let preferred = data_dir.join("ssh").join(&name);
    match preferred.to_str() {
        Some(p) if p.len() <= MAX_CONTROL_PATH && is_plain_path(p) => preferred,
        _ => fallback_dir.join(name),
    }
}

/// Settings for building ssh argv, resolved for one data dir.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// `-F` file (generated when `ssh_config` is set).
    pub config_file: Option<PathBuf>,
    /// `UserKnownHostsFile`.
    pub known_hosts: String,
    /// `StrictHostKeyChecking`.
    pub policy: &'static str,
    /// `-i`.
    pub identity_file: Option<String>,
    /// `ControlPersist` seconds.
    pub control_persist: u64,
}

impl SshOptions {
    /// Options for `cfg` with `data_dir` as the daemon's data dir.
    pub fn new(cfg: &Config, data_dir: &Path, config_file: Option<PathBuf>) -> SshOptions {
        SshOptions {
            config_file,
            known_hosts: cfg
                .known_hosts
                .clone()
                .unwrap_or_else(|| data_dir.join("known_hosts").display().to_string()),
            policy: cfg.strict_host_key_checking.as_ssh(),
            identity_file: cfg.identity_file.clone(),
            control_persist: cfg.control_persist,
        }
    }

    /// Options ssh and scp share: config file, connection options, key.
    fn shared(&self, ctl: &Path, connect_timeout: u64) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(f) = &self.config_file {
            a.push("-F".to_string());
            a.push(f.display().to_string());
        }
        for opt in [
            "BatchMode=yes".to_string(),
            format!("ControlPath={}", ctl.display()),
            format!("StrictHostKeyChecking={}", self.policy),
            format!("UserKnownHostsFile={}", ssh_value(&self.known_hosts)),
            format!("ConnectTimeout={}", connect_timeout.max(1)),
            "LogLevel=ERROR".to_string(),
        ] {
            a.push("-o".to_string());
            a.push(opt);
        }
        if let Some(id) = &self.identity_file {
            a.push("-i".to_string());
            a.push(id.replace('%', "%%"));
        }
        a
    }

    /// Options shared by every ssh invocation for `target`.
    fn common(&self, target: &Target, ctl: &Path, connect_timeout: u64) -> Vec<String> {
        let mut a = self.shared(ctl, connect_timeout);
        if let Some(p) = target.port {
            a.push("-p".to_string());
            a.push(p.to_string());
        }
        if let Some(u) = &target.user {
            a.push("-l".to_string());
            a.push(u.clone());
        }
        a
    }

    /// Opens the master connection in the background (`-N -f`): the command
    /// exits 0 once it is authenticated and listening on `ctl`.
    pub fn master_args(&self, target: &Target, ctl: &Path, connect_timeout: u64) -> Vec<String> {
        let mut a = self.common(target, ctl, connect_timeout);
        for opt in [
            "ControlMaster=yes".to_string(),
            format!("ControlPersist={}", self.control_persist),
            // Notice a dead node instead of waiting on it for ever.
            "ServerAliveInterval=15".to_string(),
            "ServerAliveCountMax=4".to_string(),
        ] {
            a.push("-o".to_string());
            a.push(opt);
        }
        a.extend(["-N", "-f", "--"].map(String::from));
        a.push(target.host.clone());
        a
    }

    /// Asks the master on `ctl` whether it is alive.
    pub fn check_args(&self, target: &Target, ctl: &Path) -> Vec<String> {
        let mut a = self.common(target, ctl, 1);
        a.extend(["-O", "check", "--"].map(String::from));
        a.push(target.host.clone());
        a
    }

    /// Options for scp (`-o` form; scp's own `-P` and `user@host:` syntax).
    pub fn scp_args(&self, target: &Target, ctl: &Path, connect_timeout: u64) -> Vec<String> {
        let mut a = self.shared(ctl, connect_timeout);
        a.extend(["-o", "ControlMaster=no"].map(String::from));
        if let Some(p) = target.port {
            a.push("-P".to_string());
            a.push(p.to_string());
        }
        a
    }
}

/// rsync's `-e` command: rsync splits it into words itself, so it carries
/// only plain words — the control socket (a plain path by construction) and
/// fixed options. The master has done authentication and host key checks.
pub fn rsync_rsh(ctl: &Path, port: Option<u16>) -> Result<String, String> {
    let ctl = ctl
        .to_str()
        .filter(|p| is_plain_path(p))
        .ok_or_else(|| format!("control path {} is not plain", ctl.display()))?;
    let mut s =
        format!("ssh -o ControlPath={ctl} -o ControlMaster=no -o BatchMode=yes -o LogLevel=ERROR");
    if let Some(p) = port {
        s.push_str(&format!(" -p {p}"));
    }
    Ok(s)
}

/// The generated `-F` file when `ssh_config` is set: ssh has no option for
/// an extra config file, and `-F` alone would drop the user's and the
/// system's files. First value wins in ssh, so the extra file comes first.
pub fn generated_config(extra: &str) -> String {
    format!(
        "# Generated by the jobx ssh plugin from [plugins.ssh] ssh_config.\n\
         Include {}\n\
         Include ~/.ssh/config\n\
         Include /etc/ssh/ssh_config\n",
        ssh_value(extra)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobx_plugin_api::Node;

    fn req(step_user: Option<&str>, node_user: Option<&str>) -> StepRequest {
        StepRequest {
            node: Node {
                name: "web-1".into(),
                host: "10.0.0.5".into(),
                port: Some(2222),
                user: node_user.map(String::from),
                ..Node::default()
            },
            user: step_user.map(String::from),
            ..StepRequest::default()
        }
    }

    #[test]
    fn login_user_order_is_step_node_config_then_ssh_default() {
        let with_user = Config {
            user: Some("cfg".into()),
            ..Config::default()
        };
        let none = Config::default();
        let cases = [
            (Some("step"), Some("node"), &with_user, Some("step")),
            (None, Some("node"), &with_user, Some("node")),
            (None, None, &with_user, Some("cfg")),
            (None, None, &none, None),
            (Some(""), None, &with_user, Some("cfg")),
        ];
        for (step, node, cfg, want) in cases {
            let t = Target::for_step(&req(step, node), cfg).unwrap();
            assert_eq!(t.user.as_deref(), want, "{step:?} {node:?}");
            assert_eq!(t.host, "10.0.0.5");
            assert_eq!(t.port, Some(2222));
        }
    }

    #[test]
    fn host_defaults_to_node_name() {
        let mut r = req(None, None);
        r.node.host = String::new();
        let t = Target::for_step(&r, &Config::default()).unwrap();
        assert_eq!(t.host, "web-1");
    }

    #[test]
    fn hosts_and_users_that_could_become_options_are_refused() {
        let mut r = req(None, None);
        r.node.host = "-oProxyCommand=x".into();
        assert!(Target::for_step(&r, &Config::default()).is_err());
        r.node.host = "a b".into();
        assert!(Target::for_step(&r, &Config::default()).is_err());
        assert!(Target::for_step(&req(Some("-x"), None), &Config::default()).is_err());
        assert!(Target::for_step(&req(Some("a@b"), None), &Config::default()).is_err());
        assert!(crate::config::check_user("deploy").is_ok());
        assert!(check_host("fe80::1").is_ok());
    }

    #[test]
    fn remote_paths_bracket_ipv6_and_protect_leading_colons() {
        let t = Target {
            host: "::1".into(),
            port: None,
            user: Some("root".into()),
        };
        assert_eq!(t.remote_path("/opt/app"), "root@[::1]:/opt/app");
        let t = Target {
            host: "web".into(),
            port: Some(22),
            user: None,
        };
        assert_eq!(t.remote_path(":x"), "web:./:x");
        assert_eq!(t.display(), "web:22");
    }

    #[test]
    fn control_path_is_short_stable_and_distinct() {
        let cfg = Config::default();
        let t = Target {
            host: "127.0.0.2".into(),
            port: Some(40000),
            user: Some("root".into()),
        };
        let fb = Path::new("/tmp/jobx-ssh-0");
        let a = control_path(Path::new("/var/lib/jobx"), fb, &t, &cfg);
        assert!(a.starts_with("/var/lib/jobx/ssh/"));
        assert_eq!(a, control_path(Path::new("/var/lib/jobx"), fb, &t, &cfg));
        let other = Target {
            port: Some(40001),
            ..t.clone()
        };
        assert_ne!(
            a,
            control_path(Path::new("/var/lib/jobx"), fb, &other, &cfg)
        );
        // Too long for a socket, or not plain: the private fallback directory.
        let long = Path::new("/").join("d".repeat(100));
        assert!(control_path(&long, fb, &t, &cfg).starts_with(fb));
        assert!(control_path(Path::new("/data dir"), fb, &t, &cfg).starts_with(fb));
        assert!(control_path(Path::new("/data%h"), fb, &t, &cfg).starts_with(fb));
        let p = control_path(&long, fb, &t, &cfg);
        assert!(p.to_str().unwrap().len() <= MAX_CONTROL_PATH);
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    fn opts() -> SshOptions {
        let cfg = Config {
            identity_file: Some("/keys/id 1%".into()),
            ..Config::default()
        };
        SshOptions::new(&cfg, Path::new("/data"), None)
    }

    #[test]
    fn master_argv_is_batch_mode_persistent_and_ends_with_the_host() {
        let t = Target {
            host: "web-1".into(),
            port: Some(2222),
            user: Some("deploy".into()),
        };
        let a = opts().master_args(&t, Path::new("/data/ssh/abc"), 7);
        let joined = a.join(" ");
        for needle in [
            "-o BatchMode=yes",
            "-o ControlPath=/data/ssh/abc",
            "-o ControlMaster=yes",
            "-o ControlPersist=120",
            "-o StrictHostKeyChecking=accept-new",
            "-o UserKnownHostsFile=/data/known_hosts",
            "-o ConnectTimeout=7",
            "-p 2222",
            "-l deploy",
        ] {
            assert!(joined.contains(needle), "{needle} in {joined}");
        }
        // argv element, not shell text: spaces stay inside one element.
        assert!(a.iter().any(|x| x == "/keys/id 1%%"));
        assert_eq!(&a[a.len() - 4..], ["-N", "-f", "--", "web-1"]);
    }

    #[test]
    fn option_values_with_spaces_are_quoted_for_ssh() {
        let cfg = Config {
            known_hosts: Some("/my dir/known_hosts".into()),
            ..Config::default()
        };
        let o = SshOptions::new(&cfg, Path::new("/d"), Some(PathBuf::from("/d/ssh/config")));
        let t = Target {
            host: "h".into(),
            port: Some(1),
            user: None,
        };
        let a = o.scp_args(&t, Path::new("/c"), 1);
        assert!(a.contains(&"UserKnownHostsFile=\"/my dir/known_hosts\"".to_string()));
        assert_eq!(&a[..2], ["-F", "/d/ssh/config"]);
        assert!(a.windows(2).any(|w| w == ["-P", "1"]));
    }

    #[test]
    fn rsync_rsh_has_only_plain_words() {
        assert_eq!(
            rsync_rsh(Path::new("/d/ssh/0123"), Some(2222)).unwrap(),
            "ssh -o ControlPath=/d/ssh/0123 -o ControlMaster=no -o BatchMode=yes -o LogLevel=ERROR -p 2222"
        );
        assert!(rsync_rsh(Path::new("/d d/x"), None).is_err());
    }

    #[test]
    fn generated_config_puts_the_extra_file_first() {
        let text = generated_config("/etc/jobx/ssh config");
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "Include \"/etc/jobx/ssh config\"",
                "Include ~/.ssh/config",
                "Include /etc/ssh/ssh_config"
            ]
        );
    }
}
