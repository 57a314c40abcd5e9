"""A full disk, simulated at the SQLite connection: while `full`, every commit fails with
SQLITE_FULL ("database or disk is full"), as SQLite reports a disk with no space left.

`FullDisk.wrap(conn)` returns a stand-in for a `sqlite3.Connection`: reads and writes inside
an open transaction work (SQLite keeps them in memory and in the journal it already has);
what would make them durable fails: `COMMIT`, `RELEASE` of a savepoint that opened the
transaction, and a write in autocommit mode (its implicit commit). The transaction stays
open after a failed `COMMIT`, so the caller's `ROLLBACK` runs as it would on a real disk.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from kumofire_jobs.local.environment import LocalEnvironment

_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER"})


def disk_full_error() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = 13
    error.sqlite_errorname = "SQLITE_FULL"
    return error


class FullDisk:
    def __init__(self) -> None:
        self.full = False
        self.refused = 0  # commits refused so far

    def wrap(self, conn: sqlite3.Connection) -> Any:
        return _Connection(conn, self)

    def install(self, env: LocalEnvironment) -> None:
        """Put every binding of `env` on this disk: D1, the queue broker, the coordinators."""
        env.JOBS_DB._conn = self.wrap(env.JOBS_DB._conn)
        env.broker._db = self.wrap(env.broker._db)
        env.JOB_COORDINATOR._db = self.wrap(env.JOB_COORDINATOR._db)


class _Connection:
    def __init__(self, conn: sqlite3.Connection, disk: FullDisk) -> None:
        self._conn = conn
        self._disk = disk
        self._outer_savepoints: set[str] = set()  # savepoints that opened a transaction

    def _check(self, sql: str) -> None:
        words = sql.split(None, 2)
        verb = words[0].upper() if words else ""
        if verb == "SAVEPOINT" and not self._conn.in_transaction:
            self._outer_savepoints.add(words[1].upper())
        if not self._disk.full:
            if verb == "RELEASE":
                self._outer_savepoints.discard(words[-1].upper())
            return
        commits = (
            verb in ("COMMIT", "END")
            or (verb == "RELEASE" and words[-1].upper() in self._outer_savepoints)
            or (verb in _WRITES and not self._conn.in_transaction)
        )
        if commits:
            self._disk.refused += 1
            raise disk_full_error()

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        self._check(sql)
        return self._conn.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any]) -> sqlite3.Cursor:
        self._check(sql)
        return self._conn.executemany(sql, parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)
