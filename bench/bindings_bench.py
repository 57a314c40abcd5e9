"""Micro-benchmarks of the embedded bindings alone (no job runtime, no logging): the cost of
one operation on each hot path, in microseconds of CPU.

    uv run python bench/bindings_bench.py            # every benchmark
    uv run python bench/bindings_bench.py do_rpc d1  # some of them

Each benchmark runs its operation `--ops` times, either one after another (`serial`: every
operation waits for its commit alone) or `--concurrency` at a time (`concurrent`: operations
of one loop turn share a commit), and reports CPU and wall time per operation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kumofire_jobs.core.clock import SystemClock
from kumofire_jobs.local.d1 import LocalD1Database
from kumofire_jobs.local.durable_objects import LocalDurableObjectNamespace
from kumofire_jobs.local.queue import ConsumerSettings, LocalQueueBroker

Op = Callable[[int], Awaitable[Any]]


async def _measure(op: Op, ops: int, concurrency: int) -> dict[str, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if concurrency <= 1:
        for i in range(ops):
            await op(i)
    else:
        for start in range(0, ops, concurrency):
            await asyncio.gather(*(op(i) for i in range(start, min(ops, start + concurrency))))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "cpu_us_per_op": round(cpu * 1e6 / ops, 2),
        "wall_us_per_op": round(wall * 1e6 / ops, 2),
    }


class Coordinatorish:
    """What a coordinator call does to its object: read its state, write it, set an alarm."""

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx

    async def save(self, due_ms: int) -> dict[str, Any]:
        state = await self.ctx.storage.get("state") or {"n": 0}
        state["n"] += 1
        await self.ctx.storage.put("state", state)
        await self.ctx.storage.setAlarm(due_ms)
        return {"ok": True, "n": state["n"]}

    async def close(self) -> dict[str, Any]:
        await self.ctx.storage.deleteAlarm()
        await self.ctx.storage.deleteAll()
        return {"closed": True}

    async def alarm(self, info: Any = None) -> None:
        return None


async def bench_do_rpc(tmp: Path, ops: int, concurrency: int) -> dict[str, float]:
    """An RPC that reads, writes and sets an alarm, then one that closes the object."""
    ns = LocalDurableObjectNamespace(Coordinatorish, path=tmp / "do", clock=SystemClock())
    await ns.start()
    far = int((time.time() + 3600) * 1000)

    async def op(i: int) -> None:
        stub = ns.getByName(f"object-{i}")
        await stub.save(far)
        await stub.close()

    try:
        return await _measure(op, ops, concurrency)
    finally:
        await ns.close()


async def bench_d1(tmp: Path, ops: int, concurrency: int) -> dict[str, float]:
    """An INSERT, then a guarded UPDATE ... RETURNING of the row (a run's life in D1)."""
    db = LocalD1Database(tmp / "d1.sqlite")
    await db.exec(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT NOT NULL, updated INTEGER) "
        "WITHOUT ROWID"
    )
    insert = db.prepare("INSERT INTO runs (id, status, updated) VALUES (?, 'new', ?)")
    update = db.prepare(
        "UPDATE runs SET status = 'done', updated = ?1 WHERE id = ?2 AND status = 'new' "
        "RETURNING id, status, updated"
    )

    async def op(i: int) -> None:
        await insert.bind(f"run-{i:08d}", i).run()
        await update.bind(i + 1, f"run-{i:08d}").first()

    try:
        return await _measure(op, ops, concurrency)
    finally:
        db.close()


async def bench_queue(tmp: Path, ops: int, concurrency: int) -> dict[str, float]:
    """A send, delivered to a consumer that acks it (measured until all are consumed)."""
    broker = LocalQueueBroker(tmp / "queues.sqlite", SystemClock())
    received = 0
    done = asyncio.Event()

    async def handler(batch: Any) -> None:
        nonlocal received
        received += len(batch.messages)
        if received >= ops:
            done.set()

    broker.add_consumer("q", handler, ConsumerSettings(max_batch_size=100, max_batch_timeout=0))
    await broker.start()
    queue = broker.producer("q")

    async def op(i: int) -> None:
        await queue.send({"version": 1, "kumofireJobRunId": f"run-{i}"})

    async def all_of_it(_: int) -> None:
        if concurrency <= 1:
            for i in range(ops):
                await op(i)
        else:
            for start in range(0, ops, concurrency):
                await asyncio.gather(*(op(i) for i in range(start, min(ops, start + concurrency))))
        await done.wait()

    try:
        result = await _measure(all_of_it, 1, 1)
        return {k: round(v / ops, 2) for k, v in result.items()}
    finally:
        await broker.stop()
        broker.close()


BENCHMARKS = {"do_rpc": bench_do_rpc, "d1": bench_d1, "queue": bench_queue}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], default=[])
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    for name in args.names or list(BENCHMARKS):
        for mode, concurrency in (("serial", 1), ("concurrent", args.concurrency)):
            with tempfile.TemporaryDirectory() as tmp:
                result = asyncio.run(BENCHMARKS[name](Path(tmp), args.ops, concurrency))
            json.dump({"benchmark": name, "mode": mode, "ops": args.ops, **result}, sys.stdout)
            print()


if __name__ == "__main__":
    main()
