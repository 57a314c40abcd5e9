"""Retrying a canceled flow by hand (API.md Part 2, "Flows", "Controlling runs and jobs"): the
parent is `waiting` until every child has finished, after a retry too. A parent retried while
any of its children is unfinished waits for them again, and a bulk retry retries a flow's
children before their parent, so the parent never runs ahead of the children it was retried
with."""

from __future__ import annotations

from kumofire_jobs import CreateRequest, JobContext
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory

seen: list[list[str]] = []


async def report(ctx: JobContext) -> None:
    seen.append([child.status.value for child in ctx.children])


async def part(ctx: JobContext) -> None:
    return None


async def _canceled_flow(env: LocalEnvironment, clock: ManualClock) -> tuple[str, list[str]]:
    """A flow whose children wait 60 s, its parent canceled (the children with it)."""
    seen.clear()
    flow = await env.jobs.create_flow(
        CreateRequest(name="report"), [CreateRequest(name="part", delay=60) for _ in range(2)]
    )
    await env.jobs.cancel(flow.parent_id)
    await clock.advance(0)
    for run_id in (flow.parent_id, *flow.children):
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "canceled"
    return flow.parent_id, flow.children


async def test_a_bulk_retry_of_a_canceled_flow_runs_the_parent_after_its_children(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"report": report, "part": part})
    parent_id, children = await _canceled_flow(env, clock)
    result = await env.jobs.retry_many(status="canceled")
    assert result.count == 3 and not result.has_more
    parent = await env.jobs.get(parent_id)
    assert parent is not None and parent.status == "waiting"
    await clock.advance(1)  # the children run (a retry is due at once), then the parent
    assert seen == [["succeeded", "succeeded"]]
    for run_id in (parent_id, *children):
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded"


async def test_a_parent_retried_after_its_children_waits_for_them(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"report": report, "part": part})
    parent_id, children = await _canceled_flow(env, clock)
    for child in children:
        await env.jobs.retry(child)
    parent = await env.jobs.retry(parent_id)
    assert parent is not None and parent.status == "waiting"
    await clock.advance(1)
    assert seen == [["succeeded", "succeeded"]]


async def test_a_parent_retried_alone_runs_at_once_with_its_finished_children(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"report": report, "part": part})
    parent_id, _ = await _canceled_flow(env, clock)
    parent = await env.jobs.retry(parent_id)
    assert parent is not None and parent.status == "scheduled"
    await clock.advance(1)
    assert seen == [["canceled", "canceled"]]


async def test_a_bulk_retry_cut_by_its_limit_leaves_a_parent_for_after_its_children(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    # The parent is the flow's oldest run: a page cut by `limit` right after it took it
    # without its children, and retried alone it ran at once with their canceled outcomes.
    env = await make_env({"report": report, "part": part})
    parent_id, children = await _canceled_flow(env, clock)
    counts = []
    while True:
        result = await env.jobs.retry_many(status="canceled", limit=1)
        counts.append(result.count)
        await clock.advance(1)  # the runtime runs what each page made due
        if not result.has_more:
            break
    assert counts == [1, 1, 1]
    assert seen == [["succeeded", "succeeded"]]
    for run_id in (parent_id, *children):
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded"
