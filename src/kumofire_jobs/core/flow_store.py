"""The flows' SQL (API.md Part 2, "Flows"): inserting a parent with its children, the
parent's release, its children, and what reconciliation releases. The cancel that cascades
from a parent to its children is the one cancel statement of `store.py`.

A parent is `waiting` until none of its children is unfinished (`finished_at IS NULL`, which
holds for exactly the unfinished statuses); every query here finds the children through the
partial index on `parent_id` (migration 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from .bindings import D1Database, D1PreparedStatement
from .models import JobRun
from .run_rows import NewRun, RunRow, row_to_run
from .store import COLUMNS, TABLE

# A parent (`parent_id` null, status `waiting`) or a child (`scheduled`, or `queued` when due).
# A child goes in only with its parent: when the parent's insert met its dedupe_key taken, the
# batch inserts none of its children.
_INSERT_MEMBER = (
    f"INSERT INTO {TABLE} (id, name, status, payload, attempt, max_attempts, scheduled_for, "
    "created_at, updated_at, dedupe_key, priority, concurrency_key, dedupe_expires_at, "
    "timeout, parent_id, child_count) "
    "SELECT ?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14 "
    f"WHERE ?13 IS NULL OR EXISTS (SELECT 1 FROM {TABLE} WHERE id = ?13) "
    "ON CONFLICT DO NOTHING RETURNING id"
)
# waiting -> scheduled, once no child is unfinished: one statement, so of two last children
# finishing at once exactly one releases the parent (each writes its own finish before it
# tries this). Due at its own time, or now if that passed: `scheduled_for` is left as it is
# (a past due time means now, as for any run), since setting it would write the entry of the
# unfinished-runs index, keyed on it, as a second row.
_RELEASE = (
    f"UPDATE {TABLE} SET status = 'scheduled', updated_at = ?2 "
    "WHERE id = ?1 AND status = 'waiting' AND NOT EXISTS (SELECT 1 FROM "
    f"{TABLE} AS child WHERE child.parent_id = ?1 AND child.finished_at IS NULL) "
    "RETURNING MAX(scheduled_for, ?2) AS due"
)
_CHILDREN = f"SELECT {COLUMNS} FROM {TABLE} WHERE parent_id = ? ORDER BY id"
# Reconciliation: waiting parents due by now whose children have all finished (a crash fell
# between a child's finish and the release). `finished_at IS NULL` names the partial index
# of unfinished runs, so the scan reads unfinished runs due by now, as the re-arm query does.
_RELEASABLE = (
    f"SELECT id FROM {TABLE} AS parent WHERE parent.finished_at IS NULL "
    "AND parent.status = 'waiting' AND parent.scheduled_for <= ?1 AND NOT EXISTS (SELECT 1 "
    f"FROM {TABLE} AS child WHERE child.parent_id = parent.id AND child.finished_at IS NULL) "
    "ORDER BY parent.scheduled_for LIMIT ?2"
)


class FlowStore:
    def __init__(self, db: D1Database) -> None:
        self.db = db

    def _insert(self, run: NewRun, status: str) -> D1PreparedStatement:
        return self.db.prepare(_INSERT_MEMBER).bind(
            run.id, run.name, status, run.payload, run.max_attempts, run.scheduled_for,
            run.created_at, run.dedupe_key, run.priority, run.concurrency_key,
            run.dedupe_expires_at, run.timeout, run.parent_id, run.child_count,
        )  # fmt: skip

    async def insert(self, parent: NewRun, children: Sequence[NewRun]) -> bool:
        """The parent (`waiting`) and its children (`scheduled`, or `queued` if due: see
        `NewRun.status`) in one D1 batch, one transaction; False when the parent's dedupe_key
        was taken (nothing inserted)."""
        statements = [self._insert(parent, "waiting")]
        statements += [self._insert(child, child.status) for child in children]
        results = await self.db.batch(statements)
        return bool(results[0].results)

    async def release(self, parent_id: str, now: int) -> int | None:
        """waiting -> scheduled if no child is unfinished: the parent's due time (epoch ms),
        or None if it was not released by this call."""
        due = await self.db.prepare(_RELEASE).bind(parent_id, now).first("due")
        return None if due is None else int(due)

    async def children(self, parent_id: str) -> list[JobRun]:
        """A parent's children, oldest first."""
        rows = (await self.db.prepare(_CHILDREN).bind(parent_id).all()).results
        return [row_to_run(cast(RunRow, row)) for row in rows]

    async def releasable(self, now: int, limit: int) -> list[str]:
        """Waiting parents due by `now` with no unfinished child, oldest due first."""
        rows = (await self.db.prepare(_RELEASABLE).bind(now, limit).all()).results
        return [str(row["id"]) for row in rows]
