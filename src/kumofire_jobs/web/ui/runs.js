// Runs: the list with its status tabs, filters, cursor paging and bulk actions.

import { get, post, query } from "./api.js";
import { STATUSES, badge, between, duration, firstLine, h, idLink, table, time } from "./dom.js";

export const PAGE = 50;
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

export function runsHash(filter, cursor) {
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
  // A bulk call filters by status, job and schedule, not by parent: on a flow's children it
  // would change every other run the rest of the filter matches.
  const byParent = Boolean(filter.parent_id);
  const given = byParent ? [] : BULK_FILTERS.filter((key) => filter[key]);
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
      byParent
        ? "Bulk actions filter by status, job or schedule, not by parent: cancel or retry the " +
            "parent to act on its children."
        : given.length
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
