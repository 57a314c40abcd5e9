// D1's own row counters for a trace of statements: replays them, in order, on the D1 that
// `wrangler d1 execute --local` runs (miniflare's, on workerd's SQLite), and prints each
// statement's meta. wrangler's --json output keeps only `duration` of that meta, so this
// asks miniflare directly, as wrangler does (`getD1Database`), for rows_read and
// rows_written.
//
// stdin: {"statements": [{"sql": "...", "params": [...], "batch": id or null}, ...]}
// stdout: [{"rows_read": n, "rows_written": n, "changes": n} or {"error": "..."}, ...]
// Consecutive statements with the same batch id run as one db.batch() (one transaction).
import { Miniflare, convertV4MiniflareOptions } from "miniflare";

const input = JSON.parse(await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (chunk) => { data += chunk; });
  process.stdin.on("end", () => resolve(data));
}));

// miniflare 4.2026-08 takes its v4 options through convertV4MiniflareOptions, as wrangler does.
const mf = new Miniflare(
  convertV4MiniflareOptions({ modules: true, script: "", d1Databases: { DB: "bench" } }),
);
const db = await mf.getD1Database("DB");
const out = [];
const meta = (m) => ({ rows_read: m.rows_read, rows_written: m.rows_written, changes: m.changes });
try {
  const statements = input.statements;
  for (let i = 0; i < statements.length; ) {
    const first = statements[i];
    let j = i + 1;
    if (first.batch !== null) {
      while (j < statements.length && statements[j].batch === first.batch) j++;
    }
    const group = statements.slice(i, j);
    try {
      if (first.batch !== null) {
        const results = await db.batch(group.map((s) => db.prepare(s.sql).bind(...s.params)));
        for (const r of results) out.push(meta(r.meta));
      } else {
        const r = await db.prepare(first.sql).bind(...first.params).all();
        out.push(meta(r.meta));
      }
    } catch (e) {
      for (const _ of group) out.push({ error: String(e?.message ?? e) });
    }
    i = j;
  }
} finally {
  await mf.dispose();
}
process.stdout.write(JSON.stringify(out));
