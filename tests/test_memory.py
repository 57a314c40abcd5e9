"""A long-running embedded runtime keeps no memory per finished run: every run's coordinator
Durable Object leaves memory once the run is done (issue 10: memory grew by about 1.9 KB a
run, forever). The RSS figure itself is measured by bench/memory_bench.py, not here."""

from __future__ import annotations

import gc

from kumofire_coordinator import CoordinatorActor
from kumofire_jobs import CreateRequest, JobContext, RetryPolicy
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.delivery import QueueDeliveryHook
from kumofire_jobs.local.durable_objects import IDLE_EVICTION_SECONDS
from kumofire_jobs.local.environment import LocalJobCoordinator
from tests.support.envs import EnvFactory


def live(kind: type) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


async def noop(ctx: JobContext) -> None:
    return None


async def fail_first(ctx: JobContext) -> None:
    if ctx.job.attempt == 1:
        raise RuntimeError("first attempt fails")


async def test_finished_runs_leave_no_coordinator_in_memory(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env(
        {"noop": noop, "flaky": fail_first},
        retry=RetryPolicy(max_attempts=2, base_delay=5.0),
    )
    namespace = env.JOB_COORDINATOR
    for _ in range(2):
        await env.jobs.create_many([CreateRequest(name="noop")] * 100)
    await env.jobs.create_many([CreateRequest(name="flaky")] * 20)
    canceled = await env.jobs.create("noop", delay=600)
    await env.jobs.cancel(canceled.kumofire_job_run_id)
    await clock.advance(10)  # the flaky runs' retries included
    counts = await env.jobs.counts()
    assert (counts["succeeded"], counts["canceled"]) == (220, 1)
    # No idle period has passed: closed coordinators went as their last call ended.
    assert namespace.instance_count() == 0
    assert namespace.actor_count() == 0
    assert live(CoordinatorActor) == 0
    assert live(LocalJobCoordinator) == 0
    assert live(QueueDeliveryHook) <= 1  # at most the one the runtime shares


async def test_a_waiting_run_keeps_nothing_in_memory(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"noop": noop})
    namespace = env.JOB_COORDINATOR
    created = await env.jobs.create("noop", delay=3600)
    other = await env.jobs.create("noop", delay=3600)
    await clock.advance(0)  # their arms land (create does not wait for them)
    hooks = {
        namespace._actors[
            namespace.idFromName(run.kumofire_job_run_id).toString()
        ].instance.actor._hook
        for run in (created, other)
    }
    assert hooks == {env.runtime._delivery_hook(env.resources)}  # one, shared
    await env.jobs.cancel(other.kumofire_job_run_id)
    await clock.advance(IDLE_EVICTION_SECONDS)
    assert namespace.instance_count() == 0  # evicted while it waits
    assert namespace.actor_count() == 0  # its alarm, an hour ahead, is in storage only
    assert live(CoordinatorActor) == 0
    await clock.advance(3600 - IDLE_EVICTION_SECONDS)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded"
    assert run.started_at is not None
    assert run.started_at == run.scheduled_for  # rebuilt by its alarm, on time
    assert namespace.actor_count() == 0
