//! Running jobxd as a service: systemd readiness, background log
//! retention, token reload on SIGHUP and backups of the store.

pub mod backup;
pub mod reload;
pub mod retention;

use sd_notify::NotifyState;

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

/// The daemon has begun to shut down.
pub fn notify_stopping() {
    notify(&[NotifyState::Stopping], "stopping");
}

/// A reload (SIGHUP) has begun; `notify_ready` ends it.
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now], "reloading"),
        Err(_) => notify(&[NotifyState::Reloading], "reloading"),
    }
}
