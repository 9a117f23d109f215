//! The `agent-pull` executor plugin: steps are handed to agents that poll
//! the daemon over HTTP.

use jobx_plugin_api::{export_plugin, Executor, Reporter, RunId, StepRequest};

/// The executor.
pub struct AgentPull;

impl Executor for AgentPull {
    const TYPE: &'static str = "agent-pull";

    fn new(_config: serde_json::Value) -> Result<Self, String> {
        Ok(AgentPull)
    }

    fn start(&self, _run: RunId, _step: StepRequest, _out: Reporter) -> Result<(), String> {
        Err("agent-pull is not available yet".to_string())
    }

    fn cancel(&self, _run: RunId) {}
}

export_plugin!(AgentPull);
