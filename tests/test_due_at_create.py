"""A run due at its create is inserted `queued`, and its coordinator's `arm` delivers it
inline, telling the delivery hook so: its first delivery writes and reads nothing in D1. What
must still hold around that shortcut: a lost arm, a cancel before the delivery, a lost
message, a failed send, a retry, a delayed run, a limited job's run, a flow's children."""

from __future__ import annotations

import asyncio
from typing import Any

from kumofire_jobs import CreateRequest, JobContext, JobOptions, Resources, RetryPolicy
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory, noop
from tests.support.faults import DroppingQueue, FailingNamespace, rewire
from tests.test_delivery_races import OutageQueue

_QUEUED_WRITE = "SET status = 'queued'"
_READ_BY_ID = "WHERE id = ?"


class RecordingDb:
    """The environment's D1, recording the SQL of every statement prepared."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sql: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def prepare(self, sql: str) -> Any:
        self.sql.append(sql)
        return self.inner.prepare(sql)

    def count(self, fragment: str) -> int:
        return sum(fragment in sql for sql in self.sql)


def recording(env: LocalEnvironment) -> RecordingDb:
    """Put a recording D1 in front of the real one, before any coordinator is built."""
    db = RecordingDb(env.JOBS_DB)
    env.resources = Resources(
        db=db,
        queue=env.resources.queue,
        coordinator=env.resources.coordinator,
        wait_for_arms=env.resources.wait_for_arms,
    )
    env.jobs = env.runtime.bind(env.resources)
    return db


async def test_a_run_due_at_create_is_queued_at_once_and_delivered_without_a_d1_write(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"job": noop})
    db = recording(env)
    created = await env.jobs.create("job")
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "queued"
    await clock.advance(0)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 1
    assert db.count(_QUEUED_WRITE) == 0
    # The two reads are this test's own `get`s: the delivery read nothing.
    assert db.count(f"FROM kumofire_job_runs {_READ_BY_ID}") == 2
    # And no alarm ran for it: the arm delivered, the lease and release closed it.
    assert env.JOB_COORDINATOR.alarm_of(run.id) is None


async def test_a_delayed_run_is_scheduled_and_marked_queued_by_its_alarm(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"job": noop})
    db = recording(env)
    created = await env.jobs.create("job", delay=5)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "scheduled"
    await clock.advance(5)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded"
    assert db.count(_QUEUED_WRITE) == 1


async def test_a_queued_run_whose_arm_was_lost_is_armed_by_reconciliation(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The crash point between the `queued` insert and the arm: D1 says `queued`, but no
    coordinator ever heard of the run. Reconciliation asks the coordinator (closed), arms
    it, and this arm (no note) reads the row and sends it."""
    calls: list[float] = []

    async def job(ctx: JobContext) -> None:
        calls.append(clock.now())

    env = await make_env({"job": job})
    start = clock.now()  # on a minute boundary: the cron trigger fires each minute
    rewire(env, coordinator=FailingNamespace(env.JOB_COORDINATOR, "arm", times=1))
    created = await env.jobs.create("job")
    run_id = created.kumofire_job_run_id
    await clock.advance(59)
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "queued" and calls == []
    assert (await env.JOB_COORDINATOR.getByName(run_id).status())["phase"] == "closed"
    await clock.advance(1)  # the tick at +60 s: overdue by the grace, its actor closed
    assert calls == [start + 60]
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded"


async def test_a_run_canceled_before_its_delivery_never_starts(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[str] = []

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.id)

    env = await make_env({"job": job})
    # Its arm is lost, so nothing is delivered before the cancel; then its message arrives
    # anyway (reconciliation, or a duplicate): the consumer finds it canceled.
    rewire(env, coordinator=FailingNamespace(env.JOB_COORDINATOR, "arm", times=1))
    lost = (await env.jobs.create("job")).kumofire_job_run_id
    canceled = await env.jobs.cancel(lost)
    assert canceled is not None and canceled.status == "canceled"
    # A cancel right after a create whose arm went out (in order, after the arm).
    rewire(env)
    sent = (await env.jobs.create("job")).kumofire_job_run_id
    await env.jobs.cancel(sent)
    await clock.advance(120)  # two cron ticks
    assert calls == []
    for run_id in (lost, sent):
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "canceled" and run.attempt == 0
        assert (await env.JOB_COORDINATOR.getByName(run_id).status())["phase"] == "closed"
        assert env.JOB_COORDINATOR.alarm_of(run_id) is None


async def test_a_lost_first_message_is_redelivered_by_reconciliation(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The inline arm stores nothing once its send went out (the queue holds the message):
    a message lost after that is found by reconciliation, the run overdue by its grace
    with its actor closed, and armed again; that delivery reads the row and sends."""
    env = await make_env({"job": noop})
    dropping = DroppingQueue(env.JOBS_QUEUE, drops=1)
    rewire(env, queue=dropping)
    db = recording(env)
    created = await env.jobs.create("job")
    run_id = created.kumofire_job_run_id
    assert (await env.JOB_COORDINATOR.getByName(run_id).status())["phase"] == "closed"
    assert env.JOB_COORDINATOR.alarm_of(run_id) is None
    await clock.advance(59)  # within the grace: nothing redelivers it
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "queued" and dropping.sent == 1
    await clock.advance(61)  # the first tick past the grace arms it again
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded" and dropping.sent == 2
    assert db.count(_QUEUED_WRITE) == 1  # the redelivery's guarded write matched nothing
    assert (await env.JOB_COORDINATOR.getByName(run_id).status())["phase"] == "closed"


async def test_a_duplicate_of_a_finished_runs_message_is_ignored_and_leaves_nothing(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """A duplicate message after the run finished: its closed actor grants the consumer a
    lease (an actor that stored nothing is one an inline arm delivered), the guarded start
    matches nothing, the consumer reads the run finished and closes the actor again: the
    handler does not run twice, and no state or alarm is left."""
    calls: list[float] = []

    async def job(ctx: JobContext) -> None:
        calls.append(clock.now())

    env = await make_env({"job": job})
    created = await env.jobs.create("job")
    run_id = created.kumofire_job_run_id
    await clock.advance(1)
    assert len(calls) == 1
    await env.JOBS_QUEUE.send({"version": 1, "kumofireJobRunId": run_id})
    await clock.advance(1)
    assert len(calls) == 1
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 1
    assert (await env.JOB_COORDINATOR.getByName(run_id).status())["phase"] == "closed"
    assert env.JOB_COORDINATOR.alarm_of(run_id) is None


async def test_a_failed_inline_send_is_retried_by_the_alarm_within_seconds(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[float] = []

    async def job(ctx: JobContext) -> None:
        calls.append(clock.now())

    env = await make_env({"job": job})
    start = clock.now()
    rewire(env, queue=OutageQueue(env.JOBS_QUEUE, clock, heals_at=start + 1))
    created = await env.jobs.create("job")
    await clock.advance(2)  # the alarm tries again 2 s after the failed send
    assert calls == [start + 2]
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded"


async def test_a_retried_run_goes_back_to_scheduled_and_its_retry_is_marked_queued(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    attempts: list[int] = []

    async def flaky(ctx: JobContext) -> None:
        attempts.append(ctx.job.attempt)
        if ctx.job.attempt == 1:
            raise RuntimeError("first attempt fails")

    env = await make_env({"job": flaky}, retry=RetryPolicy(max_attempts=2, base_delay=5))
    db = recording(env)
    created = await env.jobs.create("job")
    await clock.advance(0)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "scheduled" and attempts == [1]
    await clock.advance(5)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded" and attempts == [1, 2]
    assert db.count(_QUEUED_WRITE) == 1  # the retry's delivery, not the first


async def test_a_limited_jobs_due_runs_are_inserted_queued_and_placed_from_their_note(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """A limited job's run due at its create is inserted `queued` too: its arm's note carries
    its placement (job, key, priority, due time), so its delivery places it in its limiter's
    line (or sends it, a slot free) without a D1 write or a read of the row."""
    env = await make_env(
        {"limited": noop, "free": noop}, job_options={"limited": JobOptions(concurrency=1)}
    )
    db = recording(env)
    requests = [
        CreateRequest(name="limited", concurrency_key="a", priority=5),
        CreateRequest(name="limited", concurrency_key="b"),
        CreateRequest(name="free"),
    ]
    ids = [c.kumofire_job_run_id for c in await env.jobs.create_many(requests)]
    runs = [await env.jobs.get(run_id) for run_id in ids]
    assert [run.status for run in runs if run is not None] == ["queued"] * 3
    await clock.advance(0)
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1
    assert db.count(_QUEUED_WRITE) == 0  # the first two waited for one slot: no write either


async def test_a_job_named_like_a_placement_is_delivered_by_reading_its_row(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    name = '{"job":"limited","due":0}'  # an unlimited job's name that reads as a placement
    env = await make_env(
        {name: noop, "limited": noop}, job_options={"limited": JobOptions(concurrency=1)}
    )
    created = await env.jobs.create(name)
    await clock.advance(0)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 1
    status = await env.JOB_COORDINATOR.getByName("limiter:limited").limit_status()
    assert status == {"held": [], "offered": [], "waiting": 0}  # not placed as `limited`'s


async def test_a_dedupe_key_and_a_flows_children_due_at_create(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    released = asyncio.Event()

    async def held(ctx: JobContext) -> None:
        await released.wait()  # no run finishes before the reads below

    env = await make_env({"job": held})
    first = await env.jobs.create("job", dedupe_key="k")
    again = await env.jobs.create("job", dedupe_key="k")
    assert again.deduplicated and again.kumofire_job_run_id == first.kumofire_job_run_id
    flow = await env.jobs.create_flow(
        CreateRequest(name="job"), [CreateRequest(name="job"), CreateRequest(name="job", delay=5)]
    )
    children = [await env.jobs.get(child) for child in flow.children]
    # The due child was inserted `queued` (the consumer may have started it by now: these
    # reads take loop turns), the delayed one `scheduled`.
    due, delayed = [c.status for c in children if c is not None]
    assert due in ("queued", "running") and delayed == "scheduled"
    parent = await env.jobs.get(flow.parent_id)
    assert parent is not None and parent.status == "waiting"
    released.set()
    await clock.advance(5)
    for run_id in (first.kumofire_job_run_id, flow.parent_id, *flow.children):
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_a_message_naming_a_limiters_object_is_not_granted_a_vacant_lease(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """A lease on an actor holding nothing is granted only for a run id: a message naming a
    limiter's object (which holds no coordinator state) is refused `closed` as before, so no
    coordinator state is written into the limiter's object, and no close clears its slots."""
    release = asyncio.Event()

    async def slow(ctx: JobContext) -> None:
        await release.wait()

    env = await make_env({"limited": slow}, job_options={"limited": JobOptions(concurrency=1)})
    held = await env.jobs.create("limited")
    await clock.advance(0)  # it runs, holding the one slot
    limiter = env.JOB_COORDINATOR.getByName("limiter:limited")
    before = await limiter.limit_status()
    assert len(before["held"]) == 1
    await env.JOBS_QUEUE.send({"version": 1, "kumofireJobRunId": "limiter:limited"})
    await clock.advance(1)
    assert (await limiter.status())["phase"] == "closed"  # no coordinator state written
    env.JOB_COORDINATOR.evict("limiter:limited")  # what it holds is what its storage holds
    assert await limiter.limit_status() == before
    release.set()
    await clock.advance(0)
    run = await env.jobs.get(held.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded"
