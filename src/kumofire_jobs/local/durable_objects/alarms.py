"""Alarms: one per object, fired by one timer task, retried with backoff when they throw.

Millisecond granularity; an alarm set in the past fires at once; a throwing `alarm()` is
retried after 2 s, 4 s, 8 s, ... up to 6 retries, then dropped; an alarm set while `alarm()`
runs replaces the running one (no retry of the old one); during the handler `getAlarm()` is
None unless the handler set a new alarm, and `deleteAlarm()` there removes only such a new
alarm (as workerd does). Between retries `getAlarm()` answers the retry's time. A run whose
commit fails (a full disk) failed too: its stored alarm is retried after the same backoff,
then every 64 s until a commit succeeds, never at once (see `commit`). At least once: a
handler cut short by `stop()` runs again after `start()`. Scheduling is event-driven: one
timer task sleeps until the earliest alarm (re-aimed only when an earlier one is set), and an
alarm already due starts its handler at once.

Memory, as on the platform: an alarm lives in storage (the `alarms` table). The heap holds the
alarms of the objects in memory, and every stored alarm due before the horizon (the end of the
window last loaded, `ALARM_WINDOW_SECONDS` ahead); an idle object whose alarm is beyond both
the idle period and the window is forgotten entirely (`eviction`). The same timer also wakes
a window before the earliest stored alarm beyond the horizon and loads the next window with
one indexed query (`kumofire_local_do_alarms_by_time`): no polling, and a pending alarm a
week ahead costs a row on disk, nothing in memory.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import inspect
import itertools
import math
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kumofire_jobs.core import answers
from kumofire_jobs.core.clock import Clock
from kumofire_jobs.core.log import RepeatedLog
from kumofire_jobs.local import output_gate

from .errors import DurableObjectError, events, failure_fields, log
from .storage import RESET_MESSAGE

if TYPE_CHECKING:
    from .actor import Actor

ALARM_RETRY_START_SECONDS = 2.0  # first retry 2 s after a throwing alarm(), then doubling
ALARM_MAX_RETRIES = 6  # retries after the first run; the alarm is dropped after the 6th fails
# Alarms due within this window are in memory; later ones of evicted objects only in storage.
ALARM_WINDOW_SECONDS = 300.0
_WINDOW_MS = round(ALARM_WINDOW_SECONDS * 1000)
_NEVER = -(2**63)  # the horizon before the first load: nothing is known to be in memory


@dataclass(frozen=True, slots=True)
class AlarmInvocationInfo:
    """What the platform passes to `alarm(alarmInfo)`."""

    retryCount: int
    isRetry: bool


class Alarms:
    """The namespace's alarms: the heap of pending alarms, the timer, and the handlers' runs.

    Part of `LocalDurableObjectNamespace` (which subclasses it): the attributes declared
    here are the namespace's, set in its `__init__`; the methods declared for type checking
    are in its other parts.
    """

    _actors: dict[str, Actor]
    _clock: Clock
    _context: contextvars.Context | None
    _db: sqlite3.Connection
    _errors: RepeatedLog
    _heap: list[tuple[float, int, Actor, int]]
    _horizon_ms: int
    _next_stored_ms: int | None
    _pending_alarms: int
    _running: bool
    _seq: itertools.count[int]
    _tasks: set[asyncio.Future[Any]]
    _timer: asyncio.Task[None] | None
    _timer_due: float | None
    class_name: str
    if TYPE_CHECKING:

        def _hold(self, actor: Actor) -> None: ...
        def _release(self, actor: Actor) -> None: ...
        async def _enter(self, actor: Actor) -> Any: ...
        def _touch(self, actor: Actor) -> None: ...
        def _actor(self, hex_id: str, name: str | None) -> Actor: ...

    def _alarm_time(self, actor: Actor) -> float | None:
        if actor.alarm_running:
            return None if actor.alarm_queued is None else float(actor.alarm_queued)
        return None if actor.alarm_ms is None else float(actor.alarm_ms)

    def _set_alarm(self, actor: Actor, time_ms: int) -> None:
        actor.alarm_row = (time_ms, 0)
        self._touch(actor)
        if actor.alarm_running:
            actor.alarm_queued = time_ms  # takes over when the running handler returns
        else:
            actor.alarm_retry = 0
            self._arm(actor, time_ms)

    def _delete_alarm(self, actor: Actor) -> None:
        if actor.alarm_running:
            # Only the alarm queued by the handler goes; the running one may still be retried,
            # so its row is what a restart must find.
            actor.alarm_queued = None
            assert actor.alarm_ms is not None
            actor.alarm_row = (actor.alarm_ms, actor.alarm_retry)
            self._touch(actor)
            return
        actor.alarm_row = None
        self._touch(actor)
        if actor.alarm_ms is not None:
            self._pending_alarms -= 1
        actor.alarm_ms = None
        actor.alarm_retry = 0
        actor.alarm_gen += 1

    def _arm(self, actor: Actor, time_ms: int) -> None:
        """Schedule the actor's alarm in memory (its row is written or pending)."""
        if actor.alarm_ms is None:
            self._pending_alarms += 1
        actor.alarm_ms = time_ms
        actor.alarm_gen += 1
        due = time_ms / 1000
        if self._running and due <= self._clock.now():
            self._start_fire(actor, actor.alarm_gen)  # due already: no timer needed
            return
        heapq.heappush(self._heap, (due, next(self._seq), actor, actor.alarm_gen))
        if len(self._heap) > 1024:
            self._compact_if_sparse()
        if self._running and (self._timer_due is None or due < self._timer_due):
            self._reschedule()

    def _start_fire(self, actor: Actor, gen: int) -> None:
        assert self._context is not None
        self._hold(actor)
        task = asyncio.get_running_loop().create_task(
            self._fire(actor, gen), context=self._context.copy()
        )
        if not task.done():
            self._tasks.add(task)  # _fire removes it when done
        task.add_done_callback(lambda _: self._release(actor))

    def _reschedule(self) -> None:
        """Point the timer at the earliest pending alarm."""
        due = self._next_due()
        load = self._load_due()
        if load is not None and (due is None or load < due):
            due = load
        if due is None or (self._timer_due is not None and self._timer_due <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        assert self._context is not None
        self._timer_due = due
        timer = asyncio.get_running_loop().create_task(
            self._sleep_until(due), context=self._context.copy()
        )
        if not timer.done():
            self._timer = timer
            self._tasks.add(timer)

    async def _sleep_until(self, due: float) -> None:
        """The timer: at `due`, load the next window if it is time, and start the handlers of
        every alarm due by then."""
        timer = asyncio.current_task()
        try:
            await self._clock.sleep_until(due)
            self._timer, self._timer_due = None, None
            dispatched = 0
            now = self._clock.now()
            load = self._load_due()
            if load is not None and load <= now:
                self._load_window()
            next_due = self._next_due()
            while next_due is not None and next_due <= now:
                _, _, actor, gen = heapq.heappop(self._heap)
                self._start_fire(actor, gen)
                dispatched += 1
                if dispatched % 256 == 0:
                    # Let the first handlers start while thousands more are due at once.
                    await asyncio.sleep(0)
                next_due = self._next_due()
            if self._running and (next_due is not None or self._next_stored_ms is not None):
                self._reschedule()
        finally:
            self._tasks.discard(timer)

    def _compact_if_sparse(self) -> None:
        """Drop stale entries once they are most of the heap (amortized O(1) per entry); a
        stale entry would keep a forgotten object's book-keeping alive."""
        if len(self._heap) > 4 * self._pending_alarms:
            self._heap = [entry for entry in self._heap if entry[3] == entry[2].alarm_gen]
            heapq.heapify(self._heap)

    # The window: stored alarms brought into memory as their time nears ----------------------

    def _open_alarms(self) -> None:
        """At open: bring the stored alarms due within the first window into memory."""
        self._horizon_ms = _NEVER
        self._next_stored_ms = None
        self._load_window()

    def _load_due(self) -> float | None:
        """When the timer must load the next window: a window before the earliest stored
        alarm beyond the horizon (None: no such alarm known)."""
        if self._next_stored_ms is None:
            return None
        return (self._next_stored_ms - _WINDOW_MS) / 1000

    def _load_window(self) -> None:
        """Bring the stored alarms due before the end of the next window into memory (the
        objects already in memory have theirs), and note the earliest stored alarm after it."""
        end = max(math.floor(self._clock.now() * 1000) + _WINDOW_MS, self._horizon_ms)
        if self._next_stored_ms is not None:
            end = max(end, self._next_stored_ms + 1)  # never short of it (float rounding)
        rows = self._db.execute(
            "SELECT object_id FROM kumofire_local_do_alarms WHERE time_ms >= ? AND time_ms < ?",
            (self._horizon_ms, end),
        ).fetchall()
        self._horizon_ms = end
        for (hex_id,) in rows:
            if hex_id not in self._actors:
                self._actor(hex_id, None)  # reads and arms its stored alarm
        row = self._db.execute(
            "SELECT MIN(time_ms) FROM kumofire_local_do_alarms WHERE time_ms >= ?", (end,)
        )
        self._next_stored_ms = row.fetchone()[0]

    def _stored_alarm(self, time_ms: int) -> None:
        """An object left memory with its alarm (at or beyond the horizon) in storage only:
        the timer must load it a window ahead of its time."""
        if self._next_stored_ms is None or time_ms < self._next_stored_ms:
            self._next_stored_ms = time_ms
            if self._running:
                self._reschedule()

    def _next_due(self) -> float | None:
        heap = self._heap
        while heap and (heap[0][3] != heap[0][2].alarm_gen or heap[0][2].alarm_running):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    async def _fire(self, actor: Actor, gen: int) -> None:
        try:
            await self._run_alarm(actor, gen)
        finally:
            self._tasks.discard(asyncio.current_task())

    async def _run_alarm(self, actor: Actor, gen: int) -> None:
        if actor.alarm_gen != gen or actor.alarm_running:
            return  # replaced or deleted between its dispatch and now
        output_gate.enter(actor)
        answers.mark_runtime_work()  # nobody outside waits for an alarm
        actor.alarm_running = True
        actor.alarm_queued = None
        retry = actor.alarm_retry
        info = AlarmInvocationInfo(retryCount=retry, isRetry=retry > 0)
        succeeded = False
        try:
            instance = await self._enter(actor)
            storage = actor.storage  # the instance's: marked if a failed commit resets it
            handler = getattr(instance, "alarm", None)
            if not callable(handler):
                log.error("%s has no alarm() handler; dropping its alarm", self.class_name)
                succeeded = True
            else:
                result = handler(info)
                if inspect.isawaitable(result):
                    await result
                if storage is not None and storage.reset:
                    # Its writes were lost (a commit before a call out failed) and the object
                    # reset: the run failed, and is retried, as on the platform.
                    raise DurableObjectError(RESET_MESSAGE)
                succeeded = True
        except asyncio.CancelledError:
            raise  # stop(): the stored alarm stands and stop() re-arms it
        except Exception as exc:
            suppressed = self._errors.check(("alarm", type(exc), str(exc)))
            if suppressed is not None:
                events.warning(
                    "durable_object.alarm_failed",
                    object_class=self.class_name,
                    key=actor.name or actor.hex,  # a coordinator's name is its run's id
                    retry=retry,
                    gives_up=retry >= ALARM_MAX_RETRIES,
                    suppressed=suppressed,  # the same failures not logged since the last
                    **failure_fields(exc),
                )
        actor.alarm_running = False
        queued, actor.alarm_queued = actor.alarm_queued, None
        if queued is not None:  # set during the run: it replaces this alarm, row written
            actor.alarm_retry = 0
            self._arm(actor, queued)
        elif succeeded or retry >= ALARM_MAX_RETRIES:
            self._delete_alarm(actor)
        else:
            time_ms = self._retry_at(retry + 1)
            actor.alarm_retry = retry + 1
            actor.alarm_row = (time_ms, actor.alarm_retry)
            self._touch(actor)
            self._arm(actor, time_ms)
        if actor.dirty:
            actor.alarm_ran = retry  # its outcome waits for this turn's commit

    def _retry_at(self, retry: int) -> int:
        """When retry number `retry` (from 1) of a failed alarm runs: 2 s, 4 s, 8 s, ..."""
        delay = ALARM_RETRY_START_SECONDS * 2.0 ** (retry - 1)
        return math.floor((self._clock.now() + delay) * 1000)

    def _rearm_all(self) -> None:
        """After stop(): handlers cut short count as not run; rebuild the heap from scratch."""
        self._heap = []
        self._pending_alarms = 0
        for actor in self._actors.values():
            if actor.alarm_running:
                actor.alarm_running = False
                if actor.alarm_queued is not None:
                    actor.alarm_ms, actor.alarm_retry = actor.alarm_queued, 0
                actor.alarm_queued = None
            time_ms, actor.alarm_ms = actor.alarm_ms, None
            if time_ms is not None:
                self._arm(actor, time_ms)
