"""The one-file layout (`local/one_file.py`, `local/layout.py`): D1, the queue and the Durable
Objects in one SQLite file share one commit per turn; at `FULL` the WAL is synced after that
commit and before a caller outside the runtime is answered; a failed shared commit fails every
binding's callers in its own terms and undoes every binding's writes; a data directory written
in the per-binding layout is moved into the one file at its next start, and the move survives
a crash between its copy and the removal of the old files."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kumofire_jobs import JobContext, create_runtime
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local import layout, table_names, wal_sync
from kumofire_jobs.local.d1 import D1Error, LocalD1Database
from kumofire_jobs.local.durable_objects import (
    DurableObjectError,
    LocalDurableObjectNamespace,
    LocalDurableObjectState,
)
from kumofire_jobs.local.environment import COORDINATOR_CLASS, LocalEnvironment
from kumofire_jobs.local.one_file import OneFile
from kumofire_jobs.local.queue import LocalQueueBroker
from tests.support.full_disk import FullDisk


class Counter:
    def __init__(self, ctx: LocalDurableObjectState, env: Any) -> None:
        self.ctx = ctx

    async def bump(self) -> int:
        n = int(await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", n)
        return n

    async def read(self) -> int:
        return int(await self.ctx.storage.get("n") or 0)


@dataclass
class Bindings:
    d1: LocalD1Database
    broker: LocalQueueBroker
    objects: LocalDurableObjectNamespace
    statements: list[str]


@pytest.fixture
async def one_file(clock: ManualClock, tmp_path: Path) -> AsyncIterator[Bindings]:
    d1 = LocalD1Database(tmp_path / "one.sqlite", synchronous="FULL")
    shared = OneFile(d1)
    broker = LocalQueueBroker(None, clock, synchronous="FULL", one_file=shared)
    objects = LocalDurableObjectNamespace(
        Counter, path=tmp_path / "objects", clock=clock, synchronous="FULL", one_file=shared
    )
    await d1.exec("CREATE TABLE t (x INTEGER)")
    statements: list[str] = []
    d1._conn.set_trace_callback(statements.append)
    yield Bindings(d1, broker, objects, statements)
    await objects.close()
    broker.close()
    d1.close()


async def test_the_three_bindings_writing_in_one_turn_share_one_commit(
    one_file: Bindings,
) -> None:
    b = one_file
    assert b.d1._commits is b.broker._commits is b.objects._commits
    shared = b.objects._one_file
    assert shared is not None
    syncs = shared.syncs
    results = await asyncio.gather(
        b.d1.prepare("INSERT INTO t VALUES (1)").run(),
        b.broker.producer("q").send({"n": 1}),
        b.objects.getByName("c").bump(),
    )
    assert results[2] == 1
    assert b.statements.count("BEGIN IMMEDIATE") == 1
    assert b.statements.count("COMMIT") == 1
    # At FULL the shared commit runs at NORMAL and the WAL is synced once, before the first
    # answer to these callers (code outside the runtime): `test_sync_before_answers.py`.
    assert b.d1._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert shared.syncs == syncs + 1
    assert await b.broker.depth("q") == 1
    assert await b.objects.getByName("c").read() == 1


async def test_a_failed_shared_commit_fails_and_undoes_every_bindings_writes(
    one_file: Bindings,
) -> None:
    b = one_file
    disk = FullDisk()
    b.d1._conn = disk.wrap(b.d1._conn)  # the shared commit goes through D1's connection
    disk.full = True
    results = await asyncio.gather(
        b.d1.prepare("INSERT INTO t VALUES (1)").run(),
        b.broker.producer("q").send({"n": 1}),
        b.objects.getByName("c").bump(),
        return_exceptions=True,
    )
    assert disk.refused == 1
    assert isinstance(results[0], D1Error)
    assert isinstance(results[1], sqlite3.Error)
    assert isinstance(results[2], DurableObjectError)
    disk.full = False
    assert await b.d1.prepare("SELECT count(*) AS n FROM t").first("n") == 0
    assert await b.broker.depth("q") == 0
    assert await b.objects.getByName("c").read() == 0  # the object starts from what is stored
    assert await b.objects.getByName("c").bump() == 1


async def test_a_create_at_full_is_answered_after_the_commit_that_holds_its_run(
    clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def job(ctx: JobContext) -> None:
        return None

    env = LocalEnvironment(create_runtime({"job": job}, clock=clock), tmp_path, synchronous="FULL")
    await env.start()
    try:
        events: list[str] = []
        env.JOBS_DB._conn.set_trace_callback(
            lambda sql: events.append(sql.split(None, 2)[0].upper())
        )
        real = wal_sync._fdatasync

        def fdatasync(fd: int) -> None:
            real(fd)
            events.append("SYNC")

        monkeypatch.setattr(wal_sync, "_fdatasync", fdatasync)
        await env.jobs.create("job", delay=60)
        events.append("ANSWERED")
        insert = events.index("INSERT")
        commit = events.index("COMMIT", insert)
        # The commit (at NORMAL: SQLite does not sync it), then the WAL's sync, then the answer.
        assert events[commit:].count("SYNC") == 1 and events[-2:] == ["SYNC", "ANSWERED"]
        assert env.JOBS_DB._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    finally:
        await env.stop()
    # Everything is in the D1 file: no file of the per-binding layout was made.
    assert not layout.queue_path(tmp_path).exists()
    assert not layout.objects_path(tmp_path, COORDINATOR_CLASS).exists()


async def _per_binding_directory(clock: ManualClock, path: Path, calls: list[str]) -> list[str]:
    """A data directory written by the per-binding layout, left as a stop leaves it: a run
    whose queue message is stored and not delivered, and two runs waiting for their
    coordinators' alarms."""

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.id)

    env = LocalEnvironment(
        create_runtime({"job": job}, clock=clock), path, layout=layout.PER_BINDING
    )
    await env.migrate()
    await env.JOB_COORDINATOR.start()  # alarms fire, the queue delivers nothing
    queued = (await env.jobs.create("job")).kumofire_job_run_id
    await clock.advance(0)
    waiting = [(await env.jobs.create("job", delay=60 + i)).kumofire_job_run_id for i in range(2)]
    await clock.advance(0)  # their arms land (the queued run's stored nothing: it was sent)
    await env.close()
    with closing(sqlite3.connect(layout.queue_path(path))) as conn:
        assert conn.execute("SELECT count(*) FROM kumofire_local_queue_messages").fetchone()[0] == 1
    objects = layout.objects_path(path, COORDINATOR_CLASS)
    with closing(sqlite3.connect(objects)) as conn:
        assert conn.execute("SELECT count(*) FROM kumofire_local_do_alarms").fetchone()[0] == 2
    assert calls == []
    return [queued, *waiting]


# The tables' indexes as they were before the prefix.
_OLD_INDEXES = (
    "CREATE INDEX messages_ready ON messages (queue, lease, visible_at)",
    "CREATE INDEX alarms_by_time ON alarms (time_ms)",
)


def _names_in_their_own_table(file: Path) -> None:
    """Give a coordinators' file the schema it had before the objects' names moved into their
    alarms' rows: a `kumofire_local_do_names` table, no `name` column."""
    with closing(sqlite3.connect(file)) as conn:
        conn.executescript(
            """
            CREATE TABLE kumofire_local_do_names (
                object_id TEXT PRIMARY KEY,
                name TEXT NOT NULL
            ) WITHOUT ROWID;
            INSERT INTO kumofire_local_do_names (object_id, name)
                SELECT object_id, name FROM kumofire_local_do_alarms WHERE name IS NOT NULL;
            ALTER TABLE kumofire_local_do_alarms DROP COLUMN name;
            """
        )


def _alarm_names(file: Path) -> dict[str, str | None]:
    with closing(sqlite3.connect(file)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "kumofire_local_do_names" not in tables and "names" not in tables
        rows = conn.execute("SELECT object_id, name FROM kumofire_local_do_alarms").fetchall()
    return dict(rows)


def _assert_named_for_runs(names: dict[str, str | None], runs: list[str], rows: int) -> None:
    """Each alarm row carries the name of its coordinator: its run's id, whose object id it is."""
    assert len(names) == rows
    for object_id, name in names.items():
        assert name in runs
        assert hashlib.sha256(f"{COORDINATOR_CLASS}\0{name}".encode()).hexdigest() == object_id


def _unprefix(path: Path) -> None:
    """Give a per-binding data directory's queue and coordinator files the table and index
    names they had before the `kumofire_local_` prefix (a directory written before it, so
    before the names moved too)."""
    _names_in_their_own_table(layout.objects_path(path, COORDINATOR_CLASS))
    for file, tables in (
        (layout.queue_path(path), table_names.QUEUE_TABLES),
        (layout.objects_path(path, COORDINATOR_CLASS), table_names.OBJECT_TABLES),
    ):
        with closing(sqlite3.connect(file)) as conn:
            for (index,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            ).fetchall():
                conn.execute(f"DROP INDEX {index}")
            for name, old, _ in tables:
                conn.execute(f"ALTER TABLE {name} RENAME TO {old}")
            present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            for sql in _OLD_INDEXES:
                if sql.split(" ON ")[1].split()[0] in present:
                    conn.execute(sql)
            conn.commit()


@pytest.mark.parametrize("written", ["now", "before the names moved", "before the prefix"])
async def test_a_per_binding_data_directory_moves_into_one_file_and_runs_on(
    clock: ManualClock, tmp_path: Path, written: str
) -> None:
    calls: list[str] = []
    runs = await _per_binding_directory(clock, tmp_path, calls)
    if written == "before the names moved":
        _names_in_their_own_table(layout.objects_path(tmp_path, COORDINATOR_CLASS))
    elif written == "before the prefix":
        _unprefix(tmp_path)

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.id)

    env = LocalEnvironment(create_runtime({"job": job}, clock=clock), tmp_path)
    assert not layout.queue_path(tmp_path).exists()
    assert not layout.objects_path(tmp_path, COORDINATOR_CLASS).exists()
    # The waiting runs' coordinators (each named for its run) keep their names.
    _assert_named_for_runs(_alarm_names(layout.d1_path(tmp_path)), runs, 2)
    await env.start()
    try:
        await clock.advance(0)
        assert calls == runs[:1]  # the stored message, delivered
        await clock.advance(61)
        assert calls == runs  # the stored alarms, fired on time
        counts = await env.jobs.counts()
        assert counts["succeeded"] == 3 and sum(counts.values()) == 3
    finally:
        await env.stop()


async def test_a_move_cut_off_before_the_old_files_were_removed_is_done_again_safely(
    clock: ManualClock, tmp_path: Path
) -> None:
    calls: list[str] = []
    runs = await _per_binding_directory(clock, tmp_path / "data", calls)
    saved = tmp_path / "saved"
    shutil.copytree(tmp_path / "data", saved)
    assert layout.to_one_file(tmp_path / "data", COORDINATOR_CLASS)
    # The crash: the copy committed, the old files still there (put back from the copy).
    shutil.copy(layout.queue_path(saved), layout.queue_path(tmp_path / "data"))
    objects = layout.objects_path(tmp_path / "data", COORDINATOR_CLASS)
    shutil.copy(layout.objects_path(saved, COORDINATOR_CLASS), objects)

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.id)

    env = LocalEnvironment(create_runtime({"job": job}, clock=clock), tmp_path / "data")
    assert not objects.exists()
    await env.start()
    try:
        await clock.advance(61)
        assert sorted(calls) == sorted(runs)  # each once: the second copy added nothing
        assert await env.broker.depth("kumofire-jobs") == 0
    finally:
        await env.stop()


async def test_a_one_file_directory_is_not_opened_file_by_file(
    clock: ManualClock, tmp_path: Path
) -> None:
    async def job(ctx: JobContext) -> None:
        return None

    runtime = create_runtime({"job": job}, clock=clock)
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    await env.jobs.create("job", delay=60)
    await env.stop()
    with pytest.raises(layout.OneFileInUseError, match="one-file layout"):
        LocalEnvironment(runtime, tmp_path, layout=layout.PER_BINDING)
    with pytest.raises(ValueError, match="layout must be one of"):
        LocalEnvironment(runtime, tmp_path, layout="two-files")


async def test_the_file_holds_one_namespace(one_file: Bindings, clock: ManualClock) -> None:
    # Its tables are not keyed by class: a second namespace would fire the first's alarms.
    with pytest.raises(ValueError, match="already holds a LocalDurableObjectNamespace"):
        LocalDurableObjectNamespace(
            Counter,
            path=Path(one_file.d1.path).parent / "other",
            clock=clock,
            one_file=one_file.objects._one_file,
        )


async def test_a_per_binding_directory_written_before_the_prefix_is_renamed_and_runs_on(
    clock: ManualClock, tmp_path: Path
) -> None:
    calls: list[str] = []
    runs = await _per_binding_directory(clock, tmp_path, calls)
    _unprefix(tmp_path)

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.id)

    runtime = create_runtime({"job": job}, clock=clock)
    env = LocalEnvironment(runtime, tmp_path, layout=layout.PER_BINDING)
    await env.start()
    try:
        await clock.advance(61)
        assert sorted(calls) == sorted(runs)  # the stored message and alarms, under new names
    finally:
        await env.stop()
    with closing(sqlite3.connect(layout.queue_path(tmp_path))) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "messages" not in tables and "kumofire_local_queue_messages" in tables


async def test_a_users_own_tables_named_like_the_bindings_old_ones_are_left_alone(
    clock: ManualClock, tmp_path: Path
) -> None:
    """In the one file, D1's database is the user's too: tables of theirs called `messages`,
    `kv`, `alarms` or `names` are neither used by the queue and coordinators nor touched."""
    calls: list[str] = []

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.id)

    runtime = create_runtime({"job": job}, clock=clock)
    for restart in range(2):
        env = LocalEnvironment(runtime, tmp_path)
        await env.start()
        try:
            if restart == 0:
                for table in ("messages", "kv", "alarms", "names"):
                    await env.JOBS_DB.exec(
                        f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, note TEXT NOT NULL)"
                    )
                    await (
                        env.JOBS_DB.prepare(f"INSERT INTO {table} (note) VALUES (?)")
                        .bind(f"the user's {table}")
                        .run()
                    )
            created = [(await env.jobs.create("job", delay=d)).kumofire_job_run_id for d in (0, 5)]
            await clock.advance(6)
            assert calls[-2:] == created
            for table in ("messages", "kv", "alarms", "names"):
                rows = (await env.JOBS_DB.prepare(f"SELECT note FROM {table}").all()).results
                assert [row["note"] for row in rows] == [f"the user's {table}"]
        finally:
            await env.stop()


async def test_a_one_file_directory_written_before_the_names_moved_runs_on(
    clock: ManualClock, tmp_path: Path
) -> None:
    """A data directory whose coordinators' names have a table of their own (as versions
    before the name moved into the alarm's row wrote it): at its next start the names move
    into the alarms' rows and the table goes, in one transaction; the runs waiting for their
    alarms run on time."""
    calls: list[str] = []

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.id)

    runtime = create_runtime({"job": job}, clock=clock)
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    waiting = [(await env.jobs.create("job", delay=60 + i)).kumofire_job_run_id for i in range(2)]
    await env.stop()
    _names_in_their_own_table(layout.d1_path(tmp_path))
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    try:
        _assert_named_for_runs(_alarm_names(layout.d1_path(tmp_path)), waiting, 2)
        await clock.advance(61)
        assert sorted(calls) == sorted(waiting)
        assert (await env.jobs.counts())["succeeded"] == 2
    finally:
        await env.stop()
