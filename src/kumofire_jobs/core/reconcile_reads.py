"""The reads reconciliation pages through: unfinished runs in due-time order (the partial
index on unfinished runs serves them; `test_store_indexes.py` checks the plan)."""

from __future__ import annotations

from typing import cast

from .bindings import D1Database
from .run_rows import UnfinishedRow
from .states import ACTIVE, sql_list
from .store import PAUSED, TABLE

__all__ = ["active_due_after", "active_due_before", "canceled_running_since", "unfinished_after"]

_ACTIVE = sql_list(ACTIVE)

_DUE_SINCE = (
    f"SELECT id, status, scheduled_for FROM {TABLE} "
    # `finished_at IS NULL` names the partial index's own term, so SQLite uses the index.
    f"WHERE finished_at IS NULL AND status IN ({_ACTIVE}) AND scheduled_for <= ? "
    # A paused job's waiting runs are left alone: resuming it re-arms them.
    f"AND NOT {PAUSED.format(table=TABLE)} ORDER BY scheduled_for, id LIMIT ?"
)
# The next page of the same, after (scheduled_for, id): when a page held runs parked in a
# limiter's line, reconciliation looks further (the index's entries hold both columns).
_DUE_SINCE_AFTER = _DUE_SINCE.replace(
    "AND scheduled_for <= ? ", "AND scheduled_for <= ? AND (scheduled_for, id) > (?, ?) "
)
_UNFINISHED_AFTER = (
    f"SELECT id, status, scheduled_for FROM {TABLE} "
    f"WHERE finished_at IS NULL AND status IN ({_ACTIVE}) AND (scheduled_for, id) > (?1, ?2) "
    "ORDER BY scheduled_for, id LIMIT ?3"
)


async def active_due_before(db: D1Database, cutoff: int, limit: int) -> list[UnfinishedRow]:
    """Unfinished runs due at or before `cutoff`, oldest first."""
    rows = (await db.prepare(_DUE_SINCE).bind(cutoff, limit).all()).results
    return cast(list[UnfinishedRow], rows)


async def active_due_after(
    db: D1Database, cutoff: int, scheduled_for: int, run_id: str, limit: int
) -> list[UnfinishedRow]:
    """`active_due_before`'s next page, after (scheduled_for, run_id)."""
    stmt = db.prepare(_DUE_SINCE_AFTER).bind(cutoff, scheduled_for, run_id, limit)
    return cast(list[UnfinishedRow], (await stmt.all()).results)


async def unfinished_after(
    db: D1Database, scheduled_for: int, run_id: str, limit: int
) -> list[UnfinishedRow]:
    """Unfinished runs after (scheduled_for, run_id) in that order, whatever their due
    time: a page of a walk over all of them."""
    stmt = db.prepare(_UNFINISHED_AFTER).bind(scheduled_for, run_id, limit)
    return cast(list[UnfinishedRow], (await stmt.all()).results)


# Runs canceled since a time after they had started, of the jobs named (a JSON array): read
# once, at the embedded runtime's start, by a scan of the runs table (no index is worth a
# write per run for it).
_CANCELED_RUNNING_SINCE = (
    f"SELECT id, name FROM {TABLE} WHERE status = 'canceled' AND started_at IS NOT NULL "
    "AND finished_at > ?1 AND name IN (SELECT value FROM json_each(?2))"
)


async def canceled_running_since(db: D1Database, since: int, names: str) -> list[tuple[str, str]]:
    """(job, run id) of the runs of the jobs `names` (a JSON array) canceled after `since`
    (epoch ms) once started: those that may still hold a limiter slot."""
    rows = (await db.prepare(_CANCELED_RUNNING_SINCE).bind(since, names).all()).results
    return [(str(row["name"]), str(row["id"])) for row in rows]
