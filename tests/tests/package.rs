//! The Debian package: built with cargo-deb, unpacked with `dpkg-deb -x`
//! into a temporary root, and the packaged jobxd run with the packaged
//! configuration (only the data dir, listen address and the root prefix of
//! the plugin dir changed).

use jobx_tests::daemon::{bin_dir, wait_for, TempDir};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PLUGIN_DIR_LINE: &str = "dir = [\"/usr/lib/jobx/plugins\"]";

fn workspace() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().expect("workspace root").to_path_buf()
}

fn cargo() -> String {
    std::env::var("CARGO")
        .ok()
        .or_else(|| option_env!("CARGO").map(String::from))
        .unwrap_or_else(|| "cargo".into())
}

fn has_command(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// cargo-deb, installed with `cargo install` when missing.
fn ensure_cargo_deb() -> Result<(), String> {
    let probe = |c: &str| {
        Command::new(c)
            .args(["deb", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if probe(&cargo()) {
        return Ok(());
    }
    eprintln!("cargo-deb is missing: cargo install cargo-deb --locked");
    let st = Command::new(cargo())
        .args(["install", "cargo-deb", "--locked"])
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if st.success() && probe(&cargo()) {
        Ok(())
    } else {
        Err(format!("cargo install cargo-deb failed ({st})"))
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `systemd-analyze verify` of a unit, with its ExecStart binary pointed at
/// `exe` (the unit names the installed path). Warnings count as failures.
fn verify_unit(unit: &Path, installed: &str, exe: &Path, tmp: &Path) {
    let text = std::fs::read_to_string(unit).expect("read unit");
    assert!(
        text.contains(installed),
        "{} runs {installed}",
        unit.display()
    );
    let dir = tmp.join("units");
    std::fs::create_dir_all(&dir).expect("units dir");
    let copy = dir.join(unit.file_name().expect("unit name"));
    std::fs::write(&copy, text.replace(installed, &exe.display().to_string())).expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify {}: {}\n{err}",
        unit.display(),
        out.status
    );
}

/// `cargo deb -p <package>` into `dir/out`; answers the .deb.
fn build_deb(package: &str, dir: &Path) -> PathBuf {
    let out_dir = dir.join("out");
    // Builds in release mode, as a user would.
    let said = run(Command::new(cargo())
        .current_dir(workspace())
        .args(["deb", "-p", package, "--fast", "-o"])
        .arg(&out_dir));
    std::fs::read_dir(&out_dir)
        .expect("cargo deb output dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .unwrap_or_else(|| panic!("no .deb in {}: {said}", out_dir.display()))
}

/// cargo-deb and dpkg-deb are there (the reason why not, otherwise).
fn can_build_debs() -> Result<(), String> {
    if !has_command("dpkg-deb", "--version") {
        return Err("dpkg-deb is not installed (tests/run.sh installs dpkg)".into());
    }
    ensure_cargo_deb().map_err(|e| format!("cannot build Debian packages without cargo-deb: {e}"))
}

struct Packaged {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Packaged {
    fn log(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Packaged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(exe: &Path, config: &Path, data: &Path) -> (Packaged, String) {
    let mut child = Command::new(exe)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the packaged jobxd");
    let pipe = child.stderr.take().expect("stderr");
    let stderr = Arc::new(Mutex::new(String::new()));
    let buf = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Ok(mut b) = buf.lock() {
                b.push_str(&line);
                b.push('\n');
            }
        }
    });
    let p = Packaged { child, stderr };
    let addr = wait_for(
        "the packaged jobxd to listen",
        Duration::from_secs(20),
        || {
            let s = p.log();
            let i = s.find("listening on http://")?;
            Some(s[i + 20..].split_whitespace().next()?.to_string())
        },
    );
    (p, addr)
}

fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut r = ureq::get(&format!("http://{addr}{path}")).timeout(Duration::from_secs(30));
    if let Some(t) = token {
        r = r.set("Authorization", &format!("Bearer {t}"));
    }
    match r.call() {
        Ok(res) => (res.status(), res.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, res)) => (s, res.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

#[test]
fn debian_package_runs_with_its_own_config_and_plugins() {
    if let Err(e) = can_build_debs() {
        eprintln!("SKIPPED: {e}");
        return;
    }
    let tmp = TempDir::new("deb");
    let deb = build_deb("jobxd", tmp.path());

    let root = tmp.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let control = tmp.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));

    // Package metadata and maintainer scripts.
    let fields = run(Command::new("dpkg-deb").arg("-f").arg(&deb));
    assert!(fields.contains("Package: jobxd"), "{fields}");
    assert!(
        fields.contains("adduser") && fields.contains("openssh-client"),
        "{fields}"
    );
    let conffiles = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert!(
        conffiles.lines().any(|l| l == "/etc/jobx/jobxd.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("postinst");
    assert!(
        postinst.contains("adduser --system --group --home /var/lib/jobx"),
        "{postinst}"
    );
    assert!(
        postinst.contains("deb-systemd-helper enable jobxd.service"),
        "{postinst}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh").arg("-n").arg(control.join(script)));
    }

    // Files where the service expects them.
    let exe = root.join("usr/bin/jobxd");
    assert_eq!(mode(&exe) & 0o111, 0o111, "jobxd is executable");
    // The command line comes with the daemon.
    let cli = root.join("usr/bin/jobx");
    assert_eq!(mode(&cli) & 0o111, 0o111, "jobx is executable");
    let version = run(Command::new(&cli).arg("--version"));
    assert!(version.starts_with("jobx "), "{version}");
    let plugin_dir = root.join("usr/lib/jobx/plugins");
    let config = root.join("etc/jobx/jobxd.toml");
    assert_eq!(mode(&config), 0o640, "the config may hold tokens");
    let unit = root.join("usr/lib/systemd/system/jobxd.service");
    let unit_text = std::fs::read_to_string(&unit).expect("jobxd.service");
    for line in [
        "Type=notify",
        "KillMode=mixed",
        "User=jobx",
        "StateDirectory=jobx",
        "RuntimeDirectory=jobx",
        "ExecStart=/usr/bin/jobxd --config /etc/jobx/jobxd.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(
            unit_text.lines().any(|l| l == line),
            "{line} in jobxd.service"
        );
    }

    // The packaged configuration, as shipped.
    let text = std::fs::read_to_string(&config).expect("packaged config");
    for line in [
        "listen = \"127.0.0.1:8080\"",
        "data_dir = \"/var/lib/jobx\"",
        PLUGIN_DIR_LINE,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in jobxd.toml");
    }

    if has_command("systemd-analyze", "--version") {
        verify_unit(&unit, "/usr/bin/jobxd", &exe, tmp.path());
        let agent = bin_dir().join("jobx-agent");
        let agent_unit = workspace().join("packaging/jobx-agent.service");
        if agent.exists() {
            verify_unit(&agent_unit, "/usr/bin/jobx-agent", &agent, tmp.path());
        }
    } else {
        eprintln!("systemd-analyze is not installed: unit files not verified");
    }

    // Run it: the packaged config with the plugin dir under the temporary root.
    let ours = tmp.path().join("jobxd.toml");
    let moved = format!("dir = [{:?}]", plugin_dir.display().to_string());
    std::fs::write(&ours, text.replace(PLUGIN_DIR_LINE, &moved)).expect("write config");
    // --check-config loads the plugins too: the packaged config with the
    // packaged plugins is valid.
    let checked = run(Command::new(&exe)
        .arg("--config")
        .arg(&ours)
        .arg("--check-config"));
    assert!(checked.contains("configuration ok"), "{checked}");
    let data = tmp.path().join("data");
    let (mut daemon, addr) = start(&exe, &ours, &data);
    assert_eq!(get(&addr, "/mon", None), (200, "ok".to_string()));
    let log = daemon.log();
    for (ty, file) in [
        ("local", "libjobx_plugin_local.so"),
        ("ssh", "libjobx_plugin_ssh.so"),
        ("agent-pull", "libjobx_plugin_agent_pull.so"),
    ] {
        let want = format!(
            "plugin {ty} loaded from {}",
            plugin_dir.join(file).display()
        );
        assert!(log.contains(&want), "{want}\n{log}");
    }
    // No tokens configured: a generated admin token, readable by the service user only.
    let token_file = data.join("admin.token");
    assert_eq!(mode(&token_file), 0o600);
    assert!(log.contains(&token_file.display().to_string()), "{log}");
    let token = std::fs::read_to_string(&token_file).expect("admin token");
    assert_eq!(get(&addr, "/task/10", Some(token.trim())).0, 200);
    assert_eq!(get(&addr, "/task/10", None).0, 401);

    // SIGTERM ends it cleanly.
    // SAFETY: kill(2) on the pid of the child this test started.
    unsafe {
        libc::kill(daemon.child.id() as i32, libc::SIGTERM);
    }
    let status = jobx_tests::poll(Duration::from_secs(30), || {
        daemon.child.try_wait().expect("wait")
    })
    .expect("no exit within 30 s of SIGTERM");
    assert!(status.success(), "{status:?}\n{}", daemon.log());
}

/// The packaged configuration with every commented example switched on.
fn uncommented_examples(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let example = line.strip_prefix("# ").filter(|rest| {
            rest.starts_with('[')
                || rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
        });
        out.push_str(example.unwrap_or(line));
        out.push('\n');
    }
    out
}

#[test]
fn every_example_in_the_packaged_config_is_accepted() {
    let text = std::fs::read_to_string(workspace().join("packaging/jobxd.toml"))
        .expect("packaging/jobxd.toml");
    let tmp = TempDir::new("pkgconf");
    let key = tmp.path().join("id_ed25519");
    let ssh_config = tmp.path().join("ssh_config");
    std::fs::write(&key, "").expect("key file");
    std::fs::write(&ssh_config, "").expect("ssh config");
    let full = uncommented_examples(&text)
        .replace(
            PLUGIN_DIR_LINE,
            &format!("dir = [{:?}]", bin_dir().display().to_string()),
        )
        .replace(
            "\"/var/lib/jobx/.ssh/id_ed25519\"",
            &format!("{:?}", key.display().to_string()),
        )
        .replace(
            "\"/etc/jobx/ssh_config\"",
            &format!("{:?}", ssh_config.display().to_string()),
        )
        .replace("<hex sha256 of its token>", &"a".repeat(64));
    for key in [
        "retention_days",
        "[plugins.ssh]",
        "identity_file",
        "[plugins.agent-pull]",
        "heartbeat",
        "[[auth.tokens]]",
    ] {
        assert!(
            full.lines().any(|l| l.starts_with(key)),
            "{key} is an example in jobxd.toml"
        );
    }
    let config = tmp.path().join("jobxd.toml");
    std::fs::write(&config, &full).expect("write config");
    // Plugins check their own tables when they load, so start the daemon.
    let (daemon, addr) = start(&bin_dir().join("jobxd"), &config, &tmp.path().join("data"));
    assert_eq!(get(&addr, "/mon", None), (200, "ok".to_string()));
    let log = daemon.log();
    for ty in ["local", "ssh", "agent-pull"] {
        assert!(log.contains(&format!("plugin {ty} loaded")), "{log}");
    }
    assert!(log.contains("(slave \"ops-1\")"), "{log}");
}

#[test]
fn agent_debian_package_has_the_agent_its_unit_and_config() {
    if let Err(e) = can_build_debs() {
        eprintln!("SKIPPED: {e}");
        return;
    }
    let tmp = TempDir::new("agent-deb");
    let deb = build_deb("jobx-agent", tmp.path());
    let root = tmp.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let control = tmp.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let fields = run(Command::new("dpkg-deb").arg("-f").arg(&deb));
    assert!(fields.contains("Package: jobx-agent"), "{fields}");
    let conffiles = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert!(
        conffiles.lines().any(|l| l == "/etc/jobx/agent.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("postinst");
    assert!(
        postinst.contains("deb-systemd-helper enable jobx-agent.service"),
        "{postinst}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        if control.join(script).exists() {
            run(Command::new("sh").arg("-n").arg(control.join(script)));
        }
    }

    let exe = root.join("usr/bin/jobx-agent");
    assert_eq!(mode(&exe) & 0o111, 0o111, "jobx-agent is executable");
    let config = root.join("etc/jobx/agent.toml");
    assert_eq!(
        mode(&config),
        0o644,
        "no secret in it: the token has its own file"
    );
    let unit = root.join("usr/lib/systemd/system/jobx-agent.service");
    let unit_text = std::fs::read_to_string(&unit).expect("jobx-agent.service");
    for line in [
        "ExecStart=/usr/bin/jobx-agent --config /etc/jobx/agent.toml",
        "ConditionPathExists=/etc/jobx/agent.token",
        "KillMode=mixed",
    ] {
        assert!(
            unit_text.lines().any(|l| l == line),
            "{line} in jobx-agent.service"
        );
    }
    if has_command("systemd-analyze", "--version") {
        verify_unit(&unit, "/usr/bin/jobx-agent", &exe, tmp.path());
    }

    // The packaged config is read as shipped: the agent gets as far as the
    // token file the admin has not written yet, and says which.
    let out = Command::new(&exe)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run the packaged jobx-agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot read the token file /etc/jobx/agent.token"),
        "{err}"
    );
}
