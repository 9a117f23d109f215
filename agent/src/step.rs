//! One handed-out step, from accepting its lease to reporting its exit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobx_plugin_api::StepKind;

use crate::client::Failure;
use crate::cmd::{self, Outcome};
use crate::output::Output;
use crate::proto::{Accept, Exit, Work};
use crate::state::{log, Control, Ctx, Stop};

const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping agent still tries to deliver output and exits.
const SHUTDOWN_REPORT: Duration = Duration::from_secs(3);

/// Runs `work` on a thread of its own.
pub fn spawn(ctx: Arc<Ctx>, work: Work) {
    let lease = work.lease.clone();
    let spawned = std::thread::Builder::new()
        .name("jobx-agent-step".to_string())
        .spawn(move || run(&ctx, work));
    if let Err(e) = spawned {
        // Not accepted: the daemon offers the step again later.
        log(format!("cannot start a thread for lease {lease}: {e}"));
    }
}

/// Claims the lease; `false` when the daemon withdrew the offer or cannot
/// be reached (it then offers the step again under a new lease).
fn accept(ctx: &Ctx, lease: &str) -> bool {
    let body = Accept {
        lease: lease.to_string(),
        instance: ctx.instance.clone(),
    };
    for attempt in 0..3u32 {
        match ctx
            .client
            .post::<_, serde_json::Value>("/accept", &body, ACCEPT_TIMEOUT)
        {
            Ok(_) => {
                ctx.contact();
                return true;
            }
            Err(Failure::Status(code, r)) => {
                log(format!(
                    "step offer {lease} not taken: HTTP {code}: {}",
                    r.error
                ));
                return false;
            }
            Err(e) => {
                log(format!("accepting step {lease}: {e}"));
                std::thread::sleep(Duration::from_millis(300 << attempt));
            }
        }
    }
    false
}

fn run(ctx: &Arc<Ctx>, work: Work) {
    if ctx.shutting_down() || !accept(ctx, &work.lease) {
        return;
    }
    let control = ctx.register(&work.lease);
    let outcome = match Output::start(ctx.clone(), &work.lease, control.clone()) {
        Ok((out, sender)) => {
            let outcome = execute(ctx, &work, &out, &control);
            finish(ctx, &work, &out, &control, outcome);
            let _ = sender.join();
            None
        }
        Err(e) => Some(Outcome::Failed(format!(
            "cannot start the output sender: {e}"
        ))),
    };
    if let Some(Outcome::Failed(err)) = outcome {
        report(ctx, &work.lease, 0, Outcome::Failed(err), &control);
    }
    ctx.unregister(&work.lease);
}

fn execute(ctx: &Ctx, work: &Work, out: &Output, control: &Control) -> Outcome {
    match &work.kind {
        StepKind::Cmd {
            script,
            interpreter,
            args,
        } => cmd::run(
            &cmd::Spec {
                tag: &work.step,
                script,
                interpreter,
                args,
                env: &work.env,
                workdir: &ctx.workdir,
                timeout_secs: work.timeout_secs,
                kill_grace: ctx.kill_grace,
            },
            out,
            control,
        ),
        StepKind::Scp {
            dst,
            chmod,
            chown,
            delete,
            ..
        } => {
            let deadline = (work.timeout_secs > 0)
                .then(|| Instant::now() + Duration::from_secs(work.timeout_secs));
            let stop_reason = std::cell::Cell::new(None);
            let check = || {
                if let Some(why) = control.stopped() {
                    stop_reason.set(Some(cmd::stopped(why)));
                    return Err("stopped".to_string());
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(format!("timeout after {} s", work.timeout_secs));
                }
                Ok(())
            };
            let copied = crate::scp::copy(&crate::scp::Copy {
                client: &ctx.client,
                lease: &work.lease,
                dst,
                chmod: chmod.as_deref(),
                chown: chown.as_deref(),
                delete: *delete,
                out,
                check: &check,
            });
            match (copied, stop_reason.take()) {
                (_, Some(o)) => o,
                (Ok(summary), None) => {
                    out.info(summary);
                    Outcome::Exited(0)
                }
                (Err(e), None) => Outcome::Failed(e),
            }
        }
        _ => Outcome::Failed(StepKind::UNKNOWN.into()),
    }
}

/// Delivers the output, then the exit.
fn finish(ctx: &Ctx, work: &Work, out: &Output, control: &Control, outcome: Outcome) {
    if outcome == Outcome::Dropped || matches!(control.stopped(), Some(Stop::Stale | Stop::Orphan))
    {
        out.abandon();
        return;
    }
    let deadline = if ctx.shutting_down() {
        Instant::now() + SHUTDOWN_REPORT
    } else {
        // Past `lost_after` without contact the daemon has failed the step.
        Instant::now() + ctx.timing().lost_after + Duration::from_secs(5)
    };
    let chunks = loop {
        if let Some(n) = out.finish(deadline.min(Instant::now() + Duration::from_secs(1))) {
            break Some(n);
        }
        if Instant::now() >= deadline
            || matches!(control.stopped(), Some(Stop::Stale | Stop::Orphan))
        {
            break None;
        }
    };
    let Some(chunks) = chunks else {
        out.abandon();
        log(format!(
            "output of step {} could not be delivered",
            work.lease
        ));
        return;
    };
    report(ctx, &work.lease, chunks, outcome, control);
}

/// Sends the exit report, retrying while the daemon may still want it.
fn report(ctx: &Ctx, lease: &str, chunks: u64, outcome: Outcome, control: &Control) {
    let (exit_code, error) = match outcome {
        Outcome::Exited(c) => (Some(c), None),
        Outcome::Failed(e) => (None, Some(e)),
        Outcome::Dropped => return,
    };
    let body = Exit {
        lease: lease.to_string(),
        chunks,
        exit_code,
        error,
    };
    let started = Instant::now();
    let mut failures = 0u32;
    loop {
        match ctx
            .client
            .post::<_, serde_json::Value>("/exit", &body, EXIT_TIMEOUT)
        {
            Ok(_) => {
                ctx.contact();
                return;
            }
            Err(Failure::Status(503, _)) => std::thread::sleep(Duration::from_millis(50)),
            Err(Failure::Status(code, r)) => {
                if code != 409 {
                    log(format!(
                        "exit of step {lease} refused: HTTP {code}: {}",
                        r.error
                    ));
                }
                return;
            }
            Err(e) => {
                let limit = if ctx.shutting_down() {
                    SHUTDOWN_REPORT
                } else {
                    ctx.timing().lost_after + Duration::from_secs(5)
                };
                if started.elapsed() >= limit
                    || matches!(control.stopped(), Some(Stop::Stale | Stop::Orphan))
                {
                    log(format!("exit of step {lease} not delivered: {e}"));
                    return;
                }
                failures += 1;
                std::thread::sleep(Duration::from_millis(200u64 << failures.min(4)));
            }
        }
    }
}
