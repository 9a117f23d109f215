//! A `jobx-agent` reaching the daemon over HTTPS through a TLS-terminating
//! reverse proxy, trusting a private CA through `--ca-file`.

use jobx_tests::daemon::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// A self-signed certificate for `localhost` and 127.0.0.1, made with the
/// openssl tool; `None` when it is not installed.
fn certificate(dir: &Path) -> Option<()> {
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A server certificate, not a CA: rustls refuses CAs as end entities.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    ok.success().then_some(())
}

/// Relays one TLS client connection to `backend` in plain text.
fn relay(tcp: TcpStream, config: Arc<rustls::ServerConfig>, backend: String) -> Option<()> {
    let conn = Arc::new(Mutex::new(rustls::ServerConnection::new(config).ok()?));
    let plain = TcpStream::connect(backend).ok()?;
    let (mut tcp_in, tcp_out) = (tcp.try_clone().ok()?, tcp);
    let (plain_out, mut plain_in) = (plain.try_clone().ok()?, plain);
    let tcp_out = Arc::new(Mutex::new(tcp_out));
    // Backend → client: encrypt and send.
    {
        let (conn, tcp_out) = (conn.clone(), tcp_out.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = plain_in.read(&mut buf).unwrap_or(0);
                let mut c = conn.lock().ok()?;
                let mut out = tcp_out.lock().ok()?;
                if n == 0 {
                    c.send_close_notify();
                } else {
                    c.writer().write_all(&buf[..n]).ok()?;
                }
                while c.wants_write() {
                    c.write_tls(&mut *out).ok()?;
                }
                if n == 0 {
                    let _ = out.shutdown(Shutdown::Write);
                    return Some(());
                }
            }
        });
    }
    // Client → backend: decrypt and forward; answer handshake messages.
    let mut plain_out = plain_out;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tcp_in.read(&mut buf).ok()?;
        let mut c = conn.lock().ok()?;
        if n == 0 {
            let _ = plain_out.shutdown(Shutdown::Write);
            return Some(());
        }
        c.read_tls(&mut &buf[..n]).ok()?;
        c.process_new_packets().ok()?;
        let mut clear = Vec::new();
        match c.reader().read_to_end(&mut clear) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
        if !clear.is_empty() {
            plain_out.write_all(&clear).ok()?;
        }
        let mut out = tcp_out.lock().ok()?;
        while c.wants_write() {
            c.write_tls(&mut *out).ok()?;
        }
    }
}

/// A TLS-terminating proxy to `backend`; answers its port.
fn tls_proxy(dir: &Path, backend: &str) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .expect("cert.pem")
        .map(|c| c.expect("certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).expect("key.pem");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let backend = backend.to_string();
    std::thread::spawn(move || {
        for tcp in listener.incoming().map_while(Result::ok) {
            let (config, backend) = (config.clone(), backend.clone());
            std::thread::spawn(move || relay(tcp, config, backend));
        }
    });
    port
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_agent_works_over_https_through_a_tls_proxy() {
    let dir = TempDir::new("agent-tls");
    if certificate(dir.path()).is_none() {
        eprintln!("openssl is not installed: no certificate to test HTTPS with");
        return;
    }
    let d = Daemon::start(
        "[plugins.agent-pull]\nlost_after = 2\nconnect_timeout = 10\nagents = [{ name = \"n1\", token = \"tok-n1\" }]\n",
    );
    let p = d.project(10);
    p.nodes(&["n1"]);
    let port = tls_proxy(dir.path(), d.base.trim_start_matches("http://"));
    std::fs::write(dir.path().join("token"), "tok-n1").expect("token");
    let server = format!("https://localhost:{port}");
    // Without the private CA the agent cannot trust the proxy.
    let mut untrusting = Agent(
        Command::new(bin_dir().join("jobx-agent"))
            .args(["--server", &server, "--name", "n1", "--token-file"])
            .arg(dir.path().join("token"))
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("jobx-agent"),
    );
    let mut err = untrusting.0.stderr.take().expect("stderr");
    let seen = Arc::new(Mutex::new(String::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = sink.lock() {
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    wait_for("the untrusting agent to fail its TLS handshake", T, || {
        let s = seen.lock().ok()?;
        s.contains("cannot reach the daemon").then_some(())
    });
    drop(untrusting);

    let _agent = Agent(
        Command::new(bin_dir().join("jobx-agent"))
            .args(["--server", &server, "--name", "n1", "--token-file"])
            .arg(dir.path().join("token"))
            .arg("--ca-file")
            .arg(dir.path().join("cert.pem"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("jobx-agent"),
    );
    p.group("one", "list", "n1");
    p.job(
        "tls",
        json!([{"plugin": "agent-pull", "script": "echo \"over tls on $JOBX_NODE\""}]),
    );
    let task = p.run("tls", "one", json!({}));
    let t = wait_for("the task to end", T, || {
        let t = task.get();
        let waits = task
            .subtasks()
            .iter()
            .any(|s| s["confirm"] == "WaitConfirm");
        let ended = matches!(t["status"].as_str(), Some("success" | "fail"));
        (ended || waits).then_some(t)
    });
    let log = task.log_text();
    assert_eq!(t["status"], "success", "{log}");
    assert!(log.contains("[n1] over tls on n1"), "{log}");
}
