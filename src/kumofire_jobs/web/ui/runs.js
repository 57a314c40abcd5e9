// Runs: the list with its filters, cursor paging and bulk actions; one run with its history.

import { ApiError, del, get, post, query } from "./api.js";
import {
  FINISHED,
  STATUSES,
  badge,
  between,
  compact,
  duration,
  field,
  firstLine,
  h,
  idLink,
  json,
  section,
  shortId,
  table,
  time,
} from "./dom.js";

const PAGE = 50;
const FILTERS = ["status", "name", "schedule_id", "parent_id"];
const BULK_FILTERS = ["status", "name", "schedule_id"];

// The cursors of the pages before this one, for "Previous" (a link keeps only its own cursor).
let trail = { key: "", cursors: [] };

let jobNames = null;

async function knownJobs() {
  if (!jobNames) {
    jobNames = get("/v1/jobs").then(
      (jobs) => jobs.items.map((job) => job.name),
      () => [],
    );
  }
  return jobNames;
}

function runsHash(filter, cursor) {
  return "#/runs" + query({ ...filter, cursor });
}

export async function runList(params, app) {
  const filter = {};
  for (const key of FILTERS) if (params.get(key)) filter[key] = params.get(key);
  const cursor = params.get("cursor") || null;
  const key = JSON.stringify(filter);
  if (trail.key !== key || !cursor) trail = { key, cursors: [] };
  const [page, names, counts] = await Promise.all([
    get("/v1/runs" + query({ ...filter, limit: PAGE, cursor })),
    knownJobs(),
    // By job only (the counts take no other filter): shown when the job is the only other one.
    filter.schedule_id || filter.parent_id ? null : get("/v1/runs:counts" + query({ name: filter.name })),
  ]);
  const previous = trail.cursors.length ? trail.cursors[trail.cursors.length - 1] : undefined;
  const pager = h(
    "div.pager",
    null,
    cursor
      ? h(
          "a.button",
          {
            href: runsHash(filter, previous || undefined),
            "data-page": "prev",
            onclick: () => trail.cursors.pop(),
          },
          previous === undefined && trail.cursors.length === 0 ? "⇤ First page" : "← Previous",
        )
      : null,
    page.next_cursor
      ? h(
          "a.button",
          {
            href: runsHash(filter, page.next_cursor),
            "data-page": "next",
            onclick: () => trail.cursors.push(cursor),
          },
          "Next →",
        )
      : null,
    h("span.muted", null, `${page.items.length} on this page`),
  );
  return {
    title: "Runs",
    body: [
      h("div.page-head", null, h("h1", null, "Runs"), filterForm(filter, names, app)),
      statusTabs(filter, counts),
      filter.parent_id
        ? h(
            "p.chip",
            null,
            "Children of ",
            idLink(filter.parent_id),
            " ",
            h("a", { href: runsHash({ ...filter, parent_id: undefined }) }, "× clear"),
          )
        : null,
      runTable(page.items, { empty: "No runs match." }),
      pager,
      bulkPanel(filter, app),
    ],
  };
}

// One link per status, with its count when known; the current one marked.
function statusTabs(filter, counts) {
  const total = counts ? Object.values(counts).reduce((a, b) => a + b, 0) : null;
  const tab = (status, label, n) =>
    h(
      `a.tab${status ? `.s-${status}` : ""}`,
      {
        href: runsHash({ ...filter, status }),
        "aria-current": (filter.status || undefined) === status ? "page" : undefined,
      },
      label,
      n === null || n === undefined ? null : h(`span.tab-n${n ? "" : ".zero-n"}`, null, String(n)),
    );
  const shown = STATUSES.filter((status) => !counts || status in counts);
  return h(
    "nav.tabs",
    { "aria-label": "Status" },
    tab(undefined, "all", total),
    shown.map((status) => tab(status, status, counts ? counts[status] : null)),
  );
}

function filterForm(filter, names, app) {
  const name = h("input", {
    name: "name",
    type: "search",
    placeholder: "job name  ( / )",
    "aria-label": "Job name",
    list: "job-names",
    value: filter.name || "",
    "data-filter": "",
    autocomplete: "off",
  });
  const schedule = h("input.wide", {
    name: "schedule_id",
    type: "search",
    placeholder: "schedule id",
    "aria-label": "Schedule id",
    value: filter.schedule_id || "",
    autocomplete: "off",
  });
  const form = h(
    "form.filters",
    { role: "search" },
    name,
    h(
      "datalist",
      { id: "job-names" },
      names.map((value) => h("option", { value })),
    ),
    schedule,
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = { status: filter.status, parent_id: filter.parent_id };
    for (const input of [name, schedule]) next[input.name] = input.value.trim();
    app.go(runsHash(next));
  });
  return form;
}

export function runTable(runs, { empty = "No runs.", compactView = false } = {}) {
  return table(
    [
      { label: "Run", className: "id", cell: (run) => idLink(run.id) },
      { label: "Job", cell: (run) => run.name },
      { label: "Status", cell: (run) => badge(run.status) },
      {
        label: "Att.",
        className: "num",
        cell: (run) => h("span", { title: "attempt / max attempts" }, `${run.attempt}/${run.max_attempts}`),
      },
      { label: "Due", className: compactView ? "wide" : "", cell: (run) => time(run.scheduled_for) },
      { label: "Created", className: "wide", cell: (run) => time(run.created_at) },
      {
        label: "Took",
        className: "num wide",
        cell: (run) => (run.started_at ? duration(between(run.started_at, run.finished_at)) : "—"),
      },
      {
        label: "Error",
        className: "err wide",
        cell: (run) => h("span", { title: run.last_error || "" }, firstLine(run.last_error)),
      },
    ],
    runs,
    { href: (run) => `#/runs/${encodeURIComponent(run.id)}`, empty },
  );
}

function bulkPanel(filter, app) {
  const given = BULK_FILTERS.filter((key) => filter[key]);
  const described = given.map((key) => `${key} = ${filter[key]}`).join(", ");
  const body = Object.fromEntries(given.map((key) => [key, filter[key]]));
  const action = (verb, path, note) =>
    h(
      "button",
      {
        type: "button",
        class: verb === "Delete" ? "danger" : "",
        disabled: !given.length,
        onclick: async () => {
          const ok = await app.confirm(
            `${verb} the runs where ${described}?`,
            `At most 1,000 runs change per call; ${note}.`,
            `${verb} matching runs`,
          );
          if (!ok) return;
          await app.act(async () => {
            const result = await post(path, body);
            return (
              `${verb}: ${result.count} run${result.count === 1 ? "" : "s"}` +
              (result.has_more ? "; more match: run it again" : "")
            );
          });
        },
      },
      `${verb} matching`,
    );
  return h(
    "details.bulk",
    null,
    h("summary", null, "Bulk actions"),
    h(
      "p.muted.small",
      null,
      given.length
        ? `Acts on every run where ${described}, not only this page.`
        : "Filter by status, job or schedule first: a bulk action needs at least one.",
    ),
    h(
      "div.buttons",
      null,
      action("Cancel", "/v1/runs:cancel", "only unfinished runs match"),
      action("Retry", "/v1/runs:retry", "only failed and canceled runs match"),
      action("Delete", "/v1/runs:delete", "only finished runs match, deleted with their history"),
    ),
  );
}

// --- one run ---------------------------------------------------------------------------------

async function optional(path) {
  try {
    return { value: await get(path) };
  } catch (error) {
    if (error instanceof ApiError && error.status !== 401) return { error };
    throw error;
  }
}

export async function runView(id, app) {
  const enc = encodeURIComponent(id);
  const [run, attempts, logs, children] = await Promise.all([
    get(`/v1/runs/${enc}`),
    optional(`/v1/runs/${enc}/attempts`),
    optional(`/v1/runs/${enc}/logs`),
    optional("/v1/runs" + query({ parent_id: id, limit: PAGE })),
  ]);
  // Only runs that name this one as parent (a server without flows ignores `parent_id`).
  if (children.value) children.value.items = children.value.items.filter((c) => c.parent_id === id);
  const finished = FINISHED.has(run.status);
  return {
    title: `Run ${id}`,
    live: finished ? 0 : 2000,
    body: [
      h(
        "div.page-head",
        null,
        h("h1.mono.run-id", null, run.id),
        badge(run.status),
        h("div.actions", null, runActions(run, app)),
      ),
      h(
        "div.cols",
        null,
        section("Run", summary(run)),
        h(
          "div.stack",
          null,
          run.progress !== null && run.progress !== undefined
            ? section("Progress", progress(run.progress))
            : null,
          run.last_error ? section("Last error", h("pre.error", null, run.last_error)) : null,
          section("Payload", json(run.payload)),
          run.result !== null && run.result !== undefined
            ? section("Result", json(run.result))
            : null,
        ),
      ),
      section("Attempts", attemptsTable(attempts)),
      section("Logs", logsTable(logs)),
      children.value && children.value.items.length
        ? section(
            "Children",
            runTable(children.value.items, { compactView: true }),
            children.value.next_cursor
              ? h("a", { href: runsHash({ parent_id: id }) }, "All children →")
              : null,
          )
        : null,
    ],
  };
}

function summary(run) {
  const took = run.started_at ? duration(between(run.started_at, run.finished_at)) : "—";
  return h(
    "dl.fields",
    null,
    field("Job", h("a", { href: runsHash({ name: run.name }) }, run.name)),
    field("Attempt", `${run.attempt} of ${run.max_attempts}`),
    field("Due", time(run.scheduled_for)),
    field("Created", time(run.created_at)),
    field("Started", time(run.started_at)),
    field("Finished", time(run.finished_at)),
    field("Took", took),
    field("Priority", String(run.priority ?? 0)),
    run.concurrency_key ? field("Key", h("code", null, run.concurrency_key)) : null,
    run.timeout ? field("Timeout", `${run.timeout} s`) : null,
    run.dedupe_key ? field("Dedupe key", h("code", null, run.dedupe_key)) : null,
    run.schedule_id
      ? field(
          "Schedule",
          h("a.mono", { href: runsHash({ schedule_id: run.schedule_id }) }, run.schedule_id),
        )
      : null,
    run.parent_id ? field("Parent", idLink(run.parent_id)) : null,
    field("Updated", time(run.updated_at)),
  );
}

// A number from 0 to 1 (or to 100), or {current, total}: a bar; anything else: its JSON.
function progress(value) {
  let fraction = null;
  if (typeof value === "number") fraction = value <= 1 ? value : value / 100;
  else if (value && typeof value === "object" && typeof value.total === "number" && value.total > 0) {
    const done = value.current ?? value.done ?? value.completed;
    if (typeof done === "number") fraction = done / value.total;
  }
  if (fraction === null || !Number.isFinite(fraction)) return json(value);
  const percent = Math.max(0, Math.min(100, fraction * 100));
  return h(
    "div",
    null,
    h(
      "div.progress",
      { role: "progressbar", "aria-valuenow": percent.toFixed(0), "aria-valuemin": 0, "aria-valuemax": 100 },
      h("span", { style: { width: `${percent.toFixed(1)}%` } }),
    ),
    h("p.small", null, `${percent.toFixed(0)}%`, typeof value === "object" ? " · " + compact(value) : ""),
  );
}

function unavailable(result, what) {
  const error = result.error;
  return h("p.muted", null, `${what} unavailable: ${error.message}`);
}

function attemptsTable(result) {
  if (result.error) return unavailable(result, "Attempts");
  return table(
    [
      { label: "#", className: "num", cell: (a) => String(a.attempt) },
      { label: "Outcome", cell: (a) => (a.outcome ? badge(a.outcome) : badge("running")) },
      { label: "Started", cell: (a) => time(a.started_at) },
      { label: "Finished", className: "wide", cell: (a) => time(a.finished_at) },
      {
        label: "Took",
        className: "num",
        cell: (a) => duration(a.duration_ms ?? between(a.started_at, a.finished_at)),
      },
      {
        label: "Error",
        className: "err-cell",
        cell: (a) =>
          a.error
            ? h("details", null, h("summary", null, firstLine(a.error)), h("pre.error", null, a.error))
            : "",
      },
    ],
    result.value.items,
    { empty: "No attempt yet." },
  );
}

function logsTable(result) {
  if (result.error) return unavailable(result, "Logs");
  return table(
    [
      { label: "At", className: "nowrap", cell: (line) => time(line.at) },
      { label: "#", className: "num wide", cell: (line) => String(line.attempt ?? "") },
      { label: "Level", cell: (line) => h(`span.lvl.l-${line.level}`, null, line.level) },
      { label: "Event", className: "mono", cell: (line) => line.event },
      {
        label: "Fields",
        className: "mono fields-cell",
        cell: (line) =>
          line.fields && Object.keys(line.fields).length
            ? h("span", { title: JSON.stringify(line.fields, null, 2) }, compact(line.fields))
            : "",
      },
    ],
    result.value.items,
    { empty: "Nothing logged." },
  );
}

function runActions(run, app) {
  const enc = encodeURIComponent(run.id);
  const button = (label, className, enabled, why, perform) =>
    h(
      "button",
      { type: "button", class: className, disabled: !enabled, title: enabled ? "" : why, onclick: perform },
      label,
    );
  const finished = FINISHED.has(run.status);
  return [
    button("Cancel", "", !finished, "a finished run cannot be canceled", () =>
      app.act(async () => {
        await post(`/v1/runs/${enc}/cancel`);
        return `${shortId(run.id)}: canceled`;
      }),
    ),
    button(
      "Retry",
      "",
      run.status === "failed" || run.status === "canceled",
      "only a failed or canceled run can be retried",
      () =>
        app.act(async () => {
          await post(`/v1/runs/${enc}/retry`);
          return `${shortId(run.id)}: scheduled again`;
        }),
    ),
    button("Promote", "", run.status === "scheduled", "only a scheduled run can be made due now", () =>
      app.act(async () => {
        await post(`/v1/runs/${enc}/promote`);
        return `${shortId(run.id)}: due now`;
      }),
    ),
    button("Delete", "danger", finished, "only a finished run can be deleted", async () => {
      if (!(await app.confirm(`Delete run ${run.id}?`, "Its history goes with it.", "Delete run")))
        return;
      await app.act(async () => {
        await del(`/v1/runs/${enc}`);
        app.go(runsHash({ name: run.name }));
        return `${shortId(run.id)}: deleted`;
      }, false);
    }),
  ];
}
