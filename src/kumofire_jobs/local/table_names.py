"""The names of the embedded queue's and Durable Objects' tables, and their names before.

In the one-file layout they sit in D1's file beside the user's own tables, so they carry a
`kumofire_local_` prefix (as D1's own are `kumofire_job_...`): a user's table called
`messages` or `kv` must neither be taken for ours nor collide with it. Files of their own
written before the prefix (`queues.sqlite`, `objects.sqlite3`) have the old names, renamed
when such a file is opened (`rename_legacy`) or read by the move into one file (`legacy`).
"""

from __future__ import annotations

import sqlite3
from typing import Final

__all__ = ["OBJECT_TABLES", "QUEUE_TABLES", "legacy", "rename_legacy"]

# (table, its name before the prefix, the indexes it had then, dropped: the schema makes them
# again under their new names)
QUEUE_TABLES: Final = (("kumofire_local_queue_messages", "messages", ("messages_ready",)),)
OBJECT_TABLES: Final = (
    ("kumofire_local_do_kv", "kv", ()),
    ("kumofire_local_do_alarms", "alarms", ("alarms_by_time",)),
    # Written by earlier versions only: folded into the alarms' rows (`durable_objects.upgrade`).
    ("kumofire_local_do_names", "names", ()),
)


def _tables(conn: sqlite3.Connection, schema: str = "main") -> set[str]:
    rows = conn.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")
    return {str(row[0]) for row in rows}


def legacy(
    conn: sqlite3.Connection, schema: str, tables: tuple[tuple[str, str, tuple[str, ...]], ...]
) -> dict[str, str]:
    """For each table of `tables` that the attached `schema` holds, the name it has there."""
    present = _tables(conn, schema)
    found = {}
    for name, old, _ in tables:
        if name in present:
            found[name] = name
        elif old in present:
            found[name] = old
    return found


def rename_legacy(
    conn: sqlite3.Connection, tables: tuple[tuple[str, str, tuple[str, ...]], ...]
) -> None:
    """Rename a binding's own file's tables from their names before the prefix, in one
    transaction (only ever on a file of the binding's own: in D1's file a table with an old
    name is the user's)."""
    present = _tables(conn)
    stale = [(name, old, indexes) for name, old, indexes in tables if old in present]
    if not stale or any(name in present for name, _, _ in stale):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for name, old, indexes in stale:
            for index in indexes:
                conn.execute(f"DROP INDEX IF EXISTS {index}")
            conn.execute(f"ALTER TABLE {old} RENAME TO {name}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
