//! Starts a real `jobxd` binary on a free port with a temporary data dir,
//! and talks to it over HTTP the way a client would.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Tokens every test daemon knows (name, secret, roles).
pub const ADMIN: &str = "admin-secret-0001";
pub const READER: &str = "reader-secret-0001";
pub const WRITER10: &str = "writer10-secret-01";
pub const CONTROL10: &str = "control10-secret-1";
pub const OTHER: &str = "other-secret-00001";

const TOKENS: &str = r#"
[[auth.tokens]]
name = "admin"
token = "admin-secret-0001"
roles = { "*" = "admin" }

[[auth.tokens]]
name = "reader"
token = "reader-secret-0001"
roles = { "*" = "read" }

[[auth.tokens]]
name = "writer10"
token = "writer10-secret-01"
roles = { "10" = "write" }

[[auth.tokens]]
name = "control10"
token = "control10-secret-1"
roles = { "10" = "control", "20" = "read" }

[[auth.tokens]]
name = "other"
token = "other-secret-00001"
roles = { "11" = "admin" }
"#;

/// The directory holding the built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("JOBX_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("jobx-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` until it returns Some, or panics with `what` at the deadline.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    crate::poll(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

pub struct Daemon {
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub base: String,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    listen: String,
    env: Vec<(String, String)>,
}

/// `extra` laid over `base`, table by table (so a test can add keys to
/// `[server]` without repeating the header).
fn merge_toml(base: &str, extra: &str) -> String {
    fn merge(into: &mut toml::Table, from: toml::Table) {
        for (k, v) in from {
            match (into.get_mut(&k), v) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                (_, v) => {
                    into.insert(k, v);
                }
            }
        }
    }
    let mut b: toml::Table = base.parse().expect("base config");
    let e: toml::Table = extra.parse().expect("extra config is valid TOML");
    merge(&mut b, e);
    toml::to_string(&b).expect("config serializes")
}

/// libfaketime's preload library, where the faketime package put it.
pub fn faketime_lib() -> Option<PathBuf> {
    let dirs = [
        "/usr/lib/x86_64-linux-gnu/faketime",
        "/usr/lib/aarch64-linux-gnu/faketime",
        "/usr/lib/faketime",
    ];
    dirs.iter()
        .map(|d| Path::new(d).join("libfaketime.so.1"))
        .find(|p| p.exists())
}

impl Daemon {
    /// Starts jobxd with the test tokens plus `extra` config text.
    pub fn start(extra: &str) -> Daemon {
        Self::start_with(extra, true)
    }

    /// Like `start`; without the test tokens when `tokens` is false.
    pub fn start_with(extra: &str, tokens: bool) -> Daemon {
        let dir = TempDir::new("daemon");
        let data = dir.path().join("data");
        let plugins = bin_dir();
        let base = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nname = \"test-slave\"\n\n[storage]\ndata_dir = {:?}\n\n[plugins]\ndir = [{:?}]\n{}",
            data.display().to_string(),
            plugins.display().to_string(),
            if tokens { TOKENS } else { "" },
        );
        let config = merge_toml(&base, extra);
        let config_path = dir.path().join("jobxd.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut d = Daemon {
            dir,
            config_path,
            base: String::new(),
            child: None,
            stderr: Arc::new(Mutex::new(String::new())),
            listen: "127.0.0.1:0".into(),
            env: Vec::new(),
        };
        d.spawn();
        d
    }

    /// Sets an environment variable for the next (re)start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Runs the daemon's clock at `at` (`YYYY-MM-DD hh:mm:ss`, UTC) from the
    /// next (re)start on, through libfaketime; `None` returns to real time.
    pub fn fake_time(&mut self, at: Option<&str>) {
        self.env.retain(|(k, _)| {
            !matches!(
                k.as_str(),
                "LD_PRELOAD" | "FAKETIME" | "FAKETIME_DONT_FAKE_MONOTONIC" | "TZ"
            )
        });
        self.set_env("TZ", "UTC");
        if let Some(at) = at {
            let lib = faketime_lib()
                .expect("libfaketime (Debian package faketime) is installed by tests/run.sh");
            self.set_env("LD_PRELOAD", &lib.display().to_string());
            self.set_env("FAKETIME", &format!("@{at}"));
            self.set_env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let mut child = Command::new(bin_dir().join("jobxd"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(&self.config_path)
            .arg("--listen")
            .arg(&self.listen)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start jobxd (is it built? run cargo build --workspace)");
        let err = child.stderr.take().expect("stderr pipe");
        let buf = self.stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut b) = buf.lock() {
                    b.push_str(&line);
                    b.push('\n');
                }
            }
        });
        self.child = Some(child);
        let skip = self.stderr.lock().map(|s| s.len()).unwrap_or(0);
        let stderr = self.stderr.clone();
        let addr = wait_for("jobxd to listen", Duration::from_secs(20), || {
            let s = stderr.lock().ok()?;
            let tail = &s[skip..];
            let i = tail.find("listening on http://")?;
            let rest = &tail[i + "listening on http://".len()..];
            Some(rest.split_whitespace().next()?.to_string())
        });
        // Restarts reuse the same port so URLs stay valid.
        self.listen = addr.clone();
        self.base = format!("http://{addr}");
    }

    /// Everything jobxd wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn term(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        match crate::poll(Duration::from_secs(30), || c.try_wait().ok().flatten()) {
            Some(st) => st,
            None => {
                let _ = c.kill();
                panic!("jobxd did not exit within 30 s of SIGTERM");
            }
        }
    }

    /// Starts the daemon again on the same data dir and port.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
        self.spawn();
    }

    pub fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let mut r = agent.request(method, &format!("{}{}", self.base, path));
        if let Some(t) = token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = match body {
            Some(b) => r.send_json(b.clone()),
            None => r.call(),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.req("GET", path, Some(token), None)
    }

    pub fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.req("POST", path, Some(token), Some(&body))
    }

    pub fn put(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.req("PUT", path, Some(token), Some(&body))
    }

    pub fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        self.req("DELETE", path, Some(token), None)
    }

    /// GET that must succeed; answers `data`.
    pub fn data(&self, path: &str) -> Value {
        let (st, v) = self.get(path, ADMIN);
        assert_eq!(st, 200, "GET {path}: {v}");
        v["data"].clone()
    }

    /// POST as admin that must succeed; answers the whole body.
    pub fn ok_post(&self, path: &str, body: Value) -> Value {
        let (st, v) = self.post(path, ADMIN, body);
        assert_eq!(st, 200, "POST {path}: {v}");
        assert_eq!(v["stat"], true, "POST {path}: {v}");
        v
    }

    pub fn ok_put(&self, path: &str, body: Value) -> Value {
        let (st, v) = self.put(path, ADMIN, body);
        assert_eq!(st, 200, "PUT {path}: {v}");
        v
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
