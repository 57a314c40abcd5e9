"""Flows (API.md Part 2, "Flows"): a parent that waits for its children, its release by the
last child whatever the outcomes, `ctx.children`, the cancel cascade, `list(parent_id=...)`,
and every crash point between a child's finish and the parent's release, recovered."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from kumofire_jobs import (
    BulkResult,
    CreateRequest,
    JobContext,
    JobRun,
    NonRetryableError,
    UnknownJobError,
    ValidationError,
)
from kumofire_jobs.core.bindings import DurableObjectNamespace
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.flow_store import FlowStore
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from tests.support.envs import EnvFactory
from tests.support.faults import rewire

LEASE = 30.0


class Parent:
    """A parent's handler: records when it ran and the children it saw."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[JobRun]]] = []

    async def __call__(self, ctx: JobContext) -> None:
        self.calls.append((ctx.job.attempt, list(ctx.children)))


class Child:
    """A child's handler: succeeds, fails for good (payload "fail"), or waits for `gate`
    (payload "wait"; a cancel reaches it at the background lease renewal)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.ran: list[Any] = []

    async def __call__(self, ctx: JobContext) -> None:
        self.ran.append(ctx.job.payload)
        if ctx.job.payload == "fail":
            raise NonRetryableError("this child fails")
        if ctx.job.payload == "wait":
            await self.gate.wait()


async def flow_env(make_env: EnvFactory) -> tuple[LocalEnvironment, Parent, Child]:
    parent, child = Parent(), Child()
    env = await make_env({"parent": parent, "child": child}, lease_seconds=LEASE)
    return env, parent, child


def kids(*payloads: Any, **options: Any) -> list[CreateRequest]:
    return [CreateRequest(name="child", payload=p, **options) for p in payloads]


async def status(env: LocalEnvironment, run_id: str) -> str:
    run = await env.jobs.get(run_id)
    assert run is not None
    return run.status.value


class Watched:
    """A coordinator namespace that counts each stub call by (name, method) and fails a
    method of one name a number of times: a crash at that call."""

    def __init__(self, inner: DurableObjectNamespace) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []
        self.failing: dict[tuple[str, str], int] = {}

    def idFromName(self, name: str) -> Any:
        return self.inner.idFromName(name)

    def get(self, id: Any) -> Any:
        raise AssertionError("the runtime addresses coordinators by name")

    def getByName(self, name: str) -> Any:
        return _WatchedStub(self, name, self.inner.getByName(name))

    def count(self, name: str, method: str) -> int:
        return self.calls.count((name, method))


class _WatchedStub:
    def __init__(self, namespace: Watched, name: str, inner: Any) -> None:
        self._namespace, self._name, self._inner = namespace, name, inner
        self.id = inner.id

    def __getattr__(self, method: str) -> Any:
        target = getattr(self._inner, method)
        namespace, key = self._namespace, (self._name, method)

        async def call(*args: Any) -> Any:
            namespace.calls.append(key)
            if namespace.failing.get(key, 0) > 0:
                namespace.failing[key] -= 1
                raise ConnectionError(f"injected failure of {method} on {self._name}")
            return await target(*args)

        return call


def fail_release(monkeypatch: pytest.MonkeyPatch, times: int = 1) -> list[str]:
    """`FlowStore.release` raises `times` times (D1 unreachable, or the Worker died there),
    before its statement runs; the ids it failed for."""
    original = FlowStore.release
    failed: list[str] = []

    async def release(self: FlowStore, parent_id: str, now: int) -> int | None:
        if len(failed) < times:
            failed.append(parent_id)
            raise ConnectionError("injected: the Worker died before the release")
        return await original(self, parent_id, now)

    monkeypatch.setattr(FlowStore, "release", release)
    return failed


# --- the release ---------------------------------------------------------------------------------


async def test_the_parent_waits_for_every_child_whatever_its_outcome(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env, parent, child = await flow_env(make_env)
    flow = await env.jobs.create_flow(
        CreateRequest(name="parent", payload={"report": 1}),
        [*kids("ok", "fail"), CreateRequest(name="child", payload="later", delay=3600)],
    )
    ok, failing, later = flow.children
    assert await status(env, flow.parent_id) == "waiting"
    assert (await env.jobs.counts())["waiting"] == 1
    await clock.advance(0)  # two children finish: one succeeded, one failed
    assert [await status(env, i) for i in flow.children] == ["succeeded", "failed", "scheduled"]
    assert await status(env, flow.parent_id) == "waiting" and parent.calls == []
    await clock.advance(1800)
    assert parent.calls == []  # not before the last child
    canceled = await env.jobs.cancel(later)  # the last child finishes by a cancel
    assert canceled is not None and canceled.status == "canceled"
    assert await status(env, flow.parent_id) in ("scheduled", "queued")  # released, armed
    await clock.advance(0)
    assert len(parent.calls) == 1
    attempt, seen = parent.calls[0]
    assert attempt == 1
    assert [run.id for run in seen] == [ok, failing, later]
    assert [run.status.value for run in seen] == ["succeeded", "failed", "canceled"]
    assert all(run.parent_id == flow.parent_id for run in seen)
    assert [run.payload for run in seen] == ["ok", "fail", "later"]
    assert await status(env, flow.parent_id) == "succeeded"
    assert (await env.jobs.counts())["waiting"] == 0
    assert child.ran == ["ok", "fail"]


async def test_a_released_parent_is_due_at_its_own_time(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env, parent, _ = await flow_env(make_env)
    start = clock.now()
    flow = await env.jobs.create_flow(CreateRequest(name="parent", delay=120), kids("a", "b"))
    await clock.advance(0)  # the children finish at once
    run = await env.jobs.get(flow.parent_id)
    assert run is not None and run.status == "scheduled"
    assert run.scheduled_for == run.created_at + timedelta(seconds=120)
    await clock.advance(119.9)
    assert parent.calls == []
    await clock.advance(0.1)
    assert len(parent.calls) == 1 and clock.now() == start + 120


async def test_a_retried_child_keeps_the_parent_waiting_until_it_finishes(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    attempts: list[int] = []

    async def flaky(ctx: JobContext) -> None:
        attempts.append(ctx.job.attempt)
        if ctx.job.attempt < 3:
            raise RuntimeError("not yet")

    parent = Parent()
    env = await make_env({"parent": parent, "flaky": flaky})
    flow = await env.jobs.create_flow(
        CreateRequest(name="parent"), [CreateRequest(name="flaky", max_attempts=3)]
    )
    await clock.advance(0)
    await clock.advance(1)  # attempt 2 (backoff 1 s) fails too
    assert attempts == [1, 2] and await status(env, flow.parent_id) == "waiting"
    await clock.advance(2)  # attempt 3 succeeds: the parent is released and runs
    assert attempts == [1, 2, 3] and len(parent.calls) == 1
    assert [run.status.value for run in parent.calls[0][1]] == ["succeeded"]


async def test_a_run_outside_a_flow_has_no_children(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env, parent, _ = await flow_env(make_env)
    created = await env.jobs.create("parent")
    await clock.advance(0)
    assert parent.calls == [(1, [])]
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.parent_id is None


async def test_two_last_children_finishing_together_release_the_parent_once(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both children write their finish before either tries the release: both see no
    unfinished child, and the one guarded statement lets exactly one of them release."""
    env, parent, child = await flow_env(make_env)
    watched = Watched(env.JOB_COORDINATOR)
    rewire(env, coordinator=watched)
    original = FlowStore.release
    arrived: list[str] = []
    both_finished = asyncio.Event()
    answers: list[int | None] = []

    async def release(self: FlowStore, parent_id: str, now: int) -> int | None:
        arrived.append(parent_id)
        if len(arrived) == 2:
            both_finished.set()
        await both_finished.wait()
        answers.append(await original(self, parent_id, now))
        return answers[-1]

    monkeypatch.setattr(FlowStore, "release", release)
    flow = await env.jobs.create_flow(CreateRequest(name="parent"), kids("wait", "wait"))
    await clock.advance(0)
    assert child.ran == ["wait", "wait"]  # both running, concurrently
    child.gate.set()  # both finish now
    for _ in range(5):
        await clock.advance(0)
    assert arrived == [flow.parent_id, flow.parent_id]
    assert sorted(answers, key=lambda a: a is None)[1] is None  # one released, one did not
    assert sum(answer is not None for answer in answers) == 1
    assert watched.count(flow.parent_id, "arm") == 1
    assert len(parent.calls) == 1 and await status(env, flow.parent_id) == "succeeded"


# --- crash points between a child's finish and the parent's release ----------------------------


async def test_crash_between_the_childs_finish_and_the_release(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's outcome is in D1, its lease still held: its coordinator delivers it again
    when the lease expires, and that consumer releases the parent (before any cron tick)."""
    env, parent, _ = await flow_env(make_env)
    failed = fail_release(monkeypatch)
    flow = await env.jobs.create_flow(CreateRequest(name="parent"), kids("only"))
    await clock.advance(0)
    assert failed == [flow.parent_id]
    assert await status(env, flow.children[0]) == "succeeded"
    assert await status(env, flow.parent_id) == "waiting"
    await clock.advance(LEASE - 0.1)
    assert parent.calls == []
    await clock.advance(0.1)  # the lease expires: the finished child is delivered again
    assert await status(env, flow.parent_id) == "succeeded" and len(parent.calls) == 1
    assert clock.now() % 60 != 0  # recovered by the coordinator, not by a cron tick


async def test_a_failed_settle_in_the_childs_redelivery_is_retried_with_the_alarm(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release fails in the consumer, then again when the child's coordinator delivers
    the finished child: that try is repeated (the alarm's retry, or the message's), and it
    releases the parent, before any cron tick."""
    env, parent, _ = await flow_env(make_env)
    failed = fail_release(monkeypatch, times=2)
    flow = await env.jobs.create_flow(CreateRequest(name="parent"), kids("only"))
    await clock.advance(LEASE - 0.1)
    assert failed == [flow.parent_id] and await status(env, flow.parent_id) == "waiting"
    await clock.advance(29)  # the lease expires at 30 s; the alarm fails, and is retried
    assert failed == [flow.parent_id] * 2  # the second failure: in the redelivery
    assert len(parent.calls) == 1 and await status(env, flow.parent_id) == "succeeded"


async def test_crash_between_the_release_and_the_parents_arm(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env, parent, _ = await flow_env(make_env)
    watched = Watched(env.JOB_COORDINATOR)
    rewire(env, coordinator=watched)
    flow = await env.jobs.create_flow(CreateRequest(name="parent"), kids("only"))
    watched.failing[(flow.parent_id, "arm")] = 1
    await clock.advance(0)
    assert await status(env, flow.parent_id) == "scheduled"  # released, never armed
    assert parent.calls == []
    await clock.advance(LEASE)  # the child's redelivery finds its parent released, arms it
    assert await status(env, flow.parent_id) == "succeeded" and len(parent.calls) == 1
    assert watched.count(flow.parent_id, "arm") == 2


async def test_crash_between_the_parents_arm_and_the_childs_lease_release(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The parent is released and armed, the child's lease not released: the child is
    delivered again, and its consumer neither releases nor runs the parent a second time."""
    env, parent, _ = await flow_env(make_env)
    watched = Watched(env.JOB_COORDINATOR)
    rewire(env, coordinator=watched)
    flow = await env.jobs.create_flow(CreateRequest(name="parent"), kids("only"))
    watched.failing[(flow.children[0], "release")] = 1
    await clock.advance(0)
    assert len(parent.calls) == 1
    await clock.advance(LEASE)  # the redelivered child closes its coordinator
    await clock.advance(120)
    assert len(parent.calls) == 1 and watched.count(flow.parent_id, "arm") == 1
    assert await status(env, flow.parent_id) == "succeeded"
    assert (await env.JOB_COORDINATOR.getByName(flow.children[0]).status())["phase"] == "closed"


async def test_a_parent_released_while_waiting_for_its_own_time_is_armed_again(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The redelivered child re-arms a released parent that has not started: harmless when
    the first arm landed (the same due time), a repair when it did not."""
    env, parent, _ = await flow_env(make_env)
    watched = Watched(env.JOB_COORDINATOR)
    rewire(env, coordinator=watched)
    start = clock.now()
    flow = await env.jobs.create_flow(CreateRequest(name="parent", delay=600), kids("only"))
    watched.failing[(flow.children[0], "release")] = 1
    await clock.advance(LEASE)
    assert watched.count(flow.parent_id, "arm") >= 2  # once more for each redelivery path
    await clock.advance(600 - LEASE - 0.1)
    assert parent.calls == []
    await clock.advance(0.1)
    assert len(parent.calls) == 1 and clock.now() == start + 600


async def test_reconciliation_releases_a_parent_whose_release_was_lost(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child canceled by hand has no coordinator to deliver it again: when the release
    after its cancel fails, the next cron tick finds the waiting parent with no unfinished
    child and releases it."""
    env, parent, _ = await flow_env(make_env)
    flow = await env.jobs.create_flow(CreateRequest(name="parent"), kids("x", delay=3600))
    failed = fail_release(monkeypatch)
    await env.jobs.cancel(flow.children[0])  # answered: the failure is logged
    assert failed == [flow.parent_id] and await status(env, flow.parent_id) == "waiting"
    await clock.advance(59.9)
    assert parent.calls == []
    await clock.advance(0.1)  # the cron tick
    assert len(parent.calls) == 1 and await status(env, flow.parent_id) == "succeeded"
    assert (await env.jobs.dispatch()).flows_released == 0  # nothing left to repair


async def test_reconciliation_arms_a_released_parent_whose_arm_was_lost(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env, parent, _ = await flow_env(make_env)
    watched = Watched(env.JOB_COORDINATOR)
    rewire(env, coordinator=watched)
    flow = await env.jobs.create_flow(CreateRequest(name="parent"), kids("x", delay=3600))
    watched.failing[(flow.parent_id, "arm")] = 1
    await env.jobs.cancel(flow.children[0])
    assert await status(env, flow.parent_id) == "scheduled" and parent.calls == []
    await clock.advance(120)  # overdue by the grace with its actor closed: armed again
    assert len(parent.calls) == 1


async def test_the_embedded_start_releases_waiting_parents(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, parent, _ = await flow_env(make_env)
    flow = await env.jobs.create_flow(CreateRequest(name="parent"), kids("x", delay=3600))
    fail_release(monkeypatch)
    await env.jobs.cancel(flow.children[0])
    result = await env.jobs.dispatch_at_start()
    assert result.flows_released == 1
    await clock.advance(0)
    assert len(parent.calls) == 1


async def test_a_crash_before_the_childrens_arm_is_reconciled(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env, parent, child = await flow_env(make_env)
    watched = Watched(env.JOB_COORDINATOR)
    rewire(env, coordinator=watched)
    original = watched.getByName

    def dead(name: str) -> Any:  # every arm of this create fails: the arms were lost
        stub = original(name)
        watched.failing[(name, "arm")] = watched.failing.get((name, "arm"), 0) + 1
        return stub

    watched.getByName = dead  # type: ignore[method-assign]
    flow = await env.jobs.create_flow(CreateRequest(name="parent"), kids("a", "b"))
    watched.getByName = original  # type: ignore[method-assign]
    await clock.advance(59)
    assert child.ran == [] and await status(env, flow.parent_id) == "waiting"
    await clock.advance(61)  # the cron tick after the grace re-arms the children
    assert sorted(child.ran) == ["a", "b"] and len(parent.calls) == 1


# --- cancel --------------------------------------------------------------------------------------


async def test_canceling_the_parent_cancels_its_unfinished_children(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env, parent, child = await flow_env(make_env)
    flow = await env.jobs.create_flow(
        CreateRequest(name="parent"),
        [*kids("ok", "wait"), CreateRequest(name="child", payload="later", delay=600)],
    )
    done, running, later = flow.children
    await clock.advance(0)
    assert [await status(env, i) for i in flow.children] == ["succeeded", "running", "scheduled"]
    canceled = await env.jobs.cancel(flow.parent_id)
    assert canceled is not None and canceled.status == "canceled"
    assert [await status(env, i) for i in flow.children] == ["succeeded", "canceled", "canceled"]
    await clock.advance(LEASE)  # the running child sees the cancel at its next heartbeat
    await clock.advance(600)
    assert await status(env, running) == "canceled" and await status(env, later) == "canceled"
    assert parent.calls == [] and child.ran == ["ok", "wait"]
    assert await status(env, flow.parent_id) == "canceled"
    again = await env.jobs.cancel(flow.parent_id)  # a finished run comes back unchanged
    assert again == canceled and await status(env, done) == "succeeded"
    # In the history, the cascade ended the running child's attempt; the parent (waiting)
    # and the child not yet started had none.
    outcomes = {i: [a.outcome for a in await env.jobs.attempts(i) or []] for i in flow.children}
    assert outcomes == {done: ["succeeded"], running: ["canceled"], later: []}
    assert await env.jobs.attempts(flow.parent_id) == []


async def test_canceling_a_child_cancels_only_that_child(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env, parent, _ = await flow_env(make_env)
    flow = await env.jobs.create_flow(CreateRequest(name="parent"), kids("a", "b", delay=60))
    await env.jobs.cancel(flow.children[0])
    assert await status(env, flow.children[1]) == "scheduled"
    assert await status(env, flow.parent_id) == "waiting"
    await clock.advance(60)
    assert len(parent.calls) == 1
    assert [r.status.value for r in parent.calls[0][1]] == ["canceled", "succeeded"]


async def test_bulk_cancel_of_waiting_parents_cascades(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env, parent, _ = await flow_env(make_env)
    flows = [
        await env.jobs.create_flow(CreateRequest(name="parent"), kids(i, i, delay=60))
        for i in range(3)
    ]
    other = await env.jobs.create("child", "outside", delay=60)
    result = await env.jobs.cancel_many(status="waiting")
    # Every run the call canceled: the 3 parents matched, and their 6 children with them.
    assert (result.count, result.has_more) == (9, False)
    for flow in flows:
        assert await status(env, flow.parent_id) == "canceled"
        assert [await status(env, i) for i in flow.children] == ["canceled", "canceled"]
    assert await status(env, other.kumofire_job_run_id) == "scheduled"
    await clock.advance(60)
    assert parent.calls == []


async def test_bulk_cancel_past_its_limit_says_no_more_match_once_a_parent_took_them(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """`limit` bounds the runs matched: the parent (oldest) is the one; its children, also
    matched past the limit, go with it, so they are counted and nothing more matches."""
    env, _, _ = await flow_env(make_env)
    flow = await env.jobs.create_flow(CreateRequest(name="parent"), kids("a", "b", delay=60))
    later = datetime.fromtimestamp(clock.now() + 3600, UTC)
    result = await env.jobs.cancel_many(created_before=later, limit=1)
    assert (result.count, result.has_more) == (3, False)
    assert [await status(env, i) for i in (flow.parent_id, *flow.children)] == ["canceled"] * 3
    assert await env.jobs.cancel_many(created_before=later) == BulkResult(count=0, has_more=False)
    # Over HTTP the answer is the same shape: a second flow, canceled by name.
    second = await env.jobs.create_flow(CreateRequest(name="parent"), kids("c", delay=60))
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post("/v1/runs:cancel", json={"name": "parent", "limit": 1})
    assert response.status_code == 200 and response.json() == {"count": 2, "has_more": False}
    assert await status(env, second.children[0]) == "canceled"


# --- with the run's history ---------------------------------------------------------------------


async def test_ctx_children_carry_each_childs_result(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The parent sees what each child returned (`result`, kept by the run's history): a
    succeeded child's value, None for one that failed or returned nothing; and the parent,
    `waiting` until then, has no attempt before its release."""
    seen: list[JobRun] = []

    async def part(ctx: JobContext) -> Any:
        if ctx.job.payload == "fail":
            raise NonRetryableError("no total for this region")
        if ctx.job.payload == "none":
            return None
        ctx.log.info("part.done", region=ctx.job.payload)
        return {"region": ctx.job.payload, "total": len(ctx.job.payload)}

    async def report(ctx: JobContext) -> dict[str, int]:
        seen.extend(ctx.children)
        return {"total": sum(c.result["total"] for c in ctx.children if c.result is not None)}

    env = await make_env({"report": report, "part": part})
    flow = await env.jobs.create_flow(
        CreateRequest(name="report"),
        [CreateRequest(name="part", payload=p) for p in ("eu", "apac", "fail", "none")],
    )
    assert await env.jobs.attempts(flow.parent_id) == []
    waiting = await env.jobs.get(flow.parent_id)
    assert waiting is not None and waiting.status == "waiting" and waiting.result is None
    await clock.advance(0)  # the children run, the last releases the parent
    await clock.advance(0)  # the parent runs
    assert [c.id for c in seen] == flow.children
    assert [c.result for c in seen] == [
        {"region": "eu", "total": 2}, {"region": "apac", "total": 4}, None, None,
    ]  # fmt: skip
    assert [c.status.value for c in seen] == ["succeeded", "succeeded", "failed", "succeeded"]
    done = await env.jobs.get(flow.parent_id)
    assert done is not None and done.status == "succeeded" and done.result == {"total": 6}
    assert [a.outcome for a in await env.jobs.attempts(flow.parent_id) or []] == ["succeeded"]
    logs = await env.jobs.logs(flow.children[0])
    assert [(line.event, line.fields) for line in logs or []] == [("part.done", {"region": "eu"})]


# --- list, create --------------------------------------------------------------------------------


async def test_list_by_parent_id(make_env: EnvFactory, clock: ManualClock) -> None:
    env, _, _ = await flow_env(make_env)
    flow = await env.jobs.create_flow(CreateRequest(name="parent"), kids(*range(5), delay=60))
    other = await env.jobs.create_flow(CreateRequest(name="parent"), kids("x", delay=60))
    first = await env.jobs.list(parent_id=flow.parent_id, limit=3)
    assert [r.id for r in first.items] == flow.children[::-1][:3]  # newest first
    assert first.next_cursor is not None
    rest = await env.jobs.list(parent_id=flow.parent_id, limit=3, cursor=first.next_cursor)
    assert [r.id for r in rest.items] == flow.children[::-1][3:] and rest.next_cursor is None
    only = await env.jobs.list(parent_id=other.parent_id, status="scheduled")
    assert [r.id for r in only.items] == other.children
    assert (await env.jobs.list(parent_id="run_missing")).items == []
    assert [r.parent_id for r in first.items] == [flow.parent_id] * 3


async def test_create_flow_checks_each_run(make_env: EnvFactory) -> None:
    env, _, _ = await flow_env(make_env)
    parent = CreateRequest(name="parent")
    with pytest.raises(ValidationError, match="1 to 100 children"):
        await env.jobs.create_flow(parent, [])
    with pytest.raises(ValidationError, match="1 to 100 children"):
        await env.jobs.create_flow(parent, kids(*range(101)))
    with pytest.raises(UnknownJobError, match=r"children\[1\]"):
        await env.jobs.create_flow(parent, [*kids(1), CreateRequest(name="nope")])
    with pytest.raises(ValidationError, match=r"children\[0\]: .*max_attempts"):
        await env.jobs.create_flow(parent, kids(1, max_attempts=0))
    with pytest.raises(ValidationError, match=r"children\[0\]: .*dedupe_key"):
        await env.jobs.create_flow(parent, [CreateRequest(name="child", dedupe_key="k")])
    with pytest.raises(UnknownJobError, match="parent"):
        await env.jobs.create_flow(CreateRequest(name="nope"), kids(1))
    assert sum((await env.jobs.counts()).values()) == 0  # nothing was created
    flow = await env.jobs.create_flow(parent, kids(*range(100), delay=60))
    assert len(flow.children) == 100 and len(set(flow.children)) == 100
    assert sorted(flow.children) == flow.children and flow.parent_id < flow.children[0]


async def test_a_parents_dedupe_key_deduplicates_the_whole_flow(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env, parent, _ = await flow_env(make_env)
    first = await env.jobs.create_flow(
        CreateRequest(name="parent", dedupe_key="nightly"), kids("a", "b", delay=60)
    )
    again = await env.jobs.create_flow(
        CreateRequest(name="parent", dedupe_key="nightly"), kids("c", delay=60)
    )
    assert again == first
    assert sum((await env.jobs.counts()).values()) == 3  # no second parent, no child "c"
    await clock.advance(60)
    assert len(parent.calls) == 1


async def test_the_testing_kit_runs_a_flow_to_its_end() -> None:
    """`JobsHarness.run_until_idle` counts a waiting parent as unfinished, so a flow whose
    children are delayed runs to its parent's end."""
    from kumofire_jobs.testing import JobsHarness

    parent = Parent()

    async def child(ctx: JobContext) -> None:
        return None

    async with JobsHarness({"parent": parent, "child": child}) as harness:
        flow = await harness.jobs.create_flow(
            CreateRequest(name="parent"), [CreateRequest(name="child", delay=600)]
        )
        await harness.run_until_idle()
        assert len(parent.calls) == 1 and (await harness.run(flow.parent_id)).status == "succeeded"


async def test_retention_keeps_a_waiting_parents_finished_children(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    parent = Parent()

    async def child(ctx: JobContext) -> None:
        return None

    env = await make_env({"parent": parent, "child": child}, retention_seconds=3600)
    early = CreateRequest(name="child", payload="early")
    late = CreateRequest(name="child", payload="late", delay=7200)
    flow = await env.jobs.create_flow(CreateRequest(name="parent"), [early, late])
    await clock.advance(3720)  # past the early child's retention age: the parent still waits
    assert await status(env, flow.children[0]) == "succeeded"
    await clock.advance(3600)  # the late child finishes; the parent runs
    assert [run.payload for run in parent.calls[0][1]] == ["early", "late"]
    await clock.advance(3720)  # the parent finished: the whole flow ages out
    assert await env.jobs.get(flow.children[0]) is None
    assert await env.jobs.get(flow.parent_id) is None


async def test_retention_keeps_the_children_of_a_released_parent_until_it_finishes(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    # Released but not run yet (due at its own later time): its handler still reads
    # `ctx.children`, so they are kept while it is unfinished, not only while it waits.
    parent = Parent()

    async def child(ctx: JobContext) -> None:
        return None

    env = await make_env({"parent": parent, "child": child}, retention_seconds=3600)
    flow = await env.jobs.create_flow(
        CreateRequest(name="parent", delay=7200), [CreateRequest(name="child", payload="c")]
    )
    await clock.advance(3720)  # the child finished long ago; the parent is due at 7200 s
    assert await status(env, flow.parent_id) == "scheduled"
    assert await status(env, flow.children[0]) == "succeeded"
    await clock.advance(3600)
    assert [run.payload for run in parent.calls[0][1]] == ["c"]
