// The console's frame: the session, calls to the JSON API, the hash router,
// live updates (polling that pauses on hidden pages) and shared widgets.
"use strict";

const App = {
  session: null, // {user, roles, csrf, slave}
  pages: {}, // name → function(ctx)
  timers: [],
  sources: [],
  cleanups: [],
  route: null,
};

const ROLE_RANK = { read: 1, write: 2, control: 3, admin: 4 };

function roleOn(pid) {
  const r = (App.session && App.session.roles) || {};
  return Math.max(ROLE_RANK[r[String(pid)]] || 0, ROLE_RANK[r["*"]] || 0);
}

function may(pid, role) {
  return roleOn(pid) >= ROLE_RANK[role];
}

// ---- API -------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const opts = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET" && method !== "HEAD") {
    opts.headers["X-CSRF-Token"] = App.session ? App.session.csrf : "";
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, "the daemon does not answer (" + e.message + ")");
  }
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  if (res.status === 401 && path !== "/ui/session") {
    location.href = "/ui/login";
    throw new ApiError(401, "signed out");
  }
  if (!res.ok || (data && data.stat === false)) {
    const msg = (data && (data.info || data.msg)) || res.status + " " + res.statusText;
    throw new ApiError(res.status, msg);
  }
  return data;
}

function qs(params) {
  const parts = [];
  for (const k of Object.keys(params)) {
    const v = params[k];
    if (v === null || v === undefined || v === "") continue;
    parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(v));
  }
  return parts.length ? "?" + parts.join("&") : "";
}

function enc(s) {
  return encodeURIComponent(s);
}

// ---- messages ----------------------------------------------------------

function flash(text, kind) {
  const box = document.getElementById("flash");
  const msg = el("p", { class: "flash " + (kind || "info") }, text);
  box.appendChild(msg);
  setTimeout(function () { msg.remove(); }, kind === "error" ? 8000 : 4000);
}

// Runs a write; shows its error; answers whether it went through.
async function act(label, fn) {
  try {
    await fn();
    return true;
  } catch (e) {
    flash(label + ": " + e.message, "error");
    return false;
  }
}

// ---- live updates ------------------------------------------------------

// Calls fn now and every `ms` while the page is visible and current.
function poll(fn, ms) {
  let running = false;
  const tick = async function () {
    if (document.hidden || running) return;
    running = true;
    try {
      await fn();
    } catch (e) {
      if (e.status !== 401) showError(e);
    } finally {
      running = false;
    }
  };
  tick();
  const id = setInterval(tick, ms || 2000);
  App.timers.push({ id: id, tick: tick });
  return tick;
}

function onLeave(fn) {
  App.cleanups.push(fn);
}

function stopPage() {
  for (const t of App.timers) clearInterval(t.id);
  App.timers = [];
  for (const s of App.sources) s.close();
  App.sources = [];
  for (const f of App.cleanups) {
    try { f(); } catch (e) { /* leaving anyway */ }
  }
  App.cleanups = [];
}

document.addEventListener("visibilitychange", function () {
  if (!document.hidden) for (const t of App.timers) t.tick();
});

// ---- shared widgets ----------------------------------------------------

const WAITING_TEXT = {
  confirm: "waits for confirmation",
  approval: "waits for approval",
  rollback_decision: "rollback decision pending",
};

function waitingText(t) {
  return (t && WAITING_TEXT[t.waiting]) || "";
}

function statusBadge(status) {
  return el("span", { class: "status s-" + (status || "none") }, status || "—");
}

function showError(e) {
  const main = document.getElementById("main");
  let box = document.getElementById("page-error");
  if (!box) {
    box = el("p", { id: "page-error", class: "error", role: "alert" });
    main.insertBefore(box, main.firstChild);
  }
  fill(box, e.message);
}

function clearError() {
  const box = document.getElementById("page-error");
  if (box) box.remove();
}

function field(id, label, input, hint) {
  input.id = id;
  return el("div", { class: "field" }, el("label", { for: id }, label), input, hint ? el("small", { class: "hint" }, hint) : null);
}

function button(text, onclick, cls) {
  return el("button", { type: "button", class: cls || "", onclick: onclick }, text);
}

// rows: a <tbody> to show (kept up to date by the page), or rows for a new one.
function table(headers, rows, cls) {
  const body = rows instanceof Node && rows.tagName === "TBODY" ? rows : el("tbody", null, rows);
  return el("div", { class: "table-wrap" }, el("table", { class: cls || "" },
    el("thead", null, el("tr", null, headers.map(function (h) { return el("th", { scope: "col" }, h); }))),
    body));
}

function link(href, text) {
  return el("a", { href: href }, text);
}

function pageTitle(text, extra) {
  document.title = text + " · jobx";
  return el("div", { class: "page-head" }, el("h1", null, text), extra || null);
}

// ---- router --------------------------------------------------------------

const PROJECT_PAGES = [
  ["tasks", "Tasks"], ["run", "Start a task"], ["groups", "Groups"], ["nodes", "Nodes"],
  ["jobs", "Jobs"], ["oplog", "Operation log"], ["stats", "Statistics"], ["agents", "Agents"],
];

function renderNav(pid, page) {
  const nav = document.getElementById("nav");
  if (pid === null) {
    fill(nav, el("a", { href: "#/projects", "aria-current": "page" }, "Projects"));
    return;
  }
  fill(nav,
    el("a", { href: "#/projects" }, "Projects"),
    el("span", { class: "pid" }, "project " + pid),
    PROJECT_PAGES.filter(function (p) { return p[0] !== "run" || may(pid, "write"); }).map(function (p) {
      return el("a", { href: "#/p/" + pid + "/" + p[0], "aria-current": p[0] === page ? "page" : null }, p[1]);
    }));
}

function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, "").split("?")[0].split("/").map(function (p) {
    try { return decodeURIComponent(p); } catch (e) { return p; }
  });
  if (parts[0] === "p" && /^\d+$/.test(parts[1] || "")) {
    return { pid: parts[1], page: parts[2] || "tasks", args: parts.slice(3) };
  }
  return { pid: null, page: "projects", args: [] };
}

function navigate() {
  stopPage();
  const r = parseRoute(location.hash);
  App.route = r;
  renderNav(r.pid, r.page);
  const main = fill(document.getElementById("main"));
  const page = r.pid === null ? App.pages.projects : App.pages[r.page];
  if (!page) {
    main.appendChild(el("p", { class: "error" }, "No such page: " + location.hash));
    return;
  }
  try {
    page({ pid: r.pid, args: r.args, main: main });
  } catch (e) {
    showError(e);
  }
}

function go(hash) {
  if (location.hash === hash) navigate();
  else location.hash = hash;
}

async function start() {
  try {
    const s = await api("GET", "/ui/session");
    App.session = s.data;
  } catch (e) {
    location.href = "/ui/login";
    return;
  }
  fill(document.getElementById("user"), App.session.user);
  document.getElementById("signout").addEventListener("click", async function () {
    await act("Sign out", function () { return api("POST", "/ui/logout"); });
    location.href = "/ui/login";
  });
  window.addEventListener("hashchange", navigate);
  if (!location.hash) location.hash = "#/projects";
  else navigate();
}

document.addEventListener("DOMContentLoaded", start);

// ---- updates that keep what did not change --------------------------------
// Polling must not replace elements a person (or a test) is about to click:
// a part is rebuilt only when what it shows changed.

// Refills `node` from build() when `data` differs from what it shows.
function fillIf(node, data, build) {
  const sig = JSON.stringify(data);
  if (node._sig === sig) return;
  node._sig = sig;
  fill(node, build());
}

// Rows keyed by key(item): unchanged rows stay, changed ones are replaced,
// the order follows `items`; `empty` is shown when there are none.
function keyedRows(tbody, items, key, build, empty) {
  const old = tbody._rows || new Map();
  const rows = new Map();
  const wanted = [];
  for (const it of items) {
    const k = String(key(it));
    const sig = JSON.stringify(it);
    let r = old.get(k);
    if (!r || r.sig !== sig) r = { sig: sig, node: build(it) };
    rows.set(k, r);
    wanted.push(r.node);
  }
  tbody._rows = rows;
  if (!items.length) {
    tbody._rows = new Map();
    fillIf(tbody, "empty", function () { return empty; });
    return;
  }
  tbody._sig = null;
  // Drop what is not wanted, then put the wanted rows in order.
  for (const child of Array.from(tbody.children)) if (wanted.indexOf(child) < 0) child.remove();
  wanted.forEach(function (n, i) {
    if (tbody.children[i] !== n) tbody.insertBefore(n, tbody.children[i] || null);
  });
}
