"""The D1 contract on the embedded binding, plus what only the embedded binding has."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from kumofire_jobs.local.d1 import (
    MAX_BOUND_PARAMETERS,
    MAX_VALUE_BYTES,
    D1Error,
    D1TypeError,
    LocalD1Database,
    LocalD1Meta,
)

from .d1_contract import D1Contract, ReopenD1, count, make_people


@pytest.fixture
def d1_path(tmp_path: Path) -> Path:
    return tmp_path / "d1.sqlite"


@pytest.fixture
def _handles() -> Iterator[list[LocalD1Database]]:
    handles: list[LocalD1Database] = []
    yield handles
    for handle in handles:
        handle.close()


@pytest.fixture
def d1(d1_path: Path, _handles: list[LocalD1Database]) -> LocalD1Database:
    db = LocalD1Database(d1_path)
    _handles.append(db)
    return db


@pytest.fixture
def reopen_d1(d1: LocalD1Database, d1_path: Path, _handles: list[LocalD1Database]) -> ReopenD1:
    async def reopen() -> LocalD1Database:
        d1.close()
        db = LocalD1Database(d1_path)
        _handles.append(db)
        return db

    return reopen


class TestLocalD1(D1Contract):
    pass


# --- the embedded binding's own behaviour ---------------------------------------------------


def pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


async def test_file_databases_use_wal_and_enforce_foreign_keys(d1: LocalD1Database) -> None:
    assert await d1.prepare("PRAGMA journal_mode").first("journal_mode") == "wal"
    assert await d1.prepare("PRAGMA foreign_keys").first("foreign_keys") == 1
    assert await d1.prepare("PRAGMA synchronous").first("synchronous") == 1  # NORMAL


async def test_synchronous_is_configurable(tmp_path: Path) -> None:
    db = LocalD1Database(tmp_path / "full.sqlite", synchronous="full")
    try:
        assert await db.prepare("PRAGMA synchronous").first("synchronous") == 2  # FULL
    finally:
        db.close()
    with pytest.raises(ValueError, match="synchronous"):
        LocalD1Database(tmp_path / "x.sqlite", synchronous="FAST; DROP TABLE x")


async def test_in_memory_database() -> None:
    db = LocalD1Database(":memory:")
    try:
        await make_people(db)
        await db.prepare("INSERT INTO people (name) VALUES ('ada')").run()
        assert await db.prepare("SELECT name FROM people").first("name") == "ada"
    finally:
        db.close()


async def test_errors_are_d1_errors_with_the_primary_result_code(d1: LocalD1Database) -> None:
    await make_people(d1)
    await d1.prepare("INSERT INTO people (name) VALUES ('ada')").run()
    with pytest.raises(D1Error) as caught:
        await d1.prepare("INSERT INTO people (name) VALUES ('ada')").run()
    assert str(caught.value) == "D1_ERROR: UNIQUE constraint failed: people.name: SQLITE_CONSTRAINT"
    with pytest.raises(D1Error, match="D1_ERROR: no such table: nope: SQLITE_ERROR"):
        await d1.prepare("SELECT * FROM nope").all()


async def test_bind_type_errors_are_type_errors_raised_at_bind(d1: LocalD1Database) -> None:
    statement = d1.prepare("SELECT ? AS v")
    with pytest.raises(D1TypeError) as caught:
        statement.bind({"a": 1})
    assert isinstance(caught.value, TypeError)
    assert isinstance(caught.value, D1Error)
    assert "Type 'dict' not supported for value" in str(caught.value)
    with pytest.raises(TypeError, match="Type 'bigint'"):
        statement.bind(2**53)


async def test_non_finite_floats_bind_as_null(d1: LocalD1Database) -> None:
    # On the platform binds travel as JSON, where NaN and the infinities are null.
    statement = d1.prepare("SELECT ? AS v")
    for value in (float("nan"), float("inf"), float("-inf")):
        assert await statement.bind(value).first("v") is None


async def test_bytearray_binds_are_copied(d1: LocalD1Database) -> None:
    data = bytearray(b"abc")
    statement = d1.prepare("SELECT ? AS v").bind(data)
    data[0] = ord("z")
    assert await statement.first("v") == b"abc"


async def test_named_parameters_are_refused(d1: LocalD1Database) -> None:
    for sql in ("SELECT :name AS v", "SELECT @name AS v", "SELECT $name AS v"):
        with pytest.raises(D1Error, match="named parameter"):
            await d1.prepare(sql).bind(1).first()
    # ...but not what only looks like one, inside a string
    assert await d1.prepare("SELECT ':name' AS v").first("v") == ":name"


async def test_attach_is_not_authorized(d1: LocalD1Database, tmp_path: Path) -> None:
    with pytest.raises(D1Error, match="not authorized"):
        await d1.prepare(f"ATTACH DATABASE '{tmp_path / 'other.sqlite'}' AS other").run()


async def test_limit_constants_and_value_size(d1: LocalD1Database) -> None:
    assert MAX_BOUND_PARAMETERS == 100
    await d1.prepare("SELECT length(?) AS n").bind("x" * MAX_VALUE_BYTES).first()
    with pytest.raises(D1Error, match="too big"):
        await d1.prepare("SELECT ? AS v").bind("x" * (MAX_VALUE_BYTES + 1)).first()


async def test_rows_written_counts_index_entries(d1: LocalD1Database) -> None:
    await d1.exec(
        "CREATE TABLE plain (id INTEGER PRIMARY KEY, v TEXT);\n"
        "CREATE TABLE indexed (id TEXT PRIMARY KEY, a TEXT UNIQUE, b TEXT) WITHOUT ROWID;\n"
        "CREATE INDEX indexed_b ON indexed (b);"
    )
    plain = await d1.prepare("INSERT INTO plain (v) VALUES ('x')").run()
    assert plain.meta.rows_written == 1
    # the row (the primary key b-tree of a WITHOUT ROWID table) plus two indexes
    indexed = await d1.prepare("INSERT INTO indexed VALUES ('1', 'a', 'b'), ('2', 'c', 'd')").run()
    assert indexed.meta.changes == 2
    assert indexed.meta.rows_written == 6
    deleted = await d1.prepare("DELETE FROM main.indexed WHERE id = '1'").run()
    assert deleted.meta.rows_written == 3
    # the per-table cache follows schema changes
    await d1.prepare("DROP INDEX indexed_b").run()
    again = await d1.prepare("INSERT INTO \"indexed\" VALUES ('3', 'e', 'f')").run()
    assert again.meta.rows_written == 2


async def test_meta_also_answers_item_access(d1: LocalD1Database) -> None:
    result = await d1.prepare("SELECT 1 AS one").all()
    assert isinstance(result.meta, LocalD1Meta)
    assert result["results"] == [{"one": 1}]
    assert result["meta"]["changes"] == 0
    with pytest.raises(KeyError):
        result.meta["nope"]


async def test_size_after_grows_with_data(d1: LocalD1Database) -> None:
    await make_people(d1)
    before = (await d1.prepare("SELECT 1").all()).meta.size_after  # type: ignore[attr-defined]
    insert = d1.prepare("INSERT INTO people (name) VALUES (?)")
    results = await d1.batch([insert.bind(f"person-{i}-" + "x" * 500) for i in range(50)])
    assert results[-1].meta.size_after > before  # type: ignore[attr-defined]


async def test_batch_takes_only_its_own_statements(tmp_path: Path, d1: LocalD1Database) -> None:
    other = LocalD1Database(tmp_path / "other.sqlite")
    try:
        with pytest.raises(TypeError, match="prepared on this database"):
            await d1.batch([other.prepare("SELECT 1")])
    finally:
        other.close()


async def test_a_second_handle_sees_committed_writes(d1: LocalD1Database, d1_path: Path) -> None:
    await make_people(d1)
    other = LocalD1Database(d1_path)
    try:
        await d1.prepare("INSERT INTO people (name) VALUES ('ada')").run()
        assert await other.prepare("SELECT name FROM people").first("name") == "ada"
        await other.batch([other.prepare("INSERT INTO people (name) VALUES ('alan')")])
        assert await d1.prepare("SELECT count(*) AS n FROM people").first("n") == 2
    finally:
        other.close()


async def test_reads_and_writes_are_quick(d1: LocalD1Database) -> None:
    # A smoke check on the per-query overhead, generous enough for a slow CI machine.
    import time

    await make_people(d1)
    insert = d1.prepare("INSERT INTO people (name, age) VALUES (?, ?)")
    select = d1.prepare("SELECT id, name, age FROM people WHERE name = ?")
    started = time.perf_counter()
    for i in range(2000):
        await insert.bind(f"p{i}", i).run()
        await select.bind(f"p{i}").first()
    elapsed = time.perf_counter() - started
    assert elapsed < 5, f"4,000 queries took {elapsed:.2f}s"


# --- group commit ------------------------------------------------------------------------------


def committed_names(path: Path) -> list[str]:
    """The people rows as committed on disk, read through a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT name FROM people ORDER BY name")]
    finally:
        conn.close()


async def test_an_acknowledged_write_is_durable(d1: LocalD1Database, d1_path: Path) -> None:
    await make_people(d1)
    insert = d1.prepare("INSERT INTO people (name) VALUES (?)")
    on_disk_when_answered: list[list[str]] = []
    calls = [asyncio.ensure_future(insert.bind(name).run()) for name in ("ada", "alan")]
    for call in calls:
        call.add_done_callback(lambda _: on_disk_when_answered.append(committed_names(d1_path)))
    await asyncio.gather(*calls)
    assert on_disk_when_answered == [["ada", "alan"], ["ada", "alan"]]


async def test_concurrent_writes_share_one_commit(d1: LocalD1Database) -> None:
    await make_people(d1)
    statements: list[str] = []
    d1._conn.set_trace_callback(statements.append)
    insert = d1.prepare("INSERT INTO people (name) VALUES (?)")
    await asyncio.gather(*(insert.bind(f"p{i}").run() for i in range(20)))
    d1._conn.set_trace_callback(None)
    assert statements.count("COMMIT") == 1
    assert await count(d1, "people") == 20


async def test_a_failing_statement_fails_alone_among_concurrent_ones(
    d1: LocalD1Database, d1_path: Path
) -> None:
    await make_people(d1)
    insert = d1.prepare("INSERT INTO people (name) VALUES (?)")
    results = await asyncio.gather(
        insert.bind("ada").run(),
        insert.bind("ada").run(),  # UNIQUE: fails, alone
        insert.bind("alan").run(),
        d1.prepare("INSERT OR ROLLBACK INTO people (name) VALUES ('alan')").run(),
        insert.bind("grace").run(),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, Exception)]
    assert len(failures) == 2
    assert all("UNIQUE constraint failed" in str(f) for f in failures)
    assert committed_names(d1_path) == ["ada", "alan", "grace"]


async def test_a_failing_batch_applies_nothing_among_concurrent_writes(
    d1: LocalD1Database, d1_path: Path
) -> None:
    await make_people(d1)
    insert = d1.prepare("INSERT INTO people (name) VALUES (?)")
    results = await asyncio.gather(
        insert.bind("ada").run(),
        d1.batch([insert.bind("alan"), insert.bind("ada")]),  # fails: alan rolls back
        d1.batch([insert.bind("grace"), insert.bind("edsger")]),
        insert.bind("barbara").run(),
        return_exceptions=True,
    )
    assert isinstance(results[1], D1Error)
    assert not any(isinstance(r, Exception) for i, r in enumerate(results) if i != 1)
    assert committed_names(d1_path) == ["ada", "barbara", "edsger", "grace"]


async def test_a_schema_that_can_roll_back_a_transaction_commits_writes_alone(
    d1: LocalD1Database, d1_path: Path
) -> None:
    await d1.prepare(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT UNIQUE ON CONFLICT ROLLBACK)"
    ).run()
    insert = d1.prepare("INSERT INTO people (name) VALUES (?)")
    results = await asyncio.gather(
        insert.bind("ada").run(),
        insert.bind("ada").run(),  # rolls back its transaction: which must hold nothing else
        insert.bind("alan").run(),
        return_exceptions=True,
    )
    assert [isinstance(r, Exception) for r in results] == [False, True, False]
    assert committed_names(d1_path) == ["ada", "alan"]


async def test_a_read_with_no_write_pending_answers_at_once(d1: LocalD1Database) -> None:
    await make_people(d1)
    read = d1.prepare("SELECT count(*) AS n FROM people").first("n")
    with pytest.raises(StopIteration) as done:
        read.send(None)  # completes without yielding to the event loop
    assert done.value.value == 0


async def test_close_commits_what_is_pending(d1_path: Path) -> None:
    db = LocalD1Database(d1_path)
    await make_people(db)
    pending = asyncio.ensure_future(db.prepare("INSERT INTO people (name) VALUES ('ada')").run())
    await asyncio.sleep(0)  # the statement ran; its commit waits for the end of the turn
    db.close()
    assert committed_names(d1_path) == ["ada"]
    assert (await pending).success
