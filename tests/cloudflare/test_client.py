"""`JobsClient` over a service binding to the real `JobsService` of `src/entry.py`, on the
local bindings: typed arguments out, RPC (positional, plain values, errors as messages) to the
entrypoint, and typed results and the jobs API's exceptions back, in both binding styles."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kumofire_jobs import (
    BulkResult,
    ConflictError,
    CreatedFlow,
    CreatedRun,
    CreateRequest,
    JobRun,
    Jobs,
    KumofireJobsError,
    LogLine,
    NotFoundError,
    Page,
    RunAttempt,
    RunStatus,
    UnknownJobError,
    ValidationError,
)
from kumofire_jobs.cloudflare.client import JobsClient, JobsServiceError, error_from_service
from kumofire_jobs.cloudflare.ffi import to_js
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.models import JobSchedule
from tests.support.fake_sdk import JsError
from tests.support.service_binding import FakeServiceBinding, python_error_text
from tests.support.worker_entry import Stack, WorkerEntry

ROOT = Path(__file__).resolve().parents[2]
EPOCH = datetime(2027, 1, 1, tzinfo=UTC)  # ManualClock's start


@pytest.fixture
async def stack(
    entry: WorkerEntry, clock: ManualClock, data_dir: Path, style: str
) -> AsyncIterator[Stack]:
    made = Stack(entry, clock, data_dir, style)
    await made.start()
    yield made
    await made.stop()


@pytest.fixture
def binding(stack: Stack) -> FakeServiceBinding:
    return FakeServiceBinding(stack.service(), stack.style)


@pytest.fixture
def client(binding: FakeServiceBinding) -> JobsClient:
    return JobsClient(binding)


@pytest.fixture
def local(stack: Stack) -> Jobs:
    """The same service's jobs API in process, to compare with what the client answers."""
    return stack.app.jobs(stack.env)


# --- runs -------------------------------------------------------------------------------------


async def test_runs_round_trip(
    client: JobsClient, local: Jobs, binding: FakeServiceBinding, clock: ManualClock
) -> None:
    run_at = datetime(2027, 1, 1, 9, 0, 30, 123456, tzinfo=timezone(timedelta(hours=9)))
    created = await client.create(
        "job", {"to": "x"}, run_at=run_at, max_attempts=5, dedupe_key="welcome"
    )
    assert isinstance(created, CreatedRun) and created.deduplicated is False
    # Positional arguments only, and times as RFC 3339 UTC strings.
    assert binding.calls[-1] == (
        "create",
        [
            {
                "name": "job",
                "payload": {"to": "x"},
                "run_at": "2027-01-01T00:00:30.123Z",
                "max_attempts": 5,
                "dedupe_key": "welcome",
            }
        ],
    )
    again = await client.create("job", {"other": 1}, dedupe_key="welcome")
    assert again == CreatedRun(kumofire_job_run_id=created.kumofire_job_run_id, deduplicated=True)

    run = await client.get(created.kumofire_job_run_id)
    assert isinstance(run, JobRun)
    assert run == await local.get(created.kumofire_job_run_id)
    assert run.status is RunStatus.SCHEDULED
    assert run.scheduled_for == datetime(2027, 1, 1, 0, 0, 30, 123000, tzinfo=UTC)
    assert run.scheduled_for.tzinfo is not None and run.started_at is None
    assert (run.max_attempts, run.dedupe_key, run.payload) == (5, "welcome", {"to": "x"})

    many = await client.create_many(
        [CreateRequest(name="job", payload=i, delay=i) for i in range(3)]
    )
    assert [type(c) for c in many] == [CreatedRun] * 3
    await clock.advance(31)
    done = await client.get(many[2].kumofire_job_run_id)
    assert done is not None and done.status is RunStatus.SUCCEEDED and done.attempt == 1
    assert done.started_at is not None and done.finished_at is not None

    page = await client.list(name="job", limit=2)
    assert isinstance(page, Page) and [type(r) for r in page.items] == [JobRun] * 2
    assert page == await local.list(name="job", limit=2)
    assert page.next_cursor is not None
    rest = await client.list(name="job", limit=2, cursor=page.next_cursor)
    assert rest == await local.list(name="job", limit=2, cursor=page.next_cursor)
    ids = [r.id for r in page.items + rest.items]
    assert sorted(ids, reverse=True) == ids and len(ids) == 4 and rest.next_cursor is None
    succeeded = await client.list(status=RunStatus.SUCCEEDED)
    assert len(succeeded.items) == 4
    assert await client.list(status="failed") == Page(items=[], next_cursor=None)
    assert await client.counts() == await local.counts()
    assert (await client.counts())["succeeded"] == 4
    assert (await client.counts(name="other"))["succeeded"] == 0


async def test_attempts_logs_progress_and_result_round_trip(
    client: JobsClient, local: Jobs, binding: FakeServiceBinding, clock: ManualClock
) -> None:
    script = {"log": "working", "progress": {"done": 3}, "fail_until": 2, "result": [1, "a"]}
    run_id = (await client.create("job", script)).kumofire_job_run_id
    await clock.advance(5)
    run = await client.get(run_id)
    assert run is not None and run.status is RunStatus.SUCCEEDED
    assert (run.progress, run.result) == ({"done": 3}, [1, "a"])

    attempts = await client.attempts(run_id)
    assert binding.calls[-1] == ("attempts", [run_id])
    assert attempts == await local.attempts(run_id)
    assert attempts is not None and [type(a) for a in attempts] == [RunAttempt] * 2
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "retried"), (2, "succeeded")]
    assert attempts[0].error is not None and attempts[0].error.endswith("attempt 1 fails")
    assert attempts[0].started_at == EPOCH and attempts[1].started_at == EPOCH + timedelta(
        seconds=1
    )

    logs = await client.logs(run_id)
    assert binding.calls[-1] == ("logs", [run_id])
    assert logs == await local.logs(run_id)
    assert logs is not None and [type(line) for line in logs] == [LogLine] * 2
    assert [(line.attempt, line.event, line.fields) for line in logs] == [
        (1, "working", {"attempt_seen": 1}), (2, "working", {"attempt_seen": 2}),
    ]  # fmt: skip

    assert await client.attempts("run_missing") is None
    assert await client.logs("run_missing") is None


async def test_cancel_and_retry(client: JobsClient, local: Jobs, clock: ManualClock) -> None:
    created = await client.create("job", delay=60)
    canceled = await client.cancel(created.kumofire_job_run_id)
    assert canceled is not None and canceled.status is RunStatus.CANCELED
    assert canceled == await local.get(created.kumofire_job_run_id)
    # A finished run comes back unchanged.
    assert await client.cancel(created.kumofire_job_run_id) == canceled
    retried = await client.retry(created.kumofire_job_run_id)
    assert retried is not None
    assert retried.status is RunStatus.SCHEDULED
    assert retried.max_attempts == canceled.max_attempts + 1
    await clock.advance(0)
    run = await client.get(created.kumofire_job_run_id)
    assert run is not None and run.status is RunStatus.SUCCEEDED
    with pytest.raises(ConflictError, match="succeeded") as caught:
        await client.retry(created.kumofire_job_run_id)
    with pytest.raises(ConflictError) as expected:
        await local.retry(created.kumofire_job_run_id)
    assert str(caught.value) == str(expected.value)


async def test_missing_runs_are_none(client: JobsClient) -> None:
    assert await client.get("run_missing") is None
    assert await client.cancel("run_missing") is None
    assert await client.retry("run_missing") is None


async def test_errors_come_back_as_the_jobs_api_raises_them(
    client: JobsClient, local: Jobs, binding: FakeServiceBinding
) -> None:
    async def same_error(remote: Any, in_process: Any) -> KumofireJobsError:
        with pytest.raises(KumofireJobsError) as caught:
            await remote
        with pytest.raises(KumofireJobsError) as expected:
            await in_process
        assert type(caught.value) is type(expected.value)
        assert str(caught.value) == str(expected.value)
        return caught.value

    error = await same_error(client.create("nope"), local.create("nope"))
    assert isinstance(error, UnknownJobError)
    error = await same_error(client.create("job", delay=-1), local.create("job", delay=-1))
    assert type(error) is ValidationError
    now = datetime.now(UTC)
    await same_error(
        client.create("job", run_at=now, delay=1), local.create("job", run_at=now, delay=1)
    )
    await same_error(client.create("job", max_attempts=0), local.create("job", max_attempts=0))
    await same_error(client.list(limit=0), local.list(limit=0))
    await same_error(client.list(status="bogus"), local.list(status="bogus"))
    requests = [CreateRequest(name="job"), CreateRequest(name="nope")]
    await same_error(client.create_many(requests), local.create_many(requests))

    # A naive run_at is refused before anything is sent, as the jobs API refuses it.
    calls = len(binding.calls)
    naive = datetime(2027, 1, 1)
    error = await same_error(client.create("job", run_at=naive), local.create("job", run_at=naive))
    assert "naive" in str(error)
    assert len(binding.calls) == calls


async def test_the_service_answers_an_error_rather_than_raising_it(
    binding: FakeServiceBinding, client: JobsClient, style: str
) -> None:
    # A Python exception out of the entrypoint reaches every caller as a PythonError whose
    # message is the traceback (and workerd logs it as uncaught): the service returns an Error.
    answered = await binding.get("run_missing")
    if style == "sdk":  # the SDK presents a JavaScript Error as Exception(error.toString())
        assert isinstance(answered, Exception)
        assert str(answered) == "Error: not_found: run not found"
    else:  # raw: a JsException with the Error's name, message and own properties
        assert isinstance(answered, JsError)
        assert (answered.name, answered.message) == ("Error", "not_found: run not found")
        assert answered.code == "not_found"  # type: ignore[attr-defined]
    body = to_js({"name": "job", "every": 60, "key": "k"})
    created = await binding.create_schedule(body)
    assert not isinstance(created, BaseException)
    again = await binding.create_schedule(body)
    assert isinstance(again, BaseException) and "conflict: " in str(again)
    with pytest.raises(ConflictError):
        await client.create_schedule("job", every=60, key="k")


async def test_a_service_that_raises_its_errors_still_works() -> None:
    # An older service raised JobsRpcError: the caller got the traceback as a thrown Error.
    from kumofire_jobs.cloudflare import JobsRpcError

    def thrown(code: str, message: str) -> JsError:
        try:
            raise JobsRpcError(code, message)
        except JobsRpcError as exc:
            return JsError("Error", f"PythonError: {python_error_text(exc)}")

    class OldService:
        async def get(self, run_id: Any) -> Any:
            raise thrown("not_found", "run not found")

        async def create(self, body: Any) -> Any:
            raise thrown("unknown_job", "no handler is registered for job 'x'")

    client = JobsClient(OldService())
    assert await client.get("run_1") is None
    with pytest.raises(UnknownJobError, match="no handler is registered"):
        await client.create("x")


async def test_an_answered_error_the_client_cannot_read() -> None:
    class Odd:
        async def get(self, run_id: Any) -> Any:
            return Exception("Error: something else")

    with pytest.raises(JobsServiceError) as caught:
        await JobsClient(Odd()).get("run_1")
    assert caught.value.code == "invalid_response"


async def test_internal_errors_and_platform_failures(client: JobsClient, stack: Stack) -> None:
    stack.env.JOBS_DB.fail_next("D1_ERROR: no such table: job_runs: SQLITE_ERROR")
    with pytest.raises(JobsServiceError) as caught:
        await client.get("run_1")
    assert (caught.value.code, str(caught.value)) == (
        "internal_error",
        "the server failed to handle the call",
    )
    assert isinstance(caught.value, KumofireJobsError)

    class Broken:
        async def get(self, run_id: Any) -> Any:
            raise JsError("Error", "Network connection lost.")

    with pytest.raises(JsError, match="Network connection lost"):
        await JobsClient(Broken()).get("run_1")
    # A binding without the method (the wrong entrypoint) fails as the platform says.
    with pytest.raises(AttributeError):
        await JobsClient(object()).get("run_1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not_found: run not found", NotFoundError("run not found")),
        ("conflict: run r is running", ConflictError("run r is running")),
        ("unknown_job: no handler", UnknownJobError("no handler")),
        ("validation_error: a: b", ValidationError("a: b")),
        ("internal_error: failed", JobsServiceError("internal_error", "failed")),
        ("Network connection lost.", None),
    ],
)
def test_error_from_service(text: str, expected: KumofireJobsError | None) -> None:
    # The answered Error raw (a JsException), its message alone, and as the SDK presents it.
    for raised in (JsError("Error", text), Exception(text), Exception(f"Error: {text}")):
        error = error_from_service(raised)
        if expected is None:
            assert error is None
        else:
            assert type(error) is type(expected) and str(error) == str(expected)
    if expected is not None:
        # The Pyodide form: the entrypoint's traceback, the code on its last line.
        from kumofire_jobs.cloudflare import JobsRpcError

        code, _, message = text.partition(": ")
        try:
            raise JobsRpcError(code, message)
        except JobsRpcError as exc:
            traceback_text = python_error_text(exc)
        assert traceback_text.startswith("Traceback (most recent call last):")
        error = error_from_service(JsError("Error", traceback_text))
        assert type(error) is type(expected) and str(error) == str(expected)


# --- schedules --------------------------------------------------------------------------------


async def test_schedules_round_trip(
    client: JobsClient, local: Jobs, binding: FakeServiceBinding, clock: ManualClock, stack: Stack
) -> None:
    schedule = await client.create_schedule("job", {"n": 1}, every=2, key="tick", max_attempts=3)
    assert isinstance(schedule, JobSchedule)
    assert schedule == await local.get_schedule(schedule.id)
    assert (schedule.type, schedule.expr, schedule.enabled) == ("interval", "2", True)
    assert schedule.next_run_at == EPOCH + timedelta(seconds=2)
    assert binding.calls[-1] == (
        "create_schedule",
        [{"name": "job", "payload": {"n": 1}, "every": 2, "key": "tick", "enabled": True,
          "max_attempts": 3}],
    )  # fmt: skip
    await clock.advance(2.01)  # the occurrence runs, then the next is materialized
    assert stack.recorder.payloads == [{"n": 1}]
    got = await client.get_schedule(schedule.id)
    assert got is not None and got.last_scheduled_at == EPOCH + timedelta(seconds=2)
    assert await client.get_schedule_by_key("tick") == got

    daily = await client.upsert_schedule("daily", "job", cron="30 9 * * *", timezone="Asia/Tokyo")
    assert daily == await local.get_schedule_by_key("daily")
    assert daily.next_run_at == datetime(2027, 1, 1, 0, 30, tzinfo=UTC)  # 09:30 in Tokyo
    moved = await client.upsert_schedule("daily", "job", payload=[1], enabled=False)
    assert (moved.id, moved.payload, moved.enabled, moved.next_run_at) == (
        daily.id, [1], False, None
    )  # fmt: skip
    assert moved.timezone == "Asia/Tokyo"  # only the fields given change

    patched = await client.update_schedule(schedule.id, every=1.5, payload={"n": 2})
    assert patched is not None and (patched.expr, patched.payload) == ("1.5", {"n": 2})
    patched = await client.update_schedule_by_key("tick", max_attempts=4)
    assert patched is not None and patched.max_attempts == 4
    assert patched == await local.get_schedule(schedule.id)

    disabled = await client.disable_schedule(schedule.id)
    assert disabled is not None and (disabled.enabled, disabled.next_run_at) == (False, None)
    enabled = await client.enable_schedule(schedule.id)
    assert enabled is not None and enabled.enabled and enabled.next_run_at is not None
    assert (await client.disable_schedule_by_key("tick")).enabled is False  # type: ignore[union-attr]
    assert (await client.enable_schedule_by_key("daily")).enabled is True  # type: ignore[union-attr]

    page = await client.list_schedules(limit=1)
    assert page == await local.list_schedules(limit=1) and page.next_cursor is not None
    rest = await client.list_schedules(limit=1, cursor=page.next_cursor)
    assert [s.key for s in page.items + rest.items] == ["daily", "tick"]
    assert [s.key for s in (await client.list_schedules(enabled=False)).items] == ["tick"]
    assert (await client.list_schedules(name="other")).items == []

    assert await client.delete_schedule(schedule.id) is True
    assert await client.delete_schedule(schedule.id) is False
    assert await client.delete_schedule_by_key("daily") is True
    assert await client.delete_schedule_by_key("daily") is False
    assert await client.list_schedules() == Page(items=[], next_cursor=None)
    runs = await client.list(schedule_id=schedule.id)
    assert runs.items and all(r.schedule_id == schedule.id for r in runs.items)


async def test_enabling_a_schedule_past_its_limit_is_a_conflict_over_rpc(
    client: JobsClient, local: Jobs, binding: FakeServiceBinding, clock: ManualClock
) -> None:
    schedule = await client.create_schedule("job", every=5, key="once", limit=1)
    for _ in range(4):
        await clock.advance(5)
    done = await client.get_schedule(schedule.id)
    assert done is not None and (done.enabled, done.count) == (False, 1)
    with pytest.raises(ConflictError) as caught:
        await client.enable_schedule(schedule.id)
    with pytest.raises(ConflictError) as expected:
        await local.enable_schedule(schedule.id)
    assert str(caught.value) == str(expected.value)
    assert "cannot be enabled: it has had all 1 occurrences its limit allows" in str(caught.value)
    with pytest.raises(ConflictError):
        await client.enable_schedule_by_key("once")
    answered = await binding.enable_schedule(schedule.id)  # RPC: an Error "conflict: ..."
    assert isinstance(answered, BaseException)
    assert f"conflict: schedule {schedule.id} cannot be enabled" in str(answered)
    assert await client.get_schedule(schedule.id) == done


async def test_missing_schedules_are_none_and_errors_typed(client: JobsClient, local: Jobs) -> None:
    for missing in (
        client.get_schedule("sch_missing"),
        client.get_schedule_by_key("missing"),
        client.update_schedule("sch_missing", payload=1),
        client.update_schedule_by_key("missing", payload=1),
        client.disable_schedule("sch_missing"),
        client.disable_schedule_by_key("missing"),
        client.enable_schedule("sch_missing"),
        client.enable_schedule_by_key("missing"),
    ):
        assert await missing is None

    with pytest.raises(UnknownJobError):
        await client.create_schedule("nope", every=5)
    with pytest.raises(UnknownJobError):
        await client.upsert_schedule("k", "nope", every=5)
    await client.create_schedule("job", every=5, key="taken")
    with pytest.raises(ConflictError, match="taken"):
        await client.create_schedule("job", every=5, key="taken")
    for remote, in_process in [
        (client.create_schedule("job"), local.create_schedule("job")),
        (
            client.create_schedule("job", cron="* * *"),
            local.create_schedule("job", cron="* * *"),
        ),
        (
            client.create_schedule("job", every=5, timezone="UTC"),
            local.create_schedule("job", every=5, timezone="UTC"),
        ),
        (
            client.update_schedule_by_key("taken", every=0),
            local.update_schedule_by_key("taken", every=0),
        ),
        (
            client.update_schedule_by_key("taken", typo=1),  # type: ignore[call-arg]  # on purpose
            local.update_schedule_by_key("taken", typo=1),  # type: ignore[call-arg]  # on purpose
        ),
        (client.list_schedules(limit=500), local.list_schedules(limit=500)),
    ]:
        with pytest.raises(ValidationError) as caught:
            await remote
        with pytest.raises(ValidationError) as expected:
            await in_process
        assert type(caught.value) is type(expected.value)
    # The patch's unknown field is named as the HTTP body's would be.
    with pytest.raises(ValidationError, match="typo"):
        await client.update_schedule("sch_x", typo=1)  # type: ignore[call-arg]  # on purpose


# --- On a Worker --------------------------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    FORBIDDEN = ("sqlite3", "_sqlite3", "kumofire_jobs.local", "js", "pyodide", "_pyodide",
                 "workers")

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                raise ImportError(f"forbidden import on the Worker's path: {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    sys.path[:0] = [SRC]
    from kumofire_jobs.cloudflare.client import JobsClient
    bad = [m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, bad
    print("ok")
    """
)


def test_the_client_imports_on_a_worker() -> None:
    """No sqlite3, no local bindings, no `js`/`pyodide` at import time, and no need for the
    `workers` SDK either: the client only needs the binding it is given."""
    script = SCRIPT.replace("SRC", repr(str(ROOT / "src")))
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


async def test_arguments_that_cannot_cross_fail_before_the_call(
    client: JobsClient, binding: FakeServiceBinding
) -> None:
    with pytest.raises(TypeError, match="cannot cross to JavaScript"):
        await client.create("job", {"ids": {1, 2}})
    assert binding.calls == []


# --- API.md Part 2: controlling runs and jobs, schedule options --------------------------------


async def test_control_operations_round_trip(
    client: JobsClient, local: Jobs, binding: FakeServiceBinding, clock: ManualClock
) -> None:
    created = await client.create("job", delay=60, priority=5, concurrency_key="t")
    run_id = created.kumofire_job_run_id
    with pytest.raises(ConflictError):
        await client.delete(run_id)  # still unfinished
    promoted = await client.promote(run_id)
    assert promoted is not None and promoted.id == run_id  # then delivered at once
    assert (promoted.priority, promoted.concurrency_key) == (5, "t")
    assert await client.promote("run_missing") is None
    await clock.advance(0)
    with pytest.raises(ConflictError):
        await client.promote(run_id)
    assert await client.delete(run_id) is True
    assert await client.delete(run_id) is False
    for _ in range(3):
        await client.create("job", delay=60)
    before = datetime(2100, 1, 1, tzinfo=UTC)
    result = await client.cancel_many(name="job", created_before=before, limit=2)
    assert result == BulkResult(count=2, has_more=True)
    assert binding.calls[-1] == (
        "cancel_many",
        [{"name": "job", "created_before": "2100-01-01T00:00:00.000Z", "limit": 2}],
    )
    assert await client.retry_many(status=RunStatus.CANCELED) == BulkResult(count=2, has_more=False)
    await clock.advance(0)  # the two retried runs run
    assert await client.cancel_many(status="scheduled") == BulkResult(count=1, has_more=False)
    assert await client.delete_many(status="canceled") == BulkResult(count=1, has_more=False)
    assert await client.delete_many(name="job") == BulkResult(count=2, has_more=False)
    with pytest.raises(ValidationError):
        await client.delete_many()

    jobs = await client.list_jobs()
    assert jobs == await local.list_jobs() and [job.name for job in jobs][:1] == ["job"]
    paused = await client.pause_job("job")
    assert paused is not None and paused.paused and paused == await local.get_job("job")
    resumed = await client.resume_job("job")
    assert resumed is not None and not resumed.paused
    assert await client.get_job("nope") is None

    start = datetime(2030, 1, 1, tzinfo=UTC)
    schedule = await client.create_schedule(
        "job", every=60, limit=2, start_at=start, priority=1, concurrency_key="k"
    )
    assert (schedule.limit, schedule.count, schedule.start_at) == (2, 0, start)
    assert schedule.next_run_at == start and schedule == await local.get_schedule(schedule.id)
    changed = await client.update_schedule(schedule.id, end_at=datetime(2031, 1, 1, tzinfo=UTC))
    assert changed is not None and changed.end_at == datetime(2031, 1, 1, tzinfo=UTC)


async def test_flows_round_trip(
    client: JobsClient, local: Jobs, binding: FakeServiceBinding, stack: Stack,
    clock: ManualClock,
) -> None:  # fmt: skip
    parent = CreateRequest(name="job", payload="parent", run_at=EPOCH + timedelta(seconds=5))
    children = [CreateRequest(name="job", payload=i, delay=1) for i in range(3)]
    flow = await client.create_flow(parent, children)
    assert isinstance(flow, CreatedFlow) and len(flow.children) == 3
    assert binding.calls[-1] == (
        "create_flow",
        [{
            "parent": {"name": "job", "payload": "parent", "run_at": "2027-01-01T00:00:05.000Z"},
            "children": [{"name": "job", "payload": i, "delay": 1} for i in range(3)],
        }],
    )  # fmt: skip
    waiting = await client.get(flow.parent_id)
    assert waiting is not None and waiting.status == RunStatus.WAITING
    assert waiting == await local.get(flow.parent_id)
    page = await client.list(parent_id=flow.parent_id, limit=2)
    assert page == await local.list(parent_id=flow.parent_id, limit=2)
    assert [r.id for r in page.items] == flow.children[::-1][:2]
    assert binding.calls[-1] == ("list", [{"parent_id": flow.parent_id, "limit": 2}])
    assert (await client.counts())["waiting"] == 1
    await clock.advance(1)  # the children run; the parent waits for its own time
    assert sorted(stack.recorder.payloads) == [0, 1, 2]
    released = await client.get(flow.parent_id)
    assert released is not None and released.status == RunStatus.SCHEDULED
    await clock.advance(4)
    assert stack.recorder.payloads[3:] == ["parent"]

    with pytest.raises(ValidationError, match="1 to 100 children"):
        await client.create_flow(parent, [])
    with pytest.raises(UnknownJobError, match=r"children\[0\]"):
        await client.create_flow(parent, [CreateRequest(name="nope")])
    other = await client.create_flow(
        CreateRequest(name="job"), [CreateRequest(name="job", delay=60)]
    )
    canceled = await client.cancel(other.parent_id)
    assert canceled is not None and canceled.status == RunStatus.CANCELED
    child = await client.get(other.children[0])
    assert child is not None and child.status == RunStatus.CANCELED
    assert child.parent_id == other.parent_id
