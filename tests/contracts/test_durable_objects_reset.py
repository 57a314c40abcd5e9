"""A failed storage commit resets the object, as on the platform: its instance goes, and the
calls of that instance still in flight fail (at their next storage operation, and in their
answer) instead of writing on from the memory of an object that no longer exists, or telling
their callers of writes that were lost (the limiter keeps its line in memory and commits its
writes before it wakes a run: a grant whose write was lost, answered as granted, would let one
more run start than the limit)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.durable_objects import (
    ALARM_RETRY_START_SECONDS,
    DurableObjectError,
    LocalDurableObjectNamespace,
)

from .durable_object_contract import ContractObject, Probe, now_ms


class Remembering(ContractObject):
    """Keeps a count in memory, as the limiter keeps its line, and writes it through."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.env = env
        self.count: int | None = None

    async def bump_after(self, tag: str) -> int:
        """Read the count, wait for `tag` (not storage: other calls run), write count + 1."""
        if self.count is None:
            self.count = int(await self.ctx.storage.get("count") or 0)
        await self.probe.gate(tag)
        self.count += 1
        await self.ctx.storage.put("count", self.count)
        return self.count

    async def write_then_call(self, other: str) -> str:
        """Write, then call another object (which commits the write first), ignoring that
        call's failure: as the limiter's wakes do."""
        await self.ctx.storage.put("written", True)
        with contextlib.suppress(DurableObjectError):
            await self.env.NS.getByName(other).note("called")
        return "answered"

    async def alarm(self, alarmInfo: Any = None) -> None:
        """`write_then_call` as an alarm."""
        self.probe.events.append(("alarm", self.ctx.id.name))
        await self.write_then_call("other")


@pytest.fixture
def probe(clock: ManualClock) -> Probe:
    return Probe(now=clock.now)


@pytest.fixture
async def namespace(
    clock: ManualClock, data_dir: Path, probe: Probe
) -> AsyncIterator[LocalDurableObjectNamespace]:
    env = SimpleNamespace(PROBE=probe)
    ns = LocalDurableObjectNamespace(Remembering, path=data_dir / "do", clock=clock, env=env)
    env.NS = ns
    await ns.start()
    yield ns
    await ns.close()


async def test_a_call_in_flight_when_its_object_was_reset_fails_and_writes_nothing(
    namespace: LocalDurableObjectNamespace, probe: Probe, clock: ManualClock
) -> None:
    stub = namespace.getByName("reset")
    await stub.storage("put", "count", 5)
    in_flight = asyncio.ensure_future(stub.bump_after("first"))
    await clock.advance(0)
    original = namespace._write_out

    def failing(dirty: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    namespace._write_out = failing  # type: ignore[method-assign]
    with pytest.raises(DurableObjectError, match="disk I/O error"):
        await stub.storage("put", "other", 1)  # its commit fails: the object is reset
    namespace._write_out = original  # type: ignore[method-assign]
    # A fresh instance, built from storage, serves the next call.
    second = asyncio.ensure_future(stub.bump_after("second"))
    await clock.advance(0)
    probe.open("second")
    assert await second == 6
    # The call of the old instance goes on from its memory (5): it must not write 6 again.
    probe.open("first")
    with pytest.raises(DurableObjectError, match="reset"):
        await in_flight
    assert await stub.storage("get", "count") == 6
    probe.open("third")
    assert await stub.bump_after("third") == 7


async def test_a_call_whose_writes_failed_to_commit_before_it_called_out_fails(
    namespace: LocalDurableObjectNamespace,
) -> None:
    """Its writes are committed before its call out, and that commit fails: the object is
    reset and the call's caller gets the error, as when the commit comes after the call (the
    caller must never be told of a write that was lost)."""
    stub = namespace.getByName("writer")
    await stub.storage("put", "count", 1)
    original = namespace._write_out

    def failing(dirty: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    namespace._write_out = failing  # type: ignore[method-assign]
    try:
        with pytest.raises(DurableObjectError, match="reset"):
            await stub.write_then_call("other")
    finally:
        namespace._write_out = original  # type: ignore[method-assign]
    assert await stub.storage("get", "written") is None


async def test_an_alarm_whose_writes_failed_to_commit_before_it_called_out_is_retried(
    namespace: LocalDurableObjectNamespace, probe: Probe, clock: ManualClock
) -> None:
    """The alarm's run failed (its writes were lost and the object reset): its stored alarm
    is retried after the backoff, not deleted as if it had succeeded."""
    stub = namespace.getByName("alarmed")
    await stub.storage("setAlarm", now_ms(clock.now()) + 1_000)
    original = namespace._write_out
    failures = [sqlite3.OperationalError("disk I/O error")]

    def failing_once(dirty: Any) -> None:
        if failures:
            raise failures.pop()
        original(dirty)

    namespace._write_out = failing_once  # type: ignore[method-assign]
    await clock.advance(1)
    assert probe.events == [("alarm", "alarmed")] and not failures
    assert await stub.storage("get", "written") is None
    assert await stub.storage("getAlarm") is not None  # kept, for its retry
    await clock.advance(ALARM_RETRY_START_SECONDS)
    assert [event for event in probe.events if event[0] == "alarm"] == [("alarm", "alarmed")] * 2
    assert await stub.storage("get", "written") is True
    assert await stub.storage("getAlarm") is None
