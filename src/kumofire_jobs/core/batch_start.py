"""The starts of one consumer batch, folded: every message's consume asks its run's lease on
its own (concurrently), then waits here until each message of the batch has either joined
(its lease granted) or left (refused, malformed, failed); then one guarded statement
(`batch_store.start_many`) moves every joined run to `running`, and each consume goes on
with its row, or with None: the per-run path (`Consumer._not_started`) learns why.

A crash between the leases and the statement, or between the statement and the handlers, is
the per-run crash point: the leases expire and the coordinators deliver again; a replayed
statement (D1 retried it after losing its answer) starts nothing the second time, and each
consume finds its own token on its row (`_not_started`), as for a per-run start.
"""

from __future__ import annotations

import asyncio

from .batch_store import start_many
from .clock import Clock, now_ms
from .run_rows import StartedRow
from .store import RunStore

__all__ = ["BatchStart", "start_and_answer"]


class BatchStart:
    def __init__(self, store: RunStore, clock: Clock, size: int) -> None:
        self._store = store
        self._clock = clock
        self._open = size  # messages that have neither joined nor left
        self._joined: list[tuple[str, int, asyncio.Future[StartedRow | None]]] = []
        self._unless: str | None = None
        self._flight: asyncio.Future[None] | None = None  # held: a task must be referenced

    async def join(self, run_id: str, token: int, unless_jobs: str | None) -> StartedRow | None:
        """Start `run_id` under `token` with the batch: its started row, or None if the
        guarded start did not match it. `unless_jobs`: `RunStore.start`'s (the same for
        every run of one runtime)."""
        answer: asyncio.Future[StartedRow | None] = asyncio.get_running_loop().create_future()
        self._joined.append((run_id, token, answer))
        self._unless = unless_jobs
        self._settle()
        return await answer

    def leave(self) -> None:
        """A message that starts nothing (its lease refused, or its consume failed first)."""
        self._settle()

    def _settle(self) -> None:
        self._open -= 1
        if self._open == 0 and self._joined:
            self._flight = asyncio.ensure_future(self._start(self._joined))

    async def _start(
        self, joined: list[tuple[str, int, asyncio.Future[StartedRow | None]]]
    ) -> None:
        await start_and_answer(self._store, self._clock, joined, self._unless)


Joined = list[tuple[str, int, "asyncio.Future[StartedRow | None]"]]


async def start_and_answer(
    store: RunStore, clock: Clock, joined: Joined, unless: str | None
) -> None:
    """Start every (run id, token) of `joined` in one statement and answer each its started
    row, or None (not started by it); a failed statement fails every answer. Shared by the
    consumer batch's starts and the limiter hand-overs' (`handoff_writes`)."""
    # One run, one token: two leases of one run cannot both be live, but should a run come
    # twice, the newer token goes in the statement and the older is answered None.
    tokens: dict[str, int] = {}
    for run_id, token, _ in joined:
        tokens[run_id] = max(token, tokens.get(run_id, token))
    try:
        rows = await start_many(store, list(tokens.items()), now_ms(clock), unless=unless)
    except Exception as exc:
        for _, _, answer in joined:
            if not answer.done():
                answer.set_exception(exc)
        return
    for run_id, token, answer in joined:
        row = rows.get(run_id)
        if not answer.done():
            answer.set_result(row if row is not None and tokens[run_id] == token else None)
