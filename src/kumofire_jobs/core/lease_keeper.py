"""The lease keeper of a running attempt: renews its lease (and its job limiter's slot) every
third of the lease while the handler runs, and stops the handler if the run was canceled or
the lease lost, or at its job's timeout."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .clock import Clock, Timer, call_at
from .coordination import Coordinators
from .errors import JobCanceledError, LeaseLostError
from .history import describe_error
from .limits import Limits
from .log import get_logger

if TYPE_CHECKING:
    from .attempt import Attempt

log = get_logger()


class LeaseKeeper:
    """Renews the lease every third of its length while the handler runs; if the run was
    canceled or the lease lost, stops the handler."""

    def __init__(
        self,
        coordinators: Coordinators,
        clock: Clock,
        attempt: Attempt,
        lease_ms: int,
        limits: Limits | None = None,
    ) -> None:
        self._coordinators = coordinators
        self._limits = limits
        self._clock = clock
        self._run_id = attempt.run.id
        self._token = attempt.token
        self._lease_ms = lease_ms
        self.ended: str | None = None  # "canceled", "lost", "slot_lost" or "timed_out"
        self.finished = False  # the handler returned or raised
        self.stopped_runner = False  # keep() cancelled the handler's task
        # Until the first renewal is due, a timer (most handlers end before it); then a task.
        self._timers: list[Timer] = []
        self._keeping: asyncio.Future[None] | None = None

    def start(self, runner: asyncio.Task[Any], timeout_at: float | None) -> None:
        """While the handler runs in `runner`: renew the lease every third of it, and stop
        the handler at clock time `timeout_at` (its job's timeout), if any."""
        interval = self._lease_ms / 3000
        self._timers.append(
            call_at(self._clock, self._clock.now() + interval, lambda: self._renew_soon(runner))
        )
        if timeout_at is not None:
            self._timers.append(call_at(self._clock, timeout_at, lambda: self._time_out(runner)))

    def stop(self) -> None:
        """The handler ended: renew no more (a renewal under way is left to finish, touching
        nothing: `finished` is set)."""
        self.finished = True
        for timer in self._timers:
            timer.cancel()
        if self._keeping is not None:
            self._keeping.cancel()

    def _renew_soon(self, runner: asyncio.Task[Any]) -> None:
        if not self.finished:
            self._keeping = asyncio.ensure_future(self.keep(runner, first=True))

    async def renew(self) -> None:
        result = await self._coordinators.renew(self._run_id, self._token, self._lease_ms)
        if not result["ok"]:
            self.ended = "canceled" if result["reason"] == "canceled" else "lost"
        elif self._limits is not None and not await self._limits.renew(self._run_id, self._token):
            self.ended = "slot_lost"  # the limiter gave the slot away: at most N at once
        self.raise_if_ended()

    def raise_if_ended(self) -> None:
        if self.ended == "canceled":
            raise JobCanceledError(f"run {self._run_id} was canceled")
        if self.ended in ("lost", "slot_lost"):
            raise LeaseLostError(f"the lease on run {self._run_id} was lost")

    async def keep(self, runner: asyncio.Task[Any], *, first: bool = False) -> None:
        """Renew until `finished` is set (`first`: renew at once, then every interval); stop
        `runner` (the task running the handler) if the run was canceled or the lease lost."""
        interval = self._lease_ms / 3000
        while not self.finished:
            if not first:
                await self._clock.sleep_until(self._clock.now() + interval)
            first = False
            if self.finished:
                return
            try:
                await self.renew()
            except (JobCanceledError, LeaseLostError):
                if not self.finished:
                    self.stopped_runner = True
                    runner.cancel()
                return
            except Exception as exc:  # a failed renewal is retried at the next interval
                log.warning("lease.renew_failed", run_id=self._run_id, error=describe_error(exc))

    def _time_out(self, runner: asyncio.Task[Any]) -> None:
        """The job's timeout: stop the handler (`runner`), unless it ended."""
        if not self.finished and self.ended is None:
            self.ended = "timed_out"
            self.stopped_runner = True
            runner.cancel()
