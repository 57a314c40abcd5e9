"""Handlers' `asyncio.sleep` on the harness's manual clock (`JobsHarness(virtual_sleep=True)`).

While at least one harness with virtual sleep is open, `asyncio.sleep` is replaced by a
function that, inside a handler attempt (its task and the tasks it starts), waits on the
manual clock instead of the event loop's: `await asyncio.sleep(3600)` ends when the harness
has moved the clock an hour on, which `drain` does at once. Everywhere else (the test itself,
the runtime, other libraries), and for a delay of 0 or less or not finite, it is the real
`asyncio.sleep`.

Only calls that look `sleep` up on the `asyncio` module when they run are replaced: a module
that did `from asyncio import sleep` keeps the real one, as do `time.sleep`,
`loop.call_later`, `asyncio.wait_for` and `asyncio.timeout` (event-loop time), and real I/O.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import Any, Protocol

_real_sleep = asyncio.sleep


class Sleeper(Protocol):
    """A handler attempt of a harness with virtual sleep: it waits on the manual clock."""

    async def sleep_virtually(self, seconds: float) -> None: ...


# The handler attempt running in this context (None outside handlers and without virtual sleep).
current: ContextVar[Sleeper | None] = ContextVar("kumofire_jobs_testing_sleeper", default=None)

_installed = 0


async def _sleep(delay: float, result: Any = None) -> Any:
    sleeper = current.get()
    if sleeper is None or not isinstance(delay, int | float) or not 0 < delay < math.inf:
        return await _real_sleep(delay, result)
    await sleeper.sleep_virtually(float(delay))
    return result


def install() -> None:
    """Replace `asyncio.sleep` (counted: each `install` needs its `uninstall`)."""
    global _installed
    if _installed == 0:
        asyncio.sleep = _sleep
    _installed += 1


def uninstall() -> None:
    global _installed
    _installed -= 1
    if _installed == 0:
        asyncio.sleep = _real_sleep


def real_sleep(delay: float) -> Coroutine[Any, Any, None]:
    """The event loop's sleep, whatever `asyncio.sleep` is now."""
    return _real_sleep(delay)
