"""Idle eviction on the embedded Durable Objects binding: idle objects leave memory as on the
platform, closed ones leave nothing, and nothing is evicted that still has work."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.durable_objects import (
    ALARM_WINDOW_SECONDS,
    IDLE_EVICTION_SECONDS,
    DurableObjectError,
    LocalDurableObjectNamespace,
)
from kumofire_jobs.local.durable_objects.actor import Actor

from .durable_object_contract import ContractObject, Probe, now_ms

IDLE = IDLE_EVICTION_SECONDS


class Lingering(ContractObject):
    """Leaves work behind when its call returns."""

    async def linger(self, tag: str) -> None:
        self.ctx.waitUntil(self.probe.gate(tag))

    async def gate_after(self, tag: str) -> None:
        async def wait() -> None:
            await self.probe.gate(tag)

        self.ctx.blockConcurrencyWhile(wait)  # not awaited: the gate stays held after we return


class Env:
    def __init__(self, clock: ManualClock, path: Path) -> None:
        self.clock = clock
        self.path = path
        self.probe = Probe(now=clock.now)
        self.namespaces: list[LocalDurableObjectNamespace] = []

    async def open(self, **options: Any) -> LocalDurableObjectNamespace:
        ns = LocalDurableObjectNamespace(
            Lingering,
            path=self.path,
            clock=self.clock,
            env=SimpleNamespace(PROBE=self.probe),
            **options,
        )
        self.namespaces.append(ns)
        await ns.start()
        return ns


@pytest.fixture
async def env(clock: ManualClock, data_dir: Path) -> AsyncIterator[Env]:
    made = Env(clock, data_dir / "do")
    yield made
    for ns in made.namespaces:
        await ns.close()


def instance_of(ns: LocalDurableObjectNamespace, name: str) -> Any:
    return ns._actors[ns.idFromName(name).toString()].instance


async def test_an_idle_object_is_evicted_and_rebuilt_from_storage(
    env: Env, clock: ManualClock
) -> None:
    """The platform evicts an object idle for 70-140 s; its next call builds it again, with
    its storage intact and its in-memory state gone."""
    ns = await env.open()
    stub = ns.getByName("idle")
    assert await stub.incr("n") == 1
    await stub.remember("in memory only")
    await clock.advance(IDLE - 0.001)
    assert ns.instance_count() == 1
    await clock.advance(0.001)
    assert ns.instance_count() == 0
    assert ns.actor_count() == 0  # no alarm: nothing is kept for it
    assert await stub.incr("n") == 2  # storage read back, not taken for a new empty object
    assert await stub.recall() is None
    assert env.probe.constructed == 2


async def test_each_call_restarts_the_idle_period(env: Env, clock: ManualClock) -> None:
    ns = await env.open()
    stub = ns.getByName("visited")
    await stub.remember("kept")
    for _ in range(3):
        await clock.advance(IDLE - 1)
        assert await stub.recall() == "kept"
    assert env.probe.constructed == 1


async def test_a_closed_object_leaves_nothing_behind(env: Env, clock: ManualClock) -> None:
    """An object emptied by deleteAll() with no alarm (a closed coordinator) is dropped as soon
    as its last call ends: no instance, no book-keeping, nothing that keeps it reachable."""
    ns = await env.open()
    instances: list[weakref.ref[Any]] = []
    for i in range(20):
        stub = ns.getByName(f"run-{i}")
        await stub.incr("n")
        await stub.storage("setAlarm", now_ms(clock.now()) + 600_000)
        instances.append(weakref.ref(instance_of(ns, f"run-{i}")))
        await stub.storage("deleteAll")
    await clock.advance(0)
    assert ns.instance_count() == 0
    assert ns.actor_count() == 0
    gc.collect()
    assert [ref for ref in instances if ref() is not None] == []
    # A call after the close builds a fresh, empty object.
    assert await ns.getByName("run-0").storage("get", "n") is None
    assert await ns.getByName("run-0").incr("n") == 1


async def test_an_object_written_after_delete_all_is_kept(env: Env, clock: ManualClock) -> None:
    ns = await env.open()
    stub = ns.getByName("reused")
    await stub.storage("deleteAll")
    await stub.incr("n")
    await stub.remember("kept")
    await clock.advance(0)
    assert ns.instance_count() == 1
    assert await stub.recall() == "kept"


async def test_an_evicted_object_still_fires_its_alarm(env: Env, clock: ManualClock) -> None:
    """The alarm lives with the namespace, not the instance: eviction does not lose it."""
    ns = await env.open()
    stub = ns.getByName("later")
    object_id = (await stub.whoami())["id"]
    due = now_ms(clock.now()) + 300_000
    await stub.storage("setAlarm", due)
    await stub.incr("n")
    await clock.advance(IDLE)
    assert ns.instance_count() == 0
    assert ns.actor_count() == 1  # the alarm's entry
    assert ns.alarm_of("later") == due
    await clock.advance_to(due / 1000)
    assert [call.at for call in env.probe.alarms_of(object_id)] == [due / 1000]
    assert env.probe.constructed == 2  # rebuilt by the alarm
    await clock.advance(IDLE)
    assert ns.actor_count() == 0
    assert await stub.incr("n") == 2


async def test_an_object_whose_alarm_is_due_soon_stays(env: Env, clock: ManualClock) -> None:
    ns = await env.open()
    stub = ns.getByName("soon")
    await stub.remember("kept")
    await stub.storage("setAlarm", now_ms(clock.now()) + round((IDLE + 30) * 1000))
    await clock.advance(IDLE)  # idle for the period, but the alarm is 30 s away
    assert ns.instance_count() == 1
    await clock.advance(30)
    assert len(env.probe.alarms) == 1
    assert env.probe.constructed == 1  # the alarm ran on the same instance
    assert await stub.recall() == "kept"


async def test_no_eviction_while_a_call_is_in_flight(env: Env, clock: ManualClock) -> None:
    ns = await env.open()
    stub = ns.getByName("busy")
    await stub.remember("kept")
    call = asyncio.ensure_future(stub.hold("long"))
    await clock.advance(IDLE * 3)
    assert ns.instance_count() == 1
    env.probe.open("long")
    assert await call == "long"
    await clock.advance(IDLE - 1)
    assert await stub.recall() == "kept"
    await clock.advance(IDLE)
    assert ns.instance_count() == 0


async def test_no_eviction_while_the_input_gate_is_held(env: Env, clock: ManualClock) -> None:
    ns = await env.open()
    stub = ns.getByName("gated")
    await stub.remember("kept")
    await stub.gate_after("open")  # returns with blockConcurrencyWhile still running
    await clock.advance(IDLE * 3)
    assert ns.instance_count() == 1
    waiting = asyncio.ensure_future(stub.recall())
    await clock.advance(IDLE * 3)
    assert not waiting.done()
    env.probe.open("open")
    assert await waiting == "kept"


async def test_no_eviction_while_a_wait_until_task_runs(env: Env, clock: ManualClock) -> None:
    ns = await env.open()
    stub = ns.getByName("lingering")
    await stub.remember("kept")
    await stub.linger("done")
    await clock.advance(IDLE * 3)
    assert ns.instance_count() == 1
    env.probe.open("done")
    await clock.advance(IDLE - 1)
    assert await stub.recall() == "kept"


async def test_no_eviction_between_an_alarm_and_its_retry(env: Env, clock: ManualClock) -> None:
    """A failing alarm's retries (2 s, 4 s, ...) run on the instance that failed, even when
    the idle period is shorter than the wait for the retry."""
    ns = await env.open(idle_eviction_seconds=1.0)
    stub = ns.getByName("flaky")
    await stub.storage("put", "alarm:plan", {"fail": True})
    await stub.storage("setAlarm", now_ms(clock.now()))
    await clock.advance(2 + 4 + 8)
    assert [call.retry_count for call in env.probe.alarms] == [0, 1, 2, 3]
    assert env.probe.constructed == 1
    assert ns.instance_count() == 1


async def test_evicted_objects_are_rebuilt_after_a_restart(env: Env, clock: ManualClock) -> None:
    ns = await env.open()
    await ns.getByName("kept").incr("n")
    await clock.advance(IDLE)
    assert ns.actor_count() == 0
    await ns.close()
    ns = await env.open()
    assert await ns.getByName("kept").incr("n") == 2


async def test_a_close_whose_commit_failed_keeps_the_object(env: Env, clock: ManualClock) -> None:
    """deleteAll() is lost with its failed commit: the object still has its data, and is kept
    (or, once idle, evicted and rebuilt) with that data, never taken for an empty one."""
    ns = await env.open()
    stub = ns.getByName("failed-close")
    await stub.incr("n")
    original = ns._write_out

    def failing(dirty: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    ns._write_out = failing  # type: ignore[method-assign]
    with pytest.raises(DurableObjectError, match="disk I/O error"):
        await stub.storage("deleteAll")
    ns._write_out = original  # type: ignore[method-assign]
    await clock.advance(IDLE)
    assert ns.actor_count() == 0
    assert await stub.incr("n") == 2


async def test_past_the_idle_cap_the_oldest_idle_objects_go_early(
    env: Env, clock: ManualClock
) -> None:
    """Under memory pressure (more than `max_idle_objects` idle) the platform evicts early: the
    oldest idle object goes as another falls idle, unless it must stay (an alarm due soon)."""
    ns = await env.open(max_idle_objects=2)
    alarmed = ns.getByName("alarm-soon")
    await alarmed.storage("setAlarm", now_ms(clock.now()) + 30_000)
    for i in range(4):
        await ns.getByName(f"object-{i}").incr("n")
    assert ns.instance_count() == 3  # at the cap, and the one whose alarm is due soon
    assert instance_of(ns, "alarm-soon") is not None
    assert ns.actor_count() == 3
    assert await ns.getByName("object-0").incr("n") == 2  # rebuilt from storage
    assert env.probe.constructed == 6


# Far alarms: as on the platform, an evicted object with an alarm far ahead holds nothing in
# memory (its alarm lives in storage); the alarm still fires at its time and answers getAlarm.

DAY_MS = 86_400_000


def actors_alive() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is Actor)


async def test_an_idle_object_with_a_far_alarm_leaves_memory_and_fires_on_time(
    env: Env, clock: ManualClock
) -> None:
    ns = await env.open()
    stub = ns.getByName("tomorrow")
    object_id = (await stub.whoami())["id"]
    await stub.incr("n")
    due = now_ms(clock.now()) + DAY_MS
    await stub.storage("setAlarm", due)
    instance = weakref.ref(instance_of(ns, "tomorrow"))
    await clock.advance(IDLE)
    assert ns.instance_count() == 0
    assert ns.actor_count() == 0  # no entry: the alarm is in storage only
    assert actors_alive() == 0
    assert instance() is None
    assert ns.alarm_of("tomorrow") == due  # answered from storage
    # One timer: it wakes once, a window before the alarm, not every window.
    assert clock.next_deadline() == due / 1000 - ALARM_WINDOW_SECONDS
    await clock.advance_to(due / 1000)
    assert [call.at for call in env.probe.alarms_of(object_id)] == [due / 1000]
    assert env.probe.constructed == 2  # rebuilt by its alarm
    assert await stub.incr("n") == 2


async def test_a_far_alarm_stays_in_storage_across_a_restart(env: Env, clock: ManualClock) -> None:
    ns = await env.open()
    stub = ns.getByName("next-week")
    object_id = (await stub.whoami())["id"]
    due = now_ms(clock.now()) + 7 * DAY_MS
    await stub.storage("setAlarm", due)
    await ns.close()
    ns = await env.open()
    assert ns.actor_count() == 0  # opening loads only the alarms due within the window
    assert ns.alarm_of("next-week") == due
    await clock.advance_to(due / 1000 - 1)
    assert env.probe.alarms_of(object_id) == []
    await clock.advance_to(due / 1000)
    assert [call.at for call in env.probe.alarms_of(object_id)] == [due / 1000]


async def test_many_far_alarms_leave_nothing_in_memory(env: Env, clock: ManualClock) -> None:
    ns = await env.open()
    start = now_ms(clock.now())
    dues = {}
    for i in range(200):
        stub = ns.getByName(f"run-{i}")
        dues[(await stub.whoami())["id"]] = start + DAY_MS + i * 1_000  # one a second
        await stub.storage("setAlarm", start + DAY_MS + i * 1_000)
    await clock.advance(IDLE)
    assert ns.actor_count() == 0
    assert actors_alive() == 0
    assert len(ns._heap) == 0
    await clock.advance_to((start + DAY_MS) / 1000 + 200)
    fired = {call.object_id: call.at for call in env.probe.alarms}
    assert fired == {object_id: due / 1000 for object_id, due in dues.items()}


async def test_alarms_inside_the_window_fire_precisely(env: Env, clock: ManualClock) -> None:
    """Within the window an evicted object keeps its entry; just past it, none; both fire at
    their millisecond."""
    ns = await env.open()
    near, far = ns.getByName("near"), ns.getByName("far")
    near_id, far_id = (await near.whoami())["id"], (await far.whoami())["id"]
    near_due = now_ms(clock.now()) + 150_123
    far_due = now_ms(clock.now()) + round((IDLE + ALARM_WINDOW_SECONDS) * 1000) + 7
    await near.storage("setAlarm", near_due)
    await far.storage("setAlarm", far_due)
    await clock.advance(IDLE)
    assert ns.instance_count() == 0
    assert ns.actor_count() == 1  # near's: due within the window
    await clock.advance_to(near_due / 1000 - 0.001)
    assert env.probe.alarms == []
    await clock.advance_to(far_due / 1000)
    assert [call.at for call in env.probe.alarms_of(near_id)] == [near_due / 1000]
    assert [call.at for call in env.probe.alarms_of(far_id)] == [far_due / 1000]


async def test_alarm_calls_on_an_evicted_object(env: Env, clock: ManualClock) -> None:
    """getAlarm, setAlarm and deleteAlarm on an object whose far alarm is only in storage."""
    ns = await env.open()
    soon, gone = ns.getByName("moved-sooner"), ns.getByName("deleted")
    soon_id = (await soon.whoami())["id"]
    far = now_ms(clock.now()) + DAY_MS
    await soon.storage("setAlarm", far)
    await gone.storage("setAlarm", far)
    await clock.advance(IDLE)
    assert ns.actor_count() == 0
    assert await soon.storage("getAlarm") == far
    sooner = now_ms(clock.now()) + 10_000
    await soon.storage("setAlarm", sooner)  # within the window, set on a rebuilt object
    assert await gone.storage("getAlarm") == far
    await gone.storage("deleteAlarm")
    assert ns.alarm_of("deleted") is None
    await clock.advance(IDLE)
    assert [call.at for call in env.probe.alarms_of(soon_id)] == [sooner / 1000]
    await clock.advance_to(far / 1000 + 1)
    assert len(env.probe.alarms) == 1  # neither the replaced nor the deleted alarm fired


async def test_the_window_query_uses_the_time_index(env: Env, clock: ManualClock) -> None:
    ns = await env.open()
    plan: list[Any] = ns._db.execute(
        "EXPLAIN QUERY PLAN SELECT object_id, time_ms, retry FROM kumofire_local_do_alarms"
        " WHERE time_ms >= ? AND time_ms < ?",
        (0, 1),
    ).fetchall()
    assert any("kumofire_local_do_alarms_by_time" in row[-1] for row in plan), plan


async def test_a_nearer_alarm_left_in_storage_re_aims_the_window_timer(
    env: Env, clock: ManualClock
) -> None:
    """The timer waits for the earliest stored alarm: one stored later, but due sooner, moves
    it earlier, even hours after the last window was loaded."""
    ns = await env.open()
    week, hour = ns.getByName("week"), ns.getByName("hour")
    hour_id = (await hour.whoami())["id"]
    await week.storage("setAlarm", now_ms(clock.now()) + 7 * DAY_MS)
    await clock.advance(2 * 3600)
    due = now_ms(clock.now()) + 3_600_000
    await hour.storage("setAlarm", due)
    await clock.advance(IDLE)
    assert ns.actor_count() == 0
    assert clock.next_deadline() == due / 1000 - ALARM_WINDOW_SECONDS
    await clock.advance_to(due / 1000)
    assert [call.at for call in env.probe.alarms_of(hour_id)] == [due / 1000]
    assert len(env.probe.alarms) == 1


async def test_a_stored_alarm_due_while_stopped_fires_at_start(
    env: Env, clock: ManualClock
) -> None:
    ns = await env.open()
    stub = ns.getByName("overdue")
    object_id = (await stub.whoami())["id"]
    due = now_ms(clock.now()) + DAY_MS
    await stub.storage("setAlarm", due)
    await clock.advance(IDLE)
    assert ns.actor_count() == 0
    await ns.stop()
    await clock.advance_to(due / 1000 + 60)
    assert env.probe.alarms == []
    await ns.start()
    await clock.advance(0)
    assert [call.at for call in env.probe.alarms_of(object_id)] == [due / 1000 + 60]


async def test_a_failed_commit_on_a_revived_object_keeps_its_stored_alarm(
    env: Env, clock: ManualClock
) -> None:
    """setAlarm on an object whose far alarm was in storage only, lost with its commit: the
    stored alarm stands, leaves memory again, and fires at its time."""
    ns = await env.open()
    stub = ns.getByName("revived")
    object_id = (await stub.whoami())["id"]
    far = now_ms(clock.now()) + DAY_MS
    await stub.storage("setAlarm", far)
    await clock.advance(IDLE)
    assert ns.actor_count() == 0
    original = ns._write_out

    def failing(dirty: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    ns._write_out = failing  # type: ignore[method-assign]
    with pytest.raises(DurableObjectError, match="disk is full"):
        await stub.storage("setAlarm", now_ms(clock.now()) + 10_000)
    ns._write_out = original  # type: ignore[method-assign]
    assert await stub.storage("getAlarm") == far
    await clock.advance(IDLE)
    assert ns.actor_count() == 0
    await clock.advance_to(far / 1000)
    assert [call.at for call in env.probe.alarms_of(object_id)] == [far / 1000]
