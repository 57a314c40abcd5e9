"""At `synchronous=FULL` in the one-file layout, commits run at `NORMAL` and the WAL is synced
before an answer leaves for a caller outside the runtime (`core/answers.py`,
`local/one_file.py`): every `Jobs` call, wherever it is made (a handler's `create` too), and
any binding's answer to code that is not the runtime's own. Commits answering only the runtime
(the coordinators' alarms, the queue's delivery, the consumer's writes) are not synced; a
power cut that loses them (modelled by cutting the WAL back to its length at the last sync)
takes the runtime back to an earlier state, from which every acknowledged run still runs to
its end.

The background checkpoints are off in these tests: the WAL then only grows, so its length at
a sync is exactly what that sync made durable.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from kumofire_jobs import JobContext, Resources, create_runtime
from kumofire_jobs.api.operations import OPERATIONS
from kumofire_jobs.core import answers
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.jobs import Jobs
from kumofire_jobs.local import checkpoint, layout, wal_sync
from kumofire_jobs.local.d1 import D1Error, LocalD1Database
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.local.one_file import SYNC_EVERY_COMMIT, OneFile
from kumofire_jobs.web.app import create_app


class Syncs:
    """Every WAL sync of the process: the WAL's length when it was synced."""

    def __init__(self) -> None:
        self.lengths: list[int] = []
        self.fail = False

    def __len__(self) -> int:
        return len(self.lengths)

    def power_cut(self, data_dir: Path, into: Path) -> int:
        """The data directory as a power cut now would leave it: the database file, and the
        WAL as long as it was at its last sync. Returns how many bytes of WAL were lost."""
        source = layout.d1_path(data_dir)
        target = layout.d1_path(into)
        target.parent.mkdir(parents=True)
        shutil.copyfile(source, target)
        kept = self.lengths[-1]
        with open(f"{source}-wal", "rb") as wal:
            log = wal.read()
        with open(f"{target}-wal", "wb") as wal:
            wal.write(log[:kept])
        return len(log) - kept


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Syncs:
    recorded = Syncs()
    real = wal_sync._fdatasync

    def fdatasync(fd: int) -> None:
        if recorded.fail:
            raise OSError(5, "Input/output error")
        real(fd)
        recorded.lengths.append(os.fstat(fd).st_size)

    monkeypatch.setattr(wal_sync, "_fdatasync", fdatasync)
    monkeypatch.setattr(checkpoint.Checkpointer, "wrote", lambda self: None)
    monkeypatch.delenv(SYNC_EVERY_COMMIT, raising=False)
    return recorded


def _wal_length(env: LocalEnvironment | LocalD1Database) -> int:
    db = env.JOBS_DB if isinstance(env, LocalEnvironment) else env
    return os.path.getsize(f"{db.path}-wal")


def _stored_runs(data_dir: Path) -> set[str]:
    with closing(sqlite3.connect(layout.d1_path(data_dir))) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM kumofire_job_runs")}


async def test_commits_answering_only_the_runtime_are_not_synced_and_a_read_waits_for_them(
    clock: ManualClock, tmp_path: Path, syncs: Syncs
) -> None:
    ran: list[str] = []

    async def job(ctx: JobContext) -> None:
        ran.append(ctx.job.id)

    env = LocalEnvironment(create_runtime({"job": job}, clock=clock), tmp_path, synchronous="FULL")
    await env.start()
    try:
        run_id = (await env.jobs.create("job", delay=60)).kumofire_job_run_id
        assert len(syncs) >= 1 and syncs.lengths[-1] == _wal_length(env)
        before = len(syncs)
        commits: list[str] = []
        env.JOBS_DB._conn.set_trace_callback(
            lambda sql: commits.append(sql) if sql == "COMMIT" else None
        )
        # The alarm, the `queued` write and the send, the delivery, the lease, `running`, the
        # handler, the outcome and the ack: the runtime's own work, committed and not synced.
        await clock.advance(60)
        assert ran == [run_id]
        assert len(commits) >= 3
        assert len(syncs) == before
        # In WAL mode SQLite's COMMIT syncs nothing at NORMAL (its documentation of `PRAGMA
        # synchronous`): these commits reached the WAL file, not the disk.
        assert env.JOBS_DB._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert _wal_length(env) > syncs.lengths[-1]
        # A read answered outside the runtime shows the outcome only once it is durable.
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded"
        assert len(syncs) == before + 1 and syncs.lengths[-1] == _wal_length(env)
        # Nothing committed since: the next answer syncs nothing.
        assert (await env.jobs.counts())["succeeded"] == 1
        assert len(syncs) == before + 1
    finally:
        await env.stop()


async def test_a_handlers_create_is_durable_before_the_handler_hears_of_it(
    clock: ManualClock, tmp_path: Path, syncs: Syncs
) -> None:
    """The handler runs inside the consumer, the runtime's own work; its `create` is a `Jobs`
    call, answered as one from outside: after a sync that covers the child's row."""
    data_dir = tmp_path / "data"
    children: list[str] = []
    cuts: list[Path] = []

    async def parent(ctx: JobContext) -> None:
        child = (await env.jobs.create("child", delay=60)).kumofire_job_run_id
        children.append(child)
        # A power cut right now: the handler has its answer, nothing more is synced.
        cut = tmp_path / f"cut-{len(cuts)}"
        syncs.power_cut(data_dir, cut)
        cuts.append(cut)

    async def child(ctx: JobContext) -> None:
        return None

    env = LocalEnvironment(
        create_runtime({"parent": parent, "child": child}, clock=clock),
        data_dir,
        synchronous="FULL",
    )
    await env.start()
    try:
        outside = (await env.jobs.create("parent")).kumofire_job_run_id
        # An answer outside, too, comes after a sync that covers everything committed.
        assert syncs.lengths[-1] == _wal_length(env)
        await clock.advance(0)
        assert len(children) == 1 and len(cuts) == 1
    finally:
        await env.stop()
    assert {outside, children[0]} <= _stored_runs(cuts[0])


async def test_a_power_cut_losing_the_unsynced_commits_keeps_every_acknowledged_run(
    clock: ManualClock, tmp_path: Path, syncs: Syncs
) -> None:
    data_dir, cut = tmp_path / "data", tmp_path / "cut"
    ran: list[tuple[int, str]] = []
    life = 1
    acknowledged: list[str] = []

    async def job(ctx: JobContext) -> None:
        ran.append((life, ctx.job.id))

    async def fan_out(ctx: JobContext) -> None:
        ran.append((life, ctx.job.id))
        for _ in range(2):
            acknowledged.append((await env.jobs.create("job")).kumofire_job_run_id)

    runtime = create_runtime({"job": job, "fan_out": fan_out}, clock=clock)
    env = LocalEnvironment(runtime, data_dir, synchronous="FULL")
    await env.start()
    for delay in (None, None, 5, 30, 3600):
        acknowledged.append((await env.jobs.create("job", delay=delay)).kumofire_job_run_id)
    acknowledged.append((await env.jobs.create("fan_out", delay=2)).kumofire_job_run_id)
    # Runs start and finish, and the handler's creates are answered (each synced); what the
    # runtime commits after the last of those answers is its own, and not synced.
    await clock.advance(6)
    assert len(acknowledged) == 8
    finished = {run_id for _, run_id in ran}
    assert len(finished) == 6  # all but the runs due in 30 s and in an hour
    lost = syncs.power_cut(data_dir, cut)
    assert lost > 0
    await env.JOB_COORDINATOR.abort()
    await env.close()

    life = 2
    env = LocalEnvironment(runtime, cut, synchronous="FULL")
    await env.start()
    try:
        await clock.advance(3600)
        for run_id in acknowledged:
            run = await env.jobs.get(run_id)
            assert run is not None and run.status == "succeeded", run_id
        assert {run_id for _, run_id in ran} == set(acknowledged)
        # At least once: some of the runs that had finished before the cut ran again (their
        # outcomes were in the lost commits).
        again = {run_id for life_, run_id in ran if life_ == 2} & finished
        assert again
    finally:
        await env.stop()


async def test_an_applications_own_statements_are_synced_before_their_answer(
    clock: ManualClock, tmp_path: Path, syncs: Syncs
) -> None:
    """Code outside the runtime using the D1 binding directly (an application's own tables)
    is answered after the sync, as `FULL` promises; the same statement in a handler is the
    runtime's work, and its commit waits for the next answer outside."""
    wrote: list[int] = []

    async def job(ctx: JobContext) -> None:
        await env.JOBS_DB.prepare("INSERT INTO notes (n) VALUES (2)").run()
        wrote.append(len(syncs))

    env = LocalEnvironment(create_runtime({"job": job}, clock=clock), tmp_path, synchronous="FULL")
    await env.start()
    try:
        await env.JOBS_DB.exec("CREATE TABLE notes (n INTEGER)")
        before = len(syncs)
        await env.JOBS_DB.prepare("INSERT INTO notes (n) VALUES (1)").run()
        assert len(syncs) == before + 1 and syncs.lengths[-1] == _wal_length(env)
        await env.jobs.create("job")
        created = len(syncs)
        await clock.advance(0)
        assert wrote == [created]
    finally:
        await env.stop()


async def test_a_failed_sync_fails_the_call_and_the_next_answer_syncs_again(
    clock: ManualClock, tmp_path: Path, syncs: Syncs
) -> None:
    async def job(ctx: JobContext) -> None:
        return None

    env = LocalEnvironment(create_runtime({"job": job}, clock=clock), tmp_path, synchronous="FULL")
    await env.start()
    try:
        syncs.fail = True
        with pytest.raises(D1Error, match="disk I/O error"):
            await env.jobs.create("job", delay=60)
        syncs.fail = False
        before = len(syncs)
        page = await env.jobs.list()
        assert len(page.items) == 1  # committed; told durable only now
        assert len(syncs) == before + 1
    finally:
        await env.stop()


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_nothing_changes_at_normal_or_when_every_commit_is_synced(
    clock: ManualClock, tmp_path: Path, syncs: Syncs, monkeypatch: pytest.MonkeyPatch,
    synchronous: str,
) -> None:  # fmt: skip
    if synchronous == "FULL":
        monkeypatch.setenv(SYNC_EVERY_COMMIT, "1")

    async def job(ctx: JobContext) -> None:
        return None

    env = LocalEnvironment(
        create_runtime({"job": job}, clock=clock), tmp_path, synchronous=synchronous
    )
    await env.start()
    try:
        await env.jobs.create("job")
        await clock.advance(0)
        assert env.JOBS_DB.kumofire_before_answer is None
        level = env.JOBS_DB._conn.execute("PRAGMA synchronous").fetchone()[0]
        assert level == (2 if synchronous == "FULL" else 1)
        assert len(syncs) == 0  # SQLite's own COMMIT syncs at FULL
    finally:
        await env.stop()


async def test_a_sync_while_a_turns_transaction_is_open_leaves_that_transaction_owed(
    tmp_path: Path, syncs: Syncs
) -> None:
    """A sync made while another caller's group transaction is open covers what was
    committed before it began, not that transaction: its commit is synced at the next
    answer outside."""
    d1 = LocalD1Database(tmp_path / "one.sqlite", synchronous="FULL")
    shared = OneFile(d1)
    try:
        await d1.exec("CREATE TABLE t (x INTEGER)")
        before = len(syncs)
        with answers.runtime_work():
            await d1.prepare("INSERT INTO t VALUES (1)").run()  # committed, not synced
        assert len(syncs) == before
        d1._begin_group()  # a write of this turn, its commit still to come
        d1._conn.execute("INSERT INTO t VALUES (2)")
        shared.before_answer()
        assert len(syncs) == before + 1
        shared.before_answer()  # the open transaction is not committed: nothing to sync
        assert len(syncs) == before + 1
        assert shared.commits.commit() is None
        shared.before_answer()
        assert len(syncs) == before + 2 and syncs.lengths[-1] == _wal_length(d1)
    finally:
        d1.close()


def test_every_operation_answers_outside_and_the_consumers_calls_do_not() -> None:
    for operation in OPERATIONS:
        method = getattr(Jobs, operation.name)
        assert getattr(method, "__kumofire_answers_outside__", False), operation.name
    for name in ("consume", "dispatch", "dispatch_at_start"):
        assert not hasattr(getattr(Jobs, name), "__kumofire_answers_outside__"), name


async def test_an_applications_schema_change_is_synced_before_its_answer(
    clock: ManualClock, tmp_path: Path, syncs: Syncs
) -> None:
    """A statement SQLite does not count in `total_changes` (`CREATE TABLE`, `PRAGMA
    user_version = ...`) still commits a write: its answer outside waits for the sync."""
    data_dir, cut = tmp_path / "data", tmp_path / "cut"

    async def job(ctx: JobContext) -> None:
        return None

    env = LocalEnvironment(create_runtime({"job": job}, clock=clock), data_dir, synchronous="FULL")
    await env.start()
    try:
        await env.jobs.counts()  # everything committed so far is synced
        await env.JOBS_DB.exec("CREATE TABLE notes (n INTEGER)")
        await env.JOBS_DB.prepare("PRAGMA user_version = 7").run()
        syncs.power_cut(data_dir, cut)
    finally:
        await env.stop()
    with closing(sqlite3.connect(layout.d1_path(cut))) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "notes" in tables
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 7


async def test_an_upsert_over_http_is_answered_as_one_jobs_call(
    clock: ManualClock, tmp_path: Path, syncs: Syncs
) -> None:
    """`PUT /v1/schedules/by-key/{key}` calls the `Jobs` method that also says whether it
    created the schedule: it answers outside like the others (one sync at the end, not one
    per statement), and its answer is durable."""
    data_dir, cut = tmp_path / "data", tmp_path / "cut"

    async def job(ctx: JobContext) -> None:
        return None

    env = LocalEnvironment(create_runtime({"job": job}, clock=clock), data_dir, synchronous="FULL")
    await env.start()
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://jobs") as http:
            await env.jobs.counts()
            before = len(syncs)
            created = await http.put(
                "/v1/schedules/by-key/nightly", json={"name": "job", "every": 3600}
            )
            assert created.status_code == 201, created.text
            assert len(syncs) == before + 1
            changed = await http.put("/v1/schedules/by-key/nightly", json={"every": 60})
            assert changed.status_code == 200, changed.text
            assert len(syncs) == before + 2
            syncs.power_cut(data_dir, cut)
    finally:
        await env.stop()
    env = LocalEnvironment(create_runtime({"job": job}, clock=clock), cut, synchronous="FULL")
    await env.start()
    try:
        schedule = await env.jobs.get_schedule_by_key("nightly")
        assert schedule is not None and schedule.expr == "60"
    finally:
        await env.stop()


async def test_a_create_answered_before_its_arm_commits_still_runs_after_a_power_cut(
    clock: ManualClock, tmp_path: Path, syncs: Syncs
) -> None:
    """The embedded runtime does not wait for a create's arm (`wait_for_arms=False`): the
    answer's sync covers the run's row, not the arm committed after it. A power cut then
    loses the arm; the start re-arms every unfinished run (`dispatch_at_start`)."""
    data_dir, cut = tmp_path / "data", tmp_path / "cut"
    ran: list[str] = []

    async def job(ctx: JobContext) -> None:
        ran.append(ctx.job.id)

    runtime = create_runtime({"job": job}, clock=clock)
    env = LocalEnvironment(runtime, data_dir, synchronous="FULL")
    await env.start()
    run_id = (await env.jobs.create("job", delay=60)).kumofire_job_run_id
    syncs.power_cut(data_dir, cut)
    await clock.advance(0)  # the arm commits now, after the answer's sync
    assert _wal_length(env) > syncs.lengths[-1]
    await env.JOB_COORDINATOR.abort()
    await env.close()
    with closing(sqlite3.connect(layout.d1_path(cut))) as conn:
        assert conn.execute("SELECT count(*) FROM kumofire_local_do_alarms").fetchone()[0] == 0
    assert run_id in _stored_runs(cut)

    env = LocalEnvironment(runtime, cut, synchronous="FULL")
    await env.start()
    try:
        await clock.advance(60)
        assert ran == [run_id]
    finally:
        await env.stop()


async def test_a_cancelled_call_stays_cancelled_when_the_sync_would_fail(
    clock: ManualClock, tmp_path: Path, syncs: Syncs
) -> None:
    """A cancelled `Jobs` call answers nobody, so it syncs nothing: a failing disk does not
    turn its cancellation into a `D1Error` (which `asyncio.timeout` would not recognise)."""

    async def job(ctx: JobContext) -> None:
        return None

    env = LocalEnvironment(create_runtime({"job": job}, clock=clock), tmp_path, synchronous="FULL")
    await env.start()
    try:
        await env.jobs.counts()
        with answers.runtime_work():  # a commit of the runtime's own, not synced
            await env.JOBS_DB.exec("CREATE TABLE notes (n INTEGER)")
        syncs.fail = True
        call = asyncio.ensure_future(env.jobs.create("job"))
        await asyncio.sleep(0)  # the create waits for its commit
        assert not call.done()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        syncs.fail = False
        before = len(syncs)
        await env.jobs.counts()  # the next answer syncs what the cancelled call left
        assert len(syncs) == before + 1
    finally:
        await env.stop()


async def test_jobs_bound_by_hand_to_the_embedded_bindings_sync_before_answering(
    clock: ManualClock, tmp_path: Path, syncs: Syncs
) -> None:
    """`runtime.bind(Resources(db=env.JOBS_DB, ...))`, as the README binds a Worker's `env`,
    on the embedded bindings: its calls are marked as the runtime's work, so the bindings
    leave the sync to the call's `before_answer`, which the D1 binding supplies."""
    data_dir, cut = tmp_path / "data", tmp_path / "cut"

    async def job(ctx: JobContext) -> None:
        return None

    runtime = create_runtime({"job": job}, clock=clock)
    env = LocalEnvironment(runtime, data_dir, synchronous="FULL")
    await env.start()
    try:
        jobs = runtime.bind(
            Resources(db=env.JOBS_DB, queue=env.JOBS_QUEUE, coordinator=env.JOB_COORDINATOR)
        )
        run_id = (await jobs.create("job", delay=60)).kumofire_job_run_id
        syncs.power_cut(data_dir, cut)
    finally:
        await env.stop()
    assert run_id in _stored_runs(cut)


async def test_a_schema_change_that_opens_the_turns_transaction_is_synced_after_its_commit(
    tmp_path: Path, syncs: Syncs
) -> None:
    """The statement SQLite does not count is counted once it ran, after the `BEGIN` it
    opened: a sync while that transaction is open does not take it for synced."""
    d1 = LocalD1Database(tmp_path / "one.sqlite", synchronous="FULL")
    shared = OneFile(d1)
    try:
        await d1.exec("CREATE TABLE t (x INTEGER)")
        before = len(syncs)
        asyncio.get_running_loop().call_soon(lambda: None)  # not alone: a group transaction
        with answers.runtime_work():
            d1._execute("CREATE TABLE u (y INTEGER)", ())[0].close()
        assert shared.commits.pending
        shared.before_answer()  # the open transaction is not committed: nothing to sync
        assert len(syncs) == before
        assert shared.commits.commit() is None
        shared.before_answer()
        assert len(syncs) == before + 1 and syncs.lengths[-1] == _wal_length(d1)
    finally:
        d1.close()
