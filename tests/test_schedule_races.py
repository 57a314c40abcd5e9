"""Concurrent changes of one schedule, through the HTTP API on the embedded bindings: a PUT by
key is idempotent and succeeds under concurrency (the last writer wins), and the schedule keeps
its one pending occurrence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from tests.support.envs import EnvFactory, noop


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    return await make_env({"tick": noop, "other": noop})


@pytest.fixture
async def client(env: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def visible(schedule: dict[str, Any]) -> tuple[Any, ...]:
    return (schedule["name"], schedule["expr"], schedule["payload"], schedule["next_run_at"])


async def put_all(client: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    return await asyncio.gather(
        *(client.put("/v1/schedules/by-key/race", json=body) for body in bodies)
    )


async def assert_one_pending(env: LocalEnvironment, final: dict[str, Any]) -> None:
    runs = (await env.jobs.list(schedule_id=final["id"], limit=200)).items
    pending = [r for r in runs if r.status == "scheduled"]
    assert len(pending) == 1, [(r.id, r.status) for r in runs]
    assert {r.status for r in runs} <= {"scheduled", "canceled"}
    (run,) = pending
    assert run.payload == final["payload"] and run.name == final["name"]
    assert (
        run.scheduled_for.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        == final["next_run_at"]
    )


async def test_concurrent_upserts_of_one_key_all_succeed_and_the_last_wins(
    client: httpx.AsyncClient, env: LocalEnvironment
) -> None:
    # Each body changes the timing (a new pending occurrence each) and the payload.
    bodies = [{"name": "tick", "every": 10 + i, "payload": {"i": i}} for i in range(30)]
    answers = await put_all(client, bodies)
    assert sorted(a.status_code for a in answers) == [200] * 29 + [201], [
        a.json() for a in answers if a.status_code >= 400
    ]
    final = (await client.get("/v1/schedules/by-key/race")).json()
    assert {a.json()["id"] for a in answers} == {final["id"]}
    # The last writer wins: the schedule is one caller's body whole (its answer says so),
    # not a mix of several.
    assert visible(final) in [visible(a.json()) for a in answers]
    assert {"every": int(final["expr"]), "payload": final["payload"]} in [
        {"every": b["every"], "payload": b["payload"]} for b in bodies
    ]
    listed = (await client.get("/v1/schedules")).json()["items"]
    assert [s["id"] for s in listed] == [final["id"]]
    await assert_one_pending(env, final)


async def test_concurrent_identical_and_partial_upserts_of_an_existing_schedule(
    client: httpx.AsyncClient, env: LocalEnvironment, clock: ManualClock
) -> None:
    first = await client.put("/v1/schedules/by-key/race", json={"name": "tick", "every": 60})
    assert first.status_code == 201
    await clock.advance(1)
    same = {"name": "tick", "every": 60}
    mixed = [same] * 10 + [
        {"name": "other", "payload": {"p": i}} if i % 2 else {"name": "tick", "every": 5 + i}
        for i in range(20)
    ]
    answers = await put_all(client, mixed)
    assert {a.status_code for a in answers} == {200}, [a.json() for a in answers]
    final = (await client.get("/v1/schedules/by-key/race")).json()
    await assert_one_pending(env, final)
    # An identical body afterwards changes nothing.
    again = await client.put(
        "/v1/schedules/by-key/race",
        json={k: final[k] for k in ("name", "payload")} | {"every": float(final["expr"])},
    )
    assert again.status_code == 200 and again.json() == final
