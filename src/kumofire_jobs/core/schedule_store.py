"""Every SQL statement about schedules, in one place.

A schedule's pending occurrence is `next_run_id`. Materializing the next occurrence is one
D1 batch of two statements with the same guard (the schedule is enabled, at this revision,
and its pending occurrence is still the one the caller saw): insert the run, move the
schedule on. Two materializers racing for the same step insert one run between them.
"""

from __future__ import annotations

from typing import Any

from .bindings import D1Database, D1PreparedStatement
from .models import JobSchedule, Page
from .store import TABLE as RUNS
from .store import keyset_page
from .times import ms_to_datetime

TABLE = "kumofire_job_schedules"
COLUMNS = (
    "id, key, name, type, expr, timezone, enabled, payload, max_attempts, revision, anchor_at, "
    "next_run_at, next_run_id, last_scheduled_at, created_at, updated_at"
)

_INSERT = (
    f"INSERT INTO {TABLE} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, NULL, ?, ?) "
    "ON CONFLICT DO NOTHING RETURNING id"
)
_SELECT = f"SELECT {COLUMNS} FROM {TABLE} WHERE "
# The guard every change of a schedule's pending occurrence carries.
_GUARD = "id = ?1 AND revision = ?2 AND next_run_id IS ?3"
_INSERT_OCCURRENCE = (
    f"INSERT INTO {RUNS} (id, name, status, payload, attempt, max_attempts, scheduled_for, "
    "created_at, updated_at, schedule_id, occurrence_key) "
    "SELECT ?4, name, 'scheduled', payload, 0, COALESCE(max_attempts, ?5), ?6, ?7, ?7, id, "
    f"revision || ':' || ?6 FROM {TABLE} WHERE {_GUARD} AND enabled = 1 "
    "ON CONFLICT DO NOTHING RETURNING id"
)
_ADVANCE = (
    f"UPDATE {TABLE} SET next_run_id = ?4, next_run_at = ?5, updated_at = ?6, "
    f"last_scheduled_at = COALESCE(?7, last_scheduled_at) WHERE {_GUARD} AND enabled = 1 "
    "RETURNING id"
)
_CHANGE = (
    f"UPDATE {TABLE} SET name = ?4, payload = ?5, max_attempts = ?6, type = ?7, expr = ?8, "
    "timezone = ?9, enabled = ?10, revision = ?11, anchor_at = ?12, next_run_at = ?13, "
    f"next_run_id = ?14, updated_at = ?15 WHERE {_GUARD} RETURNING id"
)
_CANCEL_PENDING = (
    f"UPDATE {RUNS} SET status = 'canceled', updated_at = ?2, finished_at = ?2 "
    "WHERE id = ?1 AND status = 'scheduled' RETURNING id"
)
_REFRESH_PENDING = (
    f"UPDATE {RUNS} SET name = ?2, payload = ?3, max_attempts = COALESCE(?4, max_attempts), "
    "updated_at = ?5 WHERE id = ?1 AND status = 'scheduled' AND attempt = 0"
)
_DELETE = f"DELETE FROM {TABLE} WHERE id = ? RETURNING next_run_id"
_MISSING_NEXT = (
    f"SELECT s.id, s.revision, s.next_run_id, s.next_run_at, r.status AS run_status "
    f"FROM {TABLE} s LEFT JOIN {RUNS} r ON r.id = s.next_run_id "
    "WHERE s.enabled = 1 AND (r.id IS NULL OR r.status <> 'scheduled') LIMIT ?"
)


def row_to_schedule(row: dict[str, Any], decode: Any) -> JobSchedule:
    return JobSchedule(
        id=row["id"],
        key=row["key"],
        name=row["name"],
        type=row["type"],
        expr=row["expr"],
        timezone=row["timezone"],
        enabled=bool(row["enabled"]),
        payload=decode(row["payload"]),
        max_attempts=row["max_attempts"],
        next_run_at=None if row["next_run_at"] is None else ms_to_datetime(row["next_run_at"]),
        last_scheduled_at=(
            None if row["last_scheduled_at"] is None else ms_to_datetime(row["last_scheduled_at"])
        ),
        created_at=ms_to_datetime(row["created_at"]),
        updated_at=ms_to_datetime(row["updated_at"]),
    )


class ScheduleStore:
    def __init__(self, db: D1Database) -> None:
        self.db = db

    def insert(self, row: dict[str, Any]) -> D1PreparedStatement:
        return self.db.prepare(_INSERT).bind(
            row["id"], row["key"], row["name"], row["type"], row["expr"], row["timezone"],
            int(row["enabled"]), row["payload"], row["max_attempts"], row["anchor_at"],
            row["next_run_at"], row["next_run_id"], row["created_at"], row["updated_at"],
        )  # fmt: skip

    def insert_occurrence(
        self, guard: tuple[str, int, str | None], run_id: str, default_attempts: int,
        at_ms: int, now_ms: int,
    ) -> D1PreparedStatement:  # fmt: skip
        return self.db.prepare(_INSERT_OCCURRENCE).bind(
            *guard, run_id, default_attempts, at_ms, now_ms
        )

    def advance(
        self, guard: tuple[str, int, str | None], run_id: str | None, at_ms: int | None,
        now_ms: int, last_scheduled_ms: int | None,
    ) -> D1PreparedStatement:  # fmt: skip
        return self.db.prepare(_ADVANCE).bind(*guard, run_id, at_ms, now_ms, last_scheduled_ms)

    def change(
        self, guard: tuple[str, int, str | None], row: dict[str, Any]
    ) -> D1PreparedStatement:
        return self.db.prepare(_CHANGE).bind(
            *guard, row["name"], row["payload"], row["max_attempts"], row["type"], row["expr"],
            row["timezone"], int(row["enabled"]), row["revision"], row["anchor_at"],
            row["next_run_at"], row["next_run_id"], row["updated_at"],
        )  # fmt: skip

    def cancel_pending(self, run_id: str, now_ms: int) -> D1PreparedStatement:
        return self.db.prepare(_CANCEL_PENDING).bind(run_id, now_ms)

    def refresh_pending(self, run_id: str, row: dict[str, Any], now_ms: int) -> D1PreparedStatement:
        return self.db.prepare(_REFRESH_PENDING).bind(
            run_id, row["name"], row["payload"], row["max_attempts"], now_ms
        )

    async def get(self, column: str, value: str) -> dict[str, Any] | None:
        assert column in ("id", "key")
        row: dict[str, Any] | None = (
            await self.db.prepare(f"{_SELECT}{column} = ?").bind(value).first()
        )
        return row

    async def delete(self, schedule_id: str) -> tuple[bool, str | None]:
        """(deleted, the pending occurrence's run id)."""
        result = (await self.db.prepare(_DELETE).bind(schedule_id).all()).results
        if not result:
            return False, None
        return True, result[0]["next_run_id"]

    async def page(
        self, *, enabled: bool | None, name: str | None, limit: int, cursor: str | None
    ) -> Page[dict[str, Any]]:
        filters = {"enabled": None if enabled is None else int(enabled), "name": name}
        rows, next_cursor = await keyset_page(self.db, TABLE, COLUMNS, filters, limit, cursor)
        return Page(items=rows, next_cursor=next_cursor)

    async def missing_next(self, limit: int) -> list[dict[str, Any]]:
        """Enabled schedules whose pending occurrence is gone or no longer waiting."""
        return (await self.db.prepare(_MISSING_NEXT).bind(limit).all()).results
