"""Recurring schedules through the public API, on the embedded bindings and the manual clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kumofire_jobs import (
    ConflictError,
    JobContext,
    UnknownJobError,
    ValidationError,
    create_runtime,
)
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.delivery import MATERIALIZE_AFTER
from kumofire_jobs.core.times import ms_to_datetime
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory, noop


class Ticks:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.start = clock.now()
        self.at: list[float] = []
        self.payloads: list[object] = []

    async def __call__(self, ctx: JobContext) -> None:
        self.at.append(round(self.clock.now() - self.start, 3))
        self.payloads.append(ctx.job.payload)


def at(clock: ManualClock, seconds: float) -> object:
    return ms_to_datetime(int((clock.now() + seconds) * 1000))


async def test_every_second_runs_on_each_second(make_env: EnvFactory, clock: ManualClock) -> None:
    ticks = Ticks(clock)
    env = await make_env({"tick": ticks})
    schedule = await env.jobs.create_schedule("tick", {"n": 1}, every=1)
    assert (schedule.type, schedule.expr, schedule.timezone) == ("interval", "1", None)
    assert schedule.next_run_at == at(clock, 1)
    await clock.advance(60)
    last, following = at(clock, 0), at(clock, 1)
    await clock.advance(MATERIALIZE_AFTER)  # the 60th's successor is materialized after it
    assert ticks.at == [float(i) for i in range(1, 61)]
    assert ticks.payloads == [{"n": 1}] * 60
    current = await env.jobs.get_schedule(schedule.id)
    assert current is not None
    assert current.last_scheduled_at == last
    assert current.next_run_at == following
    runs = await env.jobs.list(schedule_id=schedule.id, limit=200)
    assert len(runs.items) == 61  # 60 done, one pending: always one ahead
    assert runs.items[0].status == "scheduled"
    assert all(r.status == "succeeded" for r in runs.items[1:])


async def test_fractional_interval_and_seconds_cron(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    ticks = Ticks(clock)
    env = await make_env({"tick": ticks})
    half = await env.jobs.create_schedule("tick", every=1.5)
    assert half.expr == "1.5"
    await clock.advance(6)
    assert ticks.at == [1.5, 3.0, 4.5, 6.0]
    await env.jobs.delete_schedule(half.id)
    ticks.at.clear()
    # the manual clock starts on a whole minute: */2 seconds fires at even seconds
    cron = await env.jobs.create_schedule("tick", cron="*/2 * * * * *")
    assert cron.timezone == "UTC"
    await clock.advance(10)
    assert ticks.at == [8.0, 10.0, 12.0, 14.0, 16.0]


async def test_cron_in_a_time_zone(make_env: EnvFactory, clock: ManualClock) -> None:
    ticks = Ticks(clock)
    env = await make_env({"report": ticks})
    # 2027-01-01T00:00Z is 09:00 in Tokyo; "every morning at 09:30 in Tokyo" is 00:30Z.
    schedule = await env.jobs.create_schedule("report", cron="30 9 * * *", timezone="Asia/Tokyo")
    assert schedule.next_run_at == at(clock, 30 * 60)
    await clock.advance(86_400)
    assert ticks.at == [1800.0]


async def test_upsert_is_idempotent_and_enabled_none_keeps_enabled(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"tick": Ticks(clock), "other": Ticks(clock)})
    first = await env.jobs.upsert_schedule("nightly", "tick", {"a": 1}, cron="0 3 * * *")
    assert first.enabled and first.key == "nightly"
    await clock.advance(1)
    again = await env.jobs.upsert_schedule("nightly", "tick", {"a": 1}, cron="0 3 * * *")
    assert again.id == first.id
    assert again.updated_at == first.updated_at  # nothing changed, nothing written
    assert again.next_run_at == first.next_run_at
    pending = await env.jobs.list(schedule_id=first.id)
    assert len(pending.items) == 1  # the same pending occurrence, not a second one

    disabled = await env.jobs.disable_schedule_by_key("nightly")
    assert disabled is not None and not disabled.enabled and disabled.next_run_at is None
    kept = await env.jobs.upsert_schedule("nightly", "tick", {"a": 2})  # enabled=None
    assert not kept.enabled and kept.payload == {"a": 2} and kept.expr == "0 3 * * *"
    enabled = await env.jobs.upsert_schedule("nightly", "other", enabled=True)
    assert enabled.enabled and enabled.name == "other" and enabled.payload == {"a": 2}


async def test_update_replaces_the_pending_occurrence(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    ticks = Ticks(clock)
    env = await make_env({"tick": ticks})
    schedule = await env.jobs.create_schedule("tick", every=10)
    old = (await env.jobs.list(schedule_id=schedule.id)).items[0]
    await clock.advance(5)
    updated = await env.jobs.update_schedule(schedule.id, every=3)
    assert updated is not None and updated.expr == "3"
    assert updated.next_run_at == at(clock, 3)  # anchored at the change
    runs = (await env.jobs.list(schedule_id=schedule.id)).items
    assert {r.id: r.status for r in runs} == {old.id: "canceled", runs[0].id: "scheduled"}
    await clock.advance(10)
    assert ticks.at == [8.0, 11.0, 14.0]

    # a payload change carries over to the pending occurrence without replacing it
    pending = (await env.jobs.list(schedule_id=schedule.id, status="scheduled")).items[0]
    await env.jobs.update_schedule(schedule.id, payload={"v": 2})
    same = await env.jobs.get(pending.id)
    assert same is not None and same.status == "scheduled" and same.payload == {"v": 2}

    # switching to every clears the time zone; a time zone with every is refused
    cron = await env.jobs.update_schedule(schedule.id, cron="0 * * * *", timezone="Europe/Berlin")
    assert cron is not None and cron.timezone == "Europe/Berlin"
    back = await env.jobs.update_schedule(schedule.id, every=60)
    assert back is not None and back.timezone is None
    with pytest.raises(ValidationError, match="timezone"):
        await env.jobs.update_schedule(schedule.id, timezone="UTC")
    with pytest.raises(ValidationError, match="unknown schedule field"):
        await env.jobs.update_schedule(schedule.id, color="red")  # type: ignore[call-arg]  # unknown
    assert await env.jobs.update_schedule("sch_missing", every=5) is None


async def test_disable_enable_delete(make_env: EnvFactory, clock: ManualClock) -> None:
    ticks = Ticks(clock)
    env = await make_env({"tick": ticks})
    schedule = await env.jobs.create_schedule("tick", every=5, key="k")
    await clock.advance(6)  # the occurrence at 5 runs; the one at 10 is materialized
    assert ticks.at == [5.0]
    await env.jobs.disable_schedule(schedule.id)
    await clock.advance(19)
    assert ticks.at == [5.0]
    assert (await env.jobs.counts())["canceled"] == 1
    enabled = await env.jobs.enable_schedule(schedule.id)
    assert enabled is not None and enabled.next_run_at == at(clock, 5)  # from enabling
    await clock.advance(11)
    assert ticks.at == [5.0, 30.0, 35.0]

    assert await env.jobs.delete_schedule_by_key("k")
    assert not await env.jobs.delete_schedule_by_key("k")
    assert await env.jobs.get_schedule(schedule.id) is None
    await clock.advance(60)
    assert ticks.at == [5.0, 30.0, 35.0]
    runs = (await env.jobs.list(schedule_id=schedule.id, limit=200)).items
    assert len(runs) == 5  # occurrences are kept after the schedule is deleted
    assert sorted(r.status for r in runs) == ["canceled", "canceled"] + ["succeeded"] * 3


async def test_created_disabled_has_no_occurrence(make_env: EnvFactory, clock: ManualClock) -> None:
    env = await make_env({"tick": Ticks(clock)})
    schedule = await env.jobs.create_schedule("tick", every=5, enabled=False)
    assert schedule.next_run_at is None
    assert (await env.jobs.list(schedule_id=schedule.id)).items == []


async def test_canceling_the_pending_occurrence_moves_on(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    ticks = Ticks(clock)
    env = await make_env({"tick": ticks})
    schedule = await env.jobs.create_schedule("tick", every=10)
    pending = (await env.jobs.list(schedule_id=schedule.id)).items[0]
    await env.jobs.cancel(pending.id)
    current = await env.jobs.get_schedule(schedule.id)
    assert current is not None and current.next_run_at == at(clock, 20)
    await clock.advance(20)
    assert ticks.at == [20.0]


async def test_occurrences_may_overlap(make_env: EnvFactory, clock: ManualClock) -> None:
    running: list[float] = []

    async def slow(ctx: JobContext) -> None:
        running.append(clock.now())
        await clock.sleep_until(clock.now() + 3.5)

    env = await make_env({"slow": slow})
    await env.jobs.create_schedule("slow", every=1)
    await clock.advance(3)
    assert len(running) == 3
    assert (await env.jobs.counts())["running"] == 3


async def test_materialization_racing_with_itself_inserts_one_occurrence(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"tick": Ticks(clock)})
    schedule = await env.jobs.create_schedule("tick", every=10)
    pending = (await env.jobs.list(schedule_id=schedule.id)).items[0]
    results = await asyncio.gather(
        *(
            env.jobs.schedules.advance(schedule.id, pending.id, delivered=True, nominal_ms=None)
            for _ in range(5)
        )
    )
    assert sum(1 for r in results if r is not None) == 1
    assert len((await env.jobs.list(schedule_id=schedule.id)).items) == 2


async def test_catch_up_after_downtime_runs_once_then_regular(
    clock: ManualClock, tmp_path: Path
) -> None:
    ticks = Ticks(clock)
    runtime = create_runtime({"tick": ticks}, clock=clock)
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    schedule = await env.jobs.create_schedule("tick", every=60)
    await clock.advance(60 + MATERIALIZE_AFTER)  # delivered, and its successor materialized
    assert ticks.at == [60.0]
    await env.stop()

    await clock.advance(3600 + 15 - MATERIALIZE_AFTER)  # down for an hour: sixty occurrences missed
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    await clock.advance(1)
    assert ticks.at == [60.0, 3675.0]  # the pending one, once, late
    current = await env.jobs.get_schedule(schedule.id)
    assert current is not None
    assert current.last_scheduled_at == at(clock, -3676 + 120)  # its nominal time
    assert current.next_run_at == at(clock, 44)  # the first regular occurrence after 3675
    await clock.advance(44)
    assert ticks.at == [60.0, 3675.0, 3720.0]
    await env.stop()


async def test_reconciliation_restores_a_missing_next_occurrence(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    ticks = Ticks(clock)
    env = await make_env({"tick": ticks})
    schedule = await env.jobs.create_schedule("tick", every=600)
    pending = (await env.jobs.list(schedule_id=schedule.id)).items[0]
    # the pending occurrence is lost (deleted behind the schedule's back)
    await env.JOBS_DB.prepare("DELETE FROM kumofire_job_runs WHERE id = ?").bind(pending.id).run()
    result = await env.jobs.dispatch()
    assert result.schedules_restored == 1
    assert (await env.jobs.dispatch()).schedules_restored == 0  # healthy now
    await clock.advance(1200)
    assert ticks.at == [600.0, 1200.0]


async def test_bad_schedule_input(make_env: EnvFactory) -> None:
    env = await make_env({"tick": noop})
    bad: list[tuple[dict[str, object], str]] = [
        ({}, "timing"),
        ({"cron": "* * * * *", "every": 5}, "not both"),
        ({"cron": "not a cron"}, "cron"),
        ({"cron": "* * * * * * *"}, "cron"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"every": 0.5}, "at least 1"),
        ({"every": "5"}, "number"),
        ({"every": True}, "number"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "time zone"),
        ({"every": 5, "timezone": "UTC"}, "timezone"),
        ({"every": 5, "max_attempts": 0}, "max_attempts"),
        ({"every": 5, "key": "a/b"}, "key"),
        ({"every": 5, "key": ".."}, "key must not be '..'"),
        ({"every": 5, "key": "."}, "key must not be '.'"),
        ({"every": 5, "key": "k\ud800"}, "key has a lone surrogate"),
    ]
    for fields, message in bad:
        with pytest.raises(ValidationError, match=message):
            await env.jobs.create_schedule("tick", **fields)  # type: ignore[arg-type]
    with pytest.raises(UnknownJobError):
        await env.jobs.create_schedule("nope", every=5)
    await env.jobs.create_schedule("tick", every=5, key="taken")
    with pytest.raises(ConflictError):
        await env.jobs.create_schedule("tick", every=5, key="taken")
    assert len((await env.jobs.list_schedules()).items) == 1


async def test_list_schedules_filters_and_cursor(make_env: EnvFactory, clock: ManualClock) -> None:
    env = await make_env({"a": Ticks(clock), "b": Ticks(clock)})
    ids = []
    for i in range(5):
        created = await env.jobs.create_schedule(
            "a" if i % 2 == 0 else "b", every=60, enabled=i != 4
        )
        ids.append(created.id)
        await clock.advance(0.001)
    page = await env.jobs.list_schedules(limit=2)
    seen = [s.id for s in page.items]
    while page.next_cursor is not None:
        page = await env.jobs.list_schedules(limit=2, cursor=page.next_cursor)
        seen += [s.id for s in page.items]
    assert seen == ids[::-1]
    assert [s.id for s in (await env.jobs.list_schedules(name="b")).items] == [ids[3], ids[1]]
    assert [s.id for s in (await env.jobs.list_schedules(enabled=False)).items] == [ids[4]]


async def test_the_one_cancel_statement_keeps_both_guards(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    # A schedule's change cancels its pending occurrence only while it waits (started=False);
    # canceling by hand, or deleting the schedule, cancels a run whatever it is doing.
    async def slow(ctx: JobContext) -> None:
        await clock.sleep_until(clock.now() + 10)

    env = await make_env({"slow": slow, "noop": noop})
    running = (await env.jobs.create("slow")).kumofire_job_run_id
    waiting = (await env.jobs.create("noop", delay=60)).kumofire_job_run_id
    await clock.advance(1)
    store = env.jobs.runs._store
    now = int(clock.now() * 1000)

    async def cancel(run_id: str, *, started: bool) -> bool:
        row = await store.cancel_statement(run_id, now, started=started).first()
        return row is not None

    assert not await cancel(running, started=False)  # delivered: it runs to its end
    assert await cancel(waiting, started=False)
    assert await cancel(running, started=True)
    assert not await cancel(running, started=True)  # finished: nothing to cancel
    statuses = {r.id: r.status for r in (await env.jobs.list()).items}
    assert statuses == {running: "canceled", waiting: "canceled"}
