//! The host side: loading plugin libraries and driving them (feature `host`).
//!
//! The host hands each run and each HTTP request an opaque id as the C
//! `ctx` and keeps the receiver in a process-wide table. A callback for an id
//! that is no longer there (a second `done`, output after `done`, a second
//! answer) is ignored, so a misbehaving plugin cannot make the host use freed
//! memory or report a run twice.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use libloading::Library;

use crate::abi::{
    self, EntryFn, Extensions, ExtensionsFn, HostCallbacks, PluginTable, PrepareFn, RawBuf,
};
pub use crate::RunSink;
use crate::{HttpRequest, HttpResponse, PrepareRequest, StepRequest, StepResult, Stream};

/// A loaded plugin: its table and its one instance.
struct Loaded {
    plugin_type: String,
    file: PathBuf,
    table: &'static PluginTable,
    /// The optional "prepare these nodes" hook (from the extension table).
    prepare: Option<PrepareFn>,
    /// The instance pointer from `init`; never freed.
    instance: usize,
}

impl Loaded {
    fn instance(&self) -> *mut c_void {
        std::ptr::without_provenance_mut(self.instance)
    }

    /// Copies and frees an error buffer the plugin returned.
    fn take_error(&self, buf: RawBuf) -> Option<String> {
        if buf.ptr.is_null() {
            return None;
        }
        // SAFETY: the plugin returned `buf` for us to read and free once.
        let text = unsafe {
            let text =
                String::from_utf8_lossy(std::slice::from_raw_parts(buf.ptr, buf.len)).into_owned();
            (self.table.free)(buf.ptr, buf.len);
            text
        };
        Some(text)
    }
}

/// The set of loaded plugins, one instance per plugin type. `Send + Sync`;
/// share it behind an `Arc`.
pub struct PluginSet {
    plugins: BTreeMap<String, Arc<Loaded>>,
    shadowed: Vec<(String, PathBuf)>,
}

impl std::fmt::Debug for PluginSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSet")
            .field("files", &self.files())
            .finish()
    }
}

/// Whether `path` is named like a plugin library: `libjobx_plugin_*.so`.
fn is_plugin_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("libjobx_plugin_") && n.ends_with(".so"))
}

/// Finds the table of a library, checking the ABI version before anything else.
fn entry_table(lib: &'static Library, file: &Path) -> Result<&'static PluginTable, String> {
    // SAFETY: by the ABI contract this symbol has type `EntryFn`.
    match unsafe { lib.get::<EntryFn>(abi::SYMBOL) } {
        Ok(entry) => {
            // SAFETY: calling the entry point is the ABI's first step; it
            // returns a pointer to a static table or null.
            let table = unsafe { entry() };
            if table.is_null() {
                return Err(format!(
                    "{}: plugin entry point returned null",
                    file.display()
                ));
            }
            // Read the version field alone first: it is the one field whose
            // place is the same in every ABI version.
            // SAFETY: the table starts with a u32 in every ABI version.
            let version = unsafe { table.cast::<u32>().read() };
            if version != abi::ABI_VERSION {
                return Err(mismatch(file, version));
            }
            // SAFETY: same version, so the layout is `PluginTable`; the
            // library is never unloaded.
            Ok(unsafe { &*table })
        }
        Err(_) => {
            for version in (0..=64).filter(|v| *v != abi::ABI_VERSION) {
                let name = format!("{}\0", abi::symbol_for(version));
                // Only the presence of the symbol is checked; it is not called.
                // SAFETY: looking a symbol up has no effect.
                if unsafe { lib.get::<*const c_void>(name.as_bytes()) }.is_ok() {
                    return Err(mismatch(file, version));
                }
            }
            Err(format!(
                "{}: not a jobx plugin (no {} symbol)",
                file.display(),
                abi::symbol_for(abi::ABI_VERSION)
            ))
        }
    }
}

/// The optional hooks a library exports beside its table.
#[derive(Default)]
struct Hooks {
    prepare: Option<PrepareFn>,
}

/// The library's extension table, or null when it exports none (a plugin
/// built before the table existed, or one that has no optional hooks).
fn extension_table(lib: &'static Library) -> *const Extensions {
    // SAFETY: by the ABI contract this optional symbol has type `ExtensionsFn`.
    match unsafe { lib.get::<ExtensionsFn>(abi::EXTENSIONS_SYMBOL) } {
        // SAFETY: it returns a pointer to a static table or null.
        Ok(ext) => unsafe { ext() },
        Err(_) => std::ptr::null(),
    }
}

fn mismatch(file: &Path, found: u32) -> String {
    format!(
        "{}: plugin built for ABI version {found}, but this jobxd supports ABI version {}; \
         rebuild the plugin against a matching jobx-plugin-api",
        file.display(),
        abi::ABI_VERSION
    )
}

impl PluginSet {
    /// An empty set.
    pub fn empty() -> PluginSet {
        PluginSet {
            plugins: BTreeMap::new(),
            shadowed: Vec::new(),
        }
    }

    /// Loads every `libjobx_plugin_*.so` in `dirs` (in order, files sorted by
    /// name; the first library of a type wins; missing dirs are skipped).
    /// `configs` holds the `[plugins.<type>]` tables as JSON objects keyed by
    /// type; a type without one gets `{}`. The ABI version is checked first;
    /// any library that fails to load, has another ABI version or fails to
    /// initialize makes the whole load fail with a message naming the file.
    /// Libraries are never unloaded.
    pub fn load(
        dirs: &[PathBuf],
        configs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<PluginSet, String> {
        let mut set = PluginSet::empty();
        for dir in dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(format!(
                        "cannot read plugin directory {}: {e}",
                        dir.display()
                    ))
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| is_plugin_file(p))
                .collect();
            files.sort();
            for file in files {
                set.load_file(&file, configs)?;
            }
        }
        Ok(set)
    }

    fn load_file(
        &mut self,
        file: &Path,
        configs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        // SAFETY: loading runs the library's initializers; plugin files are
        // trusted code chosen by the operator.
        let lib = unsafe { Library::new(file) }
            .map_err(|e| format!("{}: cannot load plugin: {e}", file.display()))?;
        // Never unloaded: plugin threads may outlive any handle to it.
        let lib: &'static Library = Box::leak(Box::new(lib));
        let table = entry_table(lib, file)?;
        let hooks = Hooks {
            // SAFETY: the library is never unloaded and its extension table,
            // if any, is static and starts with its size.
            prepare: unsafe { Extensions::prepare_hook(extension_table(lib)) },
        };
        self.add_with_hooks(table, hooks, file.to_path_buf(), configs)
    }

    /// Initializes a plugin from its table and adds it (unless its type is
    /// already present); it has no optional hooks.
    #[cfg(test)]
    fn add_table(
        &mut self,
        table: &'static PluginTable,
        file: PathBuf,
        configs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        self.add_with_hooks(table, Hooks::default(), file, configs)
    }

    /// Initializes a plugin from its table and adds it, with the optional
    /// hooks found beside it (unless its type is already present).
    fn add_with_hooks(
        &mut self,
        table: &'static PluginTable,
        hooks: Hooks,
        file: PathBuf,
        configs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        if table.abi_version != abi::ABI_VERSION {
            return Err(mismatch(&file, table.abi_version));
        }
        let plugin_type = if table.plugin_type.is_null() {
            String::new()
        } else {
            // SAFETY: the table points at its type name for its whole life.
            let bytes =
                unsafe { std::slice::from_raw_parts(table.plugin_type, table.plugin_type_len) };
            String::from_utf8_lossy(bytes).into_owned()
        };
        if plugin_type.is_empty()
            || !plugin_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "{}: invalid plugin type name {plugin_type:?}",
                file.display()
            ));
        }
        if self.plugins.contains_key(&plugin_type) {
            self.shadowed.push((plugin_type, file));
            return Ok(());
        }
        let config = configs
            .get(&plugin_type)
            .cloned()
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
        let config = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut err = RawBuf::empty();
        // SAFETY: the buffers are valid for the call; `instance` and `err`
        // are writable.
        let rc = unsafe { (table.init)(config.as_ptr(), config.len(), &mut instance, &mut err) };
        let mut loaded = Loaded {
            plugin_type: plugin_type.clone(),
            file,
            table,
            prepare: hooks.prepare,
            instance: 0,
        };
        if rc != abi::OK || instance.is_null() {
            let msg = loaded
                .take_error(err)
                .unwrap_or_else(|| "initialization failed".to_string());
            return Err(format!(
                "{}: plugin {plugin_type}: {msg}",
                loaded.file.display()
            ));
        }
        loaded.instance = instance.addr();
        self.plugins.insert(plugin_type, Arc::new(loaded));
        Ok(())
    }

    /// The loaded plugin types, sorted.
    pub fn types(&self) -> Vec<String> {
        self.plugins.keys().cloned().collect()
    }

    /// Each loaded type with the file it came from.
    pub fn files(&self) -> Vec<(String, PathBuf)> {
        self.plugins
            .values()
            .map(|p| (p.plugin_type.clone(), p.file.clone()))
            .collect()
    }

    /// Libraries skipped because an earlier one had the same type.
    pub fn shadowed(&self) -> Vec<(String, PathBuf)> {
        self.shadowed.clone()
    }

    /// Whether a plugin of this type is loaded.
    pub fn has(&self, plugin_type: &str) -> bool {
        self.plugins.contains_key(plugin_type)
    }

    /// Starts one run of `req` with the plugin `plugin_type`.
    ///
    /// `Err` only when nothing was handed to a plugin (unknown type, request
    /// not serializable); `sink` is then never called. After `Ok`, `sink`
    /// receives output lines and exactly one `done`, possibly before `start`
    /// returns and from any thread. The host enforces "exactly once" even if
    /// the plugin misbehaves: a refused or panicking `start` becomes a `done`
    /// with the error, a duplicate `done` is ignored, and a result that is
    /// not valid JSON becomes a `done` with an error. Lines racing with `done`
    /// on another plugin thread may still arrive; ignore lines after `done`.
    pub fn start(
        &self,
        plugin_type: &str,
        req: &StepRequest,
        sink: Arc<dyn RunSink>,
    ) -> Result<RunHandle, String> {
        let plugin = self
            .plugins
            .get(plugin_type)
            .ok_or_else(|| format!("no plugin of type {plugin_type:?} is loaded"))?
            .clone();
        let json =
            serde_json::to_vec(req).map_err(|e| format!("cannot encode step request: {e}"))?;
        let entry = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        lock(&RUNS).insert(
            entry,
            Arc::new(RunEntry {
                sink,
                plugin_type: plugin.plugin_type.clone(),
            }),
        );
        let mut run_id = 0u64;
        let mut err = RawBuf::empty();
        // SAFETY: the buffers are valid for the call, the callbacks are
        // static, and `ctx` is only an id.
        let rc = unsafe {
            (plugin.table.start)(
                plugin.instance(),
                json.as_ptr(),
                json.len(),
                &HOST_CALLBACKS,
                std::ptr::without_provenance_mut(entry as usize),
                &mut run_id,
                &mut err,
            )
        };
        if rc != abi::OK {
            let msg = plugin
                .take_error(err)
                .unwrap_or_else(|| format!("plugin {plugin_type} refused the step"));
            finish_run(entry, StepResult::failed(msg));
        }
        Ok(RunHandle {
            plugin,
            run_id,
            entry,
        })
    }

    /// Whether the plugin `plugin_type` is loaded and has the optional
    /// "prepare these nodes" hook.
    pub fn can_prepare(&self, plugin_type: &str) -> bool {
        self.plugins
            .get(plugin_type)
            .is_some_and(|p| p.prepare.is_some())
    }

    /// Asks the plugin `req.plugin` to get ready for the nodes of `req`
    /// ([`Executor::prepare`](crate::Executor::prepare)). Returns at once
    /// (the plugin works on its own threads). `Ok` when the plugin accepted
    /// the request or has no such hook (then nothing happens: plugins
    /// without it work as they always did); `Err` with the plugin's message
    /// when it refused, or when no such plugin is loaded. Advisory: callers
    /// only log the error.
    pub fn prepare(&self, req: &PrepareRequest) -> Result<(), String> {
        let plugin = self
            .plugins
            .get(&req.plugin)
            .ok_or_else(|| format!("no plugin of type {:?} is loaded", req.plugin))?;
        let Some(prepare) = plugin.prepare else {
            return Ok(());
        };
        let json =
            serde_json::to_vec(req).map_err(|e| format!("cannot encode prepare request: {e}"))?;
        let mut err = RawBuf::empty();
        // SAFETY: the buffers are valid for the call and `err` is writable;
        // the instance lives for the life of the process.
        let rc = unsafe { prepare(plugin.instance(), json.as_ptr(), json.len(), &mut err) };
        if rc == abi::OK {
            return Ok(());
        }
        Err(plugin
            .take_error(err)
            .unwrap_or_else(|| format!("plugin {} refused to prepare", req.plugin)))
    }

    /// Hands an HTTP request to the plugin `plugin_type`; `reply` is called
    /// exactly once (from any thread, maybe before this returns) unless the
    /// plugin never answers. A plugin without HTTP support answers 404; a
    /// failing plugin answers 500 with the error. `Err` (and no reply) only
    /// when no such plugin is loaded.
    pub fn http(
        &self,
        plugin_type: &str,
        req: HttpRequest,
        reply: Box<dyn FnOnce(HttpResponse) + Send>,
    ) -> Result<(), String> {
        let plugin = self
            .plugins
            .get(plugin_type)
            .ok_or_else(|| format!("no plugin of type {plugin_type:?} is loaded"))?;
        let Some(http) = plugin.table.http else {
            reply(HttpResponse::not_found());
            return Ok(());
        };
        let json = match serde_json::to_vec(&req) {
            Ok(json) => json,
            Err(e) => {
                reply(HttpResponse::text(
                    500,
                    format!("cannot encode request: {e}"),
                ));
                return Ok(());
            }
        };
        let entry = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        lock(&REPLIES).insert(entry, (plugin.plugin_type.clone(), reply));
        let mut err = RawBuf::empty();
        // SAFETY: as in `start`.
        let rc = unsafe {
            http(
                plugin.instance(),
                json.as_ptr(),
                json.len(),
                host_respond,
                std::ptr::without_provenance_mut(entry as usize),
                &mut err,
            )
        };
        if rc != abi::OK {
            let msg = plugin
                .take_error(err)
                .unwrap_or_else(|| "plugin error".to_string());
            send_reply(entry, HttpResponse::text(500, msg));
        }
        Ok(())
    }
}

/// A started run. `Send + Sync + Clone`.
#[derive(Clone)]
pub struct RunHandle {
    plugin: Arc<Loaded>,
    run_id: u64,
    entry: u64,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("plugin", &self.plugin.plugin_type)
            .field("run_id", &self.run_id)
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl RunHandle {
    /// Asks the plugin to stop the run; its `done` still follows (usually
    /// `cancelled`). A no-op once the run has ended.
    pub fn cancel(&self) {
        if self.is_finished() {
            return;
        }
        // SAFETY: the instance is alive for the life of the process.
        unsafe { (self.plugin.table.cancel)(self.plugin.instance(), self.run_id) }
    }

    /// Whether `done` has been delivered.
    pub fn is_finished(&self) -> bool {
        !lock(&RUNS).contains_key(&self.entry)
    }

    /// The plugin's id for the run.
    pub fn run_id(&self) -> u64 {
        self.run_id
    }
}

struct RunEntry {
    sink: Arc<dyn RunSink>,
    plugin_type: String,
}

type Reply = (String, Box<dyn FnOnce(HttpResponse) + Send>);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static RUNS: Mutex<BTreeMap<u64, Arc<RunEntry>>> = Mutex::new(BTreeMap::new());
static REPLIES: Mutex<BTreeMap<u64, Reply>> = Mutex::new(BTreeMap::new());

static HOST_CALLBACKS: HostCallbacks = HostCallbacks {
    output: host_output,
    done: host_done,
};

/// Locks a table; the tables stay consistent even if a holder panicked
/// (no user code runs under these locks).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Delivers the end of a run once; later calls for the same id do nothing.
fn finish_run(entry: u64, result: StepResult) {
    let run = lock(&RUNS).remove(&entry);
    if let Some(run) = run {
        let _ = catch_unwind(AssertUnwindSafe(|| run.sink.done(result)));
    }
}

fn send_reply(entry: u64, resp: HttpResponse) {
    let reply = lock(&REPLIES).remove(&entry);
    if let Some((_, reply)) = reply {
        let _ = catch_unwind(AssertUnwindSafe(|| reply(resp)));
    }
}

/// # Safety
/// `data` must be null or valid for `len` bytes during the call.
unsafe fn bytes<'a>(data: *const u8, len: usize) -> &'a [u8] {
    if data.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(data, len) }
    }
}

unsafe extern "C" fn host_output(ctx: *mut c_void, stream: u32, data: *const u8, len: usize) {
    let entry = ctx.addr() as u64;
    let run = lock(&RUNS).get(&entry).cloned();
    if let Some(run) = run {
        // SAFETY: the plugin passes a buffer valid for the call.
        let text = unsafe { bytes(data, len) };
        let _ = catch_unwind(AssertUnwindSafe(|| {
            run.sink.line(Stream::from_raw(stream), text)
        }));
    }
}

unsafe extern "C" fn host_done(ctx: *mut c_void, data: *const u8, len: usize) {
    let entry = ctx.addr() as u64;
    let plugin_type = match lock(&RUNS).get(&entry) {
        Some(run) => run.plugin_type.clone(),
        None => return,
    };
    // SAFETY: the plugin passes a buffer valid for the call.
    let raw = unsafe { bytes(data, len) };
    let result = serde_json::from_slice::<StepResult>(raw).unwrap_or_else(|e| {
        StepResult::failed(format!(
            "plugin {plugin_type} reported an unreadable result ({e})"
        ))
    });
    finish_run(entry, result);
}

unsafe extern "C" fn host_respond(ctx: *mut c_void, data: *const u8, len: usize) {
    let entry = ctx.addr() as u64;
    let plugin_type = match lock(&REPLIES).get(&entry) {
        Some((plugin_type, _)) => plugin_type.clone(),
        None => return,
    };
    // SAFETY: the plugin passes a buffer valid for the call.
    let raw = unsafe { bytes(data, len) };
    let resp = serde_json::from_slice::<HttpResponse>(raw).unwrap_or_else(|e| {
        HttpResponse::text(
            500,
            format!("plugin {plugin_type} returned an unreadable response ({e})"),
        )
    });
    send_reply(entry, resp);
}

#[cfg(test)]
mod tests;
