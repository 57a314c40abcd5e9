"""Per-job limits (API.md Part 2, "Per-job options") end to end: the public API on the
embedded bindings and the manual clock, the limiter actor deciding in its Durable Object."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from kumofire_jobs import CreateRequest, JobContext, JobOptions, RateLimit, create_runtime
from kumofire_jobs.core import handoff, job_control, limits
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.delivery import run_message
from kumofire_jobs.core.run_rows import StartedRow
from kumofire_jobs.core.store import RunStore
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory, noop
from tests.support.faults import DroppingQueue, FailingNamespace, FaultyD1, rewire

# The folded statements, as `FaultyD1.ran` shows them (kumofire_jobs/core/batch_store.py).
START_MANY = "FROM (SELECT json_extract(value, '$[0]') AS run_id"
OUTCOMES = "FROM (SELECT json_extract(value, '$.run_id') AS run_id"


class Gauge:
    """A handler that counts runs executing at once; each waits for `gate`."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.done: list[str] = []
        self.gate = asyncio.Event()

    async def __call__(self, ctx: JobContext) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        self.done.append(ctx.job.id)


async def settle(clock: ManualClock, seconds: float = 1.0, step: float = 0.01) -> None:
    for _ in range(int(seconds / step)):
        await clock.advance(step)


async def test_concurrency_two_never_runs_more_than_two_and_all_ten_succeed(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=2)})
    ids = [(await env.jobs.create("report")).kumofire_job_run_id for _ in range(10)]
    await settle(clock)
    assert gauge.running == 2 and gauge.peak == 2
    gauge.gate.set()
    await settle(clock)
    assert sorted(gauge.done) == sorted(ids)
    assert gauge.peak == 2
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_a_rate_limit_of_five_a_second_starts_no_more_than_five_in_any_second(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    starts: list[float] = []

    async def tick(ctx: JobContext) -> None:
        starts.append(clock.now())

    env = await make_env(
        {"tick": tick}, job_options={"tick": JobOptions(rate_limit=RateLimit(limit=5, per=1.0))}
    )
    ids = [(await env.jobs.create("tick")).kumofire_job_run_id for _ in range(12)]
    await settle(clock, 3.0)
    assert len(starts) == 12
    for s in starts:
        assert sum(1 for t in starts if s <= t < s + 1.0 - 1e-9) <= 5
    assert starts[5] >= starts[0] + 1.0  # none early
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded"


async def test_a_consumer_that_dies_holding_a_slot_frees_it_when_its_lease_expires(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[tuple[str, int]] = []
    hang = asyncio.Event()

    async def job(ctx: JobContext) -> None:
        calls.append((ctx.job.id, ctx.job.attempt))
        if len(calls) == 1:
            await hang.wait()  # the first consumer hangs; its renewals fail

    env = await make_env(
        {"job": job}, lease_seconds=30, job_options={"job": JobOptions(concurrency=1)}
    )
    partition = FailingNamespace(env.JOB_COORDINATOR, "renew", "limit_renew")
    rewire(env, coordinator=partition)
    first = (await env.jobs.create("job")).kumofire_job_run_id
    second = (await env.jobs.create("job")).kumofire_job_run_id
    await settle(clock, 1.0)
    assert calls == [(first, 1)]  # the second waits for the slot
    await clock.advance(29.0)
    partition.methods.clear()
    await settle(clock, 1.0)
    # The slot's lease expired with the run's: both runs ran, one at a time.
    assert sorted(calls[1:]) == sorted([(first, 2), (second, 1)])
    for run_id in (first, second):
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded"
    hang.set()
    await clock.advance(0)


async def test_consumers_racing_with_duplicated_messages_keep_the_limit(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=1)})
    ids = [(await env.jobs.create("report")).kumofire_job_run_id for _ in range(4)]
    await env.JOBS_QUEUE.sendBatch([{"body": run_message(r)} for r in ids] * 2)
    await settle(clock, 0.5)
    assert gauge.peak == 1
    gauge.gate.set()
    await settle(clock, 1.0)
    assert sorted(gauge.done) == sorted(ids) and gauge.peak == 1
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_key_concurrency_one_runs_one_per_key_and_the_keys_side_by_side(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    running: dict[str, int] = {}
    peaks: dict[str, int] = {}
    gate = asyncio.Event()

    async def job(ctx: JobContext) -> None:
        key = ctx.job.concurrency_key or ""
        running[key] = running.get(key, 0) + 1
        peaks[key] = max(peaks.get(key, 0), running[key])
        await gate.wait()
        running[key] -= 1

    env = await make_env({"sync": job}, job_options={"sync": JobOptions(key_concurrency=1)})
    ids = [
        (await env.jobs.create("sync", concurrency_key=key)).kumofire_job_run_id
        for key in ["a", "b", "c"] * 3
    ]
    await settle(clock, 0.5)
    assert running == {"a": 1, "b": 1, "c": 1}  # one per key, the three keys at once
    gate.set()
    await settle(clock, 1.0)
    assert peaks == {"a": 1, "b": 1, "c": 1}
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded"


async def test_unlimited_jobs_beside_a_limited_one_start_in_one_statement(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env(
        {"free": noop, "report": noop}, job_options={"report": JobOptions(concurrency=1)}
    )
    spy = FailingNamespace(env.JOB_COORDINATOR, "limit_acquire")
    rewire(env, coordinator=spy)
    free = await env.jobs.create("free")
    await settle(clock, 0.1)
    run = await env.jobs.get(free.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded"  # never asked the (failing) limiter


async def test_canceling_a_waiting_run_takes_it_out_of_the_line(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=1)})
    first, waiting, last = [(await env.jobs.create("report")).kumofire_job_run_id for _ in range(3)]
    await settle(clock, 0.1)
    await env.jobs.cancel(waiting)
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [first], "offered": [], "waiting": 1}
    gauge.gate.set()
    await settle(clock, 0.1)  # the slot goes to `last` at once, not after an unclaimed offer
    assert gauge.done == [first, last]
    run = await env.jobs.get(waiting)
    assert run is not None and run.status == "canceled"


async def test_a_running_run_canceled_keeps_its_slot_until_its_handler_stopped(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """Why the cancel does not free the slot: the handler is still executing then, and sees
    the cancel only at its next background renewal (a third of the lease); the slot passes
    on when the attempt has ended, so the job never runs two at once."""
    starts: list[tuple[str, float]] = []
    stopped: list[float] = []

    async def job(ctx: JobContext) -> None:
        starts.append((ctx.job.payload, clock.now()))
        if ctx.job.payload == "first":
            try:
                await asyncio.Event().wait()
            finally:
                stopped.append(clock.now())

    env = await make_env(
        {"job": job}, lease_seconds=30, job_options={"job": JobOptions(concurrency=1)}
    )
    first = (await env.jobs.create("job", "first")).kumofire_job_run_id
    await clock.advance(0)
    started = clock.now()
    await env.jobs.create("job", "second")
    await clock.advance(1)
    canceled = await env.jobs.cancel(first)
    assert canceled is not None and canceled.status == "canceled"
    await clock.advance(0)
    assert [payload for payload, _ in starts] == ["first"] and stopped == []
    await clock.advance(9.5)  # the renewal 10 s after the start sees the cancel
    assert stopped == [started + 10]
    assert starts[1:] == [("second", started + 10)]  # not before the handler stopped


async def test_a_canceled_run_cut_off_holding_its_slot_frees_it_when_its_lease_expires(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The bound where nothing proves the consumer gone (Cloudflare; `kumofire-jobs dev`
    while its process lives): a consumer cut off cannot be told from a slow one before its
    lease expires, and freeing the slot sooner could run a second handler beside one still
    executing. The slot is freed with the lease, at most `lease_seconds` after its last
    renewal, and the waiting run starts then."""
    starts: list[tuple[str, float]] = []

    async def job(ctx: JobContext) -> None:
        starts.append((ctx.job.payload, clock.now()))
        if ctx.job.payload == "first":
            await asyncio.Event().wait()  # its consumer is cut off: it never ends

    env = await make_env(
        {"job": job}, lease_seconds=30, job_options={"job": JobOptions(concurrency=1)}
    )
    partition = FailingNamespace(env.JOB_COORDINATOR, "renew", "limit_renew")
    rewire(env, coordinator=partition)
    first = (await env.jobs.create("job", "first")).kumofire_job_run_id
    await clock.advance(0)
    started = clock.now()
    await env.jobs.create("job", "second")
    await clock.advance(1)
    await env.jobs.cancel(first)
    await clock.advance(28.9)
    assert [payload for payload, _ in starts] == ["first"]
    partition.methods.clear()
    await clock.advance(0.1)  # 30 s after the grant: the slot's lease runs out
    assert starts[1:] == [("second", started + 30)]


async def test_waiting_runs_start_by_priority_then_due_time(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    order: list[str] = []
    gate = asyncio.Event()

    async def job(ctx: JobContext) -> None:
        order.append(ctx.job.id)
        await gate.wait()

    env = await make_env({"report": job}, job_options={"report": JobOptions(concurrency=1)})
    holder = (await env.jobs.create("report")).kumofire_job_run_id
    await settle(clock, 0.1)
    low = (await env.jobs.create("report", priority=-5)).kumofire_job_run_id
    plain = (await env.jobs.create("report")).kumofire_job_run_id
    high = (await env.jobs.create("report", priority=10)).kumofire_job_run_id
    await settle(clock, 0.1)
    gate.set()
    await settle(clock, 0.5)
    assert order == [holder, high, plain, low]


async def test_a_running_write_that_fails_after_the_slot_was_granted_loses_nothing(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = RunStore.start
    failed: list[str] = []

    async def flaky(
        self: RunStore, run_id: str, token: int, now: int, *, unless_jobs: str | None = None
    ) -> StartedRow | None:
        if unless_jobs is None and not failed:  # the limited run's start, after its acquire
            failed.append(run_id)
            raise ConnectionError("D1 is unavailable")
        return await original(self, run_id, token, now, unless_jobs=unless_jobs)

    monkeypatch.setattr(RunStore, "start", flaky)
    gauge = Gauge()
    gauge.gate.set()
    env = await make_env(
        {"job": gauge}, lease_seconds=30, job_options={"job": JobOptions(concurrency=1)}
    )
    first = (await env.jobs.create("job")).kumofire_job_run_id
    second = (await env.jobs.create("job")).kumofire_job_run_id
    await settle(clock, 1.0)
    assert failed == [first] and gauge.done == []  # the slot is held by the failed start
    await clock.advance(29.0)  # the run's lease and its slot expire together
    await settle(clock, 1.0)
    assert sorted(gauge.done) == sorted([first, second]) and gauge.peak == 1
    for run_id in (first, second):
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_a_consumer_keeps_no_slot_of_a_run_it_no_longer_runs(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slot granted, then the start failed (D1), then the run canceled: no later attempt
    # of it in this process takes the consumer's record of the slot over, and it stayed
    # there for the life of the process (an isolate's, on Workers: one more per failed start
    # or lost lease).
    original = RunStore.start
    failed: list[str] = []

    async def flaky(
        self: RunStore, run_id: str, token: int, now: int, *, unless_jobs: str | None = None
    ) -> StartedRow | None:
        if unless_jobs is None and not failed:  # the limited run's start, after its acquire
            failed.append(run_id)
            raise ConnectionError("D1 is unavailable")
        return await original(self, run_id, token, now, unless_jobs=unless_jobs)

    monkeypatch.setattr(RunStore, "start", flaky)
    env = await make_env(
        {"job": noop}, lease_seconds=30, job_options={"job": JobOptions(concurrency=1)}
    )
    first = (await env.jobs.create("job")).kumofire_job_run_id
    await settle(clock, 1.0)
    assert failed == [first]
    await env.jobs.cancel(first)
    second = (await env.jobs.create("job")).kumofire_job_run_id
    await clock.advance(30.0)  # the failed start's lease and slot expire
    await settle(clock, 1.0)
    run = await env.jobs.get(second)
    assert run is not None and run.status == "succeeded"
    gc.collect()
    assert [o for o in gc.get_objects() if isinstance(o, limits.Slot)] == []


async def test_a_paused_limited_job_keeps_its_limit_when_resumed(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=1)})
    await env.jobs.pause_job("report")
    ids = [(await env.jobs.create("report")).kumofire_job_run_id for _ in range(4)]
    await settle(clock, 0.5)
    assert gauge.done == [] and gauge.peak == 0
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status["held"] == []  # a paused run holds no slot
    gauge.gate.set()
    await env.jobs.resume_job("report")
    await settle(clock, 1.0)
    assert sorted(gauge.done) == sorted(ids) and gauge.peak == 1
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_a_key_with_one_waiting_run_waits_one_turn_behind_a_crowded_key(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    order: list[str] = []
    gate = asyncio.Event()

    async def job(ctx: JobContext) -> None:
        order.append(ctx.job.concurrency_key or "")
        await gate.wait()  # the first run holds the slot while the others line up

    env = await make_env(
        {"sync": job}, job_options={"sync": JobOptions(concurrency=1, key_concurrency=1)}
    )
    for _ in range(20):
        await env.jobs.create("sync", concurrency_key="crowded")
    await settle(clock, 0.1)
    await env.jobs.create("sync", concurrency_key="lone")
    await settle(clock, 0.1)
    assert order == ["crowded"]
    gate.set()
    await settle(clock, 2.0)
    assert len(order) == 21
    assert order[:3] == ["crowded", "lone", "crowded"]  # one turn of the crowded key at most


async def test_a_freed_slot_is_handed_to_the_next_run_with_no_second_queue_message(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=1)})
    queue = DroppingQueue(env.JOBS_QUEUE, drops=0)  # counts the sends
    rewire(env, queue=queue)
    ids = [(await env.jobs.create("report")).kumofire_job_run_id for _ in range(6)]
    await settle(clock, 0.5)
    # The first run got the slot at its delivery; the others joined the limiter's line at
    # theirs (their coordinators parked) and sent nothing.
    assert queue.sent == 1 and gauge.running == 1
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [ids[0]], "offered": [], "waiting": 5}
    gauge.gate.set()
    await settle(clock, 0.5)
    # Each freed slot went to the next run in line, run by the consumer that freed it.
    assert gauge.done == ids and gauge.peak == 1
    assert queue.sent == 1
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_a_placed_run_whose_queue_message_is_lost_frees_its_offer_and_runs_later(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    # The crash point between a placement's offer and its consumer: the send is lost. The
    # offer (a slot reserved at the delivery, in memory) holds the capacity until it expires;
    # the next run in line gets it then, and the lost run is delivered again (a run due at
    # its create: by reconciliation, its coordinator having stored nothing after the send).
    # One run at a time throughout.
    gauge = Gauge()
    gauge.gate.set()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=1)})
    queue = DroppingQueue(env.JOBS_QUEUE, drops=1)
    rewire(env, queue=queue)
    first = (await env.jobs.create("report")).kumofire_job_run_id
    second = (await env.jobs.create("report")).kumofire_job_run_id
    await settle(clock, 0.5)
    limiter = env.JOB_COORDINATOR.getByName("limiter:report")
    assert await limiter.limit_status() == {"held": [], "offered": [first], "waiting": 1}
    assert gauge.done == []
    await clock.advance(59.0)
    assert gauge.done == []  # the offer holds the slot
    # It expires unclaimed (at 60 s): the next in line gets the slot; and reconciliation
    # (its first tick at least a grace after the run's due time) delivers the lost run again.
    await clock.advance(120.0)
    await settle(clock, 0.5)
    assert gauge.done == [second, first] and gauge.peak == 1
    assert await limiter.limit_status() == {"held": [], "offered": [], "waiting": 0}


@pytest.mark.parametrize("budget", ["MAX_HANDOFFS", "MAX_BATCH_HANDOFFS"])
async def test_past_the_chain_budget_the_next_run_is_woken_through_the_queue(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, budget: str
) -> None:
    """A chain ends after MAX_HANDOFFS runs, or when its queue batch's chains together took
    MAX_BATCH_HANDOFFS (an invocation's D1 queries are bounded)."""
    monkeypatch.setattr(handoff, budget, 2)
    env = await make_env({"report": noop}, job_options={"report": JobOptions(concurrency=1)})
    queue = DroppingQueue(env.JOBS_QUEUE, drops=0)
    rewire(env, queue=queue)
    ids = [(await env.jobs.create("report")).kumofire_job_run_id for _ in range(7)]
    await settle(clock, 1.0)
    # Chains of three runs (one delivered, two handed over), each next one woken.
    assert queue.sent == 3
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_a_consumer_that_loses_the_run_handed_over_to_it_loses_nothing(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    gauge = Gauge()
    env = await make_env(
        {"report": gauge}, lease_seconds=30, job_options={"report": JobOptions(concurrency=1)}
    )
    partition = FailingNamespace(env.JOB_COORDINATOR)
    rewire(env, coordinator=partition)
    first, second = [(await env.jobs.create("report")).kumofire_job_run_id for _ in range(2)]
    await settle(clock, 0.5)
    # The release hands `second` over: the limiter leases its coordinator and holds its slot
    # under that lease, but the answer never reaches the consumer (it died, or the call
    # failed on the way back).
    partition.lost.add("limit_release")
    gauge.gate.set()
    await settle(clock, 0.5)
    assert gauge.done == [first]
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [second], "offered": [], "waiting": 0}
    partition.lost.clear()
    await clock.advance(30.0)  # its lease expires: its coordinator delivers it again
    await settle(clock, 0.5)
    assert gauge.done == [first, second] and gauge.peak == 1
    run = await env.jobs.get(second)
    assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_the_releases_of_one_turn_go_to_the_limiter_in_one_request(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The chains of one queue batch end their handlers in one turn: their slots' releases go
    in one `limit_release_many` (core/handoff_releases.py), each freed slot handed over."""
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=3)})
    spy = FailingNamespace(env.JOB_COORDINATOR)
    rewire(env, coordinator=spy)
    created = await env.jobs.create_many([CreateRequest(name="report") for _ in range(9)])
    ids = [item.kumofire_job_run_id for item in created]
    await settle(clock, 0.5)
    assert gauge.running == 3
    gauge.gate.set()
    await settle(clock, 0.5)
    assert sorted(gauge.done) == sorted(ids) and gauge.peak == 3
    # Three rounds of three releases: the last hands nothing over.
    assert spy.calls["limit_release_many"] == 3 and spy.calls["limit_release"] == 0
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [], "offered": [], "waiting": 0}


@pytest.mark.parametrize("fault", ["failed", "answer_lost"])
async def test_a_failed_request_of_releases_is_recovered_when_leases_expire(
    make_env: EnvFactory, clock: ManualClock, fault: str
) -> None:
    """`limit_release_many` fails before reaching the limiter (the slots stay held) or after
    it handed the waiters over (their coordinators leased, the answer lost): every chain of
    it ends, the slots expire with their leases, the coordinators deliver again, and every
    run runs once, never more than the limit at a time."""
    gauge = Gauge()
    env = await make_env(
        {"report": gauge}, lease_seconds=30, job_options={"report": JobOptions(concurrency=2)}
    )
    spy = FailingNamespace(env.JOB_COORDINATOR)
    rewire(env, coordinator=spy)
    created = await env.jobs.create_many([CreateRequest(name="report") for _ in range(4)])
    ids = [item.kumofire_job_run_id for item in created]
    await settle(clock, 0.5)
    assert gauge.running == 2
    if fault == "failed":
        spy.methods.add("limit_release_many")
    else:
        spy.lost.add("limit_release_many")
    gauge.gate.set()
    await settle(clock, 0.5)
    assert sorted(gauge.done) == sorted(ids[:2])  # the chains ended
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    held = ids[:2] if fault == "failed" else ids[2:]
    assert status == {"held": sorted(held), "offered": [], "waiting": 2 if fault == "failed" else 0}
    spy.methods.clear()
    spy.lost.clear()
    await clock.advance(30.0)  # the leases expire
    await settle(clock, 1.0)
    assert sorted(gauge.done) == sorted(ids) and gauge.peak == 2
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1
        assert (await env.JOB_COORDINATOR.getByName(run_id).status())["phase"] == "closed"
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [], "offered": [], "waiting": 0}


async def test_a_handed_over_run_whose_lease_cannot_be_taken_is_woken_instead(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=1)})
    partition = FailingNamespace(env.JOB_COORDINATOR)
    rewire(env, coordinator=partition)
    first, second = [(await env.jobs.create("report")).kumofire_job_run_id for _ in range(2)]
    await settle(clock, 0.5)
    partition.methods.add("lease")  # the limiter cannot lease `second`'s coordinator
    partition.times = 1
    gauge.gate.set()
    await settle(clock, 0.5)
    # Its slot was kept for it as an offer and it was woken: delivered, it claims the offer
    # at once, not after the offer or a lease expired.
    assert gauge.done == [first, second] and gauge.peak == 1
    assert partition.calls["arm"] == 3  # two creates, and the wake
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [], "offered": [], "waiting": 0}


async def test_a_handed_over_run_canceled_meanwhile_passes_its_slot_on_at_once(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=1)})
    partition = FailingNamespace(env.JOB_COORDINATOR)
    rewire(env, coordinator=partition)
    first, canceled, last = [
        (await env.jobs.create("report")).kumofire_job_run_id for _ in range(3)
    ]
    await settle(clock, 0.5)
    partition.methods.add("limit_forget")  # the cancel cannot reach the limiter
    await env.jobs.cancel(canceled)
    partition.methods.clear()
    gauge.gate.set()
    await settle(clock, 0.5)
    # The consumer was handed the canceled run, found its coordinator closed and took it
    # out of the line: the slot went to `last` then, not after an unclaimed offer expired.
    assert gauge.done == [first, last]
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [], "offered": [], "waiting": 0}
    run = await env.jobs.get(canceled)
    assert run is not None and run.status == "canceled"


async def test_a_waiting_occurrence_of_a_limited_job_still_schedules_the_next_one(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=1)})
    schedule = await env.jobs.create_schedule("report", every=1)
    await settle(clock, 3.05)
    # The first occurrence holds the slot; the later ones wait in line, and each one that
    # joined the line materialized the next.
    page = await env.jobs.list(schedule_id=schedule.id, limit=100)
    assert gauge.running == 1 and len(page.items) >= 4
    assert sum(1 for r in page.items if r.status == "queued") >= 2
    await env.jobs.disable_schedule(schedule.id)
    gauge.gate.set()
    await settle(clock, 0.5)
    page = await env.jobs.list(schedule_id=schedule.id, limit=100)
    assert {r.status for r in page.items} <= {"succeeded", "canceled"}


async def test_reconciliation_asks_the_limiter_for_parked_runs_and_looks_past_them(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    gauge = Gauge()
    env = await make_env(
        {"report": gauge, "free": noop},
        reconcile_grace_seconds=1.0,
        job_options={"report": JobOptions(concurrency=1)},
    )
    spy = FailingNamespace(env.JOB_COORDINATOR)
    rewire(env, coordinator=spy)
    holder = (await env.jobs.create("report")).kumofire_job_run_id
    await settle(clock, 0.1)
    for _ in range(12):  # parked in the limiter's line, overdue for reconciliation
        await env.jobs.create("report")
        await settle(clock, 0.02)
    spy.methods.add("arm")  # a run whose coordinator was never armed: lost
    lost = (await env.jobs.create("free")).kumofire_job_run_id
    spy.methods.clear()
    await settle(clock, 2.0)
    spy.calls.clear()
    result = await env.jobs.dispatch(limit=10)
    # The first page held the running holder and nine parked runs: one limiter request
    # answered for the parked ones, and the tick read on to find the lost run.
    assert result.dispatched == 1 and spy.calls["status"] == 2
    assert spy.calls["limit_waiting"] == 2  # one per page
    await settle(clock, 0.1)
    run = await env.jobs.get(lost)
    assert run is not None and run.status == "succeeded"
    assert gauge.running == 1
    run = await env.jobs.get(holder)
    assert run is not None and run.status == "running"
    gauge.gate.set()
    await settle(clock, 0.5)
    assert len(gauge.done) == 13


async def test_pausing_a_limited_job_keeps_its_waiting_runs_in_line_and_resume_serves_all(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_control, "RESUME_LIMIT", 2)
    order: list[object] = []
    gate = asyncio.Event()

    async def job(ctx: JobContext) -> None:
        order.append(ctx.job.payload)
        await gate.wait()

    env = await make_env({"report": job}, job_options={"report": JobOptions(concurrency=1)})
    spy = FailingNamespace(env.JOB_COORDINATOR)
    rewire(env, coordinator=spy)
    await env.jobs.create("report", "holder")
    await settle(clock, 0.1)
    for i in range(6):
        await env.jobs.create("report", f"p{i}", priority=i)
        await settle(clock, 0.02)
    await env.jobs.pause_job("report")
    spy.calls.clear()
    gate.set()
    await settle(clock, 1.0)
    # The holder finished; nothing else started, and no waiting run was delivered to find
    # the job paused: all six wait in line, their coordinators parked.
    assert order == ["holder"] and spy.calls["lease"] == 0
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [], "offered": [], "waiting": 6}
    await env.jobs.resume_job("report")
    await settle(clock, 1.0)
    # More than RESUME_LIMIT, all in priority order, with no reconciliation needed.
    assert order == ["holder", "p5", "p4", "p3", "p2", "p1", "p0"]


async def test_a_resume_that_missed_the_limiter_is_told_again_by_reconciliation(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    done: list[str] = []

    async def job(ctx: JobContext) -> None:
        done.append(ctx.job.id)

    env = await make_env(
        {"report": job}, reconcile_grace_seconds=1.0,
        job_options={"report": JobOptions(concurrency=1)},
    )  # fmt: skip
    spy = FailingNamespace(env.JOB_COORDINATOR)
    rewire(env, coordinator=spy)
    await env.jobs.pause_job("report")
    ids = [(await env.jobs.create("report")).kumofire_job_run_id for _ in range(3)]
    await settle(clock, 0.5)
    spy.methods.add("limit_pause")  # the resume reaches D1, not the limiter
    await env.jobs.resume_job("report")
    spy.methods.clear()
    await settle(clock, 2.0)
    assert done == []  # the limiter still holds its line paused
    await env.jobs.dispatch(limit=10)
    await settle(clock, 0.5)
    assert sorted(done) == sorted(ids)


async def test_resume_re_arms_every_run_not_in_line_page_by_page(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pause did not reach the limiter, so the job's runs were refused at their start and
    their coordinators closed: no line holds them. Resume re-arms them all, a page of
    RESUME_LIMIT per call, each page continued by the alarm of a `resume:` coordinator (the
    first of which fails once and is retried), in priority order, with no reconciliation."""
    monkeypatch.setattr(job_control, "RESUME_LIMIT", 2)
    order: list[object] = []

    async def job(ctx: JobContext) -> None:
        order.append(ctx.job.payload)

    env = await make_env(
        {"report": job, "plain": job}, job_options={"report": JobOptions(concurrency=1)}
    )
    spy = FailingNamespace(env.JOB_COORDINATOR, "limit_pause")
    rewire(env, coordinator=spy)
    for name in ("report", "plain"):
        await env.jobs.pause_job(name)
        for i in range(7):
            await env.jobs.create(name, f"{name}{i}", priority=i)
    await settle(clock, 1.0)
    assert order == []
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [], "offered": [], "waiting": 0}  # nothing in line
    spy.methods.clear()
    for name in ("plain", "report"):
        spy.calls.clear()
        await env.jobs.resume_job(name)
        spy.methods.add("arm")
        spy.times = 1  # an arm of a later page fails: its alarm is retried
        await settle(clock, 15.0)
        spy.methods.clear()
        assert order == [f"{name}{i}" for i in range(6, -1, -1)]
        assert spy.times == 0 and spy.calls["arm"] >= 7 + 3  # three pages continued
        order.clear()


async def test_a_paused_job_s_waiting_runs_stay_parked_and_cost_nothing_until_resumed(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    done: list[str] = []

    async def job(ctx: JobContext) -> None:
        done.append(ctx.job.id)

    env = await make_env({"report": job}, job_options={"report": JobOptions(concurrency=1)})
    spy = FailingNamespace(env.JOB_COORDINATOR)
    rewire(env, coordinator=spy)
    await env.jobs.pause_job("report")
    ids = [(await env.jobs.create("report")).kumofire_job_run_id for _ in range(3)]
    await settle(clock, 0.5)
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [], "offered": [], "waiting": 3}
    spy.calls.clear()
    for _ in range(23):  # a long pause: no run is woken to be told again that it waits
        await clock.advance(3600.0)
    assert spy.calls["limit_acquire"] == 0 and done == []
    await env.jobs.resume_job("report")
    await settle(clock, 0.5)
    assert done == ids


async def test_reconciliation_wakes_a_parked_run_that_no_line_holds(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The limiter lost its line (its storage) while the job was paused, and the resume's
    re-arms failed: its runs are parked until the day's fallback, in no line. The next
    reconciliation tick finds them parked and armed for now."""
    done: list[str] = []

    async def job(ctx: JobContext) -> None:
        done.append(ctx.job.id)

    env = await make_env(
        {"report": job}, reconcile_grace_seconds=1.0,
        job_options={"report": JobOptions(concurrency=1)},
    )  # fmt: skip
    spy = FailingNamespace(env.JOB_COORDINATOR)
    rewire(env, coordinator=spy)
    await env.jobs.pause_job("report")
    ids = [(await env.jobs.create("report")).kumofire_job_run_id for _ in range(2)]
    await settle(clock, 0.5)
    await env.JOB_COORDINATOR.getByName("limiter:report").close()  # its storage is lost
    env.JOB_COORDINATOR.evict("limiter:report")
    spy.methods.add("arm")
    with pytest.raises(RuntimeError, match="injected failure of arm"):
        await env.jobs.resume_job("report")
    spy.methods.clear()
    await settle(clock, 2.0)
    assert done == []  # parked in no line: nothing wakes them
    await env.jobs.dispatch(limit=10)
    await settle(clock, 0.5)
    assert sorted(done) == sorted(ids)


async def test_runs_handed_over_in_one_turn_start_in_one_statement_one_canceled_meanwhile(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The chains of one queue batch step together: the starts of the runs they are handed in
    one turn go in one guarded statement (core/handoff_writes.py), each fenced by its own
    token; a run canceled before it ran is not started, and its consumer learns why from the
    row, as after a per-run start."""
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=2)})
    db = FaultyD1(env.JOBS_DB)
    rewire(env, db=db)
    created = await env.jobs.create_many([CreateRequest(name="report") for _ in range(4)])
    ids = [item.kumofire_job_run_id for item in created]
    await settle(clock, 0.5)
    assert gauge.running == 2
    canceled, handed = ids[2], ids[3]

    async def cancel() -> None:  # lands between the hand-over and the folded start
        assert await env.jobs.cancel(canceled) is not None

    db.before(START_MANY, cancel)
    db.ran.clear()  # (the first two started in their consumer batch's statement)
    gauge.gate.set()
    await settle(clock, 0.5)
    assert sum(1 for sql in db.ran if START_MANY in sql) == 1  # both hand-overs' starts
    assert sorted(gauge.done) == sorted([ids[0], ids[1], handed]) and gauge.peak == 2
    run = await env.jobs.get(canceled)
    assert run is not None and run.status == "canceled" and run.attempt == 0
    run = await env.jobs.get(handed)
    assert run is not None and run.status == "succeeded" and run.attempt == 1
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [], "offered": [], "waiting": 0}
    assert (await env.JOB_COORDINATOR.getByName(handed).status())["phase"] == "closed"


async def test_the_outcomes_of_the_freed_slots_go_in_the_turn_of_the_runs_handed_over(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The outcomes of the handlers whose slots a queue batch's releases free wait for those
    releases, as the starts of the runs they hand over do: both are written in one loop turn
    (one commit), not the outcomes first and the starts a limiter round trip later."""
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=2)})
    db = FaultyD1(env.JOBS_DB)
    rewire(env, db=db)
    created = await env.jobs.create_many([CreateRequest(name="report") for _ in range(4)])
    ids = [item.kumofire_job_run_id for item in created]
    await settle(clock, 0.5)
    assert gauge.running == 2
    loop = asyncio.get_running_loop()
    turns = [0]

    def tick() -> None:  # counts the loop's turns (a bounded number: the clock must settle)
        turns[0] += 1
        if turns[0] < 1_000:
            loop.call_soon(tick)

    loop.call_soon(tick)
    seen: dict[str, int] = {}

    def mark(name: str) -> Callable[[], Awaitable[None]]:
        async def hook() -> None:
            seen[name] = turns[0]

        return hook

    db.before(OUTCOMES, mark("outcomes"))
    db.before(START_MANY, mark("starts"))
    gauge.gate.set()
    await settle(clock, 0.5)
    assert seen["outcomes"] == seen["starts"] < 1_000
    assert sorted(gauge.done) == sorted(ids) and gauge.peak == 2
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_a_finished_runs_coordinator_is_released_with_the_next_flush_of_its_batch(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """A run whose outcome is written while its batch's releases are in flight releases its
    coordinator once they answered, in the turn of the batch's next starts and outcomes
    (core/handoff_writes.py, `after_releases`), not in a turn of its own; every coordinator
    ends closed."""
    gauge = Gauge()
    env = await make_env({"report": gauge}, job_options={"report": JobOptions(concurrency=2)})
    spy = FailingNamespace(env.JOB_COORDINATOR)
    rewire(env, coordinator=spy)
    created = await env.jobs.create_many([CreateRequest(name="report") for _ in range(4)])
    ids = [item.kumofire_job_run_id for item in created]
    await settle(clock, 0.5)
    assert gauge.running == 2
    spy.order.clear()
    gauge.gate.set()
    await settle(clock, 0.5)
    assert sorted(gauge.done) == sorted(ids) and gauge.peak == 2
    calls = [(name, method) for name, method in spy.order if method != "lease"]
    releases = [i for i, (_, method) in enumerate(calls) if method == "limit_release_many"]
    assert len(releases) == 2  # the first two runs' slots (handing the others over), then theirs
    for run_id in gauge.done[:2]:
        # The first two ended; their outcomes went with the others' starts, then the others
        # ended and released their slots; only then did the first two release their leases.
        assert calls.index((run_id, "release")) > releases[1]
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1
        assert (await env.JOB_COORDINATOR.getByName(run_id).status())["phase"] == "closed"


@pytest.mark.parametrize("statement", ["start", "outcome"])
async def test_a_failed_folded_write_of_handed_over_runs_is_recovered_when_leases_expire(
    make_env: EnvFactory, clock: ManualClock, statement: str
) -> None:
    """D1 refuses the folded start, or the folded outcome write, of two runs handed over at
    once: their leases (and the slots held under them) expire, their coordinators deliver
    them again, and each attempt ends with one recorded outcome."""
    gauge = Gauge()
    env = await make_env(
        {"report": gauge}, lease_seconds=30, job_options={"report": JobOptions(concurrency=2)}
    )
    db = FaultyD1(env.JOBS_DB)
    rewire(env, db=db)
    created = await env.jobs.create_many([CreateRequest(name="report") for _ in range(4)])
    ids = [item.kumofire_job_run_id for item in created]
    await settle(clock, 0.5)
    assert gauge.running == 2
    if statement == "start":
        db.fail(START_MANY)
    else:  # the first two runs' outcomes are written first, then the handed-over runs'
        db.before(OUTCOMES, lambda: _fail_next(db, OUTCOMES))
    gauge.gate.set()
    await settle(clock, 0.5)
    ran = 2 if statement == "start" else 4
    assert len(gauge.done) == ran and gauge.peak == 2
    for run_id in ids[2:]:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == ("queued" if statement == "start" else "running")
    await clock.advance(30.0)  # the leases expire: the coordinators deliver again
    await settle(clock, 0.5)
    assert gauge.peak == 2
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded"
    expected = [(1, "succeeded")]
    if statement == "outcome":
        expected = [(1, "interrupted"), (2, "succeeded")]
    for run_id in ids[2:]:
        attempts = await env.jobs.attempts(run_id) or []
        assert [(a.attempt, str(a.outcome)) for a in attempts] == expected
    status = await env.JOB_COORDINATOR.getByName("limiter:report").limit_status()
    assert status == {"held": [], "offered": [], "waiting": 0}


async def _fail_next(db: FaultyD1, text: str) -> None:
    """Arm a failure of the statement after this one (the first outcome write goes through)."""
    db.before(text, lambda: _arm(db, text))


async def _arm(db: FaultyD1, text: str) -> None:
    db.fail(text)


class Gates:
    """A handler whose runs each wait for their own gate (`open(run_id)`)."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.done: list[str] = []
        self.running = 0
        self.peak = 0

    def gate(self, run_id: str) -> asyncio.Event:
        return self.gates.setdefault(run_id, asyncio.Event())

    async def __call__(self, ctx: JobContext) -> None:
        self.started.append(ctx.job.id)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.gate(ctx.job.id).wait()
        finally:
            self.running -= 1
        self.done.append(ctx.job.id)


async def _two_slots_four_runs(
    make_env: EnvFactory, clock: ManualClock
) -> tuple[Gates, FaultyD1, FailingNamespace, list[str], LocalEnvironment]:
    gates = Gates()
    env = await make_env({"report": gates}, job_options={"report": JobOptions(concurrency=2)})
    db = FaultyD1(env.JOBS_DB)
    spy = FailingNamespace(env.JOB_COORDINATOR)
    rewire(env, db=db, coordinator=spy)
    created = await env.jobs.create_many([CreateRequest(name="report") for _ in range(4)])
    ids = [item.kumofire_job_run_id for item in created]
    await settle(clock, 0.5)
    assert sorted(gates.started) == sorted(ids[:2])  # (in one consumer batch)
    db.ran.clear()
    return gates, db, spy, ids, env


async def test_chains_that_end_a_turn_apart_start_their_next_runs_in_one_statement(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The hand-overs' starts wait while a release of the batch is in flight: a chain whose
    handler ended a loop turn after another's (or whose step took a turn more) starts its
    next run in the same statement, and the chains go on in step."""
    gates, db, _, ids, env = await _two_slots_four_runs(make_env, clock)
    first, second = gates.started
    gates.gate(first).set()
    await asyncio.sleep(0)  # the first chain's release is on its way
    await asyncio.sleep(0)
    gates.gate(second).set()
    await settle(clock, 0.5)
    assert sorted(gates.started[2:]) == sorted(ids[2:])
    assert sum(1 for sql in db.ran if START_MANY in sql) == 1  # both hand-overs' starts
    for run_id in ids[2:]:
        gates.gate(run_id).set()
    await settle(clock, 0.5)
    assert sorted(gates.done) == sorted(ids) and gates.peak == 2
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_a_failed_release_does_not_hold_back_the_other_chains_start(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """A release whose limiter call fails ends its chain (its slot expires with its lease),
    and the start the other chain was handed waits no longer: the limit holds throughout."""
    gates, _, spy, ids, env = await _two_slots_four_runs(make_env, clock)
    first, second = gates.started
    spy.methods.add("limit_release")
    spy.times = 1  # the first release fails
    gates.gate(first).set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gates.gate(second).set()
    await settle(clock, 0.5)
    assert len(gates.started) == 3  # the second chain's hand-over ran; one slot is stuck
    handed = gates.started[2]
    assert handed in ids[2:]
    gates.gate(handed).set()
    await settle(clock, 0.5)
    # The failed release's slot frees when its lease expires; the last run then starts.
    await clock.advance(30.0)
    await settle(clock, 1.0)
    assert sorted(gates.started) == sorted(ids)
    for run_id in ids:
        gates.gate(run_id).set()
    await settle(clock, 0.5)
    assert gates.peak == 2
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded"


async def test_a_clean_stop_runs_no_more_handed_over_runs_and_the_next_start_runs_them(
    clock: ManualClock, tmp_path: Path
) -> None:
    """A stop waits for the running runs only: a slot freed while it waits wakes the next
    run through the queue, for the next start, instead of this process running it (it used
    to keep handing over until the chain's budget ran out)."""
    gauge = Gauge()

    def environment() -> LocalEnvironment:
        runtime = create_runtime(
            {"report": gauge}, clock=clock, job_options={"report": JobOptions(concurrency=1)}
        )
        return LocalEnvironment(runtime, tmp_path / "data")

    first = environment()
    await first.start()
    ids = [(await first.jobs.create("report")).kumofire_job_run_id for _ in range(3)]
    await settle(clock, 0.5)
    assert gauge.running == 1
    stopping = asyncio.ensure_future(first.stop())
    await settle(clock, 0.1)
    assert not stopping.done()  # waiting for the running run
    gauge.gate.set()
    await settle(clock, 0.5)
    await stopping
    assert gauge.done == ids[:1] and gauge.peak == 1
    second = environment()
    await second.start()
    try:
        await settle(clock, 1.0)
        assert gauge.done == ids and gauge.peak == 1
        for run_id in ids:
            run = await second.jobs.get(run_id)
            assert run is not None and run.status == "succeeded" and run.attempt == 1
    finally:
        await second.stop(drain_seconds=0)
