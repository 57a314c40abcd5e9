"""Bring an objects' database written by an earlier version to the current schema.

Before, an object's name had a table of its own (`kumofire_local_do_names`), a row written
at the object's first write and deleted by its `deleteAll`: two statements for every
coordinator, in the hot path of every run. Now the name is a column of the object's alarm
row (written in the same statement as the alarm), since only an instance rebuilt by its alarm
has no caller to bring it. `fold_names` moves the names of the objects with an alarm into
that column and drops the table, in one transaction: a crash leaves the old schema, and the
next open does it again. The names of objects without an alarm go: a call to such an object
brings its id's name, as on the platform.
"""

from __future__ import annotations

import sqlite3

__all__ = ["NAMES_TABLE", "fold_names", "has_column"]

NAMES_TABLE = "kumofire_local_do_names"
_ALARMS = "kumofire_local_do_alarms"


def has_column(conn: sqlite3.Connection, table: str, column: str, schema: str = "main") -> bool:
    rows = conn.execute(f"PRAGMA {schema}.table_info({table})").fetchall()
    return any(row[1] == column for row in rows)


def _has_table(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return row is not None


def fold_names(conn: sqlite3.Connection) -> bool:
    """Move the names table of the database `conn` opened (its `main`) into the alarms' `name`
    column; True if there was anything to do. The alarms table exists (the schema made it)."""
    has_name = has_column(conn, _ALARMS, "name")
    has_names = _has_table(conn, NAMES_TABLE)
    if has_name and not has_names:
        return False
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not has_name:
            conn.execute(f"ALTER TABLE {_ALARMS} ADD COLUMN name TEXT")
        if has_names:
            conn.execute(
                f"UPDATE {_ALARMS} SET name = (SELECT n.name FROM {NAMES_TABLE} AS n"
                f" WHERE n.object_id = {_ALARMS}.object_id) WHERE name IS NULL"
            )
            conn.execute(f"DROP TABLE {NAMES_TABLE}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True
