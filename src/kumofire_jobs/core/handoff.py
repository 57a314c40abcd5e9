"""Handing over: a consume call that frees a limited job's slot runs the run its limiter
hands it, then the one after, and so on (a chain), instead of the limiter waking each through
its coordinator for a second delivery. See docs/architecture.md, "Handing over".

The chain belongs to the consume call (a context variable set by `Consumer.consume`, seen by
the tasks it starts); each handed-over run runs in a task of its own, started as soon as the
limiter hands it over, and the call awaits them all before its message is acknowledged.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass, field

from .log import get_logger

log = get_logger()

# At most this many runs handed over per consume call, and only while the call is younger
# than HANDOFF_SECONDS: the message that started the chain is acknowledged when it ends, and
# an invocation's subrequests and time are bounded. Past either, the limiter wakes the next.
MAX_HANDOFFS = 20
HANDOFF_SECONDS = 5.0


@dataclass(slots=True)
class Chain:
    """The runs one consume call was handed, each a task, awaited by the call."""

    started: float  # clock seconds
    count: int = 0
    tasks: list[asyncio.Future[None]] = field(default_factory=list)

    def open(self, now: float) -> bool:
        return self.count < MAX_HANDOFFS and now - self.started < HANDOFF_SECONDS

    def add(self, task: asyncio.Future[None]) -> None:
        self.count += 1
        self.tasks.append(task)

    async def drain(self) -> None:
        while self.tasks:
            task = self.tasks.pop(0)
            try:
                await task
            except Exception as exc:  # its lease expires and it is delivered again
                log.error("run.handover_failed", error=f"{type(exc).__name__}: {exc}")


CHAIN: ContextVar[Chain | None] = ContextVar("kumofire_handoff_chain", default=None)
