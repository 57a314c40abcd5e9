"""Integer fields take an integral JSON number written with a fraction (`3.0`, as many
encoders write a whole float) as that integer, and refuse a number with a fraction (`3.5`)
with a 422 naming the field: in every body, through the one check in core/validation.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable

import httpx
import pytest

from kumofire_jobs import ValidationError
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from tests.support.envs import EnvFactory, noop


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    return await make_env({"email": noop})


@pytest.fixture
async def client(env: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def refused(response: httpx.Response, message: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"] == message


async def test_a_run_s_integer_fields_take_integral_floats(
    client: httpx.AsyncClient, env: LocalEnvironment
) -> None:
    body = {"name": "email", "delay": 60, "priority": 5.0, "max_attempts": 3.0}
    created = await client.post("/v1/runs", json=body)
    assert created.status_code == 202, created.text
    run_id = created.json()["kumofire_job_run_id"]
    read = await client.get(f"/v1/runs/{run_id}")
    assert '"priority":5,' in read.text and '"max_attempts":3,' in read.text  # stored as ints
    run = await env.jobs.get(run_id)
    assert run is not None and type(run.priority) is int and type(run.max_attempts) is int
    batch = await client.post("/v1/runs:batch", json={"runs": [{**body, "priority": -100.0}]})
    assert batch.status_code == 202, batch.text
    flow = {"parent": {"name": "email", "max_attempts": 2.0}, "children": [body]}
    assert (await client.post("/v1/flows", json=flow)).status_code == 202


async def test_a_fraction_or_an_integral_float_out_of_range_is_refused_naming_the_field(
    client: httpx.AsyncClient, env: LocalEnvironment
) -> None:
    def post(**fields: object) -> Awaitable[httpx.Response]:
        return client.post("/v1/runs", json={"name": "email", **fields})

    refused(await post(priority=668.5), "priority must be an integer, not 668.5")
    refused(await post(priority=668.0), "priority must be between -100 and 100")
    refused(await post(max_attempts=2.5), "max_attempts must be an integer, not 2.5")
    refused(await post(max_attempts=0.0), "max_attempts must be between 1 and 100")
    refused(await post(max_attempts=True), "max_attempts must be an integer, not true")
    refused(await post(priority="5"), 'priority must be an integer, not "5"')
    refused(await post(priority=1e300), "priority must be between -100 and 100")
    assert sum((await env.jobs.counts()).values()) == 0
    with pytest.raises(ValidationError, match=r"priority must be an integer, not 1\.5"):
        await env.jobs.create("email", priority=1.5)  # type: ignore[arg-type]


async def test_schedule_and_bulk_integer_fields_take_integral_floats(
    client: httpx.AsyncClient,
) -> None:
    body = {"name": "email", "every": 60, "limit": 5.0, "priority": 2.0, "max_attempts": 4.0}
    created = await client.post("/v1/schedules", json=body)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert (schedule["limit"], schedule["priority"], schedule["max_attempts"]) == (5, 2, 4)
    patched = await client.patch(f"/v1/schedules/{schedule['id']}", json={"limit": 7.0})
    assert patched.status_code == 200 and patched.json()["limit"] == 7
    refused(
        await client.patch(f"/v1/schedules/{schedule['id']}", json={"limit": 7.5}),
        "limit must be an integer, not 7.5",
    )
    canceled = await client.post("/v1/runs:cancel", json={"name": "email", "limit": 10.0})
    assert canceled.status_code == 200, canceled.text
    assert canceled.json() == {"count": 1, "has_more": False}  # the pending occurrence
    refused(
        await client.post("/v1/runs:retry", json={"name": "email", "limit": 0.5}),
        "limit must be an integer, not 0.5",
    )
