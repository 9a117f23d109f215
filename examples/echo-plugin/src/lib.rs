//! The `echo` executor: a template for a jobx executor plugin.
//!
//! Copy this crate to start your own plugin. It is written only against
//! the public `jobx-plugin-api`, like the built-in plugins, and shows what a
//! plugin needs to get right:
//!
//! * configuration from `[plugins.echo]`, with errors naming the key
//!   ([`config`]);
//! * the step's own parameters from `StepRequest::params` ([`params`]);
//! * a bounded worker pool, so waiting steps cost no thread each ([`pool`]);
//! * cancellation and `timeout_secs` ([`run::Control`]);
//! * a lifeline, so nothing a step starts outlives jobxd ([`lifeline`]);
//! * output streamed line by line and one result per run ([`run`]).
//!
//! A job step `{"plugin": "echo", "text": "hi", "repeat": 3,
//! "interval_ms": 500}` prints `hi` three times, half a second apart; with
//! `"fail": "why"` it then fails with that message. The tool runs on the
//! daemon host; a real plugin would reach `step.node.address()` instead.
//!
//! Configuration (`[plugins.echo]`, all optional): `workers` (default 4),
//! `queue` (default 1000), `max_repeat` (default 1000).

#![forbid(unsafe_code)]

pub mod config;
pub mod lifeline;
pub mod params;
pub mod pool;
pub mod run;

use std::time::{Duration, Instant};

use jobx_plugin_api::{export_plugin, Executor, Reporter, RunId, StepRequest};

use crate::config::Config;
use crate::params::Params;
use crate::pool::{Job, Pool};

/// The executor: one instance per jobxd, shared by all its threads.
pub struct Echo {
    config: Config,
    pool: Pool,
}

impl Executor for Echo {
    // Steps say `"plugin": "echo"`; the configuration is `[plugins.echo]`.
    const TYPE: &'static str = "echo";

    fn new(config: serde_json::Value) -> Result<Self, String> {
        let config = Config::parse(config)?;
        let pool = Pool::spawn(config.workers, config.queue)
            .map_err(|e| format!("cannot start the echo workers: {e}"))?;
        Ok(Echo { config, pool })
    }

    fn start(&self, run: RunId, step: StepRequest, out: Reporter) -> Result<(), String> {
        // Checked here, before anything runs: an Err fails the step with
        // the message, and `out` is ignored.
        let params = Params::parse(&step.params, self.config.max_repeat)?;
        let deadline = (step.timeout_secs > 0)
            .then(|| Instant::now() + Duration::from_secs(step.timeout_secs));
        self.pool.submit(Job {
            run,
            params,
            env: step.env.into_iter().collect(),
            timeout_secs: step.timeout_secs,
            deadline,
            out,
        })
    }

    fn cancel(&self, run: RunId) {
        self.pool.cancel(run);
    }
}

export_plugin!(Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use jobx_plugin_api::testing::Recorder;
    use jobx_plugin_api::{StepResult, Stream};
    use serde_json::json;
    use std::sync::Arc;

    const T: Duration = Duration::from_secs(10);

    fn echo(config: serde_json::Value) -> Echo {
        Echo::new(config).expect("valid config")
    }

    fn step(params: serde_json::Value, timeout_secs: u64) -> StepRequest {
        let serde_json::Value::Object(params) = params else {
            panic!("params are an object")
        };
        StepRequest {
            plugin: "echo".into(),
            params,
            timeout_secs,
            ..StepRequest::default()
        }
    }

    fn start(e: &Echo, run: u64, params: serde_json::Value, timeout: u64) -> Arc<Recorder> {
        let rec = Recorder::new();
        e.start(RunId(run), step(params, timeout), rec.reporter())
            .expect("started");
        rec
    }

    #[test]
    fn prints_the_text_and_succeeds() {
        let e = echo(json!({}));
        let rec = start(&e, 1, json!({"text": "hi there", "repeat": 3}), 60);
        assert_eq!(rec.wait_done(T), Some(StepResult::ok()));
        assert_eq!(rec.stdout(), ["hi there"; 3]);
        assert_eq!(rec.results().len(), 1);
    }

    #[test]
    fn text_is_data_not_shell() {
        let e = echo(json!({}));
        let text = "$(touch /tmp/jobx-echo-pwned) `id` ; $HOME \"'";
        let rec = start(&e, 1, json!({ "text": text }), 60);
        assert_eq!(rec.wait_done(T), Some(StepResult::ok()));
        assert_eq!(rec.stdout(), [text]);
        assert!(!std::path::Path::new("/tmp/jobx-echo-pwned").exists());
    }

    #[test]
    fn fail_fails_after_the_output() {
        let e = echo(json!({}));
        let rec = start(&e, 1, json!({"text": "x", "fail": "asked to fail"}), 60);
        assert_eq!(rec.wait_done(T), Some(StepResult::failed("asked to fail")));
        assert_eq!(rec.stdout(), ["x"]);
        assert_eq!(rec.text(Stream::Stderr), ["asked to fail"]);
    }

    #[test]
    fn bad_parameters_refuse_the_step_naming_them() {
        let e = echo(json!({"max_repeat": 5}));
        let rec = Recorder::new();
        let err = e
            .start(
                RunId(1),
                step(json!({"text": "x", "repeat": 6}), 60),
                rec.reporter(),
            )
            .unwrap_err();
        assert!(err.starts_with("echo step: repeat: at most 5"), "{err}");
        let err = e
            .start(RunId(2), step(json!({"repeat": 1}), 60), rec.reporter())
            .unwrap_err();
        assert_eq!(err, "echo step: missing field `text`");
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = Echo::new(json!({"workers": 0})).err().expect("refused");
        assert!(err.starts_with("[plugins.echo] workers:"), "{err}");
    }

    /// Processes whose command line contains `marker`.
    fn processes_with(marker: &str) -> usize {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|cmd| String::from_utf8_lossy(cmd).contains(marker))
            .count()
    }

    #[test]
    fn cancel_kills_a_running_step() {
        let e = echo(json!({}));
        let mark = format!("jobx-echo-cancel-{}", std::process::id());
        let rec = start(
            &e,
            7,
            json!({"text": mark, "repeat": 1000, "interval_ms": 200}),
            60,
        );
        assert!(rec.wait_lines(1, T), "the step started");
        assert!(processes_with(&mark) > 0, "the step runs as a process");
        let began = Instant::now();
        e.cancel(RunId(7));
        assert_eq!(rec.wait_done(T), Some(StepResult::failed("cancelled")));
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        let n = rec.stdout().len();
        assert!(n < 1000, "{n} lines");
        // Nothing of the step is left running.
        let deadline = Instant::now() + T;
        while processes_with(&mark) > 0 {
            assert!(Instant::now() < deadline, "the cancelled step lives on");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Unknown and finished runs are ignored.
        e.cancel(RunId(7));
        e.cancel(RunId(99));
        assert_eq!(rec.results().len(), 1);
    }

    #[test]
    fn timeout_ends_the_step() {
        let e = echo(json!({}));
        let rec = start(
            &e,
            1,
            json!({"text": "t", "repeat": 100, "interval_ms": 100}),
            1,
        );
        assert_eq!(
            rec.wait_done(T),
            Some(StepResult::failed("timeout after 1 s"))
        );
        assert!(rec
            .text(Stream::Info)
            .contains(&"timeout after 1 s: killing the step".to_string()));
    }

    #[test]
    fn the_pool_is_bounded_and_queued_steps_cancel_without_running() {
        let e = echo(json!({"workers": 1, "queue": 1}));
        let long = json!({"text": "busy", "repeat": 1000, "interval_ms": 100});
        let first = start(&e, 1, long.clone(), 60);
        assert!(first.wait_lines(1, T));
        let second = start(&e, 2, json!({"text": "queued"}), 60);
        assert!(second.wait_lines(1, T));
        assert_eq!(
            second.text(Stream::Info),
            ["waiting for a free echo worker (1 running)"]
        );
        // Worker busy and queue full: the next step is refused at once.
        let third = Recorder::new();
        let err = e
            .start(RunId(3), step(json!({"text": "x"}), 60), third.reporter())
            .unwrap_err();
        assert!(err.contains("busy"), "{err}");
        // Cancelling the queued step ends it without output.
        e.cancel(RunId(2));
        assert_eq!(second.wait_done(T), Some(StepResult::failed("cancelled")));
        assert!(second.stdout().is_empty());
        // Once the worker is free, queued steps run.
        let fourth = start(&e, 4, json!({"text": "later"}), 60);
        e.cancel(RunId(1));
        assert_eq!(first.wait_done(T), Some(StepResult::failed("cancelled")));
        assert_eq!(fourth.wait_done(T), Some(StepResult::ok()));
        assert_eq!(fourth.stdout(), ["later"]);
    }
}
