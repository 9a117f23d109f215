//! The daemon's HTTP API: requests with the token, the `{stat, data, info}`
//! envelope, and errors a person can act on (the server's `info` with the
//! HTTP status; a connection failure names the server).

use crate::error::CliError;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::time::Duration;

#[derive(Clone)]
pub struct Client {
    pub server: String,
    token: String,
    agent: ureq::Agent,
    /// Without a read timeout: an event stream may stay quiet for hours.
    stream_agent: ureq::Agent,
}

/// Percent-encodes one path segment (names may hold spaces, `/`, UTF-8).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(server: &str, token: &str) -> Client {
        let server = server.trim_end_matches('/').to_string();
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(120))
            .build();
        let stream_agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .build();
        Client {
            server,
            token: token.to_string(),
            agent,
            stream_agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    fn request(&self, agent: &ureq::Agent, method: &str, path: &str) -> ureq::Request {
        let r = agent.request(method, &self.url(path));
        if self.token.is_empty() {
            r
        } else {
            r.set("Authorization", &format!("Bearer {}", self.token))
        }
    }

    /// Sends a request and answers the whole JSON body of a success.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let req = self.request(&self.agent, method, path);
        let res = match body {
            Some(b) => req
                .set("Content-Type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        let res = self.check(method, path, res)?;
        let text = res.into_string().map_err(|e| {
            self.connect_error(&format!("reading the answer to {method} {path}: {e}"))
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|_| {
            CliError::other(format!(
                "{method} {path}: the server did not answer JSON: {}",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        if v.get("stat") == Some(&Value::Bool(false)) {
            let info = v["info"].as_str().unwrap_or("request refused").to_string();
            return Err(CliError::Api { status: 200, info });
        }
        Ok(v)
    }

    /// `data` of a successful answer.
    pub fn data(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        Ok(self.call(method, path, body)?["data"].take())
    }

    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        self.data("GET", path, None)
    }

    /// A body that is read as it arrives (event streams, plain text logs).
    pub fn stream(&self, path: &str) -> Result<Box<dyn BufRead + Send>, CliError> {
        let res = self.request(&self.stream_agent, "GET", path).call();
        let res = self.check("GET", path, res)?;
        Ok(Box::new(BufReader::new(res.into_reader())))
    }

    fn connect_error(&self, what: &str) -> CliError {
        CliError::Connect {
            server: self.server.clone(),
            detail: what.to_string(),
        }
    }

    fn check(
        &self,
        method: &str,
        path: &str,
        res: Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, CliError> {
        match res {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(status, r)) => {
                let text = r.into_string().unwrap_or_default();
                let info = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["info"].as_str().map(String::from))
                    .unwrap_or_else(|| text.trim().chars().take(300).collect());
                Err(CliError::Api { status, info })
            }
            Err(ureq::Error::Transport(t)) => {
                Err(self.connect_error(&format!("{method} {path}: {t}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(seg("web-1"), "web-1");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        assert_eq!(seg("é"), "%C3%A9");
    }
}
