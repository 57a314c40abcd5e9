"""Whom the running code answers: a caller outside the runtime, or the runtime itself.

The embedded runtime at `synchronous=FULL` in the one-file layout commits without syncing
the WAL, and syncs it before an answer leaves for a caller outside the runtime
(`local/one_file.py`): the WAL is one log and a power cut keeps a prefix of it, so that one
sync makes every earlier commit durable too. A commit answering only the runtime itself (a
coordinator's arm, lease or alarm, the queue's delivery and ack, the consumer's `running`
and outcome writes) is made durable by the next answer outside; a power cut before it takes
back only steps the runtime repeats (at-least-once).

Who is outside is decided where the answer leaves, so the runtime's own work can never pass
its mark on to an answer:

* **The runtime's own work** (`runtime_work()`): the queue consumer's batch (its handlers
  included), the cron trigger, and the coordinators' calls and alarms (marked by the embedded
  Durable Objects). A binding answers it from what is committed.
* **A `Jobs` call** (`answers_outside`, on the `Jobs` class): every public method but the
  consumer's and the cron's. Its work is the runtime's own, and before it returns or raises it
  calls the bound resources' `before_answer` (the embedded runtime: sync what is committed).
  This holds wherever the call is made: from an HTTP request, over RPC, or from a handler
  (`await jobs.create(...)` inside a job), whose context is the consumer's.
* **Anything else** (the default: an application's own statements through the D1 binding, a
  script): each answer of a binding waits for the sync, as `FULL` promises.

On Cloudflare nothing reads the mark (`before_answer` is None): D1 and Durable Objects make
every commit durable before answering.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

__all__ = ["BeforeAnswer", "answers_outside", "inside", "mark_runtime_work", "runtime_work"]

_T = TypeVar("_T")

# Called before a `Jobs` call answers: makes everything committed so far durable (raises if
# that fails). None where every commit is durable by itself.
BeforeAnswer = Callable[[], None]

_INSIDE: ContextVar[bool] = ContextVar("kumofire_jobs_inside", default=False)


def inside() -> bool:
    """Whether the running code is the runtime's own work (its answers stay inside)."""
    return _INSIDE.get()


@contextmanager
def runtime_work() -> Iterator[None]:
    """Run the block (and the tasks it starts) as the runtime's own work."""
    token = _INSIDE.set(True)
    try:
        yield
    finally:
        _INSIDE.reset(token)


def mark_runtime_work() -> None:
    """Mark the rest of the running task (and the tasks it starts) as the runtime's own work:
    for a task that is the runtime's from its first line (a Durable Object's call or alarm)."""
    _INSIDE.set(True)


def answers_outside(*internal: str) -> Callable[[type[_T]], type[_T]]:
    """Class decorator: each public coroutine method, except those named in `internal`, runs
    as the runtime's own work and calls `self._before_answer` (a `BeforeAnswer` or None)
    before it returns or raises."""

    def decorate(cls: type[_T]) -> type[_T]:
        for name, method in list(vars(cls).items()):
            if name.startswith("_") or name in internal or not inspect.iscoroutinefunction(method):
                continue
            setattr(cls, name, _answering(method))
        return cls

    return decorate


def _answering(
    method: Callable[..., Coroutine[Any, Any, _T]],
) -> Callable[..., Coroutine[Any, Any, _T]]:
    @functools.wraps(method)
    async def call(self: Any, *args: Any, **kwargs: Any) -> _T:
        token = _INSIDE.set(True)
        try:
            return await method(self, *args, **kwargs)
        finally:
            _INSIDE.reset(token)
            before_answer: BeforeAnswer | None = self._before_answer
            if before_answer is not None:
                before_answer()

    call.__kumofire_answers_outside__ = True  # type: ignore[attr-defined]
    return call
