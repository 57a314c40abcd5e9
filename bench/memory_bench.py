"""Memory of a long-running embedded runtime: RSS as no-op runs go through it.

    uv run python bench/memory_bench.py [--runs 100000] [--every 20000] [--concurrency 32] [--http]
    uv run python bench/memory_bench.py --pending [--runs 100000] [--every 20000] [--http]

The runtime runs as `kumofire-jobs dev` runs it (the embedded bindings, JSON logs to a file,
the startup heap frozen), on the system clock. Runs are created by `--concurrency` callers,
each one `jobs.create` at a time, as concurrent requests do; with `--http`, each a
`POST /v1/runs` to the HTTP API app `kumofire-jobs dev` serves (in process, through httpx's
ASGI transport: no sockets, no uvicorn). At every `--every` runs it waits
until each run created so far has completed, collects garbage, and prints one JSON line: the
process's resident set (VmRSS), the coordinator objects alive (instances the Durable Object
namespace holds, its book-keeping entries, and `CoordinatorActor` objects the collector can
still reach). The target is a flat RSS once the process has warmed up: at the last checkpoint
within 10% of the first.

With `--pending` the runs are created with `delay=86400` (a day ahead) and stay pending: the
runtime runs on a manual clock, and at every `--every` runs the clock moves past the idle
eviction period (nothing is due, so nothing runs) before RSS is read. Then a fresh process
opens the same data directory (a restart with every run still pending), moves its clock past
the idle period likewise, and prints its RSS. Target: flat, as for completed runs; before the
fix every pending run kept its coordinator's book-keeping and alarm in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from kumofire_coordinator import CoordinatorActor
from kumofire_jobs import JobContext, create_runtime
from kumofire_jobs.core.bindings import MessageBatch
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.log import configure_logging
from kumofire_jobs.local.durable_objects import IDLE_EVICTION_SECONDS
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.local.gc_tuning import freeze_startup_heap
from kumofire_jobs.web import create_app


def rss_kib() -> int:
    """The resident set now (Linux: VmRSS), else the peak `getrusage` reports."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class CountingEnvironment(LocalEnvironment):
    """Counts consume outcomes as the queue consumer records them (after the D1 write)."""

    succeeded = 0
    target = 0
    reached: asyncio.Event

    async def queue(self, batch: MessageBatch) -> None:
        results = await self.runtime.consume_batch(batch, self.resources)
        self.succeeded += sum(1 for r in results if r.outcome == "succeeded")
        if self.succeeded >= self.target:
            self.reached.set()


async def noop(ctx: JobContext) -> None:
    return None


def live(kind: type) -> int:
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


async def measure(
    runs: int, every: int, concurrency: int, http: bool, data_dir: Path
) -> list[dict[str, Any]]:
    env = CountingEnvironment(create_runtime({"noop": noop}), data_dir)
    env.reached = asyncio.Event()
    await env.start()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(lambda request: env.jobs)),
        base_url="http://bench",
    )

    async def create() -> None:
        if not http:
            await env.jobs.create("noop")
            return
        response = await client.post("/v1/runs", json={"name": "noop"})
        assert response.status_code == 202, response.text

    freeze_startup_heap()  # as `kumofire-jobs dev` does
    namespace = env.JOB_COORDINATOR
    rows: list[dict[str, Any]] = []
    print(json.dumps({"runs": 0, "rss_kib": rss_kib()}), flush=True)
    start = time.perf_counter()
    created = 0
    while created < runs:
        step = min(every, runs - created)

        async def caller(count: int) -> None:
            for _ in range(count):
                await create()

        share, extra = divmod(step, concurrency)
        await asyncio.gather(*(caller(share + (i < extra)) for i in range(concurrency)))
        created += step
        env.target = created
        env.reached.clear()
        if env.succeeded < created:
            await env.reached.wait()
        await asyncio.sleep(0.1)  # the last releases' commits and closes
        gc.collect()
        row = {
            "runs": created,
            "seconds": round(time.perf_counter() - start, 1),
            "rss_kib": rss_kib(),
            "instances": namespace.instance_count(),
            "entries": namespace.actor_count(),
            "coordinator_actors": live(CoordinatorActor),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    await client.aclose()
    await env.stop()
    return rows


PENDING_DELAY_SECONDS = 86_400.0


async def measure_pending(
    runs: int, every: int, concurrency: int, http: bool, data_dir: Path
) -> list[dict[str, Any]]:
    """RSS as runs due a day ahead accumulate, each checkpoint after the idle period."""
    clock = ManualClock()
    env = LocalEnvironment(create_runtime({"noop": noop}, clock=clock), data_dir)
    await env.start()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(lambda request: env.jobs)),
        base_url="http://bench",
    )

    async def create() -> None:
        if not http:
            await env.jobs.create("noop", delay=PENDING_DELAY_SECONDS)
            return
        body = {"name": "noop", "delay": PENDING_DELAY_SECONDS}
        response = await client.post("/v1/runs", json=body)
        assert response.status_code == 202, response.text

    freeze_startup_heap()
    namespace = env.JOB_COORDINATOR
    rows: list[dict[str, Any]] = []
    print(json.dumps({"pending": 0, "rss_kib": rss_kib()}), flush=True)
    start = time.perf_counter()
    created = 0
    while created < runs:
        step = min(every, runs - created)

        async def caller(count: int) -> None:
            for _ in range(count):
                await create()

        share, extra = divmod(step, concurrency)
        await asyncio.gather(*(caller(share + (i < extra)) for i in range(concurrency)))
        created += step
        await clock.advance(IDLE_EVICTION_SECONDS + 1)  # idle eviction; nothing is due yet
        gc.collect()
        row = {
            "pending": created,
            "seconds": round(time.perf_counter() - start, 1),
            "rss_kib": rss_kib(),
            "instances": namespace.instance_count(),
            "entries": namespace.actor_count(),
            "coordinator_actors": live(CoordinatorActor),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    await client.aclose()
    await env.close()
    return rows


async def reopen(data_dir: Path, elapsed: float) -> dict[str, Any]:
    """A restart: open the data directory with every run still pending."""
    clock = ManualClock()
    await clock.advance(elapsed)  # as late as the first process's clock got
    env = LocalEnvironment(create_runtime({"noop": noop}, clock=clock), data_dir)
    await env.start()
    freeze_startup_heap()
    started = rss_kib()
    await clock.advance(IDLE_EVICTION_SECONDS + 1)
    gc.collect()
    namespace = env.JOB_COORDINATOR
    row = {
        "restart": True,
        "rss_started_kib": started,
        "rss_kib": rss_kib(),
        "entries": namespace.actor_count(),
    }
    await env.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--http", action="store_true", help="create through the HTTP API")
    parser.add_argument("--pending", action="store_true", help="runs due a day ahead")
    parser.add_argument("--reopen", type=Path, help=argparse.SUPPRESS)  # --pending's restart
    parser.add_argument("--elapsed", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reopen is not None:
        with (args.reopen.parent / "restart-log.jsonl").open("w") as log_file:
            configure_logging(json=True, stream=log_file)
            print(json.dumps(asyncio.run(reopen(args.reopen, args.elapsed))), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp, (Path(tmp) / "log.jsonl").open("w") as log_file:
        configure_logging(json=True, stream=log_file)
        data = Path(tmp) / "data"
        if args.pending:
            rows = asyncio.run(
                measure_pending(args.runs, args.every, args.concurrency, args.http, data)
            )
            elapsed = len(rows) * (IDLE_EVICTION_SECONDS + 1)
            command = [sys.executable, __file__, "--reopen", str(data), "--elapsed", str(elapsed)]
            subprocess.run(command, check=True)
        else:
            rows = asyncio.run(measure(args.runs, args.every, args.concurrency, args.http, data))
    first, last = rows[0]["rss_kib"], rows[-1]["rss_kib"]
    growth = (last - first) / first
    print(
        json.dumps(
            {
                "rss_first_kib": first,
                "rss_last_kib": last,
                "growth_percent": round(growth * 100, 1),
                "flat_within_10_percent": abs(growth) <= 0.10,
            }
        )
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
