"""Crash points of schedule changes, on the embedded bindings with the manual clock: a D1
failure between two writes of one change leaves nothing a user would see as a broken promise
(a deleted schedule runs no occurrence)."""

from __future__ import annotations

from typing import Any

import pytest

from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.context import JobContext
from kumofire_jobs.core.schedules import ScheduleService
from tests.support.envs import EnvFactory
from tests.support.faults import FaultyD1, rewire

CANCEL = "SET status = 'canceled'"


async def test_a_delete_cut_off_before_its_occurrence_is_canceled_runs_no_occurrence(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    ran: list[str] = []

    async def tick(ctx: JobContext) -> None:
        ran.append(ctx.job.id)

    env = await make_env({"tick": tick})
    db = FaultyD1(env.JOBS_DB)
    rewire(env, db=db)
    schedule = await env.jobs.create_schedule("tick", every=10)
    db.fail(CANCEL)  # the cancel of the pending occurrence fails (or the process dies there)
    with pytest.raises(RuntimeError, match="injected"):
        await env.jobs.delete_schedule(schedule.id)
    # The caller saw an error and deletes again: the schedule is gone either way.
    await env.jobs.delete_schedule(schedule.id)
    assert await env.jobs.get_schedule(schedule.id) is None
    await clock.advance(10)
    await env.jobs.dispatch()
    await clock.advance(120)
    assert ran == []  # no occurrence of the deleted schedule ran
    runs = (await env.jobs.list(schedule_id=schedule.id)).items
    assert [run.status for run in runs] == ["canceled"]


async def test_a_promoted_occurrence_is_followed_by_the_next_regular_one(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    ran: list[float] = []

    async def tick(ctx: JobContext) -> None:
        ran.append(clock.now())

    env = await make_env({"tick": tick})
    start = clock.now()
    schedule = await env.jobs.create_schedule("tick", every=3600)
    pending = (await env.jobs.list(schedule_id=schedule.id)).items
    assert [run.status for run in pending] == ["scheduled"]
    await clock.advance(10)
    await env.jobs.promote(pending[0].id)  # the hour's occurrence, now
    await clock.advance(1)
    assert ran == [start + 10]
    # The promoted run was the occurrence at +1 h: the next is the one at +2 h, pending now.
    runs = (await env.jobs.list(schedule_id=schedule.id)).items
    assert [run.status for run in runs] == ["scheduled", "succeeded"]
    current = await env.jobs.get_schedule(schedule.id)
    assert current is not None and current.next_run_at == runs[0].scheduled_for
    assert runs[0].scheduled_for.timestamp() == start + 2 * 3600
    # Cron ticks find nothing to repair, and it runs at +2 h, once.
    result = await env.jobs.dispatch()
    assert result.schedules_restored == 0
    await clock.advance(2 * 3600 - 11)
    assert ran == [start + 10, start + 2 * 3600]


async def test_a_change_landing_while_a_delivered_occurrence_materializes_keeps_the_limit(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    ran: list[float] = []

    async def tick(ctx: JobContext) -> None:
        ran.append(clock.now())

    env = await make_env({"tick": tick})
    db = FaultyD1(env.JOBS_DB)
    rewire(env, db=db)
    schedule = await env.jobs.create_schedule("tick", every=10, limit=2)

    async def change() -> None:  # lands between the delivery and its materialization
        await env.jobs.update_schedule(schedule.id, every=20)

    db.before("revision || ':' || ?6", change)  # the materialization's insert
    await clock.advance(10)
    assert len(ran) == 1
    await clock.advance(600)
    assert len(ran) == 2, ran  # `limit` occurrences in all, whatever changed meanwhile
    current = await env.jobs.get_schedule(schedule.id)
    assert current is not None and current.count == 2 and not current.enabled


async def test_an_occurrence_canceled_after_it_started_counts_toward_the_limit(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[float] = []

    async def tick(ctx: JobContext) -> None:
        started.append(clock.now())
        await clock.sleep_until(clock.now() + 5)

    delivered = ScheduleService.occurrence_delivered
    lost = [True]

    async def first_lost(self: ScheduleService, *args: Any) -> None:
        if lost.pop() if lost else False:
            raise RuntimeError("D1 unavailable")  # the materialization after a delivery
        await delivered(self, *args)

    monkeypatch.setattr(ScheduleService, "occurrence_delivered", first_lost)
    env = await make_env({"tick": tick})
    schedule = await env.jobs.create_schedule("tick", every=10, limit=2)
    await clock.advance(10)
    assert len(started) == 1
    (first,) = (await env.jobs.list(schedule_id=schedule.id, status="running")).items
    await env.jobs.cancel(first.id)  # it started: it was one of the `limit` occurrences
    await clock.advance(600)
    assert len(started) == 2, started
    current = await env.jobs.get_schedule(schedule.id)
    assert current is not None and current.count == 2 and not current.enabled


async def test_the_last_occurrence_s_lost_materialization_is_restored_as_the_schedule_s_end(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The crash point before the statement that counts a schedule's last occurrence and
    # disables it: the schedule still points at the delivered occurrence, and
    # reconciliation's restore takes the same path (counted, disabled, nothing more runs).
    ran: list[float] = []

    async def tick(ctx: JobContext) -> None:
        ran.append(clock.now())

    delivered = ScheduleService.occurrence_delivered
    lost = [True]

    async def first_lost(self: ScheduleService, *args: Any) -> None:
        if lost.pop() if lost else False:
            raise RuntimeError("D1 unavailable")  # the materialization after a delivery
        await delivered(self, *args)

    monkeypatch.setattr(ScheduleService, "occurrence_delivered", first_lost)
    env = await make_env({"tick": tick})
    schedule = await env.jobs.create_schedule("tick", every=10, limit=1)
    await clock.advance(10.01)  # delivered, and its materialization (5 ms later) lost
    assert len(ran) == 1 and lost == []
    current = await env.jobs.get_schedule(schedule.id)
    assert current is not None and current.count == 0 and current.enabled  # not counted yet
    await clock.advance(600)  # reconciliation's ticks
    assert len(ran) == 1
    current = await env.jobs.get_schedule(schedule.id)
    assert current is not None and current.count == 1 and not current.enabled
    runs = (await env.jobs.list(schedule_id=schedule.id)).items
    assert [run.status for run in runs] == ["succeeded"]
