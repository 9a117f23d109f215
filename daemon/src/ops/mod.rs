//! Running jobxd as a service: systemd readiness, background log
//! retention, token reload on SIGHUP and backups of the store.

pub mod backup;
pub mod reload;
pub mod retention;

use event_listener::Event;
use sd_notify::NotifyState;
use std::sync::atomic::{AtomicBool, Ordering};

fn notify(state: &[NotifyState], what: &str) {
    // Outside systemd (no NOTIFY_SOCKET) this does nothing.
    if let Err(e) = sd_notify::notify(state) {
        log::warn!("cannot tell systemd that the daemon is {what}: {e}");
    }
}

/// The daemon is listening and serving.
pub fn notify_ready() {
    notify(&[NotifyState::Ready], "ready");
}

static STOPPING: AtomicBool = AtomicBool::new(false);
static STOPPING_EVENT: Event = Event::new();

/// The daemon has begun to shut down: systemd is told, and requests that
/// wait on purpose (agents' long-polls) are released.
pub fn notify_stopping() {
    STOPPING.store(true, Ordering::SeqCst);
    STOPPING_EVENT.notify(usize::MAX);
    notify(&[NotifyState::Stopping], "stopping");
}

/// Resolves once the daemon has begun to shut down.
pub async fn stopping() {
    loop {
        let listener = STOPPING_EVENT.listen();
        if STOPPING.load(Ordering::SeqCst) {
            return;
        }
        listener.await;
    }
}

/// A reload (SIGHUP) has begun; `notify_ready` ends it.
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now], "reloading"),
        Err(_) => notify(&[NotifyState::Reloading], "reloading"),
    }
}
