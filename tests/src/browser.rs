//! A small W3C WebDriver client: starts Debian's `chromedriver` on a free
//! port with a headless Chromium session in a fresh profile, and drives it
//! over HTTP. The tests use it to look at the console the way a person does.

use crate::daemon::TempDir;
use serde_json::{json, Value};
use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key under which W3C WebDriver answers an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long `click`, `type_into` and friends wait for their element.
const FIND: Duration = Duration::from_secs(10);

/// An error answered by the WebDriver server (`error` is the W3C code, e.g.
/// "no such element", "stale element reference", "unexpected alert open").
#[derive(Debug, Clone)]
pub struct WdError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = self.message.lines().next().unwrap_or("");
        write!(f, "{}: {}", self.error, first)
    }
}

pub type WdResult<T> = Result<T, WdError>;

/// How to find an element.
#[derive(Debug, Clone)]
pub enum By {
    Css(String),
    XPath(String),
}

impl By {
    pub fn css(s: &str) -> By {
        By::Css(s.to_string())
    }

    pub fn xpath(s: &str) -> By {
        By::XPath(s.to_string())
    }

    /// A button (or submit input, or element with role=button) whose visible
    /// text is exactly `text` (whitespace normalised).
    pub fn button(text: &str) -> By {
        let t = xpath_literal(text);
        By::XPath(format!(
            "//button[normalize-space(.)={t}] | //input[(@type='submit' or @type='button') and @value={t}] | //*[@role='button' and normalize-space(.)={t}]"
        ))
    }

    /// A link whose visible text is exactly `text`.
    pub fn link(text: &str) -> By {
        By::XPath(format!("//a[normalize-space(.)={}]", xpath_literal(text)))
    }

    /// The innermost elements whose whole text is exactly `text`.
    pub fn text(text: &str) -> By {
        let t = xpath_literal(text);
        By::XPath(format!(
            "//body//*[normalize-space(.)={t} and not(.//*[normalize-space(.)={t}])]"
        ))
    }

    fn wire(&self) -> Value {
        match self {
            By::Css(s) => json!({"using": "css selector", "value": s}),
            By::XPath(s) => json!({"using": "xpath", "value": s}),
        }
    }
}

impl std::fmt::Display for By {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            By::Css(s) => write!(f, "css `{s}`"),
            By::XPath(s) => write!(f, "xpath `{s}`"),
        }
    }
}

/// `s` as an XPath 1.0 string literal (which has no escapes: a string with
/// both quote kinds is built with concat()).
pub fn xpath_literal(s: &str) -> String {
    if !s.contains('\'') {
        return format!("'{s}'");
    }
    if !s.contains('"') {
        return format!("\"{s}\"");
    }
    let parts: Vec<String> = s.split('\'').map(|p| format!("'{p}'")).collect();
    format!("concat({})", parts.join(", \"'\", "))
}

/// Where screenshots go: `target/screenshots/` next to the test binaries.
pub fn screenshot_dir() -> PathBuf {
    let bin = crate::daemon::bin_dir();
    bin.parent().unwrap_or(&bin).join("screenshots")
}

/// A headless Chromium driven through its own chromedriver. Dropping it ends
/// the session and kills the chromedriver's process group (chromedriver and
/// the Chromium it started, nothing else).
pub struct Browser {
    driver: Option<Child>,
    endpoint: String,
    session: String,
    agent: ureq::Agent,
    name: String,
    shots: Cell<usize>,
    _profile: TempDir,
}

fn require(path: &str, package: &str) {
    if !Path::new(path).exists() {
        panic!(
            "{path} is missing: the console tests need Debian's {package}; run tests/run.sh, which installs chromium and chromium-driver"
        );
    }
}

/// Starts chromedriver on a port of its choosing and answers it with the
/// port, or why not (the process is then gone).
fn start_chromedriver() -> Result<(Child, String), String> {
    let mut child = Command::new(CHROMEDRIVER)
        .arg("--port=0")
        .arg("--log-level=WARNING")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group: on drop the group is exactly
        // chromedriver and the browser processes it started.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {CHROMEDRIVER}: {e} (run tests/run.sh)"));
    let Some(out) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("no stdout".into());
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        // Keep reading after the port line so chromedriver never blocks
        // on a full pipe.
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                let port: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(port);
                }
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(p) if !p.is_empty() => Ok((child, p)),
        other => {
            let _ = child.kill();
            let status = child.wait();
            Err(format!(
                "no port line within 20 s ({other:?}, exit {status:?})"
            ))
        }
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. `name` prefixes
    /// this browser's screenshots (usually the test's name).
    pub fn start(name: &str) -> Browser {
        require(CHROMIUM, "chromium");
        require(CHROMEDRIVER, "chromium-driver");
        let name = sanitize(name);
        // Screenshots of an earlier run of the same test would mislead.
        if let Ok(entries) = std::fs::read_dir(screenshot_dir()) {
            let prefix = format!("{name}-");
            for e in entries.flatten() {
                let f = e.file_name().to_string_lossy().to_string();
                if f.starts_with(&prefix) && f.ends_with(".png") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let profile = TempDir::new("chromium");
        // A chromedriver that says nothing within the limit (seen once on a
        // loaded 2-core machine) is replaced, up to three times.
        let mut attempts = Vec::new();
        let (child, port) = loop {
            match start_chromedriver() {
                Ok(started) => break started,
                Err(why) if attempts.len() < 2 => {
                    eprintln!("{CHROMEDRIVER}: {why}; starting another");
                    attempts.push(why);
                }
                Err(why) => {
                    attempts.push(why);
                    panic!(
                        "{CHROMEDRIVER} did not report its port: {}",
                        attempts.join("; ")
                    );
                }
            }
        };
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(120))
            .build();
        let mut b = Browser {
            driver: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent,
            name,
            shots: Cell::new(0),
            _profile: profile,
        };
        let ready = crate::poll(Duration::from_secs(20), || {
            let v = b.raw("GET", "/status", None).ok()?;
            (v["ready"] == true).then_some(())
        });
        if ready.is_none() {
            panic!("chromedriver on {} did not become ready", b.endpoint);
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // A dialog stays open so that `alert_text` can see it.
            "unhandledPromptBehavior": "ignore",
            "pageLoadStrategy": "normal",
            "timeouts": {"implicit": 0, "pageLoad": 30000, "script": 30000},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", b._profile.path().join("profile").display()),
                ],
            },
        }}});
        let v = b
            .raw("POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("start a Chromium session: {e}"));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_string();
        b
    }

    /// One WebDriver call; answers the `value` of the reply.
    fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> WdResult<Value> {
        let url = format!("{}{}", self.endpoint, path);
        let req = self.agent.request(method, &url);
        let resp = match body {
            Some(b) => req.send_json(b.clone()),
            None if method == "POST" => req.send_json(json!({})),
            None => req.call(),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => {
                return Err(WdError {
                    error: "transport".into(),
                    message: format!("{method} {path}: {e}"),
                })
            }
        };
        let text = resp.into_string().map_err(|e| WdError {
            error: "transport".into(),
            message: format!("{method} {path}: reading the reply: {e}"),
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| WdError {
            error: "transport".into(),
            message: format!("{method} {path}: not JSON ({e}): {text}"),
        })?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if let Some(err) = value.get("error").and_then(Value::as_str) {
            return Err(WdError {
                error: err.to_string(),
                message: value["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(value)
    }

    /// A call on this session.
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> WdResult<Value> {
        self.raw(
            method,
            &format!("/session/{}{}", self.session, path),
            body.as_ref(),
        )
    }

    fn must(&self, what: &str, r: WdResult<Value>) -> Value {
        r.unwrap_or_else(|e| panic!("{what}: {e}{}", self.dialog_note()))
    }

    /// " (a dialog is open: …)" when one is, so errors caused by a dialog say so.
    fn dialog_note(&self) -> String {
        match self.cmd("GET", "/alert/text", None) {
            Ok(t) => format!(" (a dialog is open: {t})"),
            Err(_) => String::new(),
        }
    }

    /// Opens `url` and waits for its load event.
    pub fn goto(&self, url: &str) {
        let r = self.cmd("POST", "/url", Some(json!({ "url": url })));
        self.must(&format!("open {url}"), r);
    }

    pub fn url(&self) -> String {
        let r = self.cmd("GET", "/url", None);
        self.must("read the URL", r)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn title(&self) -> String {
        let r = self.cmd("GET", "/title", None);
        self.must("read the title", r)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn refresh(&self) {
        let r = self.cmd("POST", "/refresh", None);
        self.must("reload", r);
    }

    pub fn try_find(&self, by: &By) -> WdResult<Element<'_>> {
        let v = self.cmd("POST", "/element", Some(by.wire()))?;
        Ok(Element {
            b: self,
            id: element_id(&v)?,
        })
    }

    /// The first element matching `by`, if there is one now.
    pub fn find(&self, by: &By) -> Option<Element<'_>> {
        self.try_find(by).ok()
    }

    /// Every element matching `by` now (none on any error).
    pub fn find_all(&self, by: &By) -> Vec<Element<'_>> {
        self.cmd("POST", "/elements", Some(by.wire()))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| element_id(v).ok())
            .map(|id| Element { b: self, id })
            .collect()
    }

    /// The elements matching `by` that a person can see.
    pub fn visible(&self, by: &By) -> Vec<Element<'_>> {
        self.find_all(by)
            .into_iter()
            .filter(|e| e.displayed().unwrap_or(false))
            .collect()
    }

    /// Waits until `cond` answers `Some` (polling every 20 ms), or panics
    /// with `what`, the URL and what the page shows, after a screenshot.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        match crate::poll(timeout, || cond(self)) {
            Some(v) => v,
            None => {
                let dialog = self.dialog_note();
                let shot = self.screenshot("timeout");
                let url = self.cmd("GET", "/url", None).unwrap_or(Value::Null);
                let text = self.body_text();
                let excerpt: String = text.chars().take(1500).collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}{dialog}\nat {url}\nscreenshot {}\npage text:\n{excerpt}",
                    shot.display()
                );
            }
        }
    }

    /// Waits for a visible element matching `by`.
    pub fn wait_visible(&self, by: &By, timeout: Duration) -> Element<'_> {
        let id = self.wait_for(&format!("a visible {by}"), timeout, |b| {
            b.visible(by).into_iter().next().map(|e| e.id)
        });
        Element { b: self, id }
    }

    /// Waits until the visible text of the first element matching `by`
    /// satisfies `ok`; answers that text.
    pub fn wait_text(
        &self,
        by: &By,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_for(&format!("{by} to show {what}"), timeout, |b| {
            let t = b.find(by)?.text().ok()?;
            ok(&t).then_some(t)
        })
    }

    /// Clicks the element matching `by` once it is visible; retries while the
    /// page re-renders under it (stale or covered element).
    pub fn click(&self, by: &By) {
        let mut last = String::new();
        let done = crate::poll(FIND, || {
            let e = self.visible(by).into_iter().next()?;
            match e.click() {
                Ok(()) => Some(()),
                Err(err) => {
                    if err.error == "element click intercepted" {
                        // WebDriver scrolls the element to the bottom edge,
                        // where a fixed panel may cover it; a person would
                        // scroll it to the middle of the window.
                        let _ = self.cmd(
                            "POST",
                            "/execute/sync",
                            Some(json!({
                                "script": "arguments[0].scrollIntoView({block: 'center', inline: 'nearest'});",
                                "args": [e.arg()],
                            })),
                        );
                    }
                    last = err.to_string();
                    None
                }
            }
        });
        if done.is_none() {
            let shot = self.screenshot("click-failed");
            panic!(
                "could not click {by} within {FIND:?}: {last}{} (screenshot {})",
                self.dialog_note(),
                shot.display()
            );
        }
    }

    /// Clears the field matching `by` and types `text` into it.
    pub fn type_into(&self, by: &By, text: &str) {
        let e = self.wait_visible(by, FIND);
        let r = e.clear();
        self.must(&format!("clear {by}"), r.map(|_| Value::Null));
        let r = e.send_keys(text);
        self.must(&format!("type into {by}"), r.map(|_| Value::Null));
    }

    /// Picks the option with visible text `text` in the `<select>` matching `css`.
    pub fn select(&self, css: &str, text: &str) {
        let by = By::XPath(format!(
            "{}//option[normalize-space(.)={}]",
            css_to_select_xpath(css),
            xpath_literal(text)
        ));
        self.click_present(&by, &format!("option {text:?} in {css}"));
    }

    /// Picks the option whose `value` is `value` in the `<select>` matching `css`.
    pub fn select_value(&self, css: &str, value: &str) {
        let by = By::XPath(format!(
            "{}//option[@value={}]",
            css_to_select_xpath(css),
            xpath_literal(value)
        ));
        self.click_present(&by, &format!("option {value:?} in {css}"));
    }

    /// Clicks the first element matching `by` (visible or not: options of a
    /// closed select), retrying while the page re-renders.
    fn click_present(&self, by: &By, what: &str) {
        let mut last = String::new();
        let done = crate::poll(FIND, || {
            let e = self.find(by)?;
            match e.click() {
                Ok(()) => Some(()),
                Err(err) => {
                    last = err.to_string();
                    None
                }
            }
        });
        if done.is_none() {
            panic!("could not pick {what}: {last}{}", self.dialog_note());
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        let r = self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        );
        self.must("run a script in the page", r)
    }

    /// Runs `script` asynchronously: it ends by calling
    /// `arguments[arguments.length - 1](result)`.
    pub fn exec_async(&self, script: &str, args: Vec<Value>) -> Value {
        let r = self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        );
        self.must("run an async script in the page", r)
    }

    /// `fetch(path, init)` from the page; answers `{status, body}`.
    pub fn fetch(&self, path: &str, init: Value) -> (u16, String) {
        let v = self.exec_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], arguments[1])
               .then(r => r.text().then(t => done({status: r.status, body: t})))
               .catch(e => done({status: 0, body: String(e)}));",
            vec![json!(path), init],
        );
        (
            v["status"].as_u64().unwrap_or(0) as u16,
            v["body"].as_str().unwrap_or("").to_string(),
        )
    }

    /// Every cookie of the current page, as WebDriver describes them
    /// (`name`, `value`, `httpOnly`, `sameSite`, …; HttpOnly ones included).
    pub fn cookies(&self) -> Vec<Value> {
        let r = self.cmd("GET", "/cookie", None);
        self.must("read cookies", r)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn cookie(&self, name: &str) -> Option<Value> {
        self.cookies().into_iter().find(|c| c["name"] == name)
    }

    /// The text of the open dialog (alert/confirm/prompt), or None when no
    /// dialog is open.
    pub fn alert_text(&self) -> Option<String> {
        match self.cmd("GET", "/alert/text", None) {
            Ok(v) => Some(v.as_str().unwrap_or("").to_string()),
            Err(e) if e.error == "no such alert" => None,
            Err(e) => panic!("ask for a dialog: {e}"),
        }
    }

    /// Panics when a dialog is open (e.g. injected script ran).
    pub fn assert_no_dialog(&self, where_: &str) {
        if let Some(t) = self.alert_text() {
            let shot = self.screenshot("dialog");
            panic!(
                "a dialog opened on {where_}: {t:?} (screenshot {})",
                shot.display()
            );
        }
    }

    pub fn accept_alert(&self) -> WdResult<Value> {
        self.cmd("POST", "/alert/accept", None)
    }

    pub fn dismiss_alert(&self) -> WdResult<Value> {
        self.cmd("POST", "/alert/dismiss", None)
    }

    /// The visible text of the whole page ("" when it cannot be read).
    pub fn body_text(&self) -> String {
        self.find(&By::css("body"))
            .and_then(|b| b.text().ok())
            .unwrap_or_default()
    }

    /// Saves the viewport as `target/screenshots/<browser>-<nn>-<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let n = self.shots.get() + 1;
        self.shots.set(n);
        let dir = screenshot_dir();
        let path = dir.join(format!("{}-{n:02}-{}.png", self.name, sanitize(name)));
        let png = self
            .cmd("GET", "/screenshot", None)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .and_then(|b64| jobx_plugin_api::base64::decode(&b64).ok());
        if let Some(png) = png {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(&path, png);
        }
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.session.is_empty() {
            self.screenshot("at-failure");
        }
        if !self.session.is_empty() {
            let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
        }
        if let Some(mut c) = self.driver.take() {
            // The group led by chromedriver: it and any browser process
            // that outlived the session.
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

/// An element of the page. Its methods answer WebDriver errors (an element
/// goes stale when the page re-renders it).
pub struct Element<'a> {
    b: &'a Browser,
    id: String,
}

impl<'a> Element<'a> {
    fn path(&self, rest: &str) -> String {
        format!("/element/{}{}", self.id, rest)
    }

    pub fn click(&self) -> WdResult<()> {
        self.b.cmd("POST", &self.path("/click"), None).map(|_| ())
    }

    pub fn clear(&self) -> WdResult<()> {
        self.b.cmd("POST", &self.path("/clear"), None).map(|_| ())
    }

    pub fn send_keys(&self, text: &str) -> WdResult<()> {
        self.b
            .cmd("POST", &self.path("/value"), Some(json!({ "text": text })))
            .map(|_| ())
    }

    /// The rendered text, as a person sees it.
    pub fn text(&self) -> WdResult<String> {
        let v = self.b.cmd("GET", &self.path("/text"), None)?;
        Ok(v.as_str().unwrap_or("").to_string())
    }

    pub fn attr(&self, name: &str) -> WdResult<Option<String>> {
        let v = self
            .b
            .cmd("GET", &self.path(&format!("/attribute/{name}")), None)?;
        Ok(v.as_str().map(String::from))
    }

    pub fn prop(&self, name: &str) -> WdResult<Value> {
        self.b
            .cmd("GET", &self.path(&format!("/property/{name}")), None)
    }

    pub fn css_value(&self, name: &str) -> WdResult<String> {
        let v = self
            .b
            .cmd("GET", &self.path(&format!("/css/{name}")), None)?;
        Ok(v.as_str().unwrap_or("").to_string())
    }

    pub fn displayed(&self) -> WdResult<bool> {
        let v = self.b.cmd("GET", &self.path("/displayed"), None)?;
        Ok(v.as_bool().unwrap_or(false))
    }

    pub fn enabled(&self) -> WdResult<bool> {
        let v = self.b.cmd("GET", &self.path("/enabled"), None)?;
        Ok(v.as_bool().unwrap_or(false))
    }

    pub fn find(&self, by: &By) -> WdResult<Element<'a>> {
        let v = self
            .b
            .cmd("POST", &self.path("/element"), Some(by.wire()))?;
        Ok(Element {
            b: self.b,
            id: element_id(&v)?,
        })
    }

    pub fn find_all(&self, by: &By) -> Vec<Element<'a>> {
        self.b
            .cmd("POST", &self.path("/elements"), Some(by.wire()))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| element_id(v).ok())
            .map(|id| Element { b: self.b, id })
            .collect()
    }

    /// This element as a script argument.
    pub fn arg(&self) -> Value {
        json!({ ELEMENT: self.id })
    }
}

fn element_id(v: &Value) -> WdResult<String> {
    v.get(ELEMENT)
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| WdError {
            error: "no such element".into(),
            message: format!("not an element reference: {v}"),
        })
}

/// `select#run-job` → an XPath for that select (tag, id and classes only,
/// the forms `select` takes).
fn css_to_select_xpath(css: &str) -> String {
    let mut tag = "*".to_string();
    let mut conds = Vec::new();
    let mut rest = css;
    let first_end = rest.find(['#', '.']).unwrap_or(rest.len());
    if first_end > 0 {
        tag = rest[..first_end].to_string();
    }
    rest = &rest[first_end..];
    while !rest.is_empty() {
        let kind = &rest[..1];
        let body = &rest[1..];
        let end = body.find(['#', '.']).unwrap_or(body.len());
        let name = &body[..end];
        match kind {
            "#" => conds.push(format!("@id={}", xpath_literal(name))),
            _ => conds.push(format!(
                "contains(concat(' ', normalize-space(@class), ' '), ' {name} ')"
            )),
        }
        rest = &body[end..];
    }
    if conds.is_empty() {
        format!("//{tag}")
    } else {
        format!("//{tag}[{}]", conds.join(" and "))
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xpath_literals_survive_both_quotes() {
        assert_eq!(xpath_literal("a"), "'a'");
        assert_eq!(xpath_literal("it's"), "\"it's\"");
        assert_eq!(
            xpath_literal("\"><a href='x'>"),
            "concat('\"><a href=', \"'\", 'x', \"'\", '>')"
        );
    }

    #[test]
    fn select_css_to_xpath() {
        assert_eq!(
            css_to_select_xpath("select#run-job"),
            "//select[@id='run-job']"
        );
        assert_eq!(css_to_select_xpath("#g"), "//*[@id='g']");
    }
}
