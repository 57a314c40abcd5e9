from __future__ import annotations

import asyncio

from kumofire_jobs.core.clock import ManualClock, call_at, sleep_until_or_woken


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


async def test_call_at_fires_at_its_deadline_in_order_with_sleepers_unless_cancelled(
    clock: ManualClock,
) -> None:
    start = clock.now()
    fired: list[tuple[str, float]] = []

    async def sleeper() -> None:
        await clock.sleep_until(start + 2)
        fired.append(("sleeper", clock.now() - start))

    task = asyncio.create_task(sleeper())
    call_at(clock, start + 3, lambda: fired.append(("timer", clock.now() - start)))
    call_at(clock, start + 1, lambda: fired.append(("early", clock.now() - start)))
    cancelled = call_at(clock, start + 2.5, lambda: fired.append(("cancelled", 0)))
    cancelled.cancel()
    await clock.advance(0.5)
    assert fired == []
    await clock.advance(5)
    assert fired == [("early", 1), ("sleeper", 2), ("timer", 3)]
    assert task.done()
    assert clock.next_deadline() is None


async def test_call_at_on_a_clock_without_timers_waits_with_sleep_until(
    clock: ManualClock,
) -> None:
    class SleepOnly:  # a user's clock: `now` and `sleep_until` only
        def now(self) -> float:
            return clock.now()

        async def sleep_until(self, deadline: float) -> None:
            await clock.sleep_until(deadline)

    start = clock.now()
    fired: list[float] = []
    call_at(SleepOnly(), start + 1, lambda: fired.append(clock.now() - start))
    call_at(SleepOnly(), start + 2, lambda: fired.append(-1)).cancel()
    await clock.advance(5)
    assert fired == [1]


async def test_call_at_a_past_deadline_fires_without_advancing(clock: ManualClock) -> None:
    fired: list[float] = []
    call_at(clock, clock.now() - 1, lambda: fired.append(clock.now()))
    await asyncio.sleep(0)
    assert fired == [clock.now()]
