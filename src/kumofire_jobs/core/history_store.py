"""The statements about a run's history besides those that start and finish its attempts
(in `store.py`): the journal's write while a handler runs, and the reads of the jobs API."""

from __future__ import annotations

from .bindings import D1Database
from .history import attempts_from_json, log_lines_from_json
from .models import LogLine, RunAttempt
from .store import TABLE

# The log lines and progress of a running attempt, by its lease holder; also once its run was
# canceled meanwhile (the handler's last lines). Never after a retry or a takeover: the token.
_SAVE = (
    f"UPDATE {TABLE} SET progress = ?1, logs = ?2, updated_at = ?3 "
    "WHERE id = ?4 AND lease_token = ?5 AND status IN ('running', 'canceled')"
)
_ATTEMPTS = f"SELECT attempts FROM {TABLE} WHERE id = ?"
_LOGS = f"SELECT logs FROM {TABLE} WHERE id = ?"


class HistoryStore:
    def __init__(self, db: D1Database) -> None:
        self.db = db

    async def save(
        self, run_id: str, token: int, progress: str | None, logs: str | None, now: int
    ) -> None:
        """Write a running attempt's progress and log lines (nothing if it is no longer the
        holder's)."""
        await self.db.prepare(_SAVE).bind(progress, logs, now, run_id, token).run()

    async def attempts(self, run_id: str) -> list[RunAttempt] | None:
        """The run's finished attempts, oldest first; None for an unknown run."""
        row = await self.db.prepare(_ATTEMPTS).bind(run_id).first()
        return None if row is None else attempts_from_json(row["attempts"])

    async def logs(self, run_id: str) -> list[LogLine] | None:
        """The run's kept log lines, oldest first; None for an unknown run."""
        row = await self.db.prepare(_LOGS).bind(run_id).first()
        return None if row is None else log_lines_from_json(row["logs"])
