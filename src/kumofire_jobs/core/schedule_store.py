"""Every SQL statement about the schedules table, in one place (their occurrences are runs:
`store` writes those).

A schedule's pending occurrence is `next_run_id`. Materializing the next occurrence is one
D1 batch of two statements with the same guard (the schedule is enabled, at this revision,
and its pending occurrence is still the one the caller saw): insert the run, move the
schedule on. Two materializers racing for the same step insert one run between them.

A change by hand (`ScheduleStore.change`, `restart`) is guarded instead by the values it read
rather than was given, so concurrent changes of one schedule (upserts by key) apply one after
the other: a restart's batch cancels whatever occurrence is pending when it runs and inserts
its own, and bumps the revision, which stops a materialization racing it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypedDict, cast

from .bindings import D1Database, D1PreparedStatement
from .models import JobSchedule, Page
from .pages import keyset_page
from .store import PAUSED
from .store import SCHEDULE_GUARD as _GUARD
from .store import SCHEDULES as TABLE
from .store import TABLE as RUNS
from .times import ms_to_datetime

COLUMNS = (
    "id, key, name, type, expr, timezone, enabled, payload, max_attempts, revision, anchor_at, "
    "next_run_at, next_run_id, last_scheduled_at, created_at, updated_at, priority, "
    "concurrency_key, occurrence_limit, occurrence_count, start_at, end_at"
)


class ScheduleRow(TypedDict):
    """A row of the schedules table, as D1 returns it (times in epoch ms)."""

    id: str
    key: str | None
    name: str
    type: Literal["cron", "interval"]
    expr: str
    timezone: str | None
    enabled: int  # 0 or 1 (a bool before it is written)
    payload: str | None  # JSON text
    max_attempts: int | None
    revision: int
    anchor_at: int
    next_run_at: int | None
    next_run_id: str | None
    last_scheduled_at: int | None
    created_at: int
    updated_at: int
    priority: int
    concurrency_key: str | None
    occurrence_limit: int | None  # `limit`: occurrences in all
    occurrence_count: int  # `count`: occurrences delivered so far
    start_at: int | None
    end_at: int | None


class MissingNext(TypedDict):
    """An enabled schedule whose pending occurrence is gone or no longer waiting."""

    id: str
    revision: int
    next_run_id: str | None
    next_run_at: int | None
    run_status: str | None  # the pending occurrence's status; None: no such run
    run_attempt: int | None  # its attempts started (above 0: it was delivered)


_INSERT = (
    f"INSERT INTO {TABLE} ({COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, NULL, ?, ?, ?, ?, ?, 0, ?, ?) "
    "ON CONFLICT DO NOTHING RETURNING id"
)
_SELECT_BY_ID = f"SELECT {COLUMNS} FROM {TABLE} WHERE id = ?"
_SELECT_BY_KEY = f"SELECT {COLUMNS} FROM {TABLE} WHERE key = ?"
_ADVANCE = (
    f"UPDATE {TABLE} SET next_run_id = ?4, next_run_at = ?5, updated_at = ?6, "
    "last_scheduled_at = COALESCE(?7, last_scheduled_at), "
    # A delivered occurrence (?7 given) counts; the last one (`limit`, `end_at`) disables.
    "occurrence_count = occurrence_count + (?7 IS NOT NULL), enabled = ?8 "
    f"WHERE {_GUARD} AND enabled = 1 RETURNING id"
)
# A change sets the fields given (a NULL keeps the column) and, restarting the schedule, its
# timing, bounds and pending occurrence; it is guarded by the values it read instead of being
# given them (`guarded`), not by the revision, so changes that read nothing another changes
# apply one after the other in D1's order, the last one winning.
_GIVEN = (
    "name = COALESCE(?, name), payload = COALESCE(?, payload), "
    "max_attempts = COALESCE(?, max_attempts), priority = COALESCE(?, priority), "
    "concurrency_key = COALESCE(?, concurrency_key), updated_at = ?"
)
_CHANGE_FIELDS = f"UPDATE {TABLE} SET {_GIVEN} WHERE "
_RESTART = (
    f"UPDATE {TABLE} SET {_GIVEN}, type = ?, expr = ?, timezone = ?, enabled = ?, "
    "occurrence_limit = ?, start_at = ?, end_at = ?, anchor_at = COALESCE(?, anchor_at), "
    "next_run_at = ?, next_run_id = ?, revision = revision + 1, "
    "occurrence_count = occurrence_count + ? WHERE "
)
# Whether the pending occurrence of the schedule (columns prefixed `{p}`) was delivered and so
# counts (its successor not materialized yet): NULL when it has none. A restart guards on it
# (read before, after its batch's cancel of a waiting one), so one delivered in between fails it.
PENDING_DELIVERED = (
    f"(SELECT r.status NOT IN ('scheduled', 'canceled') OR r.attempt > 0 FROM {RUNS} AS r "
    "WHERE r.id = {p}next_run_id)"
)
# The columns a change may guard: what it read of the row to decide and compute its write.
GUARDABLE = frozenset(
    {"name", "type", "expr", "timezone", "enabled", "occurrence_limit", "occurrence_count",
     "start_at", "end_at"}
)  # fmt: skip
_DELETE = f"DELETE FROM {TABLE} WHERE id = ? RETURNING next_run_id"
_MISSING_NEXT = (
    "SELECT s.id, s.revision, s.next_run_id, s.next_run_at, r.status AS run_status, "
    "r.attempt AS run_attempt "
    f"FROM {TABLE} s LEFT JOIN {RUNS} r ON r.id = s.next_run_id "
    # Gone, or no longer waiting since before ?1: an occurrence delivered moments ago has its
    # successor on the way (the delivery hook materializes it right after the send). The
    # earlier of its due time and its last change is no later than when it stopped waiting
    # (delivered at or after its due time; canceled at its last change).
    "WHERE s.enabled = 1 AND (r.id IS NULL OR (r.status <> 'scheduled' "
    "AND MIN(r.scheduled_for, r.updated_at) <= ?1)) "
    # A paused job's schedule keeps its one pending occurrence until the job is resumed.
    f"AND NOT {PAUSED.format(table='s')} LIMIT ?2"
)
_ADVANCE_UNPAUSED = _ADVANCE.replace(
    "AND enabled = 1", f"AND enabled = 1 AND NOT {PAUSED.format(table=TABLE)}"
)

# Which column names a schedule: its id or its key.
By = Literal["id", "key"]
# A change's name, payload, max_attempts, priority and concurrency_key, each None unless given.
Given = tuple[str | None, str | None, int | None, int | None, str | None]


def row_to_schedule(row: ScheduleRow, decode: Callable[[str | None], Any]) -> JobSchedule:
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
        priority=row["priority"],
        concurrency_key=row["concurrency_key"],
        limit=row["occurrence_limit"],
        count=row["occurrence_count"],
        start_at=None if row["start_at"] is None else ms_to_datetime(row["start_at"]),
        end_at=None if row["end_at"] is None else ms_to_datetime(row["end_at"]),
    )


class ScheduleStore:
    def __init__(self, db: D1Database) -> None:
        self.db = db

    def insert(self, row: ScheduleRow) -> D1PreparedStatement:
        return self.db.prepare(_INSERT).bind(
            row["id"], row["key"], row["name"], row["type"], row["expr"], row["timezone"],
            int(row["enabled"]), row["payload"], row["max_attempts"], row["anchor_at"],
            row["next_run_at"], row["next_run_id"], row["created_at"], row["updated_at"],
            row["priority"], row["concurrency_key"], row["occurrence_limit"], row["start_at"],
            row["end_at"],
        )  # fmt: skip

    def advance(
        self, guard: tuple[str, int, str | None], run_id: str | None, at_ms: int | None,
        now_ms: int, last_scheduled_ms: int | None, *, unless_paused: bool = False,
        last: bool = False,
    ) -> D1PreparedStatement:  # fmt: skip
        """Move the schedule on to `run_id` at `at_ms`; `last`: it has no next occurrence
        (`run_id` and `at_ms` None) and disables itself."""
        sql = _ADVANCE_UNPAUSED if unless_paused else _ADVANCE
        return self.db.prepare(sql).bind(
            *guard, run_id, at_ms, now_ms, last_scheduled_ms, 0 if last else 1
        )

    @staticmethod
    def guarded(
        schedule_id: str, guard: Mapping[str, Any], *, alias: str = ""
    ) -> tuple[str, list[Any]]:
        """The WHERE clause (and its values) selecting schedule `schedule_id` while each
        column of `guard` still holds its value; `alias`: the table's name in the statement."""
        unknown = set(guard) - GUARDABLE
        if unknown:  # never user input: the columns are the caller's constants
            raise ValueError(f"not a guardable column: {sorted(unknown)}")
        prefix = f"{alias}." if alias else ""
        clauses = [f"{prefix}id = ?", *(f"{prefix}{column} IS ?" for column in guard)]
        return " AND ".join(clauses), [schedule_id, *guard.values()]

    def change(
        self, schedule_id: str, guard: Mapping[str, Any], given: Given, now_ms: int
    ) -> D1PreparedStatement:
        """Set the fields `given` (None: unchanged), keeping timing, bounds and the pending
        occurrence; returns the row as changed."""
        where, values = self.guarded(schedule_id, guard)
        return self.db.prepare(f"{_CHANGE_FIELDS}{where} RETURNING {COLUMNS}").bind(
            *given, now_ms, *values
        )

    def restart(
        self, schedule_id: str, guard: Mapping[str, Any], given: Given, row: ScheduleRow,
        anchor_ms: int | None, now_ms: int, delivered: int | None,
    ) -> D1PreparedStatement:  # fmt: skip
        """Set the fields `given`, and `row`'s timing, `enabled`, bounds and next occurrence
        (`anchor_ms` None: the anchor kept) at a new revision; the pending occurrence counts
        if it was `delivered` (1), as read (guarded: `PENDING_DELIVERED`). Returns the row as
        changed."""
        where, values = self.guarded(schedule_id, guard)
        return self.db.prepare(
            f"{_RESTART}{where} AND {PENDING_DELIVERED.format(p='')} IS ? RETURNING {COLUMNS}"
        ).bind(
            *given, now_ms, row["type"], row["expr"], row["timezone"], int(row["enabled"]),
            row["occurrence_limit"], row["start_at"], row["end_at"], anchor_ms,
            row["next_run_at"], row["next_run_id"], delivered or 0, *values, delivered,
        )  # fmt: skip

    async def get(self, by: By, value: str) -> ScheduleRow | None:
        """The schedule whose id (`by="id"`) or key (`by="key"`) is `value`."""
        sql = _SELECT_BY_ID if by == "id" else _SELECT_BY_KEY
        row = await self.db.prepare(sql).bind(value).first()
        return None if row is None else cast(ScheduleRow, row)

    def delete(self, schedule_id: str) -> D1PreparedStatement:
        """Delete the schedule; returns its pending occurrence's run id (no row: not found)."""
        return self.db.prepare(_DELETE).bind(schedule_id)

    async def page(
        self, *, enabled: bool | None, name: str | None, limit: int, cursor: str | None
    ) -> Page[ScheduleRow]:
        filters = {"enabled": None if enabled is None else int(enabled), "name": name}
        rows, next_cursor = await keyset_page(self.db, TABLE, COLUMNS, filters, limit, cursor)
        return Page(items=cast(list[ScheduleRow], rows), next_cursor=next_cursor)

    async def missing_next(self, before_ms: int, limit: int) -> list[MissingNext]:
        """Enabled schedules whose pending occurrence is gone, or no longer waiting since
        before `before_ms`."""
        rows = (await self.db.prepare(_MISSING_NEXT).bind(before_ms, limit).all()).results
        return cast(list[MissingNext], rows)
