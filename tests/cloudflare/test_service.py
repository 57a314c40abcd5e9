"""The `JobsService` RPC functions over a bound `Jobs`: the HTTP API's response shapes, and
errors whose message starts with the error code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kumofire_jobs import JobContext, Jobs
from kumofire_jobs.clock import ManualClock
from kumofire_jobs.cloudflare import JobsRpcError, service
from kumofire_jobs.cloudflare.service import split_error
from kumofire_jobs.web import create_app

from ..conftest import EnvFactory


async def ok(ctx: JobContext) -> None:
    return None


async def broken(ctx: JobContext) -> None:
    raise RuntimeError("boom")


@pytest.fixture
async def jobs(make_env: EnvFactory) -> Jobs:
    return (await make_env({"email": ok, "broken": broken})).jobs


@pytest.fixture
async def http(jobs: Jobs) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(lambda request: jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def rpc_error(call: Any) -> tuple[str, str]:
    with pytest.raises(JobsRpcError) as caught:
        await call
    error = caught.value
    assert str(error) == f"{error.code}: {error.message}"
    return error.code, error.message


async def test_answers_have_the_http_shapes(
    jobs: Jobs, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    created = await service.create(jobs, {"name": "email", "payload": {"to": "x"}})
    assert set(created) == {"kumofire_job_run_id", "deduplicated"}
    run_id = created["kumofire_job_run_id"]
    many = await service.create_many(
        jobs, [{"name": "email"}, {"name": "broken", "max_attempts": 1}]
    )
    assert [set(item) for item in many["items"]] == [set(created)] * 2
    await clock.advance(0)

    assert await service.get(jobs, run_id) == (await http.get(f"/v1/runs/{run_id}")).json()
    listed = await service.list_runs(jobs, {"name": "email", "limit": 10})
    assert listed == (await http.get("/v1/runs?name=email&limit=10")).json()
    assert await service.list_runs(jobs) == (await http.get("/v1/runs")).json()
    assert await service.counts(jobs, None) == (await http.get("/v1/runs:counts")).json()
    counts = await service.counts(jobs, {"name": "email"})
    assert counts == (await http.get("/v1/runs:counts?name=email")).json()
    failed_id = many["items"][1]["kumofire_job_run_id"]
    retried = await service.retry(jobs, failed_id)
    assert retried["status"] == "scheduled" and retried["max_attempts"] == 2
    canceled = await service.cancel(jobs, failed_id)
    assert canceled == (await http.get(f"/v1/runs/{failed_id}")).json()
    assert canceled["status"] == "canceled"


async def test_errors_start_with_their_code(jobs: Jobs, clock: ManualClock) -> None:
    assert (await rpc_error(service.create(jobs, {"name": "nope"})))[0] == "unknown_job"
    assert await rpc_error(service.create(jobs, {"payload": 1})) == (
        "validation_error",
        "name is required and must be a string",
    )
    assert (await rpc_error(service.create(jobs, {"name": "email", "typo": 1})))[0] == (
        "validation_error"
    )
    assert (await rpc_error(service.create(jobs, "not an object")))[0] == "validation_error"
    code, message = await rpc_error(service.create_many(jobs, [{"name": "email"}, {"name": 1}]))
    assert (code, message) == ("validation_error", "name is required and must be a string")
    assert (await rpc_error(service.create_many(jobs, {"name": "email"})))[0] == "validation_error"
    assert await rpc_error(service.get(jobs, "run_missing")) == ("not_found", "run not found")
    assert (await rpc_error(service.get(jobs, 42)))[0] == "validation_error"
    assert (await rpc_error(service.cancel(jobs, "run_missing")))[0] == "not_found"
    assert (await rpc_error(service.retry(jobs, "run_missing")))[0] == "not_found"
    assert (await rpc_error(service.list_runs(jobs, {"status": "bogus"})))[0] == (
        "validation_error"
    )
    assert (await rpc_error(service.list_runs(jobs, {"limit": "10"})))[0] == "validation_error"
    assert (await rpc_error(service.list_runs(jobs, {"limit": True})))[0] == "validation_error"
    assert (await rpc_error(service.list_runs(jobs, {"page": 2})))[0] == "validation_error"
    assert (await rpc_error(service.counts(jobs, {"name": 3})))[0] == "validation_error"
    run_id = (await service.create(jobs, {"name": "email"}))["kumofire_job_run_id"]
    await clock.advance(0)
    code, message = await rpc_error(service.retry(jobs, run_id))
    assert code == "conflict" and "succeeded" in message


async def test_unexpected_failures_are_internal_errors_without_internals(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(jobs, "get", explode)
    assert await rpc_error(service.get(jobs, "run_1")) == (
        "internal_error",
        "the server failed to handle the call",
    )


async def test_arguments_as_rpc_delivers_them(jobs: Jobs) -> None:
    class JsDict(dict[str, Any]):  # what the SDK's python_from_rpc makes of an object
        pass

    body = JsDict(name="email", payload=JsDict(blob=memoryview(b"x"), list=[JsDict(a=1)]))
    run_id = (await service.create(jobs, body))["kumofire_job_run_id"]
    run = await service.get(jobs, run_id)
    assert run["payload"] == {"blob": "eA==", "list": [{"a": 1}]}  # bytes as base64 in JSON


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not_found: run not found", ("not_found", "run not found")),
        ("validation_error: a: b: c", ("validation_error", "a: b: c")),
        (
            'Traceback (most recent call last):\n  File "x.py", line 1, in f\n'
            "kumofire_jobs.cloudflare.service.JobsRpcError: conflict: run r is running\n",
            ("conflict", "run r is running"),
        ),
        (
            "PythonError: Traceback ...\nJobsRpcError: unknown_job: no handler\n",
            ("unknown_job", "no handler"),
        ),
        ("Network connection lost.", None),
        ("Traceback (most recent call last):\nValueError: x: y\n", None),
        ("", None),
    ],
)
def test_split_error(text: str, expected: tuple[str, str] | None) -> None:
    assert split_error(text) == expected
