"""The HTTP API of API.md through a real ASGI stack (Starlette, driven by httpx)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from kumofire_jobs import JobContext
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.migrations import SCHEMA_VERSION
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from kumofire_jobs.web.openapi import documented_routes
from tests.support.envs import EnvFactory

TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
Client = Callable[..., httpx.AsyncClient]


async def ok(ctx: JobContext) -> None:
    return None


async def broken(ctx: JobContext) -> None:
    raise RuntimeError("boom")


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    return await make_env({"email": ok, "broken": broken})


@pytest.fixture
async def client(env: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(lambda request: env.jobs, max_body_bytes=4096)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str)
    assert "Traceback" not in body["error"]["message"]
    return response.status_code, body["error"]["code"]


async def test_create_get_and_watch_a_run_succeed(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    response = await client.post("/v1/runs", json={"name": "email", "payload": {"to": "x"}})
    assert response.status_code == 202
    body = response.json()
    assert body["deduplicated"] is False
    run_id = body["kumofire_job_run_id"]
    run = (await client.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] in ("scheduled", "queued") and run["payload"] == {"to": "x"}
    await clock.advance(0)
    run = (await client.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "succeeded" and run["attempt"] == 1
    for field in ("scheduled_for", "created_at", "updated_at", "started_at", "finished_at"):
        assert TIME.match(run[field]), run[field]
    assert set(run) == {
        "id", "name", "status", "payload", "attempt", "max_attempts", "scheduled_for",
        "created_at", "updated_at", "started_at", "finished_at", "last_error", "dedupe_key",
        "schedule_id", "priority", "concurrency_key", "timeout", "parent_id", "progress",
        "result",
    }  # fmt: skip


async def test_run_at_with_offset_and_dedupe(client: httpx.AsyncClient) -> None:
    body = {"name": "email", "run_at": "2030-01-01T09:00:00+09:00", "dedupe_key": "k"}
    first = await client.post("/v1/runs", json=body)
    second = await client.post("/v1/runs", json={**body, "payload": 1})
    assert first.status_code == second.status_code == 202
    assert second.json() == {
        "kumofire_job_run_id": first.json()["kumofire_job_run_id"],
        "deduplicated": True,
    }
    run = (await client.get(f"/v1/runs/{first.json()['kumofire_job_run_id']}")).json()
    assert run["scheduled_for"] == "2030-01-01T00:00:00.000Z"


async def test_batch_list_counts_cancel_retry(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    response = await client.post(
        "/v1/runs:batch",
        json={"runs": [{"name": "email", "delay": 60}, {"name": "broken", "max_attempts": 1}]},
    )
    assert response.status_code == 202
    waiting_id, broken_id = (item["kumofire_job_run_id"] for item in response.json()["items"])
    await clock.advance(0)

    page = (await client.get("/v1/runs", params={"limit": 1})).json()
    assert [r["id"] for r in page["items"]] == [broken_id]
    assert page["next_cursor"] is not None
    rest = (await client.get("/v1/runs", params={"cursor": page["next_cursor"]})).json()
    assert [r["id"] for r in rest["items"]] == [waiting_id] and rest["next_cursor"] is None
    failed = (await client.get("/v1/runs", params={"status": "failed"})).json()
    assert [r["id"] for r in failed["items"]] == [broken_id]
    assert (await client.get("/v1/runs", params={"name": "email"})).json()["items"][0]["id"] == (
        waiting_id
    )

    counts = (await client.get("/v1/runs:counts")).json()
    assert counts == {
        "waiting": 0, "scheduled": 1, "queued": 0, "running": 0,
        "succeeded": 0, "failed": 1, "canceled": 0,
    }  # fmt: skip
    assert (await client.get("/v1/runs:counts", params={"name": "email"})).json()["failed"] == 0

    canceled = await client.post(f"/v1/runs/{waiting_id}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    retried = await client.post(f"/v1/runs/{broken_id}/retry")
    assert retried.status_code == 200
    assert retried.json()["status"] == "scheduled" and retried.json()["max_attempts"] == 2


async def test_every_documented_error(
    client: httpx.AsyncClient, env: LocalEnvironment, clock: ManualClock
) -> None:
    cases: list[tuple[str, str, dict[str, Any], tuple[int, str]]] = [
        ("POST", "/v1/runs", {"content": b"{not json"}, (400, "invalid_json")),
        ("POST", "/v1/runs", {"json": [1, 2]}, (422, "validation_error")),
        ("POST", "/v1/runs", {"json": {"payload": 1}}, (422, "validation_error")),
        ("POST", "/v1/runs", {"json": {"name": "nope"}}, (422, "unknown_job")),
        ("POST", "/v1/runs", {"json": {"name": "email", "delay": -1}}, (422, "validation_error")),
        ("POST", "/v1/runs", {"json": {"name": "email", "delay": "1"}}, (422, "validation_error")),
        ("POST", "/v1/runs", {"json": {"name": "email", "max_attempts": 0}},
         (422, "validation_error")),
        ("POST", "/v1/runs", {"json": {"name": "email", "run_at": "2030-01-01T00:00:00"}},
         (422, "validation_error")),
        ("POST", "/v1/runs", {"json": {"name": "email", "run_at": "tomorrow"}},
         (422, "validation_error")),
        ("POST", "/v1/runs", {"json": {"name": "email", "delay": 1, "run_at":
         "2030-01-01T00:00:00Z"}}, (422, "validation_error")),
        ("POST", "/v1/runs", {"json": {"name": "email", "surprise": 1}},
         (422, "validation_error")),
        ("POST", "/v1/runs", {"json": {"name": "email", "payload": "x" * 5000}},
         (413, "payload_too_large")),
        ("POST", "/v1/runs:batch", {"json": {"runs": "no"}}, (422, "validation_error")),
        ("POST", "/v1/runs:batch", {"json": {"runs": [{"name": "email"}] * 101}},
         (422, "validation_error")),
        ("GET", "/v1/runs", {"params": {"limit": "x"}}, (422, "validation_error")),
        ("GET", "/v1/runs", {"params": {"limit": "500"}}, (422, "validation_error")),
        ("GET", "/v1/runs", {"params": {"status": "done"}}, (422, "validation_error")),
        ("GET", "/v1/runs", {"params": {"cursor": "!!"}}, (422, "validation_error")),
        ("GET", "/v1/runs/run_missing", {}, (404, "not_found")),
        ("POST", "/v1/runs/run_missing/cancel", {}, (404, "not_found")),
        ("POST", "/v1/runs/run_missing/retry", {}, (404, "not_found")),
        ("GET", "/v1/nothing-here", {}, (404, "not_found")),
        ("DELETE", "/v1/runs", {}, (405, "method_not_allowed")),
        ("GET", "/v1/runs:batch", {}, (405, "method_not_allowed")),
        ("PUT", "/v1/runs/run_x/cancel", {}, (405, "method_not_allowed")),
    ]  # fmt: skip
    for method, path, kwargs, expected in cases:
        response = await client.request(method, path, **kwargs)
        assert error_of(response) == expected, (method, path, kwargs, response.text)

    created = (await client.post("/v1/runs", json={"name": "email"})).json()
    conflict = await client.post(f"/v1/runs/{created['kumofire_job_run_id']}/retry")
    assert error_of(conflict) == (409, "conflict")
    assert sum((await env.jobs.counts()).values()) == 1  # no bad request created anything


async def test_body_over_the_limit_without_content_length(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    response = await client.post("/v1/runs", content=chunks())
    assert error_of(response) == (413, "payload_too_large")


async def test_bearer_token(env: LocalEnvironment) -> None:
    app = create_app(lambda request: env.jobs, api_token="s3cret")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/v1/health")).status_code == 200  # never needs a token
        assert error_of(await http.get("/v1/runs")) == (401, "unauthorized")
        wrong = {"Authorization": "Bearer nope"}
        assert error_of(await http.get("/v1/runs", headers=wrong)) == (401, "unauthorized")
        basic = {"Authorization": "Basic s3cret"}
        assert error_of(await http.get("/v1/runs", headers=basic)) == (401, "unauthorized")
        right = {"Authorization": "Bearer s3cret"}
        assert (await http.get("/v1/runs", headers=right)).status_code == 200


async def test_a_token_configured_with_surrounding_whitespace_or_non_ascii_is_usable(
    env: LocalEnvironment,
) -> None:
    # HTTP strips a header value's surrounding whitespace, so a configured token's own (a
    # pasted secret's newline) could never be matched; a UTF-8 token arrives as its bytes.
    for configured, sent in (("s3cret\n", b"Bearer s3cret"), (" gr\u00fc\u00df ", "Bearer grüß")):
        app = create_app(lambda request: env.jobs, api_token=configured)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            value = sent if isinstance(sent, bytes) else sent.encode()
            right = {b"Authorization": value}
            assert (await http.get("/v1/runs", headers=right)).status_code == 200
            wrong = {b"Authorization": b"Bearer s3cre"}
            assert error_of(await http.get("/v1/runs", headers=wrong)) == (401, "unauthorized")
    app = create_app(lambda request: env.jobs, api_token="  ")  # blank: nothing matches it
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        blank = {"Authorization": "Bearer "}
        assert error_of(await http.get("/v1/runs", headers=blank)) == (401, "unauthorized")


async def test_production_without_a_token_is_disabled(env: LocalEnvironment) -> None:
    app = create_app(lambda request: env.jobs, require_token=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/v1/health")).status_code == 200
        assert error_of(await http.post("/v1/runs", json={})) == (403, "api_disabled")


async def test_health_and_openapi_describe_every_route(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/health")).json() == {
        "status": "ok",
        "schema_version": SCHEMA_VERSION,
    }
    document = (await client.get("/v1/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    served = {
        (method, route.path)
        for route in client._transport.app.routes  # type: ignore[attr-defined]
        for method in route.methods - {"HEAD"}
        if not route.path.startswith("/ui")  # the dashboard's files, not the API
    }
    assert documented_routes() == served
    described = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert described == served


async def test_schedule_routes(client: httpx.AsyncClient, clock: ManualClock) -> None:
    created = await client.post(
        "/v1/schedules", json={"name": "email", "every": 5, "key": "five", "payload": {"a": 1}}
    )
    assert created.status_code == 201
    schedule = created.json()
    assert schedule["type"] == "interval" and schedule["expr"] == "5"
    assert TIME.match(schedule["next_run_at"]) and schedule["last_scheduled_at"] is None
    sid = schedule["id"]
    await clock.advance(5.01)  # the occurrence at 5 runs, then the next is materialized
    got = (await client.get(f"/v1/schedules/{sid}")).json()
    assert got["last_scheduled_at"] is not None
    assert (await client.get("/v1/schedules/by-key/five")).json()["id"] == sid
    runs = (await client.get("/v1/runs", params={"schedule_id": sid})).json()["items"]
    assert [r["status"] for r in runs] == ["scheduled", "succeeded"]

    upserted = await client.put("/v1/schedules/by-key/five", json={"every": 10})
    assert upserted.status_code == 200 and upserted.json()["expr"] == "10"
    fresh = await client.put(
        "/v1/schedules/by-key/daily", json={"name": "email", "cron": "0 9 * * *"}
    )
    assert fresh.status_code == 201 and fresh.json()["timezone"] == "UTC"
    same = await client.put(
        "/v1/schedules/by-key/daily", json={"name": "email", "cron": "0 9 * * *"}
    )
    assert same.status_code == 200 and same.json() == fresh.json()

    patched = await client.patch(f"/v1/schedules/{sid}", json={"payload": {"a": 2}})
    assert patched.status_code == 200 and patched.json()["payload"] == {"a": 2}
    patched = await client.patch("/v1/schedules/by-key/daily", json={"timezone": "Asia/Tokyo"})
    assert patched.json()["timezone"] == "Asia/Tokyo"

    disabled = await client.post("/v1/schedules/by-key/five/disable")
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert disabled.json()["next_run_at"] is None
    enabled = await client.post(f"/v1/schedules/{sid}/enable")
    assert enabled.json()["enabled"] is True and enabled.json()["next_run_at"] is not None
    await client.post(f"/v1/schedules/{sid}/disable")

    listed = (await client.get("/v1/schedules", params={"enabled": "false"})).json()
    assert [s["id"] for s in listed["items"]] == [sid]
    page = (await client.get("/v1/schedules", params={"limit": 1})).json()
    assert len(page["items"]) == 1 and page["next_cursor"] is not None

    assert (await client.delete(f"/v1/schedules/{sid}")).status_code == 204
    assert (await client.delete("/v1/schedules/by-key/daily")).status_code == 204
    assert error_of(await client.delete(f"/v1/schedules/{sid}")) == (404, "not_found")


async def test_schedule_bad_input(client: httpx.AsyncClient) -> None:
    cases: list[tuple[str, str, dict[str, Any], tuple[int, str]]] = [
        ("POST", "/v1/schedules", {"json": {"name": "email"}}, (422, "validation_error")),
        ("POST", "/v1/schedules", {"json": {"every": 5}}, (422, "validation_error")),
        ("POST", "/v1/schedules", {"json": {"name": "email", "cron": "* * * * *", "every": 5}},
         (422, "validation_error")),
        ("POST", "/v1/schedules", {"json": {"name": "email", "cron": "nope"}},
         (422, "validation_error")),
        ("POST", "/v1/schedules", {"json": {"name": "email", "cron": "0 0 0 * * * *"}},
         (422, "validation_error")),
        ("POST", "/v1/schedules", {"json": {"name": "email", "every": 0}},
         (422, "validation_error")),
        ("POST", "/v1/schedules", {"json": {"name": "email", "cron": "* * * * *",
         "timezone": "Nowhere/City"}}, (422, "validation_error")),
        ("POST", "/v1/schedules", {"json": {"name": "email", "every": 5, "timezone": "UTC"}},
         (422, "validation_error")),
        ("POST", "/v1/schedules", {"json": {"name": "nope", "every": 5}}, (422, "unknown_job")),
        ("POST", "/v1/schedules", {"json": {"name": "email", "every": 5, "oops": 1}},
         (422, "validation_error")),
        ("POST", "/v1/schedules", {"content": b"{"}, (400, "invalid_json")),
        ("PUT", "/v1/schedules/by-key/k", {"json": {"every": 5}}, (422, "validation_error")),
        ("PATCH", "/v1/schedules/sch_missing", {"json": {"every": 5}}, (404, "not_found")),
        ("GET", "/v1/schedules/by-key/missing", {}, (404, "not_found")),
        ("POST", "/v1/schedules/sch_missing/enable", {}, (404, "not_found")),
        ("GET", "/v1/schedules", {"params": {"enabled": "maybe"}}, (422, "validation_error")),
        ("PUT", "/v1/schedules", {}, (405, "method_not_allowed")),
    ]  # fmt: skip
    for method, path, kwargs, expected in cases:
        response = await client.request(method, path, **kwargs)
        assert error_of(response) == expected, (method, path, kwargs, response.text)
    await client.post("/v1/schedules", json={"name": "email", "every": 5, "key": "dup"})
    dup = await client.post("/v1/schedules", json={"name": "email", "every": 5, "key": "dup"})
    assert error_of(dup) == (409, "conflict")


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/runs?status=", "status"),
        ("/v1/runs?name=&limit=5", "name"),
        ("/v1/runs?schedule_id=", "schedule_id"),
        ("/v1/runs?parent_id=", "parent_id"),
        ("/v1/runs?limit=", "limit"),
        ("/v1/runs?cursor=", "cursor"),
        ("/v1/runs:counts?name=", "name"),
        ("/v1/schedules?enabled=", "enabled"),
        ("/v1/schedules?name=", "name"),
    ],
)
async def test_a_query_parameter_given_empty_is_refused_naming_it(
    client: httpx.AsyncClient, path: str, parameter: str
) -> None:
    await client.post("/v1/runs", json={"name": "email"})  # a run an empty filter would list
    response = await client.get(path)
    assert error_of(response) == (422, "validation_error")
    assert f"query parameter {parameter} is empty" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/runs?status=failed&status=succeeded", "status"),
        ("/v1/runs?name=email&name=other&limit=5", "name"),
        ("/v1/runs?limit=5&limit=6", "limit"),
        ("/v1/runs:counts?name=email&name=email", "name"),
        ("/v1/schedules?enabled=true&enabled=false", "enabled"),
    ],
)
async def test_a_query_parameter_given_twice_is_refused_naming_it(
    client: httpx.AsyncClient, path: str, parameter: str
) -> None:
    # Only the last was read: `?status=failed&status=succeeded`, an "either" to many APIs,
    # answered the succeeded runs alone.
    await client.post("/v1/runs", json={"name": "email"})
    response = await client.get(path)
    assert error_of(response) == (422, "validation_error")
    assert f"query parameter {parameter} is given 2 times" in response.json()["error"]["message"]


async def test_an_unknown_query_parameter_is_ignored(client: httpx.AsyncClient) -> None:
    await client.post("/v1/runs", json={"name": "email"})
    response = await client.get("/v1/runs?colour=blue")
    assert response.status_code == 200 and len(response.json()["items"]) == 1
