"""Handlers that do not play by the rules (found by outside testing): one that catches the
CancelledError its job's timeout or a cancel stops it with and returns anyway, one that raises
CancelledError itself, one that calls sys.exit(). Each ends its own attempt as documented and
nothing else: the runtime and the other runs go on."""

from __future__ import annotations

import asyncio
import sys

from kumofire_jobs import JobContext, JobOptions, RetryPolicy
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory


async def outcomes_of(env: LocalEnvironment, run_id: str) -> list[tuple[int, str]]:
    return [(a.attempt, a.outcome) for a in await env.jobs.attempts(run_id) or []]


async def ok(ctx: JobContext) -> str:
    return "ok"


async def test_a_handler_that_swallows_its_timeout_still_times_out(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def stubborn(ctx: JobContext) -> str:
        try:
            await clock.sleep_until(clock.now() + 100)
        except asyncio.CancelledError:
            await clock.sleep_until(clock.now() + 1)  # cleans up, then returns as if done
            return "finished anyway"
        return "on time"

    options = JobOptions(timeout=10, retry=RetryPolicy(max_attempts=2, base_delay=1))
    env = await make_env({"stubborn": stubborn, "ok": ok}, job_options={"stubborn": options})
    run_id = (await env.jobs.create("stubborn")).kumofire_job_run_id
    await clock.advance(11 + 1 + 11)
    # It answered after its timeout: a timed-out attempt, retried, as one that let the
    # CancelledError through (before, the first attempt succeeded at 11 s).
    assert await outcomes_of(env, run_id) == [(1, "timed_out"), (2, "timed_out")]
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "failed" and run.result is None
    assert run.last_error is not None and run.last_error.startswith("TimeoutError")
    # The consumer's task is not left cancelling: the next run succeeds.
    other = (await env.jobs.create("ok")).kumofire_job_run_id
    await clock.advance(0)
    assert await outcomes_of(env, other) == [(1, "succeeded")]


async def test_a_handler_that_swallows_a_cancel_leaves_the_run_canceled(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def stubborn(ctx: JobContext) -> str:
        try:
            while True:
                await ctx.heartbeat()
                await clock.sleep_until(clock.now() + 1)
        except asyncio.CancelledError:
            return "finished anyway"

    env = await make_env({"stubborn": stubborn}, lease_seconds=3.0)
    run_id = (await env.jobs.create("stubborn")).kumofire_job_run_id
    await clock.advance(2)
    assert (await env.jobs.cancel(run_id)).status == "canceled"  # type: ignore[union-attr]
    await clock.advance(5)
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "canceled" and run.result is None
    assert await outcomes_of(env, run_id) == [(1, "canceled")]


async def test_a_cancelled_error_the_handler_raises_itself_is_an_ordinary_error(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def cancels(ctx: JobContext) -> None:
        task = asyncio.ensure_future(asyncio.sleep(3600))
        task.cancel()
        await task  # nobody stopped the handler: its own task's CancelledError comes out

    env = await make_env(
        {"cancels": cancels}, retry=RetryPolicy(max_attempts=2, base_delay=1), lease_seconds=30
    )
    run_id = (await env.jobs.create("cancels")).kumofire_job_run_id
    await clock.advance(0)
    # A failed attempt at once, retried after the backoff: not an "interrupted" attempt left
    # running until its 30 s lease expires, as if the consumer had died.
    assert await outcomes_of(env, run_id) == [(1, "retried")]
    await clock.advance(1)
    assert await outcomes_of(env, run_id) == [(1, "retried"), (2, "failed")]
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "failed"
    assert run.last_error == "CancelledError"


async def test_sys_exit_in_a_handler_fails_its_attempt_not_the_runtime(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def exits(ctx: JobContext) -> None:
        sys.exit(3)  # a script's main() reused as a job, say

    env = await make_env({"exits": exits, "ok": ok}, retry=RetryPolicy(max_attempts=1))
    run_id = (await env.jobs.create("exits")).kumofire_job_run_id
    await clock.advance(0)  # before, SystemExit went up through the consumer and the server
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "failed" and run.last_error == "SystemExit: 3"
    attempts = await env.jobs.attempts(run_id)
    assert attempts is not None and attempts[0].outcome == "failed"
    assert attempts[0].error is not None and "sys.exit(3)" in attempts[0].error
    other = (await env.jobs.create("ok")).kumofire_job_run_id
    await clock.advance(0)
    assert await outcomes_of(env, other) == [(1, "succeeded")]


async def test_a_base_exception_from_a_handler_fails_its_attempt_not_the_runtime(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    class Odd(BaseException):
        pass

    async def odd(ctx: JobContext) -> None:
        raise (GeneratorExit() if ctx.job.attempt == 1 else Odd("not an Exception"))

    env = await make_env({"odd": odd, "ok": ok}, retry=RetryPolicy(max_attempts=2, base_delay=1))
    run_id = (await env.jobs.create("odd")).kumofire_job_run_id
    await clock.advance(0)  # before, it went up through the consumer: the run waited for its lease
    await clock.advance(1)
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "failed"
    assert run.last_error == "Odd: not an Exception"
    assert await outcomes_of(env, run_id) == [(1, "retried"), (2, "failed")]
    other = (await env.jobs.create("ok")).kumofire_job_run_id
    await clock.advance(0)
    assert await outcomes_of(env, other) == [(1, "succeeded")]


async def test_a_handler_whose_cleanup_raises_after_its_timeout_still_times_out(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def cleanup_fails(ctx: JobContext) -> None:
        try:
            await clock.sleep_until(clock.now() + 100)
        finally:
            raise RuntimeError("cleanup failed")  # replaces the timeout's CancelledError

    async def cancels(ctx: JobContext) -> None:
        task = asyncio.ensure_future(asyncio.sleep(3600))
        task.cancel()
        await task

    options = JobOptions(timeout=10, retry=RetryPolicy(max_attempts=1))
    env = await make_env(
        {"cleanup_fails": cleanup_fails, "cancels": cancels},
        job_options={"cleanup_fails": options},
        retry=RetryPolicy(max_attempts=1),
        lease_seconds=30,
    )
    run_id = (await env.jobs.create("cleanup_fails")).kumofire_job_run_id
    await clock.advance(11)
    # The stop counts, as when the CancelledError is let through or swallowed.
    assert await outcomes_of(env, run_id) == [(1, "timed_out")]
    # And the consumer's task is not left cancelling: a CancelledError the next handler
    # raises itself is still an ordinary error, not taken for a stop of the consumer.
    other = (await env.jobs.create("cancels")).kumofire_job_run_id
    await clock.advance(0)
    assert await outcomes_of(env, other) == [(1, "failed")]
