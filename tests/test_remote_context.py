"""What a remote handler carries back besides its result (`cloudflare/remote_answer.py`): its
log lines, its progress, its error with the lines logged before it; and the lease the service
keeps renewing while the call runs. On the embedded bindings, the target Worker in-process
behind a service binding, on the manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kumofire_jobs import NonRetryableError, RetryPolicy, create_runtime
from kumofire_jobs.cloudflare.remote import REMOTE_HANDLERS_VAR
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.environment import LocalEnvironment, WranglerSettings
from kumofire_jobs.local.services import LocalServiceBinding
from kumofire_jobs.remote import ANSWER_KEY, RemoteContext

Method = Callable[[Any], Awaitable[Any]]


def target(method: Method) -> type:
    """A WorkerEntrypoint whose `run_job` is `method`."""

    class Handlers:
        def __init__(self, ctx: Any, env: Any) -> None:
            pass

        async def run_job(self, run: Any) -> Any:
            return await method(run)

    return Handlers


@pytest.fixture
async def make_env(
    clock: ManualClock, data_dir: Path
) -> AsyncIterator[Callable[..., Awaitable[LocalEnvironment]]]:
    made: list[LocalEnvironment] = []

    async def make(method: Method, **options: Any) -> LocalEnvironment:
        runtime = create_runtime(
            {}, clock=clock, retry=RetryPolicy(max_attempts=3, base_delay=1.0), **options
        )
        env = LocalEnvironment(
            runtime,
            data_dir / f"env{len(made)}",
            settings=WranglerSettings(vars={REMOTE_HANDLERS_VAR: {"notify": {"binding": "H"}}}),
            services={"H": LocalServiceBinding(target(method), name="H")},
        )
        made.append(env)
        await env.start()
        return env

    yield make
    for env in made:
        await env.stop(drain_seconds=0)


async def test_log_lines_and_progress_come_back_with_the_result(
    make_env: Callable[..., Awaitable[LocalEnvironment]], clock: ManualClock
) -> None:
    async def run_job(run: Any) -> Any:
        ctx = RemoteContext(run, clock=clock)
        assert ctx.job.payload == {"to": "a@example.com"} and ctx.job.attempt == 1
        ctx.log.debug("detail")  # below info: not kept, as for a local handler
        ctx.log.info("sending", to=ctx.job.payload["to"])
        await ctx.progress({"step": 1})
        await release.wait()  # the target's own time passes
        await ctx.progress({"step": 2})
        ctx.log.warning("slow relay", ms=1800)
        return ctx.answer({"sent": True})

    release = asyncio.Event()
    env = await make_env(run_job)
    run_id = (await env.jobs.create("notify", {"to": "a@example.com"})).kumofire_job_run_id
    await clock.advance(0)
    await clock.advance(2)
    release.set()
    await clock.advance(0)
    run = await env.jobs.get(run_id)
    assert run is not None and (run.status, run.attempt) == ("succeeded", 1)
    assert (run.result, run.progress) == ({"sent": True}, {"step": 2})
    lines = await env.jobs.logs(run_id)
    assert lines is not None
    assert [(line.attempt, line.level, line.event) for line in lines] == [
        (1, "info", "sending"),
        (1, "warning", "slow relay"),
    ]
    assert lines[0].fields == {"to": "a@example.com", "remote_at": "2027-01-01T00:00:00.000Z"}
    assert lines[1].fields == {"ms": 1800, "remote_at": "2027-01-01T00:00:02.000Z"}
    assert lines[1].at.isoformat() == "2027-01-01T00:00:02+00:00"  # replayed when it came back


async def test_a_failed_answer_keeps_its_lines_and_is_retried(
    make_env: Callable[..., Awaitable[LocalEnvironment]], clock: ManualClock
) -> None:
    async def run_job(run: Any) -> Any:
        ctx = RemoteContext(run)
        ctx.log.info("trying", attempt=ctx.job.attempt)
        try:
            if ctx.job.attempt == 1:
                raise RuntimeError("relay down")
            return ctx.answer("ok")
        except RuntimeError as exc:
            return ctx.failed(exc)

    env = await make_env(run_job)
    run_id = (await env.jobs.create("notify")).kumofire_job_run_id
    await clock.advance(0)
    await clock.advance(1)  # the retry's delay
    await clock.advance(0)
    run = await env.jobs.get(run_id)
    assert run is not None and (run.status, run.attempt, run.result) == ("succeeded", 2, "ok")
    attempts = await env.jobs.attempts(run_id)
    assert attempts is not None and [a.outcome for a in attempts] == ["retried", "succeeded"]
    assert attempts[0].error is not None
    assert "RemoteHandlerError: H.run_job: RuntimeError: relay down" in attempts[0].error
    lines = await env.jobs.logs(run_id)
    assert lines is not None
    assert [(line.attempt, line.event, line.fields["attempt"]) for line in lines] == [
        (1, "trying", 1),
        (2, "trying", 2),
    ]


async def test_a_non_retryable_failed_answer_fails_the_run_at_once(
    make_env: Callable[..., Awaitable[LocalEnvironment]], clock: ManualClock
) -> None:
    async def run_job(run: Any) -> Any:
        ctx = RemoteContext(run)
        ctx.log.error("bad address")
        await ctx.progress(0.5)
        return ctx.failed(NonRetryableError("no such mailbox"))

    env = await make_env(run_job)
    run_id = (await env.jobs.create("notify")).kumofire_job_run_id
    await clock.advance(0)
    run = await env.jobs.get(run_id)
    assert run is not None and (run.status, run.attempt) == ("failed", 1)
    assert run.last_error == (
        "NonRetryableError: H.run_job: non_retryable: NonRetryableError: no such mailbox"
    )
    assert run.progress == 0.5
    lines = await env.jobs.logs(run_id)
    assert lines is not None and [(x.level, x.event) for x in lines] == [("error", "bad address")]


async def test_a_hand_written_answer_as_a_javascript_target_writes_it(
    make_env: Callable[..., Awaitable[LocalEnvironment]], clock: ManualClock
) -> None:
    async def run_job(run: Any) -> Any:
        return {
            ANSWER_KEY: 1,
            "logs": [
                {"event": "plain"},  # level defaults to info, no fields, no time
                {"level": "info", "event": "named", "fields": {"event": "x", "level": "y"}},
            ],
            "result": [1, 2],
        }

    env = await make_env(run_job)
    run_id = (await env.jobs.create("notify")).kumofire_job_run_id
    await clock.advance(0)
    run = await env.jobs.get(run_id)
    assert run is not None and (run.status, run.result, run.progress) == ("succeeded", [1, 2], None)
    lines = await env.jobs.logs(run_id)
    assert lines is not None
    assert [(x.event, x.fields) for x in lines] == [
        ("plain", {}),
        ("named", {"remote_event": "x", "remote_level": "y"}),  # the line's own names kept
    ]


async def test_an_answer_s_line_with_a_field_named_self_is_kept_not_a_failure(
    make_env: Callable[..., Awaitable[LocalEnvironment]], clock: ManualClock
) -> None:
    # `self` is the name of the log method's own first parameter: replayed under its own
    # name, the line raised a TypeError and failed the attempt of a target that succeeded.
    async def run_job(run: Any) -> Any:
        return {ANSWER_KEY: 1, "logs": [{"event": "e", "fields": {"self": 1}}], "result": 2}

    env = await make_env(run_job)
    run_id = (await env.jobs.create("notify")).kumofire_job_run_id
    await clock.advance(0)
    run = await env.jobs.get(run_id)
    assert run is not None and (run.status, run.attempt, run.result) == ("succeeded", 1, 2)
    lines = await env.jobs.logs(run_id)
    assert lines is not None and [(x.event, x.fields) for x in lines] == [("e", {"remote_self": 1})]


async def test_an_answer_whose_progress_cannot_be_kept_fails_the_run_without_a_retry(
    make_env: Callable[..., Awaitable[LocalEnvironment]], clock: ManualClock
) -> None:
    # As a result that cannot be kept does: a retry would run the target again for the
    # same answer.
    calls: list[int] = []

    async def run_job(run: Any) -> Any:
        calls.append(run["attempt"])
        return {ANSWER_KEY: 1, "progress": "x" * 100_000, "result": 1}

    env = await make_env(run_job)
    run_id = (await env.jobs.create("notify")).kumofire_job_run_id
    await clock.advance(10)
    run = await env.jobs.get(run_id)
    assert run is not None and (run.status, run.attempt) == ("failed", 1) and calls == [1]
    assert run.last_error is not None
    assert run.last_error.startswith("RemoteAnswerError: H.run_job: "), run.last_error
    assert "progress" in run.last_error


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({ANSWER_KEY: 2, "result": 1}, "kumofireJobsAnswer is 2: this service reads version 1"),
        ({ANSWER_KEY: True}, "kumofireJobsAnswer is True"),
        ({ANSWER_KEY: 1, "reslt": 1}, "unknown member(s) reslt"),
        ({ANSWER_KEY: 1, "logs": "x"}, "the answer's logs must be a list, not str"),
        ({ANSWER_KEY: 1, "logs": [{"level": "loud", "event": "e"}]}, "logs[0].level must be"),
        ({ANSWER_KEY: 1, "logs": [{"level": "info"}]}, "logs[0].event must be a string"),
        ({ANSWER_KEY: 1, "logs": [{"event": "e", "fields": [1]}]}, "logs[0].fields must be an"),
        ({ANSWER_KEY: 1, "logs": [{"event": "e", "msg": 1}]}, "logs[0] has unknown member(s) msg"),
        ({ANSWER_KEY: 1, "error": 5}, "the answer's error must be a string, not int"),
    ],
)  # fmt: skip
async def test_an_answer_the_service_cannot_read_fails_the_run_saying_why(
    make_env: Callable[..., Awaitable[LocalEnvironment]],
    clock: ManualClock,
    answer: dict[str, Any],
    message: str,
) -> None:
    async def run_job(run: Any) -> Any:
        return answer

    env = await make_env(run_job)
    run_id = (await env.jobs.create("notify")).kumofire_job_run_id
    await clock.advance(0)
    run = await env.jobs.get(run_id)
    assert run is not None and (run.status, run.attempt) == ("failed", 1)
    assert run.last_error is not None
    assert run.last_error.startswith("RemoteAnswerError: H.run_job: ")
    assert message in run.last_error
    assert await env.jobs.logs(run_id) == []  # nothing replayed from an answer not understood


async def test_the_lease_is_renewed_while_the_remote_call_runs(
    make_env: Callable[..., Awaitable[LocalEnvironment]], clock: ManualClock
) -> None:
    """A call that outlasts the lease many times over keeps it: no second delivery, no second
    attempt, and the run succeeds with its first."""
    release = asyncio.Event()
    calls: list[int] = []

    async def run_job(run: Any) -> Any:
        calls.append(run["attempt"])
        await release.wait()
        return "done"

    env = await make_env(run_job, lease_seconds=3.0)
    run_id = (await env.jobs.create("notify")).kumofire_job_run_id
    await clock.advance(0)
    for _ in range(20):  # 20 s: more than six leases
        await clock.advance(1)
        run = await env.jobs.get(run_id)
        assert run is not None and (run.status, run.attempt) == ("running", 1)
    assert calls == [1]
    release.set()
    await clock.advance(0)
    run = await env.jobs.get(run_id)
    assert run is not None and (run.status, run.attempt, run.result) == ("succeeded", 1, "done")
    assert calls == [1]
