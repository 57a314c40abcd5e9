"""The OpenAPI document says what the server does: sample requests of every operation are valid
against it and get a documented answer in the documented shape, and each request body lists
exactly the fields the server accepts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from kumofire_jobs import JobContext
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from kumofire_jobs.web.openapi import openapi_document
from tests.support.envs import EnvFactory


async def ok(ctx: JobContext) -> None:
    return None


@pytest.fixture
async def client(make_env: EnvFactory) -> AsyncIterator[httpx.AsyncClient]:
    env: LocalEnvironment = await make_env({"email": ok})
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


DOCUMENT = openapi_document()


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for a schema of the document, resolving its `#/components/...` refs."""
    return Draft202012Validator({**schema, "components": DOCUMENT["components"]})


def errors(schema: dict[str, Any], value: Any) -> list[str]:
    return [error.message for error in validator(schema).iter_errors(value)]


def body_schema(method: str, path: str) -> dict[str, Any]:
    operation = DOCUMENT["paths"][path][method.lower()]
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = DOCUMENT["components"]["schemas"][name]
    return schema


def check_query(method: str, path: str, query: dict[str, Any]) -> dict[str, str]:
    """The sample query's values, valid against the documented parameters, as strings."""
    parameters = {
        p["name"]: p["schema"]
        for p in DOCUMENT["paths"][path][method.lower()].get("parameters", [])
        if p["in"] == "query"
    }
    for name, value in query.items():
        assert name in parameters, (method, path, name)
        assert errors(parameters[name], value) == [], (method, path, name, value)
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in query.items()}


def check_response(method: str, path: str, response: httpx.Response) -> None:
    """The status is documented for the operation, and the body has the documented shape."""
    answers = DOCUMENT["paths"][path][method.lower()]["responses"]
    documented = answers.get(str(response.status_code))
    assert documented is not None, (method, path, response.status_code, response.text)
    schema = documented.get("content", {}).get("application/json", {}).get("schema")
    if schema is not None:
        assert errors(schema, response.json()) == [], (method, path, response.text)


async def test_sample_requests_of_every_operation_match_the_document(
    client: httpx.AsyncClient,
) -> None:
    run_id = (await client.post("/v1/runs", json={"name": "email"})).json()["kumofire_job_run_id"]
    await client.post(f"/v1/runs/{run_id}/cancel")
    created = await client.post(
        "/v1/schedules", json={"name": "email", "every": 60, "key": "existing"}
    )
    schedule_id = created.json()["id"]
    params = {"run_id": run_id, "schedule_id": schedule_id, "key": "existing", "name": "email"}
    # (method, path, query, body, expected status), in an order where each can succeed.
    samples: list[tuple[str, str, dict[str, Any], Any, int]] = [
        ("GET", "/v1/health", {}, None, 200),
        ("GET", "/v1/openapi.json", {}, None, 200),
        ("GET", "/v1/metrics", {}, None, 200),
        ("POST", "/v1/runs", {}, {"name": "email", "payload": {"to": "a"}, "delay": 1.5,
                                  "max_attempts": 3, "dedupe_key": "d1"}, 202),
        ("POST", "/v1/runs", {}, {"name": "email", "run_at": "2030-01-01T09:00:00+09:00",
                                  "payload": None, "delay": None, "dedupe_key": None}, 202),
        ("POST", "/v1/runs:batch", {}, {"runs": [{"name": "email"}, {"name": "email",
                                                  "payload": [1, 2]}]}, 202),
        ("GET", "/v1/runs", {"status": "scheduled", "name": "email", "limit": 2}, None, 200),
        ("GET", "/v1/runs", {"schedule_id": schedule_id, "limit": 200}, None, 200),
        ("POST", "/v1/flows", {}, {"parent": {"name": "email", "delay": 60},
                                   "children": [{"name": "email", "priority": 1}]}, 202),
        ("GET", "/v1/runs", {"parent_id": "run_none", "limit": 5}, None, 200),
        ("GET", "/v1/runs:counts", {"name": "email"}, None, 200),
        ("GET", "/v1/runs/{run_id}", {}, None, 200),
        ("GET", "/v1/runs/{run_id}/attempts", {}, None, 200),
        ("GET", "/v1/runs/{run_id}/logs", {}, None, 200),
        ("POST", "/v1/runs/{run_id}/retry", {}, None, 200),
        ("POST", "/v1/runs/{run_id}/retry", {}, None, 409),
        ("POST", "/v1/runs/{run_id}/cancel", {}, None, 200),
        ("GET", "/v1/runs/{run_id}", {}, None, 200),
        ("POST", "/v1/runs/{run_id}/promote", {}, None, 409),
        ("DELETE", "/v1/runs/{run_id}", {}, None, 204),
        ("DELETE", "/v1/runs/{run_id}", {}, None, 404),
        ("GET", "/v1/runs/{run_id}/attempts", {}, None, 404),
        ("GET", "/v1/runs/{run_id}/logs", {}, None, 404),
        ("POST", "/v1/runs/{run_id}/promote", {}, None, 404),
        ("POST", "/v1/runs:cancel", {}, {"name": "email", "limit": 1}, 200),
        ("POST", "/v1/runs:retry", {}, {"status": "canceled", "schedule_id": None}, 200),
        ("POST", "/v1/runs:delete", {}, {"created_before": "2100-01-01T00:00:00Z",
                                         "status": "canceled"}, 200),
        ("POST", "/v1/runs:cancel", {}, {"limit": 5}, 422),
        ("GET", "/v1/jobs", {}, None, 200),
        ("GET", "/v1/jobs/{name}", {}, None, 200),
        ("POST", "/v1/jobs/{name}/pause", {}, None, 200),
        ("POST", "/v1/jobs/{name}/resume", {}, None, 200),
        ("GET", "/v1/jobs/nope", {}, None, 404),
        ("POST", "/v1/schedules", {}, {"name": "email", "cron": "0 9 * * *", "key": "daily",
                                       "timezone": "Asia/Tokyo", "enabled": False,
                                       "max_attempts": 2, "payload": {"a": 1}}, 201),
        ("POST", "/v1/schedules", {}, {"name": "email", "every": 0.5 + 1, "key": None}, 201),
        ("GET", "/v1/schedules", {"enabled": True, "name": "email", "limit": 1}, None, 200),
        ("PUT", "/v1/schedules/by-key/{key}", {}, {"every": 30, "payload": None}, 200),
        ("PUT", "/v1/schedules/by-key/fresh", {}, {"name": "email", "cron": "*/5 * * * * *",
                                                   "enabled": True, "max_attempts": 1}, 201),
        ("GET", "/v1/schedules/{schedule_id}", {}, None, 200),
        ("GET", "/v1/schedules/by-key/{key}", {}, None, 200),
        ("PATCH", "/v1/schedules/{schedule_id}", {}, {"payload": [1], "name": "email"}, 200),
        ("PATCH", "/v1/schedules/by-key/{key}", {}, {"cron": "0 0 * * *", "timezone": "UTC"},
         200),
        ("POST", "/v1/schedules/{schedule_id}/disable", {}, None, 200),
        ("POST", "/v1/schedules/{schedule_id}/enable", {}, None, 200),
        ("POST", "/v1/schedules/by-key/{key}/disable", {}, None, 200),
        ("POST", "/v1/schedules/by-key/{key}/enable", {}, None, 200),
        ("DELETE", "/v1/schedules/by-key/fresh", {}, None, 204),
        ("DELETE", "/v1/schedules/{schedule_id}", {}, None, 204),
        ("GET", "/v1/schedules/by-key/{key}", {}, None, 404),
        ("DELETE", "/v1/schedules/by-key/{key}", {}, None, 404),
    ]  # fmt: skip
    covered = set()
    for method, path, query, body, status in samples:
        template = path.replace("/by-key/fresh", "/by-key/{key}").replace(
            "/jobs/nope", "/jobs/{name}"
        )
        covered.add((method, template))
        if body is not None and status != 422:  # a refused body may be one it documents so
            assert errors(body_schema(method, template), body) == [], (method, path, body)
        response = await client.request(
            method,
            path.format(**params),
            params=check_query(method, template, query),
            json=body,
        )
        assert response.status_code == status, (method, path, response.text)
        check_response(method, template, response)
    described = {(m.upper(), p) for p, ops in DOCUMENT["paths"].items() for m in ops}
    assert covered == described


# A valid value for each field any request body has, and one no body has.
FIELD_SAMPLES: dict[str, Any] = {
    "name": "email", "payload": {"a": 1}, "run_at": "2030-01-01T00:00:00Z", "delay": 1,
    "max_attempts": 2, "dedupe_key": "d", "cron": "0 9 * * *", "every": 5, "key": "k2",
    "timezone": "UTC", "enabled": True, "runs": [], "surprise": 1, "priority": 5,
    "concurrency_key": "tenant", "dedupe_ttl": 60, "status": "failed", "schedule_id": "sch_x",
    "created_before": "2030-01-01T00:00:00Z", "limit": 10, "start_at": "2030-01-01T00:00:00Z",
    "end_at": "2031-01-01T00:00:00Z", "parent": {"name": "email"},
    "children": [{"name": "email"}],
}  # fmt: skip


async def test_each_body_lists_exactly_the_fields_the_server_accepts(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/v1/schedules/by-key/k", json={"name": "email", "every": 60})
    # (method, path, documented path, a valid body to add a field to)
    operations: list[tuple[str, str, str, dict[str, Any]]] = [
        ("POST", "/v1/runs", "/v1/runs", {"name": "email"}),
        ("POST", "/v1/runs:batch", "/v1/runs:batch", {"runs": []}),
        ("POST", "/v1/schedules", "/v1/schedules", {"name": "email", "every": 60}),
        ("PUT", "/v1/schedules/by-key/k", "/v1/schedules/by-key/{key}", {"every": 60}),
        ("PATCH", "/v1/schedules/by-key/k", "/v1/schedules/by-key/{key}", {"every": 60}),
        ("PATCH", "/v1/schedules/sch_x", "/v1/schedules/{schedule_id}", {"every": 60}),
        ("POST", "/v1/runs:cancel", "/v1/runs:cancel", {"name": "email"}),
        ("POST", "/v1/runs:retry", "/v1/runs:retry", {"name": "email"}),
        ("POST", "/v1/runs:delete", "/v1/runs:delete", {"name": "email"}),
        ("POST", "/v1/flows", "/v1/flows", {"parent": {"name": "email"},
                                           "children": [{"name": "email"}]}),
    ]  # fmt: skip
    with_bodies = {
        (m.upper(), p)
        for p, ops in DOCUMENT["paths"].items()
        for m, op in ops.items()
        if "requestBody" in op
    }
    assert {(m, p) for m, _, p, _ in operations} == with_bodies
    for method, path, documented, base in operations:
        schema = body_schema(method, documented)
        assert errors(schema, base) == []
        accepted = set()
        for field, value in FIELD_SAMPLES.items():
            response = await client.request(method, path, json={**base, field: value})
            if "unknown field" not in response.text:
                accepted.add(field)
        assert set(schema["properties"]) == accepted, (method, path)
        assert errors(schema, {**base, "surprise": 1}) != []


async def test_the_bulk_filter_documents_that_it_needs_one_of_its_four_fields(
    client: httpx.AsyncClient,
) -> None:
    schema = body_schema("POST", "/v1/runs:cancel")
    refused: list[dict[str, Any]] = [{}, {"limit": 5}, {"name": None, "limit": 5}]
    for body in refused:
        assert errors(schema, body) != [], body
        response = await client.post("/v1/runs:cancel", json=body)
        assert response.status_code == 422, body
    accepted: list[dict[str, Any]] = [
        {"status": "failed"},
        {"created_before": "2030-01-01T00:00:00Z", "name": None},
    ]
    for body in accepted:
        assert errors(schema, body) == [], body
        assert (await client.post("/v1/runs:cancel", json=body)).status_code == 200, body


async def test_refused_queries_media_types_and_origins_answer_documented_statuses(
    client: httpx.AsyncClient,
) -> None:
    # Found by schemathesis against `kumofire-jobs dev`: `runs:counts?name=` answered a 422 its
    # operation did not document.
    for path in ("/v1/runs", "/v1/runs:counts", "/v1/schedules"):
        response = await client.get(path, params={"name": ""})
        assert response.status_code == 422, path
        check_response("GET", path, response)
    with_bodies = [
        (m.upper(), p)
        for p, ops in DOCUMENT["paths"].items()
        for m, op in ops.items()
        if "requestBody" in op
    ]
    for method, path in with_bodies:
        concrete = path.replace("{key}", "k").replace("{schedule_id}", "sch_x")
        text = await client.request(
            method, concrete, content=b"{}", headers={"content-type": "text/plain"}
        )
        assert text.status_code == 415, (method, path)
        check_response(method, path, text)
        forged = await client.request(
            method, concrete, json={}, headers={"sec-fetch-site": "cross-site"}
        )
        assert forged.status_code == 403, (method, path)
        check_response(method, path, forged)
