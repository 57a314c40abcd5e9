"""The built-in demo runtime `kumofire-jobs dev` runs when given no `--app`.

Four jobs to try the lifecycle with: `hello` succeeds (its result names whom it greeted),
`flaky` fails its first attempt and succeeds on the retry, `fail` never succeeds (and uses up
its attempts), and `slow` takes a second, reporting its progress, at most two at once
(`JobOptions(concurrency=2)`): pause it, create a few, resume.
"""

from __future__ import annotations

import asyncio

import msgspec

from .core.context import JobContext
from .core.options import JobOptions
from .core.retry import RetryPolicy
from .core.runtime import create_runtime


async def hello(ctx: JobContext) -> dict[str, object]:
    ctx.log.info("hello", payload=ctx.job.payload)
    # A payload may be far larger than a result (64 KiB): greet a large one by its size.
    size = len(msgspec.json.encode(ctx.job.payload))
    return {"greeted": ctx.job.payload if size <= 1024 else f"a payload of {size} bytes"}


async def flaky(ctx: JobContext) -> None:
    if ctx.job.attempt == 1:
        raise RuntimeError("the first attempt of a flaky job fails")
    ctx.log.info("flaky.recovered", attempt=ctx.job.attempt)


async def fail(ctx: JobContext) -> None:
    raise RuntimeError("this job always fails")


async def slow(ctx: JobContext) -> None:
    for step in range(1, 5):
        await asyncio.sleep(0.25)
        await ctx.progress({"current": step, "total": 4})
    ctx.log.info("slow.done")


runtime = create_runtime(
    {"hello": hello, "flaky": flaky, "fail": fail, "slow": slow},
    retry=RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=60.0),
    job_options={"slow": JobOptions(concurrency=2)},
)
