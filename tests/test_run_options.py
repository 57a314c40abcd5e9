"""A run's create options (API.md Part 2, "New run fields and create options"): `priority`,
`concurrency_key`, `dedupe_ttl`, and the run fields they show in, through Python and HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kumofire_jobs import CreateRequest, JobOptions, ValidationError
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from tests.support.envs import EnvFactory, noop


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    return await make_env(
        {"email": noop, "report": noop}, job_options={"report": JobOptions(timeout=30)}
    )


@pytest.fixture
async def client(env: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_priority_and_concurrency_key_are_kept_on_the_run(env: LocalEnvironment) -> None:
    created = await env.jobs.create("email", priority=-100, concurrency_key="tenant-1")
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None
    assert (run.priority, run.concurrency_key, run.timeout) == (-100, "tenant-1", None)
    assert (run.parent_id, run.progress, run.result) == (None, None, None)
    plain = await env.jobs.get((await env.jobs.create("email")).kumofire_job_run_id)
    assert plain is not None and (plain.priority, plain.concurrency_key) == (0, None)
    [one, two] = await env.jobs.create_many(
        [CreateRequest(name="email", priority=100), CreateRequest(name="report")]
    )
    first = await env.jobs.get(one.kumofire_job_run_id)
    second = await env.jobs.get(two.kumofire_job_run_id)
    assert first is not None and first.priority == 100
    assert second is not None and second.timeout == 30  # the job's timeout


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"priority": 101}, "priority must be between -100 and 100"),
        ({"priority": -101}, "priority must be between"),
        ({"priority": True}, "priority must be an integer"),
        ({"priority": 1.5}, "priority must be an integer"),
        ({"concurrency_key": ""}, "concurrency_key must be a non-empty string"),
        ({"concurrency_key": "k" * 201}, "longer than 200"),
        ({"concurrency_key": "k\ud800"}, "concurrency_key has a lone surrogate"),
        ({"dedupe_key": "d\udfff"}, "dedupe_key has a lone surrogate"),
        ({"dedupe_ttl": 0, "dedupe_key": "d"}, "dedupe_ttl must be above 0"),
        ({"dedupe_ttl": float("nan"), "dedupe_key": "d"}, "dedupe_ttl must be above 0"),
        ({"dedupe_ttl": "1", "dedupe_key": "d"}, "dedupe_ttl must be a number"),
        ({"dedupe_ttl": 5}, "dedupe_ttl needs a dedupe_key"),
    ],
)
async def test_bad_create_options_are_refused(
    env: LocalEnvironment, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        await env.jobs.create("email", **fields)


async def test_a_dedupe_key_is_held_only_for_its_ttl(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    first = await env.jobs.create("email", delay=600, dedupe_key="d", dedupe_ttl=60)
    await clock.advance(59.999)
    again = await env.jobs.create("email", dedupe_key="d")
    assert again.deduplicated and again.kumofire_job_run_id == first.kumofire_job_run_id
    await clock.advance(0.001)
    fresh = await env.jobs.create("email", dedupe_key="d")
    assert not fresh.deduplicated and fresh.kumofire_job_run_id != first.kumofire_job_run_id
    old = await env.jobs.get(first.kumofire_job_run_id)
    assert old is not None and old.dedupe_key is None  # it let the key go
    held = await env.jobs.create("email", dedupe_key="d", dedupe_ttl=60)
    assert held.deduplicated and held.kumofire_job_run_id == fresh.kumofire_job_run_id


async def test_a_sub_millisecond_dedupe_ttl_holds_the_key_for_a_millisecond(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    # Above 0 is accepted (API.md): it must hold the key, not round to a hold already over.
    first = await env.jobs.create("email", delay=600, dedupe_key="d", dedupe_ttl=0.0004)
    again = await env.jobs.create("email", dedupe_key="d")
    assert again.deduplicated and again.kumofire_job_run_id == first.kumofire_job_run_id
    await clock.advance(0.001)
    assert not (await env.jobs.create("email", dedupe_key="d")).deduplicated


async def test_a_dedupe_key_without_a_ttl_is_held_while_the_run_exists(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    first = await env.jobs.create("email", dedupe_key="d")
    await clock.advance(86_400)
    again = await env.jobs.create("email", dedupe_key="d", dedupe_ttl=1)
    assert again.deduplicated and again.kumofire_job_run_id == first.kumofire_job_run_id


async def test_http_create_takes_the_options(client: httpx.AsyncClient) -> None:
    body = {"name": "email", "priority": 7, "concurrency_key": "t", "dedupe_key": "k",
            "dedupe_ttl": 30}  # fmt: skip
    response = await client.post("/v1/runs", json=body)
    assert response.status_code == 202
    run = (await client.get(f"/v1/runs/{response.json()['kumofire_job_run_id']}")).json()
    assert (run["priority"], run["concurrency_key"], run["timeout"]) == (7, "t", None)
    assert (run["parent_id"], run["progress"], run["result"]) == (None, None, None)
    response = await client.post("/v1/runs", json={"name": "report", "priority": None})
    run = (await client.get(f"/v1/runs/{response.json()['kumofire_job_run_id']}")).json()
    assert (run["priority"], run["timeout"]) == (0, 30)
    for bad in ({"priority": 200}, {"concurrency_key": 5}, {"dedupe_ttl": -1, "dedupe_key": "x"}):
        response = await client.post("/v1/runs", json={"name": "email", **bad})
        assert response.status_code == 422, bad
        assert response.json()["error"]["code"] == "validation_error"
    response = await client.post(
        "/v1/runs:batch", json={"runs": [{"name": "email", "priority": 3}]}
    )
    assert response.status_code == 202
