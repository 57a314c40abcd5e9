from __future__ import annotations

import asyncio

from kumofire_jobs.core.clock import ManualClock, sleep_until_or_woken


async def test_manual_clock_fires_timers_in_order_including_ones_set_on_the_way(
    clock: ManualClock,
) -> None:
    start = clock.now()
    fired: list[float] = []

    async def chain() -> None:
        await clock.sleep_until(start + 1)
        fired.append(clock.now() - start)
        await clock.sleep_until(start + 2)
        fired.append(clock.now() - start)

    task = asyncio.create_task(chain())
    await clock.advance(5)
    assert fired == [1, 2]
    assert clock.now() == start + 5
    assert task.done()


async def test_sleep_until_or_woken_returns_on_wake_before_deadline(clock: ManualClock) -> None:
    wake = asyncio.Event()
    task = asyncio.create_task(sleep_until_or_woken(clock, clock.now() + 60, wake))
    await clock.advance(1)
    assert not task.done()
    wake.set()
    await clock.advance(0)
    assert task.done()
    assert clock.next_deadline() is None
