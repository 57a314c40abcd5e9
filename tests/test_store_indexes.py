"""What the runs table's indexes cost and serve: status changes on the way to running leave
the index of unfinished runs alone (D1 bills every index entry written), and the periodic
queries read through an index instead of the whole table."""

from __future__ import annotations

import asyncio
from typing import Any

from kumofire_jobs import CreateRequest, JobContext, NonRetryableError
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.flow_store import _CHILDREN, _RELEASABLE, _RELEASE
from kumofire_jobs.core.reconcile_reads import _DUE_SINCE
from kumofire_jobs.core.retention import _PRUNE
from kumofire_jobs.core.store import _CANCEL
from kumofire_jobs.local.d1 import LocalD1Database
from tests.support.envs import EnvFactory, noop

_BROKEN = (
    "SELECT COUNT(*) AS n FROM kumofire_job_runs "
    "WHERE (finished_at IS NULL) <> (status IN ('waiting', 'scheduled', 'queued', 'running'))"
)


async def _plan(db: LocalD1Database, sql: str, *params: Any) -> str:
    rows = await db.prepare(f"EXPLAIN QUERY PLAN {sql}").bind(*params).all()
    return " | ".join(str(row["detail"]) for row in rows.results)


async def test_reconciliation_reads_the_unfinished_runs_index(make_env: EnvFactory) -> None:
    env = await make_env({"job": noop})
    plan = await _plan(env.JOBS_DB, _DUE_SINCE, 0, 10)
    assert "USING INDEX kumofire_job_runs_unfinished" in plan
    assert "SCAN kumofire_job_runs" not in plan.replace("USING INDEX", "")


async def test_the_flows_queries_read_the_parent_index(make_env: EnvFactory) -> None:
    """A flow's queries find children through the partial `parent_id` index, never by a
    scan; the cancel (every cancel, flows or not) is a primary-key lookup and an index probe."""
    env = await make_env({"job": noop})
    db = env.JOBS_DB
    release = await _plan(db, _RELEASE, "run_p", 0)
    assert "USING PRIMARY KEY (id=?)" in release
    assert "USING INDEX kumofire_job_runs_parent (parent_id=?)" in release
    children = await _plan(db, _CHILDREN, "run_p")
    assert "USING INDEX kumofire_job_runs_parent (parent_id=?)" in children
    releasable = await _plan(db, _RELEASABLE, 0, 10)
    assert "USING INDEX kumofire_job_runs_unfinished" in releasable
    assert "USING INDEX kumofire_job_runs_parent (parent_id=?)" in releasable
    cancel = await _plan(db, _CANCEL, 0, "run_p", 1)
    assert "USING PRIMARY KEY (id=?)" in cancel
    assert "USING INDEX kumofire_job_runs_parent (parent_id=?)" in cancel
    for plan in (release, children, releasable, cancel):
        assert "SCAN" not in plan, plan


async def test_retention_reads_a_primary_key_range(make_env: EnvFactory) -> None:
    env = await make_env({"job": noop})
    plan = await _plan(env.JOBS_DB, _PRUNE, "run_0", 0, 10)
    assert "USING PRIMARY KEY (id<?)" in plan


async def test_finished_at_marks_exactly_the_finished_runs(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The partial index's term `finished_at IS NULL` must mean "unfinished" in every status
    a run can reach, or reconciliation would miss runs."""

    async def job(ctx: JobContext) -> None:
        mode = ctx.job.payload["mode"]
        if mode == "fail":
            raise NonRetryableError("no")
        if mode == "flaky" and ctx.job.attempt == 1:
            raise RuntimeError("again")
        if mode == "slow":
            await asyncio.Event().wait()  # runs until the environment stops

    env = await make_env({"job": job})
    db = env.JOBS_DB
    ids = {}
    for mode in ("ok", "fail", "flaky", "slow", "later", "cancel"):
        delay = 600 if mode in ("later", "cancel") else None
        created = await env.jobs.create("job", {"mode": mode}, delay=delay)
        ids[mode] = created.kumofire_job_run_id
    flow = await env.jobs.create_flow(
        CreateRequest(name="job", payload={"mode": "ok"}),
        [CreateRequest(name="job", payload={"mode": "later"}, delay=600)],
    )
    ids["waiting"] = flow.parent_id
    await clock.advance(0.5)  # ok succeeded, fail failed, flaky waits for its retry, slow runs
    await env.jobs.cancel(ids["cancel"])
    assert (await db.prepare(_BROKEN).first()) == {"n": 0}
    statuses = {mode: (await env.jobs.get(run_id)).status for mode, run_id in ids.items()}  # type: ignore[union-attr]
    assert statuses == {
        "ok": "succeeded", "fail": "failed", "flaky": "scheduled", "slow": "running",
        "later": "scheduled", "cancel": "canceled", "waiting": "waiting",
    }  # fmt: skip
    await env.jobs.retry(ids["fail"])  # a finished run back to scheduled
    assert (await db.prepare(_BROKEN).first()) == {"n": 0}
    await clock.advance(60)
    assert (await db.prepare(_BROKEN).first()) == {"n": 0}
    assert (await env.jobs.get(ids["flaky"])).status == "succeeded"  # type: ignore[union-attr]
