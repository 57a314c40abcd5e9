"""The D1 statement stream of real runs, recorded per run, for the sharding simulation
(`bench/shards.py`).

The real runtime runs on the embedded bindings behind the cost harness's counting proxies
(`bench/instrument.py`) on a manual clock, as `bench/cost.py` does; every D1 call it makes is
kept in order. A call is one `prepare(...).run()/all()/first()` or one `batch()` (statements
sharing a batch id). Each call is given to the run it names: the first bound value that is a
run id (`run_` and a ULID). The clock drains each run before the next is created, so a call
that names no run (a schedule's read while its occurrence is delivered) belongs to the run
before it. What names no run at all outside a run's life is fan-out work: a cron tick
(reconciliation, retention, the schedules' restore) and the reads that span every run
(`list`, `counts`, `list_jobs`), which on K databases go to every shard.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.instrument import D1Statement, InstrumentedEnvironment, Recorder
from kumofire_jobs import JobContext, create_runtime
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.log import configure_logging

_RUN_ID = re.compile(r"^run_[0-9A-HJKMNP-TV-Z]{26}$")
_SCHEDULE_ID = re.compile(r"^sch_[0-9A-HJKMNP-TV-Z]{26}$")
# The scenarios a run can come from (each a chain of D1 calls, recorded `runs` times).
SCENARIOS = ("one-shot", "dedupe key", "retried twice", "schedule occurrence")


@dataclass(frozen=True)
class Call:
    """One D1 call: a statement, or a `batch()` of several (one transaction, one call)."""

    labels: tuple[str, ...]  # a short name for each statement, in order

    @property
    def statements(self) -> int:
        return len(self.labels)


@dataclass
class Chain:
    """One run's D1 calls in the order it made them, and what decides its shard."""

    scenario: str
    run_id: str
    calls: list[Call] = field(default_factory=list)
    dedupe_key: str | None = None
    schedule_id: str | None = None

    @property
    def statements(self) -> int:
        return sum(c.statements for c in self.calls)


@dataclass
class Trace:
    chains: dict[str, list[Chain]]  # by scenario
    tick: list[Call]  # one cron tick on an idle system: every shard runs these
    reads: dict[str, list[Call]]  # a read spanning all runs: every shard runs these


def label(sql: str) -> str:
    """A short, stable name for a statement: its verb and table, and what tells it apart."""
    s = " ".join(sql.split())
    verb = s.split(" ", 1)[0].upper()
    table = re.search(r"(?:FROM|INTO|UPDATE)\s+(\w+)", s)
    name = f"{verb} {table.group(1) if table else '?'}"
    status = re.search(r"SET status = '(\w+)'", s)
    if status:
        name += f" ->{status.group(1)}"
    elif verb == "UPDATE" and "SET status = ?1" in s:
        name += " ->outcome"
    elif verb == "SELECT" and "GROUP BY" in s:
        name += " counts"
    elif verb == "SELECT" and "LEFT JOIN" in s:
        name += " missing next"
    elif verb == "SELECT" and "scheduled_for <= ?" in s:
        name += " due"
    elif verb == "SELECT" and "ORDER BY id DESC" in s:
        name += " page"
    elif verb == "SELECT" and "WHERE id = ?" in s:
        name += " by id"
    return name


def calls_of(statements: list[D1Statement]) -> list[tuple[Call, list[D1Statement]]]:
    """Statements grouped into calls: consecutive ones with the same batch id are one."""
    out: list[tuple[Call, list[D1Statement]]] = []
    i = 0
    while i < len(statements):
        j = i + 1
        if statements[i].batch is not None:
            while j < len(statements) and statements[j].batch == statements[i].batch:
                j += 1
        group = statements[i:j]
        out.append((Call(tuple(label(s.sql) for s in group)), group))
        i = j
    return out


def _ids(group: list[D1Statement], pattern: re.Pattern[str]) -> list[str]:
    return [p for s in group for p in s.params if isinstance(p, str) and pattern.match(p)]


def chains_of(scenario: str, statements: list[D1Statement]) -> list[Chain]:
    """Each run's calls; a call naming no run goes to the run before it (see the module)."""
    chains: dict[str, Chain] = {}
    last: Chain | None = None
    for call, group in calls_of(statements):
        run_ids = _ids(group, _RUN_ID)
        if run_ids:
            last = chains.setdefault(run_ids[0], Chain(scenario, run_ids[0]))
        if last is None:  # the tail of a run that began before the window
            last = chains.setdefault("", Chain(scenario, ""))
        last.calls.append(call)
        schedule_ids = _ids(group, _SCHEDULE_ID)
        if schedule_ids and last.schedule_id is None:
            last.schedule_id = schedule_ids[0]
    return list(chains.values())


async def record(runs: int = 10) -> Trace:
    """Every scenario `runs` times on the real runtime; a cron tick; the fan-out reads."""
    recorder = Recorder()
    clock = ManualClock()

    async def noop(ctx: JobContext) -> None:
        return None

    async def flaky(ctx: JobContext) -> None:
        if ctx.job.attempt < 3:
            raise RuntimeError("fails on attempts 1 and 2")

    runtime = create_runtime({"noop": noop, "flaky": flaky}, clock=clock)
    chains: dict[str, list[Chain]] = {}
    with tempfile.TemporaryDirectory(prefix="kumofire-shards-") as tmp:
        env = InstrumentedEnvironment(runtime, Path(tmp), recorder)
        await env.start()
        jobs = env.jobs

        async def measured(body: Callable[[], Awaitable[object]]) -> list[D1Statement]:
            mark = recorder.mark()
            await body()
            return recorder.since(mark).d1

        await jobs.create("noop")  # warm-up: the schema check, once per isolate
        await clock.advance(0)

        async def one_shot() -> None:
            for _ in range(runs):
                await jobs.create("noop")
                await clock.advance(0)

        async def dedupe() -> None:
            for i in range(runs):
                await jobs.create("noop", dedupe_key=f"order-{i}")
                await clock.advance(0)

        async def retried() -> None:
            for _ in range(runs):
                await jobs.create("flaky")
                await clock.advance(0)
                await clock.advance(10)  # the retries' backoff: 1 s, then 2 s

        for name, body in (("one-shot", one_shot), ("dedupe key", dedupe),
                           ("retried twice", retried)):  # fmt: skip
            chains[name] = chains_of(name, await measured(body))
        for i, chain in enumerate(chains["dedupe key"]):
            chain.dedupe_key = f"order-{i}"

        schedule = await jobs.create_schedule("noop", every=60)
        await clock.advance(60)  # the first occurrence runs; the second is materialized

        async def occurrences() -> None:
            for _ in range(runs):
                await clock.advance(60)

        occurrence = chains_of("schedule occurrence", await measured(occurrences))
        # In steady state an occurrence's chain is its delivery (`queued`), the schedule's
        # read and the batch that inserts its successor and moves the schedule on, its start
        # and its outcome; the first and last chains of the window are cut, so left out.
        chains["schedule occurrence"] = [
            c for c in occurrence
            if c.calls[0].labels == ("UPDATE kumofire_job_runs ->queued",)
            and any(call.statements == 2 for call in c.calls)
        ]  # fmt: skip
        for chain in chains["schedule occurrence"]:
            chain.schedule_id = chain.schedule_id or schedule.id
        await jobs.disable_schedule(schedule.id)
        await clock.advance(0)

        tick = await measured(env.tick)
        reads = {
            "list (a page of runs)": await measured(lambda: jobs.list(limit=50)),
            "counts": await measured(jobs.counts),
            "list_jobs": await measured(jobs.list_jobs),
        }
        await env.stop()
    return Trace(
        chains=chains,
        tick=[call for call, _ in calls_of(tick)],
        reads={name: [call for call, _ in calls_of(s)] for name, s in reads.items()},
    )


def record_sync(runs: int = 10) -> Trace:
    configure_logging(json=True, stream=open(os.devnull, "w"))  # noqa: SIM115 (for the process)
    return asyncio.run(record(runs))
