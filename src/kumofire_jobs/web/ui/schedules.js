// Schedules: each with its timing, its next occurrence, enable, disable and delete.

import { del, get, post, query } from "./api.js";
import { h, section, table, time } from "./dom.js";

const PAGE = 50;

export async function scheduleList(params, app) {
  const enabled = params.get("enabled") || "";
  const cursor = params.get("cursor") || null;
  const page = await get("/v1/schedules" + query({ enabled, limit: PAGE, cursor }));
  const show = h(
    "select",
    {
      "aria-label": "Which schedules",
      onchange: (event) => app.go("#/schedules" + query({ enabled: event.target.value })),
    },
    [
      ["", "all"],
      ["true", "enabled"],
      ["false", "disabled"],
    ].map(([value, label]) => h("option", { value, selected: enabled === value }, label)),
  );
  return {
    title: "Schedules",
    body: [
      h("div.page-head", null, h("h1", null, "Schedules"), h("form.filters", null, show)),
      section(
        null,
        table(
          [
            {
              label: "Schedule",
              cell: (sch) =>
                h(
                  "a",
                  { href: "#/runs" + query({ schedule_id: sch.id }), title: `${sch.id}: its runs` },
                  sch.key || sch.id,
                ),
            },
            { label: "Job", cell: (sch) => sch.name },
            {
              label: "When",
              className: "mono",
              cell: (sch) =>
                sch.type === "interval"
                  ? `every ${sch.expr} s`
                  : sch.expr + (sch.timezone && sch.timezone !== "UTC" ? ` (${sch.timezone})` : ""),
            },
            {
              label: "State",
              cell: (sch) =>
                sch.enabled ? h("span.badge.on", null, "enabled") : h("span.badge.off", null, "disabled"),
            },
            { label: "Next", cell: (sch) => time(sch.next_run_at) },
            { label: "Last", className: "wide", cell: (sch) => time(sch.last_scheduled_at) },
            {
              label: "Count",
              className: "num wide",
              cell: (sch) => (sch.limit ? `${sch.count ?? 0}/${sch.limit}` : String(sch.count ?? 0)),
            },
            { label: "", className: "row-actions", cell: (sch) => actions(sch, app) },
          ],
          page.items,
          { empty: "No schedules." },
        ),
      ),
      h(
        "div.pager",
        null,
        cursor ? h("a.button", { href: "#/schedules" + query({ enabled }), "data-page": "prev" }, "⇤ First page") : null,
        page.next_cursor
          ? h(
              "a.button",
              { href: "#/schedules" + query({ enabled, cursor: page.next_cursor }), "data-page": "next" },
              "Next →",
            )
          : null,
      ),
    ],
  };
}

function actions(sch, app) {
  const enc = encodeURIComponent(sch.id);
  const label = sch.key || sch.id;
  return [
    h(
      "button.small",
      {
        type: "button",
        onclick: () =>
          app.act(async () => {
            await post(`/v1/schedules/${enc}/${sch.enabled ? "disable" : "enable"}`);
            return `${label}: ${sch.enabled ? "disabled" : "enabled"}`;
          }),
      },
      sch.enabled ? "Disable" : "Enable",
    ),
    h(
      "button.small.danger",
      {
        type: "button",
        onclick: async () => {
          const ok = await app.confirm(
            `Delete schedule ${label}?`,
            "Its pending occurrence is canceled; the runs it made are kept.",
            "Delete schedule",
          );
          if (ok)
            await app.act(async () => {
              await del(`/v1/schedules/${enc}`);
              return `${label}: deleted`;
            });
        },
      },
      "Delete",
    ),
  ];
}
