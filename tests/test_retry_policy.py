"""The retry policy's bounds, checked when it is made, and what a failed attempt's retry delay
comes to at its edges, through the public API on the embedded bindings and the manual clock."""

from __future__ import annotations

import math
from typing import Any

import pytest

from kumofire_jobs import ConfigurationError, JobContext, RetryPolicy
from kumofire_jobs.core.clock import ManualClock
from tests.support.envs import EnvFactory


@pytest.mark.parametrize(
    "delays",
    [
        {"base_delay": math.nan},
        {"max_delay": math.nan},
        {"base_delay": math.inf},
        {"max_delay": math.inf},
        {"max_delay": 365 * 86_400 + 1},  # past what a run can be delayed by at its create
    ],
)
def test_a_delay_that_is_no_number_of_seconds_a_run_can_wait_is_refused(
    delays: dict[str, Any],
) -> None:
    with pytest.raises(ConfigurationError, match="retry delays"):
        RetryPolicy(**delays)


async def test_the_longest_retry_delay_leaves_a_run_readable(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def failing(ctx: JobContext) -> None:
        raise RuntimeError("nope")

    longest = RetryPolicy(max_attempts=2, base_delay=365 * 86_400, max_delay=365 * 86_400)
    env = await make_env({"job": failing}, retry=longest)
    created = await env.jobs.create("job")
    await clock.advance(0)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "scheduled" and run.attempt == 1
    assert run.scheduled_for.timestamp() == clock.now() + 365 * 86_400
    # An attempt that ends at once gets the base delay, never more than the cap.
    assert RetryPolicy(base_delay=0).delay(1) == 0.0
    assert RetryPolicy(base_delay=1, max_delay=60, max_attempts=100).delay(99) == 60.0
