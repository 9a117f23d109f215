//! The raw C ABI between jobxd and a plugin library.
//!
//! Plugin authors do not use this module directly: [`export_plugin!`](crate::export_plugin)
//! generates the table from an [`Executor`](crate::Executor). It is public so
//! that the contract is documented in one place and a plugin could be written
//! in another language.
//!
//! # Contract (ABI version 1)
//!
//! * The library exports one symbol, `jobx_plugin_v1`, an
//!   `extern "C" fn() -> *const PluginTable` returning a pointer to a table
//!   that lives as long as the library. The first field of the table is the
//!   ABI version as a `u32` in **every** ABI version; the host reads it before
//!   anything else and refuses a mismatch. A future ABI version `N` exports
//!   `jobx_plugin_vN` instead.
//! * All data crosses as UTF-8 JSON bytes (pointer + length, no terminating
//!   NUL). Buffers passed *into* a function are owned by the caller and valid
//!   only during the call. Buffers a plugin *returns* (the error text of
//!   `init`, `start` and `http`) are allocated by the plugin and released by
//!   the host with the table's `free`.
//! * Every entry point is `extern "C"`, must not unwind and catches panics;
//!   functions that can fail return [`OK`] or [`ERR`] and fill `err` on
//!   [`ERR`].
//! * Host callbacks ([`HostCallbacks`], [`RespondFn`]) are thread-safe and
//!   may be called from any thread. `done` is called exactly once per run
//!   that `start` accepted; when `start` returns [`ERR`] the plugin must not
//!   call `done` for it (the host reports the error). After `done` the plugin
//!   makes no more callbacks for that run. The host tolerates violations
//!   (it ignores calls for finished runs) but plugins must not rely on that.
//! * `cancel` may be called at any time, also for a run that already
//!   finished or that the plugin never heard of; it must not block for long.
//! * The host never unloads a library and never destroys an instance.
//! * Optional hooks added within ABI v1 live in a separate table,
//!   [`Extensions`], exported through a second symbol,
//!   `jobx_plugin_v1_extensions` ([`EXTENSIONS_SYMBOL`]). A library without
//!   that symbol works as before. The table starts with its own size, and
//!   the host reads only the fields that size covers.

use std::ffi::c_void;

/// The ABI version this crate implements.
pub const ABI_VERSION: u32 = 1;

/// Name of the exported symbol for [`ABI_VERSION`] (NUL-terminated for `dlsym`).
pub const SYMBOL: &[u8] = b"jobx_plugin_v1\0";

/// Symbol name for an arbitrary ABI version (without NUL).
pub fn symbol_for(version: u32) -> String {
    format!("jobx_plugin_v{version}")
}

/// Return value of a fallible entry point: success.
pub const OK: i32 = 0;
/// Return value of a fallible entry point: failure; `err` holds UTF-8 text.
pub const ERR: i32 = 1;

/// A buffer allocated by the plugin and returned to the host, which releases
/// it with [`PluginTable::free`]. `ptr` may be null when `len` is 0.
#[repr(C)]
#[derive(Debug)]
pub struct RawBuf {
    /// Start of the bytes.
    pub ptr: *mut u8,
    /// Number of bytes.
    pub len: usize,
}

impl RawBuf {
    /// An empty buffer (nothing to free).
    pub const fn empty() -> RawBuf {
        RawBuf {
            ptr: std::ptr::null_mut(),
            len: 0,
        }
    }
}

/// `output(ctx, stream, bytes, len)`: one line of output (without its
/// newline) for the run identified by `ctx`. `stream`: 0 stdout, 1 stderr, 2 info.
pub type OutputFn =
    unsafe extern "C" fn(ctx: *mut c_void, stream: u32, data: *const u8, len: usize);

/// `done(ctx, result_json, len)`: the run identified by `ctx` ended; the JSON
/// is a [`StepResult`](crate::StepResult).
pub type DoneFn = unsafe extern "C" fn(ctx: *mut c_void, result: *const u8, len: usize);

/// `respond(ctx, response_json, len)`: the answer to an HTTP request, a JSON
/// [`HttpResponse`](crate::HttpResponse). Called exactly once per request
/// that `http` accepted.
pub type RespondFn = unsafe extern "C" fn(ctx: *mut c_void, response: *const u8, len: usize);

/// Callbacks the host passes to `start`. The pointer stays valid for the
/// life of the process.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HostCallbacks {
    /// Reports one line of output.
    pub output: OutputFn,
    /// Reports the end of a run.
    pub done: DoneFn,
}

/// `init(config_json, len, &mut instance, &mut err) -> OK | ERR`.
/// `config_json` is the `[plugins.<type>]` table as a JSON object (`{}` if absent).
pub type InitFn = unsafe extern "C" fn(
    config: *const u8,
    config_len: usize,
    instance: *mut *mut c_void,
    err: *mut RawBuf,
) -> i32;

/// `start(instance, step_json, len, host, ctx, &mut run_id, &mut err) -> OK | ERR`.
/// `step_json` is a [`StepRequest`](crate::StepRequest); `ctx` is passed back
/// unchanged to the host callbacks; `run_id` identifies the run for `cancel`.
pub type StartFn = unsafe extern "C" fn(
    instance: *mut c_void,
    step: *const u8,
    step_len: usize,
    host: *const HostCallbacks,
    ctx: *mut c_void,
    run_id: *mut u64,
    err: *mut RawBuf,
) -> i32;

/// `cancel(instance, run_id)`: stop a run; it still ends with `done`.
pub type CancelFn = unsafe extern "C" fn(instance: *mut c_void, run_id: u64);

/// `http(instance, request_json, len, respond, respond_ctx, &mut err) -> OK | ERR`.
/// On [`ERR`] the plugin must not call `respond` (the host answers 500).
pub type HttpFn = unsafe extern "C" fn(
    instance: *mut c_void,
    request: *const u8,
    request_len: usize,
    respond: RespondFn,
    respond_ctx: *mut c_void,
    err: *mut RawBuf,
) -> i32;

/// `free(ptr, len)`: release a buffer the plugin returned.
pub type FreeFn = unsafe extern "C" fn(ptr: *mut u8, len: usize);

/// The table a plugin exports through `jobx_plugin_v1`.
#[repr(C)]
#[derive(Debug)]
pub struct PluginTable {
    /// Must be the first field in every ABI version.
    pub abi_version: u32,
    /// The plugin type name (UTF-8, no NUL), e.g. `local`; steps select the
    /// plugin by it and HTTP is routed under `/plugin/<type>/`.
    pub plugin_type: *const u8,
    /// Length of `plugin_type` in bytes.
    pub plugin_type_len: usize,
    /// Creates an instance from the plugin's configuration.
    pub init: InitFn,
    /// Starts a run.
    pub start: StartFn,
    /// Cancels a run.
    pub cancel: CancelFn,
    /// Serves HTTP under `/plugin/<type>/`; null if the plugin serves none.
    pub http: Option<HttpFn>,
    /// Releases buffers the plugin returned.
    pub free: FreeFn,
}

// SAFETY: the table is immutable; its pointers are to 'static data and its
// functions are thread-safe by contract.
unsafe impl Sync for PluginTable {}
// SAFETY: as above.
unsafe impl Send for PluginTable {}

/// Signature of the exported `jobx_plugin_v1` symbol.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginTable;

/// Name of the optional extension symbol (NUL-terminated for `dlsym`).
///
/// Hooks added after the first release of ABI v1 live in a second table,
/// [`Extensions`], that a library may export through this symbol, an
/// `extern "C" fn() -> *const Extensions`. A library without it (built
/// against an earlier SDK, or written by hand) loads and runs exactly as
/// before; the host simply has no hooks to call. The v1 [`PluginTable`]
/// itself never grows: it has no size field, so a host could not tell
/// whether a library's table has a later field, and reading past the end of
/// an older library's table would be undefined behaviour.
pub const EXTENSIONS_SYMBOL: &[u8] = b"jobx_plugin_v1_extensions\0";

/// `prepare(instance, request_json, len, &mut err) -> OK | ERR`: get ready to
/// run steps on some nodes soon (for example open connections). The JSON
/// is a [`PrepareRequest`](crate::PrepareRequest). Must return quickly: do
/// the work on the plugin's own threads. Purely advisory: the host ignores
/// the result apart from logging an error, and later runs must work whether
/// or not it was called, finished or failed.
pub type PrepareFn = unsafe extern "C" fn(
    instance: *mut c_void,
    request: *const u8,
    request_len: usize,
    err: *mut RawBuf,
) -> i32;

/// The optional hooks of ABI v1, exported through [`EXTENSIONS_SYMBOL`].
///
/// `size` is the size of the struct the library was built with. Fields are
/// only ever appended, so the host reads a field only when `size` covers
/// it, and a library built with fewer fields than the host knows is fine.
#[repr(C)]
#[derive(Debug)]
pub struct Extensions {
    /// `size_of::<Extensions>()` as the library was built; always first.
    pub size: usize,
    /// "Prepare these nodes": called for the next batch while the current
    /// one runs; null if the plugin has nothing to prepare.
    pub prepare: Option<PrepareFn>,
}

impl Extensions {
    /// The `prepare` hook of a library's extension table, if the table is
    /// long enough to have the field and the field is set.
    ///
    /// # Safety
    /// `ext` must be null or point at an extension table that starts with
    /// its `size` and is valid for `size` bytes.
    pub unsafe fn prepare_hook(ext: *const Extensions) -> Option<PrepareFn> {
        if ext.is_null() {
            return None;
        }
        // Only the fields the library's table covers are read, through raw
        // pointers: an older table may be shorter than this struct.
        // SAFETY: every version of the table starts with `size`.
        let size = unsafe { std::ptr::addr_of!((*ext).size).read() };
        let end =
            std::mem::offset_of!(Extensions, prepare) + std::mem::size_of::<Option<PrepareFn>>();
        if size < end {
            return None;
        }
        // SAFETY: `size` covers the field.
        unsafe { std::ptr::addr_of!((*ext).prepare).read() }
    }
}

// SAFETY: as for `PluginTable`.
unsafe impl Sync for Extensions {}
// SAFETY: as above.
unsafe impl Send for Extensions {}

/// Signature of the optional `jobx_plugin_v1_extensions` symbol.
pub type ExtensionsFn = unsafe extern "C" fn() -> *const Extensions;
