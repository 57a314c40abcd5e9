"""A queue consumer batch folded in D1 (docs/architecture.md, "Consumer batches"): its runs
start in one guarded statement and their outcomes are written together, while each message
is still leased, run and released on its own. What matters is that every guarantee of the
per-run path holds: one recorded outcome per attempt, the token fencing, each run's own
answer when the folded statement did not match it, and recovery from every crash point."""

from __future__ import annotations

import asyncio
from typing import Any

from kumofire_jobs import CreateRequest, JobContext, JobOptions, RetryPolicy
from kumofire_jobs.core import batch_store
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.delivery import run_message
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.batches import FakeBatch, FakeMessage
from tests.support.envs import EnvFactory, noop
from tests.support.faults import DroppingQueue, FailingNamespace, FaultyD1, rewire

# The folded statements, as `FaultyD1.ran` shows them (kumofire_jobs/core/batch_store.py).
START_MANY = "FROM (SELECT json_extract(value, '$[0]') AS run_id"
OUTCOMES = "FROM (SELECT json_extract(value, '$.run_id') AS run_id"
START_ONE = "SET status = 'running'"
FINISH_ONE = "SET status = ?1"


def count(ran: list[str], text: str) -> int:
    return sum(1 for sql in ran if text in sql)


def with_faulty_d1(env: LocalEnvironment) -> FaultyD1:
    db = FaultyD1(env.JOBS_DB)
    rewire(env, db=db)
    return db


async def attempts_of(env: LocalEnvironment, run_id: str) -> list[tuple[int, str]]:
    return [(a.attempt, str(a.outcome)) for a in await env.jobs.attempts(run_id) or []]


async def test_a_batch_starts_its_runs_in_one_statement_and_writes_their_outcomes_in_one(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    started: list[str] = []
    all_started = asyncio.Event()

    async def job(ctx: JobContext) -> dict[str, Any]:
        started.append(ctx.job.id)
        if len(started) == 20:
            all_started.set()
        await all_started.wait()  # every handler runs at once, as before the fold
        ctx.log.info("done", n=ctx.job.payload)
        return {"n": ctx.job.payload}

    env = await make_env({"job": job})
    db = with_faulty_d1(env)
    created = await env.jobs.create_many([CreateRequest(name="job", payload=i) for i in range(20)])
    await clock.advance(0)

    assert sorted(started) == sorted(r.kumofire_job_run_id for r in created)
    assert count(db.ran, START_MANY) == 1 and count(db.ran, START_ONE) == 1
    assert count(db.ran, OUTCOMES) == 1 and count(db.ran, FINISH_ONE) == 0
    for i, item in enumerate(created):
        run = await env.jobs.get(item.kumofire_job_run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1
        assert run.result == {"n": i}
        assert await attempts_of(env, run.id) == [(1, "succeeded")]
        assert [line.event for line in await env.jobs.logs(run.id) or []] == ["done"]
        assert (await env.JOB_COORDINATOR.getByName(run.id).status())["phase"] == "closed"


async def test_retries_and_failures_of_one_batch_are_written_together(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def job(ctx: JobContext) -> None:
        if ctx.job.payload == "fail" and ctx.job.attempt == 1:
            raise RuntimeError("once")
        if ctx.job.payload == "never":
            raise RuntimeError("always")

    env = await make_env({"job": job}, retry=RetryPolicy(max_attempts=2, base_delay=5))
    db = with_faulty_d1(env)
    payloads = ["ok", "fail", "never", "ok", "fail"]
    created = await env.jobs.create_many([CreateRequest(name="job", payload=p) for p in payloads])
    ids = [r.kumofire_job_run_id for r in created]
    await clock.advance(0)
    # One write of both kinds: the finishes and the reschedules, two statements in a batch().
    assert count(db.ran, OUTCOMES) == 2
    statuses = [(await env.jobs.get(i)).status for i in ids]  # type: ignore[union-attr]
    assert statuses == ["succeeded", "scheduled", "scheduled", "succeeded", "scheduled"]

    await clock.advance(5)  # the three retries are due together: one more batch
    statuses = [(await env.jobs.get(i)).status for i in ids]  # type: ignore[union-attr]
    assert statuses == ["succeeded", "succeeded", "failed", "succeeded", "succeeded"]
    assert await attempts_of(env, ids[1]) == [(1, "retried"), (2, "succeeded")]
    assert await attempts_of(env, ids[2]) == [(1, "retried"), (2, "failed")]
    assert count(db.ran, START_MANY) == 2


async def test_runs_the_batch_start_did_not_match_take_the_per_run_path(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """One batch, as the platform could deliver it: a due run; a run canceled in D1 whose
    coordinator was not told (its lease is granted); a run of a paused job; a run already
    finished (its coordinator closed); a run not due yet; a malformed message. The folded
    start matches the first only; every other message is answered as it is alone."""
    calls: list[str] = []

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.payload)

    env = await make_env({"job": job, "other": job})
    finished = (await env.jobs.create("job", "finished")).kumofire_job_run_id
    await clock.advance(0)
    assert calls == ["finished"]
    # The next three deliveries are lost, so the batch below is the only one.
    coordinators = FailingNamespace(env.JOB_COORDINATOR, "cancel")
    db = FaultyD1(env.JOBS_DB)
    rewire(env, queue=DroppingQueue(env.JOBS_QUEUE, drops=3), coordinator=coordinators, db=db)
    created = await env.jobs.create_many(
        [CreateRequest(name="job", payload=p) for p in ("due", "canceled")]
    )
    due, canceled = (r.kumofire_job_run_id for r in created)
    paused = (await env.jobs.create("other", "paused")).kumofire_job_run_id
    await clock.advance(0)
    assert await env.jobs.cancel(canceled) is not None  # its coordinator's cancel fails
    assert coordinators.calls["cancel"] == 1
    assert await env.jobs.pause_job("other") is not None
    later = (await env.jobs.create("job", "later", delay=60)).kumofire_job_run_id
    ran_before = len(db.ran)

    ids = (due, canceled, paused, finished, later)
    messages = [FakeMessage(run_message(i)) for i in ids] + [FakeMessage({"version": 9})]
    results = await env.runtime.consume_batch(FakeBatch(messages), env.resources)

    assert [str(r.outcome) for r in results] == ["succeeded"] + ["ignored"] * 5
    assert all(m.settled == ("ack", None) for m in messages)
    assert count(db.ran[ran_before:], START_MANY) == 1  # due, canceled and paused together
    assert calls == ["finished", "due"]
    runs = {i: await env.jobs.get(i) for i in ids}
    assert [(runs[i].status, runs[i].attempt) for i in ids] == [  # type: ignore[union-attr]
        ("succeeded", 1),
        ("canceled", 0),
        ("queued", 0),
        ("succeeded", 1),
        ("scheduled", 0),
    ]
    for run_id in (due, canceled, paused):  # closed: nothing left to deliver
        assert (await env.JOB_COORDINATOR.getByName(run_id).status())["phase"] == "closed"

    await env.jobs.resume_job("other")  # re-arms the paused job's due run
    await clock.advance(60)
    assert sorted(calls) == ["due", "finished", "later", "paused"]


async def test_the_same_run_in_two_batches_at_once_runs_once(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[str] = []

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.payload)

    env = await make_env({"job": job})
    rewire(env, queue=DroppingQueue(env.JOBS_QUEUE, drops=3))  # delivered by hand below
    created = await env.jobs.create_many([CreateRequest(name="job", payload=p) for p in "xyz"])
    x, y, z = (r.kumofire_job_run_id for r in created)
    await clock.advance(0)
    assert calls == []
    first = [FakeMessage(run_message(x)), FakeMessage(run_message(y))]
    second = [FakeMessage(run_message(x)), FakeMessage(run_message(z))]
    results = await asyncio.gather(
        env.runtime.consume_batch(FakeBatch(first), env.resources),
        env.runtime.consume_batch(FakeBatch(second), env.resources),
    )
    assert sorted(calls) == ["x", "y", "z"]
    outcomes_of_x = sorted(str(results[i][0].outcome) for i in (0, 1))
    assert outcomes_of_x == ["ignored", "succeeded"]
    assert all(m.settled == ("ack", None) for m in first + second)
    for run_id in (x, y, z):
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_a_stale_batch_cannot_record_outcomes_over_the_next_holders(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """Batch A starts x and y, then stalls past their leases; batch B takes both over (the
    coordinators deliver again) and finishes them; A's outcomes, written together when its
    handlers end, are fenced off by the tokens: each run keeps B's outcome."""
    stalled = asyncio.Event()
    calls: list[tuple[str, int]] = []

    async def job(ctx: JobContext) -> str:
        calls.append((ctx.job.payload, ctx.job.attempt))
        if ctx.job.attempt == 1:
            await stalled.wait()
            return "stale"
        return "fresh"

    env = await make_env({"job": job}, lease_seconds=30)
    db = FaultyD1(env.JOBS_DB)  # and A's renewals fail: it is cut off
    rewire(env, db=db, coordinator=FailingNamespace(env.JOB_COORDINATOR, "renew"))
    created = await env.jobs.create_many([CreateRequest(name="job", payload=p) for p in "xy"])
    ids = [r.kumofire_job_run_id for r in created]
    await clock.advance(0)
    await clock.advance(30)  # the leases expire: both delivered again, together
    assert sorted(calls) == [("x", 1), ("x", 2), ("y", 1), ("y", 2)]
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.result == "fresh"

    writes = count(db.ran, OUTCOMES)
    stalled.set()  # A's handlers end: one write for both, which matches neither row
    await clock.advance(0)
    assert count(db.ran, OUTCOMES) == writes + 1
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.result == "fresh"
        assert await attempts_of(env, run_id) == [(1, "interrupted"), (2, "succeeded")]


async def test_a_failed_outcome_write_is_recovered_by_the_next_delivery(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[tuple[str, int]] = []

    async def job(ctx: JobContext) -> None:
        calls.append((ctx.job.payload, ctx.job.attempt))

    env = await make_env({"job": job}, lease_seconds=30)
    db = with_faulty_d1(env)
    db.fail(OUTCOMES)  # D1 refuses the batch's outcome write once
    created = await env.jobs.create_many([CreateRequest(name="job", payload=p) for p in "abc"])
    ids = [r.kumofire_job_run_id for r in created]
    await clock.advance(0)
    assert sorted(calls) == [("a", 1), ("b", 1), ("c", 1)]
    for run_id in ids:  # the attempt ran, its outcome is not written: still running
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "running"
    await clock.advance(2)  # the messages come back: the leases are still held, ignored
    assert len(calls) == 3
    await clock.advance(28)  # the leases expire: the coordinators deliver again
    assert sorted(calls) == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("c", 1), ("c", 2)]
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 2
        assert await attempts_of(env, run_id) == [(1, "interrupted"), (2, "succeeded")]
        assert (await env.JOB_COORDINATOR.getByName(run_id).status())["phase"] == "closed"


async def test_a_failed_batch_start_is_recovered_when_the_leases_expire(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[tuple[str, int]] = []

    async def job(ctx: JobContext) -> None:
        calls.append((ctx.job.payload, ctx.job.attempt))

    env = await make_env({"job": job}, lease_seconds=30)
    db = with_faulty_d1(env)
    db.fail(START_MANY)
    created = await env.jobs.create_many([CreateRequest(name="job", payload=p) for p in "ab"])
    await clock.advance(0)
    assert calls == []
    await clock.advance(30)
    assert sorted(calls) == [("a", 1), ("b", 1)]  # no attempt was used by the failed start
    for item in created:
        run = await env.jobs.get(item.kumofire_job_run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_outcomes_past_one_bound_value_are_cut_into_several_statements(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    big = "x" * 60_000  # near a result's limit (64 KiB): 20 of them pass one bound value

    async def job(ctx: JobContext) -> str:
        return big + str(ctx.job.payload)

    env = await make_env({"job": job})
    db = with_faulty_d1(env)
    created = await env.jobs.create_many([CreateRequest(name="job", payload=i) for i in range(20)])
    await clock.advance(0)
    assert count(db.ran, OUTCOMES) == 2  # in one batch(): one write
    for i, item in enumerate(created):
        run = await env.jobs.get(item.kumofire_job_run_id)
        assert run is not None and run.status == "succeeded" and run.result == big + str(i)


async def test_a_limited_job_in_a_batch_keeps_its_path(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    running = 0
    most = 0

    async def limited(ctx: JobContext) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await clock.sleep_until(clock.now() + 1)
        running -= 1

    env = await make_env(
        {"limited": limited, "free": noop}, job_options={"limited": JobOptions(concurrency=1)}
    )
    requests = [CreateRequest(name=name) for name in ("limited", "free") * 3]
    created = await env.jobs.create_many(requests)
    await clock.advance(0)
    await clock.advance(10)
    assert most == 1
    for item in created:
        run = await env.jobs.get(item.kumofire_job_run_id)
        assert run is not None and run.status == "succeeded"


async def test_the_folded_statements_look_each_run_up_by_its_primary_key(
    make_env: EnvFactory,
) -> None:
    """One primary-key probe per listed run, never a scan of the runs table."""
    env = await make_env({"job": noop})
    statements = [
        (batch_store._START_MANY, (0, "[]")),
        (batch_store._START_MANY_UNLIMITED, (0, "[]", "[]")),
        (batch_store._FINISH_MANY, ("[]",)),
        (batch_store._RESCHEDULE_MANY, ("[]",)),
    ]
    for sql, params in statements:
        rows = (await env.JOBS_DB.prepare(f"EXPLAIN QUERY PLAN {sql}").bind(*params).all()).results
        plan = " | ".join(str(row["detail"]) for row in rows)
        assert "SEARCH kumofire_job_runs USING PRIMARY KEY (id=?)" in plan, plan
        assert "SCAN kumofire_job_runs" not in plan, plan
