//! The host and the plugin glue together, in-process, through the same C table
//! a library exports.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::plugin::{table, LIVE_BUFFERS};
use crate::{Executor, Reporter, Responder, RunId};

#[derive(Default)]
struct Collect {
    lines: Mutex<Vec<(Stream, Vec<u8>)>>,
    done: Mutex<Vec<StepResult>>,
    cv: Condvar,
}

impl RunSink for Collect {
    fn line(&self, stream: Stream, text: &[u8]) {
        lock(&self.lines).push((stream, text.to_vec()));
    }
    fn done(&self, result: StepResult) {
        lock(&self.done).push(result);
        self.cv.notify_all();
    }
}

impl Collect {
    fn wait_done(&self) -> StepResult {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut done = lock(&self.done);
        while done.is_empty() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("no done within 10 s");
            done = self.cv.wait_timeout(done, left).unwrap().0;
        }
        done[0].clone()
    }
    fn dones(&self) -> usize {
        lock(&self.done).len()
    }
    fn lines(&self) -> Vec<(Stream, Vec<u8>)> {
        lock(&self.lines).clone()
    }
}

struct TestExec {
    waiting: Mutex<HashMap<RunId, Reporter>>,
}

impl Executor for TestExec {
    const TYPE: &'static str = "test";

    fn new(config: Value) -> Result<Self, String> {
        if config["panic"] == json!(true) {
            panic!("boom in new");
        }
        if config["fail"] == json!(true) {
            return Err("bad config".to_string());
        }
        Ok(TestExec {
            waiting: Mutex::new(HashMap::new()),
        })
    }

    fn start(&self, run: RunId, step: StepRequest, out: Reporter) -> Result<(), String> {
        match step.step_name.as_str() {
            "echo" => {
                out.line(Stream::Stdout, b"hello");
                out.line(Stream::Stderr, &[0xff, b'x']);
                out.info("note");
                out.done(StepResult::exited(3));
            }
            "twice" => {
                out.clone().done(StepResult::ok());
                out.line(Stream::Stdout, b"late");
                out.done(StepResult::exited(9));
            }
            "refuse" => return Err("nope".to_string()),
            "panic" => panic!("kaboom"),
            "drop" => {}
            "thread-panic" => {
                std::thread::spawn(move || {
                    let _out = out;
                    panic!("plugin thread died");
                });
            }
            "wait" => {
                lock(&self.waiting).insert(run, out);
            }
            other => return Err(format!("unknown test step {other}")),
        }
        Ok(())
    }

    fn cancel(&self, run: RunId) {
        if let Some(out) = lock(&self.waiting).remove(&run) {
            std::thread::spawn(move || out.done(StepResult::failed("cancelled")));
        }
    }

    fn http(&self, req: HttpRequest, respond: Responder) {
        match req.path.as_str() {
            "/echo" => respond.send(HttpResponse {
                status: 201,
                headers: vec![("x-user".into(), req.user.unwrap_or_default())],
                body: req.body,
            }),
            "/later" => {
                std::thread::spawn(move || respond.send(HttpResponse::text(200, "later")));
            }
            "/panic" => panic!("http boom"),
            "/drop" => drop(respond),
            _ => respond.send(HttpResponse::not_found()),
        }
    }
}

static TABLE: PluginTable = table::<TestExec>();

fn test_set(config: Value) -> Result<PluginSet, String> {
    let mut configs = serde_json::Map::new();
    configs.insert("test".to_string(), config);
    let mut set = PluginSet::empty();
    set.add_table(&TABLE, PathBuf::from("in-process"), &configs)?;
    Ok(set)
}

fn run(set: &PluginSet, name: &str) -> (Arc<Collect>, RunHandle) {
    let sink = Arc::new(Collect::default());
    let req = StepRequest {
        step_name: name.to_string(),
        ..StepRequest::default()
    };
    let handle = set.start("test", &req, sink.clone()).expect("start");
    (sink, handle)
}

#[test]
fn lines_and_result_cross_the_abi() {
    let set = test_set(json!({})).unwrap();
    assert_eq!(set.types(), vec!["test".to_string()]);
    let (sink, handle) = run(&set, "echo");
    assert_eq!(sink.wait_done(), StepResult::exited(3));
    assert_eq!(
        sink.lines(),
        vec![
            (Stream::Stdout, b"hello".to_vec()),
            (Stream::Stderr, vec![0xff, b'x']),
            (Stream::Info, b"note".to_vec()),
        ]
    );
    assert!(handle.is_finished());
    handle.cancel(); // harmless after done
    assert_eq!(sink.dones(), 1);
}

#[test]
fn duplicate_done_is_ignored_and_late_lines_dropped() {
    let set = test_set(json!({})).unwrap();
    let (sink, _h) = run(&set, "twice");
    assert_eq!(sink.wait_done(), StepResult::ok());
    assert_eq!(sink.dones(), 1);
    assert!(sink.lines().is_empty());
}

#[test]
fn refusal_becomes_done_and_frees_the_error_buffer() {
    let set = test_set(json!({})).unwrap();
    let before = LIVE_BUFFERS.with(|c| c.get());
    let (sink, handle) = run(&set, "refuse");
    assert_eq!(sink.wait_done(), StepResult::failed("nope"));
    assert_eq!(LIVE_BUFFERS.with(|c| c.get()), before);
    assert!(handle.is_finished());
    assert_eq!(sink.dones(), 1);
}

#[test]
fn panic_in_start_becomes_done_with_error() {
    let set = test_set(json!({})).unwrap();
    let before = LIVE_BUFFERS.with(|c| c.get());
    let (sink, _h) = run(&set, "panic");
    let result = sink.wait_done();
    assert_eq!(result.error.as_deref(), Some("plugin panicked: kaboom"));
    assert_eq!(LIVE_BUFFERS.with(|c| c.get()), before);
    assert_eq!(sink.dones(), 1);
}

#[test]
fn dropped_reporter_still_ends_the_run() {
    let set = test_set(json!({})).unwrap();
    for name in ["drop", "thread-panic"] {
        let (sink, _h) = run(&set, name);
        let result = sink.wait_done();
        assert!(
            result
                .error
                .as_deref()
                .unwrap_or("")
                .contains("without reporting"),
            "{name}: {result:?}"
        );
    }
}

#[test]
fn cancel_reaches_the_executor() {
    let set = test_set(json!({})).unwrap();
    let (sink, handle) = run(&set, "wait");
    assert!(!handle.is_finished());
    let clone = handle.clone();
    std::thread::spawn(move || clone.cancel());
    assert_eq!(sink.wait_done(), StepResult::failed("cancelled"));
    handle.cancel();
    assert_eq!(sink.dones(), 1);
}

#[test]
fn unknown_type_is_an_error_without_done() {
    let set = test_set(json!({})).unwrap();
    let sink = Arc::new(Collect::default());
    let err = set
        .start("nope", &StepRequest::default(), sink.clone())
        .unwrap_err();
    assert!(err.contains("nope"), "{err}");
    assert_eq!(sink.dones(), 0);
}

#[test]
fn init_errors_and_panics_name_the_plugin() {
    let before = LIVE_BUFFERS.with(|c| c.get());
    let err = test_set(json!({"fail": true})).unwrap_err();
    assert_eq!(err, "in-process: plugin test: bad config");
    let err = test_set(json!({"panic": true})).unwrap_err();
    assert_eq!(err, "in-process: plugin test: plugin panicked: boom in new");
    assert_eq!(LIVE_BUFFERS.with(|c| c.get()), before);
}

#[test]
fn first_plugin_of_a_type_wins() {
    let mut set = test_set(json!({})).unwrap();
    set.add_table(&TABLE, PathBuf::from("second"), &serde_json::Map::new())
        .unwrap();
    assert_eq!(
        set.files(),
        vec![("test".into(), PathBuf::from("in-process"))]
    );
    assert_eq!(
        set.shadowed(),
        vec![("test".into(), PathBuf::from("second"))]
    );
}

fn http(set: &PluginSet, path: &str) -> HttpResponse {
    let (tx, rx) = std::sync::mpsc::channel();
    let req = HttpRequest {
        method: "POST".into(),
        path: path.into(),
        body: vec![0, 159, 146, 150],
        user: Some("alice".into()),
        ..HttpRequest::default()
    };
    set.http(
        "test",
        req,
        Box::new(move |resp| {
            let _ = tx.send(resp);
        }),
    )
    .unwrap();
    let resp = rx.recv_timeout(Duration::from_secs(10)).expect("reply");
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "second reply"
    );
    resp
}

#[test]
fn http_is_answered_exactly_once() {
    let set = test_set(json!({})).unwrap();
    let resp = http(&set, "/echo");
    assert_eq!(resp.status, 201);
    assert_eq!(resp.body, vec![0, 159, 146, 150]);
    assert_eq!(resp.headers, vec![("x-user".into(), "alice".into())]);
    assert_eq!(http(&set, "/later").body, b"later");
    assert_eq!(http(&set, "/other").status, 404);
    let resp = http(&set, "/panic");
    assert_eq!(resp.status, 500);
    assert!(String::from_utf8_lossy(&resp.body).contains("panicked"));
    assert_eq!(http(&set, "/drop").status, 500);
}

// A plugin written against the raw ABI that breaks the rules: garbage
// result, a second done, output after done.
unsafe extern "C" fn raw_init(
    _: *const u8,
    _: usize,
    instance: *mut *mut c_void,
    _: *mut RawBuf,
) -> i32 {
    // SAFETY: the host passes a writable pointer.
    unsafe { instance.write(std::ptr::without_provenance_mut(1)) };
    abi::OK
}

unsafe extern "C" fn raw_start(
    _: *mut c_void,
    _: *const u8,
    _: usize,
    host: *const HostCallbacks,
    ctx: *mut c_void,
    _: *mut u64,
    _: *mut RawBuf,
) -> i32 {
    // SAFETY: the host passes valid callbacks; the buffers are ours.
    unsafe {
        let host = *host;
        (host.output)(ctx, 0, b"before".as_ptr(), 6);
        (host.done)(ctx, b"not json".as_ptr(), 8);
        (host.done)(ctx, b"{}".as_ptr(), 2);
        (host.output)(ctx, 0, b"after".as_ptr(), 5);
    }
    abi::OK
}

unsafe extern "C" fn raw_cancel(_: *mut c_void, _: u64) {}

unsafe extern "C" fn raw_free(_: *mut u8, _: usize) {}

const fn raw_table(abi_version: u32) -> PluginTable {
    PluginTable {
        abi_version,
        plugin_type: b"raw".as_ptr(),
        plugin_type_len: 3,
        init: raw_init,
        start: raw_start,
        cancel: raw_cancel,
        http: None,
        free: raw_free,
    }
}

static RAW: PluginTable = raw_table(abi::ABI_VERSION);

#[test]
fn host_guards_against_a_misbehaving_plugin() {
    let mut set = PluginSet::empty();
    set.add_table(&RAW, PathBuf::from("raw.so"), &serde_json::Map::new())
        .unwrap();
    let sink = Arc::new(Collect::default());
    let handle = set
        .start("raw", &StepRequest::default(), sink.clone())
        .unwrap();
    let result = sink.wait_done();
    assert!(result.exit_code.is_none());
    assert!(
        result
            .error
            .as_deref()
            .unwrap_or("")
            .starts_with("plugin raw reported an unreadable result"),
        "{result:?}"
    );
    assert_eq!(sink.dones(), 1);
    assert_eq!(sink.lines(), vec![(Stream::Stdout, b"before".to_vec())]);
    handle.cancel();

    let (tx, rx) = std::sync::mpsc::channel();
    set.http(
        "raw",
        HttpRequest::default(),
        Box::new(move |r| {
            let _ = tx.send(r.status);
        }),
    )
    .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 404);
}

#[test]
fn wrong_table_version_is_refused() {
    static OLD: PluginTable = raw_table(7);
    let err = PluginSet::empty()
        .add_table(
            &OLD,
            PathBuf::from("/x/libjobx_plugin_old.so"),
            &serde_json::Map::new(),
        )
        .unwrap_err();
    assert!(err.contains("/x/libjobx_plugin_old.so"), "{err}");
    assert!(
        err.contains("ABI version 7") && err.contains("ABI version 1"),
        "{err}"
    );
}

/// Records what `prepare` was asked; refuses a request for task "refuse".
struct Preparing;

static PREPARED: Mutex<Vec<crate::PrepareRequest>> = Mutex::new(Vec::new());

impl Executor for Preparing {
    const TYPE: &'static str = "preparing";

    fn new(_config: Value) -> Result<Self, String> {
        Ok(Preparing)
    }

    fn start(&self, _run: RunId, _step: StepRequest, out: Reporter) -> Result<(), String> {
        out.done(StepResult::ok());
        Ok(())
    }

    fn cancel(&self, _run: RunId) {}

    fn prepare(&self, req: crate::PrepareRequest) -> Result<(), String> {
        if req.task == "refuse" {
            return Err("cannot prepare that".into());
        }
        lock(&PREPARED).push(req);
        Ok(())
    }
}

static PREPARING: PluginTable = table::<Preparing>();
static PREPARING_EXT: abi::Extensions = crate::plugin::extensions::<Preparing>();

fn prepare_request(plugin: &str, task: &str) -> crate::PrepareRequest {
    crate::PrepareRequest {
        task: task.into(),
        plugin: plugin.into(),
        batch: 2,
        batches: 3,
        nodes: vec![crate::Node {
            name: "web-2".into(),
            host: "10.0.0.2".into(),
            port: Some(2222),
            ..crate::Node::default()
        }],
        user: Some("deploy".into()),
        data_dir: "/var/lib/jobx".into(),
    }
}

#[test]
fn prepare_reaches_the_executor_through_the_extension_table() {
    let mut set = PluginSet::empty();
    let hooks = Hooks {
        // SAFETY: a static table built by the SDK.
        prepare: unsafe { abi::Extensions::prepare_hook(&PREPARING_EXT) },
    };
    set.add_with_hooks(
        &PREPARING,
        hooks,
        PathBuf::from("p.so"),
        &serde_json::Map::new(),
    )
    .unwrap();
    assert!(set.can_prepare("preparing"));
    let req = prepare_request("preparing", "t1");
    set.prepare(&req).unwrap();
    assert_eq!(*lock(&PREPARED), vec![req]);
    let err = set
        .prepare(&prepare_request("preparing", "refuse"))
        .unwrap_err();
    assert_eq!(err, "cannot prepare that");
    assert_eq!(
        LIVE_BUFFERS.with(|c| c.get()),
        0,
        "the error buffer was freed"
    );
    assert!(set.prepare(&prepare_request("nothing", "t1")).is_err());
}

#[test]
fn a_plugin_without_the_hook_prepares_nothing_and_still_runs() {
    // The raw table is what a plugin built before the hook exports: no
    // extension table at all.
    let mut set = PluginSet::empty();
    set.add_table(&RAW, PathBuf::from("raw.so"), &serde_json::Map::new())
        .unwrap();
    assert!(!set.can_prepare("raw"));
    set.prepare(&prepare_request("raw", "t1")).unwrap();
    let sink = Arc::new(Collect::default());
    set.start("raw", &StepRequest::default(), sink.clone())
        .unwrap();
    sink.wait_done();
    assert_eq!(sink.lines(), vec![(Stream::Stdout, b"before".to_vec())]);
}

#[test]
fn an_extension_table_too_short_for_prepare_has_no_hook() {
    // A table from a build whose extension table ended before `prepare`.
    static SHORT: abi::Extensions = abi::Extensions {
        size: std::mem::size_of::<usize>(),
        prepare: Some(never_called),
    };
    unsafe extern "C" fn never_called(
        _: *mut c_void,
        _: *const u8,
        _: usize,
        _: *mut RawBuf,
    ) -> i32 {
        abi::ERR
    }
    // SAFETY: a static table.
    assert!(unsafe { abi::Extensions::prepare_hook(&SHORT) }.is_none());
    // SAFETY: null is allowed.
    assert!(unsafe { abi::Extensions::prepare_hook(std::ptr::null()) }.is_none());
    // SAFETY: a static table built by the SDK.
    assert!(unsafe { abi::Extensions::prepare_hook(&PREPARING_EXT) }.is_some());
}
