"""A run's history (API.md Part 2, "Seeing what happened"): its attempts, its handler's log
lines, its progress and its result, through the jobs API on the embedded bindings with the
manual clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from kumofire_jobs import (
    AttemptOutcome,
    ConsumeOutcome,
    JobCanceledError,
    JobContext,
    JobOptions,
    LogLine,
    RetryPolicy,
    RunAttempt,
    ValidationError,
)
from kumofire_jobs.core import history, validation
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.history_store import HistoryStore
from kumofire_jobs.local.d1 import MAX_VALUE_BYTES
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory
from tests.support.faults import FailingNamespace, rewire
from tests.support.spies import consume_outcomes


async def attempts_of(env: LocalEnvironment, run_id: str) -> list[RunAttempt]:
    found = await env.jobs.attempts(run_id)
    assert found is not None
    return found


async def logs_of(env: LocalEnvironment, run_id: str) -> list[LogLine]:
    found = await env.jobs.logs(run_id)
    assert found is not None
    return found


# --- attempts -------------------------------------------------------------------------------------


async def test_a_succeeded_attempt_with_its_times_and_result(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def job(ctx: JobContext) -> Any:
        await clock.sleep_until(clock.now() + 2.5)
        return {"sent": 3}

    env = await make_env({"job": job})
    run_id = (await env.jobs.create("job")).kumofire_job_run_id
    assert await env.jobs.attempts(run_id) == []  # none finished yet
    await clock.advance(3)
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded" and run.result == {"sent": 3}
    [attempt] = await attempts_of(env, run_id)
    assert (attempt.attempt, attempt.outcome, attempt.error) == (1, "succeeded", None)
    assert attempt.started_at == run.started_at and attempt.finished_at == run.finished_at
    assert attempt.finished_at - attempt.started_at == timedelta(seconds=2.5)
    assert attempt.duration_ms == 2500
    assert await env.jobs.attempts("run_missing") is None
    assert await env.jobs.logs("run_missing") is None


async def test_retried_attempts_then_success_keep_each_error_with_its_traceback(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def flaky(ctx: JobContext) -> str:
        if ctx.job.attempt < 3:
            raise RuntimeError(f"boom {ctx.job.attempt}")
        return "done"

    env = await make_env({"flaky": flaky})
    run_id = (await env.jobs.create("flaky")).kumofire_job_run_id
    await clock.advance(10)
    attempts = await attempts_of(env, run_id)
    assert [(a.attempt, a.outcome) for a in attempts] == [
        (1, "retried"), (2, "retried"), (3, "succeeded"),
    ]  # fmt: skip
    for number, attempt in enumerate(attempts[:2], start=1):
        assert attempt.error is not None
        assert attempt.error.startswith("Traceback (most recent call last):")
        assert attempt.error.endswith(f"RuntimeError: boom {number}")
        assert "in flaky" in attempt.error  # the handler's frame
    assert attempts[1].started_at - attempts[0].finished_at == timedelta(seconds=1)  # backoff
    run = await env.jobs.get(run_id)
    assert run is not None and run.result == "done" and run.last_error is None


async def test_retried_attempts_then_failure(make_env: EnvFactory, clock: ManualClock) -> None:
    async def broken(ctx: JobContext) -> None:
        raise ValueError("never works")

    env = await make_env({"broken": broken})
    run_id = (await env.jobs.create("broken", max_attempts=2)).kumofire_job_run_id
    await clock.advance(10)
    attempts = await attempts_of(env, run_id)
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "retried"), (2, "failed")]
    assert all(a.error and a.error.endswith("ValueError: never works") for a in attempts)
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "failed" and run.result is None

    # A manual retry adds to the same history.
    await env.jobs.retry(run_id)
    await clock.advance(0)
    assert [a.outcome for a in await attempts_of(env, run_id)] == ["retried", "failed", "failed"]


async def test_a_timed_out_attempt_is_recorded_as_timed_out(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = consume_outcomes(monkeypatch)

    async def slow(ctx: JobContext) -> None:
        ctx.log.info("working")
        await clock.sleep_until(clock.now() + 100)

    options = JobOptions(timeout=10, retry=RetryPolicy(max_attempts=2, base_delay=1))
    env = await make_env({"slow": slow}, job_options={"slow": options})
    run_id = (await env.jobs.create("slow")).kumofire_job_run_id
    await clock.advance(10 + 1 + 10)
    attempts = await attempts_of(env, run_id)
    assert [(a.attempt, a.outcome, a.duration_ms) for a in attempts] == [
        (1, "timed_out", 10_000), (2, "timed_out", 10_000),
    ]  # fmt: skip
    assert all(a.error and a.error.startswith("TimeoutError") for a in attempts)
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "failed"
    assert run.last_error is not None and run.last_error.startswith("TimeoutError")
    assert outcomes == [ConsumeOutcome.TIMED_OUT, ConsumeOutcome.TIMED_OUT]
    assert [line.attempt for line in await logs_of(env, run_id)] == [1, 2]


async def test_a_consumer_that_dies_leaves_an_interrupted_attempt(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    unblock_first = asyncio.Event()

    async def job(ctx: JobContext) -> str:
        ctx.log.info("step", attempt_seen=ctx.job.attempt)
        if ctx.job.attempt == 1:
            await unblock_first.wait()  # the first consumer hangs, its renewals fail
        return "ok"

    env = await make_env({"job": job}, lease_seconds=30)
    partition = FailingNamespace(env.JOB_COORDINATOR, "renew")
    rewire(env, coordinator=partition)
    run_id = (await env.jobs.create("job")).kumofire_job_run_id
    start = clock.now()
    await clock.advance(29.9)
    assert await env.jobs.attempts(run_id) == []  # not known to be dead yet
    await clock.advance(0.1)  # the lease expires: the next delivery takes the run over
    partition.methods.clear()
    attempts = await attempts_of(env, run_id)
    assert [(a.attempt, a.outcome, a.error) for a in attempts] == [
        (1, "interrupted", None), (2, "succeeded", None),
    ]  # fmt: skip
    assert attempts[0].started_at.timestamp() == start
    assert attempts[0].finished_at == attempts[1].started_at  # when the takeover saw it
    assert attempts[0].duration_ms == 30_000
    # The dead attempt's line was written a second after it was logged, so it survived.
    assert [(line.attempt, line.fields) for line in await logs_of(env, run_id)] == [
        (1, {"attempt_seen": 1}), (2, {"attempt_seen": 2}),
    ]  # fmt: skip

    unblock_first.set()  # the stale consumer wakes up: its writes are fenced off
    await clock.advance(5)
    assert len(await attempts_of(env, run_id)) == 2
    assert len(await logs_of(env, run_id)) == 2


async def test_a_crash_on_the_last_attempt_is_interrupted_and_fails_the_run(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def hang(ctx: JobContext) -> None:
        await asyncio.Event().wait()

    env = await make_env({"job": hang}, lease_seconds=30)
    rewire(env, coordinator=FailingNamespace(env.JOB_COORDINATOR, "renew"))
    run_id = (await env.jobs.create("job", max_attempts=1)).kumofire_job_run_id
    await clock.advance(31)
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "failed"
    [attempt] = await attempts_of(env, run_id)
    assert (attempt.attempt, attempt.outcome) == (1, "interrupted")
    assert attempt.finished_at == run.finished_at


async def test_a_canceled_attempt_keeps_what_its_handler_logged(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def job(ctx: JobContext) -> None:
        ctx.log.info("before")
        await ctx.progress({"done": 1})
        while True:
            await clock.sleep_until(clock.now() + 0.25)
            try:
                await ctx.heartbeat()
            except JobCanceledError:
                ctx.log.warning("stopping")
                raise

    env = await make_env({"job": job})
    run_id = (await env.jobs.create("job")).kumofire_job_run_id
    await clock.advance(0.5)
    await env.jobs.cancel(run_id)
    await clock.advance(0.5)
    [attempt] = await attempts_of(env, run_id)
    assert (attempt.outcome, attempt.duration_ms) == ("canceled", 500)
    assert [(line.level, line.event) for line in await logs_of(env, run_id)] == [
        ("info", "before"), ("warning", "stopping"),
    ]  # fmt: skip
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "canceled" and run.progress == {"done": 1}


async def test_deleting_a_run_deletes_its_history(make_env: EnvFactory, clock: ManualClock) -> None:
    async def job(ctx: JobContext) -> int:
        ctx.log.info("hello")
        return 1

    env = await make_env({"job": job})
    run_id = (await env.jobs.create("job")).kumofire_job_run_id
    await clock.advance(0)
    assert len(await attempts_of(env, run_id)) == 1 and len(await logs_of(env, run_id)) == 1
    assert await env.jobs.delete(run_id)
    assert await env.jobs.attempts(run_id) is None and await env.jobs.logs(run_id) is None


# --- logs -----------------------------------------------------------------------------------------


async def test_log_lines_keep_level_event_and_fields(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def job(ctx: JobContext) -> None:
        ctx.log.debug("not kept")
        ctx.log.info("sent", to="a@example.com", count=2)
        ctx.log.bind(step=2).warning("slow %s", "smtp")
        try:
            raise KeyError("x")
        except KeyError:
            ctx.log.exception("failed")
        ctx.log.error("odd", value=object())  # not JSON: kept as its repr

    env = await make_env({"job": job})
    run_id = (await env.jobs.create("job")).kumofire_job_run_id
    await clock.advance(0)
    lines = await logs_of(env, run_id)
    run = await env.jobs.get(run_id)
    assert run is not None
    assert [(line.level, line.event, line.attempt) for line in lines] == [
        ("info", "sent", 1), ("warning", "slow smtp", 1), ("error", "failed", 1),
        ("error", "odd", 1),
    ]  # fmt: skip
    assert lines[0].fields == {"to": "a@example.com", "count": 2}
    assert lines[0].at == run.started_at
    assert lines[1].fields == {"step": 2}
    assert lines[2].fields["exception"].endswith("KeyError: 'x'")
    assert lines[3].fields["value"].startswith("<object object at")


async def test_logs_keep_the_last_200_lines(make_env: EnvFactory, clock: ManualClock) -> None:
    async def chatty(ctx: JobContext) -> None:
        for i in range(250):
            ctx.log.info(f"line {i}")

    env = await make_env({"chatty": chatty})
    run_id = (await env.jobs.create("chatty")).kumofire_job_run_id
    await clock.advance(0)
    lines = await logs_of(env, run_id)
    assert [line.event for line in lines] == [f"line {i}" for i in range(50, 250)]


async def test_logs_keep_at_most_64_kib_dropping_the_oldest(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def verbose(ctx: JobContext) -> None:
        for i in range(100):
            ctx.log.info(f"line {i}", text="y" * 900)

    env = await make_env({"verbose": verbose})
    run_id = (await env.jobs.create("verbose")).kumofire_job_run_id
    await clock.advance(0)
    lines = await logs_of(env, run_id)
    assert 50 < len(lines) < 100
    assert [line.event for line in lines] == [f"line {i}" for i in range(100 - len(lines), 100)]
    row = (
        await env.JOBS_DB.prepare("SELECT logs FROM kumofire_job_runs WHERE id = ?")
        .bind(run_id)
        .first()
    )
    assert history.MAX_LOG_BYTES - 1100 < len(row["logs"].encode()) <= history.MAX_LOG_BYTES


# --- progress -------------------------------------------------------------------------------------


async def test_progress_is_written_at_most_once_a_second_and_last_with_the_outcome(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[tuple[float, str | None]] = []
    save = HistoryStore.save

    async def spy(self: HistoryStore, run_id: str, token: int, progress: Any, *rest: Any) -> None:
        writes.append((clock.now(), progress))
        await save(self, run_id, token, progress, *rest)

    monkeypatch.setattr(HistoryStore, "save", spy)
    start = clock.now()

    async def job(ctx: JobContext) -> None:
        await ctx.progress(1)  # in the attempt's first second: written at +1 s
        await clock.sleep_until(start + 0.5)
        await ctx.progress(2)  # replaces 1 before it was written
        await clock.sleep_until(start + 1.5)
        await ctx.progress(3)
        await ctx.progress(4)  # written at +2 s, a second after the last write
        await clock.sleep_until(start + 3)
        await ctx.progress(5)  # the last write is a second old: written now
        await ctx.progress(6)  # written with the outcome
        with pytest.raises(ValidationError, match="not JSON-encodable"):
            await ctx.progress(object())
        with pytest.raises(ValidationError, match="over the limit"):
            await ctx.progress("x" * history.MAX_PROGRESS_BYTES)

    env = await make_env({"job": job})
    run_id = (await env.jobs.create("job")).kumofire_job_run_id

    async def progress() -> Any:
        run = await env.jobs.get(run_id)
        assert run is not None
        return run.progress

    await clock.advance(0.5)
    assert await progress() is None
    await clock.advance(0.5)
    assert await progress() == 2
    await clock.advance(0.5)
    assert await progress() == 2
    await clock.advance(0.5)
    assert await progress() == 4
    await clock.advance(1)
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded" and run.progress == 6
    assert writes == [(start + 1, "2"), (start + 2, "4"), (start + 3, "5")]


async def test_a_short_run_writes_its_lines_and_progress_with_its_outcome_alone(
    make_env: EnvFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[float] = []
    save = HistoryStore.save

    async def spy(self: HistoryStore, *args: Any) -> None:
        writes.append(clock.now())
        await save(self, *args)

    monkeypatch.setattr(HistoryStore, "save", spy)

    async def job(ctx: JobContext) -> dict[str, int]:
        for i in range(10):
            ctx.log.info("step", i=i)
        for i in range(5):
            await ctx.progress(i)
        await clock.sleep_until(clock.now() + 0.9)
        return {"steps": 10}

    env = await make_env({"job": job})
    run_id = (await env.jobs.create("job")).kumofire_job_run_id
    await clock.advance(5)
    run = await env.jobs.get(run_id)
    assert run is not None and (run.progress, run.result) == (4, {"steps": 10})
    assert len(await logs_of(env, run_id)) == 10
    assert writes == []  # all of it went with the outcome


async def test_a_new_attempt_starts_with_no_progress(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    seen: list[Any] = []
    env: LocalEnvironment | None = None

    async def job(ctx: JobContext) -> None:
        assert env is not None
        run = await env.jobs.get(ctx.job.id)
        assert run is not None
        seen.append(run.progress)
        await ctx.progress(ctx.job.attempt * 10)
        if ctx.job.attempt == 1:
            raise RuntimeError("again")

    env = await make_env({"job": job})
    run_id = (await env.jobs.create("job")).kumofire_job_run_id
    await clock.advance(5)
    run = await env.jobs.get(run_id)
    assert run is not None and run.progress == 20 and seen == [None, None]


# --- results --------------------------------------------------------------------------------------


async def test_a_result_over_64_kib_fails_the_attempt_for_good(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def big(ctx: JobContext) -> str:
        return "x" * history.MAX_RESULT_BYTES  # two quotes over the limit as JSON

    env = await make_env({"big": big})
    run_id = (await env.jobs.create("big", max_attempts=3)).kumofire_job_run_id
    await clock.advance(10)
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "failed" and run.attempt == 1 and run.result is None
    assert run.last_error is not None
    assert f"{history.MAX_RESULT_BYTES + 2} bytes as JSON, over the limit" in run.last_error
    [attempt] = await attempts_of(env, run_id)
    assert attempt.outcome == "failed" and attempt.error is not None
    assert "the handler's return value is" in attempt.error


async def test_a_result_that_is_not_json_fails_the_attempt(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def odd(ctx: JobContext) -> object:
        return object()

    async def largest(ctx: JobContext) -> str:
        return "x" * (history.MAX_RESULT_BYTES - 2)

    async def nan(ctx: JobContext) -> object:
        return {"ratio": float("nan")}

    env = await make_env({"odd": odd, "largest": largest, "nan": nan})
    odd_id = (await env.jobs.create("odd")).kumofire_job_run_id
    largest_id = (await env.jobs.create("largest")).kumofire_job_run_id
    nan_id = (await env.jobs.create("nan")).kumofire_job_run_id
    await clock.advance(0)
    run = await env.jobs.get(odd_id)
    assert run is not None and run.status == "failed" and run.last_error is not None
    assert "the handler's return value is not JSON-encodable" in run.last_error
    run = await env.jobs.get(nan_id)  # named as the return value, not as a payload
    assert run is not None and run.status == "failed" and run.last_error is not None
    assert "the handler's return value holds nan, which JSON cannot" in run.last_error
    run = await env.jobs.get(largest_id)
    assert run is not None and run.status == "succeeded" and len(run.result) == 65534


# --- a whole row ----------------------------------------------------------------------------------


def test_the_largest_payload_leaves_room_for_the_largest_history() -> None:
    assert validation.MAX_PAYLOAD_BYTES + history.MAX_HISTORY_BYTES + 40_000 <= MAX_VALUE_BYTES


async def test_a_run_with_every_limit_reached_still_fits_its_row(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """The local D1 refuses a row over 1,000,000 bytes, as D1 does."""

    async def everything(ctx: JobContext) -> str:
        for i in range(300):
            ctx.log.info("line", i=i, text="é" * 400)
        await ctx.progress("p" * (history.MAX_PROGRESS_BYTES - 2))
        if ctx.job.attempt < ctx.job.max_attempts:
            raise RuntimeError("ü" * 20_000)
        return "r" * (history.MAX_RESULT_BYTES - 2)

    env = await make_env({"job": everything})
    created = await env.jobs.create(
        "job", "x" * (validation.MAX_PAYLOAD_BYTES - 2), max_attempts=12, dedupe_key="d" * 512
    )
    await clock.advance(3600)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 12
    attempts = await attempts_of(env, run.id)
    assert [a.attempt for a in attempts] == list(range(1, 13))  # every attempt still listed
    sizes = [len((a.error or "").encode()) for a in attempts]
    assert sizes[0] <= history.SHORT_ERROR_BYTES  # the oldest errors shortened
    assert history.MAX_ERROR_BYTES - 100 < sizes[10] <= history.MAX_ERROR_BYTES  # newest whole
    assert all(a.error is not None and a.error.endswith("ü" * 50) for a in attempts[:11])


def test_the_attempts_kept_shorten_the_oldest_errors_then_drop_the_oldest() -> None:
    column = None
    for number in range(1, 131):
        record = history.attempt_record(
            number, number * 1000, number * 1000 + 5, AttemptOutcome.RETRIED,
            "Traceback ...\n" + "x" * 20_000 + f"\nRuntimeError: {number}",
        )  # fmt: skip
        column = history.with_attempt(column, record)
        assert column is not None and len(column.encode()) <= history.MAX_ATTEMPTS_BYTES
        attempts = history.attempts_from_json(column)
        assert [a.attempt for a in attempts] == list(range(max(1, number - 99), number + 1))
        assert all(a.error and a.error.endswith(f"RuntimeError: {a.attempt}") for a in attempts)
        assert len(attempts[-1].error.encode()) > history.MAX_ERROR_BYTES - 100  # type: ignore[union-attr]
