"""Flows over HTTP (`POST /v1/flows`, `GET /v1/runs?parent_id=`): 202 with the ids, 422 for
a bad flow with nothing created, and the parent's life as the HTTP API shows it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kumofire_jobs import JobContext
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from tests.support.envs import EnvFactory

seen: list[list[str]] = []


async def report(ctx: JobContext) -> None:
    seen.append([child.status.value for child in ctx.children])


async def part(ctx: JobContext) -> None:
    return None


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    seen.clear()
    return await make_env({"report": report, "part": part})


@pytest.fixture
async def client(env: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def flow(children: list[Any], **parent: Any) -> dict[str, Any]:
    return {"parent": {"name": "report", **parent}, "children": children}


async def test_a_flow_over_http(client: httpx.AsyncClient, clock: ManualClock) -> None:
    children = [{"name": "part", "payload": i, "delay": 10} for i in range(3)]
    response = await client.post("/v1/flows", json=flow(children, payload={"r": 1}))
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"parent_id", "children"} and len(body["children"]) == 3
    parent = (await client.get(f"/v1/runs/{body['parent_id']}")).json()
    assert parent["status"] == "waiting" and parent["parent_id"] is None
    assert parent["payload"] == {"r": 1}
    counts = (await client.get("/v1/runs:counts")).json()
    assert counts["waiting"] == 1 and counts["scheduled"] == 3
    listed = (await client.get("/v1/runs", params={"parent_id": body["parent_id"]})).json()
    assert [r["id"] for r in listed["items"]] == body["children"][::-1]
    assert {r["parent_id"] for r in listed["items"]} == {body["parent_id"]}
    waiting = (await client.get("/v1/runs", params={"status": "waiting"})).json()
    assert [r["id"] for r in waiting["items"]] == [body["parent_id"]]
    await clock.advance(10)
    assert seen == [["succeeded"] * 3]
    parent = (await client.get(f"/v1/runs/{body['parent_id']}")).json()
    assert parent["status"] == "succeeded"


async def test_canceling_the_parent_over_http_cascades(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    body = (await client.post("/v1/flows", json=flow([{"name": "part", "delay": 60}]))).json()
    canceled = (await client.post(f"/v1/runs/{body['parent_id']}/cancel")).json()
    assert canceled["status"] == "canceled"
    child = (await client.get(f"/v1/runs/{body['children'][0]}")).json()
    assert child["status"] == "canceled"
    await clock.advance(60)
    assert seen == []


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (flow([]), "validation_error", "1 to 100 children"),
        (flow([{"name": "part"}] * 101), "validation_error", "1 to 100 children"),
        (flow([{"name": "part"}, {"name": "part", "delay": -1}]), "validation_error",
         "children[1]"),
        (flow([{"name": "part"}, {"name": "nope"}]), "unknown_job", "children[1]"),
        (flow([{"name": "part", "surprise": 1}]), "validation_error", "children[0]"),
        (flow([{"name": "part", "dedupe_key": "k"}]), "validation_error", "dedupe_key"),
        (flow(["part"]), "validation_error", "children[0]"),
        (flow([{"name": "part"}], run_at="2030-01-01T00:00:00"), "validation_error", "run_at"),
        ({"parent": {"name": "nope"}, "children": [{"name": "part"}]}, "unknown_job", "parent"),
        ({"children": [{"name": "part"}]}, "validation_error", "parent"),
        ({"parent": {"name": "report"}}, "validation_error", "children"),
        ({"parent": {"name": "report"}, "children": {"name": "part"}}, "validation_error",
         "children"),
        ({**flow([{"name": "part"}]), "extra": 1}, "validation_error", "unknown field"),
        ([], "validation_error", "JSON object"),
    ],
)  # fmt: skip
async def test_a_bad_flow_is_a_422_and_creates_nothing(
    client: httpx.AsyncClient, body: Any, code: str, message: str
) -> None:
    response = await client.post("/v1/flows", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code and message in error["message"], error
    counts = (await client.get("/v1/runs:counts")).json()
    assert sum(counts.values()) == 0


async def test_a_flow_body_that_is_not_json_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/flows", content=b"{not json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
