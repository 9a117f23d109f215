//! Speaking as a plugin built against a later 1.x SDK would: with
//! `[plugins.crashy] newer_results = true`, every result carries JSON
//! fields this jobx does not know, and each run also sends a line on an
//! output stream number this jobx does not know. Within ABI v1 the host
//! must accept both (unknown fields ignored, unknown streams shown as
//! info); the end-to-end tests prove it against a real jobxd.
//!
//! This wraps the table `export_plugin!` would generate for [`Crashy`]:
//! `start` hands the plugin our callbacks instead of the host's, and our
//! `done` rewrites the result JSON before passing it on.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use jobx_plugin_api::abi::{self, HostCallbacks, PluginTable, RawBuf};

use crate::Crashy;

/// The table the SDK generates for the executor.
const INNER: PluginTable = jobx_plugin_api::plugin::table::<Crashy>();

/// What the library exports: the SDK's table with `init` and `start` wrapped.
pub static TABLE: PluginTable = PluginTable {
    init,
    start,
    ..INNER
};

/// The fields a later SDK adds to a result, and what it says on stream 7.
pub const NEWER_FIELDS: &str = r#"{"duration_ms": 12, "summary": {"changed": 3}}"#;
pub const STREAM_7_LINE: &str = "a line on stream 7, which this jobx does not know";

static NEWER: AtomicBool = AtomicBool::new(false);

/// The host's callbacks for each run in flight, by the host's `ctx`.
static HOSTS: Mutex<BTreeMap<usize, HostCallbacks>> = Mutex::new(BTreeMap::new());

static OURS: HostCallbacks = HostCallbacks { output, done };

fn hosts() -> MutexGuard<'static, BTreeMap<usize, HostCallbacks>> {
    HOSTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads `newer_results` from the configuration, then initializes as usual.
unsafe extern "C" fn init(
    config: *const u8,
    config_len: usize,
    instance: *mut *mut c_void,
    err: *mut RawBuf,
) -> i32 {
    if !config.is_null() && config_len > 0 {
        // SAFETY: the host passes a buffer valid for the call.
        let bytes = unsafe { std::slice::from_raw_parts(config, config_len) };
        let on = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("newer_results").and_then(|b| b.as_bool()))
            .unwrap_or(false);
        NEWER.store(on, Ordering::Release);
    }
    // SAFETY: the arguments are the host's, passed on unchanged.
    unsafe { (INNER.init)(config, config_len, instance, err) }
}

unsafe extern "C" fn start(
    instance: *mut c_void,
    step: *const u8,
    step_len: usize,
    host: *const HostCallbacks,
    ctx: *mut c_void,
    run_id: *mut u64,
    err: *mut RawBuf,
) -> i32 {
    if !NEWER.load(Ordering::Acquire) || host.is_null() {
        // SAFETY: the arguments are the host's, passed on unchanged.
        return unsafe { (INNER.start)(instance, step, step_len, host, ctx, run_id, err) };
    }
    // SAFETY: the host's callbacks pointer is valid (checked non-null).
    let callbacks = unsafe { *host };
    // Registered first: the plugin may report before `start` returns.
    hosts().insert(ctx.addr(), callbacks);
    // SAFETY: only the callbacks differ; ours accept any ctx from any thread.
    let rc = unsafe { (INNER.start)(instance, step, step_len, &OURS, ctx, run_id, err) };
    if rc != abi::OK {
        hosts().remove(&ctx.addr());
    }
    rc
}

unsafe extern "C" fn output(ctx: *mut c_void, stream: u32, data: *const u8, len: usize) {
    let host = hosts().get(&ctx.addr()).copied();
    if let Some(host) = host {
        // SAFETY: passed on unchanged to the host, within the plugin's call.
        unsafe { (host.output)(ctx, stream, data, len) }
    }
}

unsafe extern "C" fn done(ctx: *mut c_void, data: *const u8, len: usize) {
    let Some(host) = hosts().remove(&ctx.addr()) else {
        return;
    };
    let raw = if data.is_null() || len == 0 {
        &[][..]
    } else {
        // SAFETY: the plugin passes a buffer valid for the call.
        unsafe { std::slice::from_raw_parts(data, len) }
    };
    let mut result: serde_json::Value = serde_json::from_slice(raw).unwrap_or_default();
    if let (Some(obj), Ok(serde_json::Value::Object(extra))) = (
        result.as_object_mut(),
        serde_json::from_str::<serde_json::Value>(NEWER_FIELDS),
    ) {
        obj.extend(extra);
    }
    let json = result.to_string();
    let note = format!("sending result {json}");
    // SAFETY: the host's callbacks accept its ctx from any thread; the
    // buffers are valid for each call; `done` comes last.
    unsafe {
        (host.output)(ctx, 7, STREAM_7_LINE.as_ptr(), STREAM_7_LINE.len());
        (host.output)(ctx, 2, note.as_ptr(), note.len());
        (host.done)(ctx, json.as_ptr(), json.len());
    }
}
