"""The D1 contract: D1's documented behaviour, as any `D1Database` implementation must show it.

Subclass `D1Contract` in a test module and provide two fixtures:

- `d1`: a fresh, empty database (a `D1Database`);
- `reopen_d1`: an async callable that closes the `d1` handle and returns a new handle on the
  same database (the persistence test uses it; an implementation without a notion of
  closing may return the same handle).

Errors are checked by message only (D1's `D1_ERROR: ...` texts), because on the platform
they arrive as JavaScript errors whose types do not survive.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kumofire_jobs.core.bindings import D1Database

ReopenD1 = Callable[[], Awaitable[D1Database]]

META_FIELDS = (
    "changes",
    "last_row_id",
    "rows_read",
    "rows_written",
    "duration",
    "changed_db",
    "size_after",
)


async def make_people(d1: D1Database) -> None:
    await d1.prepare(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, age INTEGER)"
    ).run()


async def count(d1: D1Database, table: str) -> int:
    return int(await d1.prepare(f"SELECT count(*) AS n FROM {table}").first("n"))


class D1Contract:
    """D1's behaviour. Test methods take the `d1` fixture; see the module docstring."""

    # --- shapes -----------------------------------------------------------------------------

    async def test_run_returns_a_result_with_success_and_meta(self, d1: D1Database) -> None:
        await make_people(d1)
        result = (
            await d1.prepare("INSERT INTO people (name, age) VALUES (?, ?)").bind("ada", 36).run()
        )
        assert result.success is True
        assert result.results == []
        meta: Any = result.meta
        for name in META_FIELDS:
            assert hasattr(meta, name), name
        assert meta.changes == 1
        assert meta.last_row_id == 1
        assert meta.rows_written >= 1
        assert meta.changed_db is True
        assert isinstance(meta.duration, int | float)
        assert meta.duration >= 0
        assert isinstance(meta.size_after, int)
        assert meta.size_after > 0

    async def test_all_returns_rows_as_dicts_by_column_name(self, d1: D1Database) -> None:
        await make_people(d1)
        insert = d1.prepare("INSERT INTO people (name, age) VALUES (?, ?)")
        await d1.batch(
            [insert.bind("ada", 36), insert.bind("alan", 41), insert.bind("grace", None)]
        )
        result = await d1.prepare("SELECT id, name, age FROM people ORDER BY id").all()
        assert result.success is True
        assert result.results == [
            {"id": 1, "name": "ada", "age": 36},
            {"id": 2, "name": "alan", "age": 41},
            {"id": 3, "name": "grace", "age": None},
        ]
        assert result.meta.changes == 0
        assert result.meta.rows_read >= 3
        assert result.meta.rows_written == 0

    async def test_all_on_no_rows_is_an_empty_list(self, d1: D1Database) -> None:
        await make_people(d1)
        result = await d1.prepare("SELECT * FROM people").all()
        assert result.results == []

    async def test_update_reports_the_rows_it_changed(self, d1: D1Database) -> None:
        await make_people(d1)
        insert = d1.prepare("INSERT INTO people (name, age) VALUES (?, ?)")
        await d1.batch([insert.bind("ada", 36), insert.bind("alan", 41), insert.bind("grace", 85)])
        result = await d1.prepare("UPDATE people SET age = age + 1 WHERE age < ?").bind(50).run()
        meta: Any = result.meta
        assert meta.changes == 2
        assert meta.rows_written >= 2
        assert meta.changed_db is True
        nothing: Any = (await d1.prepare("UPDATE people SET age = 0 WHERE name = 'x'").run()).meta
        assert nothing.changes == 0
        assert nothing.changed_db is False

    async def test_first_returns_the_first_row_or_none(self, d1: D1Database) -> None:
        await make_people(d1)
        assert await d1.prepare("SELECT * FROM people").first() is None
        await d1.prepare("INSERT INTO people (name, age) VALUES ('ada', 36), ('alan', 41)").run()
        row = await d1.prepare("SELECT name, age FROM people ORDER BY id").first()
        assert row == {"name": "ada", "age": 36}

    async def test_first_with_a_column_returns_that_value(self, d1: D1Database) -> None:
        await make_people(d1)
        await d1.prepare("INSERT INTO people (name, age) VALUES ('ada', NULL)").run()
        statement = d1.prepare("SELECT name, age FROM people WHERE name = ?")
        assert await statement.bind("ada").first("name") == "ada"
        assert await statement.bind("ada").first("age") is None  # NULL is a value, not missing
        assert await statement.bind("nobody").first("name") is None  # no row: null, no error

    async def test_first_with_an_unknown_column_fails(self, d1: D1Database) -> None:
        with pytest.raises(Exception, match=r"D1_COLUMN_NOTFOUND: Column not found \(nope\)"):
            await d1.prepare("SELECT 1 AS one").first("nope")

    async def test_raw_returns_lists_with_optional_column_names(self, d1: D1Database) -> None:
        await make_people(d1)
        await d1.prepare("INSERT INTO people (name, age) VALUES ('ada', 36), ('alan', 41)").run()
        statement = d1.prepare("SELECT name, age FROM people ORDER BY id")
        assert await statement.raw() == [["ada", 36], ["alan", 41]]
        assert await statement.raw({"columnNames": True}) == [
            ["name", "age"],
            ["ada", 36],
            ["alan", 41],
        ]
        assert await statement.raw({"columnNames": False}) == [["ada", 36], ["alan", 41]]
        empty = d1.prepare("SELECT name, age FROM people WHERE 0")
        assert await empty.raw() == []
        assert await empty.raw({"columnNames": True}) == [["name", "age"]]

    async def test_raw_keeps_duplicate_column_names(self, d1: D1Database) -> None:
        assert await d1.prepare("SELECT 1 AS a, 2 AS a").raw({"columnNames": True}) == [
            ["a", "a"],
            [1, 2],
        ]

    async def test_raw_refuses_unknown_options(self, d1: D1Database) -> None:
        with pytest.raises(TypeError, match="columnNames"):
            await d1.prepare("SELECT 1").raw({"column_names": True})

    async def test_returning_rows_come_back_from_run_all_and_first(self, d1: D1Database) -> None:
        await make_people(d1)
        ran = (
            await d1.prepare("INSERT INTO people (name) VALUES (?) RETURNING id, name")
            .bind("ada")
            .run()
        )
        assert ran.results == [{"id": 1, "name": "ada"}]
        assert ran.meta.changes == 1
        listed = await (
            d1.prepare("INSERT INTO people (name) VALUES (?), (?) RETURNING id")
            .bind("b", "c")
            .all()
        )
        assert listed.results == [{"id": 2}, {"id": 3}]
        first = (
            await d1.prepare("UPDATE people SET age = 7 WHERE id = ? RETURNING age").bind(2).first()
        )
        assert first == {"age": 7}
        assert await count(d1, "people") == 3

    async def test_first_runs_a_write_without_returning(self, d1: D1Database) -> None:
        await make_people(d1)
        assert await d1.prepare("INSERT INTO people (name) VALUES ('ada')").first() is None
        assert await count(d1, "people") == 1

    # --- binding ----------------------------------------------------------------------------

    async def test_bind_returns_a_new_statement(self, d1: D1Database) -> None:
        statement = d1.prepare("SELECT ? AS v")
        one = statement.bind(1)
        two = statement.bind(2)
        assert await one.first("v") == 1
        assert await two.first("v") == 2
        assert await one.first("v") == 1  # binding `two` changed nothing in `one`
        with pytest.raises(Exception, match="Wrong number of parameter bindings"):
            await statement.first()  # the prepared statement itself stays unbound

    async def test_binds_values_of_the_supported_types(self, d1: D1Database) -> None:
        await d1.prepare("CREATE TABLE v (a, b, c, d, e, f, g, h)").run()
        await (
            d1.prepare("INSERT INTO v VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(None, True, False, 42, 2.5, "text", b"\x00\xff", -(2**53 - 1))
            .run()
        )
        row = await d1.prepare("SELECT * FROM v").first()
        assert row == {
            "a": None,
            "b": 1,  # booleans bind as 1 and 0
            "c": 0,
            "d": 42,
            "e": 2.5,
            "f": "text",
            "g": b"\x00\xff",
            "h": -(2**53 - 1),
        }
        types = await d1.prepare(
            "SELECT typeof(a) a, typeof(b) b, typeof(d) d, typeof(e) e, typeof(f) f, typeof(g) g "
            "FROM v"
        ).first()
        assert types == {
            "a": "null",
            "b": "integer",
            "d": "integer",
            "e": "real",
            "f": "text",
            "g": "blob",
        }

    async def test_binds_bytes_like_values_as_blobs(self, d1: D1Database) -> None:
        statement = d1.prepare("SELECT typeof(?) AS t, length(?) AS n")
        for value in (b"abc", bytearray(b"abc"), memoryview(b"abc")):
            assert await statement.bind(value, value).first() == {"t": "blob", "n": 3}

    async def test_numbers_come_back_as_javascript_numbers_reach_python(
        self, d1: D1Database
    ) -> None:
        # Values cross a JavaScript number on the platform: an integral REAL is an int there.
        row = await d1.prepare("SELECT 2.0 AS whole, 2.5 AS half, typeof(2.0) AS t").first()
        assert row == {"whole": 2, "half": 2.5, "t": "real"}
        assert type(row["whole"]) is int

    @pytest.mark.parametrize(
        "value",
        [
            {"a": 1},
            [1, 2],
            datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC),
            object(),
            2**53,
            -(2**63),
        ],
        ids=["dict", "list", "datetime", "object", "2**53", "int64-min"],
    )
    async def test_refuses_unsupported_bind_types(self, d1: D1Database, value: object) -> None:
        with pytest.raises(Exception, match=r"D1_TYPE_ERROR: Type '.+' not supported for value"):
            await d1.prepare("SELECT ? AS v").bind(value).first()

    async def test_takes_up_to_100_bound_parameters(self, d1: D1Database) -> None:
        placeholders = ", ".join("?" for _ in range(100))
        row = await d1.prepare(f"SELECT {placeholders}").bind(*range(100)).raw()
        assert row == [list(range(100))]

    async def test_refuses_101_bound_parameters(self, d1: D1Database) -> None:
        placeholders = ", ".join("?" for _ in range(101))
        with pytest.raises(Exception, match="too many SQL variables"):
            await d1.prepare(f"SELECT {placeholders}").bind(*range(101)).all()

    async def test_refuses_a_wrong_number_of_binds(self, d1: D1Database) -> None:
        with pytest.raises(Exception, match="Wrong number of parameter bindings"):
            await d1.prepare("SELECT ? AS a, ? AS b").bind(1).first()
        with pytest.raises(Exception, match="Wrong number of parameter bindings"):
            await d1.prepare("SELECT ? AS a").bind(1, 2).first()

    async def test_ordered_parameters(self, d1: D1Database) -> None:
        row = await d1.prepare("SELECT ?2 AS b, ?1 AS a, ?2 AS again").bind("x", "y").first()
        assert row == {"b": "y", "a": "x", "again": "y"}

    # --- constraints ------------------------------------------------------------------------

    async def test_unique_violation_names_the_constraint(self, d1: D1Database) -> None:
        await make_people(d1)
        insert = d1.prepare("INSERT INTO people (name) VALUES (?)")
        await insert.bind("ada").run()
        with pytest.raises(Exception, match=r"D1_ERROR: UNIQUE constraint failed: people\.name"):
            await insert.bind("ada").run()
        assert await count(d1, "people") == 1

    async def test_check_constraint_is_enforced(self, d1: D1Database) -> None:
        await d1.prepare("CREATE TABLE c (n INTEGER CHECK (n >= 0))").run()
        with pytest.raises(Exception, match="CHECK constraint failed"):
            await d1.prepare("INSERT INTO c VALUES (-1)").run()

    async def test_foreign_keys_are_enforced(self, d1: D1Database) -> None:
        await d1.batch(
            [
                d1.prepare("CREATE TABLE parent (id INTEGER PRIMARY KEY)"),
                d1.prepare(
                    "CREATE TABLE child (id INTEGER PRIMARY KEY, "
                    "parent_id INTEGER NOT NULL REFERENCES parent (id) ON DELETE CASCADE)"
                ),
            ]
        )
        with pytest.raises(Exception, match="FOREIGN KEY constraint failed"):
            await d1.prepare("INSERT INTO child (parent_id) VALUES (1)").run()
        await d1.prepare("INSERT INTO parent (id) VALUES (1)").run()
        await d1.prepare("INSERT INTO child (parent_id) VALUES (1)").run()
        await d1.prepare("DELETE FROM parent WHERE id = 1").run()
        assert await count(d1, "child") == 0  # cascaded

    # --- transactions -----------------------------------------------------------------------

    async def test_batch_returns_one_result_per_statement(self, d1: D1Database) -> None:
        await make_people(d1)
        results = await d1.batch(
            [
                d1.prepare("INSERT INTO people (name) VALUES (?)").bind("ada"),
                d1.prepare("INSERT INTO people (name) VALUES (?) RETURNING id").bind("alan"),
                d1.prepare("SELECT name FROM people ORDER BY id"),
                d1.prepare("UPDATE people SET age = 1"),
            ]
        )
        assert len(results) == 4
        assert all(r.success for r in results)
        assert results[0].results == []
        assert results[0].meta.changes == 1
        assert results[1].results == [{"id": 2}]
        assert results[2].results == [{"name": "ada"}, {"name": "alan"}]
        assert results[3].meta.changes == 2

    async def test_batch_is_atomic(self, d1: D1Database) -> None:
        await make_people(d1)
        insert = d1.prepare("INSERT INTO people (name) VALUES (?)")
        with pytest.raises(Exception, match="UNIQUE constraint failed"):
            await d1.batch(
                [
                    insert.bind("ada"),
                    d1.prepare("CREATE TABLE made_in_the_batch (x)"),
                    insert.bind("alan"),
                    insert.bind("ada"),  # fails: everything before it rolls back
                    insert.bind("grace"),
                ]
            )
        assert await count(d1, "people") == 0
        missing = await d1.prepare(
            "SELECT name FROM sqlite_master WHERE name = 'made_in_the_batch'"
        ).first()
        assert missing is None
        # and the database takes writes afterwards
        await d1.batch([insert.bind("ada"), insert.bind("alan")])
        assert await count(d1, "people") == 2

    async def test_empty_batch_fails(self, d1: D1Database) -> None:
        with pytest.raises(Exception, match="No SQL statements detected"):
            await d1.batch([])

    @pytest.mark.parametrize(
        "sql",
        [
            "BEGIN",
            "BEGIN TRANSACTION",
            "begin immediate",
            "COMMIT",
            "END",
            "ROLLBACK",
            "SAVEPOINT sp",
            "RELEASE sp",
            "ROLLBACK TO sp",
            "/* sneaky */ BEGIN",
        ],
    )
    async def test_refuses_sql_transaction_statements(self, d1: D1Database, sql: str) -> None:
        with pytest.raises(Exception, match=r"D1_ERROR: To execute a transaction"):
            await d1.prepare(sql).run()

    async def test_a_transaction_statement_in_a_batch_applies_nothing(self, d1: D1Database) -> None:
        await make_people(d1)
        with pytest.raises(Exception, match="To execute a transaction"):
            await d1.batch(
                [
                    d1.prepare("INSERT INTO people (name) VALUES ('ada')"),
                    d1.prepare("SAVEPOINT sp"),
                ]
            )
        assert await count(d1, "people") == 0

    # --- exec -------------------------------------------------------------------------------

    async def test_exec_runs_statements_line_by_line(self, d1: D1Database) -> None:
        result = await d1.exec(
            "CREATE TABLE e (x INTEGER);\n"
            "INSERT INTO e VALUES (1); INSERT INTO e VALUES (2);\n"
            "\n"
            "INSERT INTO e VALUES (3)\n"
        )
        assert result.count == 3
        assert result.duration >= 0
        assert await count(d1, "e") == 3

    async def test_exec_reports_the_failing_line(self, d1: D1Database) -> None:
        await d1.exec("CREATE TABLE e (x INTEGER UNIQUE)")
        with pytest.raises(Exception, match=r"D1_EXEC_ERROR: Error in line 2: .*UNIQUE"):
            await d1.exec("INSERT INTO e VALUES (1)\nINSERT INTO e VALUES (1)")

    async def test_exec_takes_one_line_per_statement(self, d1: D1Database) -> None:
        # D1 sends each line as a query of its own: a statement cannot span lines.
        with pytest.raises(Exception, match=r"D1_EXEC_ERROR: Error in line 1: CREATE TABLE e \("):
            await d1.exec("CREATE TABLE e (\n  x INTEGER\n)")

    async def test_empty_sql_fails(self, d1: D1Database) -> None:
        for sql in ("", "   ", "-- just a comment"):
            with pytest.raises(Exception, match="No SQL statements detected"):
                await d1.prepare(sql).all()

    async def test_exec_refuses_transaction_statements(self, d1: D1Database) -> None:
        with pytest.raises(Exception, match="To execute a transaction"):
            await d1.exec("BEGIN;\nCREATE TABLE e (x);\nCOMMIT;")

    # --- durability -------------------------------------------------------------------------

    async def test_data_persists_across_close_and_reopen(
        self, d1: D1Database, reopen_d1: ReopenD1
    ) -> None:
        await make_people(d1)
        await d1.batch(
            [
                d1.prepare("INSERT INTO people (name, age) VALUES (?, ?)").bind("ada", 36),
                d1.prepare("INSERT INTO people (name, age) VALUES (?, ?)").bind("alan", 41),
            ]
        )
        reopened = await reopen_d1()
        rows = await reopened.prepare("SELECT name, age FROM people ORDER BY id").all()
        assert rows.results == [{"name": "ada", "age": 36}, {"name": "alan", "age": 41}]
        with pytest.raises(Exception, match="FOREIGN KEY constraint failed"):
            # foreign keys are still enforced on the new handle
            await reopened.batch(
                [
                    reopened.prepare("CREATE TABLE pet (owner INTEGER REFERENCES people (id))"),
                    reopened.prepare("INSERT INTO pet VALUES (99)"),
                ]
            )
