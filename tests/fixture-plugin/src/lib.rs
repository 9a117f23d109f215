//! A plugin that misbehaves on request, for testing that the daemon
//! contains it: the step's script says what to do.
//! - `panic`: panics inside `start`
//! - `panic-later`: panics on its own thread after starting (no `done`)
//! - anything else: succeeds, echoing the script
//!
//! With `[plugins.crashy] newer_results = true` it speaks as a plugin built
//! against a later SDK of the same ABI (see `newer`).

mod newer;

use jobx_plugin_api::{Executor, Reporter, RunId, StepKind, StepRequest, StepResult, Stream};

pub struct Crashy;

impl Executor for Crashy {
    const TYPE: &'static str = "crashy";

    fn new(_config: serde_json::Value) -> Result<Self, String> {
        Ok(Crashy)
    }

    fn start(&self, _run: RunId, step: StepRequest, out: Reporter) -> Result<(), String> {
        let script = match &step.kind {
            StepKind::Cmd { script, .. } => script.trim().to_string(),
            _ => String::new(),
        };
        match script.as_str() {
            "panic" => panic!("fixture panic in start on {}", step.node.name),
            "panic-later" => {
                std::thread::spawn(move || {
                    let _keep = out;
                    panic!("fixture panic on a plugin thread");
                });
                Ok(())
            }
            other => {
                out.line(Stream::Stdout, format!("crashy says {other}").as_bytes());
                out.done(StepResult::ok());
                Ok(())
            }
        }
    }

    fn cancel(&self, _run: RunId) {}
}

/// The jobx plugin entry point (ABI version 1): what `export_plugin!`
/// generates, with the table of `newer`.
#[unsafe(no_mangle)]
pub extern "C" fn jobx_plugin_v1() -> *const jobx_plugin_api::abi::PluginTable {
    &newer::TABLE
}
