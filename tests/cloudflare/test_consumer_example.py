"""`examples/consumer-worker`: its `fetch` creates and reads runs through `JobsClient` over a
service binding to the real `JobsService` of `src/entry.py` on the local bindings, and the
run goes through the service's coordinator, queue and handler."""

from __future__ import annotations

import importlib.util
import json
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, cast

import pytest

from kumofire_jobs.core.clock import ManualClock
from tests.support.fake_sdk import FakeEnv
from tests.support.service_binding import FakeServiceBinding
from tests.support.worker_entry import STUBS, Stack, WorkerEntry

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "consumer-worker"


class Response:
    """The SDK's `workers.Response`, as far as the example uses it."""

    def __init__(
        self, body: str = "", status: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.body = body
        self.status = status or 200
        self.headers = dict(headers or {})

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Request:
    """The SDK's `workers.Request`: `method`, `url`, `await text()`."""

    method: str
    url: str
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    async def text(self) -> str:
        return self.body


@pytest.fixture
def modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[WorkerEntry, ModuleType]]:
    """The service's `src/entry.py` and the example's `src/entry.py` (as `consumer_entry`),
    both imported with the stand-in `workers` package."""
    monkeypatch.syspath_prepend(str(STUBS))
    names = ("entry", "consumer_entry", "workers", "workers.asgi")
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    service = importlib.import_module("entry")
    monkeypatch.setattr(sys.modules["workers"], "Response", Response, raising=False)
    spec = importlib.util.spec_from_file_location("consumer_entry", EXAMPLE / "src" / "entry.py")
    assert spec is not None and spec.loader is not None
    consumer = importlib.util.module_from_spec(spec)
    sys.modules["consumer_entry"] = consumer
    spec.loader.exec_module(consumer)
    yield cast(WorkerEntry, service), consumer
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
async def stack(
    modules: tuple[WorkerEntry, ModuleType], clock: ManualClock, data_dir: Path, style: str
) -> AsyncIterator[Stack]:
    made = Stack(modules[0], clock, data_dir, style)
    await made.start()
    yield made
    await made.stop()


@pytest.fixture
def consumer(modules: tuple[WorkerEntry, ModuleType], stack: Stack) -> Any:
    """The example Worker, its `JOBS` binding a service binding to the stack's `JobsService`."""
    env = FakeEnv(JOBS=FakeServiceBinding(stack.service(), stack.style))
    return modules[1].Default(SimpleNamespace(), env)


async def call(consumer: Any, method: str, path: str, body: str = "") -> tuple[int, Any]:
    response = await consumer.fetch(Request(method, f"https://consumer.example.com{path}", body))
    assert response.headers == {"content-type": "application/json"}
    return response.status, response.json()


async def test_the_example_creates_a_run_through_the_service_binding(
    consumer: Any, stack: Stack, clock: ManualClock
) -> None:
    body = json.dumps({"name": "job", "payload": {"from": "consumer"}, "delay": 5})
    status, created = await call(consumer, "POST", "/", body)
    assert status == 202
    assert set(created) == {"kumofire_job_run_id", "deduplicated"}
    assert created["deduplicated"] is False
    run_id = created["kumofire_job_run_id"]

    status, run = await call(consumer, "GET", f"/runs/{run_id}")
    assert (status, run["status"], run["payload"]) == (200, "scheduled", {"from": "consumer"})
    await clock.advance(5)
    assert stack.recorder.payloads == [{"from": "consumer"}]
    status, run = await call(consumer, "GET", f"/runs/{run_id}")
    assert (status, run["status"], run["attempt"]) == (200, "succeeded", 1)
    assert run["finished_at"].endswith("Z")
    # What the service itself answers for the run.
    assert (await stack.service().get(run_id))["status"] == "succeeded"


async def test_the_example_reports_errors(consumer: Any) -> None:
    # The default job name, "echo", has no handler in this test's service: UnknownJobError.
    status, body = await call(consumer, "POST", "/")
    assert status == 422 and "no handler" in body["error"]
    status, body = await call(consumer, "POST", "/", json.dumps({"name": "job", "delay": -1}))
    assert status == 422 and "delay" in body["error"]
    assert (await call(consumer, "POST", "/", "{not json"))[0] == 400
    assert (await call(consumer, "POST", "/", "[1]"))[0] == 422
    assert (await call(consumer, "GET", "/runs/run_missing"))[0] == 404
    assert (await call(consumer, "GET", "/elsewhere"))[0] == 404


def test_the_example_binds_the_jobs_service() -> None:
    config = tomllib.loads((EXAMPLE / "wrangler.toml").read_text())
    assert config["main"] == "src/entry.py"
    assert "python_workers" in config["compatibility_flags"]
    service = tomllib.loads((Path(__file__).resolve().parents[2] / "wrangler.toml").read_text())
    assert config["services"] == [
        {"binding": "JOBS", "service": service["name"], "entrypoint": "JobsService"}
    ]
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert project["project"]["dependencies"] == ["kumofire-jobs"]
    sources = project["tool"]["uv"]["sources"]
    assert sources["kumofire-jobs"]["editable"] is False
    assert (EXAMPLE / sources["kumofire-jobs"]["path"] / "pyproject.toml").is_file()
    assert (EXAMPLE / sources["kumofire-coordinator"]["path"] / "pyproject.toml").is_file()
