//! The plugin side: the [`Executor`] trait and the glue that turns it into
//! the C table of [`abi`].

use std::any::Any;
use std::ffi::c_void;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::abi::{self, Extensions, HostCallbacks, PluginTable, RawBuf, RespondFn};
use crate::{HttpRequest, HttpResponse, PrepareRequest, RunSink, StepRequest, StepResult, Stream};

/// Identifies one run inside one plugin instance; unique for the life of the
/// instance. The glue assigns it before calling [`Executor::start`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub u64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An executor: what a plugin implements. Export it with
/// [`export_plugin!`](crate::export_plugin).
///
/// Threading: every method may be called from any host thread, concurrently.
/// `start` and `cancel` must return quickly: do the work on your own threads
/// (preferably a bounded pool or an event loop, not a thread per waiting
/// node) and report through the [`Reporter`].
pub trait Executor: Send + Sync + 'static {
    /// The plugin type name: steps select the plugin by it, its configuration
    /// is `[plugins.<TYPE>]` and its HTTP routes live under `/plugin/<TYPE>/`.
    const TYPE: &'static str;

    /// Creates the executor from the `[plugins.<TYPE>]` table of jobxd.toml
    /// as JSON (an empty object when the table is absent). An error stops the
    /// daemon from starting, with the message shown to the operator.
    fn new(config: serde_json::Value) -> Result<Self, String>
    where
        Self: Sized;

    /// Starts one run of `step` on `step.node`. Return `Ok` once the run is
    /// under way and report its output and its end through `out`, exactly
    /// once with [`Reporter::done`]. Returning `Err` means nothing was started
    /// and the step fails with that message; `out` is then ignored.
    /// Honour `step.timeout_secs` (result `timeout after N s`).
    fn start(&self, run: RunId, step: StepRequest, out: Reporter) -> Result<(), String>;

    /// Stops a run: kill what it started and report `done` (conventionally
    /// `StepResult::failed("cancelled")`). Called for runs that may have
    /// ended already or that this instance never saw: then do nothing.
    fn cancel(&self, run: RunId);

    /// Serves an HTTP request routed to `/plugin/<TYPE>/…`. Answer exactly
    /// once through `respond`, now or later from any thread (long polls are
    /// fine). The default answers 404.
    fn http(&self, req: HttpRequest, respond: Responder) {
        let _ = req;
        respond.send(HttpResponse::not_found());
    }

    /// "Prepare these nodes": the host calls it for the nodes of a task's
    /// next batch when the current batch starts, once per plugin type the
    /// job's steps use, so that slow set-up (opening and authenticating
    /// connections, say) overlaps the current batch instead of delaying the
    /// next one.
    ///
    /// Return at once and do the work on your own threads, bounded as your
    /// `start` work is. It is advisory: the host never waits for it, only
    /// logs an `Err` (at debug level), may not call it at all, and may call
    /// it for a batch that never runs, so `start` must work the same
    /// whether or not `prepare` ran, finished or failed. Whatever it opens
    /// should be what the later runs use, and should be released by the
    /// plugin's usual idle rules. The default does nothing.
    fn prepare(&self, req: PrepareRequest) -> Result<(), String> {
        let _ = req;
        Ok(())
    }
}

/// Where a [`Reporter`] delivers.
enum Target {
    Host {
        callbacks: HostCallbacks,
        ctx: usize,
    },
    Sink(Arc<dyn RunSink>),
}

struct ReporterInner {
    target: Target,
    done: AtomicBool,
}

impl ReporterInner {
    fn deliver_done(&self, result: &StepResult) {
        match &self.target {
            Target::Host { callbacks, ctx } => {
                let json = serde_json::to_vec(result).unwrap_or_else(|_| b"{}".to_vec());
                // SAFETY: the host guarantees its callbacks accept any ctx it
                // handed out, from any thread, for the life of the process.
                unsafe {
                    (callbacks.done)(
                        std::ptr::without_provenance_mut(*ctx),
                        json.as_ptr(),
                        json.len(),
                    )
                }
            }
            Target::Sink(sink) => sink.done(result.clone()),
        }
    }
}

impl Drop for ReporterInner {
    fn drop(&mut self) {
        // Every clone is gone (an executor bug or a panicking plugin thread):
        // still end the run, or the step would wait forever.
        if !self.done.swap(true, Ordering::AcqRel) {
            self.deliver_done(&StepResult::failed(
                "the executor ended the run without reporting a result",
            ));
        }
    }
}

/// Reports the output and the end of one run. Cheap to clone, `Send + Sync`;
/// use it from any thread.
///
/// Lines reported after [`done`](Reporter::done) are dropped. If every clone
/// is dropped without `done`, the run ends with an error.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<ReporterInner>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("done", &self.is_done())
            .finish()
    }
}

impl Reporter {
    fn from_host(callbacks: HostCallbacks, ctx: *mut c_void) -> Reporter {
        Reporter::with_target(Target::Host {
            callbacks,
            ctx: ctx.addr(),
        })
    }

    fn with_target(target: Target) -> Reporter {
        Reporter {
            inner: Arc::new(ReporterInner {
                target,
                done: AtomicBool::new(false),
            }),
        }
    }

    /// A reporter that delivers to `sink` in-process, without the C ABI:
    /// for unit tests of an executor.
    pub fn from_sink(sink: Arc<dyn RunSink>) -> Reporter {
        Reporter::with_target(Target::Sink(sink))
    }

    /// Reports one line of output, without its trailing newline. The bytes
    /// need not be UTF-8.
    pub fn line(&self, stream: Stream, text: &[u8]) {
        if self.inner.done.load(Ordering::Acquire) {
            return;
        }
        match &self.inner.target {
            Target::Host { callbacks, ctx } => {
                // SAFETY: see `deliver_done`; the bytes are valid for the call.
                unsafe {
                    (callbacks.output)(
                        std::ptr::without_provenance_mut(*ctx),
                        stream.to_raw(),
                        text.as_ptr(),
                        text.len(),
                    )
                }
            }
            Target::Sink(sink) => sink.line(stream, text),
        }
    }

    /// Reports a plugin message on [`Stream::Info`].
    pub fn info(&self, msg: impl AsRef<str>) {
        self.line(Stream::Info, msg.as_ref().as_bytes());
    }

    /// Ends the run. Only the first call across all clones counts.
    pub fn done(self, result: StepResult) {
        if !self.inner.done.swap(true, Ordering::AcqRel) {
            self.inner.deliver_done(&result);
        }
    }

    /// Whether the run has been ended (by any clone).
    pub fn is_done(&self) -> bool {
        self.inner.done.load(Ordering::Acquire)
    }

    /// Marks the run ended without telling anyone: the host reports it.
    fn suppress(&self) {
        self.inner.done.store(true, Ordering::Release);
    }
}

/// Answers one HTTP request. `Send`; answer from any thread. Dropping it
/// without [`send`](Responder::send) answers `500`.
pub struct Responder {
    target: Option<Box<dyn FnOnce(HttpResponse) + Send>>,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("sent", &self.target.is_none())
            .finish()
    }
}

impl Responder {
    /// A responder that calls `f` in-process: for unit tests.
    pub fn from_fn(f: impl FnOnce(HttpResponse) + Send + 'static) -> Responder {
        Responder {
            target: Some(Box::new(f)),
        }
    }

    fn from_host(respond: RespondFn, ctx: *mut c_void) -> Responder {
        let ctx = ctx.addr();
        Responder::from_fn(move |resp: HttpResponse| {
            let json = serde_json::to_vec(&resp).unwrap_or_else(|_| b"{\"status\":500}".to_vec());
            // SAFETY: the host's respond callback accepts its ctx once, from
            // any thread; the bytes are valid for the call.
            unsafe {
                respond(
                    std::ptr::without_provenance_mut(ctx),
                    json.as_ptr(),
                    json.len(),
                )
            }
        })
    }

    /// Sends the response.
    pub fn send(mut self, resp: HttpResponse) {
        if let Some(f) = self.target.take() {
            f(resp);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(f) = self.target.take() {
            let msg = if std::thread::panicking() {
                "the plugin panicked while handling the request"
            } else {
                "the plugin dropped the request without answering"
            };
            f(HttpResponse::text(500, msg));
        }
    }
}

/// What `init` allocates: the executor plus the run counter.
struct Instance<E> {
    exec: E,
    next_run: AtomicU64,
}

#[cfg(test)]
thread_local! {
    /// Buffers handed to the host and not yet freed, for ownership tests.
    pub(crate) static LIVE_BUFFERS: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

/// Turns a panic payload into text.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Hands `text` to the host as a plugin-owned buffer.
fn alloc_buf(text: String) -> RawBuf {
    let boxed = text.into_bytes().into_boxed_slice();
    let len = boxed.len();
    #[cfg(test)]
    LIVE_BUFFERS.with(|c| c.set(c.get() + 1));
    RawBuf {
        ptr: Box::into_raw(boxed).cast::<u8>(),
        len,
    }
}

/// The table's `free`.
unsafe extern "C" fn free_buf(ptr: *mut u8, len: usize) {
    if ptr.is_null() {
        return;
    }
    #[cfg(test)]
    LIVE_BUFFERS.with(|c| c.set(c.get() - 1));
    // SAFETY: `ptr`/`len` came from `alloc_buf` (a leaked `Box<[u8]>`), and
    // the host frees each buffer once.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
}

/// Borrows a host buffer for the duration of a call.
///
/// # Safety
/// `ptr` must be null or valid for `len` bytes during the call.
unsafe fn input<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// Runs `f`, catching panics; on failure writes the message to `err`.
///
/// # Safety
/// `err` must be null or valid for writing.
unsafe fn guarded(err: *mut RawBuf, f: impl FnOnce() -> Result<(), String>) -> i32 {
    let outcome = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return abi::OK,
        Ok(Err(msg)) => msg,
        Err(payload) => format!("plugin panicked: {}", panic_message(&*payload)),
    };
    if !err.is_null() {
        // SAFETY: guaranteed by the caller.
        unsafe { err.write(alloc_buf(outcome)) };
    }
    abi::ERR
}

unsafe extern "C" fn init<E: Executor>(
    config: *const u8,
    config_len: usize,
    instance: *mut *mut c_void,
    err: *mut RawBuf,
) -> i32 {
    // SAFETY: the ABI contract makes every pointer valid for the call.
    unsafe {
        guarded(err, || {
            let bytes = input(config, config_len);
            let config = if bytes.is_empty() {
                serde_json::Value::Object(serde_json::Map::new())
            } else {
                serde_json::from_slice(bytes)
                    .map_err(|e| format!("invalid configuration JSON: {e}"))?
            };
            let exec = E::new(config)?;
            if instance.is_null() {
                return Err("null instance pointer".to_string());
            }
            let boxed = Box::new(Instance {
                exec,
                next_run: AtomicU64::new(1),
            });
            instance.write(Box::into_raw(boxed).cast::<c_void>());
            Ok(())
        })
    }
}

/// The instance behind the pointer `init::<E>` wrote; None when null.
///
/// # Safety
/// `instance` is null or came from `init::<E>` (and is never freed).
unsafe fn instance_ref<'a, E: Executor>(instance: *mut c_void) -> Option<&'a Instance<E>> {
    // SAFETY: guaranteed by the caller.
    unsafe { instance.cast::<Instance<E>>().as_ref() }
}

/// A JSON request from the host; the error names `what` it was.
///
/// # Safety
/// `data` is null or valid for `len` bytes during the call.
unsafe fn request<T: serde::de::DeserializeOwned>(
    data: *const u8,
    len: usize,
    what: &str,
) -> Result<T, String> {
    // SAFETY: guaranteed by the caller.
    serde_json::from_slice(unsafe { input(data, len) }).map_err(|e| format!("invalid {what}: {e}"))
}

unsafe extern "C" fn start<E: Executor>(
    instance: *mut c_void,
    step: *const u8,
    step_len: usize,
    host: *const HostCallbacks,
    ctx: *mut c_void,
    run_id: *mut u64,
    err: *mut RawBuf,
) -> i32 {
    // SAFETY: the ABI contract makes every pointer valid for the call;
    // `instance` came from `init::<E>`.
    unsafe {
        guarded(err, || {
            let inst = match instance_ref::<E>(instance) {
                Some(inst) if !host.is_null() => inst,
                _ => return Err("null instance or callbacks".to_string()),
            };
            let req: StepRequest = request(step, step_len, "step request")?;
            let run = RunId(inst.next_run.fetch_add(1, Ordering::Relaxed));
            if !run_id.is_null() {
                run_id.write(run.0);
            }
            let reporter = Reporter::from_host(*host, ctx);
            let keep = reporter.clone();
            match catch_unwind(AssertUnwindSafe(|| inst.exec.start(run, req, reporter))) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(msg)) => {
                    keep.suppress();
                    Err(msg)
                }
                Err(payload) => {
                    keep.suppress();
                    Err(format!("plugin panicked: {}", panic_message(&*payload)))
                }
            }
        })
    }
}

unsafe extern "C" fn cancel<E: Executor>(instance: *mut c_void, run_id: u64) {
    // SAFETY: `instance` came from `init::<E>` and is never freed.
    let Some(inst) = (unsafe { instance_ref::<E>(instance) }) else {
        return;
    };
    // Nothing can be reported from cancel; a panic is swallowed rather than
    // unwinding into the host.
    let _ = catch_unwind(AssertUnwindSafe(|| inst.exec.cancel(RunId(run_id))));
}

unsafe extern "C" fn http<E: Executor>(
    instance: *mut c_void,
    body: *const u8,
    body_len: usize,
    respond: RespondFn,
    respond_ctx: *mut c_void,
    err: *mut RawBuf,
) -> i32 {
    // SAFETY: the ABI contract makes every pointer valid for the call;
    // `instance` came from `init::<E>`.
    unsafe {
        guarded(err, || {
            let inst = instance_ref::<E>(instance).ok_or("null instance")?;
            let req: HttpRequest = request(body, body_len, "HTTP request")?;
            let responder = Responder::from_host(respond, respond_ctx);
            // A panic unwinds through the executor, which owns the responder:
            // dropping it answers 500, so the host gets exactly one answer and
            // this call reports success.
            let _ = catch_unwind(AssertUnwindSafe(move || inst.exec.http(req, responder)));
            Ok(())
        })
    }
}

unsafe extern "C" fn prepare<E: Executor>(
    instance: *mut c_void,
    body: *const u8,
    body_len: usize,
    err: *mut RawBuf,
) -> i32 {
    // SAFETY: the ABI contract makes every pointer valid for the call;
    // `instance` came from `init::<E>`.
    unsafe {
        guarded(err, || {
            let inst = instance_ref::<E>(instance).ok_or("null instance")?;
            let req: PrepareRequest = request(body, body_len, "prepare request")?;
            inst.exec.prepare(req)
        })
    }
}

/// Builds the extension table for an executor. Used by
/// [`export_plugin!`](crate::export_plugin); not called directly.
#[doc(hidden)]
pub const fn extensions<E: Executor>() -> Extensions {
    Extensions {
        size: std::mem::size_of::<Extensions>(),
        prepare: Some(prepare::<E>),
    }
}

/// Builds the C table for an executor. Used by
/// [`export_plugin!`](crate::export_plugin); not called directly.
#[doc(hidden)]
pub const fn table<E: Executor>() -> PluginTable {
    PluginTable {
        abi_version: abi::ABI_VERSION,
        plugin_type: E::TYPE.as_ptr(),
        plugin_type_len: E::TYPE.len(),
        init: init::<E>,
        start: start::<E>,
        cancel: cancel::<E>,
        http: Some(http::<E>),
        free: free_buf,
    }
}

/// Exports an [`Executor`] as a jobx plugin: generates the `jobx_plugin_v1`
/// symbol, the optional `jobx_plugin_v1_extensions` symbol (which carries
/// [`Executor::prepare`]) and all the C glue. Use it once, in a `cdylib`
/// crate.
///
/// ```ignore
/// jobx_plugin_api::export_plugin!(MyExecutor);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($executor:ty) => {
        /// The jobx plugin entry point (ABI version 1).
        #[unsafe(no_mangle)]
        pub extern "C" fn jobx_plugin_v1() -> *const $crate::abi::PluginTable {
            static TABLE: $crate::abi::PluginTable = $crate::plugin::table::<$executor>();
            &TABLE
        }

        /// The optional hooks of ABI version 1 ("prepare these nodes").
        #[unsafe(no_mangle)]
        pub extern "C" fn jobx_plugin_v1_extensions() -> *const $crate::abi::Extensions {
            static EXTENSIONS: $crate::abi::Extensions = $crate::plugin::extensions::<$executor>();
            &EXTENSIONS
        }
    };
}
