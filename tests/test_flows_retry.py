"""Retrying a canceled flow by hand (API.md Part 2, "Flows", "Controlling runs and jobs"): the
parent is `waiting` until every child has finished, after a retry too. A parent retried while
any of its children is unfinished waits for them again, and a bulk retry retries a flow's
children before their parent, so the parent never runs ahead of the children it was retried
with."""

from __future__ import annotations

from kumofire_jobs import BulkResult, CreateRequest, JobContext
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


async def test_a_bulk_retry_whose_limit_cuts_a_flow_retries_the_parents_children_with_it(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    # limit=1 takes the parent alone (the oldest): its matching children come along, as a
    # bulk cancel takes a parent's children, instead of the parent running ahead of them.
    env = await make_env({"report": report, "part": part})
    parent_id, children = await _canceled_flow(env, clock)
    result = await env.jobs.retry_many(status="canceled", limit=1)
    assert result.count == 3 and not result.has_more
    parent = await env.jobs.get(parent_id)
    assert parent is not None and parent.status == "waiting"
    await clock.advance(1)
    assert seen == [["succeeded", "succeeded"]]
    for run_id in children:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded"


async def test_a_bulk_retry_counts_the_children_it_takes_toward_its_limit(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    # Two canceled flows of three runs: with limit=4 the second flow does not fit beside the
    # first (the parent would come without its children, or the call change 6 runs), so it
    # waits for the next call, which says so in has_more.
    env = await make_env({"report": report, "part": part})
    first = await _canceled_flow(env, clock)
    second = await _canceled_flow(env, clock)
    retried = await env.jobs.retry_many(status="canceled", limit=4)
    assert retried == BulkResult(count=3, has_more=True)
    for flow, canceled in ((first, False), (second, True)):
        for run_id in (flow[0], *flow[1]):
            run = await env.jobs.get(run_id)
            assert run is not None and (run.status == "canceled") is canceled
    retried = await env.jobs.retry_many(status="canceled", limit=4)
    assert retried == BulkResult(count=3, has_more=False)
    await clock.advance(1)
    assert seen == [["succeeded", "succeeded"], ["succeeded", "succeeded"]]
