// The task page (batches, node × step grid, decisions) and the log views.
"use strict";

const ROLLBACK_DAYS = 7;

// ---- log views -------------------------------------------------------------
// A log is read in pages as the reader scrolls (never whole); once the end
// is reached, a log still being written is followed over Server-Sent Events.

function logLine(rec, withNode) {
  const line = el("div", { class: "line " + (rec.stream || ""), dataset: withNode && rec.node ? { node: rec.node } : null });
  ansi(line, rec.text);
  return line;
}

// box: the scrolling element; source: {page(offset) → {records, next, atEnd}, sse(offset) → url, keep(rec)}
function LogView(box, source, withNode) {
  const view = { offset: 0, loading: false, atEnd: false, es: null, closed: false, lines: 0 };
  const status = el("p", { class: "log-status hint", "aria-live": "polite" });
  const lines = el("div", { class: "lines" });
  fill(box, lines, status);

  const nearBottom = function () { return box.scrollTop + box.clientHeight >= box.scrollHeight - 40; };
  const add = function (recs) {
    const stick = nearBottom();
    const frag = document.createDocumentFragment();
    for (const r of recs) frag.appendChild(logLine(r, withNode));
    lines.appendChild(frag);
    view.lines += recs.length;
    if (stick && view.es) box.scrollTop = box.scrollHeight;
  };

  const follow = function () {
    if (view.closed || view.es) return;
    fill(status, "following…");
    const es = new EventSource(source.sse(view.offset));
    view.es = es;
    App.sources.push(es);
    es.onmessage = function (ev) {
      let r;
      try { r = JSON.parse(ev.data); } catch (e) { return; }
      if (typeof r.seq === "number") view.offset = Math.max(view.offset, r.seq);
      if (source.keep(r)) add([r]);
    };
    es.addEventListener("end", function () {
      es.close();
      view.es = null;
      fill(status, view.lines ? "end of log" : "no output");
    });
    es.onerror = function () {
      // Reconnect from where we are (EventSource would restart at the first offset).
      es.close();
      view.es = null;
      if (!view.closed) {
        fill(status, "connection lost, reconnecting…");
        setTimeout(follow, 2000);
      }
    };
  };

  const more = async function () {
    if (view.loading || view.atEnd || view.closed) return;
    view.loading = true;
    fill(status, "loading…");
    try {
      const p = await source.page(view.offset);
      if (view.closed) return;
      add(p.records.filter(source.keep));
      view.offset = p.next;
      if (p.atEnd) {
        view.atEnd = true;
        if (p.completed) fill(status, view.lines ? "end of log" : "no output");
        else follow();
      } else {
        fill(status, "scroll for more");
      }
    } catch (e) {
      fill(status, e.message);
    } finally {
      view.loading = false;
    }
    // Fill the box before waiting for a scroll.
    if (!view.atEnd && box.scrollHeight <= box.clientHeight + 40) more();
  };
  box.addEventListener("scroll", function () { if (nearBottom()) more(); });
  more();
  view.close = function () {
    view.closed = true;
    if (view.es) view.es.close();
  };
  return view;
}

function slavePath(key) {
  return "/slave/" + enc(App.session.slave) + "/log/" + enc(key);
}

// The whole log of a key (all nodes), in pages.
function keySource(key) {
  return {
    page: async function (offset) {
      const r = (await api("GET", slavePath(key) + qs({ format: "json", offset: offset, max: 500 }))).data;
      const atEnd = r.records.length < 500;
      return { records: r.records, next: r.next_offset, atEnd: atEnd, completed: r.completed };
    },
    sse: function (offset) { return slavePath(key) + qs({ format: "sse", offset: offset }); },
    keep: function () { return true; },
  };
}

// One node's records of a key.
function nodeSource(pid, key, node) {
  return {
    page: async function (offset) {
      const r = (await api("GET", "/ui/api/log/" + pid + "/" + enc(key) + qs({ node: node, offset: offset, max: 500 }))).data;
      return { records: r.records, next: r.next_offset, atEnd: r.at_end, completed: false };
    },
    sse: function (offset) { return slavePath(key) + qs({ format: "sse", offset: offset }); },
    keep: function (r) { return r.node === node; },
  };
}

App.pages.log = function (ctx) {
  const key = ctx.args.join("/");
  ctx.main.appendChild(pageTitle("Log " + key));
  const box = el("div", { class: "logbox full", tabindex: 0, "aria-label": "Log lines" });
  ctx.main.appendChild(box);
  const v = LogView(box, keySource(key), true);
  onLeave(v.close);
};

// ---- task page -------------------------------------------------------------

function deployOf(uuid) {
  return uuid.slice(0, -1) + uuid.slice(-1).toLowerCase();
}

// The waiting kind: the task's own field, else worked out from what is shown.
function waitingOf(view) {
  const t = view.task;
  if (t.waiting !== undefined) return t.waiting;
  if (view.batches.some(function (b) { return b.confirm === "WaitConfirm"; })) return "confirm";
  if (view.approvals.length) return "approval";
  if (["success", "fail"].indexOf(t.status) >= 0 && t.decision === "pending") return "rollback_decision";
  return null;
}

function variablesOf(t) {
  if (t.variables && typeof t.variables === "object") return t.variables;
  if (t.variable && typeof t.variable === "object") return t.variable;
  return {};
}

const FINAL = ["success", "fail", "refuse"];
const CELL_MARK = { ok: "✓", fail: "✗", running: "…", pending: "·", skipped: "–" };

App.pages.task = function (ctx) {
  const pid = ctx.pid;
  const uuid = ctx.args[0] || "";
  const control = may(pid, "control");
  const isAdmin = may(pid, "admin");

  const status = el("span", { id: "task-status", class: "status" });
  const waiting = el("span", { id: "task-waiting", class: "badge waiting" });
  const reason = el("p", { id: "task-reason" });
  const facts = el("dl", { class: "facts wide" });
  const actions = el("div", { class: "buttons actions" });
  const partner = el("p", { class: "partner" });
  const approvals = el("section", { class: "approvals", "aria-label": "Approvals" });
  const batchesBox = el("div", { class: "batches" });
  const logPanel = el("section", { id: "log", class: "logpanel", hidden: true, "aria-label": "Step output" });
  const varsBox = el("div", { class: "vars" });

  ctx.main.appendChild(el("div", { class: "page-head" }, el("h1", null, "Task " + uuid), status, waiting));
  ctx.main.appendChild(reason);
  ctx.main.appendChild(actions);
  ctx.main.appendChild(partner);
  ctx.main.appendChild(el("div", { class: "split" }, facts, varsBox));
  ctx.main.appendChild(approvals);
  ctx.main.appendChild(el("h2", null, "Batches"));
  ctx.main.appendChild(batchesBox);
  ctx.main.appendChild(logPanel);
  document.title = "Task " + uuid + " · jobx";

  const shown = {}; // subtask uuid → {section, status, info, buttons, cells: {node\0step → td}}
  let stepsShown = null;
  let logView = null;
  let openCell = null;

  const refresh = poll(load, 1500);

  async function load() {
    const v = (await api("GET", "/ui/api/task/" + pid + "/" + enc(uuid))).data;
    clearError();
    render(v);
  }

  async function write(label, method, path, body) {
    if (await act(label, function () { return api(method, path, body); })) await refresh();
  }

  function render(v) {
    const t = v.task;
    const finished = FINAL.indexOf(t.status) >= 0;
    const kind = waitingOf(v);
    fill(status, t.status);
    status.className = "status s-" + t.status;
    fill(waiting, WAITING_TEXT[kind] || "");
    waiting.hidden = !kind;
    fill(reason, t.reason ? "reason: " + t.reason : "");

    const vars = variablesOf(t);
    fillIf(facts, [t.name, t.group, t.user, vars.version, t.action, t.created, t.starttime, t.finishtime, t.runtime, t.calltype, t.stopped_by], function () { return (
      [["Job", link("#/p/" + pid + "/jobs", t.name)], ["Group", t.group], ["User", t.user], ["Version", vars.version !== undefined ? String(vars.version) : ""],
        ["Action", t.action], ["Created", t.created || ""], ["Started", t.starttime || ""], ["Finished", t.finishtime || ""],
        ["Runtime", fmtRuntime(t.runtime)], ["Called via", t.calltype], ["Stopped by", t.stopped_by || ""]].filter(function (f) { return f[1] !== ""; }).map(function (f) {
        return [el("dt", null, f[0]), el("dd", null, f[1])];
      })); });
    const names = Object.keys(vars);
    fillIf(varsBox, vars, function () {
      return [el("h2", null, "Variables"), names.length ? el("dl", { class: "facts" }, names.map(function (n) {
        return [el("dt", null, n), el("dd", null, String(vars[n]))];
      })) : el("p", { class: "hint" }, "none")];
    });

    // Buttons only while the action is allowed.
    fillIf(actions, [finished, control, t.stopped_by, t.action, t.decision, t.status, t.starttimems], function () { return actionButtons(t, finished); });

    fillIf(partner, [v.partner, t.action], function () {
      if (v.partner) {
        const rb = t.action !== "rollback";
        return [link("#/p/" + pid + "/task/" + enc(v.partner.uuid), rb ? "rollback task" : "deploy task"), " ", v.partner.uuid, " ", statusBadge(v.partner.status)];
      }
      return t.action === "rollback" ? link("#/p/" + pid + "/task/" + enc(deployOf(uuid)), "deploy task") : null;
    });

    fillIf(approvals, v.approvals, function () { return approvalList(v.approvals); });

    renderBatches(v, t);
  }

  function actionButtons(t, finished) {
    const btns = [];
    if (!finished && control && !t.stopped_by) {
      btns.push(button("Stop", function () { return write("Stop", "PUT", "/task/" + pid + "/" + enc(uuid)); }, "danger"));
    }
    if (finished && t.action === "deploy" && t.decision === "pending") {
      const startMs = (t.starttimems || 0) * 1000;
      const until = startMs + ROLLBACK_DAYS * 86400000;
      const open = t.status !== "refuse" && (!startMs || Date.now() < until);
      if (open && control) {
        btns.push(button("Roll back", function () { return write("Roll back", "PUT", "/task/" + pid + "/" + enc(uuid) + "/rollback"); }));
        btns.push(button("No rollback", function () { return write("No rollback", "PUT", "/task/" + pid + "/" + enc(uuid) + "/norollback"); }));
      }
      btns.push(el("span", { class: "hint" }, open
        ? "A rollback is possible until " + new Date(until).toLocaleString() + " (" + ROLLBACK_DAYS + " days after the start)."
        : "A rollback is no longer possible (" + (t.status === "refuse" ? "the task was refused" : "more than " + ROLLBACK_DAYS + " days since the start") + ")."));
    }
    return btns;
  }

  function approvalList(list) {
    return [list.length ? el("h2", null, "Approvals") : null, list.map(function (a) {
      const listed = a.approvers.indexOf(App.session.user) >= 0;
      const mine = a.opinions && a.opinions[App.session.user];
      return el("div", { class: "approval", dataset: { uuid: a.uuid } },
        el("p", null, el("strong", null, "Approval “" + a.step + "”"), " requested " + a.create_time),
        a.message ? el("blockquote", null, a.message) : null,
        el("p", null, "approvers: " + a.approvers.join(", ") + (a.everyone ? " (everyone must agree)" : " (one is enough)")),
        Object.keys(a.opinions || {}).length ? el("p", null, "so far: " + Object.keys(a.opinions).map(function (k) { return k + " " + a.opinions[k]; }).join(", ")) : null,
        (listed || isAdmin) && !mine ? el("div", { class: "buttons" },
          button("Agree", function () { return write("Agree", "PUT", "/approval/" + pid + "/" + enc(a.uuid), { opinion: "agree" }); }, "primary"),
          button("Refuse", function () { return write("Refuse", "PUT", "/approval/" + pid + "/" + enc(a.uuid), { opinion: "refuse" }); }, "danger")) : null);
    })];
  }

  function renderBatches(v, t) {
    const stepsKey = v.steps.map(function (s) { return s.uuid; }).join(",");
    if (stepsShown !== stepsKey || Object.keys(shown).length !== v.batches.length) {
      ctx.main.appendChild(logPanel);
      fill(batchesBox);
      for (const k of Object.keys(shown)) delete shown[k];
      stepsShown = stepsKey;
      for (const b of v.batches) shown[b.uuid] = buildBatch(v, t, b);
    }
    for (const b of v.batches) updateBatch(shown[b.uuid], b, t);
  }

  function buildBatch(v, t, b) {
    const st = el("span", { class: "batch-status status" });
    const info = el("span", { class: "batch-info hint" });
    const buttons = el("span", { class: "buttons" });
    const cells = {};
    const rows = b.nodes.map(function (n) {
      return el("tr", null, el("th", { scope: "row", class: "node" }, n), v.steps.map(function (s, i) {
        const td = el("td", {
          class: "cell", tabindex: 0, role: "button", dataset: { node: n, step: s.uuid, key: b.cells[i].key },
          onclick: function () { openLog(b, n, s, td); },
          onkeydown: function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openLog(b, n, s, td); } },
        });
        cells[n + "\u0000" + s.uuid] = td;
        return td;
      }));
    });
    const section = el("section", { class: "batch", dataset: { uuid: b.uuid }, "aria-label": "Batch " + (b.idx + 1) },
      el("h3", null, "Batch " + (b.idx + 1) + "/" + v.batches.length + " ", st, " ", el("small", null, b.nodes.length + " node" + (b.nodes.length === 1 ? "" : "s")), " ", info, " ", buttons),
      el("div", { class: "table-wrap" }, el("table", { class: "grid" },
        el("thead", null, el("tr", null, el("th", { scope: "col" }, "node"), v.steps.map(function (s) {
          return el("th", { scope: "col", title: s.plugin + " · action " + s.action + " · batches " + s.batches }, s.name);
        }))),
        el("tbody", null, rows))));
    batchesBox.appendChild(section);
    return { section: section, status: st, info: info, buttons: buttons, cells: cells, sig: "" };
  }

  function updateBatch(sh, b, t) {
    const sig = [b.status, b.confirm, b.reason, b.runtime, JSON.stringify(b.cells)].join("|");
    if (sig === sh.sig) return;
    sh.sig = sig;
    fill(sh.status, b.status);
    sh.status.className = "batch-status status s-" + b.status;
    const parts = [];
    if (b.confirm === "WaitConfirm") parts.push("waits for confirmation");
    else if (b.confirm) parts.push(b.confirm);
    if (b.reason) parts.push(b.reason);
    if (b.runtime) parts.push(fmtRuntime(b.runtime));
    fill(sh.info, parts.join(" · "));
    fillIf(sh.buttons, [b.confirm, control, t.stopped_by], function () { return b.confirm === "WaitConfirm" && control && !t.stopped_by ? [
      button("Continue", function () { return write("Continue", "PUT", "/subtask/" + pid + "/" + enc(b.uuid) + "/confirm", { action: "continue" }); }),
      " ",
      button("Retry", function () { return write("Retry", "PUT", "/subtask/" + pid + "/" + enc(b.uuid) + "/confirm", { action: "retry" }); }, "primary"),
    ] : null; });
    for (const c of b.cells) {
      for (const n of b.nodes) {
        const td = sh.cells[n + "\u0000" + c.step];
        const state = (c.nodes && c.nodes[n]) || c.all;
        const cls = "cell " + state + (td === openCell ? " open" : "");
        if (td.className !== cls) {
          td.className = cls;
          fill(td, CELL_MARK[state] || "");
          td.setAttribute("aria-label", n + ": " + state);
        }
      }
    }
  }

  function openLog(b, node, step, td) {
    if (logView) logView.close();
    if (openCell) openCell.classList.remove("open");
    openCell = td;
    td.classList.add("open");
    const key = b.uuid + step.uuid + step.plugin;
    const box = el("div", { class: "logbox", tabindex: 0, "aria-label": "Output lines" });
    fill(logPanel,
      el("div", { class: "log-head" }, el("h2", null, node + " · " + step.name + " (batch " + (b.idx + 1) + ")"),
        link("#/p/" + pid + "/log/" + enc(key), "whole step log"), " ",
        button("Close", function () { logPanel.hidden = true; if (logView) logView.close(); td.classList.remove("open"); openCell = null; td.focus(); })),
      box);
    logPanel.hidden = false;
    // Right under the batch clicked, in the flow of the page (it covers nothing).
    const sh = shown[b.uuid];
    if (sh && logPanel.parentNode !== sh.section) sh.section.appendChild(logPanel);
    logView = nodeSourceView(box, key, node);
    logPanel.scrollIntoView({ block: "nearest" });
  }

  function nodeSourceView(box, key, node) {
    return LogView(box, nodeSource(pid, key, node), false);
  }

  onLeave(function () { if (logView) logView.close(); });
  return refresh;
};
