"""The workloads on this project's embedded runtime (`LocalEnvironment`, one process).

Durability is the bindings' `synchronous` setting (WAL in every case): `NORMAL`, the
default, or `FULL`. Logging is on, JSON lines to a file, as a service would log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import resource
import time
from pathlib import Path
from typing import Any

from kumofire_jobs import CreateRequest, JobContext, create_runtime
from kumofire_jobs.core import precise_sleep
from kumofire_jobs.core.bindings import MessageBatch
from kumofire_jobs.core.log import configure_logging
from kumofire_jobs.core.states import ConsumeOutcome
from kumofire_jobs.local import layout
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.local.gc_tuning import freeze_startup_heap

BATCH = 100  # create_many size
CALLERS = 32  # concurrent callers of create in the e2e_concurrent workload
LAYOUT = layout.ONE_FILE  # the data directory's layout (local/layout.py)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Recorder:
    """The handlers: no-op, start minus the arrival time in the payload, start and due."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.starts: list[tuple[float, float]] = []

    async def noop(self, ctx: JobContext) -> None:
        return None

    async def probe(self, ctx: JobContext) -> None:
        self.samples.append(time.time() - ctx.job.payload)

    async def timer(self, ctx: JobContext) -> None:
        self.starts.append((time.time(), ctx.job.scheduled_for.timestamp()))


class BenchEnvironment(LocalEnvironment):
    """Counts the runs whose `succeeded` outcome the queue consumer recorded in D1."""

    expected = 0
    succeeded = 0
    all_done: asyncio.Event

    async def queue(self, batch: MessageBatch) -> None:
        results = await self.runtime.consume_batch(batch, self.resources)
        self.succeeded += sum(1 for r in results if r.outcome == ConsumeOutcome.SUCCEEDED)
        if self.succeeded >= self.expected:
            self.all_done.set()


def _environment(
    data_dir: Path, synchronous: str, expected: int
) -> tuple[BenchEnvironment, Recorder]:
    recorder = Recorder()
    runtime = create_runtime(
        {"noop": recorder.noop, "probe": recorder.probe, "timer": recorder.timer}
    )
    env = BenchEnvironment(runtime, data_dir, synchronous=synchronous, layout=LAYOUT)
    env.expected = expected
    env.all_done = asyncio.Event()
    return env, recorder


def _logging(log_path: Path | None) -> Any:
    """JSON lines to `log_path`; None leaves logging as it is (in-process tests)."""
    if log_path is None:
        return contextlib.nullcontext()
    stream = log_path.open("w")
    configure_logging(json=True, stream=stream)
    return stream


async def e2e(
    runs: int, batch: int, synchronous: str, data_dir: Path, log_path: Path | None, callers: int = 1
) -> dict[str, Any]:
    """`runs` no-op runs created and completed: by `create_many` of `batch` (batch > 1), or
    by `callers` tasks each calling `create` one at a time (as concurrent requests would)."""
    with _logging(log_path):
        env, _ = _environment(data_dir, synchronous, runs)
        await env.start()
        freeze_startup_heap()  # as `kumofire-jobs dev` does
        cpu0, t0 = _cpu(), time.perf_counter()
        if batch > 1:
            for offset in range(0, runs, batch):
                await env.jobs.create_many([CreateRequest(name="noop")] * min(batch, runs - offset))
        else:

            async def caller(count: int) -> None:
                for _ in range(count):
                    await env.jobs.create("noop")

            share, extra = divmod(runs, callers)
            await asyncio.gather(*(caller(share + (i < extra)) for i in range(callers)))
        created = time.perf_counter()
        await env.all_done.wait()
        elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
        await env.stop()
    return {
        "runs": runs,
        "completed": env.succeeded,
        "seconds": elapsed,
        "create_seconds": created - t0,
        "runs_per_second": runs / elapsed,
        "cpu_ms_per_run": cpu * 1000 / runs,
        "synchronous": synchronous,
    }


async def create(
    runs: int, many: bool, synchronous: str, data_dir: Path, log_path: Path | None
) -> dict[str, Any]:
    """`runs` creates with nothing consuming (migrated, not started: no consumer, no alarms;
    each run is due, so its coordinator's arm sends its message); each counted once its call
    returned, i.e. after its commit."""
    with _logging(log_path):
        env, _ = _environment(data_dir, synchronous, runs)
        await env.migrate()
        freeze_startup_heap()  # as `kumofire-jobs dev` does
        t0 = time.perf_counter()
        if many:
            for offset in range(0, runs, BATCH):
                await env.jobs.create_many([CreateRequest(name="noop")] * min(BATCH, runs - offset))
        else:
            for _ in range(runs):
                await env.jobs.create("noop")
        elapsed = time.perf_counter() - t0
        counts = await env.jobs.counts()
        stored = counts["scheduled"] + counts["queued"]  # due at create: inserted `queued`
        await env.stop()
    return {
        "runs": runs,
        "stored": stored,
        "seconds": elapsed,
        "creates_per_second": runs / elapsed,
        "synchronous": synchronous,
    }


async def latency(
    rate: float, runs: int, synchronous: str, data_dir: Path, log_path: Path | None
) -> dict[str, Any]:
    """Open loop: run i arrives at t0 + i / rate (its create starts then, whatever the
    others are doing); start minus arrival."""
    with _logging(log_path):
        env, recorder = _environment(data_dir, synchronous, runs)
        await env.start()
        freeze_startup_heap()  # as `kumofire-jobs dev` does
        t0 = time.time() + 0.2
        creates: list[asyncio.Future[Any]] = []
        for i in range(runs):
            slot = t0 + i / rate
            # Arrive on time, as a request wakes the loop the moment its bytes come in (and
            # as Huey's producer thread arrives, with `time.sleep`): the loop's own timer
            # wakes up to a millisecond late (epoll waits in whole milliseconds, rounded up),
            # which was counted as the run's latency.
            await precise_sleep.sleep_until(slot)
            creates.append(asyncio.ensure_future(env.jobs.create("probe", slot)))
        await asyncio.gather(*creates)
        await env.all_done.wait()
        await env.stop()
    return {
        "runs": runs,
        "completed": env.succeeded,
        "samples": recorder.samples,
        "synchronous": synchronous,
    }


async def lateness(
    runs: int, window: float, lead: float, synchronous: str, data_dir: Path, log_path: Path | None
) -> dict[str, Any]:
    """`runs` runs due evenly over `window` seconds starting `lead` seconds from now, created
    with create_many of 100 (due times in whole milliseconds)."""
    with _logging(log_path):
        env, recorder = _environment(data_dir, synchronous, runs)
        await env.start()
        freeze_startup_heap()  # as `kumofire-jobs dev` does
        first = (int(time.time() * 1000) + int(lead * 1000)) / 1000
        dues = [round(first + window * (i + 0.5) / runs, 3) for i in range(runs)]
        created_late = 0
        for offset in range(0, runs, BATCH):
            chunk = dues[offset : offset + BATCH]
            await env.jobs.create_many(
                [
                    CreateRequest(name="timer", run_at=dt.datetime.fromtimestamp(due, dt.UTC))
                    for due in chunk
                ]
            )
            now = time.time()
            created_late += sum(1 for due in chunk if due < now)
        await env.all_done.wait()
        await env.stop()
    return {
        "runs": runs,
        "completed": env.succeeded,
        "created_late": created_late,
        "starts": recorder.starts,
        "synchronous": synchronous,
    }
