"""Benchmarks of the embedded runtime (issue targets: >= 2,000 no-op runs/s end to end; start
minus due p50 < 2 ms, p99 < 10 ms at 10% load, p99 < 50 ms at 50% load; never early).

    uv run python bench/runtime_bench.py throughput --runs 20000 [--batch 100 | --concurrency 32]
    uv run python bench/runtime_bench.py throughput --runs 10000 --batch 100 --job-concurrency 10
    uv run python bench/runtime_bench.py throughput --runs 10000 --batch 100 --compare 10 --reps 3
    uv run python bench/runtime_bench.py fairness --keys 100 --per-key 100
    uv run python bench/runtime_bench.py lateness --runs 1000 --rate 200

Everything runs in one process on the embedded bindings with durable writes (WAL,
synchronous=NORMAL by default) and JSON logging on (to a file, as a service would log).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kumofire_jobs import CreateRequest, JobContext, JobOptions, create_runtime
from kumofire_jobs.core.log import configure_logging
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.local.gc_tuning import freeze_startup_heap


class Completion:
    """Counts handler calls and records each start time."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.starts: dict[str, float] = {}
        self.done = asyncio.Event()

    async def handler(self, ctx: JobContext) -> None:
        self.starts[ctx.job.id] = time.time()
        if len(self.starts) >= self.expected:
            self.done.set()


class CountingEnvironment(LocalEnvironment):
    """Knows when every run's `succeeded` outcome is in D1: once the handler has been called
    for each, it reads the counts until they say so (a run a limited job's consumer was handed
    over has no queue message of its own, so consume results do not count it)."""

    expected: int

    async def all_succeeded(self, completion: Completion) -> None:
        await completion.done.wait()
        # The outcome is in D1 and nowhere else: read it (a few reads in the last moments).
        while (await self.jobs.counts()).get("succeeded", 0) < self.expected:  # noqa: ASYNC110
            await asyncio.sleep(0.002)


async def _environment(
    completion: Completion,
    data_dir: Path,
    synchronous: str,
    job_concurrency: int | None = None,
    options: JobOptions | None = None,
    handler: Any = None,
) -> CountingEnvironment:
    if options is None and job_concurrency is not None:
        options = JobOptions(concurrency=job_concurrency)
    job_options = {} if options is None else {"noop": options}
    runtime = create_runtime({"noop": handler or completion.handler}, job_options=job_options)
    env = CountingEnvironment(runtime, data_dir, synchronous=synchronous)
    env.expected = completion.expected
    await env.start()
    freeze_startup_heap()  # as `kumofire-jobs dev` does
    return env


async def throughput(
    runs: int,
    batch: int,
    synchronous: str,
    data_dir: Path,
    concurrency: int = 1,
    job_concurrency: int | None = None,
    due_in: float | None = None,
) -> dict[str, Any]:
    """With `due_in` (and `batch` > 1), every run is created due at one instant `due_in`
    seconds after the start, and the clock starts then: the throughput of `runs` runs
    waiting at once, not of runs created as they go."""
    completion = Completion(runs)
    env = await _environment(completion, data_dir, synchronous, job_concurrency)
    cpu0 = time.process_time()
    start = time.perf_counter()
    run_at = None if due_in is None else datetime.now(UTC) + timedelta(seconds=due_in)
    if batch > 1:
        for offset in range(0, runs, batch):
            size = min(batch, runs - offset)
            await env.jobs.create_many([CreateRequest(name="noop", run_at=run_at)] * size)
    else:
        # `concurrency` callers, each creating one run at a time (as concurrent requests do).
        async def caller(count: int) -> None:
            for _ in range(count):
                await env.jobs.create("noop")

        share, extra = divmod(runs, concurrency)
        await asyncio.gather(*(caller(share + (i < extra)) for i in range(concurrency)))
    created = time.perf_counter()
    create_seconds = created - start
    if due_in is not None:
        assert not completion.starts, "a run started before the due time: raise --due-in"
        await asyncio.sleep(start + due_in - time.perf_counter())
        start, cpu0 = time.perf_counter(), time.process_time()
    await env.all_succeeded(completion)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    await env.stop()
    return {
        "benchmark": "throughput",
        "runs": runs,
        "create_batch": batch,
        "concurrency": concurrency,
        "job_concurrency": job_concurrency,
        "due_at_once": due_in is not None,
        "synchronous": synchronous,
        "seconds": round(elapsed, 3),
        "runs_per_second": round(runs / elapsed),
        "create_seconds": round(create_seconds, 3),
        "cpu_ms_per_run": round(cpu * 1000 / runs, 3),
    }


async def compare(
    runs: int,
    batch: int,
    synchronous: str,
    tmp: Path,
    job_concurrency: int,
    reps: int,
    due_in: float | None = None,
) -> dict[str, Any]:
    """Unlimited and `concurrency=job_concurrency` side by side in one process, alternating
    (so both meet the same load on a shared machine), `reps` times each."""
    results: dict[str, list[dict[str, Any]]] = {"unlimited": [], "limited": []}
    for rep in range(reps):
        for label, limit in (("unlimited", None), ("limited", job_concurrency)):
            data = tmp / f"{label}-{rep}"
            result = await throughput(
                runs, batch, synchronous, data, job_concurrency=limit, due_in=due_in
            )
            print(json.dumps({"rep": rep, "job": label, **result}), file=sys.stderr)
            results[label].append(result)
    per_second = {k: [r["runs_per_second"] for r in v] for k, v in results.items()}
    ratios = [
        lim / unl for unl, lim in zip(per_second["unlimited"], per_second["limited"], strict=True)
    ]
    return {
        "benchmark": "throughput_compare",
        "runs": runs,
        "create_batch": batch,
        "job_concurrency": job_concurrency,
        "due_at_once": due_in is not None,
        "reps": reps,
        "unlimited_runs_per_second": per_second["unlimited"],
        "limited_runs_per_second": per_second["limited"],
        "unlimited_median": statistics.median(per_second["unlimited"]),
        "limited_median": statistics.median(per_second["limited"]),
        "limited_over_unlimited": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
        "unlimited_cpu_ms_per_run": [r["cpu_ms_per_run"] for r in results["unlimited"]],
        "limited_cpu_ms_per_run": [r["cpu_ms_per_run"] for r in results["limited"]],
    }


async def fairness(
    keys: int,
    per_key: int,
    synchronous: str,
    data_dir: Path,
    job_concurrency: int | None = None,
    due_in: float | None = None,
) -> dict[str, Any]:
    """`key_concurrency=1` (and `concurrency=job_concurrency` if given), `keys` keys of
    `per_key` no-op runs each, created key after key (all of the first key's runs before any
    of the second's: the order that would starve the last keys without round robin).
    Reports when each key's first and last run finished, from the start (or, with `due_in`,
    from the instant every run is due)."""
    total = keys * per_key
    completion = Completion(total)
    finished: dict[str, list[float]] = {}

    async def handler(ctx: JobContext) -> None:
        finished.setdefault(ctx.job.concurrency_key or "", []).append(time.perf_counter())
        await completion.handler(ctx)

    options = JobOptions(key_concurrency=1, concurrency=job_concurrency)
    env = await _environment(completion, data_dir, synchronous, options=options, handler=handler)
    start = time.perf_counter()
    run_at = None if due_in is None else datetime.now(UTC) + timedelta(seconds=due_in)
    for k in range(keys):
        key = f"tenant-{k:03d}"
        for offset in range(0, per_key, 100):
            size = min(100, per_key - offset)
            request = CreateRequest(name="noop", concurrency_key=key, run_at=run_at)
            await env.jobs.create_many([request] * size)
    created = time.perf_counter() - start
    if due_in is not None:
        assert not finished, "a run started before the due time: raise --due-in"
        await asyncio.sleep(start + due_in - time.perf_counter())
        start = time.perf_counter()
    await env.all_succeeded(completion)
    elapsed = time.perf_counter() - start
    await env.stop()
    last = sorted(max(times) - start for times in finished.values())
    first = sorted(min(times) - start for times in finished.values())
    return {
        "benchmark": "fairness",
        "keys": keys,
        "runs_per_key": per_key,
        "runs": total,
        "job_concurrency": job_concurrency,
        "due_at_once": due_in is not None,
        "synchronous": synchronous,
        "seconds": round(elapsed, 3),
        "runs_per_second": round(total / elapsed),
        "create_seconds": round(created, 3),
        "last_finish_s": {
            "min": round(last[0], 3),
            "median": round(statistics.median(last), 3),
            "max": round(last[-1], 3),
        },
        "max_lag_between_keys_s": round(last[-1] - last[0], 3),
        "first_finish_s": {
            "min": round(first[0], 3),
            "median": round(statistics.median(first), 3),
            "max": round(first[-1], 3),
        },
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def lateness(runs: int, rate: float, synchronous: str, data_dir: Path) -> dict[str, Any]:
    """Create `runs` delayed runs, due one every 1/rate s starting 1 s from now."""
    completion = Completion(runs)
    env = await _environment(completion, data_dir, synchronous)
    base = time.time() + 1.0
    due: dict[str, float] = {}
    for i in range(runs):
        when = base + i / rate
        # Offer the load open-loop: each run is created shortly before it is due.
        wait = when - 0.5 - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        created = await env.jobs.create("noop", delay=max(0.0, when - time.time()))
        run = await env.jobs.get(created.kumofire_job_run_id)
        assert run is not None
        due[run.id] = run.scheduled_for.timestamp()
    await completion.done.wait()
    await env.stop()
    late_ms = [(completion.starts[i] - due[i]) * 1000 for i in due]
    return {
        "benchmark": "lateness",
        "runs": runs,
        "rate_per_second": rate,
        "synchronous": synchronous,
        "p50_ms": round(_percentile(late_ms, 50), 3),
        "p99_ms": round(_percentile(late_ms, 99), 3),
        "max_ms": round(max(late_ms), 3),
        "mean_ms": round(statistics.fmean(late_ms), 3),
        "early": sum(1 for v in late_ms if v < 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("benchmark", choices=["throughput", "lateness", "fairness"])
    parser.add_argument("--keys", type=int, default=100, help="fairness: concurrency keys")
    parser.add_argument("--per-key", type=int, default=100, help="fairness: runs per key")
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=1, help="create_many size (1: create)")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="callers of create at once (with --batch 1)"
    )
    parser.add_argument(
        "--job-concurrency", type=int, default=None, help="the job's JobOptions.concurrency"
    )
    parser.add_argument(
        "--compare",
        type=int,
        default=None,
        metavar="N",
        help="throughput of an unlimited job and of one with concurrency=N, side by side",
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions with --compare")
    parser.add_argument(
        "--due-in",
        type=float,
        default=None,
        metavar="S",
        help="throughput: create every run due at one instant S seconds ahead, time from then",
    )
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"])
    parser.add_argument("--log", type=Path, default=None, help="log file (default: temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = args.log or Path(tmp) / "log.jsonl"
        with log_path.open("w") as log_file:
            configure_logging(json=True, stream=log_file)
            if args.benchmark == "throughput" and args.compare is not None:
                result = asyncio.run(
                    compare(
                        args.runs,
                        args.batch,
                        args.synchronous,
                        Path(tmp),
                        args.compare,
                        args.reps,
                        args.due_in,
                    )
                )
            elif args.benchmark == "throughput":
                result = asyncio.run(
                    throughput(
                        args.runs,
                        args.batch,
                        args.synchronous,
                        Path(tmp) / "data",
                        args.concurrency,
                        args.job_concurrency,
                        args.due_in,
                    )
                )
            elif args.benchmark == "fairness":
                result = asyncio.run(
                    fairness(
                        args.keys,
                        args.per_key,
                        args.synchronous,
                        Path(tmp) / "data",
                        args.job_concurrency,
                        args.due_in,
                    )
                )
            else:
                result = asyncio.run(
                    lateness(args.runs, args.rate, args.synchronous, Path(tmp) / "data")
                )
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
