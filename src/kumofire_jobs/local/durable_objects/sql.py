"""`ctx.storage.sql`: a per-object SQLite database, created on first use.

Its statements commit one by one, so they are durable when `exec()` returns.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .namespace import LocalDurableObjectNamespace

_TRANSACTION_STATEMENT = re.compile(
    r"\s*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE
)


class SqlRow(dict[str, Any]):
    """A result row: a dict that also reads columns as attributes (`row.greeting`), as a
    Python Worker reads the JavaScript row object."""

    def __getattr__(self, column: str) -> Any:
        try:
            return self[column]
        except KeyError:
            raise AttributeError(column) from None


class LocalSqlCursor:
    """The result of `sql.exec()`: iterate it once, or take `toArray()` / `one()` / `raw()`."""

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]], written: int) -> None:
        self.columnNames = columns
        self._rows = rows
        self._next = 0
        # sqlite3 does not report rows scanned: rowsRead counts the rows returned, a lower
        # bound of what the platform bills.
        self.rowsRead = len(rows)
        self.rowsWritten = written

    def _take(self) -> list[tuple[Any, ...]]:
        rows = self._rows[self._next :]
        self._next = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[SqlRow]:
        while self._next < len(self._rows):
            row = self._rows[self._next]
            self._next += 1
            yield SqlRow(zip(self.columnNames, row, strict=True))

    def next(self) -> dict[str, Any]:
        """The JavaScript iterator protocol: `{"done": bool, "value": row}`."""
        for row in self:
            return {"done": False, "value": row}
        return {"done": True}

    def toArray(self) -> list[SqlRow]:
        return [SqlRow(zip(self.columnNames, row, strict=True)) for row in self._take()]

    def one(self) -> SqlRow:
        rows = self._take()
        if len(rows) != 1:
            raise ValueError(f"Expected exactly one result from SQL query, got {len(rows)}")
        return SqlRow(zip(self.columnNames, rows[0], strict=True))

    def raw(self) -> Iterator[list[Any]]:
        return (list(row) for row in self._take())


class LocalSqlStorage:
    """`ctx.storage.sql`: a per-object SQLite database, created on first use."""

    def __init__(self, path: Path, namespace: LocalDurableObjectNamespace) -> None:
        self._path = path
        self._namespace = namespace
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = self._namespace._connect(self._path)
        return self._conn

    def exec(self, query: str, *bindings: Any) -> LocalSqlCursor:
        """Run one statement (or several, without bindings) and return its cursor."""
        for binding in bindings:
            if binding is not None and not isinstance(binding, int | float | str | bytes):
                raise TypeError(f"cannot bind a {type(binding).__name__} to a SQL parameter")
        statements = _split_sql(query)
        if not statements:
            raise ValueError("exec() needs a statement")
        if len(statements) > 1 and bindings:
            raise ValueError("bindings apply to a single statement")
        for statement in statements:
            if _TRANSACTION_STATEMENT.match(statement):
                raise ValueError(
                    "To execute a transaction, use the storage's transaction APIs instead of "
                    "the SQL BEGIN TRANSACTION or SAVEPOINT statements"
                )
        conn = self._connection()
        before = conn.total_changes
        cursor: sqlite3.Cursor | None = None
        for statement in statements:
            cursor = conn.execute(statement, bindings)
        assert cursor is not None
        rows = cursor.fetchall()
        columns = [d[0] for d in cursor.description or ()]
        return LocalSqlCursor(columns, rows, conn.total_changes - before)

    @property
    def databaseSize(self) -> int:
        if self._conn is None and not self._path.exists():
            return 0
        conn = self._connection()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int(pages * size)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _destroy(self) -> None:
        self._close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self._path}{suffix}")


def _split_sql(query: str) -> list[str]:
    statements: list[str] = []
    buffer = ""
    for piece in query.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer)
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        statements.append(buffer)
    return statements
