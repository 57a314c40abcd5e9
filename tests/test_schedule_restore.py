"""Reconciliation's restore of a schedule's next occurrence, on the embedded bindings and the
manual clock: an occurrence delivered a moment ago whose successor is still being materialized
is not a repair; one whose successor is really missing is restored once, after the grace."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from kumofire_jobs import create_runtime
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.delivery import MATERIALIZE_AFTER
from kumofire_jobs.core.schedules import ScheduleService
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory, noop


async def statuses(env: LocalEnvironment, schedule_id: str) -> list[str]:
    runs = (await env.jobs.list(schedule_id=schedule_id, limit=200)).items
    return [run.status for run in runs]  # newest first


def restored(events: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for event in events if event["event"] == "schedule.restored")


async def test_an_occurrence_delivered_just_now_is_not_restored(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"tick": noop})
    schedule = await env.jobs.create_schedule("tick", cron="* * * * * *")
    with structlog.testing.capture_logs() as events:
        # At the due second the occurrence is queued and its successor waits out
        # MATERIALIZE_AFTER: what a cron tick under load can catch.
        await clock.advance(1)
        assert (await statuses(env, schedule.id))[0] != "scheduled"
        result = await env.jobs.dispatch()
        assert result.schedules_restored == 0
        await clock.advance(MATERIALIZE_AFTER)
        assert (await statuses(env, schedule.id))[0] == "scheduled"
        # A minute of every-second occurrences, the cron tick among them: nothing repaired.
        await clock.advance(61)
    assert restored(events) == 0
    runs = await statuses(env, schedule.id)
    assert runs.count("scheduled") == 1 and len(runs) == 63


async def test_a_really_missing_successor_is_restored_once_after_the_grace(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivered = ScheduleService.occurrence_delivered
    failing = [True]

    async def once_lost(self: ScheduleService, *args: Any) -> None:
        if failing.pop() if failing else False:
            raise RuntimeError("D1 unavailable")  # the materialization after a delivery
        await delivered(self, *args)

    monkeypatch.setattr(ScheduleService, "occurrence_delivered", once_lost)
    env = await make_env({"tick": noop})
    schedule = await env.jobs.create_schedule("tick", every=10)
    await clock.advance(10 + MATERIALIZE_AFTER)
    assert await statuses(env, schedule.id) == ["succeeded"]  # no successor
    with structlog.testing.capture_logs() as events:
        # Within the grace (60 s after its due time) it might still be on its way.
        assert (await env.jobs.dispatch()).schedules_restored == 0
        await clock.advance(59)  # the cron tick at 60 s among them
        assert await statuses(env, schedule.id) == ["succeeded"]
        assert restored(events) == 0
        # Past the grace the cron tick at 120 s restores it, once.
        await clock.advance(61)
        assert restored(events) == 1
        assert (await env.jobs.dispatch()).schedules_restored == 0
    runs = await statuses(env, schedule.id)
    assert runs.count("scheduled") == 1 and runs.count("succeeded") >= 1
    current = await env.jobs.get_schedule(schedule.id)
    assert current is not None and current.next_run_at is not None


async def test_a_restart_restores_a_successor_cut_off_by_a_crash_at_once(
    clock: ManualClock, tmp_path: Path
) -> None:
    runtime = create_runtime({"tick": noop}, clock=clock)
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    schedule = await env.jobs.create_schedule("tick", every=10)
    await clock.advance(10)  # delivered; the process dies before materializing the next
    await env.stop(drain_seconds=0)
    env = LocalEnvironment(runtime, tmp_path)
    with structlog.testing.capture_logs() as events:
        await env.start()  # nothing is in flight at a start: no grace
    try:
        assert restored(events) == 1
        runs = await statuses(env, schedule.id)
        assert runs[0] == "scheduled" and runs.count("scheduled") == 1
    finally:
        await env.stop(drain_seconds=0)
