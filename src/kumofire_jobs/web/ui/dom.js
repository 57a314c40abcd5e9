// Building the page: elements from data (text only, never HTML from the API), and the
// formats the views share: times, durations, JSON, status badges, tables.

const SVG = "http://www.w3.org/2000/svg";

// h("a.class", {href}, child, ...): children are nodes, strings, or arrays of them.
export function h(tag, attrs, ...children) {
  const [name, ...classes] = tag.split(".");
  const node = document.createElement(name || "div");
  if (classes.length) node.className = classes.join(" ");
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

export function s(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  append(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the CSP
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

// --- times -----------------------------------------------------------------------------------

export function parseTime(value) {
  return value ? Date.parse(value) : NaN;
}

export function ago(value, now = Date.now()) {
  const at = parseTime(value);
  if (Number.isNaN(at)) return "—";
  const seconds = Math.round((at - now) / 1000);
  const size = Math.abs(seconds);
  let text;
  if (size < 2) return "now";
  if (size < 60) text = `${size}s`;
  else if (size < 3600) text = `${Math.floor(size / 60)}m`;
  else if (size < 86400) text = `${Math.floor(size / 3600)}h`;
  else text = `${Math.floor(size / 86400)}d`;
  return seconds < 0 ? `${text} ago` : `in ${text}`;
}

export function localTime(value) {
  const at = parseTime(value);
  if (Number.isNaN(at)) return "";
  const date = new Date(at);
  const pad = (n, size = 2) => String(n).padStart(size, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.` +
    pad(date.getMilliseconds(), 3)
  );
}

// A time shown relative, exact (local and UTC) on hover.
export function time(value) {
  if (!value) return h("span.muted", null, "—");
  return h("time", { datetime: value, title: `${localTime(value)} local\n${value}` }, ago(value));
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${Math.round(seconds % 60)}s`;
  return `${Math.floor(minutes / 60)}h ${minutes % 60}m`;
}

export function between(start, end) {
  const a = parseTime(start);
  const b = end ? parseTime(end) : Date.now();
  return Number.isNaN(a) || Number.isNaN(b) ? null : b - a;
}

// --- values ----------------------------------------------------------------------------------

export function json(value) {
  return h("pre.json", null, JSON.stringify(value, null, 2));
}

export function compact(value) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 160 ? text.slice(0, 159) + "…" : text;
}

export function firstLine(text) {
  if (!text) return "";
  const lines = String(text).trim().split("\n");
  return lines[lines.length - 1]; // a traceback's last line names the exception
}

export const STATUSES = [
  "scheduled",
  "waiting",
  "queued",
  "running",
  "succeeded",
  "failed",
  "canceled",
];

export const FINISHED = new Set(["succeeded", "failed", "canceled"]);

export function badge(status) {
  return h(`span.badge.s-${status}`, null, status);
}

export function shortId(id) {
  return id && id.length > 14 ? id.slice(0, 4) + "…" + id.slice(-8) : id;
}

export function idLink(id, title) {
  return h("a.mono", { href: `#/runs/${encodeURIComponent(id)}`, title: title || id }, id);
}

// --- tables ----------------------------------------------------------------------------------

// columns: [{label, cell(row) -> node|string, className}]; rows get data-href when href(row).
export function table(columns, rows, { href, empty = "Nothing here." } = {}) {
  if (!rows.length) return h("p.empty", null, empty);
  const head = h(
    "thead",
    null,
    h(
      "tr",
      null,
      columns.map((c) => h("th", { class: c.className, scope: "col" }, c.label)),
    ),
  );
  const body = h(
    "tbody",
    null,
    rows.map((row) =>
      h(
        "tr",
        { dataset: href ? { href: href(row) } : undefined },
        columns.map((c) =>
          h("td", { class: c.className, dataset: c.label ? { label: c.label } : undefined }, c.cell(row)),
        ),
      ),
    ),
  );
  return h("div.table-wrap", null, h("table.grid", null, head, body));
}

export function section(title, ...children) {
  return h("section.card", null, title ? h("h2", null, title) : null, ...children);
}

export function field(label, ...value) {
  return [h("dt", null, label), h("dd", null, ...value)];
}
