"""Parity: every surface of the jobs API offers every operation of `operations.OPERATIONS`,
with the same arguments and fields, and says the same status codes.

The surfaces: `JobsApi` (the Protocol), the bound runtime's `Jobs`, `JobsClient`, the RPC
functions of `cloudflare/service.py` (`entrypoint.FUNCTIONS`) and the `JobsService`
entrypoint of `src/entry.py`, the HTTP routes and the OpenAPI document, and the wire codec of
the results. mypy checks the Python surfaces' types against `JobsApi`; this checks names,
kinds, defaults and the wire.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import httpx
import msgspec
import pytest
from starlette.routing import Route

from kumofire_jobs import JobContext, JobRun, Jobs, JobSchedule
from kumofire_jobs.api import operations, wire
from kumofire_jobs.api.operations import OPERATIONS, Operation
from kumofire_jobs.api.protocol import JobsApi
from kumofire_jobs.client import JobsClient
from kumofire_jobs.cloudflare import entrypoint
from kumofire_jobs.core.models import CreateRequest, SchedulePatch
from kumofire_jobs.core.states import RunStatus
from kumofire_jobs.http import HttpJobsClient
from kumofire_jobs.web import create_app
from kumofire_jobs.web.openapi import openapi_document
from tests.support.envs import EnvFactory
from tests.support.worker_entry import WorkerEntry, import_entry, unload_entry

# The Python implementations of `JobsApi`.
IMPLEMENTATIONS: list[type[Any]] = [Jobs, JobsClient, HttpJobsClient]

# A Python result type, as annotated, to the schema of its wire form (None: no body).
RESULTS: dict[str, str | None] = {
    "CreatedRun": "CreatedRun",
    "list[CreatedRun]": "CreatedRuns",
    "CreatedFlow": "CreatedFlow",
    "JobRun | None": "JobRun",
    "Page[JobRun]": "RunPage",
    "dict[str, int]": "Counts",
    "JobSchedule": "JobSchedule",
    "JobSchedule | None": "JobSchedule",
    "Page[JobSchedule]": "SchedulePage",
    "bool": None,
    "BulkResult": "BulkResult",
    "list[JobInfo]": "JobList",
    "JobInfo | None": "Job",
    "list[RunAttempt] | None": "AttemptList",
    "list[LogLine] | None": "LogList",
}

# A Python argument that is a list of bodies, to the body field that carries the list.
LISTS = {"requests": "runs"}
PATCH = "Unpack[SchedulePatch]"

DOCUMENT = openapi_document()


def ids(op: Operation) -> str:
    return op.name


def protocol_methods() -> set[str]:
    return {
        name
        for name, value in vars(JobsApi).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(value)
    }


def parameters(function: Callable[..., Any]) -> list[inspect.Parameter]:
    return list(inspect.signature(function).parameters.values())[1:]  # without self / jobs


def shape(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in parameters(function)]


def wire_arguments(op: Operation) -> tuple[list[str], set[str]]:
    """The Python method's arguments as the wire names them: the path parameters first (in
    order), then the fields of the body or query (a set)."""
    names: list[str] = []
    for parameter in parameters(getattr(JobsApi, op.name)):
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            assert parameter.annotation == PATCH, op.name
            names += sorted(SchedulePatch.__optional_keys__)
        else:
            names.append(LISTS.get(parameter.name, parameter.name))
    path = list(op.path_parameters)
    return names[: len(path)], set(names[len(path) :])


# --- the table and the Python surfaces ------------------------------------------------------------


def test_the_protocol_declares_exactly_the_operations() -> None:
    assert protocol_methods() == set(operations.BY_NAME)
    assert len(operations.BY_NAME) == len(OPERATIONS)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda cls: cls.__name__)
def test_each_implementation_has_every_operation_as_declared(implementation: type[Any]) -> None:
    for name in protocol_methods():
        method = getattr(implementation, name, None)
        assert inspect.iscoroutinefunction(method), (implementation.__name__, name)
        # Its own, not the protocol's empty declaration that a subclass inherits.
        assert method.__qualname__ != f"JobsApi.{name}", (implementation.__name__, name)
        assert shape(method) == shape(getattr(JobsApi, name)), (implementation.__name__, name)


@pytest.mark.parametrize("op", OPERATIONS, ids=ids)
def test_the_python_arguments_are_the_wire_fields(op: Operation) -> None:
    path, fields = wire_arguments(op)
    assert path == list(op.path_parameters)
    if op.body is not None:
        assert fields == op.body.fields
    else:
        assert fields == set(op.query)
    if op.body is operations.CREATE_RUNS:
        assert operations.CREATE_RUN.fields == set(CreateRequest.__struct_fields__)


@pytest.mark.parametrize("op", OPERATIONS, ids=ids)
def test_the_python_result_is_the_wire_answer(op: Operation) -> None:
    annotation = inspect.signature(getattr(JobsApi, op.name)).return_annotation
    assert RESULTS[annotation] == op.result
    if annotation.endswith("| None") or annotation == "bool":  # missing: HTTP 404, RPC not_found
        assert 404 in op.errors
    assert (op.result is None) == (op.status == 204)


# --- RPC ------------------------------------------------------------------------------------------


@pytest.fixture
def entry(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerEntry]:
    """`src/entry.py`, imported with the stand-in `workers` package."""
    yield import_entry(monkeypatch)
    unload_entry()


def rpc_shape(op: Operation) -> list[tuple[str, Any]]:
    return [(arg, None if arg == "query" else inspect.Parameter.empty) for arg in op.rpc]


@pytest.mark.parametrize("op", OPERATIONS, ids=ids)
def test_the_rpc_arguments_are_the_path_then_the_body_or_query(op: Operation) -> None:
    path = ["key" if name == "key" else "id" for name in op.path_parameters]
    rest = ["query"] if op.query else [] if op.body is None else [op.rpc[-1]]
    assert list(op.rpc) == path + rest
    assert op.body is None or op.rpc[-1] in ("body", "bodies", "patch")


def test_the_service_has_a_function_per_operation() -> None:
    assert set(entrypoint.FUNCTIONS) == set(operations.BY_NAME)
    for op in OPERATIONS:
        function = entrypoint.FUNCTIONS[op.name]
        assert [(p.default) for p in parameters(function)] == [d for _, d in rpc_shape(op)]


def test_the_entrypoint_has_a_method_per_operation(entry: ModuleType) -> None:
    own = {name for name in vars(entry.JobsService) if not name.startswith("_")}
    assert own == set(operations.BY_NAME)
    for op in OPERATIONS:
        method = getattr(entry.JobsService, op.name)
        assert [(p.name, p.default) for p in parameters(method)] == rpc_shape(op), op.name


# --- HTTP and OpenAPI -----------------------------------------------------------------------------


def test_the_routes_are_the_operations_health_openapi_metrics_and_the_dashboard() -> None:
    app = create_app(lambda request: pytest.fail("no request is served"))
    routes = [route for route in app.routes if isinstance(route, Route)]
    assert len(routes) == len(app.routes)
    served = {(method, r.path) for r in routes for method in (r.methods or set()) - {"HEAD"}}
    http_only = {("GET", "/v1/health"), ("GET", "/v1/openapi.json"), ("GET", "/v1/metrics")}
    http_only |= {("GET", "/ui"), ("GET", "/ui/"), ("GET", "/ui/{name}")}  # the dashboard
    assert served == http_only | {(op.method, op.path) for op in OPERATIONS}


@pytest.mark.parametrize("op", OPERATIONS, ids=ids)
def test_the_document_describes_the_operation(op: Operation) -> None:
    described = DOCUMENT["paths"][op.path][op.method.lower()]
    statuses = {int(status) for status in described["responses"]}
    assert statuses == {*op.ok, 401, 403, 503, *op.errors}  # 503: the storage is full
    given = described.get("parameters", [])
    assert [p["name"] for p in given if p["in"] == "path"] == list(op.path_parameters)
    assert {p["name"] for p in given if p["in"] == "query"} == set(op.query)
    for status in op.ok:
        content = described["responses"][str(status)].get("content")
        if op.result is None:
            assert content is None
        else:
            ref = content["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{op.result}"
            assert op.result in DOCUMENT["components"]["schemas"]
    if op.body is None:
        assert "requestBody" not in described
    else:
        ref = described["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{op.body.schema}"
        schema = DOCUMENT["components"]["schemas"][op.body.schema]
        assert set(schema["properties"]) == op.body.fields
        assert schema["required"] == list(op.body.required)


async def ok(ctx: JobContext) -> None:
    return None


# One request per operation, in the table's order: the path's parameters and the body.
SAMPLES: dict[str, tuple[dict[str, str], Any]] = {
    "create": ({}, {"name": "email", "delay": 3600}),  # still scheduled when canceled
    "create_many": ({}, {"runs": [{"name": "email"}]}),
    "create_flow": ({}, {"parent": {"name": "email"}, "children": [{"name": "email"}]}),
    "get": ({"run_id": "$run"}, None),
    "attempts": ({"run_id": "$run"}, None),
    "logs": ({"run_id": "$run"}, None),
    "list": ({}, None),
    "counts": ({}, None),
    "promote": ({"run_id": "$run"}, None),  # still scheduled: made due now
    "cancel": ({"run_id": "$run"}, None),
    "retry": ({"run_id": "$run"}, None),
    "cancel_many": ({}, {"name": "email"}),
    "delete": ({"run_id": "$run"}, None),  # canceled by cancel_many
    "retry_many": ({}, {"status": "canceled", "limit": 1}),
    "delete_many": ({}, {"status": "succeeded"}),
    "list_jobs": ({}, None),
    "get_job": ({"name": "email"}, None),
    "pause_job": ({"name": "email"}, None),
    "resume_job": ({"name": "email"}, None),
    "create_schedule": ({}, {"name": "email", "every": 5}),
    "upsert_schedule": ({"key": "k"}, {"name": "email", "every": 5}),
    "get_schedule": ({"schedule_id": "$schedule"}, None),
    "get_schedule_by_key": ({"key": "k"}, None),
    "update_schedule": ({"schedule_id": "$schedule"}, {"payload": 1}),
    "update_schedule_by_key": ({"key": "k"}, {"payload": 2}),
    "disable_schedule": ({"schedule_id": "$schedule"}, None),
    "disable_schedule_by_key": ({"key": "k"}, None),
    "enable_schedule": ({"schedule_id": "$schedule"}, None),
    "enable_schedule_by_key": ({"key": "k"}, None),
    "delete_schedule": ({"schedule_id": "$schedule"}, None),
    "delete_schedule_by_key": ({"key": "k"}, None),
    "list_schedules": ({}, None),
}


async def test_the_server_answers_each_operation_with_its_status(make_env: EnvFactory) -> None:
    assert list(SAMPLES) == [op.name for op in OPERATIONS]
    env = await make_env({"email": ok})
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    known: dict[str, str] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for op in OPERATIONS:
            values, body = SAMPLES[op.name]
            path = op.path.format(**{k: known.get(v, v) for k, v in values.items()})
            kwargs: dict[str, Any] = {} if body is None else {"json": body}
            response = await http.request(op.method, path, **kwargs)
            assert response.status_code == op.status, (op.name, response.text)
            if op.name == "create":
                known["$run"] = response.json()["kumofire_job_run_id"]
            if op.name == "create_schedule":
                known["$schedule"] = response.json()["id"]


# --- the wire shapes of the results ---------------------------------------------------------------

NOW = datetime(2027, 1, 1, tzinfo=UTC)


def test_the_codec_and_the_document_have_every_field_of_the_models() -> None:
    run = JobRun(
        id="run_1", name="email", status=RunStatus.SUCCEEDED, payload={"a": 1}, attempt=1,
        max_attempts=3, scheduled_for=NOW, created_at=NOW, updated_at=NOW, started_at=NOW,
        finished_at=NOW, last_error=None, dedupe_key="d", schedule_id="sch_1",
    )  # fmt: skip
    schedule = JobSchedule(
        id="sch_1", key="k", name="email", type="interval", expr="5", timezone=None,
        enabled=True, payload=None, max_attempts=None, next_run_at=NOW, last_scheduled_at=None,
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip
    schemas = DOCUMENT["components"]["schemas"]
    for model, encoded, decoded in [
        (run, wire.run_to_wire(run), wire.run_from_wire(wire.run_to_wire(run))),
        (
            schedule,
            wire.schedule_to_wire(schedule),
            wire.schedule_from_wire(wire.schedule_to_wire(schedule)),
        ),
    ]:
        fields = set(type(model).__struct_fields__)
        assert set(encoded) == fields
        assert set(schemas[type(model).__name__]["properties"]) == fields
        assert msgspec.structs.asdict(decoded) == msgspec.structs.asdict(model)
