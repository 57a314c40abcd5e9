"""What a limited run costs next to an unlimited one (issue 13): D1 statements and rows, queue
operations, Durable Object requests (RPC calls and alarms) and storage rows, per run, on an
instrumented LocalEnvironment and the manual clock.

    uv run python -m bench.limits_cost [--runs 20]

Scenarios, each in an environment of its own:

- `unlimited`: a job without options, one run at a time;
- `unlimited beside a limited job`: the same job in a runtime where another job is limited
  (it must cost the same: the guarded start skips only the limited jobs' runs);
- `limited, no wait`: `concurrency=10`, one run at a time (a slot is always free);
- `limited, each waits once`: `concurrency=1`, all runs created at once (every run but the
  first waits in the limiter's line and is woken through its coordinator).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.instrument import Counts, InstrumentedEnvironment, Recorder
from kumofire_jobs import JobContext, JobOptions, create_runtime
from kumofire_jobs.core.clock import ManualClock


async def _noop(ctx: JobContext) -> None:
    return None


def per_run(counts: Counts, runs: int) -> dict[str, Any]:
    d1_read = sum(s.rows_read or 0 for s in counts.d1)
    d1_written = sum(s.rows_written or 0 for s in counts.d1)
    rpc = sum(counts.rpc.values())
    return {
        "d1_statements": len(counts.d1) / runs,
        "d1_rows_read": d1_read / runs,
        "d1_rows_written": d1_written / runs,
        "queue_ops": sum(counts.queue.values()) / runs,
        "do_requests": (rpc + counts.alarms) / runs,
        "do_rpc": {m: n / runs for m, n in sorted(counts.rpc.items())},
        "do_alarms": counts.alarms / runs,
        "do_rows_read": counts.storage["rows_read"] / runs,
        "do_rows_written": counts.storage["rows_written"] / runs,
    }


async def scenario(
    name: str, runs: int, options: dict[str, JobOptions], *, at_once: bool
) -> dict[str, Any]:
    clock = ManualClock()
    recorder = Recorder()
    handlers = {"job": _noop, "other": _noop}
    runtime = create_runtime(handlers, clock=clock, job_options=options)
    with tempfile.TemporaryDirectory(prefix="kumofire-limits-") as tmp:
        env = InstrumentedEnvironment(runtime, Path(tmp), recorder)
        await env.start()
        await env.jobs.create("job")  # warm-up, not counted: the schema check
        await clock.advance(1)
        mark = recorder.mark()
        ids = []
        for _ in range(runs):
            ids.append((await env.jobs.create("job")).kumofire_job_run_id)
            if not at_once:
                await clock.advance(0)
        for _ in range(200):
            await clock.advance(0.01)
        counts = recorder.since(mark)
        statuses = {str((await env.jobs.get(i)).status) for i in ids}  # type: ignore[union-attr]
        await env.stop()
    assert statuses == {"succeeded"}, (name, statuses)
    return {"scenario": name, "runs": runs, **per_run(counts, runs)}


async def measure(runs: int) -> list[dict[str, Any]]:
    return [
        await scenario("unlimited", runs, {}, at_once=False),
        await scenario(
            "unlimited beside a limited job", runs,
            {"other": JobOptions(concurrency=1)}, at_once=False,
        ),
        await scenario(
            "limited, no wait", runs, {"job": JobOptions(concurrency=10)}, at_once=False
        ),
        await scenario(
            "limited, each waits once", runs, {"job": JobOptions(concurrency=1)}, at_once=True
        ),
    ]  # fmt: skip


COLUMNS = [
    ("D1 statements", "d1_statements"),
    ("D1 rows read", "d1_rows_read"),
    ("D1 rows written", "d1_rows_written"),
    ("queue ops", "queue_ops"),
    ("DO requests", "do_requests"),
    ("DO rows read", "do_rows_read"),
    ("DO rows written", "do_rows_written"),
]


def markdown(results: list[dict[str, Any]]) -> str:
    head = "| per run | " + " | ".join(r["scenario"] for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    for label, key in COLUMNS:
        lines.append(f"| {label} | " + " | ".join(f"{r[key]:.2f}" for r in results) + " |")
    lines.append("")
    for r in results:
        rpc = ", ".join(f"{m} {n:.2f}" for m, n in r["do_rpc"].items())
        lines.append(f"- {r['scenario']}: RPC {rpc}; alarms {r['do_alarms']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = asyncio.run(measure(args.runs))
    print(json.dumps(results, indent=2) if args.json else markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
