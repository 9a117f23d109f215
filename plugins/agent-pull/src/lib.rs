//! The `agent-pull` executor plugin: steps are handed to agents
//! (`jobx-agent`) that poll the daemon over HTTP(S), for hosts the daemon
//! cannot reach.
//!
//! * `start` queues the step for the agent named like the node; the agent's
//!   held poll (if any) is answered at once with the work and a fresh lease.
//! * The agent accepts the lease, runs the step, sends its output in
//!   numbered chunks and reports the exit; heartbeats keep the lease alive.
//! * No thread waits per agent or per node: held polls are stored
//!   responders; one reaper thread handles every deadline (poll holds,
//!   `connect_timeout`, `lost_after`, offer expiry); a small pool serves
//!   `scp` sources.
//!
//! The protocol and the configuration are described in the README.

#![forbid(unsafe_code)]

mod config;
mod files;
mod http;
mod hub;
pub mod proto;

use std::sync::Arc;

use jobx_plugin_api::{
    export_plugin, Executor, HttpRequest, Reporter, Responder, RunId, StepRequest,
};

use crate::files::Pool;
use crate::hub::Hub;

/// The executor.
pub struct AgentPull {
    hub: Arc<Hub>,
    pool: Arc<Pool>,
}

/// `YYYY-MM-DD HH:MM:SS` in the host's local time, as the daemon's API shows times.
pub(crate) fn local_time(ms: i64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => String::new(),
    }
}

impl Executor for AgentPull {
    const TYPE: &'static str = "agent-pull";

    fn new(config: serde_json::Value) -> Result<Self, String> {
        let settings = config::Settings::parse(config)?;
        let pool = Pool::spawn(settings.file_workers)
            .map_err(|e| format!("cannot start the agent-pull file workers: {e}"))?;
        let hub = Hub::new(settings);
        let reaper = hub.clone();
        std::thread::Builder::new()
            .name("jobx-agent-pull".to_string())
            .spawn(move || reaper.reaper())
            .map_err(|e| format!("cannot start the agent-pull timer thread: {e}"))?;
        Ok(AgentPull {
            hub,
            pool: Arc::new(pool),
        })
    }

    fn start(&self, run: RunId, step: StepRequest, out: Reporter) -> Result<(), String> {
        self.hub.start(run, step, out)
    }

    fn cancel(&self, run: RunId) {
        self.hub.cancel(run);
    }

    fn http(&self, req: HttpRequest, respond: Responder) {
        http::serve(&self.hub, &self.pool, req, respond);
    }
}

export_plugin!(AgentPull);

#[cfg(test)]
mod tests;
