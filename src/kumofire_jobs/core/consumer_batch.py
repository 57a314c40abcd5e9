"""A queue consumer batch of several messages, folded in D1: its runs start in one statement
(`batch_start.py`) and their outcomes are written together (`outcomes.py`), while each
message is still consumed on its own, concurrently, as a lone message is (lease, handler,
release: one coordinator each).

`Runtime.consume_batch` gives each message's task its `Seat` (a context variable, seen by
the consume call and the tasks it starts); `Consumer` starts the run through the seat, and
records outcomes through the batch's writer. Without a seat (a batch of one message,
`Jobs.consume` called directly) every statement is the per-run one.
"""

from __future__ import annotations

from contextvars import ContextVar

from .batch_start import BatchStart
from .clock import Clock
from .outcomes import OutcomeStore, OutcomeWriter
from .run_rows import StartedRow
from .store import RunStore

__all__ = ["SEAT", "ConsumerBatch", "Seat", "outcome_store"]


class ConsumerBatch:
    def __init__(self, store: RunStore, clock: Clock, size: int) -> None:
        self.starts = BatchStart(store, clock, size)
        self.outcomes = OutcomeWriter(store)

    def seat(self) -> Seat:
        return Seat(self)


class Seat:
    """One message's place in its batch: it starts its run with the others, or leaves."""

    def __init__(self, batch: ConsumerBatch) -> None:
        self.batch = batch
        self._taken = False

    async def start(self, run_id: str, token: int, unless_jobs: str | None) -> StartedRow | None:
        """`RunStore.start`, folded with the batch's other starts."""
        assert not self._taken, "a message starts one run"
        self._taken = True
        return await self.batch.starts.join(run_id, token, unless_jobs)

    def leave(self) -> None:
        """The message is done (or failed) without starting a run with the batch."""
        if not self._taken:
            self._taken = True
            self.batch.starts.leave()


SEAT: ContextVar[Seat | None] = ContextVar("kumofire_consumer_seat", default=None)


def outcome_store(store: RunStore) -> OutcomeStore:
    """Where an outcome recorded now is written: the batch's writer, else `store`."""
    seat = SEAT.get()
    return store if seat is None else seat.batch.outcomes
