"""Crashes, lost and duplicated messages, reconciliation and retention, with faults injected
at the binding edges (a queue that drops a send, a coordinator namespace that fails a call)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kumofire_jobs import (
    CreateRequest,
    JobContext,
    JobOptions,
    Resources,
    RetryPolicy,
    create_runtime,
)
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.delivery import run_message
from kumofire_jobs.core.retention import prune_pass
from kumofire_jobs.local import data_dir_lock
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory, noop
from tests.support.faults import DroppingQueue, FailingNamespace, rewire


async def test_consumer_dies_mid_run_lease_expires_and_the_run_is_recovered(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[int] = []
    unblock_first = asyncio.Event()

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.attempt)
        if ctx.job.attempt == 1:
            await unblock_first.wait()  # the first consumer hangs, its renewals fail

    env = await make_env({"job": job}, lease_seconds=30)
    partition = FailingNamespace(env.JOB_COORDINATOR, "renew")
    rewire(env, coordinator=partition)
    created = await env.jobs.create("job")
    run_id = created.kumofire_job_run_id
    await clock.advance(29.9)
    assert calls == [1]
    await clock.advance(0.1)  # the lease expires: the actor's alarm delivers again
    assert calls == [1, 2]
    partition.methods.clear()  # the partition heals
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 2

    unblock_first.set()  # the stale consumer wakes up and tries to finalize: fenced off
    await clock.advance(0)
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 2
    assert run.last_error is None
    assert (await env.JOB_COORDINATOR.getByName(run_id).status())["phase"] == "closed"


async def test_crash_on_the_last_attempt_fails_the_run(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def hang(ctx: JobContext) -> None:
        await asyncio.Event().wait()

    env = await make_env({"job": hang}, lease_seconds=30)
    rewire(env, coordinator=FailingNamespace(env.JOB_COORDINATOR, "renew"))
    created = await env.jobs.create("job", max_attempts=1)
    await clock.advance(31)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "failed" and run.attempt == 1
    assert run.last_error is not None and "cut off" in run.last_error


async def test_handler_longer_than_the_lease_without_heartbeats_runs_once(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[int] = []

    async def long(ctx: JobContext) -> None:
        calls.append(ctx.job.attempt)
        await clock.sleep_until(clock.now() + 300)  # ten leases long, never heartbeats

    env = await make_env({"long": long}, lease_seconds=30)
    created = await env.jobs.create("long")
    await clock.advance(600)
    assert calls == [1]
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded"


async def test_lost_queue_message_is_redelivered_by_the_coordinator(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[float] = []

    async def job(ctx: JobContext) -> None:
        calls.append(clock.now())

    """A message the actor's alarm sent (a delayed run's; a run due at its create is sent by
    its arm, which stores nothing: tests/test_due_at_create.py) is sent again by its alarm."""
    env = await make_env({"job": job})
    start = clock.now()
    dropping = DroppingQueue(env.JOBS_QUEUE, drops=1)
    rewire(env, queue=dropping)
    created = await env.jobs.create("job", delay=1)
    await clock.advance(10.9)
    assert calls == []
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "queued"
    await clock.advance(0.1)  # the first redelivery (CoordinatorConfig.redeliver_initial)
    assert calls == [start + 11]
    assert dropping.sent == 2
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded"


async def test_duplicated_queue_messages_execute_once(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[str] = []

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.id)

    env = await make_env({"job": job})
    created = await env.jobs.create("job", delay=1)
    run_id = created.kumofire_job_run_id
    await env.JOBS_QUEUE.send(run_message(run_id))  # early duplicates: not due, refused
    await clock.advance(1)
    await env.JOBS_QUEUE.sendBatch([{"body": run_message(run_id)}] * 3)  # late: run finished
    await clock.advance(1)
    assert calls == [run_id]
    assert await env.broker.depth("kumofire-jobs") == 0


async def test_message_for_a_finished_run_closes_its_actor(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"job": noop})
    created = await env.jobs.create("job")
    run_id = created.kumofire_job_run_id
    await clock.advance(0)
    stub = env.JOB_COORDINATOR.getByName(run_id)
    # A coordinator left behind (its close was lost) is closed by the next message.
    await stub.arm(run_id, int(clock.now() * 1000) + 3_600_000)
    assert (await stub.status())["phase"] == "armed"
    await env.JOBS_QUEUE.send(run_message(run_id))
    await clock.advance(0)
    assert (await stub.status())["phase"] == "armed"  # not due: the lease is refused
    await clock.advance(3600)  # its alarm fires: delivery finds the run finished
    assert (await stub.status())["phase"] == "closed"
    assert env.JOB_COORDINATOR.alarm_of(run_id) is None


async def test_message_for_a_missing_run_is_ignored_and_closes_nothing_forever(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"job": noop})
    stub = env.JOB_COORDINATOR.getByName("run_ghost")
    await stub.arm("run_ghost", int(clock.now() * 1000))
    await clock.advance(0)
    assert (await stub.status())["phase"] == "closed"  # delivery found no run: closed
    assert await env.broker.depth("kumofire-jobs") == 0


async def test_reconciliation_after_a_coordinator_failure(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[float] = []

    async def job(ctx: JobContext) -> None:
        calls.append(clock.now())

    env = await make_env({"job": job})
    start = clock.now()  # on a minute boundary: the cron trigger fires each minute
    rewire(env, coordinator=FailingNamespace(env.JOB_COORDINATOR, "arm", times=1))
    created = await env.jobs.create("job")  # the run is in D1; its coordinator never heard
    await clock.advance(59)
    run = await env.jobs.get(created.kumofire_job_run_id)
    # Due at its create, it was inserted `queued` (its arm would have sent it at once).
    assert run is not None and run.status == "queued" and calls == []
    await clock.advance(1)  # the cron tick at +60 s: overdue by the grace period, re-armed
    assert calls == [start + 60]
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded"
    healthy = await env.jobs.dispatch()
    assert (healthy.dispatched, healthy.recovered) == (0, 0)


async def test_reconciliation_revives_an_abandoned_coordinator(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"job": noop})
    dropping = DroppingQueue(env.JOBS_QUEUE, drops=10)  # every delivery of the actor is lost
    rewire(env, queue=dropping)
    created = await env.jobs.create("job", delay=1)  # delivered by its alarm
    run_id = created.kumofire_job_run_id
    # Deliveries at 1, 11, 31, 71, 151, 311, 611, 911, 1211, 1511 s (doubling from 10 s,
    # capped at 300 s); the alarm after the tenth gives up at 1811 s.
    await clock.advance(1831)
    assert dropping.sent == 10
    stub = env.JOB_COORDINATOR.getByName(run_id)
    status = await stub.status()
    assert status["phase"] == "abandoned" and status["deliveries"] == 10
    assert env.JOB_COORDINATOR.alarm_of(run_id) is None  # it gave up: no more alarms
    await clock.advance(29)  # the cron tick at 1860 s re-arms it, and this delivery arrives
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded"


async def test_retention_deletes_finished_runs_and_keeps_unfinished_ones(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"job": noop}, retention_seconds=3600)
    done = await env.jobs.create("job", dedupe_key="once")
    waiting = await env.jobs.create("job", delay=86_400)
    await clock.advance(3600)
    assert await env.jobs.get(done.kumofire_job_run_id) is not None
    await clock.advance(60)  # the first cron tick after the retention age
    assert await env.jobs.get(done.kumofire_job_run_id) is None
    assert await env.jobs.get(waiting.kumofire_job_run_id) is not None
    again = await env.jobs.create("job", dedupe_key="once")  # pruning frees the dedupe key
    assert not again.deduplicated
    stub = env.JOB_COORDINATOR.getByName(done.kumofire_job_run_id)
    assert (await stub.status())["phase"] == "closed"


async def test_one_cron_tick_prunes_more_than_a_page_of_finished_runs(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    # One statement's page a minute would cap retention at 100 runs a minute: a deployment
    # finishing more than that would grow its table for ever.
    env = await make_env({"job": noop}, retention_seconds=3600)
    for _ in range(3):
        await env.jobs.create_many([CreateRequest(name="job") for _ in range(100)])
    await clock.advance(0)
    assert (await env.jobs.counts())["succeeded"] == 300
    await clock.advance(3660)
    assert (await env.jobs.counts())["succeeded"] == 0


async def test_a_retention_pass_deletes_page_by_page_and_stops_at_its_bound(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"job": noop}, retention_seconds=None)
    await env.jobs.create_many([CreateRequest(name="job") for _ in range(25)])
    await clock.advance(60)
    now = int(clock.now() * 1000) + 1
    options: dict[str, Any] = {"now": now, "retention_seconds": 0.0, "overrides": {}}
    assert await prune_pass(env.JOBS_DB, page=10, max_pages=2, **options) == 20
    assert (await env.jobs.counts())["succeeded"] == 5  # the next pass goes on
    assert await prune_pass(env.JOBS_DB, page=10, max_pages=2, **options) == 5


async def test_consume_batch_acks_malformed_messages_and_retries_runtime_failures(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[str] = []

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.id)

    env = await make_env({"job": job})
    for body in (
        {"version": 2, "kumofireJobRunId": "run_x"},
        {"version": 1, "kumofireJobRunId": 7},
        {"version": 1},
        {"version": 1, "kumofireJobRunId": "run_x", "extra": True},
        "not an object",
        [1, 2],
    ):
        await env.JOBS_QUEUE.send(body)
    await clock.advance(0)
    assert await env.broker.depth("kumofire-jobs") == 0  # acknowledged, never retried

    rewire(env, coordinator=FailingNamespace(env.JOB_COORDINATOR, "lease", times=1))
    created = await env.jobs.create("job")
    await clock.advance(0)  # the first consume fails in the runtime: the message is retried
    assert calls == []
    await clock.advance(2)  # after a delay, not at once into the same failure
    assert calls == [created.kumofire_job_run_id]
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded"


class _ReplayedStatement:
    """A statement whose write is executed twice, the first answer lost: what a D1 client
    sees when it retries a write whose response the network dropped."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def bind(self, *values: Any) -> _ReplayedStatement:
        return _ReplayedStatement(self._inner.bind(*values))

    async def first(self, column: str | None = None) -> Any:
        await self._inner.first(column)
        return await self._inner.first(column)

    async def all(self) -> Any:
        await self._inner.all()
        return await self._inner.all()

    async def run(self) -> Any:
        await self._inner.run()
        return await self._inner.run()

    async def raw(self, options: Any = None) -> Any:
        return await self._inner.raw(options)


class ReplayingD1:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def prepare(self, query: str) -> Any:
        statement = self.inner.prepare(query)
        is_write = query.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
        return _ReplayedStatement(statement) if is_write else statement

    async def batch(self, statements: Any) -> Any:
        unwrapped = [getattr(s, "_inner", s) for s in statements]
        await self.inner.batch(unwrapped)
        return await self.inner.batch(unwrapped)

    async def exec(self, query: str) -> Any:
        return await self.inner.exec(query)


async def test_writes_retried_after_a_lost_answer_do_not_duplicate_or_stall(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[int] = []

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.attempt)
        if ctx.job.attempt == 1:
            raise RuntimeError("retry me")

    env = await make_env({"job": job})
    env.resources = Resources(
        db=ReplayingD1(env.JOBS_DB), queue=env.JOBS_QUEUE, coordinator=env.JOB_COORDINATOR
    )
    env.jobs = env.runtime.bind(env.resources)
    created = await env.jobs.create("job")  # the insert lands twice: one run
    assert not created.deduplicated
    await clock.advance(0)  # start lands twice; the reschedule lands twice
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "scheduled" and run.attempt == 1
    await clock.advance(1)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 2
    assert calls == [1, 2]
    assert sum((await env.jobs.counts()).values()) == 1
    assert (await env.JOB_COORDINATOR.getByName(run.id).status())["phase"] == "closed"


async def test_runs_a_crash_left_unarmed_start_when_the_environment_starts_again(
    clock: ManualClock, tmp_path: Path
) -> None:
    calls: list[tuple[str, float]] = []

    async def job(ctx: JobContext) -> None:
        calls.append((ctx.job.id, clock.now()))

    runtime = create_runtime({"job": job}, clock=clock)
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    # The crash point: each run is in D1, but the process died before its arm landed.
    rewire(env, coordinator=FailingNamespace(env.JOB_COORDINATOR, "arm"))
    due = (await env.jobs.create("job")).kumofire_job_run_id
    later = (await env.jobs.create("job", delay=600)).kumofire_job_run_id
    await env.close()  # as a crash: nothing settles

    await clock.advance(5)
    restarted = clock.now()
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    await clock.advance(0)
    assert calls == [(due, restarted)]  # at once, not a grace and a cron tick later
    await clock.advance(600 - 5)
    assert calls == [(due, restarted), (later, restarted + 595)]  # on time
    await env.stop()


async def _cut_off_and_restart(
    clock: ManualClock, tmp_path: Path
) -> tuple[LocalEnvironment, str, list[tuple[int, float]]]:
    """A run whose handler a crash cut off (its lease live, 30 s), and the environment
    started again on its data directory a second later."""
    calls: list[tuple[int, float]] = []

    async def job(ctx: JobContext) -> None:
        calls.append((ctx.job.attempt, clock.now()))
        if ctx.job.attempt == 1:
            await asyncio.Event().wait()  # still running when the process dies

    runtime = create_runtime({"job": job}, clock=clock, lease_seconds=30)
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    run_id = (await env.jobs.create("job")).kumofire_job_run_id
    await clock.advance(0)
    assert [attempt for attempt, _ in calls] == [1]
    await env.close()  # as a crash: nothing settles, the lease stays live
    await clock.advance(1)
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    return env, run_id, calls


async def test_a_run_a_crash_cut_off_goes_again_at_the_next_start_not_a_lease_later(
    clock: ManualClock, tmp_path: Path
) -> None:
    env, run_id, calls = await _cut_off_and_restart(clock, tmp_path)
    restarted = clock.now()
    await clock.advance(0)
    assert calls[1:] == [(2, restarted)]  # the lock proves the holder gone: no 30 s wait
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 2
    outcomes = [attempt.outcome for attempt in await env.jobs.attempts(run_id) or []]
    assert outcomes == ["interrupted", "succeeded"]
    await clock.advance(60)
    assert len(calls) == 2
    await env.stop()


async def test_without_an_enforced_lock_a_cut_off_run_waits_for_its_lease(
    clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `flock` (Windows, some network file systems): nothing proves the holder gone, so its
    lease runs out as on Cloudflare."""
    monkeypatch.setattr(data_dir_lock, "_try_lock", lambda fd: None)
    env, run_id, calls = await _cut_off_and_restart(clock, tmp_path)
    await clock.advance(28.9)
    assert len(calls) == 1
    await clock.advance(0.1)  # 30 s after the grant: the lease runs out
    assert [attempt for attempt, _ in calls] == [1, 2]
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 2
    await env.stop()


async def test_a_limited_job_s_cut_off_run_takes_its_slot_back_at_the_next_start(
    clock: ManualClock, tmp_path: Path
) -> None:
    """`concurrency=1`: the cut-off run's slot is still held in the limiter under its old
    token; at the restart its new attempt takes that slot over at once, and the run waiting
    behind it follows, instead of both waiting for the old leases to run out."""
    calls: list[tuple[str, int, float]] = []

    async def job(ctx: JobContext) -> None:
        calls.append((ctx.job.payload, ctx.job.attempt, clock.now()))
        if ctx.job.attempt == 1 and ctx.job.payload == "first":
            await asyncio.Event().wait()  # still running when the process dies

    runtime = create_runtime(
        {"job": job}, clock=clock, lease_seconds=30, job_options={"job": JobOptions(concurrency=1)}
    )
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    first = (await env.jobs.create("job", "first")).kumofire_job_run_id
    await clock.advance(0)
    second = (await env.jobs.create("job", "second")).kumofire_job_run_id
    await clock.advance(0)
    assert calls == [("first", 1, calls[0][2])]  # the second waits for the slot
    await env.close()  # as a crash
    await clock.advance(1)
    restarted = clock.now()
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    await clock.advance(0)
    assert calls[1:] == [("first", 2, restarted), ("second", 1, restarted)]
    for run_id in (first, second):
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded"
    await env.stop()


async def test_a_canceled_run_s_slot_held_by_a_dead_process_is_freed_at_the_next_start(
    clock: ManualClock, tmp_path: Path
) -> None:
    """`concurrency=1`: the run holding the slot is canceled, then the process dies before
    its handler saw the cancel. A canceled run is finished, so no new attempt takes its slot
    over at the restart; the lock proves its holder gone, so the limiter frees the slot at
    once and the run waiting behind it starts, instead of a lease (30 s) later."""
    calls: list[tuple[str, float]] = []

    async def job(ctx: JobContext) -> None:
        calls.append((ctx.job.payload, clock.now()))
        if ctx.job.payload == "first":
            await asyncio.Event().wait()  # still running when the process dies

    runtime = create_runtime(
        {"job": job}, clock=clock, lease_seconds=30, job_options={"job": JobOptions(concurrency=1)}
    )
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    first = (await env.jobs.create("job", "first")).kumofire_job_run_id
    await clock.advance(0)
    second = (await env.jobs.create("job", "second")).kumofire_job_run_id
    await clock.advance(0)
    canceled = await env.jobs.cancel(first)
    assert canceled is not None and canceled.status == "canceled"
    assert [payload for payload, _ in calls] == ["first"]  # the second waits for the slot
    await env.close()  # as a crash, before the handler's next renewal saw the cancel
    await clock.advance(1)
    restarted = clock.now()
    env = LocalEnvironment(runtime, tmp_path)
    await env.start()
    await clock.advance(0)
    assert calls[1:] == [("second", restarted)]
    run = await env.jobs.get(second)
    assert run is not None and run.status == "succeeded"
    run = await env.jobs.get(first)
    assert run is not None and run.status == "canceled"
    await env.stop()


async def test_a_finish_whose_lease_release_is_lost_closes_its_actor_at_the_redelivery(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    # The crash point between the D1 finalize and `release`: the outcome landed, the
    # coordinator never heard of it.
    calls: list[int] = []

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.attempt)

    env = await make_env({"job": job}, lease_seconds=30)
    partition = FailingNamespace(env.JOB_COORDINATOR, "release")
    rewire(env, coordinator=partition)
    run_id = (await env.jobs.create("job")).kumofire_job_run_id
    await clock.advance(0)
    assert calls == [1] and partition.calls["release"] >= 1
    stub = env.JOB_COORDINATOR.getByName(run_id)
    assert (await stub.status())["lease_live"]  # still leased: the release was lost
    partition.methods.clear()
    await clock.advance(30)  # the lease expires: the alarm delivers, the consumer reads the run
    assert calls == [1]
    assert (await stub.status())["phase"] == "closed"
    assert env.JOB_COORDINATOR.alarm_of(run_id) is None
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_a_retry_whose_re_arm_is_lost_runs_when_due_not_at_the_lease_expiry(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    # The crash point between a retry's D1 write and its re-arm (the release that re-arms):
    # the lease expires first, and the delivery then finds the run not yet due.
    started: list[float] = []

    async def job(ctx: JobContext) -> None:
        started.append(clock.now())
        if ctx.job.attempt == 1:
            raise RuntimeError("first attempt fails")

    env = await make_env(
        {"job": job}, lease_seconds=30, retry=RetryPolicy(base_delay=100, max_delay=100)
    )
    partition = FailingNamespace(env.JOB_COORDINATOR, "release", times=1)
    rewire(env, coordinator=partition)
    t0 = clock.now()
    run_id = (await env.jobs.create("job", max_attempts=2)).kumofire_job_run_id
    await clock.advance(0)
    assert len(started) == 1 and partition.calls["release"] == 1
    await clock.advance(99.9)  # the lease expired at 30 s: its delivery did not start it
    assert len(started) == 1
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "scheduled"
    await clock.advance(0.1)
    assert started == [t0, t0 + 100]
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 2
