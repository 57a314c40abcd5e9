"""The real-runtime suite's job handlers, added to the project's Worker in the test's build
directory only (tests/workerd/harness.py copies this file beside a copy of src/entry.py)."""

import asyncio
import hashlib

from kumofire_jobs import JobContext, JobOptions, NonRetryableError, RetryPolicy


async def flaky(ctx: JobContext) -> dict[str, int]:
    """Fails its first `fail_attempts` attempts; each logs a line and reports its progress, and
    the one that succeeds returns how many it took (the run's history)."""
    ctx.log.info("flaky.attempt", seen=ctx.job.attempt)
    await ctx.progress({"attempt": ctx.job.attempt})
    if ctx.job.attempt <= (ctx.job.payload or {}).get("fail_attempts", 0):
        raise RuntimeError(f"flaky failed attempt {ctx.job.attempt}")
    return {"attempts": ctx.job.attempt}


async def fatal(ctx: JobContext) -> None:
    raise NonRetryableError("fatal: never retried")


async def slow(ctx: JobContext) -> None:
    """Sleeps `seconds` without a heartbeat: the lease lives by background renewal alone."""
    await asyncio.sleep(float(ctx.job.payload["seconds"]))


async def big(ctx: JobContext) -> None:
    """Checks that a large payload arrived whole."""
    data = ctx.job.payload["data"]
    digest = hashlib.sha256(data.encode()).hexdigest()
    if len(data) != ctx.job.payload["size"] or digest != ctx.job.payload["sha256"]:
        raise NonRetryableError(f"payload damaged: {len(data)} chars, sha256 {digest}")


async def limited(ctx: JobContext) -> None:
    """Sleeps `seconds`; its job runs one at a time (`concurrency=1`, the limiter)."""
    await asyncio.sleep(float(ctx.job.payload["seconds"]))


async def paired(ctx: JobContext) -> None:
    """Does nothing; its job runs two at a time (`concurrency=2`): the runs of one queue
    batch end in one turn, and their slots' releases go to the limiter in one request."""


async def parent(ctx: JobContext) -> list[object]:
    """A flow's parent: fails unless it sees its children as the payload expects them;
    returns what they returned (their `result`s)."""
    seen = [child.status.value for child in ctx.children]
    if seen != ctx.job.payload["expect"]:
        raise NonRetryableError(f"the parent saw its children as {seen}")
    return [child.result for child in ctx.children]


TEST_HANDLERS = {
    "flaky": flaky, "fatal": fatal, "slow": slow, "big": big, "limited": limited,
    "paired": paired, "parent": parent,
}  # fmt: skip
LEASE_SECONDS = 6.0
TEST_RUNTIME_OPTIONS = {
    "retry": RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=2.0),
    "lease_seconds": LEASE_SECONDS,
    "job_options": {"limited": JobOptions(concurrency=1), "paired": JobOptions(concurrency=2)},
}
