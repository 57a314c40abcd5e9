"""Per-job options (API.md Part 2): checked at creation, each job's retry policy and timeout,
and its own retention, through the public API on the embedded bindings and the manual clock."""

from __future__ import annotations

from typing import Any

import pytest

from kumofire_jobs import JobContext, JobOptions, RateLimit, RetryPolicy, create_runtime
from kumofire_jobs.core.clock import ManualClock
from tests.support.envs import EnvFactory, noop


class Failing:
    """A handler that fails every attempt, recording each."""

    def __init__(self) -> None:
        self.attempts: list[int] = []

    async def __call__(self, ctx: JobContext) -> None:
        self.attempts.append(ctx.job.attempt)
        raise RuntimeError("nope")


def test_options_are_checked_when_the_runtime_is_created() -> None:
    with pytest.raises(ValueError, match="'nope', which has no handler"):
        create_runtime({"email": noop}, job_options={"nope": JobOptions()})
    with pytest.raises(TypeError, match="must be a JobOptions"):
        create_runtime({"email": noop}, job_options={"email": {"timeout": 5}})  # type: ignore[dict-item]
    bad: list[dict[str, Any]] = [
        {"timeout": 0},
        {"timeout": float("inf")},
        {"concurrency": 0},
        {"key_concurrency": -1},
        {"keep_succeeded": -1.0},
        {"keep_failed": 0},
    ]
    for fields in bad:
        with pytest.raises(ValueError, match=next(iter(fields))):
            JobOptions(**fields)
    with pytest.raises(TypeError, match="concurrency must be an integer"):
        JobOptions(concurrency=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rate_limit must be a RateLimit"):
        JobOptions(rate_limit=(10, 60.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"RateLimit\.limit"):
        RateLimit(0, 1.0)
    with pytest.raises(ValueError, match=r"RateLimit\.per"):
        RateLimit(limit=1, per=0)
    options = JobOptions(rate_limit=RateLimit(limit=10, per=60.0), timeout=5)
    assert options.to_json() == {
        "retry": None,
        "timeout": 5,
        "concurrency": None,
        "key_concurrency": None,
        "rate_limit": {"limit": 10, "per": 60.0},
        "key_rate_limit": None,
        "keep_succeeded": None,
        "keep_failed": None,
    }


async def test_a_job_s_retry_policy_replaces_the_runtime_s(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    own, default = Failing(), Failing()
    env = await make_env(
        {"own": own, "default": default},
        retry=RetryPolicy(max_attempts=2, base_delay=1),
        job_options={"own": JobOptions(retry=RetryPolicy(max_attempts=4, base_delay=10))},
    )
    mine = await env.jobs.create("own")
    theirs = await env.jobs.create("default")
    await clock.advance(0)
    run = await env.jobs.get(mine.kumofire_job_run_id)
    assert run is not None and run.max_attempts == 4 and run.status == "scheduled"
    await clock.advance(9.999)
    assert own.attempts == [1]  # its own delay: 10 s, not the runtime's 1 s
    await clock.advance(0.001)
    assert own.attempts == [1, 2]
    await clock.advance(3600)
    assert own.attempts == [1, 2, 3, 4]
    assert default.attempts == [1, 2]
    run = await env.jobs.get(theirs.kumofire_job_run_id)
    assert run is not None and run.max_attempts == 2 and run.status == "failed"


async def test_a_schedule_s_occurrences_get_the_job_s_attempts(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env(
        {"tick": noop}, job_options={"tick": JobOptions(retry=RetryPolicy(max_attempts=7))}
    )
    schedule = await env.jobs.create_schedule("tick", every=60)
    page = await env.jobs.list(schedule_id=schedule.id)
    assert [run.max_attempts for run in page.items] == [7]


async def test_an_attempt_past_the_timeout_is_stopped_and_retried(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    attempts: list[int] = []
    finished: list[int] = []

    async def slow(ctx: JobContext) -> None:
        attempts.append(ctx.job.attempt)
        await clock.sleep_until(clock.now() + 100)
        finished.append(ctx.job.attempt)

    env = await make_env(
        {"slow": slow},
        job_options={
            "slow": JobOptions(timeout=10, retry=RetryPolicy(max_attempts=2, base_delay=1))
        },
    )
    created = await env.jobs.create("slow")
    await clock.advance(9.999)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "running"
    await clock.advance(0.001)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "scheduled" and run.attempt == 1
    assert run.last_error is not None and run.last_error.startswith("TimeoutError")
    await clock.advance(1 + 10)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "failed" and run.attempt == 2
    assert run.last_error is not None and run.last_error.startswith("TimeoutError")
    assert attempts == [1, 2] and finished == []


async def test_a_handler_within_its_timeout_is_not_touched(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def quick(ctx: JobContext) -> None:
        await clock.sleep_until(clock.now() + 5)

    env = await make_env({"quick": quick}, job_options={"quick": JobOptions(timeout=10)})
    created = await env.jobs.create("quick")
    await clock.advance(60)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded" and run.last_error is None


async def test_a_job_s_retention_replaces_the_runtime_s(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env(
        {"short": noop, "long": noop, "failing": Failing()},
        retention_seconds=3600,
        retry=RetryPolicy(max_attempts=1),
        job_options={
            "short": JobOptions(keep_succeeded=60),
            "failing": JobOptions(keep_failed=7200),
        },
    )
    short = await env.jobs.create("short")
    long = await env.jobs.create("long")
    failing = await env.jobs.create("failing")
    canceled = await env.jobs.create("short", delay=10)
    await env.jobs.cancel(canceled.kumofire_job_run_id)
    await clock.advance(0)
    await clock.advance(61)
    await env.jobs.dispatch()  # the cron runs it too, once a minute
    assert await env.jobs.get(short.kumofire_job_run_id) is None
    assert await env.jobs.get(long.kumofire_job_run_id) is not None
    await clock.advance(3600)
    await env.jobs.dispatch()
    # the long job's run, and the canceled run (the runtime's age): gone
    assert await env.jobs.get(long.kumofire_job_run_id) is None
    assert await env.jobs.get(canceled.kumofire_job_run_id) is None
    assert await env.jobs.get(failing.kumofire_job_run_id) is not None
    await clock.advance(3600)
    await env.jobs.dispatch()
    assert await env.jobs.get(failing.kumofire_job_run_id) is None


async def test_a_job_s_retention_applies_when_the_runtime_keeps_runs_forever(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env(
        {"short": noop, "long": noop},
        retention_seconds=None,
        job_options={"short": JobOptions(keep_succeeded=60)},
    )
    short = await env.jobs.create("short")
    long = await env.jobs.create("long")
    await clock.advance(0)
    await clock.advance(86_400)
    await env.jobs.dispatch()
    assert await env.jobs.get(short.kumofire_job_run_id) is None
    assert await env.jobs.get(long.kumofire_job_run_id) is not None
