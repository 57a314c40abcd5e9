"""The Durable Object output gate, as the local bindings honour it.

Durable Objects coalesce the writes an object makes and hold whatever the object sends until
those writes are durable (the output gate); the writes commit with the turn's group commit
(`group_commit`). The object's calls and alarms run with their object as the current gate,
and before a local binding performs I/O for them (a D1 statement, a queue send, an RPC to
another object) it waits until the object's pending writes are durable (`pending_gate()` /
`flush()`).

`alone()`: when nothing else is ready to run, nobody could share the turn's commit, so a
binding commits at once instead of waiting for the end of the turn.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Protocol

__all__ = [
    "Gate",
    "alone",
    "current",
    "enter",
    "flush",
    "pending_gate",
]


class Gate(Protocol):
    """An object whose writes may be pending (a Durable Object)."""

    def pending(self) -> bool:
        """True while some of its writes are not yet durable."""
        ...

    def flush(self) -> None:
        """Make its pending writes durable now (raises if the commit fails)."""
        ...

    def durable(self) -> asyncio.Future[None]:
        """A future resolved once the writes pending now are durable (failed if the commit
        fails). Each call returns a new future, so one waiter's cancellation is its own."""
        ...


_current: ContextVar[Gate | None] = ContextVar("kumofire_output_gate", default=None)


def enter(gate: Gate | None) -> None:
    """Make `gate` the current object of the running task (and of tasks it starts)."""
    _current.set(gate)


def current() -> Gate | None:
    return _current.get()


def alone() -> bool:
    """Whether nothing else is ready to run on the event loop (CPython's run queue is empty):
    then no other caller can join a group commit in this turn, and committing at once saves
    the caller a loop turn (an isolated D1 statement costs what it did before group commit).
    Unknown on other loops: False."""
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    return ready is not None and not ready


def pending_gate() -> Gate | None:
    """The current object's gate if it has pending writes: await `gate.durable()` before
    performing I/O on its behalf."""
    gate = _current.get()
    if gate is not None and gate.pending():
        if alone():
            gate.flush()  # nobody else could join this turn's commit: commit now
            return None
        return gate
    return None


def flush() -> None:
    """Before output that leaves synchronously: commit the current object's pending writes."""
    gate = _current.get()
    if gate is not None and gate.pending():
        gate.flush()
