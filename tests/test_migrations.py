"""The migrator: the schema it produces, its bookkeeping, and its interop with wrangler."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from kumofire_jobs.core.bindings import D1Database
from kumofire_jobs.core.history import attempts_from_json, log_lines_from_json
from kumofire_jobs.core.migrations import (
    SCHEMA_VERSION,
    Migration,
    MigrationError,
    SchemaOutdatedError,
    apply_migrations,
    check_schema,
    default_migrations_dir,
    discover_migrations,
    pending_migrations,
    schema_version,
    split_sql,
)
from kumofire_jobs.core.run_rows import RunRow, row_to_run
from kumofire_jobs.local.d1 import LocalD1Database

REPO = Path(__file__).resolve().parent.parent
REPO_MIGRATIONS = REPO / "migrations"
WRANGLER = REPO / "node_modules" / ".bin" / "wrangler"

JOB_RUN_COLUMNS = [
    "id",
    "name",
    "status",
    "payload",
    "attempt",
    "max_attempts",
    "scheduled_for",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "last_error",
    "dedupe_key",
    "schedule_id",
    "occurrence_key",
    "lease_token",
    "priority",
    "concurrency_key",
    "dedupe_expires_at",
    "timeout",
    "attempts",
    "logs",
    "progress",
    "result",
    "parent_id",
    "child_count",
]


@pytest.fixture
def _handles() -> Iterator[list[LocalD1Database]]:
    handles: list[LocalD1Database] = []
    yield handles
    for handle in handles:
        handle.close()


@pytest.fixture
def open_db(_handles: list[LocalD1Database]) -> Any:
    def open_(path: Path) -> LocalD1Database:
        db = LocalD1Database(path)
        _handles.append(db)
        return db

    return open_


@pytest.fixture
def db(tmp_path: Path, open_db: Any) -> LocalD1Database:
    db: LocalD1Database = open_db(tmp_path / "d1.sqlite")
    return db


async def schema(db: D1Database) -> list[dict[str, Any]]:
    """sqlite_master without the Durable Object's own tables (miniflare's `_cf_*`)."""
    result = await db.prepare(
        "SELECT type, name, tbl_name, sql FROM sqlite_master "
        "WHERE substr(name, 1, 4) != '_cf_' ORDER BY type, name"
    ).all()
    return result.results


async def recorded(db: D1Database) -> list[dict[str, Any]]:
    return (
        await db.prepare("SELECT id, name, applied_at FROM d1_migrations ORDER BY id").all()
    ).results


def write(directory: Path, name: str, sql: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(sql, encoding="utf-8")
    return path


SHIPPED = [p.name for p in sorted(REPO_MIGRATIONS.glob("*.sql"))]
SCHEDULE_COLUMNS = [
    "id", "key", "name", "type", "expr", "timezone", "enabled", "payload", "max_attempts",
    "revision", "anchor_at", "next_run_at", "next_run_id", "last_scheduled_at", "created_at",
    "updated_at", "occurrence_limit", "occurrence_count", "start_at", "end_at", "priority",
    "concurrency_key",
]  # fmt: skip


# --- the schema ---------------------------------------------------------------------------


async def test_apply_produces_the_schema_the_code_expects(db: LocalD1Database) -> None:
    applied = await apply_migrations(db)
    assert [m.name for m in applied] == [p.name for p in sorted(REPO_MIGRATIONS.glob("*.sql"))]
    columns = await db.prepare("SELECT name FROM pragma_table_info('kumofire_job_runs')").all()
    assert [c["name"] for c in columns.results] == JOB_RUN_COLUMNS
    indexes = await db.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'kumofire_job_runs'"
    ).all()
    assert {i["name"] for i in indexes.results} == {
        "kumofire_job_runs_dedupe_key",
        "kumofire_job_runs_schedule_occurrence",
        "kumofire_job_runs_unfinished",
        "kumofire_job_runs_parent",
    }
    columns = await db.prepare("SELECT name FROM pragma_table_info('kumofire_job_schedules')").all()
    assert [c["name"] for c in columns.results] == SCHEDULE_COLUMNS
    indexes = await db.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'index' "
        "AND tbl_name = 'kumofire_job_schedules' AND sql IS NOT NULL"
    ).all()
    assert {i["name"] for i in indexes.results} == {"kumofire_job_schedules_key"}
    columns = await db.prepare("SELECT name FROM pragma_table_info('kumofire_jobs')").all()
    assert [c["name"] for c in columns.results] == ["name", "paused", "updated_at"]


async def test_the_status_check_rejects_an_unknown_status(db: LocalD1Database) -> None:
    await apply_migrations(db)
    insert = db.prepare(
        "INSERT INTO kumofire_job_runs (id, name, status, max_attempts, scheduled_for, "
        "created_at, updated_at) VALUES (?, 'job', ?, 3, 0, 0, 0)"
    )
    for status in ("waiting", "scheduled", "queued", "running", "succeeded", "failed", "canceled"):
        await insert.bind(f"run-{status}", status).run()
    with pytest.raises(Exception, match="CHECK constraint failed"):
        await insert.bind("run-bogus", "bogus").run()


async def test_run_and_schedule_priorities_are_checked(db: LocalD1Database) -> None:
    await apply_migrations(db)
    insert = (
        "INSERT INTO kumofire_job_runs (id, name, status, max_attempts, scheduled_for, "
        "created_at, updated_at, priority) VALUES (?, 'job', 'scheduled', 1, 0, 0, 0, ?)"
    )
    await db.prepare(insert).bind("run_a", 100).run()
    await db.prepare(insert).bind("run_b", -100).run()
    for bad in (101, -101):
        with pytest.raises(Exception, match="CHECK"):
            await db.prepare(insert).bind(f"run_{bad}", bad).run()
    row = await db.prepare(
        "INSERT INTO kumofire_job_runs (id, name, status, max_attempts, scheduled_for, "
        "created_at, updated_at) VALUES ('run_c', 'job', 'scheduled', 1, 0, 0, 0) "
        "RETURNING priority, concurrency_key, dedupe_expires_at, timeout"
    ).first()
    assert row == {"priority": 0, "concurrency_key": None, "dedupe_expires_at": None,
                   "timeout": None}  # fmt: skip


# Rows of an older database, by column up to `timeout` (version 4), then the history columns
# of version 5 (`attempts`, `logs`, `progress`, `result`).
_V4_ROWS: list[list[Any]] = [
    ["run_a", "job", "succeeded", '{"n":1}', 1, 3, 10, 1, 2, 5, 6, None, "key-a", None,
     None, 7, 0, None, None, None],
    ["run_b", "job", "running", None, 2, 5, 20, 2, 3, 15, None, "boom", None, "sch_1",
     "1:20", 9, -5, "tenant", 99, 30.5],
    ["run_c", "other", "scheduled", "[]", 0, 1, 30, 3, 3, None, None, None, "key-c", None,
     None, None, 100, None, 1234, None],
]  # fmt: skip
_V5_HISTORY: list[list[Any]] = [
    ['[{"attempt":1,"started_at":5,"finished_at":6,"duration_ms":1,"outcome":"succeeded",'
     '"error":null}]', '[{"at":5,"attempt":1,"level":"info","event":"hi","fields":{"k":1}}]',
     '{"done":3}', '{"total":42}'],
    ['[{"attempt":1,"started_at":10,"finished_at":14,"duration_ms":4,"outcome":"retried",'
     '"error":"Traceback ...\\nValueError: boom"}]', None, '0.5', None],
    [None, None, None, None],
]  # fmt: skip


@pytest.mark.parametrize("version", [4, 5])
async def test_the_flows_migration_keeps_every_row_and_index_of_an_older_version(
    db: LocalD1Database, tmp_path: Path, version: int
) -> None:
    """Upgrading a version 4 or 5 database: the runs table is rebuilt for its new CHECK, and
    every row, column value (the history of version 5 too) and index comes through (the
    indexes still enforce what they did)."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    for path in sorted(REPO_MIGRATIONS.glob("*.sql")):
        if int(path.name.split("_")[0]) <= version:
            shutil.copy(path, directory / path.name)
    await apply_migrations(db, directory)
    assert await schema_version(db) == version
    last = "timeout" if version == 4 else "result"
    old_columns = JOB_RUN_COLUMNS[: JOB_RUN_COLUMNS.index(last) + 1]
    insert = db.prepare(
        f"INSERT INTO kumofire_job_runs ({', '.join(old_columns)}) "
        f"VALUES ({', '.join('?' for _ in old_columns)})"
    )
    rows = [row + (history if version == 5 else []) for row, history in zip(
        _V4_ROWS, _V5_HISTORY, strict=True
    )]  # fmt: skip
    for row in rows:
        await insert.bind(*row).run()
    before = (await db.prepare("SELECT * FROM kumofire_job_runs ORDER BY id").all()).results
    assert [list(r.values()) for r in before] == rows

    applied = await apply_migrations(db)
    assert [m.name for m in applied] == SHIPPED[version:]
    assert "0006_flows.sql" in SHIPPED[version:]
    after = (await db.prepare("SELECT * FROM kumofire_job_runs ORDER BY id").all()).results
    assert [{k: r[k] for k in old_columns} for r in after] == before
    assert all(r["parent_id"] is None and r["child_count"] is None for r in after)
    if version == 5:  # the history reads as it did
        run = row_to_run(cast(RunRow, after[0]))
        assert (run.result, run.progress) == ({"total": 42}, {"done": 3})
        assert [a.outcome for a in attempts_from_json(after[1]["attempts"])] == ["retried"]
        assert [line.event for line in log_lines_from_json(after[0]["logs"])] == ["hi"]
    fresh = tmp_path / "fresh.sqlite"
    other = LocalD1Database(fresh)
    try:
        await apply_migrations(other)
        assert await schema(db) == await schema(other)  # the same schema as a new database
    finally:
        other.close()
    # The indexes came through: unique keys still hold, and the queries still use them.
    extra = [None] * (len(old_columns) - 20)
    with pytest.raises(Exception, match="UNIQUE"):
        await insert.bind(
            "run_d", "job", "scheduled", None, 0, 1, 0, 4, 4, None, None, None, "key-a", None,
            None, None, 0, None, None, None, *extra,
        ).run()  # fmt: skip
    with pytest.raises(Exception, match="UNIQUE"):
        await insert.bind(
            "run_e", "job", "scheduled", None, 0, 1, 0, 4, 4, None, None, None, None, "sch_1",
            "1:20", None, 0, None, None, None, *extra,
        ).run()  # fmt: skip
    plan = await db.prepare(
        "EXPLAIN QUERY PLAN SELECT id FROM kumofire_job_runs WHERE finished_at IS NULL "
        "AND scheduled_for <= 100"
    ).all()
    assert "kumofire_job_runs_unfinished" in str(plan.results)
    await db.prepare("UPDATE kumofire_job_runs SET status = 'waiting' WHERE id = 'run_c'").run()
    with pytest.raises(Exception, match="CHECK"):
        await db.prepare("UPDATE kumofire_job_runs SET status = 'bogus' WHERE id = 'run_c'").run()


async def test_apply_is_idempotent(db: LocalD1Database) -> None:
    first = await apply_migrations(db)
    assert first
    before = await schema(db)
    assert await apply_migrations(db) == []
    assert await pending_migrations(db) == []
    assert await schema(db) == before
    assert [r["name"] for r in await recorded(db)] == [m.name for m in first]


async def test_records_applied_migrations_as_wrangler_does(db: LocalD1Database) -> None:
    await apply_migrations(db)
    rows = await recorded(db)
    assert [(r["id"], r["name"]) for r in rows] == [
        (1, "0001_job_runs.sql"),
        (2, "0002_schedules.sql"),
        (3, "0003_unfinished_runs_index.sql"),
        (4, "0004_operations.sql"),
        (5, "0005_history.sql"),
        (6, "0006_flows.sql"),
        (7, "0007_reconcile_cursor.sql"),
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[0]["applied_at"])
    table = await db.prepare("SELECT sql FROM sqlite_master WHERE name = 'd1_migrations'").first()
    # wrangler 4.125.0 (getCreateMigrationsTableQuery), as SQLite stores it
    assert table == {
        "sql": 'CREATE TABLE "d1_migrations"(\n'
        "\t\tid         INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "\t\tname       TEXT UNIQUE,\n"
        "\t\tapplied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL\n"
        ")"
    }


async def test_schema_version_and_check_schema(db: LocalD1Database) -> None:
    assert await schema_version(db) == 0  # no d1_migrations table at all
    with pytest.raises(SchemaOutdatedError) as caught:
        await check_schema(db)
    message = str(caught.value)
    assert "kumofire-jobs migrate" in message
    assert "kumofire-jobs cloudflare migrate --remote --database NAME" in message
    assert (caught.value.current, caught.value.expected) == (0, SCHEMA_VERSION)
    await apply_migrations(db)
    assert await schema_version(db) == SCHEMA_VERSION
    await check_schema(db)


async def test_a_newer_schema_passes_the_check(db: LocalD1Database, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(REPO_MIGRATIONS, directory)
    write(directory, f"{SCHEMA_VERSION + 1:04d}_later.sql", "CREATE TABLE later (x);")
    await apply_migrations(db, directory)
    assert await schema_version(db) == SCHEMA_VERSION + 1
    await check_schema(db)


def test_schema_version_is_the_newest_shipped_migration() -> None:
    assert discover_migrations()[-1].number == SCHEMA_VERSION


def test_default_directory_is_the_repositorys_migrations() -> None:
    assert default_migrations_dir().resolve() == REPO_MIGRATIONS.resolve()


# --- the bookkeeping ------------------------------------------------------------------------


async def test_pending_lists_what_is_not_applied(db: LocalD1Database, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    write(directory, "0001_a.sql", "CREATE TABLE a (x);")
    assert [m.name for m in await pending_migrations(db, directory)] == ["0001_a.sql"]
    await apply_migrations(db, directory)
    write(directory, "0002_b.sql", "CREATE TABLE b (x);")
    pending = await pending_migrations(db, directory)
    assert pending == [Migration(2, "0002_b.sql", "CREATE TABLE b (x);")]
    assert [m.name for m in await apply_migrations(db, directory)] == ["0002_b.sql"]
    assert await schema_version(db) == 2


async def test_a_failing_migration_applies_nothing(db: LocalD1Database, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    write(directory, "0001_a.sql", "CREATE TABLE a (x);")
    write(
        directory,
        "0002_b.sql",
        "CREATE TABLE b (x);\nINSERT INTO b VALUES (1);\nINSERT INTO missing VALUES (1);\n",
    )
    with pytest.raises(Exception, match="no such table: missing"):
        await apply_migrations(db, directory)
    assert [r["name"] for r in await recorded(db)] == ["0001_a.sql"]  # 0001 stays applied
    assert await db.prepare("SELECT name FROM sqlite_master WHERE name = 'b'").first() is None
    assert await schema_version(db) == 1
    # fixed, it applies
    write(directory, "0002_b.sql", "CREATE TABLE b (x);\nINSERT INTO b VALUES (1);\n")
    assert [m.number for m in await apply_migrations(db, directory)] == [2]
    assert await db.prepare("SELECT x FROM b").first("x") == 1


async def test_migrations_apply_in_numeric_order(db: LocalD1Database, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    write(directory, "10_c.sql", "INSERT INTO log VALUES ('c');")
    write(directory, "0002_b.sql", "INSERT INTO log VALUES ('b');")
    write(directory, "0001_a.sql", "CREATE TABLE log (v); INSERT INTO log VALUES ('a');")
    assert [m.number for m in await apply_migrations(db, directory)] == [1, 2, 10]
    rows = await db.prepare("SELECT v FROM log ORDER BY rowid").raw()
    assert rows == [["a"], ["b"], ["c"]]


def test_discovery_refuses_what_wrangler_and_we_would_read_differently(tmp_path: Path) -> None:
    odd = tmp_path / "odd"
    write(odd, "0001_a.sql", "SELECT 1;")
    write(odd, "seed.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        discover_migrations(odd)
    twice = tmp_path / "twice"
    write(twice, "0001_a.sql", "SELECT 1;")
    write(twice, "1_b.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="also used by"):
        discover_migrations(twice)
    with pytest.raises(MigrationError, match="no migrations directory"):
        discover_migrations(tmp_path / "absent")
    write(tmp_path / "other", "README.md", "not a migration")
    assert discover_migrations(tmp_path / "other") == []


async def test_a_dumps_transaction_wrapper_is_dropped_as_wrangler_does(
    db: LocalD1Database, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    write(directory, "0001_a.sql", "BEGIN TRANSACTION;\nCREATE TABLE a (x);\nCOMMIT;\n")
    await apply_migrations(db, directory)
    assert await db.prepare("SELECT count(*) AS n FROM a").first("n") == 0
    write(directory, "0002_b.sql", "BEGIN TRANSACTION;\nCOMMIT;\nBEGIN TRANSACTION;\nCOMMIT;\n")
    with pytest.raises(MigrationError, match="several transactions"):
        await apply_migrations(db, directory)


# --- splitting SQL ------------------------------------------------------------------------

TRICKY_SQL = """\
-- A migration exercising the splitter: comments, semicolons in strings, a trigger.
CREATE TABLE notes (
    id INTEGER PRIMARY KEY, -- the rowid; not a statement end
    body TEXT NOT NULL DEFAULT 'a;b', /* a block; comment */
    "odd;name" TEXT,
    `also;odd` TEXT
);
INSERT INTO notes (body) VALUES ('it''s; fine'), ('-- not a comment'), ('/* nor this */');
CREATE TRIGGER notes_touch AFTER INSERT ON notes
BEGIN
    UPDATE notes SET "odd;name" = 'x;y' WHERE id = NEW.id;
    UPDATE notes SET `also;odd` = CASE WHEN NEW.id > 1 THEN 'many' ELSE 'one' END
        WHERE id = NEW.id;
END;
INSERT INTO notes (body) VALUES ('after the trigger');
/* a trailing comment; with a semicolon */
"""


def test_split_sql_keeps_strings_names_and_trigger_bodies_whole() -> None:
    statements = split_sql(TRICKY_SQL)
    assert len(statements) == 4
    assert statements[0].startswith("CREATE TABLE notes (")
    assert "-- the rowid" not in statements[0]  # comments go, as wrangler drops them
    assert "DEFAULT 'a;b', \n" in statements[0]
    assert statements[1].endswith("('/* nor this */')")
    assert statements[2].startswith("CREATE TRIGGER notes_touch")
    assert statements[2].endswith("END")
    assert statements[3] == "INSERT INTO notes (body) VALUES ('after the trigger')"
    for statement in statements:
        # each is one complete statement by SQLite's own judgement
        assert sqlite3.complete_statement(statement + ";")


def test_split_sql_knows_bracketed_names() -> None:
    # (wrangler's splitter does not: it would cut this one at the bracketed semicolon)
    assert split_sql("CREATE TABLE t ([a;b] TEXT); SELECT [a;b] FROM t") == [
        "CREATE TABLE t ([a;b] TEXT)",
        "SELECT [a;b] FROM t",
    ]


def test_split_sql_can_keep_comments() -> None:
    assert split_sql("SELECT 1; -- one\nSELECT /* two */ 2;", strip_comments=False) == [
        "SELECT 1",
        "-- one\nSELECT /* two */ 2",
    ]
    assert split_sql("-- nothing;\n/* at all; */ ;;") == []
    assert split_sql("SELECT 1") == ["SELECT 1"]


async def test_the_tricky_migration_applies(db: LocalD1Database, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    write(directory, "0001_notes.sql", TRICKY_SQL)
    await apply_migrations(db, directory)
    rows = await db.prepare('SELECT body, "odd;name", `also;odd` FROM notes ORDER BY id').raw()
    assert rows == [
        ["it's; fine", None, None],
        ["-- not a comment", None, None],
        ["/* nor this */", None, None],
        ["after the trigger", "x;y", "many"],  # inserted once the trigger existed
    ]


# --- interop with wrangler ------------------------------------------------------------------

needs_wrangler = pytest.mark.skipif(
    not WRANGLER.exists(),
    reason="wrangler is not installed: run `npm install` at the repository root",
)
DATABASE = "kumofire-jobs"


def wrangler_project(root: Path, migrations: Path) -> Path:
    project = root / "project"
    project.mkdir()
    # json.dumps makes a valid TOML basic string of the path.
    (project / "wrangler.toml").write_text(
        'name = "kumofire-interop"\n'
        'compatibility_date = "2026-04-21"\n\n'
        "[[d1_databases]]\n"
        'binding = "DB"\n'
        f"database_name = {json.dumps(DATABASE)}\n"
        'database_id = "00000000-0000-4000-8000-000000000000"\n'
        f"migrations_dir = {json.dumps(str(migrations))}\n",
        encoding="utf-8",
    )
    return project


async def wrangler(project: Path, *args: str) -> str:
    """Run wrangler offline and non-interactively; its output, after checking it succeeded."""
    env = {
        **os.environ,
        "CI": "true",  # no prompts: wrangler takes the default answers
        "WRANGLER_SEND_METRICS": "false",
        "WRANGLER_HIDE_BANNER": "true",  # the banner is what checks npm for updates
        "NO_COLOR": "1",
        "XDG_CONFIG_HOME": str(project / ".config"),  # keep its logs and consent files here
        "WRANGLER_LOG_PATH": str(project / ".logs"),
    }
    process = await asyncio.create_subprocess_exec(
        str(WRANGLER),
        *args,
        cwd=project,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"wrangler {' '.join(args)} failed:\n{text}"
    return text


def local_database_file(persist: Path) -> Path:
    """The SQLite file miniflare keeps for the (only) local D1 database under `persist`."""
    found = [
        path
        for path in (persist / "v3" / "d1" / "miniflare-D1DatabaseObject").glob("*.sqlite")
        if path.name != "metadata.sqlite"
    ]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def tricky_migrations(tmp_path: Path) -> Path:
    directory = tmp_path / "tricky-migrations"
    shutil.copytree(REPO_MIGRATIONS, directory)
    write(directory, f"{SCHEMA_VERSION + 1:04d}_notes.sql", TRICKY_SQL)
    return directory


@pytest.mark.slow
@pytest.mark.timeout(180)
@needs_wrangler
@pytest.mark.parametrize("which", ["shipped", "tricky"])
async def test_wrangler_and_this_migrator_build_the_same_database(
    tmp_path: Path, tricky_migrations: Path, open_db: Any, which: str
) -> None:
    migrations = REPO_MIGRATIONS if which == "shipped" else tricky_migrations
    project = wrangler_project(tmp_path, migrations)
    persist = tmp_path / "state"
    output = await wrangler(
        project, "d1", "migrations", "apply", DATABASE, "--local", "--persist-to", str(persist)
    )
    names = [m.name for m in discover_migrations(migrations)]
    assert all(name in output for name in names), output

    theirs = open_db(local_database_file(persist))
    ours = open_db(tmp_path / "ours.sqlite")
    assert [m.name for m in await apply_migrations(ours, migrations)] == names

    # (a) the same schema, byte for byte, d1_migrations included
    assert await schema(theirs) == await schema(ours)
    if which == "tricky":
        data = "SELECT * FROM notes ORDER BY id"
        assert (await theirs.prepare(data).raw()) == (await ours.prepare(data).raw())
    # (b) the same record of applied migrations
    theirs_rows = await recorded(theirs)
    assert [(r["id"], r["name"]) for r in theirs_rows] == list(enumerate(names, start=1))
    assert [(r["id"], r["name"]) for r in await recorded(ours)] == list(enumerate(names, start=1))
    # wrangler -> ours: this migrator sees nothing left to do on wrangler's database
    assert await pending_migrations(theirs, migrations) == []
    assert await schema_version(theirs) == len(names)
    assert await apply_migrations(theirs, migrations) == []


@pytest.mark.slow
@pytest.mark.timeout(180)
@needs_wrangler
async def test_wrangler_finds_nothing_to_apply_after_this_migrator(
    tmp_path: Path, open_db: Any
) -> None:
    project = wrangler_project(tmp_path, REPO_MIGRATIONS)
    persist = tmp_path / "state"
    # Let wrangler create its (empty) local database file, then migrate it with ours.
    await wrangler(
        project, "d1", "execute", DATABASE, "--local", "--persist-to", str(persist),
        "--command", "SELECT 1",
    )  # fmt: skip
    path = local_database_file(persist)
    db = open_db(path)
    assert await schema_version(db) == 0
    assert [m.name for m in await apply_migrations(db)] == SHIPPED
    before = await schema(db)
    db.close()

    listed = await wrangler(
        project, "d1", "migrations", "list", DATABASE, "--local", "--persist-to", str(persist)
    )
    assert "No migrations to apply" in listed, listed
    applied = await wrangler(
        project, "d1", "migrations", "apply", DATABASE, "--local", "--persist-to", str(persist)
    )
    assert "No migrations to apply" in applied, applied

    again = open_db(path)
    assert await schema(again) == before
    assert [r["name"] for r in await recorded(again)] == SHIPPED
