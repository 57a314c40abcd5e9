"""A runtime for the tests that start a real `kumofire-jobs dev` process (`--app`)."""

from __future__ import annotations

import asyncio

from kumofire_jobs import JobContext, RetryPolicy, create_runtime


async def sleep(ctx: JobContext) -> None:
    await asyncio.sleep(float(ctx.job.payload or 0))


async def slow_first(ctx: JobContext) -> None:
    """Sleeps `payload` seconds on its first attempt only: a handler a stop cuts off."""
    if ctx.job.attempt == 1:
        await asyncio.sleep(float(ctx.job.payload or 0))


async def marked(ctx: JobContext) -> None:
    """Sleeps `payload` seconds, then logs `marked.done` as its last act."""
    await asyncio.sleep(float(ctx.job.payload or 0))
    ctx.log.info("marked.done")


runtime = create_runtime(
    {"sleep": sleep, "slow_first": slow_first},
    retry=RetryPolicy(max_attempts=3, base_delay=0.1),
    lease_seconds=1.0,
)

# A lease far longer than its runs: no renewal timer wakes while they run (tests/test_dev_stop).
quiet = create_runtime({"marked": marked}, lease_seconds=60.0)
