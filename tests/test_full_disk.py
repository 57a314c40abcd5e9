"""A full data directory (issue 10, defect 2): failed commits keep their backoff, nothing
spins, the repeated error is logged at a bounded rate, starting on a full disk says so in
one line, and once space is freed every accepted run completes.

The disk is simulated at the SQLite connection (`full_disk.FullDisk`): every commit fails
with SQLITE_FULL while it is full. Time is the manual clock; `settle()` raises if the event
loop never goes quiet, so a busy loop fails a test instead of hanging it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kumofire_jobs.clock import ManualClock
from kumofire_jobs.local.durable_objects import (
    ALARM_MAX_RETRIES,
    LocalDurableObjectNamespace,
    LocalDurableObjectState,
)

from .full_disk import FullDisk


class Ticker:
    """A Durable Object whose alarm writes storage and records each run."""

    runs: list[tuple[float, int]] = []

    def __init__(self, ctx: LocalDurableObjectState, env: Any) -> None:
        self.ctx = ctx
        self.clock: ManualClock = env

    async def arm(self, at_ms: float) -> None:
        await self.ctx.storage.setAlarm(at_ms)

    async def alarm(self, info: Any) -> None:
        Ticker.runs.append((self.clock.now(), info.retryCount))
        await self.ctx.storage.put("ran", len(Ticker.runs))


async def ticker_namespace(clock: ManualClock, path: Path) -> LocalDurableObjectNamespace:
    Ticker.runs = []
    ns = LocalDurableObjectNamespace(Ticker, path=path, clock=clock, env=clock)
    await ns.start()
    return ns


# --- Durable Object alarms ------------------------------------------------------------------


async def test_alarm_whose_commit_fails_is_retried_with_the_platform_backoff(
    clock: ManualClock, tmp_path: Path
) -> None:
    ns = await ticker_namespace(clock, tmp_path)
    disk = FullDisk()
    ns._db = disk.wrap(ns._db)
    try:
        start = clock.now()
        await ns.getByName("t").arm(start * 1000 + 1000)
        disk.full = True
        await clock.advance(1 + 2 + 4 + 8 + 16 + 32 + 64 + 64 + 64 - 0.5)
        offsets = [round(at - start, 3) for at, _ in Ticker.runs]
        # The first run, then the platform's 2 s doubling, then the last backoff while the
        # commits keep failing (the alarm is still stored: it is not dropped).
        assert offsets == [1, 3, 7, 15, 31, 63, 127, 191]
        assert [retry for _, retry in Ticker.runs] == [0, 1, 2, 3, 4, 5, 6, 6]
        assert ns.alarm_of("t") == (start + 255) * 1000

        disk.full = False
        await clock.advance(1)
        assert len(Ticker.runs) == 9  # the run whose commit succeeds ends the alarm
        assert ns.alarm_of("t") is None
        await clock.advance(600)
        assert len(Ticker.runs) == 9
    finally:
        await ns.close()


async def test_throwing_alarm_whose_retry_cannot_be_stored_keeps_its_backoff(
    clock: ManualClock, tmp_path: Path
) -> None:
    class Failing(Ticker):
        async def alarm(self, info: Any) -> None:
            Ticker.runs.append((self.clock.now(), info.retryCount))
            raise RuntimeError("handler failed")

    Ticker.runs = []
    ns = LocalDurableObjectNamespace(Failing, path=tmp_path, clock=clock, env=clock)
    await ns.start()
    disk = FullDisk()
    ns._db = disk.wrap(ns._db)
    try:
        start = clock.now()
        await ns.getByName("t").arm(start * 1000)
        disk.full = True
        await clock.advance(2 + 4 + 8 + 16 + 32 + 64 + 1)
        offsets = [round(at - start, 3) for at, _ in Ticker.runs]
        assert offsets == [0, 2, 6, 14, 30, 62, 126]
        assert [retry for _, retry in Ticker.runs] == list(range(ALARM_MAX_RETRIES + 1))
    finally:
        await ns.close()
