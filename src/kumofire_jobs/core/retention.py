"""Retention: the part of the cron's pass that deletes finished runs past their age.

The runtime's `retention_seconds` applies to every finished run, except where a job's options
say otherwise (`keep_succeeded` for its succeeded runs, `keep_failed` for its failed ones).
Without such options the pass is the one statement it always was (`_PRUNE`); with them,
that statement skips the overridden (job, status) pairs and each pair gets one of its own.

A pass deletes in pages until a page comes back short, up to a bound: one page a minute would
cap retention at 100 runs a minute, and a deployment finishing more than that would grow its
table without end. An idle pass is still the single statement that finds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from .bindings import D1Database
from .ids import run_ids_before
from .states import TERMINAL, sql_list
from .store import TABLE

# A finished child of a parent still unfinished is kept: the parent's `ctx.children` shows
# it (a parent released but due later, paused or retrying has yet to read it). For a run
# outside a flow (`parent_id` NULL) the test reads nothing.
NOT_AN_UNFINISHED_PARENTS_CHILD = (
    f"({TABLE}.parent_id IS NULL OR NOT EXISTS (SELECT 1 FROM {TABLE} AS p "
    f"WHERE p.id = {TABLE}.parent_id AND p.finished_at IS NULL))"
)
_PRUNE = (
    # Run ids start with their creation time, and a run finishes after it is created: the
    # primary key's range `id < ?1` holds every candidate, so the scan reads old rows only.
    f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} "
    f"WHERE id < ?1 AND status IN ({sql_list(TERMINAL)}) AND finished_at < ?2 "
    f"AND {NOT_AN_UNFINISHED_PARENTS_CHILD} LIMIT ?3)"
)

# As `_PRUNE`, skipping the (name, status) pairs of ?4, a JSON array of [name, status].
_PRUNE_EXCEPT = (
    f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} "
    "WHERE id < ?1 AND status IN ('succeeded', 'failed', 'canceled') AND finished_at < ?2 "
    f"AND {NOT_AN_UNFINISHED_PARENTS_CHILD} "
    "AND (name, status) NOT IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
    "FROM json_each(?4)) LIMIT ?3)"
)
# One job's runs of one finished status, past that job's own age.
_PRUNE_JOB = (
    f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} "
    "WHERE id < ?1 AND name = ?4 AND status = ?5 AND finished_at < ?2 "
    f"AND {NOT_AN_UNFINISHED_PARENTS_CHILD} LIMIT ?3)"
)


async def _delete(db: D1Database, sql: str, before: int, limit: int, *extra: str) -> int:
    bound = run_ids_before(before)
    result = await db.prepare(sql).bind(bound, before, limit, *extra).run()
    return int(result.meta.changes)


# Rows a retention statement deletes at most, and statements a pass makes at most: 20,000 runs a
# minute (333 a second), above one D1 database's ceiling for this design (docs/scaling.md), in
# statements short enough not to hold the database for long.
PAGE_ROWS = 500
MAX_PAGES = 40


async def prune_pass(
    db: D1Database,
    *,
    now: int,
    retention_seconds: float | None,
    overrides: Mapping[str, tuple[float | None, float | None]],
    page: int = PAGE_ROWS,
    max_pages: int = MAX_PAGES,
) -> int:
    """The cron's retention: `prune` in pages of `page` until one is short or `max_pages` were
    made (the next tick goes on); how many runs were deleted."""
    total = 0
    for _ in range(max_pages):
        deleted = await prune(
            db, now=now, limit=page, retention_seconds=retention_seconds, overrides=overrides
        )
        total += deleted
        if deleted < page:
            break
    return total


async def prune(
    db: D1Database,
    *,
    now: int,
    limit: int,
    retention_seconds: float | None,
    overrides: Mapping[str, tuple[float | None, float | None]],
) -> int:
    """Delete at most `limit` finished runs past their age; how many were deleted.
    `overrides`: (keep_succeeded, keep_failed) by job name, None where the runtime's applies."""
    pairs: list[tuple[str, str, float]] = []
    for name, (keep_succeeded, keep_failed) in sorted(overrides.items()):
        if keep_succeeded is not None:
            pairs.append((name, "succeeded", keep_succeeded))
        if keep_failed is not None:
            pairs.append((name, "failed", keep_failed))
    deleted = 0
    if retention_seconds is not None:
        before = now - int(retention_seconds * 1000)
        if pairs:
            skip = msgspec.json.encode([[name, status] for name, status, _ in pairs]).decode()
            deleted += await _delete(db, _PRUNE_EXCEPT, before, limit, skip)
        else:
            deleted += await _delete(db, _PRUNE, before, limit)
    for name, status, keep in pairs:
        if deleted >= limit:
            break
        before = now - int(keep * 1000)
        deleted += await _delete(db, _PRUNE_JOB, before, limit - deleted, name, status)
    return deleted
