"""`src/entry.py` on the local bindings, through the SDK-shaped layer and the adapter: the
Worker's queue consumer, cron, HTTP API and `JobsService`, and the coordinator Durable Object,
all as workerd would call them. The SDK itself needs Pyodide, so a stand-in `workers` package
(tests/support/sdk_stub) provides the two base classes and the ASGI bridge."""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from kumofire_jobs import JobContext, create_runtime
from kumofire_jobs.cloudflare import (
    CloudflareActorStorage,
    CloudflareD1Database,
    WorkerApp,
)
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.log import get_logger
from kumofire_jobs.core.models import DispatchResult
from tests.support.fake_sdk import FakeEnv, FakeMessageBatch, answered_error
from tests.support.worker_entry import QUEUE, Stack, WorkerEntry


@pytest.fixture
async def stack(
    entry: WorkerEntry, clock: ManualClock, data_dir: Path, style: str
) -> AsyncIterator[Stack]:
    made = Stack(entry, clock, data_dir, style)
    await made.start()
    yield made
    await made.stop()


# --- A run through the whole Worker ---------------------------------------------------------


async def test_a_run_goes_through_rpc_coordinator_queue_and_handler(
    stack: Stack, clock: ManualClock
) -> None:
    jobs = stack.service()
    created = await jobs.create({"name": "job", "payload": {"n": 1}, "delay": 2})
    assert set(created) == {"kumofire_job_run_id", "deduplicated"}
    run_id = created["kumofire_job_run_id"]
    # The coordinator Durable Object is entry.JobCoordinator, over the adapted storage.
    object_id = stack.namespace.idFromName(run_id).toString()
    actor = stack.namespace._actors[object_id]
    assert isinstance(actor.instance, stack.entry.JobCoordinator)
    assert isinstance(actor.instance.actor._storage, CloudflareActorStorage)
    storage = actor.storage
    assert storage is not None
    await clock.advance(1.999)
    assert stack.recorder.payloads == []
    await clock.advance(0.001)
    assert stack.recorder.payloads == [{"n": 1}]
    run = await jobs.get(run_id)
    assert run["status"] == "succeeded"
    assert run["attempt"] == 1
    # It closed itself once the run finished: nothing stored, nothing left in memory.
    assert await storage.list() == {}
    assert object_id not in stack.namespace._actors


async def test_rpc_methods_answer_like_the_http_api(stack: Stack, clock: ManualClock) -> None:
    jobs = stack.service()
    many = await jobs.create_many([{"name": "job", "dedupe_key": "k"}, {"name": "job"}])
    again = await jobs.create({"name": "job", "dedupe_key": "k"})
    assert again == {
        "kumofire_job_run_id": many["items"][0]["kumofire_job_run_id"],
        "deduplicated": True,
    }
    await clock.advance(0)
    page = await jobs.list({"status": "succeeded", "limit": 1})
    assert set(page) == {"items", "next_cursor"} and len(page["items"]) == 1
    assert page["next_cursor"] is not None
    assert (await jobs.counts())["succeeded"] == 2
    assert (await jobs.counts({"name": "other"}))["succeeded"] == 0
    run_id = many["items"][1]["kumofire_job_run_id"]
    answered_error(await jobs.retry(run_id), r"^conflict: ")
    answered_error(await jobs.cancel("run_missing"), r"^not_found: run not found$")
    answered_error(await jobs.create({"name": "nope"}), r"^unknown_job: ")


RPC_METHODS = {
    # API.md, "Service binding (RPC)": exactly these, positional arguments only.
    "create", "create_many", "get", "list", "counts", "cancel", "retry",
    "create_schedule", "upsert_schedule", "get_schedule", "get_schedule_by_key",
    "update_schedule", "update_schedule_by_key", "disable_schedule", "disable_schedule_by_key",
    "enable_schedule", "enable_schedule_by_key", "delete_schedule", "delete_schedule_by_key",
    "list_schedules",
    # API.md Part 2, "Controlling runs and jobs"
    "promote", "delete", "cancel_many", "retry_many", "delete_many", "list_jobs", "get_job",
    "pause_job", "resume_job",
    # API.md Part 2, "Seeing what happened"
    "attempts", "logs",
    # API.md Part 2, "Flows"
    "create_flow",
}  # fmt: skip


def test_jobs_service_has_exactly_the_rpc_methods(entry: WorkerEntry) -> None:
    public = {name for name in vars(entry.JobsService) if not name.startswith("_")}
    assert public == RPC_METHODS
    for name in RPC_METHODS:
        parameters = inspect.signature(getattr(entry.JobsService, name)).parameters.values()
        kinds = {p.kind for p in parameters}
        assert kinds == {inspect.Parameter.POSITIONAL_OR_KEYWORD}, name


async def test_schedules_through_the_rpc_entrypoint(stack: Stack, clock: ManualClock) -> None:
    jobs = stack.service()
    body = {"name": "job", "payload": {"tick": True}, "every": 2, "key": "tick"}
    schedule = await jobs.create_schedule(body)
    assert schedule["next_run_at"] == "2027-01-01T00:00:02.000Z"
    await clock.advance(4.01)  # two occurrences run, then the next is materialized
    assert stack.recorder.payloads == [{"tick": True}, {"tick": True}]
    assert (await jobs.get_schedule(schedule["id"]))["last_scheduled_at"] == (
        "2027-01-01T00:00:04.000Z"
    )
    updated = await jobs.update_schedule_by_key("tick", {"payload": {"tick": 2}})
    assert updated["payload"] == {"tick": 2}
    assert (await jobs.disable_schedule_by_key("tick"))["next_run_at"] is None
    await clock.advance(10)
    assert len(stack.recorder.payloads) == 2
    assert (await jobs.enable_schedule(schedule["id"]))["enabled"] is True
    await clock.advance(2)
    assert stack.recorder.payloads[2:] == [{"tick": 2}]
    upserted = await jobs.upsert_schedule("tick", {"cron": "0 0 * * *"})
    assert (upserted["id"], upserted["type"]) == (schedule["id"], "cron")
    page = await jobs.list_schedules({"name": "job"})
    assert [s["id"] for s in page["items"]] == [schedule["id"]]
    assert await jobs.delete_schedule_by_key("tick") == {"deleted": True}
    answered_error(await jobs.delete_schedule(schedule["id"]), r"^not_found: schedule not found$")
    answered_error(await jobs.get_schedule_by_key("tick"), r"^not_found: ")
    answered_error(
        await jobs.create_schedule({"name": "job", "cron": "not cron"}), r"^validation_error: "
    )
    runs = await jobs.list({"schedule_id": schedule["id"]})
    assert len(runs["items"]) >= 3  # occurrences outlive their schedule


# --- The handlers' arguments ------------------------------------------------------------------


class LocalishMessage:
    def __init__(self, body: Any) -> None:
        self.id = "m1"
        self.timestamp = 1_798_761_600_000.0
        self.body = body
        self.attempts = 1
        self.settled: list[str] = []

    def ack(self) -> None:
        self.settled.append("ack")

    def retry(self, options: dict[str, Any] | None = None) -> None:
        self.settled.append(f"retry {options}")


def localish_batch(*bodies: Any) -> Any:
    return SimpleNamespace(queue=QUEUE, messages=[LocalishMessage(body) for body in bodies])


@pytest.mark.parametrize("extra", [(), (None, None), ("env", "ctx")], ids=["batch", "nones", "all"])
async def test_queue_takes_the_batch_alone_or_with_env_and_ctx(
    stack: Stack, extra: tuple[Any, ...]
) -> None:
    batch = localish_batch({"version": 1, "kumofireJobRunId": "run_gone"}, {"not": "ours"})
    worker = stack.entry.Default(SimpleNamespace(), stack.env)
    assert await worker.queue(FakeMessageBatch(batch, stack.style), *extra) is None
    # A run D1 does not know is finished with; a malformed message is acked and ignored.
    assert [m.settled for m in batch.messages] == [["ack"], ["ack"]]


async def test_a_failing_consume_retries_the_message(stack: Stack) -> None:
    batch = localish_batch({"version": 1, "kumofireJobRunId": "run_x"})
    stack.env.JOBS_DB.fail_next("D1_ERROR: no such table: job_runs: SQLITE_ERROR")
    worker = stack.entry.Default(SimpleNamespace(), stack.env)
    await worker.queue(FakeMessageBatch(batch, stack.style))
    # Retried after a delay (2 s on the first attempt), not at once into the same failure.
    assert batch.messages[0].settled == ["retry {'delaySeconds': 2}"]


@pytest.mark.parametrize(
    "extra", [(), (None, None), ("env", "ctx")], ids=["controller", "nones", "all"]
)
async def test_scheduled_takes_the_controller_alone_or_with_env_and_ctx(
    stack: Stack, extra: tuple[Any, ...]
) -> None:
    calls: list[Any] = []
    dispatch = stack.app.runtime.dispatch_scheduled

    async def spy(resources: Any, limit: int = 100) -> DispatchResult:
        calls.append(resources)
        return await dispatch(resources, limit)

    stack.app.runtime.dispatch_scheduled = spy  # type: ignore[method-assign]
    controller = SimpleNamespace(cron="* * * * *", scheduledTime=1_798_761_600_000)
    worker = stack.entry.Default(SimpleNamespace(), stack.env)
    assert await worker.scheduled(controller, *extra) is None
    assert len(calls) == 1
    assert isinstance(calls[0].db, CloudflareD1Database)
    assert calls[0] is stack.app.resources(FakeEnv())  # built once, kept for the isolate


async def test_reconciliation_repairs_through_the_adapter(stack: Stack, clock: ManualClock) -> None:
    jobs = stack.service()
    run_id = (await jobs.create({"name": "job", "delay": 60}))["kumofire_job_run_id"]
    # The coordinator loses the run (storage wiped), so only the cron can deliver it.
    await stack.namespace.getByName(run_id).close()
    await clock.advance(120)
    assert stack.recorder.payloads == []
    worker = stack.entry.Default(SimpleNamespace(), stack.env)
    await worker.scheduled(SimpleNamespace(cron="* * * * *"))
    await clock.advance(0)
    assert (await jobs.get(run_id))["status"] == "succeeded"


# --- fetch: the HTTP API behind a required token ----------------------------------------------


async def call(stack: Stack, method: str, path: str, token: str | None = None) -> tuple[int, Any]:
    asgi = importlib.import_module("workers.asgi")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    request = asgi.Request(method, f"https://jobs.example.com{path}", headers)
    response = await stack.entry.Default(SimpleNamespace(), stack.env).fetch(request)
    return response.status, msgspec.json.decode(response.body)


async def test_fetch_without_a_token_configured_disables_the_api(stack: Stack) -> None:
    status, body = await call(stack, "GET", "/v1/runs")
    assert (status, body["error"]["code"]) == (403, "api_disabled")
    status, body = await call(stack, "GET", "/v1/health")
    assert (status, body["status"]) == (200, "ok")


async def test_fetch_requires_the_configured_token(stack: Stack) -> None:
    stack.env.KUMOFIRE_API_TOKEN = "s3cret"
    assert (await call(stack, "GET", "/v1/runs"))[0] == 401
    assert (await call(stack, "GET", "/v1/runs", "wrong"))[0] == 401
    status, body = await call(stack, "GET", "/v1/runs", "s3cret")
    assert (status, body) == (200, {"items": [], "next_cursor": None})
    created = await stack.service().create({"name": "job"})
    status, run = await call(stack, "GET", f"/v1/runs/{created['kumofire_job_run_id']}", "s3cret")
    assert status == 200
    assert run == await stack.service().get(created["kumofire_job_run_id"])


def test_env_var_reads_text_bindings_then_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kumofire_jobs.cloudflare import env_var

    monkeypatch.delenv("KUMOFIRE_API_TOKEN", raising=False)
    assert env_var(FakeEnv(), "KUMOFIRE_API_TOKEN") is None
    assert env_var(FakeEnv(KUMOFIRE_API_TOKEN=""), "KUMOFIRE_API_TOKEN") is None
    monkeypatch.setenv("KUMOFIRE_API_TOKEN", "from-os")
    assert env_var(FakeEnv(), "KUMOFIRE_API_TOKEN") == "from-os"
    assert env_var(FakeEnv(KUMOFIRE_API_TOKEN="binding"), "KUMOFIRE_API_TOKEN") == "binding"


def test_the_module_registers_its_handlers_and_classes(entry: WorkerEntry) -> None:
    assert set(entry.handlers) == set(entry.runtime.handlers)
    assert entry.app.runtime is entry.runtime
    methods = {"create", "create_many", "get", "list", "counts", "cancel", "retry"}
    assert methods <= set(vars(entry.JobsService))
    for name in ("arm", "lease", "renew", "release", "cancel", "close", "status", "alarm"):
        assert callable(getattr(entry.JobCoordinator, name))


async def test_the_example_handler_runs(entry: WorkerEntry) -> None:
    logged: list[Any] = []
    job = SimpleNamespace(id="run_1", attempt=1, payload={"hello": "world"})
    ctx = SimpleNamespace(job=job, log=SimpleNamespace(info=lambda *a, **k: logged.append((a, k))))
    await entry.handlers["echo"](ctx)
    assert logged == [(("echo",), {"payload_bytes": len(b'{"hello":"world"}')})]


# --- The Worker's logs ----------------------------------------------------------------------

MAX_LOG_LINE = 4096


def test_the_worker_logs_one_json_object_per_line(
    entry: WorkerEntry, capsys: pytest.CaptureFixture[str]
) -> None:
    # Importing the entry configured the Worker's logging: JSON lines on standard output
    # (console.log on Workers), no console renderer and its colour codes.
    log = get_logger()
    log.info("probe", job="echo", attempt=1)
    log.warning("probe.big", text="x" * 50_000, payload={"blob": "y" * 50_000}, small=[1, 2])
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    lines = out.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "probe" and first["level"] == "info" and first["attempt"] == 1
    assert first["timestamp"].endswith("Z")
    # Sizes, not contents: long text is cut (saying how long it was), a large value is its size.
    assert "... [50000 chars] ..." in second["text"] and len(second["text"]) < 1100
    assert second["payload"] == "<dict of 50011 bytes as JSON>"
    assert second["small"] == [1, 2]
    assert max(len(line) for line in lines) < MAX_LOG_LINE


async def test_a_large_payload_and_a_long_error_log_no_long_line(
    entry: WorkerEntry,
    clock: ManualClock,
    data_dir: Path,
    style: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def boom(ctx: JobContext) -> None:
        raise RuntimeError("e" * 100_000)

    stack = Stack(entry, clock, data_dir, style)
    runtime = create_runtime({"echo": entry.echo, "boom": boom}, clock=clock)
    stack.app = entry.app = WorkerApp(runtime)
    await stack.start()
    try:
        jobs = stack.service()
        payload = {"blob": "z" * 700_000}
        echo = await jobs.create({"name": "echo", "payload": payload})
        failing = await jobs.create({"name": "boom", "payload": payload, "max_attempts": 1})
        await clock.advance(1)
        assert (await jobs.get(echo["kumofire_job_run_id"]))["status"] == "succeeded"
        assert (await jobs.get(failing["kumofire_job_run_id"]))["status"] == "failed"
    finally:
        await stack.stop()
    lines = capsys.readouterr().out.splitlines()
    events = [json.loads(line) for line in lines]
    names = [e["event"] for e in events]
    assert "echo" in names and "run.failed" in names
    assert max(len(line) for line in lines) < MAX_LOG_LINE
    [echoed] = [e for e in events if e["event"] == "echo"]
    assert echoed["payload_bytes"] == len(msgspec.json.encode(payload))
