"""Deliveries that fail or lose a race: an outage longer than the platform's alarm retries,
and a consumer that runs (and fails) an occurrence before its `queued` write lands."""

from __future__ import annotations

import asyncio
from typing import Any

from kumofire_jobs import JobContext
from kumofire_jobs.core.bindings import Queue
from kumofire_jobs.core.clock import ManualClock
from tests.support.envs import EnvFactory
from tests.support.faults import rewire


class OutageQueue:
    """A queue whose sends raise until `heals_at` (a Queues outage of a few minutes)."""

    def __init__(self, inner: Queue, clock: ManualClock, heals_at: float) -> None:
        self.inner = inner
        self.clock = clock
        self.heals_at = heals_at
        self.failed = 0

    async def send(self, body: Any, options: dict[str, Any] | None = None) -> None:
        if self.clock.now() < self.heals_at:
            self.failed += 1
            raise RuntimeError("injected queue outage")
        await self.inner.send(body, options)

    async def sendBatch(self, messages: Any, options: dict[str, Any] | None = None) -> None:
        await self.inner.sendBatch(messages, options)


async def test_a_delivery_outage_longer_than_the_alarm_retries_does_not_strand_the_run(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[float] = []

    async def job(ctx: JobContext) -> None:
        calls.append(clock.now())

    env = await make_env({"job": job})
    start = clock.now()
    # Sends fail for a little over two minutes: the alarm at 0 s and its six platform retries
    # (2, 6, 14, 30, 62, 126 s) all fail, and the platform drops the alarm.
    outage = OutageQueue(env.JOBS_QUEUE, clock, heals_at=start + 130)
    rewire(env, queue=outage)
    created = await env.jobs.create("job")
    run_id = created.kumofire_job_run_id
    await clock.advance(130)
    assert outage.failed >= 4  # each failure recorded: redelivered at 0, 10, 30, 70 s

    stub = env.JOB_COORDINATOR.getByName(run_id)
    status = await stub.status()
    alarm = env.JOB_COORDINATOR.alarm_of(run_id)
    # Whatever the actor's state, something must deliver the run once the queue is back.
    await clock.advance(3600)  # an hour of cron ticks (reconciliation every minute)
    run = await env.jobs.get(run_id)
    assert run is not None
    assert run.status == "succeeded", (
        f"run stranded in {run.status!r}; actor status after the outage {status}, "
        f"alarm {alarm}; now {await stub.status()}, alarm {env.JOB_COORDINATOR.alarm_of(run_id)}"
    )
    assert len(calls) == 1


class SlowMarkQueuedDb:
    """A D1 database whose first `queued` write waits for `gate`: a D1 round trip slower
    than the queue's delivery and the consumer's whole attempt (D1's primary is far away)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.held = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def prepare(self, sql: str) -> Any:
        statement = self.inner.prepare(sql)
        if "SET status = 'queued'" in sql and self.held == 0:
            self.held += 1
            return _GatedStatement(statement, self.gate)
        return statement


class _GatedStatement:
    def __init__(self, inner: Any, gate: asyncio.Event) -> None:
        self.inner = inner
        self.gate = gate

    def bind(self, *args: Any) -> _GatedStatement:
        return _GatedStatement(self.inner.bind(*args), self.gate)

    async def first(self, *args: Any) -> Any:
        await self.gate.wait()
        return await self.inner.first(*args)


async def test_an_occurrence_retried_before_its_queued_write_still_materializes_the_next(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    from kumofire_jobs import Resources, RetryPolicy

    calls: list[float] = []

    async def tick(ctx: JobContext) -> None:
        calls.append(clock.now())
        if len(calls) == 1:
            raise RuntimeError("first occurrence fails once")

    env = await make_env({"tick": tick}, retry=RetryPolicy(base_delay=600, max_delay=600))
    start = clock.now()
    slow = SlowMarkQueuedDb(env.JOBS_DB)
    env.resources = Resources(db=slow, queue=env.JOBS_QUEUE, coordinator=env.JOB_COORDINATOR)
    env.jobs = env.runtime.bind(env.resources)
    schedule = await env.jobs.create_schedule("tick", every=60)
    pending = await env.jobs.list(schedule_id=schedule.id)
    assert len(pending.items) == 1
    first_run = pending.items[0].id

    # The occurrence at 60 s: the send goes out with the `queued` write, the consumer is
    # faster, its handler fails and the run is rescheduled for 660 s, all before D1 answers.
    await clock.advance(60)
    assert calls == [start + 60]
    run = await env.jobs.get(first_run)
    assert run is not None and run.status == "scheduled"
    slow.gate.set()  # now the `queued` write lands: it matches nothing (retry not yet due)
    await clock.advance(0.01)

    await clock.advance(70)  # the next occurrence, due at 120 s, must have run
    current = await env.jobs.get_schedule(schedule.id)
    runs = await env.jobs.list(schedule_id=schedule.id)
    assert current is not None
    assert calls == [start + 60, start + 120], (
        f"the schedule stalled: next_run_at {current.next_run_at}, runs "
        f"{[(r.id == first_run, r.status, r.scheduled_for) for r in runs.items]}"
    )
