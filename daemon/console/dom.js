// The one place the console builds DOM. Text goes in only through text
// nodes (never innerHTML), so names, variables and log lines are shown as
// they are, whatever they contain.
"use strict";

// el("a", {href: "#/x", class: "btn", onclick: fn}, "text", otherNode, [more])
function el(tag, attrs) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (let i = 2; i < arguments.length; i++) append(node, arguments[i]);
  return node;
}

// The same for SVG elements (charts).
function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(node, attrs);
  for (let i = 2; i < arguments.length; i++) append(node, arguments[i]);
  return node;
}

function setAttrs(node, attrs) {
  if (!attrs) return;
  for (const k of Object.keys(attrs)) {
    const v = attrs[k];
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      node.addEventListener(k.slice(2), v);
    } else if (k === "dataset") {
      for (const d of Object.keys(v)) node.dataset[d] = String(v[d]);
    } else if (k === "value" && "value" in node) {
      node.value = String(v);
    } else if (k === "checked" || k === "selected" || k === "disabled") {
      node[k] = !!v;
    } else {
      node.setAttribute(k, v === true ? "" : String(v));
    }
  }
}

function append(node, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) {
    for (const c of child) append(node, c);
  } else if (child instanceof Node) {
    node.appendChild(child);
  } else {
    node.appendChild(document.createTextNode(String(child)));
  }
}

// Replaces the children of `node`.
function fill(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  for (let i = 1; i < arguments.length; i++) append(node, arguments[i]);
  return node;
}

// ---- ANSI colours -------------------------------------------------------
// One parser: SGR codes (ESC [ … m) become spans with classes; every other
// escape sequence is dropped; the text itself goes in as text nodes.

const ANSI_RE = /\x1b\[([0-9;?]*)([A-Za-z])|\x1b[@-Z\\-_]/g;

function ansiState() {
  return { bold: false, dim: false, italic: false, underline: false, inverse: false, fg: null, bg: null };
}

function sgr(st, params) {
  const codes = params === "" ? [0] : params.split(";").map(function (p) { return p === "" ? 0 : parseInt(p, 10); });
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) Object.assign(st, ansiState());
    else if (c === 1) st.bold = true;
    else if (c === 2) st.dim = true;
    else if (c === 3) st.italic = true;
    else if (c === 4) st.underline = true;
    else if (c === 7) st.inverse = true;
    else if (c === 22) { st.bold = false; st.dim = false; }
    else if (c === 23) st.italic = false;
    else if (c === 24) st.underline = false;
    else if (c === 27) st.inverse = false;
    else if (c >= 30 && c <= 37) st.fg = c - 30;
    else if (c === 39) st.fg = null;
    else if (c >= 40 && c <= 47) st.bg = c - 40;
    else if (c === 49) st.bg = null;
    else if (c >= 90 && c <= 97) st.fg = c - 90 + 8;
    else if (c >= 100 && c <= 107) st.bg = c - 100 + 8;
    else if ((c === 38 || c === 48) && codes[i + 1] === 5) {
      // 256 colours: the 16 basic ones keep their class, others are dropped.
      const n = codes[i + 2];
      if (n < 16) { if (c === 38) st.fg = n; else st.bg = n; }
      i += 2;
    } else if ((c === 38 || c === 48) && codes[i + 1] === 2) {
      i += 4;
    }
  }
}

function ansiClasses(st) {
  const cls = [];
  if (st.bold) cls.push("a-b");
  if (st.dim) cls.push("a-d");
  if (st.italic) cls.push("a-i");
  if (st.underline) cls.push("a-u");
  const fg = st.inverse ? st.bg : st.fg;
  const bg = st.inverse ? st.fg : st.bg;
  if (fg !== null) cls.push("a-f" + fg);
  if (bg !== null) cls.push("a-g" + bg);
  if (st.inverse && fg === null) cls.push("a-inv");
  return cls.join(" ");
}

// Appends `text` to `node` with its colours; returns `node`.
function ansi(node, text) {
  const st = ansiState();
  let last = 0;
  let m;
  const put = function (s) {
    if (!s) return;
    const cls = ansiClasses(st);
    node.appendChild(cls ? el("span", { class: cls }, s) : document.createTextNode(s));
  };
  ANSI_RE.lastIndex = 0;
  while ((m = ANSI_RE.exec(text)) !== null) {
    put(text.slice(last, m.index));
    if (m[2] === "m") sgr(st, m[1]);
    last = ANSI_RE.lastIndex;
  }
  put(text.slice(last));
  return node;
}

// The text a person sees of a line with ANSI codes.
function ansiStrip(text) {
  return text.replace(ANSI_RE, "");
}
