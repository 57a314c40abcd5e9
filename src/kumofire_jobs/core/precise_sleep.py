"""Sleeping to a deadline with sub-millisecond precision on an asyncio event loop.

The event loop's own timers wake up late by up to a millisecond: epoll waits in whole
milliseconds and asyncio rounds the wait up. For most of a wait that does not matter, so the
loop's timer covers it until shortly before the deadline; the last stretch is handed to one
background thread that waits on a condition variable (nanosecond timeouts, woken within
tens of microseconds) and then wakes the loop. Where threads cannot start (Pyodide), the
loop's timer does it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time

# Hand over to the thread this long before the deadline: more than the loop's rounding.
_HANDOVER = 0.002


class _Waker:
    """One thread that resolves futures at their deadlines (wall-clock epoch seconds)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def wait_until(self, deadline: float) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="kumofire-waker", daemon=True)
                thread.start()  # RuntimeError (or OSError) where threads are unavailable
                self._thread = thread
            heapq.heappush(self._heap, (deadline, next(self._seq), loop, future))
            if self._heap[0][3] is future:
                self._cond.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                remaining = self._heap[0][0] - time.time()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                _, _, loop, future = heapq.heappop(self._heap)
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # a cancelled sleep leaves a done future behind
        future.set_result(None)


_waker = _Waker()
_threads_work = True


async def sleep_until(deadline: float) -> None:
    """Return once `time.time() >= deadline`, as soon after it as the machine allows."""
    global _threads_work
    while True:
        remaining = deadline - time.time()
        if remaining <= 0:
            return
        if remaining > _HANDOVER or not _threads_work:
            await asyncio.sleep(remaining - _HANDOVER if _threads_work else remaining)
            continue
        try:
            await _waker.wait_until(deadline)
        except (RuntimeError, OSError):
            _threads_work = False  # no threads here (Pyodide): the loop's timer alone
