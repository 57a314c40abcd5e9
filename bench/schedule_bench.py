"""Schedule precision on the embedded runtime: start minus nominal time of each occurrence.

    uv run python bench/schedule_bench.py precision           # every: 1 x 60, */2 s cron x 30
    uv run python bench/schedule_bench.py many --schedules 10000

`precision` runs both schedules side by side for a minute. `many` creates N cron schedules
whose occurrences are spread over each minute (second field i % 60), then measures every
occurrence due in the next full minute. Real time, one process, WAL synchronous=NORMAL,
JSON logging to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kumofire_jobs import JobContext, create_runtime
from kumofire_jobs.core.log import configure_logging
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.local.gc_tuning import freeze_startup_heap


def summary(late_ms: list[float]) -> dict[str, Any]:
    ordered = sorted(late_ms)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 3)

    return {
        "count": len(ordered),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": round(ordered[-1], 3),
        "early": sum(1 for v in ordered if v < 0),
    }


class Recorder:
    """Records start minus nominal per schedule label; `done` is set once every label has
    reached its target count."""

    def __init__(self, targets: dict[str, int]) -> None:
        self.targets = targets
        self.late: dict[str, list[float]] = {label: [] for label in targets}
        self.window: tuple[float, float] | None = None
        self.done = asyncio.Event()

    async def handler(self, ctx: JobContext) -> None:
        started = time.time()
        nominal = ctx.job.scheduled_for.timestamp()
        if self.window is None or self.window[0] <= nominal < self.window[1]:
            self.late[str(ctx.job.payload)].append((started - nominal) * 1000)
            if all(len(self.late[k]) >= n for k, n in self.targets.items()):
                self.done.set()


async def precision(data_dir: Path) -> dict[str, Any]:
    recorder = Recorder({"every-1": 60, "cron-2s": 30})
    env = LocalEnvironment(create_runtime({"tick": recorder.handler}), data_dir)
    await env.start()
    freeze_startup_heap()  # as `kumofire-jobs dev` does
    await env.jobs.create_schedule("tick", "every-1", every=1)
    await env.jobs.create_schedule("tick", "cron-2s", cron="*/2 * * * * *")
    await recorder.done.wait()
    await env.stop()
    return {
        "benchmark": "schedule_precision",
        "every_1": summary(recorder.late["every-1"][:60]),
        "cron_every_2s": summary(recorder.late["cron-2s"][:30]),
    }


async def many(schedules: int, data_dir: Path) -> dict[str, Any]:
    recorder = Recorder({"many": schedules})
    env = LocalEnvironment(create_runtime({"tick": recorder.handler}), data_dir)
    await env.start()
    freeze_startup_heap()  # as `kumofire-jobs dev` does
    started = time.time()
    for i in range(schedules):
        await env.jobs.create_schedule("tick", "many", cron=f"{i % 60} * * * * *")
    created = time.time()
    # Measure the first whole minute that starts after every schedule exists.
    window_start = (int(created) // 60 + 1) * 60
    recorder.window = (window_start, window_start + 60)
    recorder.late["many"].clear()
    # Every occurrence of the window should have run a minute after it closes.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(recorder.done.wait(), window_start + 120 - time.time())
    await env.stop()
    return {
        "benchmark": "schedules_many",
        "schedules": schedules,
        "create_seconds": round(created - started, 3),
        "ran_in_window": len(recorder.late["many"]),
        **summary(recorder.late["many"] or [0.0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("benchmark", choices=["precision", "many"])
    parser.add_argument("--schedules", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, (Path(tmp) / "log.jsonl").open("w") as log:
        configure_logging(json=True, stream=log)
        data = Path(tmp) / "data"
        if args.benchmark == "precision":
            result = asyncio.run(precision(data))
        else:
            result = asyncio.run(many(args.schedules, data))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
