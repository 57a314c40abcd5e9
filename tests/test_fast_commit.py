"""The embedded runtime's two shortcuts on the create path and the commit, and their crash
points: `create` answers once its runs are in D1 and their arms are sent (a crash before an
arm commits leaves a durable run that the next start arms), and at `synchronous=FULL` the
WAL syncs of the bindings committing in one turn overlap (`local/wal_sync.py`), each caller
still answered only after its binding's WAL is synced."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from kumofire_jobs import JobContext, create_runtime
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local import layout as layouts
from kumofire_jobs.local import wal_sync
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.local.group_commit import GroupCommit


@pytest.mark.parametrize("layout", layouts.LAYOUTS)
@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_a_run_acknowledged_before_its_arm_committed_survives_a_crash(
    clock: ManualClock, tmp_path: Path, synchronous: str, layout: str
) -> None:
    calls: list[tuple[str, float]] = []

    async def job(ctx: JobContext) -> None:
        calls.append((ctx.job.id, clock.now()))

    runtime = create_runtime({"job": job}, clock=clock)
    env = LocalEnvironment(runtime, tmp_path, synchronous=synchronous, layout=layout)
    await env.start()
    later = (await env.jobs.create("job", delay=600)).kumofire_job_run_id
    due = (await env.jobs.create("job")).kumofire_job_run_id
    # The crash point: both creates were answered (their runs are committed in D1), and the
    # process dies before the due run's arm commits: nothing else runs in between. (The
    # delayed run's arm may have committed meanwhile: it starts on time either way.)
    await env.JOB_COORDINATOR.abort()
    await env.close()
    assert calls == []

    await clock.advance(5)
    restarted = clock.now()
    env = LocalEnvironment(runtime, tmp_path, synchronous=synchronous, layout=layout)
    await env.start()
    await clock.advance(0)
    assert calls == [(due, restarted)]
    await clock.advance(600 - 5)
    assert calls == [(due, restarted), (later, restarted + 595)]
    await env.stop()


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_a_due_run_whose_inline_send_a_crash_cut_off_starts_at_the_next_start(
    clock: ManualClock, tmp_path: Path, synchronous: str
) -> None:
    """An arm of a due run (new, nothing stored) sends first and stores nothing once the
    message went out. A crash while the send is under way leaves no coordinator state: the
    next start's reconciliation finds the run unfinished with its actor closed, arms it
    again, and it runs once, at that start."""
    calls: list[tuple[str, float]] = []

    async def job(ctx: JobContext) -> None:
        calls.append((ctx.job.id, clock.now()))

    runtime = create_runtime({"job": job}, clock=clock)
    env = LocalEnvironment(runtime, tmp_path, synchronous=synchronous)
    await env.start()
    due = (await env.jobs.create("job")).kumofire_job_run_id
    # Another create's commit gives the due run's arm its turns: its send is under way
    # when the process dies.
    await env.jobs.create("job", delay=600)
    await env.JOB_COORDINATOR.abort()
    await env.close()
    assert calls == []

    await clock.advance(5)
    restarted = clock.now()
    env = LocalEnvironment(runtime, tmp_path, synchronous=synchronous)
    await env.start()
    await clock.advance(0)
    assert calls == [(due, restarted)]
    await clock.advance(600)
    assert [c for c in calls if c[0] == due] == [(due, restarted)]
    await env.stop()


async def test_a_call_right_after_create_lands_after_its_arm(
    clock: ManualClock, tmp_path: Path
) -> None:
    calls: list[tuple[str, float]] = []
    after_cancel: list[str] = []  # runs started after the cancel was answered
    answered = False

    async def job(ctx: JobContext) -> None:
        calls.append((ctx.job.id, clock.now()))
        if answered:
            after_cancel.append(ctx.job.id)

    env = LocalEnvironment(create_runtime({"job": job}, clock=clock), tmp_path)
    await env.start()
    promoted = (await env.jobs.create("job", delay=600)).kumofire_job_run_id
    # The arm was sent before create answered: a call sent now reaches the coordinator after it.
    status = await env.JOB_COORDINATOR.getByName(promoted).status()
    assert status["phase"] == "armed" and status["due_ms"] == round((clock.now() + 600) * 1000)
    canceled = (await env.jobs.create("job")).kumofire_job_run_id
    # Sent before the create's arm is answered: the promote's arm must not be overwritten by
    # the create's (due in 600 s), and the cancel must not be undone by it.
    await env.jobs.promote(promoted)
    await env.jobs.cancel(canceled)
    answered = True
    await clock.advance(0)
    started = clock.now()
    # The canceled run's arm delivered it inline: it may have started before the cancel
    # reached D1 (then the cancel stops it), never after.
    assert [c for c in calls if c[0] == promoted] == [(promoted, started)]
    run = await env.jobs.get(canceled)
    assert run is not None and run.status == "canceled"
    await clock.advance(600)
    assert [c for c in calls if c[0] == promoted] == [(promoted, started)]
    assert len([c for c in calls if c[0] == canceled]) <= 1 and canceled not in after_cancel
    await env.stop()


class _Binding:
    """One SQLite file at FULL whose group transaction commits relaxed, as the bindings'."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE t (x)")
        wal = wal_sync.for_connection(self.conn, path, "FULL", lambda exc: exc)
        assert wal is not None
        self.wal = wal
        self.group = GroupCommit(self.commit, wal=wal)

    def write(self, x: int) -> None:
        if not self.group.pending:
            self.wal.relax()
            self.conn.execute("BEGIN IMMEDIATE")
            self.group.join()
        self.conn.execute("INSERT INTO t VALUES (?)", (x,))

    def commit(self) -> BaseException | None:
        self.conn.execute("COMMIT")
        return None

    def synchronous(self) -> int:
        level: int = self.conn.execute("PRAGMA synchronous").fetchone()[0]
        return level


@pytest.fixture
def bindings(tmp_path: Path) -> Iterator[list[_Binding]]:
    pair = [_Binding(tmp_path / "a.sqlite"), _Binding(tmp_path / "b.sqlite")]
    yield pair
    for binding in pair:
        binding.conn.close()


async def test_full_callers_are_answered_after_their_wal_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bindings: list[_Binding]
) -> None:
    synced: list[tuple[str, list[bool]]] = []
    waiters: list[asyncio.Future[None]] = []
    real = wal_sync._fdatasync

    def fdatasync(fd: int) -> None:
        path = Path(f"/proc/self/fd/{fd}").resolve().name
        synced.append((path, [w.done() for w in waiters]))
        real(fd)

    monkeypatch.setattr(wal_sync, "_fdatasync", fdatasync)
    directories: list[str] = []
    monkeypatch.setattr(wal_sync, "sync_directory", directories.append)
    for i, binding in enumerate(bindings):
        binding.write(i)
        waiters.append(binding.group.wait())
    # Relaxed while the group transaction is open: SQLite does not sync at its COMMIT.
    assert [b.wal.relaxed for b in bindings] == [True, True]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # One turn: both WALs synced (in parallel), nobody answered before both syncs ran.
    assert sorted(name for name, _ in synced) == ["a.sqlite-wal", "b.sqlite-wal"]
    assert all(done == [False, False] for _, done in synced)
    assert all(w.done() and w.exception() is None for w in waiters)
    # Each WAL's directory entry synced at its first sync (as SQLite would), once.
    assert directories == [str(tmp_path), str(tmp_path)]
    # Back to FULL for every commit outside the group (autocommit statements).
    assert [b.synchronous() for b in bindings] == [2, 2]
    # A commit made now (one binding, not at the end of a turn) syncs on its own too.
    synced.clear()
    bindings[0].write(9)
    assert bindings[0].group.commit() is None
    assert [name for name, _ in synced] == ["a.sqlite-wal"]
    assert bindings[0].synchronous() == 2
    assert len(directories) == 2


async def test_a_failed_wal_sync_fails_the_callers_of_that_commit(
    monkeypatch: pytest.MonkeyPatch, bindings: list[_Binding]
) -> None:

    def fdatasync(fd: int) -> None:
        if Path(f"/proc/self/fd/{fd}").resolve().name == "b.sqlite-wal":
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(wal_sync, "_fdatasync", fdatasync)
    waiters = []
    for i, binding in enumerate(bindings):
        binding.write(i)
        waiters.append(binding.group.wait())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert waiters[0].exception() is None
    error = waiters[1].exception()
    assert isinstance(error, OSError) and error.errno == 5


def test_normal_and_serial_mode_take_nothing_out_of_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with closing(sqlite3.connect(tmp_path / "x.sqlite", isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        path = tmp_path / "x.sqlite"
        assert wal_sync.for_connection(conn, path, "NORMAL", lambda e: e) is None
        assert wal_sync.for_connection(conn, path, "FULL", lambda e: e) is not None
        monkeypatch.setenv("KUMOFIRE_JOBS_SERIAL_WAL_SYNC", "1")
        assert wal_sync.for_connection(conn, path, "FULL", lambda e: e) is None
