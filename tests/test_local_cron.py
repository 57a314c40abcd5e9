"""The embedded Cron Triggers, driven by the manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest

from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.cron import LocalCron, ScheduledController, next_fire_time, to_croniter

MINUTE = 60.0
START = 1_798_761_600.0  # the manual clock's start: 2027-01-01T00:00:00Z, a Friday


class Calls:
    """A scheduled handler that records (cron, scheduledTime, clock time) per call."""

    def __init__(
        self, clock: ManualClock, then: Callable[[int], Awaitable[None]] | None = None
    ) -> None:
        self.clock = clock
        self.then = then
        self.seen: list[tuple[str, float, float]] = []
        self.controllers: list[ScheduledController] = []

    async def __call__(self, controller: ScheduledController) -> None:
        self.seen.append((controller.cron, controller.scheduledTime, self.clock.now()))
        self.controllers.append(controller)
        if self.then is not None:
            await self.then(len(self.seen))

    def minutes(self, cron: str | None = None) -> list[float]:
        """Minutes since START at which calls were scheduled (for `cron`, or all)."""
        return [(ms / 1000 - START) / MINUTE for c, ms, _ in self.seen if cron in (None, c)]


@pytest.fixture
async def crons() -> AsyncIterator[list[LocalCron]]:
    started: list[LocalCron] = []
    yield started
    for cron in started:
        await cron.stop(cancel_in_flight=True)


async def _start(crons: list[LocalCron], cron: LocalCron) -> LocalCron:
    crons.append(cron)
    await cron.start()
    return cron


async def test_every_minute_fires_at_each_minute_boundary(
    clock: ManualClock, crons: list[LocalCron]
) -> None:
    assert clock.now() == START
    calls = Calls(clock)
    await _start(crons, LocalCron(["* * * * *"], calls, clock))
    await clock.advance(59.999)
    assert calls.seen == []
    await clock.advance(0.001)
    assert calls.minutes() == [1]
    await clock.advance(3 * MINUTE)
    assert calls.minutes() == [1, 2, 3, 4]
    # Each call runs at the minute it is for.
    assert all(ms / 1000 == at for _, ms, at in calls.seen)


async def test_every_fifth_minute(clock: ManualClock, crons: list[LocalCron]) -> None:
    calls = Calls(clock)
    await clock.advance(2 * MINUTE + 17)  # start off the boundary
    await _start(crons, LocalCron(["*/5 * * * *"], calls, clock))
    await clock.advance(16 * MINUTE)
    assert calls.minutes() == [5, 10, 15]


async def test_controller_fields(clock: ManualClock, crons: list[LocalCron]) -> None:
    calls = Calls(clock)
    await _start(crons, LocalCron(["*/2 * * * *"], calls, clock))
    await clock.advance(2 * MINUTE)
    (controller,) = calls.controllers
    assert controller.cron == "*/2 * * * *"
    assert controller.type == "scheduled"
    assert isinstance(controller.scheduledTime, float)
    assert controller.scheduledTime == (START + 2 * MINUTE) * 1000
    controller.noRetry()  # accepted; local cron never retries anyway


async def test_a_raising_handler_does_not_stop_later_ticks(
    clock: ManualClock, crons: list[LocalCron]
) -> None:
    async def fail_first(call: int) -> None:
        if call == 1:
            raise RuntimeError("tick failed")

    calls = Calls(clock, fail_first)
    await _start(crons, LocalCron(["* * * * *"], calls, clock))
    await clock.advance(3 * MINUTE)
    assert calls.minutes() == [1, 2, 3]


async def test_each_trigger_due_in_a_minute_gets_its_own_call(
    clock: ManualClock, crons: list[LocalCron]
) -> None:
    calls = Calls(clock)
    await _start(crons, LocalCron(["* * * * *", "*/2 * * * *"], calls, clock))
    await clock.advance(4 * MINUTE)
    assert calls.minutes("* * * * *") == [1, 2, 3, 4]
    assert calls.minutes("*/2 * * * *") == [2, 4]
    assert len(calls.seen) == 6


async def test_a_slow_handler_does_not_delay_the_next_tick(
    clock: ManualClock, crons: list[LocalCron]
) -> None:
    async def slow(call: int) -> None:
        await clock.sleep_until(clock.now() + 10 * MINUTE)

    calls = Calls(clock, slow)
    await _start(crons, LocalCron(["* * * * *"], calls, clock))
    await clock.advance(3 * MINUTE)
    assert calls.minutes() == [1, 2, 3]


async def test_stop_ends_the_ticks(clock: ManualClock) -> None:
    calls = Calls(clock)
    cron = LocalCron(["* * * * *"], calls, clock)
    await cron.start()
    await clock.advance(MINUTE)
    await cron.stop()
    await clock.advance(10 * MINUTE)
    assert calls.minutes() == [1]
    assert clock.next_deadline() is None


def test_weekdays_count_from_sunday_as_one() -> None:
    """Cloudflare: weekdays 1-7 from Sunday, `0 17 * * sun` is `0 17 * * 1`."""

    def next_at(expression: str) -> str:
        return datetime.fromtimestamp(next_fire_time(expression, START), UTC).strftime(
            "%a %Y-%m-%d %H:%M"
        )

    assert next_at("0 17 * * sun") == next_at("0 17 * * 1") == "Sun 2027-01-03 17:00"
    assert next_at("10 7 * * 2-6") == next_at("10 7 * * mon-fri") == "Fri 2027-01-01 07:10"
    assert next_at("0 18 * * 6L") == next_at("0 18 * * friL") == "Fri 2027-01-29 18:00"
    assert next_at("0 0 * * 2#1") == "Mon 2027-01-04 00:00"
    assert next_at("0 15 1 * *") == "Fri 2027-01-01 15:00"
    assert to_croniter("*/3 * * * *") == "*/3 * * * *"


@pytest.mark.parametrize(
    "expression", ["* * * *", "* * * * * *", "61 * * * *", "0 0 * * 0", "0 0 * * 8", "nope"]
)
def test_invalid_expressions_are_rejected_up_front(expression: str, clock: ManualClock) -> None:
    async def handler(controller: ScheduledController) -> None:
        return None

    with pytest.raises(ValueError, match=r"cron|weekday"):
        LocalCron([expression], handler, clock)
