// The console's pages except the task page (task.js).
"use strict";

const PAGE_SIZE = 50;

function fmtRuntime(r) {
  if (r === null || r === undefined || r === "") return "";
  const s = parseFloat(r);
  if (!isFinite(s)) return String(r);
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min " + Math.round(s % 60) + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

function debounce(fn, ms) {
  let t = null;
  return function () {
    const args = arguments;
    clearTimeout(t);
    t = setTimeout(function () { fn.apply(null, args); }, ms);
  };
}

// A button that asks once more before doing something that can not be undone.
function confirmButton(text, doIt) {
  let armed = false;
  let timer = null;
  const b = button(text, async function () {
    if (!armed) {
      armed = true;
      fill(b, "Really " + text.toLowerCase() + "?");
      b.classList.add("danger");
      timer = setTimeout(function () { armed = false; fill(b, text); b.classList.remove("danger"); }, 4000);
      return;
    }
    clearTimeout(timer);
    armed = false;
    fill(b, text);
    await doIt();
  });
  return b;
}

// ---- projects --------------------------------------------------------------

App.pages.projects = function (ctx) {
  const body = el("tbody");
  ctx.main.appendChild(pageTitle("Projects"));
  ctx.main.appendChild(el("p", { class: "hint" }, "Project ids that hold nodes, groups, jobs or tasks and that your token may read. Failed counts the last 7 days."));
  ctx.main.appendChild(table(["Project", "Running", "Waiting", "Failed (7 days)", "Tasks", "Nodes", "Groups", "Jobs"], body, "projects"));
  const open = el("form", { class: "inline", onsubmit: function (e) { e.preventDefault(); const v = pidIn.value.trim(); if (/^\d+$/.test(v)) go("#/p/" + v + "/tasks"); } });
  const pidIn = el("input", { type: "text", inputmode: "numeric", pattern: "[0-9]+", size: 8 });
  open.appendChild(field("open-pid", "Open project id", pidIn));
  open.appendChild(el("button", { type: "submit" }, "Open"));
  ctx.main.appendChild(open);
  poll(async function () {
    const r = await api("GET", "/ui/api/projects");
    clearError();
    keyedRows(body, r.data, function (p) { return p.projectid; }, function (p) {
      const base = "#/p/" + p.projectid;
      return el("tr", { class: "project", dataset: { pid: p.projectid } },
        el("td", null, link(base + "/tasks", "project " + p.projectid)),
        el("td", { class: p.running ? "n-running" : "" }, p.running),
        el("td", { class: p.waiting ? "n-waiting" : "" }, p.waiting ? link(base + "/tasks?status=waiting", String(p.waiting)) : "0"),
        el("td", { class: p.failed ? "n-failed" : "" }, p.failed),
        el("td", null, p.tasks),
        el("td", null, link(base + "/nodes", String(p.nodes))),
        el("td", null, link(base + "/groups", String(p.groups))),
        el("td", null, link(base + "/jobs", String(p.jobs))));
    }, el("tr", null, el("td", { colspan: 8 }, "Nothing yet. Add nodes with POST /node/<projectid>, or open a project id below.")));
  });
};

// ---- tasks -------------------------------------------------------------

App.pages.tasks = function (ctx) {
  const pid = ctx.pid;
  const hashQuery = (location.hash.split("?")[1] || "");
  const preset = new URLSearchParams(hashQuery);
  const name = el("input", { type: "search", value: preset.get("name") || "" });
  const user = el("input", { type: "search", value: preset.get("user") || "" });
  const status = el("select", null, ["", "waiting", "init", "running", "success", "fail", "refuse"].map(function (s) {
    return el("option", { value: s, selected: (preset.get("status") || "") === s }, s === "" ? "any" : s);
  }));
  const from = el("input", { type: "date" });
  const to = el("input", { type: "date" });
  const body = el("tbody");
  const pager = el("div", { class: "pager" });
  let before = null; // before_id of the page shown; null = newest
  const stack = [];

  ctx.main.appendChild(pageTitle("Tasks of project " + pid, may(pid, "write") ? link("#/p/" + pid + "/run", "Start a task") : null));
  ctx.main.appendChild(el("form", { class: "filters", onsubmit: function (e) { e.preventDefault(); reset(); } },
    field("f-name", "Job name", name), field("f-user", "User", user), field("f-status", "Status", status),
    field("f-from", "From", from), field("f-to", "To", to)));
  ctx.main.appendChild(table(["Id", "Job", "Group", "User", "Status", "", "Started", "Runtime", "By"], body, "tasks"));
  ctx.main.appendChild(pager);

  const reset = function () { before = null; stack.length = 0; refresh(); };
  const later = debounce(reset, 250);
  name.addEventListener("input", later);
  user.addEventListener("input", later);
  status.addEventListener("change", reset);
  from.addEventListener("change", reset);
  to.addEventListener("change", reset);

  const refresh = poll(async function () {
    const q = { limit: PAGE_SIZE, name: name.value.trim(), user: user.value.trim(), status: status.value, time_start: from.value, time_end: to.value, before_id: before };
    const r = await api("GET", "/task/" + pid + qs(q));
    clearError();
    const tasks = r.data.slice().sort(function (a, b) { return b.id - a.id; });
    keyedRows(body, tasks.map(function (t) {
      const finished = ["success", "fail", "refuse"].indexOf(t.status) >= 0;
      return { id: t.id, uuid: t.uuid, name: t.name, group: t.group, user: t.user, status: t.status, waiting: t.waiting, action: t.action,
        starttime: t.starttime, runtime: finished ? t.runtime : null, calltype: t.calltype };
    }), function (t) { return t.uuid; }, function (t) {
      const href = "#/p/" + pid + "/task/" + enc(t.uuid);
      const wait = waitingText(t);
      return el("tr", { class: "task", dataset: { uuid: t.uuid } },
        el("td", null, link(href, String(t.id))),
        el("td", null, link(href, t.name)),
        el("td", null, t.group),
        el("td", null, t.user),
        el("td", null, statusBadge(t.status)),
        el("td", null, wait ? el("span", { class: "badge waiting" }, wait) : null, t.action === "rollback" ? el("span", { class: "badge" }, "rollback") : null),
        el("td", null, t.starttime || ""),
        el("td", null, fmtRuntime(t.runtime)),
        el("td", null, t.calltype));
    }, el("tr", null, el("td", { colspan: 9 }, "No tasks match.")));
    const minId = tasks.length ? tasks[tasks.length - 1].id : null;
    fillIf(pager, [stack.length, tasks.length, minId], function () {
      return [stack.length ? button("Newer", function () { before = stack.pop(); refresh(); }) : null,
      tasks.length === PAGE_SIZE ? button("Older", function () { stack.push(before); before = minId; refresh(); }) : null];
    });
  });
};

// ---- start a task ------------------------------------------------------

// The ${name} variables the steps of a job use, in order of first use.
function jobVariables(job) {
  const seen = [];
  const walk = function (v) {
    if (typeof v === "string") {
      const re = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
      let m;
      while ((m = re.exec(v)) !== null) if (seen.indexOf(m[1]) < 0) seen.push(m[1]);
    } else if (Array.isArray(v)) {
      v.forEach(walk);
    } else if (v && typeof v === "object") {
      Object.keys(v).forEach(function (k) { if (k !== "uuid") walk(v[k]); });
    }
  };
  walk(job.steps || []);
  return seen.filter(function (n) { return n !== "_exit_" && n !== "_rollbackVersion_"; });
}

function randomCallerId() {
  const abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  let s = "";
  for (let i = 0; i < 11; i++) s += abc[bytes[i] % abc.length];
  return s + "abcdefghijklmnopqrstuvwxyz"[bytes[11] % 26];
}

App.pages.run = async function (ctx) {
  const pid = ctx.pid;
  ctx.main.appendChild(pageTitle("Start a task in project " + pid));
  if (!may(pid, "write")) {
    ctx.main.appendChild(el("p", null, "Your token may not start tasks in this project."));
    return;
  }
  let jobs, groups;
  const here = App.route;
  try {
    [jobs, groups] = await Promise.all([api("GET", "/job/" + pid), api("GET", "/group/" + pid)]);
  } catch (e) {
    if (App.route === here) showError(e);
    return;
  }
  if (App.route !== here) return; // left the page while it loaded
  jobs = jobs.data;
  groups = groups.data;
  if (!jobs.length) {
    ctx.main.appendChild(el("p", null, "This project has no jobs yet. ", link("#/p/" + pid + "/jobs", "Create one")));
    return;
  }
  const preset = new URLSearchParams(location.hash.split("?")[1] || "");
  const job = el("select", null, jobs.map(function (j) { return el("option", { value: j.name, selected: preset.get("job") === j.name }, j.name); }));
  const group = el("select", null, groups.map(function (g) { return el("option", { value: g.name }, g.name + " (" + g.group_type + ")"); }));
  const vars = el("fieldset", { class: "vars" });
  const exit = el("input", { type: "checkbox" });
  const rbv = el("input", { type: "text" });
  const plan = el("div", { id: "plan", "aria-live": "polite" });
  const form = el("form", { class: "run", onsubmit: function (e) { e.preventDefault(); } },
    field("run-job", "Job", job),
    field("run-group", "Group", group),
    vars,
    el("fieldset", { class: "opts" }, el("legend", null, "Options"),
      el("div", { class: "field check" }, exit, el("label", { for: "opt-exit" }, "_exit_: end the task at the first failed batch (no waiting for confirmation)")),
      field("opt-rollback-version", "_rollbackVersion_: the version to roll back to (asks for a rollback decision when the task ends)", rbv)),
    el("div", { class: "buttons" }, button("Preview plan", preview), button("Start task", startTask, "primary")));
  exit.id = "opt-exit";
  ctx.main.appendChild(form);
  ctx.main.appendChild(el("h2", null, "Plan"));
  ctx.main.appendChild(plan);
  if (!groups.length) plan.appendChild(el("p", null, "This project has no groups yet. ", link("#/p/" + pid + "/groups", "Create one")));

  const showVars = function () {
    const j = jobs.find(function (x) { return x.name === job.value; });
    const names = j ? jobVariables(j) : [];
    fill(vars, el("legend", null, "Variables the job's steps use"),
      names.length ? names.map(function (n) { return field("var-" + n, n, el("input", { type: "text", name: n })); }) : el("p", { class: "hint" }, "The steps use no ${name} variables."));
    fill(plan);
  };
  job.addEventListener("change", showVars);
  group.addEventListener("change", function () { fill(plan); });
  showVars();

  function variables() {
    const v = {};
    vars.querySelectorAll("input").forEach(function (i) { if (i.value !== "") v[i.name] = i.value; });
    if (exit.checked) v._exit_ = "1";
    if (rbv.value.trim() !== "") v._rollbackVersion_ = rbv.value.trim();
    return v;
  }

  async function preview() {
    fill(plan, el("p", { class: "hint" }, "Planning…"));
    try {
      const r = await api("POST", "/third/interface/dry-run", {
        project_id: Number(pid), uuid: randomCallerId(),
        params: { jobname: job.value, group: group.value, variable: variables() },
      });
      const batches = r.data.batches;
      fill(plan, el("p", null, batches.length + " batch" + (batches.length === 1 ? "" : "es") + ", " +
        batches.reduce(function (n, b) { return n + b.nodes.length; }, 0) + " nodes, in this order:"),
        el("ol", { class: "plan" }, batches.map(function (b) {
          return el("li", { class: "plan-batch" },
            el("span", { class: "nodes" }, b.nodes.join(", ")),
            el("small", { class: "hint" }, " steps: " + (b.steps.length ? b.steps.join(", ") : "none")));
        })));
    } catch (e) {
      fill(plan, el("p", { class: "error", role: "alert" }, e.message));
    }
  }

  async function startTask() {
    await act("Start task", async function () {
      const r = await api("POST", "/task/" + pid + "/job/byname", { jobname: job.value, group: group.value, variable: variables() });
      go("#/p/" + pid + "/task/" + enc(r.uuid));
    });
  }
};

// ---- groups --------------------------------------------------------------

App.pages.groups = function (ctx) {
  const pid = ctx.pid;
  const writer = may(pid, "write");
  const body = el("tbody");
  const editor = el("section", { class: "editor", "aria-label": "Group editor" });
  ctx.main.appendChild(pageTitle("Groups of project " + pid, writer ? button("New group", function () { edit(null); }) : null));
  ctx.main.appendChild(el("div", { class: "split" }, table(["Id", "Name", "Type", "Note", "Edited"], body, "groups"), editor));

  const refresh = poll(async function () {
    const r = await api("GET", "/group/" + pid);
    clearError();
    keyedRows(body, r.data, function (g) { return g.id; }, function (g) {
      return el("tr", { class: "group", dataset: { id: g.id } },
        el("td", null, g.id),
        el("td", null, el("a", { href: "#/p/" + pid + "/groups", onclick: function (e) { e.preventDefault(); edit(g.id); } }, g.name)),
        el("td", null, g.group_type),
        el("td", null, g.note),
        el("td", null, g.edit_time));
    }, el("tr", null, el("td", { colspan: 5 }, "No groups yet.")));
  }, 5000);

  let seq = 0;
  async function edit(id) {
    let g = { name: "", group_type: "percent", note: "", percent: "" };
    if (id !== null) {
      try {
        g = (await api("GET", "/group/" + pid + "/" + id)).data;
      } catch (e) {
        showError(e);
        return;
      }
    }
    const name = el("input", { type: "text", value: g.name, disabled: !writer });
    const type = el("select", { disabled: !writer }, el("option", { value: "list", selected: g.group_type === "list" }, "list"), el("option", { value: "percent", selected: g.group_type === "percent" }, "percent"));
    const text = el("textarea", { rows: 6, spellcheck: "false", disabled: !writer, value: g.group_type === "list" ? g.node || "" : g.percent || "" });
    const note = el("input", { type: "text", value: g.note || "", disabled: !writer });
    const sel = el("input", { type: "text", value: g.labels || "", disabled: !writer, placeholder: "role=web,dc!=b" });
    const err = el("p", { id: "group-error", class: "error", role: "alert", "aria-live": "polite" });
    const prev = el("ol", { id: "group-preview", class: "preview", "aria-live": "polite" });
    const help = el("small", { class: "hint" });
    const setHelp = function () {
      fill(help, type.value === "list"
        ? "Node names: ',' between nodes of a batch, ';' between batches (n1,n2;n3)."
        : "Batch sizes: 1:2:50% = 1 node, then 2, then 50% of all the nodes per batch until none is left; or one rule per line, IDS;RANGE;SIZES (docs/semantics.md §2).");
    };
    const update = async function () {
      const mine = ++seq;
      const b = { group_type: type.value, labels: sel.value };
      b[type.value === "list" ? "node" : "percent"] = text.value;
      try {
        const r = await api("POST", "/ui/api/group/" + pid + "/preview", b);
        if (mine !== seq) return;
        fill(err);
        text.removeAttribute("aria-invalid");
        fill(prev, r.data.map(function (batch, i) {
          return el("li", { class: "preview-batch" }, el("strong", null, "Batch " + (i + 1) + " (" + batch.nodes.length + "): "),
            batch.nodes.map(function (n, k) {
              const unknown = batch.unknown.indexOf(n) >= 0;
              return [k ? ", " : "", el("span", { class: unknown ? "unknown" : "", title: unknown ? "not in the inventory" : null }, n)];
            }));
        }));
        if (!r.data.length) prev.appendChild(el("li", { class: "hint" }, "No batches: the project has no nodes for this rule."));
      } catch (e) {
        if (mine !== seq) return;
        fill(err, e.message);
        text.setAttribute("aria-invalid", "true");
        fill(prev);
      }
    };
    const later = debounce(update, 120);
    text.addEventListener("input", later);
    sel.addEventListener("input", later);
    type.addEventListener("change", function () { setHelp(); update(); });
    setHelp();
    const save = async function () {
      const b = { name: name.value, group_type: type.value, note: note.value, labels: sel.value };
      b[type.value === "list" ? "node" : "percent"] = text.value;
      try {
        const r = await api("POST", "/group/" + pid + (id === null ? "" : "/" + id), b);
        fill(err);
        flash("Saved group " + r.data.name);
        id = r.data.id;
        refresh();
      } catch (e) {
        fill(err, e.message);
      }
    };
    fill(editor,
      el("h2", null, id === null ? "New group" : "Group " + g.name),
      field("group-name", "Name", name),
      field("group-type", "Type", type),
      el("div", { class: "field" }, el("label", { for: "group-text" }, "Batches"), text, help, err),
      field("group-labels", "Only nodes with labels (optional selector)", sel),
      field("group-note", "Note", note),
      writer ? el("div", { class: "buttons" }, button("Save", save, "primary"),
        id !== null ? confirmButton("Delete", async function () {
          if (await act("Delete group", function () { return api("DELETE", "/group/" + pid + "/" + id); })) { fill(editor); refresh(); }
        }) : null) : null,
      el("h3", null, "Preview"),
      prev);
    text.id = "group-text";
    update();
    name.focus();
  }
};

// ---- nodes ---------------------------------------------------------------

function labelsText(labels) {
  return Object.keys(labels || {}).map(function (k) { return k + "=" + labels[k]; }).join("\n");
}

function parseLabels(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const l = line.trim();
    if (!l) continue;
    const i = l.indexOf("=");
    if (i <= 0) throw new Error("labels: \"" + l + "\" is not key=value");
    out[l.slice(0, i).trim()] = l.slice(i + 1).trim();
  }
  return out;
}

App.pages.nodes = function (ctx) {
  const pid = ctx.pid;
  const writer = may(pid, "write");
  const body = el("tbody");
  const more = el("div", { class: "pager" });
  const filter = el("input", { type: "search" });
  let shown = 200;
  let all = [];
  ctx.main.appendChild(pageTitle("Nodes of project " + pid));
  ctx.main.appendChild(el("div", { class: "filters" }, field("n-filter", "Filter (name, host or label)", filter)));

  const name = el("input", { type: "text", required: true });
  const host = el("input", { type: "text" });
  const port = el("input", { type: "number", min: 1, max: 65535 });
  const user = el("input", { type: "text" });
  const labels = el("textarea", { rows: 3, placeholder: "role=web" });
  const err = el("p", { id: "node-error", class: "error", role: "alert" });
  const form = el("form", { class: "node-form", onsubmit: async function (e) {
    e.preventDefault();
    try {
      const n = { name: name.value.trim(), host: host.value.trim() || null, user: user.value.trim() || null, labels: parseLabels(labels.value) };
      if (port.value) n.port = Number(port.value);
      await api("POST", "/node/" + pid, { nodes: [n] });
      fill(err);
      flash("Saved node " + n.name);
      form.reset();
      refresh();
    } catch (x) {
      fill(err, x.message);
    }
  } },
  el("h2", null, "Add or change a node"),
  el("div", { class: "row" }, field("node-name", "Name", name), field("node-host", "Host (default: the name)", host), field("node-port", "Port", port), field("node-user", "User", user)),
  field("node-labels", "Labels (key=value, one a line)", labels),
  err,
  el("button", { type: "submit", class: "primary" }, "Save node"));

  ctx.main.appendChild(table(["Name", "Host", "Port", "User", "Labels", ""], body, "nodes"));
  ctx.main.appendChild(more);
  if (writer) ctx.main.appendChild(form);

  const render = function () {
    const f = filter.value.trim().toLowerCase();
    const match = all.filter(function (n) {
      return !f || n.name.toLowerCase().includes(f) || (n.host || "").toLowerCase().includes(f) || labelsText(n.labels).toLowerCase().includes(f);
    });
    keyedRows(body, match.slice(0, shown), function (n) { return n.name; }, function (n) {
      return el("tr", { class: "node", dataset: { name: n.name } },
        el("td", null, n.name), el("td", null, n.host), el("td", null, n.port || ""), el("td", null, n.user || ""),
        el("td", null, Object.keys(n.labels || {}).map(function (k) { return el("span", { class: "chip" }, k + "=" + n.labels[k]); })),
        el("td", null, writer ? [button("Edit", function () {
          name.value = n.name; host.value = n.host === n.name ? "" : n.host; port.value = n.port || ""; user.value = n.user || ""; labels.value = labelsText(n.labels);
          name.focus();
        }), " ", confirmButton("Remove", async function () {
          if (await act("Remove node", function () { return api("DELETE", "/node/" + pid + "/" + enc(n.name)); })) refresh();
        })] : null));
    }, el("tr", null, el("td", { colspan: 6 }, all.length ? "No node matches." : "No nodes yet.")));
    fillIf(more, [match.length, shown], function () {
      return match.length > shown ? [el("span", null, "Showing " + shown + " of " + match.length + " "), button("Show more", function () { shown += 200; render(); })] : null;
    });
  };
  filter.addEventListener("input", debounce(function () { shown = 200; render(); }, 150));
  const refresh = poll(async function () {
    all = (await api("GET", "/node/" + pid)).data;
    clearError();
    render();
  }, 5000);
};

// ---- jobs ------------------------------------------------------------------

function stepWhat(s) {
  if (s.plugin === "approval") {
    return [el("div", null, "approvers: " + (s.approvers || []).join(", ") + (s.everyone ? " (everyone must agree)" : "")), s.message ? el("div", null, "message: " + s.message) : null];
  }
  if (s.kind === "scp") return el("div", null, "copy " + (s.src || "") + " → " + (s.dst || "") + (s.chmod ? " chmod " + s.chmod : "") + (s.chown ? " chown " + s.chown : ""));
  return [s.interpreter ? el("div", { class: "hint" }, s.interpreter + (s.args ? " " + s.args : "")) : null, el("pre", { class: "script" }, s.script || "")];
}

function stepsTable(steps) {
  return table(["#", "Name", "Plugin", "What", "Timeout", "Action", "Batches"], steps.map(function (s, i) {
    return el("tr", { class: "step" }, el("td", null, i + 1), el("td", null, s.name), el("td", null, s.plugin + (s.kind ? " / " + s.kind : "")),
      el("td", null, stepWhat(s)), el("td", null, s.timeout + " s"), el("td", null, s.action), el("td", null, s.batches));
  }), "steps");
}

App.pages.jobs = function (ctx) {
  const pid = ctx.pid;
  const writer = may(pid, "write");
  const body = el("tbody");
  const detail = el("section", { class: "editor", "aria-label": "Job" });
  ctx.main.appendChild(pageTitle("Jobs of project " + pid, writer ? button("New job", function () { editJob(null); }) : null));
  ctx.main.appendChild(table(["Name", "Steps", "Plugins", "Edited", ""], body, "jobs"));
  ctx.main.appendChild(detail);

  const refresh = poll(async function () {
    const jobs = (await api("GET", "/job/" + pid)).data;
    clearError();
    keyedRows(body, jobs, function (j) { return j.name; }, function (j) {
      const plugins = Array.from(new Set(j.steps.map(function (s) { return s.plugin; })));
      return el("tr", { class: "job", dataset: { name: j.name } },
        el("td", null, el("a", { href: "#/p/" + pid + "/jobs", onclick: function (e) { e.preventDefault(); show(j); } }, j.name)),
        el("td", null, j.steps.length), el("td", null, plugins.join(", ")), el("td", null, j.edit_time),
        el("td", null, button("Show", function () { show(j); }), writer ? [" ", button("Edit", function () { editJob(j); }), " ",
          link("#/p/" + pid + "/run?job=" + enc(j.name), "Run")] : null));
    }, el("tr", null, el("td", { colspan: 5 }, "No jobs yet.")));
  }, 5000);

  function show(j) {
    fill(detail, el("h2", null, "Job " + j.name), stepsTable(j.steps),
      writer ? el("div", { class: "buttons" }, button("Edit", function () { editJob(j); }),
        confirmButton("Delete", async function () {
          if (await act("Delete job", function () { return api("DELETE", "/job/" + pid + "/" + enc(j.name)); })) { fill(detail); refresh(); }
        })) : null);
  }

  function editJob(j) {
    const doc = j ? Object.assign({}, j) : {
      name: "deploy-web",
      steps: [{ name: "hello", plugin: "local", kind: "cmd", script: "echo deploying ${version} on $JOBX_NODE", timeout: 60 }],
    };
    const text = el("textarea", { rows: 18, spellcheck: "false", class: "code", value: JSON.stringify(doc, null, 2) });
    const err = el("pre", { id: "job-error", class: "error", role: "alert" });
    delete doc.edit_time;
    fill(detail, el("h2", null, j ? "Edit job " + j.name : "New job"),
      el("p", { class: "hint" }, "The job as JSON: {\"name\": …, \"steps\": [...]}. Steps keep their uuid when it stays in the text."),
      el("div", { class: "field" }, el("label", { for: "job-text" }, "Job"), text, err),
      el("div", { class: "buttons" }, button("Save job", async function () {
        let b;
        try {
          b = JSON.parse(text.value);
        } catch (e) {
          fill(err, "not valid JSON: " + e.message);
          return;
        }
        try {
          const r = await api("POST", "/job/" + pid, b);
          fill(err);
          flash("Saved job " + r.data.name);
          refresh();
          show(r.data);
        } catch (e) {
          fill(err, e.message);
        }
      }, "primary"), button("Cancel", function () { fill(detail); })));
    text.id = "job-text";
    text.focus();
  }
};

// ---- operation log ---------------------------------------------------------

App.pages.oplog = function (ctx) {
  const pid = ctx.pid;
  let limit = 100;
  const body = el("tbody");
  const more = el("div", { class: "pager" });
  ctx.main.appendChild(pageTitle("Operation log of project " + pid));
  ctx.main.appendChild(table(["Time", "User", "What", "Details"], body, "oplog"));
  ctx.main.appendChild(more);
  const refresh = poll(async function () {
    const rows = (await api("GET", "/log/" + pid + qs({ limit: limit }))).data;
    clearError();
    keyedRows(body, rows, function (e) { return e.id; }, function (e) {
      return el("tr", { class: "oplog" }, el("td", null, e.create_time), el("td", null, e.user), el("td", null, e.title), el("td", { class: "wrap" }, e.info));
    }, el("tr", null, el("td", { colspan: 4 }, "Nothing recorded yet.")));
    fillIf(more, [rows.length, limit], function () {
      return rows.length === limit && limit < 10000 ? button("Show more", function () { limit = Math.min(limit + 100, 10000); refresh(); }) : null;
    });
  });
};

// ---- statistics (SVG drawn here) ------------------------------------------

function barChart(title, rows, opts) {
  // rows: [{label, value, part?}] ; part = the share drawn darker (successes)
  const W = 640, H = 220, padL = 36, padB = 44, padT = 12;
  const max = Math.max(1, ...rows.map(function (r) { return r.value; }));
  const bw = rows.length ? (W - padL - 8) / rows.length : 0;
  const y = function (v) { return padT + (H - padT - padB) * (1 - v / max); };
  const g = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "chart", role: "img", "aria-label": title });
  g.appendChild(svg("title", null, title));
  for (const t of [0, max / 2, max]) {
    const ty = y(t);
    g.appendChild(svg("line", { x1: padL, x2: W - 4, y1: ty, y2: ty, class: "grid" }));
    g.appendChild(svg("text", { x: padL - 4, y: ty + 4, class: "axis", "text-anchor": "end" }, (opts && opts.unit === "%") ? Math.round(t) + "%" : String(Math.round(t))));
  }
  rows.forEach(function (r, i) {
    const x = padL + i * bw + bw * 0.15;
    const w = Math.max(1, bw * 0.7);
    g.appendChild(svg("rect", { x: x, y: y(r.value), width: w, height: Math.max(0, y(0) - y(r.value)), class: "bar" },
      svg("title", null, r.label + ": " + r.value + (r.part !== undefined ? " (" + r.part + " success)" : "") + ((opts && opts.unit) || ""))));
    if (r.part !== undefined) {
      g.appendChild(svg("rect", { x: x, y: y(r.part), width: w, height: Math.max(0, y(0) - y(r.part)), class: "bar ok" }));
    }
    const every = Math.ceil(rows.length / 12);
    if (i % every === 0) {
      g.appendChild(svg("text", { x: x + w / 2, y: H - padB + 14, class: "axis", "text-anchor": "middle" }, r.short || r.label));
    }
  });
  if (!rows.length) g.appendChild(svg("text", { x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle" }, "no tasks in the last 30 days"));
  return el("figure", { class: "chart" }, el("figcaption", null, title), g);
}

// One bar per day of the last `n` days (days without tasks too).
function lastDays(rows, n) {
  const by = {};
  rows.forEach(function (x) { by[x[0]] = x; });
  const out = [];
  const day = new Date();
  day.setHours(12, 0, 0, 0);
  day.setDate(day.getDate() - (n - 1));
  for (let i = 0; i < n; i++) {
    const key = day.getFullYear() + "-" + String(day.getMonth() + 1).padStart(2, "0") + "-" + String(day.getDate()).padStart(2, "0");
    const x = by[key];
    delete by[key];
    out.push({ label: key, short: key.slice(5), value: x ? x[1] : 0, part: x ? x[2] : 0 });
    day.setDate(day.getDate() + 1);
  }
  // Days the server counted that this browser's calendar did not list (time zones).
  Object.keys(by).sort().forEach(function (k) { out.push({ label: k, short: k.slice(5), value: by[k][1], part: by[k][2] }); });
  return out;
}

App.pages.stats = function (ctx) {
  const pid = ctx.pid;
  const box = el("div", { class: "charts" });
  ctx.main.appendChild(pageTitle("Statistics of project " + pid));
  ctx.main.appendChild(el("p", { class: "hint" }, "Tasks created in the last 30 days. Darker: the share that succeeded."));
  ctx.main.appendChild(box);
  poll(async function () {
    const base = "/task/" + pid + "/analysis/";
    const [d, h, r] = await Promise.all([api("GET", base + "date"), api("GET", base + "hour"), api("GET", base + "runtime")]);
    clearError();
    const byHour = {};
    h.data.forEach(function (x) { byHour[parseInt(x[0], 10)] = x[1]; });
    const hours = [];
    for (let i = 0; i < 24; i++) hours.push({ label: String(i).padStart(2, "0") + ":00", short: String(i), value: byHour[i] || 0 });
    fillIf(box, [d.data, h.data, r.data], function () { return [
      barChart("Tasks per day", lastDays(d.data, 30)),
      barChart("Tasks per hour of day", hours),
      barChart("Runtime of finished tasks (minutes, share)", Object.keys(r.data).map(function (k) { return { label: k + " min", short: k, value: parseFloat(r.data[k]) }; }), { unit: "%" })]; });
  }, 10000);
};

// ---- agents (agent-pull) -------------------------------------------------

App.pages.agents = function (ctx) {
  const body = el("tbody");
  ctx.main.appendChild(pageTitle("Agents"));
  ctx.main.appendChild(el("p", { class: "hint" }, "Agents of the agent-pull executor (all projects) and when they last called in."));
  ctx.main.appendChild(table(["Agent", "Connected", "Last contact", "Version", "Running", "Queued"], body, "agents"));
  poll(async function () {
    let r;
    try {
      r = await api("GET", "/plugin/agent-pull/agents");
    } catch (e) {
      fill(body, el("tr", null, el("td", { colspan: 6 }, e.status === 404 ? "The agent-pull plugin is not loaded." : e.message)));
      return;
    }
    keyedRows(body, r.data, function (a) { return a.name; }, function (a) {
      return el("tr", { class: "agent" }, el("td", null, a.name), el("td", null, a.connected ? "yes" : "no"),
        el("td", null, a.last_contact || "never"), el("td", null, a.version || ""),
        el("td", null, (a.running || []).map(function (x) { return el("div", null, "task " + x.task + ": " + x.step_name + (x.stopping ? " (stopping)" : "")); })),
        el("td", null, a.queued));
    }, el("tr", null, el("td", { colspan: 6 }, "No agents configured.")));
  }, 5000);
};
