"""The embedded D1 binding: D1's Workers API on the stdlib's sqlite3.

Shapes are those a Python Worker sees through the Workers SDK: `prepare(sql).bind(*values)`,
`first(column)`, `all()`, `run()`, `raw({"columnNames": True})`, `batch([...])` and
`exec(sql)`, results with `results`, `success` and `meta`. It rejects what D1 rejects, with
D1's messages (`D1_ERROR: ...`, `D1_TYPE_ERROR: ...`): SQL transaction statements
(transactions exist only as `batch()`), binds other than None, bool, int, float, str and
bytes, more than 100 bound parameters, named parameters, and the other limits below.

Values come back as they reach Python on the platform, where they cross JavaScript numbers:
an integral REAL arrives as an int. BLOBs come back as bytes (the SDK hands over a list of
byte values; the Cloudflare adapter converts it).

Every statement runs synchronously on the event loop: SQLite answers in microseconds, a thread
hop would cost more than the query, and statements never interleave, which is also how a D1
database runs queries: one at a time.

Group commit. A write does not commit alone: it runs inside a transaction the binding keeps
open for the current event-loop turn, and the transaction commits at the end of the turn
(`group_commit`), so the writes of every caller in that turn share one commit. Each
caller's `await` resolves only after that commit, so an acknowledged write is durable, and a
statement that ran while the transaction was open (a read of uncommitted rows included)
answers only once what it saw is durable. A failing statement fails alone (SQLite undoes just
that statement); `batch()` and `exec()` run inside a SAVEPOINT, so they stay all or nothing.
Statements that could undo the whole transaction (an `OR ROLLBACK` conflict clause, or a
schema declaring `ON CONFLICT ROLLBACK` or `RAISE(ROLLBACK, ...)`), PRAGMAs and VACUUM run
alone, after the open transaction is committed. A read with no transaction open runs at once,
and so does a write when nothing else is ready to run on the event loop (nobody could share
its commit): it commits alone, as a lone statement did before group commit.

Called from a Durable Object whose storage writes are not yet durable, a statement first waits
for them (the object's output gate).
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kumofire_jobs.core.bindings import D1Meta, D1PreparedStatement, D1Result
from kumofire_jobs.core.migrations import split_sql, sql_tokens
from kumofire_jobs.local import checkpoint, group_commit, output_gate, wal_sync

if TYPE_CHECKING:
    from kumofire_jobs.core.bindings import D1Database
    from kumofire_jobs.local.one_file import OneFile

_T = TypeVar("_T")

__all__ = [
    "MAX_BOUND_PARAMETERS",
    "MAX_COLUMNS",
    "MAX_FUNCTION_ARGUMENTS",
    "MAX_LIKE_PATTERN_BYTES",
    "MAX_SQL_BYTES",
    "MAX_VALUE_BYTES",
    "D1Error",
    "D1TypeError",
    "LocalD1Database",
    "LocalD1ExecResult",
    "LocalD1Meta",
    "LocalD1PreparedStatement",
    "LocalD1Result",
]

# D1's documented limits (developers.cloudflare.com/d1/platform/limits), set as SQLite's own
# run-time limits so that SQLite rejects what D1's SQLite rejects.
MAX_BOUND_PARAMETERS = 100
MAX_SQL_BYTES = 100_000
MAX_VALUE_BYTES = 1_000_000  # a string, a BLOB or a whole row
MAX_COLUMNS = 100
MAX_FUNCTION_ARGUMENTS = 32
MAX_LIKE_PATTERN_BYTES = 50
# A Python int beyond this crosses to JavaScript as a BigInt, which D1's bind() refuses.
MAX_SAFE_INTEGER = 2**53 - 1

_SYNCHRONOUS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})

# workerd's message for SQL transaction statements (D1 runs on the same SQLite authorizer).
_TRANSACTION_MESSAGE = (
    "D1_ERROR: To execute a transaction, please use the state.storage.transaction() or "
    "state.storage.transactionSync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT "
    "statements. The JavaScript API is safer because it will automatically roll back on "
    "exceptions, and because it interacts correctly with Durable Objects' automatic atomic "
    "write coalescing."
)
_TRANSACTION_VERBS = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"})
_UNAUTHORIZED_VERBS = frozenset({"ATTACH", "DETACH"})
_SCHEMA_VERBS = frozenset({"CREATE", "DROP", "ALTER"})
_READ_VERBS = frozenset({"SELECT", "VALUES", "EXPLAIN"})
_ALONE_VERBS = frozenset({"PRAGMA", "VACUUM"})  # not meant for inside a transaction
# The statements whose writes SQLite counts in `total_changes` (DDL and PRAGMAs are not).
_COUNTED_VERBS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "WITH"})
_CLASSIFY_CACHE_LIMIT = 4096
_BATCH_SAVEPOINT = "kumofire_batch"

# How a statement takes part in group commit.
_READ = 0  # runs at once when no transaction is open, else inside it
_GROUPED = 1  # runs inside the open transaction (opening it)
_ALONE = 2  # runs alone, in autocommit, after the open transaction commits


class D1Error(Exception):
    """An error D1 reports; the message carries D1's prefix (`D1_ERROR: ...`)."""


class D1TypeError(D1Error, TypeError):
    """A value or option D1's API refuses before running anything (`D1_TYPE_ERROR: ...`)."""


class LocalD1Meta:
    """A result's `meta`. `size_after` is read when first asked for (the database's size
    then), which spares every write a size query that nothing in the runtime reads."""

    __slots__ = (
        "_db",
        "_size_after",
        "changed_db",
        "changes",
        "duration",
        "last_row_id",
        "rows_read",
        "rows_written",
    )

    def __init__(
        self,
        db: LocalD1Database | None = None,
        *,
        changes: int = 0,
        last_row_id: int = 0,
        rows_read: int = 0,
        rows_written: int = 0,
        duration: float = 0.0,
        changed_db: bool = False,
    ) -> None:
        self._db = db
        self._size_after: int | None = None
        self.changes = changes
        self.last_row_id = last_row_id
        self.rows_read = rows_read
        self.rows_written = rows_written
        self.duration = duration  # milliseconds
        self.changed_db = changed_db

    @property
    def size_after(self) -> int:
        if self._size_after is None:
            self._size_after = self._db._read_size() if self._db is not None else 0
        return self._size_after

    def __getitem__(self, key: str) -> Any:
        # The SDK's results are dicts that also answer attribute access; allow both.
        if key.startswith("_"):
            raise KeyError(key)
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __repr__(self) -> str:
        return (
            f"LocalD1Meta(changes={self.changes}, last_row_id={self.last_row_id}, "
            f"rows_read={self.rows_read}, rows_written={self.rows_written}, "
            f"duration={self.duration:.3f}, changed_db={self.changed_db})"
        )


@dataclass(slots=True)
class LocalD1Result:
    results: list[dict[str, Any]] = field(default_factory=list)
    success: bool = True
    # Typed as the protocol (whose attributes mypy holds invariant); it is a LocalD1Meta.
    meta: D1Meta = field(default_factory=LocalD1Meta)

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None


@dataclass(slots=True)
class LocalD1ExecResult:
    count: int
    duration: float  # milliseconds

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None


@dataclass(frozen=True, slots=True)
class _Sql:
    """What the binding needs to know about one SQL string, computed once per string."""

    verb: str  # the first keyword, upper case; "" for no statement at all
    rejection: str | None  # D1's error message when D1 refuses the statement outright
    table: str | None  # the table an INSERT/REPLACE/DELETE writes, for rows_written
    changes_schema: bool
    mode: int  # _READ, _GROUPED or _ALONE


class LocalD1PreparedStatement:
    """A statement and its bound values. `bind()` returns a new statement."""

    __slots__ = ("_db", "_params", "sql")

    def __init__(self, db: LocalD1Database, sql: str, params: tuple[Any, ...] = ()) -> None:
        self._db = db
        self.sql = sql
        self._params = params

    def bind(self, *values: Any) -> LocalD1PreparedStatement:
        # D1 validates the types here, at bind time, and copies the values.
        return LocalD1PreparedStatement(self._db, self.sql, tuple(map(_bind_value, values)))

    async def first(self, column: str | None = None) -> Any:
        row = await self._db._call(self._db._first, self)
        if row is None:
            return None
        if column is None:
            return row
        if column not in row:
            raise D1Error(f"D1_COLUMN_NOTFOUND: Column not found ({column})")
        return row[column]

    async def all(self) -> LocalD1Result:
        return await self._db._call(self._db._result, self)

    async def run(self) -> LocalD1Result:
        # D1's run() answers like all() (a RETURNING clause's rows are in `results`).
        return await self._db._call(self._db._result, self)

    async def raw(self, options: dict[str, Any] | None = None) -> list[list[Any]]:
        column_names = False
        if options is not None:
            if not isinstance(options, dict):
                raise D1TypeError(
                    f"D1_TYPE_ERROR: raw() takes an options dict, not {type(options).__name__}"
                )
            unknown = set(options) - {"columnNames"}
            if unknown:
                # D1 ignores unknown keys; refusing them catches a misspelt "column_names".
                raise D1TypeError(
                    f"D1_TYPE_ERROR: raw() accepts only the option 'columnNames', "
                    f"not {', '.join(sorted(map(repr, unknown)))}"
                )
            column_names = bool(options.get("columnNames"))
        columns, rows = await self._db._call(self._db._raw, self)
        out = [list(row) for row in rows]
        if column_names:
            out.insert(0, columns)
        return out

    def __repr__(self) -> str:
        return f"LocalD1PreparedStatement({self.sql!r}, params={self._params!r})"


class LocalD1Database:
    """A D1 database in one SQLite file (or `":memory:"`)."""

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "NORMAL") -> None:
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}, not {mode!r}")
        self.path = os.fspath(path)
        self.synchronous = mode
        in_memory = self.path in ("", ":memory:")
        if not in_memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each statement commits alone, as on D1; batch() opens its own
        # transaction. check_same_thread is off because the owner is an event loop, not a
        # thread, and no method ever yields mid-query.
        self._conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=512,
        )
        conn = self._conn
        if not in_memory:
            conn.execute("PRAGMA journal_mode=WAL")
            checkpoint.configure(conn)
        self._checkpointer = None if in_memory else checkpoint.Checkpointer(self.path)
        conn.execute(f"PRAGMA synchronous={mode}")
        conn.execute("PRAGMA foreign_keys=ON")  # D1 enforces foreign keys
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, MAX_BOUND_PARAMETERS)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        conn.setlimit(sqlite3.SQLITE_LIMIT_COLUMN, MAX_COLUMNS)
        conn.setlimit(sqlite3.SQLITE_LIMIT_FUNCTION_ARG, MAX_FUNCTION_ARGUMENTS)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, MAX_LIKE_PATTERN_BYTES)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self._page_size: int = conn.execute("PRAGMA page_size").fetchone()[0]
        self._classified: dict[str, _Sql] = {}
        self._index_counts: dict[str, int] = {}
        # Group commit: our open transaction (`pending` while open) and who waits for its
        # commit, and whether the schema can roll a whole transaction back (None: not yet
        # known).
        self._commits = group_commit.GroupCommit(
            self._commit_transaction,
            wal=None if in_memory else wal_sync.for_connection(conn, self.path, mode, disk_error),
        )
        self._rollback_risk: bool | None = None
        # The one-file layout at FULL: commits are synced before answers outside (one_file).
        self._one_file: OneFile | None = None
        self._batching = False  # inside batch()/exec(): statements join its transaction
        self._closed = False
        # Writing statements `total_changes` does not count (`CREATE`, `PRAGMA x = ...`): the
        # one-file layout adds them to it to tell whether anything was committed since its
        # last sync.
        self.uncounted_writes = 0

    def _join_one_file(self, one_file: OneFile) -> None:
        """The one-file layout: the queue and the Durable Objects share this connection and
        its group commit (`one_file`), which replaces the database's own."""
        self._commits = one_file.commits
        if one_file.defers_sync:
            self._one_file = one_file

    @property
    def kumofire_before_answer(self) -> Callable[[], None] | None:
        """What a `Jobs` call bound to this database calls before it answers (the one file
        at `FULL`: sync what is committed; `core/runtime.py`); None when commits sync
        themselves."""
        return None if self._one_file is None else self._one_file.before_answer

    def _rolled_back(self) -> None:
        """The shared transaction was undone (one-file layout)."""
        self._forget_schema()

    def close(self) -> None:
        """Close the database; writes of the open transaction are committed first."""
        if self._closed:
            return
        self._closed = True
        self._commits.close()
        try:
            self._commits.commit()
        finally:
            if self._checkpointer is not None:
                self._checkpointer.close()
            self._conn.close()

    # --- the D1Database API ---------------------------------------------------------------

    def prepare(self, query: str) -> LocalD1PreparedStatement:
        return LocalD1PreparedStatement(self, query)

    async def batch(self, statements: Sequence[D1PreparedStatement]) -> list[D1Result]:
        """Run the statements in one transaction: all apply, or (on an error) none."""
        if not statements:
            raise D1Error("D1_ERROR: No SQL statements detected.")
        own: list[LocalD1PreparedStatement] = []
        alone = False
        for statement in statements:
            if not isinstance(statement, LocalD1PreparedStatement) or statement._db is not self:
                raise D1TypeError(
                    "D1_TYPE_ERROR: batch() takes statements prepared on this database, "
                    f"not {statement!r}"
                )
            info = self._check(statement.sql, statement._params)  # refuse before writing
            alone = alone or self._mode(info) == _ALONE
            own.append(statement)
        await self._gate()
        alone = alone or (not self._commits.pending and output_gate.alone())
        try:
            with self._transaction(alone):
                return [self._result(statement) for statement in own]
        finally:
            if self._commits.pending:
                await self._commits.wait(_as_d1_error)
            if self._one_file is not None:
                self._one_file.answer_outside(disk_error)

    async def exec(self, query: str) -> LocalD1ExecResult:
        """Run SQL without binds, line by line, as D1's exec() does.

        D1 sends each line as one query (so a statement may not span lines, and a line may
        hold several statements) and runs them together; here they run in one transaction.
        `count` is the number of lines that held a statement.
        """
        started = time.perf_counter()
        count = 0
        lines = [
            (number, line, split_sql(line, strip_comments=False))
            for number, line in enumerate(query.strip().split("\n"), start=1)
        ]
        alone = any(
            self._mode(self._classify(sql)) == _ALONE for _, _, sqls in lines for sql in sqls
        )
        await self._gate()
        alone = alone or (not self._commits.pending and output_gate.alone())
        try:
            with self._transaction(alone):
                for number, line, statements in lines:
                    if not statements:
                        continue
                    count += 1
                    for sql in statements:
                        try:
                            self._exec_one(sql)
                        except D1Error as error:
                            cause = str(error).removeprefix("D1_ERROR: ")
                            raise D1Error(
                                f"D1_EXEC_ERROR: Error in line {number}: {line}: {cause}"
                            ) from error
        finally:
            if self._commits.pending:
                await self._commits.wait(_as_d1_error)
            if self._one_file is not None:
                self._one_file.answer_outside(disk_error)
        return LocalD1ExecResult(count, (time.perf_counter() - started) * 1000)

    # --- group commit ---------------------------------------------------------------------

    async def _gate(self) -> None:
        """Called from a Durable Object: wait until its storage writes are durable."""
        gate = output_gate.pending_gate()
        if gate is not None:
            await gate.durable()

    async def _call(
        self,
        run: Callable[[LocalD1PreparedStatement], _T],
        statement: LocalD1PreparedStatement,
    ) -> _T:
        """Run one statement; answer once what it wrote or read is durable."""
        gate = output_gate.pending_gate()
        if gate is not None:
            await gate.durable()
        try:
            return run(statement)
        finally:
            if self._commits.pending:
                await self._commits.wait(_as_d1_error)
            if self._one_file is not None:
                self._one_file.answer_outside(disk_error)

    def _mode(self, info: _Sql) -> int:
        mode = info.mode
        if mode == _GROUPED:
            risk = self._rollback_risk
            if risk is None:
                risk = self._rollback_risk = self._schema_can_roll_back()
            if risk:
                return _ALONE
        return mode

    def _schema_can_roll_back(self) -> bool:
        """Whether a table or trigger can roll a whole transaction back (`ON CONFLICT
        ROLLBACK`, `RAISE(ROLLBACK, ...)`); a false alarm only costs group commit."""
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE sql LIKE '%rollback%' LIMIT 1"
        ).fetchone()
        return row is not None

    def _begin_group(self) -> None:
        wal = self._commits._wal
        try:
            if wal is not None:
                wal.relax()  # the group commit syncs the WAL itself (wal_sync)
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            if wal is not None:
                wal.restore()
            raise _d1_error(error) from error
        self._commits.join()

    def _commit_transaction(self) -> D1Error | None:
        """The group commit's work: commit the open transaction (undo it if that fails)."""
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._forget_schema()
            return _d1_error(exc)
        return None

    def _group_lost(self, cause: sqlite3.Error | sqlite3.Warning) -> None:
        """SQLite rolled the whole open transaction back (an I/O error, say): every
        statement in it is undone, so everyone waiting for it fails."""
        self._forget_schema()
        self._commits.lost(D1Error(f"D1_ERROR: the transaction was rolled back: {cause}"))

    def _failed(self, error: sqlite3.Error | sqlite3.Warning) -> D1Error:
        """The D1 error for a failed statement, noting a transaction SQLite rolled back."""
        if self._commits.pending and not self._conn.in_transaction:
            self._group_lost(error)
        return _d1_error(error)

    def _forget_schema(self) -> None:
        self._index_counts.clear()  # a rolled-back DDL may have been counted
        self._rollback_risk = None

    # --- execution ------------------------------------------------------------------------

    def _exec_one(self, sql: str) -> None:
        cursor, _ = self._execute(sql, ())
        try:
            cursor.fetchall()  # run it to the end, as D1 does, whatever it returns
        except sqlite3.Error as error:
            raise self._failed(error) from error
        finally:
            cursor.close()

    def _first(self, statement: LocalD1PreparedStatement) -> dict[str, Any] | None:
        cursor, _ = self._execute(statement.sql, statement._params)
        try:
            row = cursor.fetchone()
            if row is None:
                return None
            columns = [d[0] for d in cursor.description]
        except sqlite3.Error as error:
            raise self._failed(error) from error
        finally:
            cursor.close()
        return dict(zip(columns, _js_row(row), strict=False))

    def _raw(self, statement: LocalD1PreparedStatement) -> tuple[list[str], list[list[Any]]]:
        cursor, _ = self._execute(statement.sql, statement._params)
        try:
            rows = cursor.fetchall()
            columns = [d[0] for d in cursor.description] if cursor.description else []
        except sqlite3.Error as error:
            raise self._failed(error) from error
        finally:
            cursor.close()
        return columns, [list(_js_row(row)) for row in rows]

    def _result(self, statement: LocalD1PreparedStatement) -> LocalD1Result:
        changes_before = self._conn.total_changes
        started = time.perf_counter()
        cursor, info = self._execute(statement.sql, statement._params)
        try:
            rows = cursor.fetchall()
            description = cursor.description
            last_row_id = cursor.lastrowid or 0
        except sqlite3.Error as error:
            raise self._failed(error) from error
        finally:
            cursor.close()
        duration = (time.perf_counter() - started) * 1000
        if description:
            columns = [d[0] for d in description]
            results = [dict(zip(columns, _js_row(row), strict=False)) for row in rows]
        else:
            results = []
        changes = self._conn.total_changes - changes_before
        # Approximations of D1's billing counters (SQLite's rows visited / rows written),
        # to be calibrated against wrangler: a write touches each changed row plus one entry
        # per index of the table for INSERT/DELETE (partial indexes counted as if they held
        # every row; UPDATE counts the changed rows only); reads count the rows returned,
        # UPDATE/DELETE at least the rows they matched.
        rows_written = changes
        if changes and info.table is not None:
            rows_written = changes * (1 + self._index_count(info.table))
        rows_read = len(rows)
        if info.verb in ("UPDATE", "DELETE"):
            rows_read = max(rows_read, changes)
        meta = LocalD1Meta(
            self,
            changes=changes,
            last_row_id=last_row_id,
            rows_read=rows_read,
            rows_written=rows_written,
            duration=duration,
            changed_db=changes != 0 or info.changes_schema,
        )
        return LocalD1Result(results, True, meta)

    def _execute(self, sql: str, params: tuple[Any, ...]) -> tuple[sqlite3.Cursor, _Sql]:
        info = self._check(sql, params)
        if info.mode != _READ and self._checkpointer is not None:
            self._checkpointer.wrote()
        if info.mode != _READ and not self._batching:
            if self._mode(info) == _GROUPED:
                if not self._commits.pending and not output_gate.alone():
                    self._begin_group()  # else: alone in this turn, it commits at once
            elif self._commits.pending:
                self._commits.commit()  # then this one runs alone, in autocommit
        try:
            cursor = self._conn.execute(sql, params)
        except (sqlite3.Error, sqlite3.Warning) as error:
            raise self._failed(error) from error
        if info.mode != _READ and info.verb not in _COUNTED_VERBS:
            # After the statement's BEGIN (if any): the open transaction's count began before.
            self.uncounted_writes += 1
        if info.changes_schema:
            self._forget_schema()
        return cursor, info

    def _check(self, sql: str, params: tuple[Any, ...]) -> _Sql:
        info = self._classify(sql)
        if info.rejection is not None:
            raise D1Error(info.rejection)
        if len(params) > MAX_BOUND_PARAMETERS:
            raise D1Error(
                f"D1_ERROR: too many SQL variables: SQLITE_ERROR ({len(params)} bound; "
                f"D1 allows at most {MAX_BOUND_PARAMETERS} per query)"
            )
        return info

    def _classify(self, sql: str) -> _Sql:
        info = self._classified.get(sql)
        if info is None:
            if len(self._classified) >= _CLASSIFY_CACHE_LIMIT:
                self._classified.clear()
            info = self._classified[sql] = _classify(sql)
        return info

    def _transaction(self, alone: bool) -> _Transaction:
        return _Transaction(self, alone)

    def _index_count(self, table: str) -> int:
        """The indexes a row insert or delete in `table` also writes (cached per table)."""
        key = table.lower()
        count = self._index_counts.get(key)
        if count is None:
            conn = self._conn
            row = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                (table,),
            ).fetchone()
            without_rowid = bool(row and row[0] and "WITHOUT ROWID" in row[0].upper())
            count = 0
            for index in conn.execute("SELECT origin FROM pragma_index_list(?)", (table,)):
                # A WITHOUT ROWID table is its primary key's b-tree, not a separate index.
                if not (without_rowid and index[0] == "pk"):
                    count += 1
            self._index_counts[key] = count
        return count

    def _read_size(self) -> int:
        page_count: int = self._conn.execute("PRAGMA page_count").fetchone()[0]
        return page_count * self._page_size


class _Transaction:
    """batch() and exec(): all or nothing.

    Usually a SAVEPOINT inside the group transaction (released on success, rolled back to on
    any error). When a statement must not share a transaction, or nothing else is ready to run
    (`alone`), the group is committed first and this is one IMMEDIATE transaction of its own.
    IMMEDIATE takes the write lock up front, so a second process on the same file waits for it
    (busy timeout) instead of failing when a read would upgrade to a write.
    """

    __slots__ = ("_alone", "_db")

    def __init__(self, db: LocalD1Database, alone: bool) -> None:
        self._db = db
        self._alone = alone

    def __enter__(self) -> None:
        db = self._db
        if self._alone:
            db._commits.commit()
            try:
                db._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise _d1_error(error) from error
        else:
            if not db._commits.pending:
                db._begin_group()
            try:
                db._conn.execute(f"SAVEPOINT {_BATCH_SAVEPOINT}")
            except sqlite3.Error as error:
                raise db._failed(error) from error
        db._batching = True

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        db = self._db
        db._batching = False
        conn = db._conn
        if not self._alone:
            if exc_type is not None:
                if conn.in_transaction:
                    conn.execute(f"ROLLBACK TO {_BATCH_SAVEPOINT}")
                    conn.execute(f"RELEASE {_BATCH_SAVEPOINT}")
                    db._forget_schema()
                elif db._commits.pending:
                    db._group_lost(sqlite3.OperationalError("the batch's transaction was lost"))
                return
            try:
                conn.execute(f"RELEASE {_BATCH_SAVEPOINT}")
            except sqlite3.Error as error:
                raise db._failed(error) from error
            return
        if exc_type is not None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            db._forget_schema()
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _d1_error(error) from error


def _classify(sql: str) -> _Sql:
    words: list[str] = []  # the first few keywords, to find an INSERT/DELETE's table
    names: list[str] = []
    rejection: str | None = None
    rolls_back = False  # `OR ROLLBACK` / `ON CONFLICT ROLLBACK` undo the whole transaction
    for kind, text in sql_tokens(sql):
        if kind == "word" and text.upper() == "ROLLBACK":
            rolls_back = True
        if kind == "param" and text[0] != "?":
            rejection = (
                f"D1_ERROR: named parameter {text} is not supported: D1 binds ordered (?NNN) "
                "and anonymous (?) parameters only"
            )
            break
        if len(words) < 8 and kind in ("word", "quoted", "other"):
            words.append(text.upper() if kind == "word" else text)
            names.append(_unquote(text) if kind == "quoted" else text)
    verb = words[0] if words else ""
    if not verb:
        rejection = "D1_ERROR: No SQL statements detected."
    elif verb in _TRANSACTION_VERBS:
        rejection = _TRANSACTION_MESSAGE
    elif verb in _UNAUTHORIZED_VERBS:
        rejection = "D1_ERROR: not authorized: SQLITE_AUTH"
    table = None
    if verb in ("INSERT", "REPLACE", "DELETE"):
        table = _target_table(words, names, "FROM" if verb == "DELETE" else "INTO")
    if verb in _READ_VERBS:
        mode = _READ
    elif verb in _ALONE_VERBS or rolls_back:
        mode = _ALONE
    else:
        mode = _GROUPED
    return _Sql(
        verb=verb,
        rejection=rejection,
        table=table,
        changes_schema=verb in _SCHEMA_VERBS,
        mode=mode,
    )


def _target_table(words: list[str], names: list[str], keyword: str) -> str | None:
    if keyword not in words:
        return None
    at = words.index(keyword) + 1
    if at >= len(words):
        return None
    if at + 2 < len(words) and words[at + 1] == ".":  # schema.table
        return names[at + 2]
    return names[at]


def _unquote(name: str) -> str:
    if name[0] == "[":
        return name[1:-1]
    quote = name[0]
    return name[1:-1].replace(quote * 2, quote)


def _bind_value(value: Any) -> Any:
    """A value as D1's bind() takes it, or D1's type error."""
    kind = type(value)
    if kind is str or value is None:
        return value
    if kind is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
        return _refuse(value, "bigint")
    if kind is float:
        # Binds travel as JSON, where NaN and the infinities become null.
        return value if math.isfinite(value) else None
    if kind is bool:
        return int(value)  # D1 binds booleans as 1 and 0
    if kind is bytes:
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)  # a copy, as D1 copies typed arrays
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):  # IntEnum and other subclasses
        return _bind_value(int(value))
    if isinstance(value, float):
        return _bind_value(float(value))
    if isinstance(value, str):
        return str(value)
    return _refuse(value, kind.__name__)


def _refuse(value: Any, type_name: str) -> Any:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise D1TypeError(
        f"D1_TYPE_ERROR: Type '{type_name}' not supported for value '{shown}' "
        "(D1 binds None, bool, int within ±(2**53 - 1), float, str and bytes)"
    )


def _js_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row as it reaches Python on the platform, where values cross JavaScript numbers:
    an integral REAL arrives as an int. (Integers beyond 2**53, which the platform hands
    over rounded, stay exact here: checking every int would slow every read.)"""
    if float not in map(type, row):  # the common case, checked at C speed
        return row
    return tuple(
        int(v)
        if type(v) is float and v.is_integer() and -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER
        else v
        for v in row
    )


def disk_error(error: OSError) -> D1Error:
    """A failed sync as D1's callers see it."""
    return D1Error(f"D1_ERROR: disk I/O error: {error}")


def _as_d1_error(error: BaseException) -> BaseException:
    """A failed commit as D1's callers see it (a shared commit fails with SQLite's error)."""
    if isinstance(error, (sqlite3.Error, sqlite3.Warning)):
        return _d1_error(error)
    return error


def _d1_error(error: sqlite3.Error | sqlite3.Warning) -> D1Error:
    message = str(error)
    if message.startswith("Incorrect number of bindings"):
        return D1Error("D1_ERROR: Wrong number of parameter bindings for SQL query.")
    name = getattr(error, "sqlite_errorname", None)
    if name:
        # D1 appends the primary result code: "UNIQUE constraint failed: t.c: SQLITE_CONSTRAINT".
        return D1Error(f"D1_ERROR: {message}: {'_'.join(name.split('_')[:2])}")
    return D1Error(f"D1_ERROR: {message}")


if TYPE_CHECKING:

    def _implements_the_protocol(db: LocalD1Database) -> D1Database:
        return db  # mypy checks that LocalD1Database is a D1Database
