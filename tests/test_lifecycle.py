"""The job lifecycle through the public API, on the embedded bindings and the manual clock."""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta
from typing import Any

import pytest

from kumofire_jobs import (
    ConflictError,
    CreateRequest,
    JobContext,
    NonRetryableError,
    RetryPolicy,
    UnknownJobError,
    ValidationError,
    create_runtime,
)
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.times import ms_to_datetime
from tests.support.envs import EnvFactory


class Recorder:
    """A handler that records each execution and can fail its first attempts."""

    def __init__(self, fail_attempts: int = 0, error: type[Exception] = RuntimeError) -> None:
        self.calls: list[tuple[str, int, object]] = []
        self.fail_attempts = fail_attempts
        self.error = error

    async def __call__(self, ctx: JobContext) -> None:
        self.calls.append((ctx.job.id, ctx.job.attempt, ctx.job.payload))
        if ctx.job.attempt <= self.fail_attempts:
            raise self.error(f"attempt {ctx.job.attempt} failed")


async def test_immediate_run_succeeds_once(make_env: EnvFactory, clock: ManualClock) -> None:
    handler = Recorder()
    env = await make_env({"email": handler})
    created = await env.jobs.create("email", {"to": "a@example.com"})
    assert not created.deduplicated
    assert created.kumofire_job_run_id.startswith("run_")

    await clock.advance(0)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None
    assert run.status == "succeeded"
    assert run.attempt == 1
    assert run.payload == {"to": "a@example.com"}
    assert run.started_at == run.finished_at == ms_to_datetime(int(clock.now() * 1000))
    assert handler.calls == [(run.id, 1, {"to": "a@example.com"})]


async def test_delay_runs_at_its_time_never_before(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    handler = Recorder()
    env = await make_env({"job": handler})
    created = await env.jobs.create("job", delay=2.5)
    await clock.advance(2.499)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "scheduled"
    assert handler.calls == []
    await clock.advance(0.001)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded"
    assert run.started_at == run.scheduled_for


async def test_run_at_future_and_past(make_env: EnvFactory, clock: ManualClock) -> None:
    handler = Recorder()
    env = await make_env({"job": handler})
    now = ms_to_datetime(int(clock.now() * 1000))
    future = await env.jobs.create("job", run_at=now + timedelta(seconds=60))
    past = await env.jobs.create("job", run_at=now - timedelta(hours=1))
    await clock.advance(0)
    past_run = await env.jobs.get(past.kumofire_job_run_id)
    assert past_run is not None and past_run.status == "succeeded"
    assert past_run.scheduled_for == now  # a past run_at is due now
    future_run = await env.jobs.get(future.kumofire_job_run_id)
    assert future_run is not None and future_run.status == "scheduled"
    await clock.advance(60)
    future_run = await env.jobs.get(future.kumofire_job_run_id)
    assert future_run is not None and future_run.status == "succeeded"
    assert future_run.started_at == now + timedelta(seconds=60)


async def test_create_rejects_bad_input(make_env: EnvFactory) -> None:
    env = await make_env({"job": Recorder()})
    with pytest.raises(UnknownJobError):
        await env.jobs.create("nope")
    with pytest.raises(ValidationError, match="not both"):
        await env.jobs.create("job", delay=1, run_at=ms_to_datetime(0))
    with pytest.raises(ValidationError, match="naive"):
        await env.jobs.create("job", run_at=ms_to_datetime(0).replace(tzinfo=None))
    with pytest.raises(ValidationError, match="delay"):
        await env.jobs.create("job", delay=-1)
    with pytest.raises(ValidationError, match="365 days"):
        await env.jobs.create("job", delay=366 * 86400)
    with pytest.raises(ValidationError, match="max_attempts"):
        await env.jobs.create("job", max_attempts=0)
    with pytest.raises(ValidationError, match="max_attempts"):
        await env.jobs.create("job", max_attempts=101)
    with pytest.raises(ValidationError, match="JSON"):
        await env.jobs.create("job", {"when": object()})
    assert (await env.jobs.list()).items == []


async def test_retry_then_success_uses_the_policy_delay(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    handler = Recorder(fail_attempts=1)
    env = await make_env({"job": handler}, retry=RetryPolicy(base_delay=5, max_delay=60))
    created = await env.jobs.create("job")
    await clock.advance(0)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None
    assert run.status == "scheduled"
    assert run.attempt == 1
    assert run.last_error == "RuntimeError: attempt 1 failed"
    assert run.scheduled_for == ms_to_datetime(int(clock.now() * 1000) + 5000)
    await clock.advance(4.999)
    assert len(handler.calls) == 1
    await clock.advance(0.001)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 2
    assert [attempt for _, attempt, _ in handler.calls] == [1, 2]


async def test_retries_exhausted_fail_the_run(make_env: EnvFactory, clock: ManualClock) -> None:
    handler = Recorder(fail_attempts=99)
    env = await make_env({"job": handler})  # default policy: 3 attempts, 1 s then 2 s
    created = await env.jobs.create("job")
    await clock.advance(0)
    await clock.advance(1)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.attempt == 2 and run.status == "scheduled"
    await clock.advance(2)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None
    assert run.status == "failed"
    assert run.attempt == 3
    assert run.last_error == "RuntimeError: attempt 3 failed"
    await clock.advance(3600)
    assert len(handler.calls) == 3


async def test_max_attempts_per_run_overrides_policy(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    handler = Recorder(fail_attempts=99)
    env = await make_env({"job": handler})
    created = await env.jobs.create("job", max_attempts=1)
    await clock.advance(60)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "failed" and run.attempt == 1


async def test_non_retryable_error_fails_at_once(make_env: EnvFactory, clock: ManualClock) -> None:
    handler = Recorder(fail_attempts=1, error=NonRetryableError)
    env = await make_env({"job": handler})
    created = await env.jobs.create("job")
    await clock.advance(60)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "failed" and run.attempt == 1
    assert run.last_error == "NonRetryableError: attempt 1 failed"


async def test_run_without_a_handler_fails_with_a_clear_error(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    env = await make_env({"gone": Recorder()}, retry=RetryPolicy(max_attempts=1))
    created = await env.jobs.create("gone", delay=10)
    del env.runtime.handlers["gone"]  # a deploy removed the handler before the run was due
    await clock.advance(10)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "failed"
    assert run.last_error == "no handler is registered for job 'gone'"


async def test_dedupe_returns_the_existing_run(make_env: EnvFactory, clock: ManualClock) -> None:
    handler = Recorder()
    env = await make_env({"job": handler})
    first = await env.jobs.create("job", {"n": 1}, dedupe_key="order-42")
    second = await env.jobs.create("job", {"n": 2}, dedupe_key="order-42", delay=30)
    assert second.deduplicated and not first.deduplicated
    assert second.kumofire_job_run_id == first.kumofire_job_run_id
    await clock.advance(0)
    third = await env.jobs.create("job", {"n": 3}, dedupe_key="order-42")  # finished: still there
    assert third.deduplicated and third.kumofire_job_run_id == first.kumofire_job_run_id
    assert [payload for _, _, payload in handler.calls] == [{"n": 1}]


async def test_cancel_before_start_never_runs(make_env: EnvFactory, clock: ManualClock) -> None:
    handler = Recorder()
    env = await make_env({"job": handler})
    created = await env.jobs.create("job", delay=5)
    run = await env.jobs.cancel(created.kumofire_job_run_id)
    assert run is not None and run.status == "canceled" and run.finished_at is not None
    await clock.advance(60)
    assert handler.calls == []
    status = await env.JOB_COORDINATOR.getByName(created.kumofire_job_run_id).status()
    assert status["phase"] == "closed"
    again = await env.jobs.cancel(created.kumofire_job_run_id)  # finished: unchanged
    assert again is not None and again.updated_at == run.updated_at
    assert await env.jobs.cancel("run_missing") is None


async def test_cancel_during_a_run_stops_the_handler_at_its_heartbeat(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    started = asyncio.Event()
    stopped: list[str] = []

    async def slow(ctx: JobContext) -> None:
        started.set()
        try:
            await clock.sleep_until(clock.now() + 600)
        except asyncio.CancelledError:
            stopped.append("cancelled")
            raise

    env = await make_env({"slow": slow}, lease_seconds=30)
    created = await env.jobs.create("slow")
    await clock.advance(0)
    assert started.is_set()
    run = await env.jobs.cancel(created.kumofire_job_run_id)
    assert run is not None and run.status == "canceled"
    await clock.advance(10)  # the background heartbeat (every lease/3) learns of the cancel
    assert stopped == ["cancelled"]
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "canceled" and run.attempt == 1
    status = await env.JOB_COORDINATOR.getByName(created.kumofire_job_run_id).status()
    assert status["phase"] == "closed"


async def test_cancel_during_a_run_stays_canceled_if_the_handler_returns(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    release = asyncio.Event()

    async def stubborn(ctx: JobContext) -> None:
        await release.wait()

    env = await make_env({"job": stubborn})
    created = await env.jobs.create("job")
    await clock.advance(0)
    await env.jobs.cancel(created.kumofire_job_run_id)
    release.set()  # finishes before any heartbeat
    await clock.advance(0)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "canceled"


async def test_heartbeat_raises_after_cancel(make_env: EnvFactory, clock: ManualClock) -> None:
    outcomes: list[str] = []
    proceed = asyncio.Event()

    async def polite(ctx: JobContext) -> None:
        await ctx.heartbeat()
        await proceed.wait()
        try:
            await ctx.heartbeat()
        except Exception as exc:
            outcomes.append(type(exc).__name__)
            raise

    env = await make_env({"job": polite})
    created = await env.jobs.create("job")
    await clock.advance(0)
    await env.jobs.cancel(created.kumofire_job_run_id)
    proceed.set()
    await clock.advance(0)
    assert outcomes == ["JobCanceledError"]
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "canceled"


async def test_manual_retry_of_failed_and_canceled_runs(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    handler = Recorder(fail_attempts=1)
    env = await make_env({"job": handler}, retry=RetryPolicy(max_attempts=1))
    failed = await env.jobs.create("job")
    await clock.advance(0)
    run = await env.jobs.get(failed.kumofire_job_run_id)
    assert run is not None and run.status == "failed"

    retried = await env.jobs.retry(failed.kumofire_job_run_id)
    assert retried is not None and retried.status == "scheduled" and retried.max_attempts == 2
    await clock.advance(0)
    run = await env.jobs.get(failed.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 2

    with pytest.raises(ConflictError):
        await env.jobs.retry(failed.kumofire_job_run_id)
    assert await env.jobs.retry("run_missing") is None

    canceled = await env.jobs.create("job", delay=100)
    await env.jobs.cancel(canceled.kumofire_job_run_id)
    retried = await env.jobs.retry(canceled.kumofire_job_run_id)
    assert retried is not None and retried.max_attempts == 2 and retried.attempt == 0
    await clock.advance(1)  # attempt 1 fails (this handler fails first attempts), 2 succeeds
    run = await env.jobs.get(canceled.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 2


async def test_list_filters_and_cursor_pagination(make_env: EnvFactory, clock: ManualClock) -> None:
    env = await make_env({"a": Recorder(), "b": Recorder()})
    ids = []
    for i in range(7):
        ids.append(
            (await env.jobs.create("a" if i % 2 == 0 else "b", delay=10)).kumofire_job_run_id
        )
        await clock.advance(0.001)
    page = await env.jobs.list(limit=3)
    assert [r.id for r in page.items] == ids[::-1][:3]
    assert page.next_cursor is not None
    seen = [r.id for r in page.items]
    while page.next_cursor is not None:
        page = await env.jobs.list(limit=3, cursor=page.next_cursor)
        seen += [r.id for r in page.items]
    assert seen == ids[::-1]

    only_a = await env.jobs.list(name="a")
    assert [r.id for r in only_a.items] == ids[::-1][::2]
    assert (await env.jobs.list(status="succeeded")).items == []
    await env.jobs.cancel(ids[0])
    assert [r.id for r in (await env.jobs.list(status="canceled")).items] == [ids[0]]
    with pytest.raises(ValidationError):
        await env.jobs.list(status="bogus")
    with pytest.raises(ValidationError):
        await env.jobs.list(limit=201)
    with pytest.raises(ValidationError):
        await env.jobs.list(cursor="not-a-cursor")


async def test_counts_include_every_status(make_env: EnvFactory, clock: ManualClock) -> None:
    env = await make_env({"a": Recorder(), "b": Recorder(fail_attempts=9)})
    await env.jobs.create("a")
    await env.jobs.create("a", delay=100)
    await env.jobs.create("b", max_attempts=1)
    await clock.advance(0)
    assert await env.jobs.counts() == {
        "waiting": 0, "scheduled": 1, "queued": 0, "running": 0,
        "succeeded": 1, "failed": 1, "canceled": 0,
    }  # fmt: skip
    assert (await env.jobs.counts(name="b"))["failed"] == 1
    assert sum((await env.jobs.counts(name="nope")).values()) == 0


async def test_create_many_in_one_call(make_env: EnvFactory, clock: ManualClock) -> None:
    handler = Recorder()
    env = await make_env({"job": handler})
    created = await env.jobs.create_many(
        [CreateRequest(name="job", payload=i, dedupe_key=f"k{i % 3}") for i in range(3)]
        + [CreateRequest(name="job", payload="late", delay=5)]
    )
    assert len(created) == 4 and not any(c.deduplicated for c in created)
    again = await env.jobs.create_many([CreateRequest(name="job", payload=9, dedupe_key="k1")])
    assert again[0].deduplicated and again[0].kumofire_job_run_id == created[1].kumofire_job_run_id
    await clock.advance(5)
    assert sorted(str(p) for _, _, p in handler.calls) == ["0", "1", "2", "late"]
    with pytest.raises(ValidationError, match="at most 100"):
        await env.jobs.create_many([CreateRequest(name="job")] * 101)
    with pytest.raises(UnknownJobError):  # one bad request rejects the call, nothing is created
        await env.jobs.create_many([CreateRequest(name="job"), CreateRequest(name="nope")])
    assert sum((await env.jobs.counts()).values()) == 4


async def test_consume_driven_outside_any_task_still_runs_the_handler(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """Some runtimes drive a coroutine without wrapping it in a task (no current task to
    cancel on a lost lease): the handler then gets a task of its own."""
    from tests.support.faults import DroppingQueue, rewire

    seen: list[str] = []

    async def job(ctx: JobContext) -> None:
        seen.append(ctx.job.id)

    env = await make_env({"job": job})
    rewire(env, queue=DroppingQueue(env.JOBS_QUEUE, drops=1))  # its message never arrives
    created = await env.jobs.create("job")
    run_id = created.kumofire_job_run_id
    await clock.advance(0)
    assert seen == []

    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    coro = env.jobs.consume({"version": 1, "kumofireJobRunId": run_id})

    def step(_: object = None) -> None:
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            done.set_result(stop.value)
            return
        except BaseException as exc:  # reported through the future
            done.set_exception(exc)
            return
        yielded.add_done_callback(step)

    loop.call_soon(step)  # a plain callback: no current task while the coroutine runs
    result = await done
    assert result.outcome == "succeeded"
    assert seen == [run_id]
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded"


@pytest.mark.parametrize("name", ["", "n" * 257, "team/email", ".", "..", "bad\ud800"])
def test_a_job_name_the_api_cannot_carry_is_refused_when_the_runtime_is_created(
    name: str,
) -> None:
    """`create` refuses an empty or over-long name, `/v1/jobs/team%2Femail/pause` arrives
    decoded and matches no route, and `/v1/jobs/../pause` is resolved by the client to
    `/v1/pause` (by the CLI's httpx, curl and the dashboard's browser): such a job could get no
    run, or not be paused over HTTP. A lone surrogate made `/v1/jobs` and `/v1/metrics` 500."""
    with pytest.raises(ValueError, match="job name"):
        create_runtime({name: Recorder()})
    create_runtime({"n" * 256: Recorder(), "team.email v2?#%": Recorder(), "...": Recorder()})


def test_a_handler_that_is_not_async_is_refused_when_the_runtime_is_created() -> None:
    sent: list[object] = []

    def send_email(ctx: JobContext) -> None:  # a plain function: its side effect would repeat
        sent.append(ctx.job.payload)

    with pytest.raises(TypeError, match="handler of job 'email' is not async"):
        create_runtime({"ok": Recorder(), "email": send_email})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="job 'hi' is not async"):
        create_runtime({"hi": lambda ctx: None})  # type: ignore[dict-item, return-value]
    with pytest.raises(TypeError, match="job 'obj' is not callable"):
        create_runtime({"obj": object()})  # type: ignore[dict-item]

    class Job:
        async def run(self, ctx: JobContext, greeting: str) -> None:
            sent.append(greeting)

    async def email(ctx: JobContext, to: str = "b@example.com") -> None:
        sent.append(to)

    def logged(handler: Any) -> Any:  # a decorator that hands on the coroutine
        @functools.wraps(handler)
        def wrapper(ctx: JobContext) -> Any:
            return handler(ctx)

        return wrapper

    create_runtime({
        "function": email, "object": Recorder(), "wrapped": logged(Recorder()),
        "partial": functools.partial(email, to="a@example.com"),
        "method": functools.partial(Job().run, greeting="hi"),
    })  # fmt: skip


async def test_a_handler_that_returns_no_awaitable_fails_without_a_retry(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    calls: list[str] = []
    env = await make_env({"job": Recorder()})
    # Past the runtime's check (an odd callable could be): it runs, then returns no awaitable.
    env.runtime.handlers["job"] = lambda ctx: calls.append(ctx.job.id)  # type: ignore[assignment, return-value]
    created = await env.jobs.create("job", max_attempts=3)
    await clock.advance(60)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and (run.status, run.attempt) == ("failed", 1)
    assert run.last_error is not None and "not an awaitable" in run.last_error
    assert calls == [created.kumofire_job_run_id]  # the side effect ran once


async def test_create_many_never_inserts_a_run_twice_when_a_dedupe_holder_is_pruned(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    handler = Recorder()
    env = await make_env({"job": handler})
    holder = await env.jobs.create("job", "holder", dedupe_key="order-1")
    await clock.advance(0)
    store = env.jobs.runs._store
    insert_many = store.insert_many

    async def insert_then_prune(runs: Any) -> list[bool]:
        inserted = await insert_many(runs)
        # Retention deletes the finished holder between the batch's insert and its lookup.
        delete = "DELETE FROM kumofire_job_runs WHERE id = ?"
        await store.db.prepare(delete).bind(holder.kumofire_job_run_id).run()
        return inserted

    store.insert_many = insert_then_prune  # type: ignore[method-assign]
    created = await env.jobs.create_many(
        [CreateRequest(name="job", payload="plain"), CreateRequest(name="job", payload="keyed",
         dedupe_key="order-1")]
    )  # fmt: skip
    assert [c.deduplicated for c in created] == [False, False]
    runs = (await env.jobs.list()).items
    assert sorted((r.id, r.payload) for r in runs) == sorted(
        zip([c.kumofire_job_run_id for c in created], ["plain", "keyed"], strict=True)
    )
    await clock.advance(300)  # reconciliation too: nothing left unarmed to find
    assert sorted(str(p) for _, _, p in handler.calls) == ["holder", "keyed", "plain"]


def test_a_remote_handler_that_is_not_async_is_refused_when_bound() -> None:
    runtime = create_runtime({"ok": Recorder()})
    with pytest.raises(TypeError, match="job 'notify' is not async"):
        runtime.handlers_with({"notify": lambda ctx: None})  # type: ignore[dict-item, return-value]
    assert set(runtime.handlers_with({"notify": Recorder()})) == {"ok", "notify"}
