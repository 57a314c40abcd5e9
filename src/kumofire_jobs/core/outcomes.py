"""The outcomes of one consumer batch, written together: the handlers of a batch run
concurrently and end at different times, so the writer collects the outcomes recorded in one
event-loop turn, and while that write is in flight, those that come meanwhile; then writes
them in one statement (`batch_store.write_outcomes`), as a group commit does. Each outcome is
fenced by its own token (`status = 'running' AND lease_token = ?`), and each caller learns
whether its row was written, exactly as from `RunStore.finish` / `reschedule`: a row not
written goes through the per-run path (`Consumer._landed`, `_superseded`).

A failed write fails every outcome of it: each consume raises, as a failed per-run write
does, its message is retried and its lease expires; the coordinator delivers the run again
and the next start records the attempt as interrupted (the crash point "the D1 `running`
update and the handler's end").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from .batch_store import OutcomeRow, write_outcomes
from .run_rows import AttemptWrite
from .states import RunStatus
from .store import RunStore

__all__ = ["OutcomeStore", "OutcomeWriter"]


class OutcomeStore(Protocol):
    """Where `Consumer._record` writes an outcome: the store itself, or a batch's writer."""

    async def finish(
        self, run_id: str, token: int, status: RunStatus, now: int, error: str | None,
        history: AttemptWrite,
    ) -> bool: ...  # fmt: skip

    async def reschedule(
        self, run_id: str, token: int, now: int, scheduled_for: int, error: str | None,
        history: AttemptWrite,
    ) -> bool: ...  # fmt: skip


class OutcomeWriter:
    def __init__(self, store: RunStore) -> None:
        self._store = store
        self._pending: list[tuple[OutcomeRow, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Future[None] | None = None  # the write in flight, if any
        # While this says so, outcomes wait (`HandoffWrites`: a release that may hand a run
        # over is in flight; its start and these go in one turn, one commit); `resume()`
        # writes them once it no longer does.
        self.held: Callable[[], bool] = _never

    async def finish(
        self, run_id: str, token: int, status: RunStatus, now: int, error: str | None,
        history: AttemptWrite,
    ) -> bool:  # fmt: skip
        """running -> succeeded/failed, only for the current lease holder."""
        return await self._write(OutcomeRow(run_id, token, status, now, error, history))

    async def reschedule(
        self, run_id: str, token: int, now: int, scheduled_for: int, error: str | None,
        history: AttemptWrite,
    ) -> bool:  # fmt: skip
        """running -> scheduled (a retry), only for the current lease holder."""
        row = OutcomeRow(run_id, token, RunStatus.SCHEDULED, now, error, history, scheduled_for)
        return await self._write(row)

    async def _write(self, row: OutcomeRow) -> bool:
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((row, answer))
        self.resume()
        return await answer

    def resume(self) -> None:
        """Write what is pending, unless held or a write is in flight (it takes them next)."""
        if self._pending and self._flusher is None and not self.held():
            # Its first step runs after what is ready in this turn: the other handlers that
            # ended in it record theirs first.
            self._flusher = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending and not self.held():
                taken, self._pending = self._pending, []
                try:
                    written = await write_outcomes(self._store, [row for row, _ in taken])
                except Exception as exc:
                    for _, answer in taken:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                for row, answer in taken:
                    if not answer.done():
                        answer.set_result((row.run_id, row.token) in written)
        finally:
            self._flusher = None


def _never() -> bool:
    return False
