// One run: its fields, payload, progress, result, attempts, logs and children, and the
// actions its status allows.

import { ApiError, del, get, post, query } from "./api.js";
import {
  FINISHED,
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
import { PAGE, runTable, runsHash } from "./runs.js";

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
