"""Flows whose runs are of limited jobs: the children keep the limit (most waiting in the
limiter's line, handed over one to the next), and the last to finish releases the parent,
whichever way it ran; the parent's cancel takes its children out of the line. Embedded
bindings, manual clock."""

from __future__ import annotations

from typing import Any

import pytest

from kumofire_jobs import CreateRequest, JobContext, JobOptions
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.flow_store import FlowStore
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory
from tests.support.faults import DroppingQueue, rewire
from tests.test_limits import Gauge, settle

LIMITED = {"part": JobOptions(concurrency=1), "assemble": JobOptions(concurrency=1)}


async def flow_env(
    make_env: EnvFactory, seen: list[list[str]], **options: Any
) -> tuple[LocalEnvironment, Gauge, DroppingQueue]:
    gauge = Gauge()

    async def assemble(ctx: JobContext) -> int:
        seen.append([child.status.value for child in ctx.children])
        return len(ctx.children)

    env = await make_env({"part": gauge, "assemble": assemble}, job_options=LIMITED, **options)
    queue = DroppingQueue(env.JOBS_QUEUE, drops=0)  # counts the sends
    rewire(env, queue=queue)
    return env, gauge, queue


def parts(count: int) -> list[CreateRequest]:
    return [CreateRequest(name="part", payload=n) for n in range(count)]


async def test_a_flows_limited_children_run_one_at_a_time_and_the_last_releases_the_parent(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    seen: list[list[str]] = []
    env, gauge, queue = await flow_env(make_env, seen)
    flow = await env.jobs.create_flow(CreateRequest(name="assemble"), parts(5))
    await settle(clock, 0.5)
    assert gauge.running == 1 and queue.sent == 1  # the other four wait in the line
    parent = await env.jobs.get(flow.parent_id)
    assert parent is not None and parent.status == "waiting"
    gauge.gate.set()
    await settle(clock, 1.0)
    assert gauge.peak == 1 and gauge.done == flow.children
    # The last child, handed over, released the parent, which ran once and saw them all.
    assert seen == [["succeeded"] * 5]
    parent = await env.jobs.get(flow.parent_id)
    assert parent is not None and parent.status == "succeeded" and parent.result == 5
    assert [a.outcome for a in await env.jobs.attempts(flow.parent_id) or []] == ["succeeded"]
    assert queue.sent == 2  # the first child's message and the parent's: no other
    status = await env.JOB_COORDINATOR.getByName("limiter:part").limit_status()
    assert status == {"held": [], "offered": [], "waiting": 0}


async def test_a_release_that_fails_after_a_handed_over_last_child_is_recovered(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    env, gauge, queue = await flow_env(make_env, seen, lease_seconds=30)
    release = FlowStore.release
    calls: list[str] = []

    async def failing(self: FlowStore, parent_id: str, now: int) -> int | None:
        calls.append(parent_id)
        if len(calls) == 2:  # the last child's
            raise ConnectionError("injected: the Worker died before the release")
        return await release(self, parent_id, now)

    monkeypatch.setattr(FlowStore, "release", failing)
    flow = await env.jobs.create_flow(CreateRequest(name="assemble"), parts(2))
    gauge.gate.set()
    await settle(clock, 0.5)
    # The second child was handed over; its release failed after its finish was written.
    assert calls == [flow.parent_id] * 2 and gauge.done == flow.children and seen == []
    assert queue.sent == 1  # the first child's message only
    last = await env.jobs.get(flow.children[1])
    assert last is not None and last.status == "succeeded"
    parent = await env.jobs.get(flow.parent_id)
    assert parent is not None and parent.status == "waiting"
    await clock.advance(30)  # its lease expires: its coordinator delivers it again
    await settle(clock, 0.5)
    assert seen == [["succeeded", "succeeded"]]
    parent = await env.jobs.get(flow.parent_id)
    assert parent is not None and parent.status == "succeeded"


async def test_canceling_the_parent_takes_its_waiting_children_out_of_the_line(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    seen: list[list[str]] = []
    env, gauge, _ = await flow_env(make_env, seen, lease_seconds=30)
    flow = await env.jobs.create_flow(CreateRequest(name="assemble"), parts(4))
    await settle(clock, 0.5)
    limiter = env.JOB_COORDINATOR.getByName("limiter:part")
    status = await limiter.limit_status()
    assert status == {"held": [flow.children[0]], "offered": [], "waiting": 3}
    canceled = await env.jobs.cancel(flow.parent_id)
    assert canceled is not None and canceled.status == "canceled"
    assert (await limiter.limit_status())["waiting"] == 0  # out of the line at once
    await clock.advance(10)  # the running child learns of its cancel at its next renewal
    await settle(clock, 0.5)
    for run_id in flow.children:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "canceled"
    assert await limiter.limit_status() == {"held": [], "offered": [], "waiting": 0}
    assert gauge.done == [] and seen == []
