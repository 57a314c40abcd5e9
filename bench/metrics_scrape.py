"""How long one `GET /v1/metrics` scrape takes on the embedded runtime as runs pile up.

Creates RUNS runs over three jobs through the jobs API (all but UNFINISHED of them run to
`succeeded` on the manual clock; the rest wait an hour, `scheduled`), then times SCRAPES
scrapes through the HTTP app (in process) and prints the median and the slowest.

    uv run python -m bench.metrics_scrape --runs 10000 --runs 87000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from kumofire_jobs import CreateRequest, JobContext, create_runtime
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app


async def noop(ctx: JobContext) -> None:
    return None


async def measure(runs: int, unfinished: int, scrapes: int) -> dict[str, Any]:
    clock = ManualClock()
    runtime = create_runtime({"a": noop, "b": noop, "c": noop}, clock=clock)
    names = ["a", "b", "c"]
    with tempfile.TemporaryDirectory(prefix="kumofire-scrape-") as tmp:
        env = LocalEnvironment(runtime, Path(tmp))
        await env.start()
        try:
            started = time.perf_counter()
            for start in range(0, runs, 100):
                await env.jobs.create_many(
                    [
                        CreateRequest(name=names[i % 3], delay=3600 if i < unfinished else None)
                        for i in range(start, min(runs, start + 100))
                    ]
                )
                await clock.advance(0)
            await clock.advance(1)
            filled = time.perf_counter() - started
            counts = await env.jobs.counts()
            transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                times = []
                for _ in range(scrapes):
                    t0 = time.perf_counter()
                    response = await http.get("/v1/metrics")
                    times.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, response.text
                    await clock.advance(15)
        finally:
            await env.stop(drain_seconds=0)
    return {
        "runs": runs,
        "counts": {k: v for k, v in counts.items() if v},
        "fill_seconds": round(filled, 1),
        "scrape_ms_median": round(statistics.median(times), 1),
        "scrape_ms_max": round(max(times), 1),
        "scrape_ms_first": round(times[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, action="append", help="runs stored (repeatable)")
    parser.add_argument("--unfinished", type=int, default=300, help="of them left scheduled")
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    for runs in args.runs or [10_000]:
        print(json.dumps(asyncio.run(measure(runs, args.unfinished, args.scrapes))))


if __name__ == "__main__":
    main()
