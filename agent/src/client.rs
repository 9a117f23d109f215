//! The HTTP(S) side: requests to the daemon's agent endpoints.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::proto::{Refusal, AGENT_HEADER, PREFIX};

/// Largest JSON answer accepted.
const MAX_ANSWER: u64 = 64 << 20;

/// Why a request did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// The daemon answered with an error status.
    Status(u16, Refusal),
    /// No usable answer: connection refused, timeout, TLS, garbage.
    Transport(String),
}

impl Failure {
    /// The daemon refused this lease: its work must stop.
    pub fn is_stale(&self) -> bool {
        matches!(self, Failure::Status(409, r) if r.stale)
    }

    /// The daemon does not accept our name and token.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Failure::Status(401, _))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(code, r) => write!(f, "HTTP {code}: {}", r.error),
            Failure::Transport(e) => f.write_str(e),
        }
    }
}

/// A client for one daemon, one agent identity.
pub struct Client {
    base: String,
    name: String,
    auth: String,
    http: ureq::Agent,
}

/// The trusted roots: the bundled web PKI roots, plus `ca_file` if given.
fn tls_config(ca_file: Option<&Path>) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let Some(path) = ca_file else {
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?
    {
        let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        added += 1;
    }
    if added == 0 {
        return Err(format!("ca_file {} holds no certificate", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

impl Client {
    /// `server` is the daemon's base URL (`https://jobx.example.com`, a
    /// path prefix is kept).
    pub fn new(
        server: &str,
        name: &str,
        token: &str,
        ca_file: Option<&Path>,
    ) -> Result<Client, String> {
        let base = server.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "server {server:?} must start with http:// or https://"
            ));
        }
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .user_agent(concat!("jobx-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = tls_config(ca_file)? {
            builder = builder.tls_config(tls);
        }
        Ok(Client {
            base: format!("{base}/plugin/agent-pull{PREFIX}"),
            name: name.to_string(),
            auth: format!("Bearer {token}"),
            http: builder.build(),
        })
    }

    fn request(&self, method: &str, path: &str, timeout: Duration) -> ureq::Request {
        self.http
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &self.auth)
            .set(AGENT_HEADER, &self.name)
            .timeout(timeout)
    }

    fn finish(result: Result<ureq::Response, ureq::Error>) -> Result<ureq::Response, Failure> {
        match result {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let refusal = serde_json::from_str::<Refusal>(&text).unwrap_or(Refusal {
                    error: text.chars().take(200).collect(),
                    stale: false,
                });
                Err(Failure::Status(code, refusal))
            }
            Err(ureq::Error::Transport(t)) => Err(Failure::Transport(t.to_string())),
        }
    }

    /// POSTs JSON and decodes the JSON answer.
    pub fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, Failure> {
        let text = serde_json::to_string(body).map_err(|e| Failure::Transport(e.to_string()))?;
        let resp = Self::finish(
            self.request("POST", path, timeout)
                .set("Content-Type", "application/json")
                .send_string(&text),
        )?;
        let mut buf = Vec::new();
        resp.into_reader()
            .take(MAX_ANSWER)
            .read_to_end(&mut buf)
            .map_err(|e| Failure::Transport(format!("reading the answer: {e}")))?;
        serde_json::from_slice(&buf)
            .map_err(|e| Failure::Transport(format!("unexpected answer from the daemon: {e}")))
    }

    /// GETs raw bytes (at most `limit`).
    pub fn get_bytes(&self, path: &str, limit: u64, timeout: Duration) -> Result<Vec<u8>, Failure> {
        let resp = Self::finish(self.request("GET", path, timeout).call())?;
        let mut buf = Vec::new();
        resp.into_reader()
            .take(limit)
            .read_to_end(&mut buf)
            .map_err(|e| Failure::Transport(format!("reading the answer: {e}")))?;
        Ok(buf)
    }
}
