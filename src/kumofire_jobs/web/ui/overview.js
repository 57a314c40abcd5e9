// Overview: counts by status and by job, and the last hour drawn from the runs list.

import { get, query } from "./api.js";
import { STATUSES, h, parseTime, s, section, table } from "./dom.js";

const HOUR_MS = 3600_000;
const BUCKETS = 60;
const MAX_PAGES = 5; // at most 1,000 runs read for the chart

export async function overview() {
  const [counts, jobs, hour] = await Promise.all([
    get("/v1/runs:counts"),
    get("/v1/jobs"),
    lastHour(),
  ]);
  const statuses = STATUSES.filter((status) => status in counts).concat(
    Object.keys(counts).filter((status) => !STATUSES.includes(status)),
  );
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  return [
    h("div.page-head", null, h("h1", null, "Overview"), h("span.muted", null, `${total} runs`)),
    h(
      "div.tiles",
      null,
      statuses.map((status) =>
        h(
          `a.tile.s-${status}`,
          { href: `#/runs?status=${status}`, title: `${status} runs` },
          h("span.tile-n", null, String(counts[status])),
          h("span.tile-l", null, status),
        ),
      ),
    ),
    section(
      "Last hour",
      chart(hour),
      h(
        "p.muted.small",
        null,
        `Runs created per minute, by status now${hour.truncated ? ` (the latest ${hour.read} runs)` : ""}.`,
      ),
    ),
    section("By job", jobTable(jobs.items, statuses)),
  ];
}

async function lastHour() {
  const since = Date.now() - HOUR_MS;
  const runs = [];
  let cursor = null;
  let truncated = false;
  for (let page = 0; page < MAX_PAGES; page++) {
    const result = await get("/v1/runs" + query({ limit: 200, cursor }));
    let older = false;
    for (const run of result.items) {
      if (parseTime(run.created_at) < since) older = true;
      else runs.push(run);
    }
    cursor = result.next_cursor;
    if (older || !cursor) break;
    if (page === MAX_PAGES - 1) truncated = true;
  }
  return { since, runs, truncated, read: runs.length };
}

const GROUPS = [
  ["succeeded", "succeeded"],
  ["failed", "failed"],
  ["canceled", "canceled"],
  ["active", "scheduled, waiting, queued or running"],
];

function groupOf(status) {
  return ["succeeded", "failed", "canceled"].includes(status) ? status : "active";
}

function chart({ since, runs }) {
  const buckets = Array.from({ length: BUCKETS }, () => ({
    succeeded: 0,
    failed: 0,
    canceled: 0,
    active: 0,
  }));
  for (const run of runs) {
    const index = Math.min(
      BUCKETS - 1,
      Math.floor((parseTime(run.created_at) - since) / (HOUR_MS / BUCKETS)),
    );
    if (index >= 0) buckets[index][groupOf(run.status)] += 1;
  }
  const most = Math.max(1, ...buckets.map((b) => b.succeeded + b.failed + b.canceled + b.active));
  const width = 600;
  const height = 120;
  const bar = width / BUCKETS;
  const bars = [];
  buckets.forEach((bucket, i) => {
    let y = height;
    const minute = new Date(since + i * (HOUR_MS / BUCKETS));
    const label = `${minute.getHours()}:${String(minute.getMinutes()).padStart(2, "0")}`;
    for (const [group] of GROUPS) {
      const n = bucket[group];
      if (!n) continue;
      const barHeight = Math.max(1, (n / most) * (height - 4));
      y -= barHeight;
      bars.push(
        s(
          "rect",
          {
            class: `bar g-${group}`,
            x: (i * bar + 0.5).toFixed(1),
            y: y.toFixed(1),
            width: (bar - 1).toFixed(1),
            height: barHeight.toFixed(1),
          },
          s("title", null, `${label}: ${n} ${group}`),
        ),
      );
    }
  });
  const svg = s(
    "svg",
    {
      class: "chart",
      viewBox: `0 0 ${width} ${height + 1}`,
      preserveAspectRatio: "none",
      role: "img",
      "aria-label": `Runs created in the last hour: ${runs.length}`,
    },
    s("line", { class: "axis", x1: 0, x2: width, y1: height + 0.5, y2: height + 0.5 }),
    bars,
  );
  const legend = h(
    "div.legend",
    null,
    GROUPS.map(([group, title]) =>
      h("span", { title }, h(`i.sw.g-${group}`), group === "active" ? "unfinished" : group),
    ),
    h("span.muted", null, `max ${most}/min`),
  );
  const ticks = h(
    "div.ticks",
    { "aria-hidden": "true" },
    h("span", null, "60 min ago"),
    h("span", null, "30 min"),
    h("span", null, "now"),
  );
  return h("div.chart-box", null, svg, ticks, legend);
}

function jobTable(jobs, statuses) {
  return table(
    [
      {
        label: "Job",
        cell: (job) => h("a", { href: `#/runs?name=${encodeURIComponent(job.name)}` }, job.name),
      },
      {
        label: "State",
        cell: (job) =>
          job.paused ? h("span.badge.paused", null, "paused") : h("span.muted", null, "active"),
      },
      ...statuses.map((status) => ({
        label: status,
        className: `num${["scheduled", "waiting", "canceled"].includes(status) ? " wide" : ""}`,
        cell: (job) => {
          const n = (job.counts || {})[status] || 0;
          return n
            ? h(
                `a.n.s-${status}`,
                { href: `#/runs?name=${encodeURIComponent(job.name)}&status=${status}` },
                String(n),
              )
            : h("span.zero", null, "0");
        },
      })),
    ],
    jobs,
    { href: (job) => `#/runs?name=${encodeURIComponent(job.name)}`, empty: "No jobs registered." },
  );
}
