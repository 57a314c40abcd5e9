"""Time, injected.

Every component that reads the time or waits for it takes a `Clock`. Production uses
`SystemClock`; tests use `ManualClock` and move time forward explicitly, so no test sleeps
to wait for a timer. Times are Unix epoch seconds as floats (millisecond precision is what
the platform offers; floats carry microseconds).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from . import precise_sleep


@runtime_checkable
class Clock(Protocol):
    """The time source every binding and the runtime take."""

    def now(self) -> float:
        """The current time, Unix epoch seconds."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once `now() >= deadline`; never earlier. Cancellable."""
        ...


def now_ms(clock: Clock) -> int:
    """The clock's time as whole epoch milliseconds (the platform's alarm unit)."""
    return int(clock.now() * 1000)


class Timer(Protocol):
    """A callback waiting for its time (`call_at`): `cancel()` it before then."""

    def cancel(self) -> Any: ...


def call_at(clock: Clock, deadline: float, callback: Callable[[], None]) -> Timer:
    """Call `callback` on the event loop once `clock.now() >= deadline` (about then: for
    timers that need no precision, such as a lease's renewal). Cheaper than a task that
    sleeps when it is mostly cancelled before it fires: most handlers end long before their
    lease needs renewing. A clock without `call_at` of its own gets such a task."""
    own = getattr(clock, "call_at", None)
    if own is not None:
        timer: Timer = own(deadline, callback)
        return timer

    async def wait() -> None:
        await clock.sleep_until(deadline)
        callback()

    return asyncio.ensure_future(wait())


class SystemClock:
    """Wall-clock time; waits with the event loop's timers (no polling), to well under a
    millisecond (`precise_sleep`): an alarm's lateness is mostly this wait."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        await precise_sleep.sleep_until(deadline)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        """See `call_at`: the event loop's own timer (within a millisecond or so)."""
        return asyncio.get_running_loop().call_later(max(0.0, deadline - time.time()), callback)


class ManualClock:
    """A clock that only moves when told to.

    `advance()` steps through every pending deadline in order: at each one it sets the time,
    wakes the sleepers due then, and lets the event loop run until nothing is ready before
    taking the next step. So a timer that, when it fires, sets another timer inside the
    advanced window fires too, at its own time.
    """

    def __init__(self, start: float = 1_798_761_600.0) -> None:  # 2027-01-01T00:00:00Z
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), future))
        await future

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        """See `call_at`: fired by `advance()` at `deadline`, in order with the sleepers."""
        loop = asyncio.get_running_loop()
        if deadline <= self._now:
            return loop.call_soon(callback)
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), future))
        future.add_done_callback(lambda done: None if done.cancelled() else callback())
        return future

    def next_deadline(self) -> float | None:
        """The earliest deadline anything is waiting for, or None."""
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing every timer due on the way."""
        if seconds < 0:
            raise ValueError("a manual clock never goes backwards")
        await self.advance_to(self._now + seconds)

    async def advance_to(self, target: float) -> None:
        await settle()
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > target:
                break
            self._now = max(self._now, deadline)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, future = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
            await settle()
        self._now = max(self._now, target)
        await settle()

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)


async def settle(max_rounds: int = 100_000) -> None:
    """Yield to the event loop until no callback is ready to run.

    With a manual clock and the embedded bindings (whose storage calls complete without
    I/O), "nothing ready" means every task is waiting for the clock or for an outside event.
    """
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)  # CPython's run queue; absent on other loops
    quiet = 0
    for _ in range(max_rounds):
        await asyncio.sleep(0)
        if ready is not None and len(ready) == 0:
            quiet += 1
            if quiet >= 2:
                return
        else:
            quiet = 0
    if ready is not None:
        raise RuntimeError("the event loop did not settle: something is busy-looping")


async def sleep_until_or_woken(clock: Clock, deadline: float | None, wake: asyncio.Event) -> None:
    """Wait until `deadline` (None: forever) or until `wake` is set, whichever comes first.

    The schedulers of the embedded bindings wait like this: for their next timer, or for
    news of an earlier one. `wake` is cleared on return.
    """
    if wake.is_set():
        wake.clear()
        return
    if deadline is None:
        await wake.wait()
        wake.clear()
        return
    if deadline <= clock.now():
        return
    sleeper = asyncio.ensure_future(clock.sleep_until(deadline))
    waker = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waker):
            if not task.done():
                task.cancel()
        wake.clear()
