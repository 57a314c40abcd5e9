"""Handing over: a consume call that frees a limited job's slot runs the run its limiter
hands it, then the one after, and so on (a chain), instead of the limiter waking each through
its coordinator for a second delivery. See docs/architecture.md, "Handing over".

The chain belongs to the consume call (a context variable set by `Consumer.consume`, seen by
the tasks it starts); each slot is released in a task of its own, beside its run's outcome
write, and the run the limiter hands over runs in that task at once; the call awaits them all
before its message is acknowledged. The consume calls of one queue batch share a budget
(`invocation`, set by `Runtime.consume_batch`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .log import get_logger

if TYPE_CHECKING:
    from .handoff_releases import Releases
    from .handoff_writes import HandoffWrites

log = get_logger()

# At most this many runs handed over per consume call, and only while the call is younger
# than HANDOFF_SECONDS: the message that started the chain is acknowledged when it ends, and
# an invocation's time is bounded. Past either, the limiter wakes the next, through its
# coordinator and the queue: that costs about as much again as a hand-over, so the longer
# the chain, the cheaper the limited run (20 made it 1 run in 21; now 1 in 101).
MAX_HANDOFFS = 100
HANDOFF_SECONDS = 5.0
# And at most this many per queue batch (`invocation()`), all its chains together: a hand-over
# costs the consumer up to two D1 queries (the start and the outcome; folded across the chains
# of one loop turn, `handoff_writes.py`, but a lone chain's are its own) and two Durable Object
# requests, and an invocation may make 1,000 D1 queries (the batch's own runs take up to 200).
MAX_BATCH_HANDOFFS = 400


@dataclass(slots=True)
class Budget:
    """The hand-overs left to the consume calls of one queue batch, their D1 writes and
    their slot releases, folded across the batch's chains (`handoff_writes.py`,
    `handoff_releases.py`; made by the first hand-over)."""

    left: int
    writes: HandoffWrites | None = None
    releases: Releases | None = None


BATCH: ContextVar[Budget | None] = ContextVar("kumofire_handoff_batch", default=None)


@contextmanager
def invocation() -> Iterator[None]:
    """The consume calls started inside (tasks copy the context) share one `Budget`."""
    reset = BATCH.set(Budget(MAX_BATCH_HANDOFFS))
    try:
        yield
    finally:
        BATCH.reset(reset)


@dataclass(slots=True)
class Chain:
    """The runs one consume call was handed, each a task, awaited by the call."""

    started: float  # clock seconds
    count: int = 0
    tasks: list[asyncio.Future[None]] = field(default_factory=list)

    budget: Budget | None = None  # the batch's, if the call is part of one

    def open(self, now: float) -> bool:
        if self.budget is not None and self.budget.left <= 0:
            return False
        return self.count < MAX_HANDOFFS and now - self.started < HANDOFF_SECONDS

    def add(self, task: asyncio.Future[None] | None) -> None:
        """Count a run handed over; `task` runs it (None: a task already held runs it)."""
        self.count += 1
        if self.budget is not None:
            self.budget.left -= 1
        if task is not None:
            self.tasks.append(task)

    def hold(self, task: asyncio.Future[None]) -> None:
        """A task of the call's (a slot's release, and the run it is handed to), awaited
        before the call's message is acknowledged."""
        self.tasks.append(task)

    async def drain(self) -> None:
        while self.tasks:
            task = self.tasks.pop(0)
            try:
                await task
            except Exception as exc:  # its lease expires and it is delivered again
                log.error("run.handover_failed", error=f"{type(exc).__name__}: {exc}")


CHAIN: ContextVar[Chain | None] = ContextVar("kumofire_handoff_chain", default=None)
