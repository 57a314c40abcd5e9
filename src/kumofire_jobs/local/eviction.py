"""Idle eviction for the embedded Durable Objects, as the platform evicts its objects.

Cloudflare keeps an object in memory while it works and for a while after: once it has had
no request and no event for 70-140 s, it is evicted, and its next call or alarm builds a
fresh instance from storage ("Lifecycle of a Durable Object"). Without eviction a process
that runs for days keeps every object it ever touched. `IdleEvictor` remembers since when
each idle object has been idle (oldest first) and, driven by the injected clock, offers each
to the namespace once `IDLE_EVICTION_SECONDS` have passed; the namespace decides whether it
can go (see `LocalDurableObjectNamespace._evict_idle`) or must wait another period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from kumofire_jobs.core.clock import Clock, sleep_until_or_woken

# The platform's lower bound: an object idle this long may be evicted.
IDLE_EVICTION_SECONDS = 70.0

T = TypeVar("T")


class IdleEvictor(Generic[T]):
    """Idle objects in the order they fell idle; `evict(obj)` is offered each one once its
    idle period is over, and answers False to keep it for another period."""

    def __init__(
        self, clock: Clock, evict: Callable[[T], bool], idle_seconds: float = IDLE_EVICTION_SECONDS
    ) -> None:
        self._clock = clock
        self._evict = evict
        self._idle_seconds = idle_seconds
        self._since: dict[T, float] = {}  # insertion order is idle order: oldest first
        self._wake = asyncio.Event()
        self._waiting = True  # the sweeper waits with no deadline (or has not started)

    def __len__(self) -> int:
        return len(self._since)

    def idle(self, obj: T) -> None:
        """`obj` has nothing running now: its idle period starts."""
        self._since.pop(obj, None)
        self._since[obj] = self._clock.now()
        if self._waiting:
            self._waiting = False
            self._wake.set()  # a deadline at last (any other is earlier than this one)

    def busy(self, obj: T) -> None:
        """`obj` runs something (a call, an alarm, a task): it is not idle."""
        self._since.pop(obj, None)

    async def run(self) -> None:
        """Evict objects as their idle periods end, until cancelled."""
        since = self._since
        while True:
            deadline = None
            evicted = 0
            while since:
                obj, idle_since = next(iter(since.items()))
                deadline = idle_since + self._idle_seconds
                if deadline > self._clock.now():
                    break
                del since[obj]
                if not self._evict(obj):
                    since[obj] = self._clock.now()  # not now: look again a period later
                deadline = None
                evicted += 1
                if evicted % 1024 == 0:
                    await asyncio.sleep(0)  # thousands idle at once: let calls run between
            self._waiting = deadline is None
            await sleep_until_or_woken(self._clock, deadline, self._wake)
