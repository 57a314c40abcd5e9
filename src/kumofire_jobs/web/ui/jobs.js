// Jobs: every registered job with its options and counts; pause and resume.

import { get, post } from "./api.js";
import { STATUSES, h, section, table } from "./dom.js";

export async function jobList(params, app) {
  const jobs = await get("/v1/jobs");
  return {
    title: "Jobs",
    body: [
      h("div.page-head", null, h("h1", null, "Jobs"), h("span.muted", null, `${jobs.items.length} registered`)),
      section(
        null,
        table(
          [
            {
              label: "Job",
              cell: (job) => h("a", { href: `#/runs?name=${encodeURIComponent(job.name)}` }, job.name),
            },
            {
              label: "State",
              cell: (job) =>
                job.paused ? h("span.badge.paused", null, "paused") : h("span.badge.on", null, "active"),
            },
            { label: "Options", className: "opts", cell: (job) => options(job.options || {}) },
            { label: "Runs", className: "countbar-cell", cell: (job) => countBar(job) },
            { label: "", className: "row-actions", cell: (job) => pauseButton(job, app) },
          ],
          jobs.items,
          { empty: "No jobs registered." },
        ),
      ),
    ],
  };
}

function seconds(value) {
  return value === null || value === undefined ? null : `${value} s`;
}

function options(o) {
  const parts = [];
  if (o.concurrency) parts.push(["concurrency", o.concurrency]);
  if (o.key_concurrency) parts.push(["per key", o.key_concurrency]);
  if (o.rate_limit) parts.push(["rate", `${o.rate_limit.limit}/${o.rate_limit.per} s`]);
  if (o.key_rate_limit) parts.push(["key rate", `${o.key_rate_limit.limit}/${o.key_rate_limit.per} s`]);
  if (o.retry) parts.push(["attempts", o.retry.max_attempts]);
  if (o.timeout) parts.push(["timeout", seconds(o.timeout)]);
  if (o.keep_succeeded) parts.push(["keep ok", seconds(o.keep_succeeded)]);
  if (o.keep_failed) parts.push(["keep failed", seconds(o.keep_failed)]);
  if (!parts.length) return h("span.muted", null, "defaults");
  return h(
    "span.opts-list",
    { title: JSON.stringify(o, null, 2) },
    parts.map(([name, value]) => h("span.opt", null, h("span.muted", null, name + " "), String(value))),
  );
}

function countBar(job) {
  const counts = job.counts || {};
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const shown = STATUSES.filter((status) => counts[status]);
  return h(
    "div.countbar",
    null,
    h(
      "div.bar-track",
      { title: shown.map((status) => `${status}: ${counts[status]}`).join("\n") || "no runs" },
      shown.map((status) =>
        h(`span.s-${status}`, { style: { flexGrow: String(counts[status]) } }),
      ),
    ),
    h(
      "span.small",
      null,
      shown.length
        ? shown.map((status) =>
            h(
              `a.n.s-${status}`,
              { href: `#/runs?name=${encodeURIComponent(job.name)}&status=${status}` },
              `${counts[status]} ${status}`,
            ),
          )
        : h("span.muted", null, total ? "" : "no runs"),
    ),
  );
}

function pauseButton(job, app) {
  const enc = encodeURIComponent(job.name);
  return h(
    "button.small",
    {
      type: "button",
      "data-job": job.name,
      onclick: () =>
        app.act(async () => {
          await post(`/v1/jobs/${enc}/${job.paused ? "resume" : "pause"}`);
          return `${job.name}: ${job.paused ? "resumed" : "paused"}`;
        }),
    },
    job.paused ? "Resume" : "Pause",
  );
}
