//! Starts real OpenSSH servers for the ssh executor tests.
//!
//! A [`SshdFleet`] runs N `/usr/sbin/sshd -D -e -f <config>` processes, one per
//! loopback address (127.0.0.2, 127.0.0.3, …), each on a free port with its own
//! host key. All of them accept one client key made for the fleet, for the user
//! the tests run as. The servers keep sshd's default `MaxSessions` and
//! `MaxStartups`, so a client that ignores those limits fails here as it would
//! in production.
//!
//! Dropping the fleet stops exactly the processes it started (and whatever
//! those sshd processes forked), by pid, and removes the temporary directory.
//!
//! ```no_run
//! use jobx_tests::sshd::SshdFleet;
//! let fleet = SshdFleet::start(3).expect("sshd");
//! for s in fleet.servers() {
//!     println!("{}@{}:{}", fleet.user(), s.host(), s.port());
//! }
//! println!("key: {}", fleet.identity_file().display());
//! ```

use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The sshd binary the harness runs (sshd re-executes itself, so the path is absolute).
pub const SSHD: &str = "/usr/sbin/sshd";

/// How long a server may take to start answering.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Options for [`SshdFleet::start_with`].
#[derive(Debug, Clone, Default)]
pub struct SshdOptions {
    /// Extra `sshd_config` lines appended to every server's configuration
    /// (for example `"MaxSessions 2"`).
    pub extra_config: Vec<String>,
}

/// One running sshd.
#[derive(Debug)]
pub struct Sshd {
    index: usize,
    addr: Ipv4Addr,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// A set of running sshd servers sharing one client key.
#[derive(Debug)]
pub struct SshdFleet {
    dir: PathBuf,
    client_key: PathBuf,
    user: String,
    servers: Vec<Sshd>,
}

impl SshdFleet {
    /// Starts `n` servers with default settings and waits until each answers.
    pub fn start(n: usize) -> io::Result<SshdFleet> {
        Self::start_with(n, &SshdOptions::default())
    }

    /// Starts `n` servers with extra configuration and waits until each answers.
    pub fn start_with(n: usize, opts: &SshdOptions) -> io::Result<SshdFleet> {
        if !Path::new(SSHD).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{SSHD} not found: install the openssh-server package"),
            ));
        }
        ensure_privsep_dir()?;
        let dir = make_temp_dir("jobx-sshd")?;
        // From here on the fleet owns the directory and whatever started, so
        // an early return cleans up through Drop.
        let mut fleet = SshdFleet {
            client_key: dir.join("client_ed25519"),
            dir,
            user: current_user()?,
            servers: Vec::with_capacity(n),
        };
        keygen(&fleet.client_key, "jobx-test-client")?;
        fs::copy(
            fleet.client_key.with_extension("pub"),
            fleet.dir.join("authorized_keys"),
        )?;
        for index in 0..n {
            let sdir = fleet.dir.join(format!("sshd-{index}"));
            fs::create_dir(&sdir)?;
            keygen(
                &sdir.join("host_ed25519"),
                &format!("jobx-test-host-{index}"),
            )?;
            let server = Sshd {
                index,
                addr: loopback_address(index),
                port: 0,
                dir: sdir,
                child: None,
            };
            fleet.write_config(&server, opts)?;
            // Pushed first so that Drop stops it if starting fails.
            fleet.servers.push(server);
            if let Some(server) = fleet.servers.last_mut() {
                server.spawn_on_free_port()?;
            }
        }
        Ok(fleet)
    }

    fn write_config(&self, server: &Sshd, opts: &SshdOptions) -> io::Result<()> {
        let login = if self.user == "root" {
            "PermitRootLogin prohibit-password\n"
        } else {
            ""
        };
        let mut text = format!(
            "HostKey {hostkey}\n\
             AuthorizedKeysFile {auth}\n\
             PidFile none\n\
             StrictModes no\n\
             {login}\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             UseDNS no\n\
             LogLevel VERBOSE\n\
             Subsystem sftp internal-sftp\n",
            hostkey = server.host_key_path().display(),
            auth = self.dir.join("authorized_keys").display(),
        );
        for line in &opts.extra_config {
            text.push_str(line);
            text.push('\n');
        }
        fs::write(server.config_path(), text)
    }

    /// The servers, in start order (server `i` listens on 127.0.0.(2+i)).
    pub fn servers(&self) -> &[Sshd] {
        &self.servers
    }

    /// Server `i`. Panics if out of range, like slice indexing.
    pub fn server(&self, i: usize) -> &Sshd {
        &self.servers[i]
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// True when the fleet has no server.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The private key every server accepts (`ssh -i`).
    pub fn identity_file(&self) -> &Path {
        &self.client_key
    }

    /// The login user the servers accept: the user running the tests.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The fleet's temporary directory (removed on drop); tests may put a
    /// data dir or files to copy under it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A `known_hosts` text that trusts every server's current host key.
    pub fn known_hosts(&self) -> io::Result<String> {
        let mut out = String::new();
        for s in &self.servers {
            let key = fs::read_to_string(s.host_key_path().with_extension("pub"))?;
            let mut fields = key.split_whitespace();
            let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
                return Err(io::Error::other("malformed host public key"));
            };
            out.push_str(&format!("[{}]:{} {kind} {blob}\n", s.addr, s.port));
        }
        Ok(out)
    }

    /// Gives server `i` a new host key: stops it, generates the key and starts
    /// it again on the same address and port, so clients that remember the
    /// old key see a changed host key.
    pub fn regenerate_host_key(&mut self, i: usize) -> io::Result<()> {
        let server = self
            .servers
            .get_mut(i)
            .ok_or_else(|| io::Error::other(format!("no server {i}")))?;
        server.stop();
        let key = server.host_key_path();
        fs::remove_file(&key)?;
        fs::remove_file(key.with_extension("pub"))?;
        keygen(&key, &format!("jobx-test-host-{i}-new"))?;
        server.spawn()?;
        server.wait_ready()
    }

    /// Runs a command on server `i` with the system ssh client (for checks
    /// that do not go through the code under test). Returns its output.
    pub fn ssh(&self, i: usize, command: &str) -> io::Result<std::process::Output> {
        let s = &self.servers[i];
        Command::new("ssh")
            .args(["-F", "/dev/null", "-i"])
            .arg(&self.client_key)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-p",
            ])
            .arg(s.port.to_string())
            .arg(format!("{}@{}", self.user, s.addr))
            .arg(command)
            .stdin(Stdio::null())
            .output()
    }
}

impl Drop for SshdFleet {
    fn drop(&mut self) {
        for server in &mut self.servers {
            server.stop();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Sshd {
    /// Position in the fleet.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The address as a host string (what a node's `host` would hold).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the listening sshd, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What sshd logged so far (its `-e` output).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }

    fn host_key_path(&self) -> PathBuf {
        self.dir.join("host_ed25519")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    /// Picks a free port and starts; retries when another process takes the
    /// port between the probe and sshd's bind.
    fn spawn_on_free_port(&mut self) -> io::Result<()> {
        let mut last = None;
        for _ in 0..5 {
            self.port = free_port(IpAddr::V4(self.addr))?;
            self.spawn()?;
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.stop();
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("sshd did not start")))
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.config_path())
            .arg("-o")
            .arg(format!("ListenAddress={}:{}", self.addr, self.port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the server sends its SSH banner, or fails with its log.
    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let target = SocketAddr::new(IpAddr::V4(self.addr), self.port);
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(io::Error::other("sshd is not running"));
            };
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Err(io::Error::other(format!(
                    "sshd on {target} exited ({status}): {}",
                    self.log().trim()
                )));
            }
            if banner(target).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("sshd on {target} not ready: {}", self.log().trim()),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops this server and everything it forked (connections, sessions).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        let mut victims = descendants(pid);
        victims.push(pid);
        for &p in &victims {
            // SAFETY: plain kill(2) on pids this server started.
            unsafe { libc::kill(p, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        // Sessions that ignored SIGTERM.
        for p in victims.into_iter().filter(|&p| p != pid) {
            if proc_alive(p) {
                // SAFETY: as above.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
    }
}

/// An address and port where nothing listens: connecting is refused.
pub fn unused_endpoint() -> io::Result<(Ipv4Addr, u16)> {
    let addr = Ipv4Addr::new(127, 0, 0, 1);
    Ok((addr, free_port(IpAddr::V4(addr))?))
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns
/// whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    crate::poll(timeout, || cond().then_some(())).is_some()
}

pub use crate::flow::processes_matching;

fn loopback_address(index: usize) -> Ipv4Addr {
    // 127.0.0.2 … 127.0.0.254, then 127.0.1.2 …
    Ipv4Addr::new(127, 0, (index / 253) as u8, (index % 253) as u8 + 2)
}

fn free_port(addr: IpAddr) -> io::Result<u16> {
    Ok(TcpListener::bind((addr, 0))?.local_addr()?.port())
}

fn banner(target: SocketAddr) -> io::Result<()> {
    let mut s = TcpStream::connect_timeout(&target, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_millis(1000)))?;
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf)?;
    if &buf == b"SSH-" {
        Ok(())
    } else {
        Err(io::Error::other("not an ssh banner"))
    }
}

fn keygen(path: &Path, comment: &str) -> io::Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// sshd running as root refuses to start without its privilege separation
/// directory, which the service's tmpfiles rule normally creates.
fn ensure_privsep_dir() -> io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let dir = Path::new("/run/sshd");
    if !dir.exists() {
        fs::create_dir_all(dir)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn make_temp_dir(prefix: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir(&dir)?;
    Ok(dir)
}

fn current_user() -> io::Result<String> {
    // SAFETY: getpwuid_r writes into the buffers we pass and nothing else.
    unsafe {
        let uid = libc::geteuid();
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() {
            return Err(io::Error::other(format!("no passwd entry for uid {uid}")));
        }
        Ok(std::ffi::CStr::from_ptr(pwd.pw_name)
            .to_string_lossy()
            .into_owned())
    }
}

/// All processes below `root` in the process tree, found through /proc.
fn descendants(root: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = parent_of(pid) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces or parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn proc_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_distinct_and_skip_network_and_broadcast() {
        assert_eq!(loopback_address(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(loopback_address(1), Ipv4Addr::new(127, 0, 0, 3));
        let all: std::collections::BTreeSet<_> = (0..600).map(loopback_address).collect();
        assert_eq!(all.len(), 600);
        assert!(all.iter().all(|a| (2..=254).contains(&a.octets()[3])));
    }

    #[test]
    fn fleet_serves_logins_changes_keys_and_stops_what_it_started() {
        let mut fleet = SshdFleet::start(3).expect("start sshd fleet");
        assert_eq!(fleet.len(), 3);
        for (i, s) in fleet.servers().iter().enumerate() {
            assert_eq!(s.addr(), Ipv4Addr::new(127, 0, 0, 2 + i as u8));
            let out = fleet.ssh(i, "echo hello from $(id -un)").expect("run ssh");
            assert!(out.status.success(), "{out:?}\n{}", s.log());
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                format!("hello from {}", fleet.user())
            );
        }
        let before = fleet.known_hosts().expect("known_hosts");
        let old_pid = fleet.server(1).pid();
        fleet.regenerate_host_key(1).expect("regenerate");
        let after = fleet.known_hosts().expect("known_hosts");
        let lines = |t: &str| t.lines().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(lines(&before)[0], lines(&after)[0]);
        assert_ne!(lines(&before)[1], lines(&after)[1]);
        assert_ne!(fleet.server(1).pid(), old_pid);
        assert!(fleet.ssh(1, "true").expect("ssh").status.success());

        let pids: Vec<i32> = fleet
            .servers()
            .iter()
            .filter_map(|s| s.pid().map(|p| p as i32))
            .collect();
        let dir = fleet.dir().to_path_buf();
        drop(fleet);
        assert!(pids.iter().all(|&p| !proc_alive(p)));
        assert!(!dir.exists());

        let (addr, port) = unused_endpoint().expect("endpoint");
        assert!(TcpStream::connect((addr, port)).is_err());
    }
}
