"""Reconciliation's bounded pass, on the embedded bindings with the manual clock: the runs
it asks about per cron tick are bounded (`limit`), and healthy overdue runs (long handlers
still running) never hide a lost run behind them tick after tick."""

from __future__ import annotations

import asyncio

from kumofire_jobs import JobContext
from kumofire_jobs.core.clock import ManualClock
from tests.support.envs import EnvFactory
from tests.support.faults import FailingNamespace, rewire


async def test_a_lost_run_behind_a_page_of_long_running_runs_is_found(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    done = asyncio.Event()
    ran: list[str] = []

    async def long(ctx: JobContext) -> None:
        await done.wait()  # healthy: its lease is renewed all along

    async def job(ctx: JobContext) -> None:
        ran.append(ctx.job.id)

    # A grace of 10 s: the runs are overdue before the first cron tick (at 60 s).
    env = await make_env({"long": long, "job": job}, reconcile_grace_seconds=10)
    try:
        for _ in range(3):  # a pass's page (`limit` 3 below), all running
            await env.jobs.create("long")
        await clock.advance(0.001)
        rewire(env, coordinator=FailingNamespace(env.JOB_COORDINATOR, "arm", times=1))
        lost = await env.jobs.create("job")  # in D1; its coordinator never heard
        await clock.advance(20)
        assert ran == []
        first = await env.jobs.dispatch(limit=3)
        assert (first.checked, first.dispatched) == (3, 0)  # the long runs, healthy
        # The next pass goes on after them (each asks at most `limit` coordinators).
        second = await env.jobs.dispatch(limit=3)
        assert (second.checked, second.dispatched) == (1, 1)
        await clock.advance(0)
        assert ran == [lost.kumofire_job_run_id]
        # Then from the oldest again: the long runs are asked again, nothing repaired.
        third = await env.jobs.dispatch(limit=3)
        assert (third.checked, third.dispatched, third.recovered) == (3, 0, 0)
        page = await env.jobs.list(status="running", limit=10)
        assert len(page.items) == 3  # the long runs were left alone
    finally:
        done.set()
        await clock.advance(0)
