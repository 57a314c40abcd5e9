"""The D1 writes of the runs handed over in one queue batch, folded across its chains: the
chains (one per slot) step in the same event-loop turns, so the guarded starts asked in one
turn go in one statement (`batch_store.start_many`), and the outcomes through one group-commit
writer (`outcomes.OutcomeWriter`). Held by the batch's `handoff.Budget`, so every write stays
within the invocation that asked it (a Worker cannot await another request's I/O).

The starts wait, too, while a release of the batch that may hand a run over is in flight
(`releasing`): the run it hands over starts in the same statement. So chains that drifted
apart (one restarted through the queue, a step that took a turn more) fall back in step, and
stay there: their handlers end in one turn and their releases go in one turn. A release is one
round trip to a limiter, with no handler in it; the starts wait for nothing else. The batch's
outcomes wait for the same releases, and so do the coordinator releases of the runs whose
outcomes are written meanwhile (`after_releases`): starts, outcomes and coordinator releases
then go in one turn, one commit of the embedded bindings instead of three.

Each start is fenced by its own token, as `RunStore.start` is, and a run the statement did not
start is answered None: `Consumer._not_started` learns why from the row, as for a per-run
start. A failed statement fails every start of it: each hand-over task raises (the chain logs
it), and the leases (and the slots leased with them) expire; the coordinators deliver again,
as after a failed per-run start. A start asked alone in its turn is the per-run statement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .batch_start import start_and_answer
from .clock import Clock
from .outcomes import OutcomeWriter
from .run_rows import StartedRow
from .store import RunStore

__all__ = ["HandoffWrites", "Releasing"]

T = TypeVar("T")


class HandoffWrites:
    def __init__(self, store: RunStore, clock: Clock, outcomes: OutcomeWriter | None) -> None:
        self._store = store
        self._clock = clock
        # The consumer batch's writer when there is one: the handed-over runs' outcomes and
        # the batch's own ones of a turn go in one statement.
        self.outcomes = outcomes if outcomes is not None else OutcomeWriter(store)
        # The outcomes wait for the releases in flight too: the handlers whose slots they
        # free ended in the turn the releases left, so their outcomes and the starts of the
        # runs handed over go in one turn (one commit, not two).
        self.outcomes.held = lambda: self._releasing > 0
        self._pending: list[tuple[str, int, asyncio.Future[StartedRow | None]]] = []
        # Coordinator calls held while releases are in flight (`after_releases`).
        self._deferred: list[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]]] = []
        self._flights: set[asyncio.Future[None]] = set()  # held: a task must be referenced
        self._releasing = 0  # releases in flight that may hand a run over
        self._scheduled = False  # a flush is on its way

    async def start(self, run_id: str, token: int) -> StartedRow | None:
        """`RunStore.start(run_id, token, now)`, with the other starts asked in this turn and
        those of the runs the releases in flight hand over."""
        answer: asyncio.Future[StartedRow | None] = asyncio.get_running_loop().create_future()
        self._pending.append((run_id, token, answer))
        self._schedule()
        return await answer

    def releasing(self) -> Releasing:
        """A release that may hand a run over begins (counted from the moment its handler
        ended, before its task runs): the starts, the outcomes and the coordinator calls of
        `after_releases` wait for its answer, `Releasing.end()`."""
        self._releasing += 1
        return Releasing(self)

    def after_releases(self, send: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        """`send()` (a call to a run's coordinator, sent when called) now, or, while releases
        are in flight, in the turn their answers let the starts and outcomes go: the runs
        whose outcomes the last flush wrote release their coordinators in the turn of the
        next flush (one commit for both), not in one of their own. Only delays the call by
        a limiter round trip: nothing the releases wait for waits for it."""
        if not self._releasing:
            return send()
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._deferred.append((send, answer))
        return answer

    def _end(self) -> None:
        self._releasing -= 1
        self._schedule()

    def _schedule(self) -> None:
        if self._releasing:
            return
        if self._pending and not self._scheduled:
            # Its first step runs after what is ready in this turn: the other chains' starts
            # asked in it join the statement. (Before the outcomes: the runs started are
            # answered first, and their releases begin before the coordinator calls of the
            # runs whose outcomes are written, which then wait for them: `after_releases`.)
            self._scheduled = True
            flight = asyncio.ensure_future(self._flush())
            self._flights.add(flight)
            flight.add_done_callback(self._flights.discard)
        self.outcomes.resume()
        deferred, self._deferred = self._deferred, []
        for send, answer in deferred:
            try:
                _chain(asyncio.ensure_future(send()), answer)
            except Exception as exc:
                answer.set_exception(exc)

    async def _flush(self) -> None:
        self._scheduled = False
        if self._releasing:  # a release began meanwhile: its end schedules the statement
            return
        taken, self._pending = self._pending, []
        await start_and_answer(self._store, self._clock, taken, None)


class Releasing:
    """One release in flight (`HandoffWrites.releasing`); `end()` once it answered (or
    failed, or its task was cancelled before it ran): a second `end()` does nothing."""

    __slots__ = ("_writes",)

    def __init__(self, writes: HandoffWrites) -> None:
        self._writes: HandoffWrites | None = writes

    def end(self) -> None:
        writes, self._writes = self._writes, None
        if writes is not None:
            writes._end()


def _chain(call: asyncio.Future[T], answer: asyncio.Future[T]) -> None:
    def done(call: asyncio.Future[T]) -> None:
        if answer.done():
            return
        if call.cancelled():
            answer.cancel()
        elif (exc := call.exception()) is not None:
            answer.set_exception(exc)
        else:
            answer.set_result(call.result())

    call.add_done_callback(done)
