"""Reconciliation's cursor, kept in D1 and shared by every isolate (`reconcile_cursor.py`), on
the embedded bindings with the manual clock. Another runtime bound to the same bindings
stands for another isolate of the same Worker: its cron passes go on from where any pass
stopped, so a lost run behind more than `limit` healthy overdue runs is reached however
often isolates come and go, and a walk that reached the newest starts again at the oldest."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kumofire_jobs import JobContext, Jobs, Resources, Runtime, create_runtime
from kumofire_jobs.core.clock import ManualClock, now_ms
from kumofire_jobs.core.context import Handler
from kumofire_jobs.core.coordination import Coordinators
from kumofire_jobs.core.ids import IdFactory
from kumofire_jobs.core.migrations import (
    SCHEMA_VERSION,
    SchemaOutdatedError,
    apply_migrations,
    schema_version,
)
from kumofire_jobs.core.models import DispatchResult
from kumofire_jobs.core.reconcile_cursor import CURSOR_TABLE
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory
from tests.support.faults import FailingNamespace, FaultyD1, rewire

REPO_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
LIMIT = 3
GRACE = 10  # seconds: the runs are overdue 20 s after their create


class Backlog:
    """`healthy` long runs (their handlers wait, their leases kept), then one run whose
    coordinator never heard of it (its arm failed after the insert): all overdue."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.done = asyncio.Event()
        self.ran: list[str] = []
        self.lost = ""

    def handlers(self) -> dict[str, Handler]:
        async def long(ctx: JobContext) -> None:
            await self.done.wait()

        async def job(ctx: JobContext) -> None:
            self.ran.append(ctx.job.id)

        return {"long": long, "job": job}

    async def start(self, make_env: EnvFactory, healthy: int) -> LocalEnvironment:
        env = await make_env(self.handlers(), reconcile_grace_seconds=GRACE)
        for _ in range(healthy):
            await env.jobs.create("long")
        await self.clock.advance(0.001)
        original = env.resources
        rewire(env, coordinator=FailingNamespace(env.JOB_COORDINATOR, "arm", times=1))
        self.lost = (await env.jobs.create("job")).kumofire_job_run_id
        env.resources, env.jobs = original, env.runtime.bind(original)
        await self.clock.advance(2 * GRACE)
        assert self.ran == []
        return env

    def isolate(self, resources: Resources) -> Jobs:
        """A new runtime (a new isolate, nothing in its memory) on the same bindings."""
        runtime = create_runtime(self.handlers(), clock=self.clock, reconcile_grace_seconds=GRACE)
        return runtime.bind(resources)


@pytest.fixture
async def backlog(clock: ManualClock) -> AsyncIterator[Backlog]:
    made = Backlog(clock)
    yield made
    made.done.set()  # the long handlers end
    await clock.advance(0)


def counts(result: DispatchResult) -> tuple[int, int, int]:
    return result.checked, result.dispatched, result.recovered


async def test_two_isolates_alternating_walk_the_backlog_together(
    make_env: EnvFactory, clock: ManualClock, backlog: Backlog
) -> None:
    env = await backlog.start(make_env, 2 * LIMIT)  # two pages of healthy runs, then the lost
    other = backlog.isolate(env.resources)
    # Each pass goes on from where the other's stopped (kept per isolate, each walked the
    # first page in turn, and the lost run was reached only at the fifth pass).
    assert counts(await env.jobs.dispatch(limit=LIMIT)) == (LIMIT, 0, 0)
    assert counts(await other.dispatch(limit=LIMIT)) == (LIMIT, 0, 0)
    assert counts(await env.jobs.dispatch(limit=LIMIT)) == (1, 1, 0)
    await clock.advance(0)
    assert backlog.ran == [backlog.lost]


async def test_a_new_isolate_every_pass_gets_past_the_first_page_then_wraps_around(
    make_env: EnvFactory, clock: ManualClock, backlog: Backlog
) -> None:
    env = await backlog.start(make_env, 2 * LIMIT)
    passes = [counts(await backlog.isolate(env.resources).dispatch(limit=LIMIT)) for _ in "abc"]
    assert passes == [(LIMIT, 0, 0), (LIMIT, 0, 0), (1, 1, 0)]
    await clock.advance(0)
    assert backlog.ran == [backlog.lost]
    # The walk reached the newest: the next passes start again from the oldest, and go on.
    passes = [counts(await backlog.isolate(env.resources).dispatch(limit=LIMIT)) for _ in "abc"]
    assert passes == [(LIMIT, 0, 0), (LIMIT, 0, 0), (LIMIT, 0, 0)]


async def test_a_run_lost_behind_the_cursor_is_found_after_the_wrap(
    make_env: EnvFactory, clock: ManualClock, backlog: Backlog
) -> None:
    env = await backlog.start(make_env, 2 * LIMIT)
    assert counts(await env.jobs.dispatch(limit=LIMIT)) == (LIMIT, 0, 0)
    # Now the oldest long run's coordinator drops it (its row still says running): the walk
    # has passed it, so only the walk's next cycle can find it.
    oldest = (await env.jobs.list(status="running", limit=10)).items[-1].id
    await Coordinators(env.JOB_COORDINATOR).close(oldest)
    assert counts(await env.jobs.dispatch(limit=LIMIT)) == (LIMIT, 0, 0)
    assert counts(await env.jobs.dispatch(limit=LIMIT)) == (1, 1, 0)  # the newest: it wraps
    assert counts(await env.jobs.dispatch(limit=LIMIT)) == (LIMIT, 0, 1)  # from the oldest


async def test_a_pass_that_fails_before_its_cursor_write_repeats_its_page(
    make_env: EnvFactory, clock: ManualClock, backlog: Backlog
) -> None:
    env = await backlog.start(make_env, LIMIT)
    faulty = FaultyD1(env.JOBS_DB)
    rewire(env, db=faulty)
    faulty.fail(f"INSERT INTO {CURSOR_TABLE}")
    with pytest.raises(RuntimeError, match="injected"):
        await env.jobs.dispatch(limit=LIMIT)
    assert counts(await env.jobs.dispatch(limit=LIMIT)) == (LIMIT, 0, 0)  # the same page
    assert counts(await env.jobs.dispatch(limit=LIMIT)) == (1, 1, 0)
    await clock.advance(0)
    assert backlog.ran == [backlog.lost]


async def test_a_pass_overtaken_by_others_does_not_move_the_cursor_back(
    make_env: EnvFactory, clock: ManualClock, backlog: Backlog
) -> None:
    env = await backlog.start(make_env, 2 * LIMIT)
    other = backlog.isolate(env.resources)
    overtaken: list[tuple[int, int, int]] = []

    async def two_passes_meanwhile() -> None:  # another isolate's two passes, start to end
        overtaken.append(counts(await other.dispatch(limit=LIMIT)))
        overtaken.append(counts(await other.dispatch(limit=LIMIT)))

    faulty = FaultyD1(env.JOBS_DB)
    rewire(env, db=faulty)
    faulty.before(f"INSERT INTO {CURSOR_TABLE}", two_passes_meanwhile)
    # This pass read the cursor at the oldest and walked the first page; before it writes,
    # the other isolate walks the first and second pages. Its write (to the end of the first
    # page) would send the next pass over the second page again: refused.
    assert counts(await env.jobs.dispatch(limit=LIMIT)) == (LIMIT, 0, 0)
    assert overtaken == [(LIMIT, 0, 0), (LIMIT, 0, 0)]
    assert counts(await env.jobs.dispatch(limit=LIMIT)) == (1, 1, 0)
    await clock.advance(0)
    assert backlog.ran == [backlog.lost]


async def test_a_data_dir_of_the_previous_schema_migrates_and_its_runs_go_on(
    clock: ManualClock, data_dir: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old_migrations"
    old.mkdir()
    for path in sorted(REPO_MIGRATIONS.glob("*.sql")):
        if int(path.name.split("_")[0]) < SCHEMA_VERSION:
            shutil.copy(path, old / path.name)
    ran: list[str] = []
    done = asyncio.Event()

    async def long(ctx: JobContext) -> None:
        ran.append(ctx.job.id)
        await done.wait()

    def runtime() -> Runtime:
        return create_runtime({"long": long}, clock=clock, reconcile_grace_seconds=GRACE)

    before = LocalEnvironment(runtime(), data_dir)
    try:  # a data directory the previous release made, with two unfinished runs in it
        await apply_migrations(before.JOBS_DB, old)
        assert await schema_version(before.JOBS_DB) == SCHEMA_VERSION - 1
        with pytest.raises(SchemaOutdatedError):
            await before.jobs.get("run_nothing")  # the schema gate refuses the old schema
        ids = IdFactory()
        now = now_ms(clock)
        for _ in range(2):
            await (
                before.JOBS_DB.prepare(
                    "INSERT INTO kumofire_job_runs (id, name, status, max_attempts, scheduled_for, "
                    "created_at, updated_at) VALUES (?, 'long', 'queued', 1, ?, ?, ?)"
                )
                .bind(ids.run_id(now), now, now, now)
                .run()
            )
    finally:
        await before.close()
    env = LocalEnvironment(runtime(), data_dir)
    try:
        await env.start()  # applies the new migration, then arms the runs it finds
        assert await env.jobs.schema_version() == SCHEMA_VERSION
        await clock.advance(0)
        assert len(ran) == 2
        await clock.advance(2 * GRACE)
        # The cron pass keeps its cursor in the new table: the second pass asks the second run.
        assert counts(await env.jobs.dispatch(limit=1)) == (1, 0, 0)
        row = await env.JOBS_DB.prepare(f"SELECT run_id, version FROM {CURSOR_TABLE}").first()
        assert row is not None and row["version"] == 1 and row["run_id"] in ran
        assert counts(await env.jobs.dispatch(limit=1)) == (1, 0, 0)
        second = await env.JOBS_DB.prepare(f"SELECT run_id FROM {CURSOR_TABLE}").first()
        assert second is not None and {row["run_id"], second["run_id"]} == set(ran)
    finally:
        done.set()
        await clock.advance(0)
        await env.stop(drain_seconds=0)
