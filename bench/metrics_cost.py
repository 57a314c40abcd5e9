"""What one `GET /v1/metrics` scrape costs in D1 rows read, by D1's own counters.

Stores RUNS runs (over three jobs, one paused; all but the newest UNFINISHED marked
`succeeded`) and SCHEDULES schedules on an instrumented
embedded environment, reads the metrics once, then replays the whole D1 trace on miniflare's
D1 (workerd's SQLite, `bench/d1_counts.mjs`) and prints the rows read by each statement of
the scrape's batch, and what scraping every 15 s costs a month at D1's price. It measures a
process's second scrape (its first sweeps every run at once; core/metrics.py).

    uv run python -m bench.metrics_cost --runs 1000 --runs 15000 --schedules 50 --unfinished 300

Needs node and miniflare (`source scripts/node.sh`; wrangler's, installed by `npm ci`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.cost import calibrate
from bench.instrument import InstrumentedEnvironment, Recorder
from kumofire_jobs import CreateRequest, JobContext, create_runtime
from kumofire_jobs.core.clock import ManualClock

SCRAPES_PER_MONTH = 30 * 24 * 3600 // 15  # every 15 s, a 30-day month: 172,800
INCLUDED_ROWS_READ = 25_000_000_000  # Workers Paid: 25 billion rows read a month included
USD_PER_MILLION_ROWS_READ = 0.001  # beyond that (D1 pricing, December 2026)
FREE_ROWS_READ_PER_DAY = 5_000_000  # Workers Free: 5 million rows read a day


async def noop(ctx: JobContext) -> None:
    return None


async def measure(runs: int, schedules: int, unfinished: int) -> dict[str, Any]:
    recorder = Recorder()
    clock = ManualClock()
    runtime = create_runtime({"a": noop, "b": noop, "c": noop}, clock=clock)
    with tempfile.TemporaryDirectory(prefix="kumofire-metrics-") as tmp:
        env = InstrumentedEnvironment(runtime, Path(tmp), recorder)
        await env.start()
        try:
            names = ["a", "b", "c"]
            for start in range(0, runs, 100):
                batch = [
                    CreateRequest(name=names[i % 3], delay=3600)
                    for i in range(start, min(runs, start + 100))
                ]
                await env.jobs.create_many(batch)
            # All but the newest `unfinished` runs finished: a table of kept history.
            await (
                env.resources.db.prepare(
                    "UPDATE kumofire_job_runs SET status = 'succeeded', finished_at = created_at "
                    "WHERE id NOT IN (SELECT id FROM kumofire_job_runs ORDER BY id DESC LIMIT ?)"
                )
                .bind(unfinished)
                .run()
            )
            for i in range(schedules):
                await env.jobs.create_schedule(names[i % 3], every=3600, enabled=i % 2 == 0)
            await env.jobs.pause_job("c")
            # A process's first scrape sweeps the whole table; the steady state is the next.
            await env.jobs.metrics()
            mark = recorder.mark()
            snapshot = await env.jobs.metrics()
            scrape = recorder.since(mark).d1
            offset = len(mark.d1)
            trace = list(recorder.total.d1)
        finally:
            await env.stop(drain_seconds=0)
    stored = sum(sum(job.counts.values()) for job in snapshot.jobs.values())
    metas = calibrate(trace)[offset : offset + len(scrape)]
    per_statement = [
        {"sql": s.sql[:60], "rows_read": m["rows_read"]} for s, m in zip(scrape, metas, strict=True)
    ]
    rows_read = sum(m["rows_read"] for m in metas)
    monthly = rows_read * SCRAPES_PER_MONTH
    return {
        "runs_stored": stored,
        "schedules": schedules,
        "statements": per_statement,
        "rows_read_per_scrape": rows_read,
        "rows_read_per_month_at_15s": monthly,
        "usd_per_month_beyond_included": max(0, monthly - INCLUDED_ROWS_READ)
        / 1_000_000
        * USD_PER_MILLION_ROWS_READ,
        "share_of_free_daily_rows_read": rows_read * (24 * 3600 // 15) / FREE_ROWS_READ_PER_DAY,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, action="append", help="runs stored (repeatable)")
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--unfinished", type=int, default=300, help="of the runs, left unfinished")
    args = parser.parse_args(argv)
    for runs in args.runs or [1000]:
        print(json.dumps(asyncio.run(measure(runs, args.schedules, args.unfinished)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
