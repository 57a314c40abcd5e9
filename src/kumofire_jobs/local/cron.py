"""The embedded Cron Triggers: the configured expressions call the `scheduled` handler.

As on the platform: UTC, one-minute resolution, one call per trigger per occurrence (two
triggers due the same minute make two calls), a failing call is logged and does not stop
later ones, and occurrences missed while the process was not running are not replayed.

Expressions are Cloudflare's five fields. Its weekday field counts 1-7 from Sunday (Quartz),
where croniter counts 0-6 from Sunday, so numeric weekdays are translated before croniter
sees them; names (SUN-SAT), `L` and `#` carry over. croniter has no `W` (nearest weekday):
an expression using it is rejected here, though the platform accepts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from croniter import croniter

from kumofire_jobs.core.clock import Clock
from kumofire_jobs.core.log import get_logger

_log = get_logger(component="local.cron")

_WEEKDAY_NAMES: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # croniter's 0-6


class ScheduledController:
    """What `scheduled(controller)` receives (the platform's `ScheduledController`)."""

    __slots__ = ("_no_retry", "cron", "scheduledTime", "type")

    def __init__(self, cron: str, scheduled_time_ms: float) -> None:
        self.cron = cron
        self.scheduledTime = scheduled_time_ms  # epoch ms of the minute it fires for
        self.type = "scheduled"
        self._no_retry = False

    def noRetry(self) -> None:  # the platform's spelling
        # Local cron never retries a failed call, so this only records the wish.
        self._no_retry = True

    def __repr__(self) -> str:
        return f"ScheduledController(cron={self.cron!r}, scheduledTime={self.scheduledTime})"


ScheduledHandler = Callable[[ScheduledController], Awaitable[None]]


def _weekday_token(token: str) -> str:
    """One comma-separated item of a Cloudflare weekday field, in croniter's numbering."""

    def shift(number: str) -> str:
        value = int(number)
        if not 1 <= value <= 7:
            raise ValueError(f"weekday {value} is out of range 1-7 (1 is Sunday)")
        return str(value - 1)

    if token.upper().endswith("L") and token.upper() != "L":  # "6L", "friL": the last Friday
        day = token[:-1]
        if day.isdigit():
            return "L" + shift(day)
        if day.lower() not in _WEEKDAY_NAMES:
            raise ValueError(f"unknown weekday {day!r}")
        return "L" + str(_WEEKDAY_NAMES.index(day.lower()))
    if "#" in token:  # "2#1": the first Monday
        day, nth = token.split("#", 1)
        return (shift(day) if day.isdigit() else day) + "#" + nth
    base, slash, step = token.partition("/")  # a value, a range "a-b" or "*", then a step
    if base != "*":
        base = "-".join(shift(p) if p.isdigit() else p for p in base.split("-"))
    return base + slash + step


def to_croniter(expression: str) -> str:
    """A Cloudflare cron expression in croniter's dialect; ValueError when it is not valid."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"cron expression {expression!r} must have 5 fields, has {len(fields)}")
    fields[4] = ",".join(_weekday_token(t) for t in fields[4].split(","))
    translated = " ".join(fields)
    try:
        croniter(translated, datetime(2000, 1, 1, tzinfo=UTC))
    except (ValueError, KeyError) as exc:  # croniter's errors subclass ValueError
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from exc
    return translated


def next_fire_time(expression: str, after: float) -> float:
    """The first occurrence of a Cloudflare cron expression strictly after `after` (epoch s)."""
    start = datetime.fromtimestamp(after, UTC)
    return float(croniter(to_croniter(expression), start).get_next(float))


class LocalCron:
    """Calls `handler` for each trigger at each of its occurrences, timed by the clock."""

    def __init__(self, triggers: Sequence[str], handler: ScheduledHandler, clock: Clock) -> None:
        # Validate now, so a bad wrangler.toml fails at startup rather than at a tick.
        self._triggers = [(t, to_croniter(t)) for t in triggers]
        self._handler = handler
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def triggers(self) -> list[str]:
        return [expression for expression, _ in self._triggers]

    async def start(self) -> None:
        if self._task is None and self._triggers:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="local-cron")

    async def stop(self, *, cancel_in_flight: bool = False) -> None:
        """Stop ticking; let running calls finish, or cancel them."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        calls = list(self._in_flight)
        if cancel_in_flight:
            for call in calls:
                call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)

    def _next_after(self, translated: str, after: float) -> float:
        return float(croniter(translated, datetime.fromtimestamp(after, UTC)).get_next(float))

    async def _run(self) -> None:
        now = self._clock.now()
        due = [self._next_after(translated, now) for _, translated in self._triggers]
        while True:
            await self._clock.sleep_until(min(due))
            now = self._clock.now()
            for index, (expression, translated) in enumerate(self._triggers):
                if due[index] <= now:
                    self._fire(ScheduledController(expression, due[index] * 1000))
                    # From now, not from the due time: after a stall, missed ticks are skipped.
                    due[index] = self._next_after(translated, max(now, due[index]))

    def _fire(self, controller: ScheduledController) -> None:
        # Each call runs on its own, as separate invocations do: a slow one delays no tick.
        task = asyncio.get_running_loop().create_task(self._call(controller))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _call(self, controller: ScheduledController) -> None:
        try:
            await self._handler(controller)
        except Exception:
            _log.exception(
                "scheduled handler raised", cron=controller.cron, time=controller.scheduledTime
            )
