"""Where reconciliation's walk over the overdue runs stands, kept in D1 (migration 7) so that
every isolate's cron pass goes on from where the last pass, in any isolate, stopped.

In memory, each isolate kept its own: two isolates each walked at half speed, and a new one
began at the oldest again, so with isolates replaced faster than one whole walk a lost run
behind `limit` healthy overdue runs was never reached. A pass reads the cursor at its start
and writes it once at its end, only when it moved (a healthy system, with nothing overdue,
writes nothing). The write is a compare-and-set on `version`: of two passes that read the
same position, only the first to finish writes, and the other (which walked the same page)
cannot move it back. A pass that fails before its write leaves the cursor where it was, so
the next pass asks about the same page again."""

from __future__ import annotations

from typing import NamedTuple

from .bindings import D1Database

__all__ = ["CURSOR_TABLE", "Cursor", "read_cursor", "write_cursor"]

CURSOR_TABLE = "kumofire_reconcile_cursor"
_NAME = "overdue"  # the row of the cron pass's walk (the table's only one so far)

_READ = f"SELECT scheduled_for, run_id, version FROM {CURSOR_TABLE} WHERE name = ?"
# The first write inserts the row; later ones update it only if no other pass wrote since
# this one read it (`version` as read, 0 when there was no row).
_WRITE = (
    f"INSERT INTO {CURSOR_TABLE} (name, scheduled_for, run_id, version) "
    "VALUES (?1, ?2, ?3, ?4 + 1) "
    "ON CONFLICT (name) DO UPDATE SET scheduled_for = excluded.scheduled_for, "
    f"run_id = excluded.run_id, version = excluded.version WHERE {CURSOR_TABLE}.version = ?4"
)


class Cursor(NamedTuple):
    """(scheduled_for, id) of the last run a pass asked about, None: start from the oldest;
    and the row's version when read."""

    after: tuple[int, str] | None
    version: int


async def read_cursor(db: D1Database) -> Cursor:
    row = await db.prepare(_READ).bind(_NAME).first()
    if row is None:
        return Cursor(None, 0)
    after = None if row["run_id"] is None else (int(row["scheduled_for"]), str(row["run_id"]))
    return Cursor(after, int(row["version"]))


async def write_cursor(db: D1Database, read: Cursor, after: tuple[int, str] | None) -> bool:
    """Move the cursor from `read` to `after`; False if another pass moved it since (left
    as that pass wrote it)."""
    if after == read.after:
        return True
    scheduled_for, run_id = (None, None) if after is None else after
    stmt = db.prepare(_WRITE).bind(_NAME, scheduled_for, run_id, read.version)
    return int((await stmt.run()).meta.changes) == 1
