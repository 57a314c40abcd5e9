"""Where a data directory keeps the bindings' tables: its layout, and the move of a data
directory written in the per-binding layout into the one-file layout.

* `ONE_FILE` (the default): `d1/jobs.sqlite` holds D1's tables and, beside them, the queue's
  and the coordinators' storage's (`kumofire_local_...`: `table_names`): one commit and one
  WAL sync per event-loop turn for all three (`one_file`).
* `PER_BINDING`: each binding its own file (`queues.sqlite`,
  `durable_objects/JobCoordinator/objects.sqlite3`), as before; each commits on its own, so
  a crash can fall between any two, as between D1, the Queue and a Durable Object on the
  platform. The fault-injection tests that need that use it.

`to_one_file()` copies the tables of the per-binding files into the D1 file in one
transaction, synced, and only then deletes the old files: a crash before the commit leaves
the old files in charge; a crash after it, before they are all gone, copies again at the next
start, and the copy is idempotent (`INSERT OR IGNORE` on the same primary keys; nothing ran
in between).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Final

from kumofire_jobs.local import table_names
from kumofire_jobs.local.durable_objects import upgrade
from kumofire_jobs.local.durable_objects.commit import SCHEMA as OBJECTS_SCHEMA
from kumofire_jobs.local.queue import SCHEMA as QUEUE_SCHEMA
from kumofire_jobs.local.wal_sync import sync_directory

__all__ = ["LAYOUTS", "ONE_FILE", "PER_BINDING", "OneFileInUseError", "to_one_file"]

ONE_FILE: Final = "one-file"
PER_BINDING: Final = "per-binding"
LAYOUTS: Final = (ONE_FILE, PER_BINDING)

# The columns of each table, copied as they are.
_COLUMNS: Final = {
    "kumofire_local_queue_messages": (
        "seq, queue, id, timestamp_ms, content_type, body, visible_at, attempts, lease"
    ),
    "kumofire_local_do_kv": "object_id, key, value",
    "kumofire_local_do_alarms": "object_id, time_ms, retry, name",
}


class OneFileInUseError(RuntimeError):
    """A data directory in the one-file layout opened in the per-binding layout."""


def d1_path(data_dir: Path) -> Path:
    return data_dir / "d1" / "jobs.sqlite"


def queue_path(data_dir: Path) -> Path:
    return data_dir / "queues.sqlite"


def objects_path(data_dir: Path, class_name: str) -> Path:
    return data_dir / "durable_objects" / class_name / "objects.sqlite3"


def to_one_file(data_dir: Path, class_name: str) -> bool:
    """Move the per-binding files' tables into the D1 file; True if there were any."""
    d1 = d1_path(data_dir)
    sources = [
        (path, alias, tables)
        for path, alias, tables in (
            (queue_path(data_dir), "old_queue", table_names.QUEUE_TABLES),
            (objects_path(data_dir, class_name), "old_objects", table_names.OBJECT_TABLES),
        )
        if path.exists()
    ]
    if not sources:
        return False
    d1.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(d1, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # the copy is on disk before the old files go
        conn.executescript(QUEUE_SCHEMA + OBJECTS_SCHEMA)
        upgrade.fold_names(conn)  # a move cut off before, by a version with the names table
        for path, alias, _ in sources:
            conn.execute("ATTACH DATABASE ? AS " + alias, (os.fspath(path),))
        conn.execute("BEGIN IMMEDIATE")
        try:
            for _, alias, tables in sources:
                # A file written before the tables' prefix has them under their old names.
                found = table_names.legacy(conn, alias, tables)
                for table, there in found.items():
                    if table == upgrade.NAMES_TABLE:
                        continue  # folded into the alarms' rows (below)
                    columns = _COLUMNS[table]
                    select = columns
                    if table == "kumofire_local_do_alarms" and not upgrade.has_column(
                        conn, there, "name", alias
                    ):
                        # Written before the name moved into the alarm's row: from its table.
                        names = found.get(upgrade.NAMES_TABLE)
                        name = (
                            "NULL"
                            if names is None
                            else f"(SELECT n.name FROM {alias}.{names} AS n"
                            f" WHERE n.object_id = {alias}.{there}.object_id)"
                        )
                        select = f"object_id, time_ms, retry, {name}"
                    conn.execute(
                        f"INSERT OR IGNORE INTO main.{table} ({columns})"
                        f" SELECT {select} FROM {alias}.{there}"
                    )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for _, alias, _ in sources:
            conn.execute("DETACH DATABASE " + alias)
    finally:
        conn.close()
    for path, _, _ in sources:
        for suffix in ("-wal", "-shm", ""):  # the database file last: its presence means "copy"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")
        sync_directory(path.parent)
    return True


def check_per_binding(data_dir: Path) -> None:
    """Refuse to open a data directory written in the one-file layout file by file (its
    queue and coordinators would look empty)."""
    d1 = d1_path(data_dir)
    if not d1.exists():
        return
    conn = sqlite3.connect(d1, isolation_level=None)
    try:
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table'"
            " AND name IN ('kumofire_local_queue_messages', 'kumofire_local_do_kv')"
        ).fetchone()
    finally:
        conn.close()
    if row is not None:
        raise OneFileInUseError(
            f"{data_dir} holds its queue and coordinators in {d1} (the one-file layout): "
            "open it in that layout"
        )
