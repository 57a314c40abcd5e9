"""A limited job's runs keep their history (attempts, log lines, progress, result) as any run
does: those a consumer is handed by the limiter, those its timeout stops, those whose slot
was given away. Embedded bindings, manual clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kumofire_jobs import ConsumeOutcome, JobContext, JobOptions, RetryPolicy
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory
from tests.support.faults import DroppingQueue, FailingNamespace, rewire
from tests.support.spies import consume_outcomes
from tests.test_limits import settle


async def history(env: LocalEnvironment, run_id: str) -> tuple[list[Any], list[Any]]:
    attempts = await env.jobs.attempts(run_id)
    logs = await env.jobs.logs(run_id)
    assert attempts is not None and logs is not None
    return [(a.attempt, a.outcome) for a in attempts], [(line.attempt, line.event) for line in logs]


async def test_handed_over_runs_keep_their_attempts_logs_progress_and_result(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    gate = asyncio.Event()

    async def report(ctx: JobContext) -> dict[str, Any]:
        ctx.log.info("report.started", n=ctx.job.payload)
        await ctx.progress({"done": 1})
        await gate.wait()
        if ctx.job.payload == 2 and ctx.job.attempt == 1:
            raise RuntimeError("first try fails")
        return {"n": ctx.job.payload, "attempt": ctx.job.attempt}

    options = JobOptions(concurrency=1, retry=RetryPolicy(max_attempts=2, base_delay=1))
    env = await make_env({"report": report}, job_options={"report": options})
    queue = DroppingQueue(env.JOBS_QUEUE, drops=0)  # counts the sends
    rewire(env, queue=queue)
    ids = [(await env.jobs.create("report", n)).kumofire_job_run_id for n in range(4)]
    await settle(clock, 0.5)
    gate.set()
    await settle(clock, 0.5)
    # Runs 1-3 were handed over, each by the consumer of the run before: no message of theirs.
    assert queue.sent == 1
    await settle(clock, 2.0)
    for n, run_id in enumerate(ids):
        run = await env.jobs.get(run_id)
        tries = 2 if n == 2 else 1
        assert run is not None and run.status == "succeeded" and run.attempt == tries
        assert run.result == {"n": n, "attempt": tries} and run.progress == {"done": 1}
        attempts, logs = await history(env, run_id)
        expected = [(1, "retried"), (2, "succeeded")] if n == 2 else [(1, "succeeded")]
        assert attempts == expected
        assert logs == [(t, "report.started") for t in range(1, tries + 1)]
    assert queue.sent == 2  # run 2's retry, delivered with the slot free


async def test_a_limited_jobs_timed_out_attempt_is_recorded_and_its_slot_handed_over(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = consume_outcomes(monkeypatch)

    async def slow(ctx: JobContext) -> str:
        ctx.log.info("working")
        if ctx.job.payload == "stuck":
            await clock.sleep_until(clock.now() + 100)
        return "ok"

    # A timeout within the chain's 5 s: the timed-out run's consumer runs the next one.
    options = JobOptions(concurrency=1, timeout=3, retry=RetryPolicy(max_attempts=1))
    env = await make_env({"slow": slow}, job_options={"slow": options})
    stuck = (await env.jobs.create("slow", "stuck")).kumofire_job_run_id
    quick = (await env.jobs.create("slow", "quick")).kumofire_job_run_id
    await clock.advance(3)
    await settle(clock, 0.5)
    run = await env.jobs.get(stuck)
    assert run is not None and run.status == "failed"
    assert await history(env, stuck) == ([(1, "timed_out")], [(1, "working")])
    assert outcomes == [ConsumeOutcome.TIMED_OUT]  # `quick` had no delivery of its own
    run = await env.jobs.get(quick)
    assert run is not None and run.status == "succeeded" and run.result == "ok"
    assert await history(env, quick) == ([(1, "succeeded")], [(1, "working")])


async def test_an_attempt_whose_slot_was_given_away_keeps_its_lines_and_is_interrupted(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[tuple[str, int]] = []
    hang, gate = asyncio.Event(), asyncio.Event()  # `hang` is never set

    async def job(ctx: JobContext) -> None:
        calls.append((ctx.job.id, ctx.job.attempt))
        ctx.log.info("step")
        if len(calls) == 1:
            try:
                await hang.wait()  # stalls while the limiter cannot hear from it
            except asyncio.CancelledError:
                ctx.log.info("stopped")
                raise
        elif ctx.job.attempt == 1:
            await gate.wait()  # holds the slot the stalled run lost

    env = await make_env(
        {"job": job}, lease_seconds=30, job_options={"job": JobOptions(concurrency=1)}
    )
    partition = FailingNamespace(env.JOB_COORDINATOR, "limit_renew")
    rewire(env, coordinator=partition)
    first = (await env.jobs.create("job")).kumofire_job_run_id
    second = (await env.jobs.create("job")).kumofire_job_run_id
    await settle(clock, 1.0)
    assert calls == [(first, 1)]
    await clock.advance(30.0)  # the slot's lease expires (the run's is renewed): `second` runs
    assert calls == [(first, 1), (second, 1)]
    partition.methods.clear()
    await clock.advance(10.0)  # the next renewal learns the slot went on: the handler stops
    run = await env.jobs.get(first)
    assert run is not None and run.status == "running" and run.attempt == 1
    # Its lines were written, the last one too (the lease is still its own).
    assert await history(env, first) == ([], [(1, "step"), (1, "stopped")])
    gate.set()
    await settle(clock, 1.0)
    assert calls[2:] == [(first, 2)]
    run = await env.jobs.get(first)
    assert run is not None and run.status == "succeeded" and run.attempt == 2
    assert await history(env, first) == (
        [(1, "interrupted"), (2, "succeeded")], [(1, "step"), (1, "stopped"), (2, "step")],
    )  # fmt: skip
