"""The built-in demo's jobs (`kumofire_jobs.demo`, what `kumofire-jobs dev` runs without an
app): `hello` succeeds for any payload a run accepts, its result naming whom it greeted."""

from __future__ import annotations

from kumofire_jobs import demo
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.history import MAX_RESULT_BYTES
from tests.support.envs import EnvFactory


async def test_hello_greets_a_small_payload_by_its_value(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"hello": demo.hello})
    created = await env.jobs.create("hello", {"to": "you"})
    await clock.advance(0)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded"
    assert run.result == {"greeted": {"to": "you"}}


async def test_hello_succeeds_with_a_payload_over_the_result_limit(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    # A payload may be 740,000 bytes, a result 64 KiB: echoing it failed the run at once.
    env = await make_env({"hello": demo.hello})
    created = await env.jobs.create("hello", {"to": "x" * (MAX_RESULT_BYTES + 1)})
    await clock.advance(0)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None
    assert run.status == "succeeded", run.last_error
    assert run.result == {"greeted": f"a payload of {MAX_RESULT_BYTES + 10} bytes"}
