"""An attempt's one outcome against what its lease keeper does meanwhile, on the embedded
bindings with the manual clock: once the handler has ended, neither the job's timeout nor a
lease renewal may stop the consumer while it writes the outcome the handler gave."""

from __future__ import annotations

import asyncio

from kumofire_jobs import JobContext, JobOptions, RetryPolicy
from kumofire_jobs.core.clock import ManualClock
from tests.support.envs import EnvFactory
from tests.support.faults import FaultyD1, rewire

# The fenced outcome writes (`_FINISH`, `_RESCHEDULE` in core/store.py).
OUTCOME = "status = 'running' AND lease_token = ?5"


async def test_a_timeout_falling_while_a_failed_attempt_is_written_leaves_that_outcome(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def failing(ctx: JobContext) -> None:
        raise ValueError("bad input")

    env = await make_env(
        {"job": failing},
        job_options={"job": JobOptions(timeout=5, retry=RetryPolicy(max_attempts=2))},
    )
    db = FaultyD1(env.JOBS_DB)
    rewire(env, db=db)
    slow = asyncio.Event()  # D1 answers the outcome's write late (overloaded, retried)

    async def answer_late() -> None:
        await slow.wait()

    db.before(OUTCOME, answer_late)
    created = await env.jobs.create("job")
    await clock.advance(0)
    await clock.advance(5)  # the job's timeout passes while the write waits
    slow.set()
    await clock.advance(1)  # the retry's backoff
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None
    assert run.status == "failed" and run.attempt == 2, (run.status, run.last_error)
    attempts = await env.jobs.attempts(run.id)
    assert attempts is not None
    # Attempt 1's outcome is the handler's error, not an interruption found after its lease
    # expired (the timeout had cancelled the consumer in the middle of the write).
    assert [(a.attempt, str(a.outcome)) for a in attempts] == [(1, "retried"), (2, "failed")]
    assert attempts[0].error is not None and "ValueError: bad input" in attempts[0].error


async def test_a_renewal_answering_canceled_while_a_failed_attempt_is_written_cuts_nothing(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def failing(ctx: JobContext) -> None:
        raise ValueError("bad input")

    env = await make_env({"job": failing}, lease_seconds=30)
    db = FaultyD1(env.JOBS_DB)
    rewire(env, db=db)
    slow = asyncio.Event()

    async def answer_late() -> None:
        await slow.wait()

    db.before(OUTCOME, answer_late)
    created = await env.jobs.create("job")
    await clock.advance(0)
    run_id = created.kumofire_job_run_id
    await env.jobs.cancel(run_id)  # while the outcome's write waits
    await clock.advance(10)  # a renewal falls due: it would answer "canceled"
    slow.set()
    await clock.advance(0)
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "canceled"
    attempts = await env.jobs.attempts(run_id)
    assert attempts is not None and [str(a.outcome) for a in attempts] == ["canceled"]
    # The consumer went on to release the lease: the coordinator is closed now, not held
    # until the lease would have expired.
    status = await env.JOB_COORDINATOR.getByName(run_id).status()
    assert status["phase"] == "closed" and not status["lease_live"]
