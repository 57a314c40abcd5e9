"""Idle eviction, as the platform evicts its objects.

Cloudflare keeps an object in memory while it works and for a while after: once it has had
no request and no event for 70-140 s, it is evicted, and its next call or alarm builds a
fresh instance from storage ("Lifecycle of a Durable Object"). Without eviction a process
that runs for days keeps every object it ever touched. `IdleEvictor` remembers since when
each idle object has been idle (oldest first) and, driven by the injected clock, offers each
to the namespace once `IDLE_EVICTION_SECONDS` have passed; the namespace decides whether it
can go (`Eviction._evict_idle`) or must wait another period. The platform also evicts early
under memory pressure: with more than `MAX_IDLE_OBJECTS` idle, each object that falls idle
offers the oldest idle one at once, so a burst (a restart's reconciliation touching every
waiting run, thousands of runs created in a minute) does not keep them all for 70 s.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from kumofire_jobs.core.clock import Clock, sleep_until_or_woken

from .alarms import ALARM_WINDOW_SECONDS

if TYPE_CHECKING:
    from .actor import Actor

# The platform's lower bound: an object idle this long may be evicted.
IDLE_EVICTION_SECONDS = 70.0
# Idle objects kept before the oldest go early (a coordinator instance is a few KB).
MAX_IDLE_OBJECTS = 4096

T = TypeVar("T")


class IdleEvictor(Generic[T]):
    """Idle objects in the order they fell idle; `evict(obj)` is offered each one once its
    idle period is over, and answers False to keep it for another period."""

    def __init__(
        self,
        clock: Clock,
        evict: Callable[[T], bool],
        idle_seconds: float = IDLE_EVICTION_SECONDS,
        max_idle: int = MAX_IDLE_OBJECTS,
    ) -> None:
        self._clock = clock
        self._evict = evict
        self._idle_seconds = idle_seconds
        self._max_idle = max_idle
        self._sweeping = False  # run() is running: eviction happens only then
        self._since: dict[T, float] = {}  # insertion order is idle order: oldest first
        self._wake = asyncio.Event()
        self._waiting = True  # the sweeper waits with no deadline (or has not started)

    def __len__(self) -> int:
        return len(self._since)

    def idle(self, obj: T) -> None:
        """`obj` has nothing running now: its idle period starts."""
        since = self._since
        since.pop(obj, None)
        since[obj] = self._clock.now()
        if self._waiting:
            self._waiting = False
            self._wake.set()  # a deadline at last (any other is earlier than this one)
        if len(since) > self._max_idle and self._sweeping:
            # Memory pressure: offer the oldest now. One per object that falls idle, so an
            # oldest that must stay (it moves to the end) costs no loop.
            oldest = next(iter(since))
            del since[oldest]
            if not self._evict(oldest):
                since[oldest] = self._clock.now()

    def busy(self, obj: T) -> None:
        """`obj` runs something (a call, an alarm, a task): it is not idle."""
        self._since.pop(obj, None)

    async def run(self) -> None:
        """Evict objects as their idle periods end, until cancelled."""
        self._sweeping = True
        try:
            while True:
                deadline = await self._sweep()
                self._waiting = deadline is None
                await sleep_until_or_woken(self._clock, deadline, self._wake)
        finally:
            self._sweeping = False

    async def _sweep(self) -> float | None:
        """Offer each object whose idle period is over; the next deadline (None: none). A
        method of its own so that no local keeps the last object alive while `run` waits."""
        since = self._since
        evicted = 0
        while since:
            obj, idle_since = next(iter(since.items()))
            deadline = idle_since + self._idle_seconds
            if deadline > self._clock.now():
                return deadline
            del since[obj]
            if not self._evict(obj):
                since[obj] = self._clock.now()  # not now: look again a period later
            evicted += 1
            if evicted % 1024 == 0:
                await asyncio.sleep(0)  # thousands idle at once: let calls run between
        return None


class Eviction:
    """The namespace's side of eviction: which objects are busy, and what evicting one drops.

    Part of `LocalDurableObjectNamespace` (which subclasses it): the attributes declared
    here are the namespace's, set in its `__init__`; the methods declared for type checking
    are in its other parts.
    """

    _actors: dict[str, Actor]
    _clock: Clock
    _closed: bool
    _evictor: IdleEvictor[Actor]
    _heap: list[tuple[float, int, Actor, int]]
    _horizon_ms: int
    _idle_seconds: float
    _pending_alarms: int
    if TYPE_CHECKING:

        def _stored_alarm(self, time_ms: int) -> None: ...
        def _compact_if_sparse(self) -> None: ...

    def _hold(self, actor: Actor) -> None:
        if not actor.busy:
            self._evictor.busy(actor)
        actor.busy += 1

    def _release(self, actor: Actor) -> None:
        actor.busy -= 1
        if actor.busy or self._closed or self._actors.get(actor.hex) is not actor:
            return
        if self._is_closed_object(actor) and not actor.dirty:
            self._forget(actor)
        else:
            # (Closed with its writes pending: it goes when they commit, see _committed.)
            self._evictor.idle(actor)

    @staticmethod
    def _is_closed_object(actor: Actor) -> bool:
        """Emptied by deleteAll() with no alarm left: a rebuilt instance would be the same.
        `cache_complete`: the clear is known committed (a failed commit resets it)."""
        return (
            actor.cleared
            and actor.cache_complete
            and actor.alarm_ms is None
            and not actor.alarm_running
            and not actor.busy
            and not actor.blockers
        )

    def _evict_idle(self, actor: Actor) -> bool:
        """The object has been idle for the idle period: evict its instance, and forget it
        entirely unless its alarm is due within the window. False: not now (look again a
        period later)."""
        if actor.busy or self._actors.get(actor.hex) is not actor:
            return True  # running again (it is offered again once idle) or forgotten
        if actor.dirty or actor.blockers or actor.alarm_running or actor.alarm_retry:
            return False  # writes not committed, input gate held, or an alarm's retry due
        if actor.alarm_ms is not None:
            now = self._clock.now()
            if actor.alarm_ms / 1000 - now < self._idle_seconds:
                return False  # its alarm is due soon: the platform keeps it in memory
            if actor.alarm_ms >= max(
                self._horizon_ms, math.floor((now + ALARM_WINDOW_SECONDS) * 1000)
            ):
                self._forget(actor)  # beyond the window: its stored row is all it needs
                return True
            if actor.instance is not None:
                self._drop_instance(actor)  # the alarm (in the heap) rebuilds it
            return True
        self._forget(actor)
        return True

    def _forget(self, actor: Actor) -> None:
        """Drop the object from memory, book-keeping included: storage is all there is of it
        (its alarm too), and its next call starts from there."""
        self._evictor.busy(actor)
        del self._actors[actor.hex]
        if actor.alarm_ms is not None:
            # Committed (the object is not dirty): the window's load brings it back in time.
            self._stored_alarm(actor.alarm_ms)
            self._pending_alarms -= 1
            actor.alarm_ms = None
            actor.alarm_gen += 1  # its heap entry is stale now
            self._compact_if_sparse()
        if actor.sql is not None:
            actor.sql._close()
        # Break the actor's cycles (instance -> ctx -> actor, actor <-> storage): reference
        # counting frees it all now, without waiting for the cyclic collector.
        actor.instance = None
        actor.storage = None
        actor.cache = {}
        actor.cache_bytes = 0

    def _drop_instance(self, actor: Actor) -> None:
        actor.instance = None
        actor.cache = {}  # the storage cache lives with the instance; pending writes stay
        actor.cache_bytes = 0
        actor.cache_complete = False
        if actor.sql is not None:
            actor.sql._close()  # frees the file handle; reopened on next use
