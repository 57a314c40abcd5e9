"""A `create_many`'s limited runs placed in one limiter request (core/created_placements.py):
their coordinators armed parked first, then `limit_place_many`, then the runs given a slot
armed for now. The public API on the embedded bindings and the manual clock."""

from __future__ import annotations

from typing import Any

import pytest

from kumofire_jobs import CreateRequest, JobContext, JobOptions
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.limits import PARK_MS, PAUSED_PARK_MS
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory
from tests.support.faults import FailingNamespace, rewire
from tests.test_limits import Gauge, settle


class InlineArmsFail(FailingNamespace):
    """Fails every `arm` asked to deliver inline (its fourth argument) once a placement was
    asked, and what `methods` names: with `limit_place_many` there, a create_many stops
    after its parked arms (those armed alone before are delivered)."""

    def getByName(self, name: str) -> Any:
        stub = super().getByName(name)
        inner_arm = stub.arm

        async def failed() -> Any:
            raise RuntimeError("injected failure of an inline arm")

        def arm(*args: Any) -> Any:
            inline = len(args) > 3 and args[3]
            return failed() if inline and self.calls["limit_place_many"] else inner_arm(*args)

        stub.arm = arm
        return stub


class EarlyLeases(FailingNamespace):
    """Records every early lease (a hand-over's): the token the limiter named and the one
    the coordinator granted."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.early: list[tuple[int, int | None]] = []

    def getByName(self, name: str) -> Any:
        stub = super().getByName(name)
        inner_lease = stub.lease

        async def recorded(args: tuple[Any, ...]) -> Any:
            reply = await inner_lease(*args)
            self.early.append((args[4], reply.get("token")))
            return reply

        def lease(*args: Any) -> Any:
            return recorded(args) if len(args) > 4 and args[2] else inner_lease(*args)

        stub.lease = lease
        return stub


async def _succeeded(env: LocalEnvironment, ids: list[str]) -> None:
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1
        assert (await env.JOB_COORDINATOR.getByName(run_id).status())["phase"] == "closed"
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [], "offered": [], "waiting": 0}


async def test_a_create_many_places_its_limited_runs_in_one_limiter_request(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=2)})
    spy = FailingNamespace(env.JOB_COORDINATOR)
    rewire(env, coordinator=spy)
    created = await env.jobs.create_many([CreateRequest(name="report") for _ in range(6)])
    ids = [item.kumofire_job_run_id for item in created]
    await settle(clock, 0.5)
    assert gauge.running == 2
    # The first two (all the limit could start) armed alone, their deliveries placing them
    # (`limit_acquire` with token 0) and their consumers claiming the slots; one placement
    # for the other four, each armed once (parked), none armed again.
    assert spy.calls["limit_place_many"] == 1
    assert spy.calls["arm"] == 6 and spy.calls["limit_acquire"] == 4
    waiting = await env.JOB_COORDINATOR.getByName("limiter:report").limit_waiting(ids)
    assert sorted(waiting["waiting"]) == sorted(ids[2:])
    for run_id in ids[2:]:  # parked until the fallback, with no second write
        status = await env.JOB_COORDINATOR.getByName(run_id).status()
        assert status["phase"] == "armed" and status["due_ms"] >= int(clock.now() * 1000)
    gauge.gate.set()
    await settle(clock, 0.5)
    assert sorted(gauge.done) == sorted(ids) and gauge.peak == 2
    await _succeeded(env, ids)


async def test_a_create_many_s_runs_wait_in_priority_order(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    gauge = Gauge()
    gauge.gate.set()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=1)})
    priorities = [0, 5, -3, 10, 5]
    created = await env.jobs.create_many(
        [CreateRequest(name="report", priority=p) for p in priorities]
    )
    ids = [item.kumofire_job_run_id for item in created]
    await settle(clock, 1.0)
    # The first found the slot free; the others by priority, then in the batch's order.
    assert gauge.done == [ids[0], ids[3], ids[1], ids[4], ids[2]] and gauge.peak == 1
    await _succeeded(env, ids)


@pytest.mark.parametrize("fault", ["failed", "answer_lost"])
async def test_a_failed_placement_request_leaves_each_run_to_place_itself(
    make_env: EnvFactory, clock: ManualClock, fault: str
) -> None:
    """`limit_place_many` fails before reaching the limiter, or after it placed the runs
    (its answer lost): every run is armed for now with its placement, and its delivery
    places it (again: in place, never twice in line)."""
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=2)})
    spy = FailingNamespace(env.JOB_COORDINATOR)
    if fault == "failed":
        spy.methods.add("limit_place_many")
    else:
        spy.lost.add("limit_place_many")
    rewire(env, coordinator=spy)
    created = await env.jobs.create_many([CreateRequest(name="report") for _ in range(5)])
    ids = [item.kumofire_job_run_id for item in created]
    await settle(clock, 0.5)
    assert gauge.running == 2
    assert spy.calls["arm"] == 2 + 3 * 2  # the first two alone; the others parked, then for now
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert len(status["held"]) == 2 and status["waiting"] == 3
    gauge.gate.set()
    await settle(clock, 0.5)
    assert sorted(gauge.done) == sorted(ids) and gauge.peak == 2
    await _succeeded(env, ids)


@pytest.mark.parametrize("recovery", ["fallback_alarm", "reconciliation"])
async def test_a_create_many_stopped_after_its_parked_arms_loses_no_run(
    make_env: EnvFactory, clock: ManualClock, recovery: str
) -> None:
    """The crash point between the parked arms and the placement (here: the placement
    fails, then so do the arms for now): each run is parked in no line. Its fallback alarm
    delivers it after PARK_MS (its note places it then), or before that reconciliation
    arms it for now: a `queued` run overdue by the grace, parked, in no line."""
    gauge = Gauge()
    gauge.gate.set()
    # (With a grace of an hour, no cron tick reconciles them before their fallback alarms.)
    grace = 3600.0 if recovery == "fallback_alarm" else 1.0
    env = await make_env(
        {"report": gauge}, reconcile_grace_seconds=grace,
        job_options={"report": JobOptions(concurrency=2)},
    )  # fmt: skip
    spy = InlineArmsFail(env.JOB_COORDINATOR, "limit_place_many")
    rewire(env, coordinator=spy)
    created = await env.jobs.create_many([CreateRequest(name="report") for _ in range(5)])
    ids = [item.kumofire_job_run_id for item in created]
    await settle(clock, 2.0)
    assert sorted(gauge.done) == sorted(ids[:2])  # armed alone; the other three parked
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [], "offered": [], "waiting": 0}
    spy.methods.clear()
    if recovery == "fallback_alarm":
        await clock.advance(PARK_MS / 1000)
    else:
        await env.jobs.dispatch(limit=10)
    await settle(clock, 1.0)
    assert sorted(gauge.done) == sorted(ids) and gauge.peak <= 2
    await _succeeded(env, ids)


async def test_a_create_many_for_a_paused_job_parks_its_runs_for_the_pause(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """Placed while the job is paused, the runs wait in line, their coordinators parked for
    PAUSED_PARK_MS (not the ordinary fallback); the resume starts them in priority order."""
    done: list[str] = []

    async def report(ctx: JobContext) -> None:
        done.append(ctx.job.id)

    env = await make_env({"report": report}, job_options={"report": JobOptions(concurrency=1)})
    await env.jobs.pause_job("report")
    now = int(clock.now() * 1000)
    created = await env.jobs.create_many(
        [CreateRequest(name="report", priority=p) for p in (1, 3, 2)]
    )
    ids = [item.kumofire_job_run_id for item in created]
    await settle(clock, 0.5)
    for run_id in ids:
        status = await env.JOB_COORDINATOR.getByName(run_id).status()
        assert status["phase"] == "armed" and status["due_ms"] >= now + PAUSED_PARK_MS
    await clock.advance(PARK_MS / 1000)  # the ordinary fallback would have come by now
    await settle(clock, 0.5)
    assert done == []
    await env.jobs.resume_job("report")
    await settle(clock, 1.0)
    assert done == [ids[1], ids[2], ids[0]]
    await _succeeded(env, ids)


async def test_a_hand_over_leases_the_waiter_under_the_token_the_limiter_named(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The limiter writes a hand-over's slot under the token it names, beside the early
    lease: the coordinator grants that token (a higher one only if it granted one as high),
    so nothing is rewritten after the lease."""
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=2)})
    spy = EarlyLeases(env.JOB_COORDINATOR)
    rewire(env, coordinator=spy)
    created = await env.jobs.create_many([CreateRequest(name="report") for _ in range(6)])
    ids = [item.kumofire_job_run_id for item in created]
    await settle(clock, 0.5)
    gauge.gate.set()
    await settle(clock, 0.5)
    assert sorted(gauge.done) == sorted(ids) and gauge.peak == 2
    assert len(spy.early) == 4  # each waiter handed over
    assert all(named > 0 and granted == named for named, granted in spy.early), spy.early
    await _succeeded(env, ids)
