"""Group commit and the Durable Object output gate, shared by the local bindings.

Durable Objects coalesce the writes an object makes and hold whatever the object sends until
those writes are durable (the output gate). The embedded bindings do the same, and extend
the idea to D1 and the queue broker: a write is applied at once (later reads see it) inside
an open transaction, and the transaction commits at the end of the event loop's turn, so the
writes of every caller active in that turn share one commit. A caller's `await` returns only
after that commit, so whatever it was told is durable.

Two pieces live here:

* `at_commit(callback)`: run `callback` (a binding's commit) at the end of the event loop's
  turn: every callback requested during one turn runs in one `call_soon` callback, after the
  callbacks that were ready before it. (Waiting longer, until the ready queue is empty, was
  measured: it batched no better and cost loop iterations.) `clock.settle()` flushes it, and
  nothing here depends on real time passing, so tests on a manual clock stay deterministic.
* The gate of the current Durable Object: the object's calls and alarms run with their object
  as the current gate, and before a local binding performs I/O for them (a D1 statement, a
  queue send, an RPC to another object) it waits until the object's pending writes are
  durable (`pending_gate()` / `flush()`).
* `alone()`: when nothing else is ready to run, nobody could share the turn's commit, so a
  binding commits at once instead of waiting for the end of the turn.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Protocol

__all__ = [
    "CommitWaiters",
    "Gate",
    "alone",
    "at_commit",
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


class _Turn:
    """The commit callbacks requested during the current loop turn."""

    __slots__ = ("_callbacks", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._callbacks: list[Callable[[], None]] = []

    def add(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
        if len(self._callbacks) == 1:
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()  # each binding reports its own errors to its own waiters


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn] = weakref.WeakKeyDictionary()


def at_commit(callback: Callable[[], None]) -> None:
    """Run `callback` at the end of the running loop's turn (see the module's docstring)."""
    loop = asyncio.get_running_loop()
    turn = _turns.get(loop)
    if turn is None:
        turn = _turns[loop] = _Turn(loop)
    turn.add(callback)


class CommitWaiters:
    """One connection's end-of-turn commit: the single `at_commit` request per turn (which
    runs `phase`, the binding's commit), and the callers waiting for that commit."""

    def __init__(self, phase: Callable[[], None]) -> None:
        self._phase = phase
        self._waiters: list[asyncio.Future[None]] = []
        self._requested = False

    def request(self) -> None:
        """Commit at the end of this turn (once, however often asked)."""
        if not self._requested:
            self._requested = True
            at_commit(self._run)

    def _run(self) -> None:
        self._requested = False
        self._phase()

    def wait(self, open_transaction: bool) -> asyncio.Future[None]:
        """A future resolved once the open transaction (if any) has committed."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if open_transaction:
            self._waiters.append(waiter)
        else:
            waiter.set_result(None)
        return waiter

    def answer(self, error: BaseException | None) -> None:
        """The transaction committed (`error` None) or was lost: tell everyone waiting."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
