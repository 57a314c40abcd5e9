"""The HTTP API on a full disk: a request whose write finds no room is answered 503
`storage_full` with a `Retry-After` (not a 500 `internal_error`), logged in one line without a
traceback; reads still answer; once space is freed the same request is accepted and its run
completes. The disk is simulated at the SQLite connection (`full_disk.FullDisk`)."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator

import httpx
import pytest

from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.storage_full import storage_full
from kumofire_jobs.local.d1 import D1Error
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from kumofire_jobs.web.openapi import openapi_document
from tests.support.envs import EnvFactory, noop
from tests.support.full_disk import FullDisk, disk_full_error


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    return await make_env({"email": noop})


@pytest.fixture
async def client(env: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def _storage_full(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "storage_full"
    assert "storage is full" in error["message"] and "Traceback" not in error["message"]
    assert response.headers["retry-after"].isdigit()


async def test_writes_on_a_full_disk_answer_503_and_succeed_once_space_is_freed(
    env: LocalEnvironment,
    client: httpx.AsyncClient,
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    disk = FullDisk()
    disk.install(env)
    disk.full = True
    capsys.readouterr()
    _storage_full(await client.post("/v1/runs", json={"name": "email"}))
    _storage_full(await client.post("/v1/runs:batch", json={"runs": [{"name": "email"}]}))
    _storage_full(await client.put("/v1/schedules/by-key/k", json={"name": "email", "every": 5}))
    _storage_full(await client.post("/v1/jobs/email/pause"))
    assert disk.refused >= 4
    counts = await client.get("/v1/runs:counts")  # reading needs no room
    assert counts.status_code == 200 and sum(counts.json().values()) == 0
    out = capsys.readouterr().out
    assert out.count("http.storage_full") == 4
    assert "Traceback" not in out and "internal_error" not in out

    disk.full = False
    created = await client.post("/v1/runs", json={"name": "email"})
    assert created.status_code == 202
    await clock.advance(0)
    run = await client.get(f"/v1/runs/{created.json()['kumofire_job_run_id']}")
    assert run.json()["status"] == "succeeded"
    assert (
        await client.put("/v1/schedules/by-key/k", json={"name": "email", "every": 5})
    ).status_code == 201


def test_a_full_storage_is_told_by_the_error_or_any_of_its_causes() -> None:
    def raised_from(cause: BaseException) -> BaseException:
        try:
            raise RuntimeError("Durable Object storage commit failed") from cause
        except RuntimeError as exc:
            return exc

    assert storage_full(D1Error("D1_ERROR: database or disk is full: SQLITE_FULL"))
    assert storage_full(raised_from(disk_full_error()))
    assert storage_full(raised_from(OSError(errno.ENOSPC, "No space left on device")))
    assert not storage_full(raised_from(OSError(errno.EACCES, "Permission denied")))
    assert not storage_full(D1Error("D1_ERROR: no such table: job_runs"))


def test_every_operation_documents_the_503() -> None:
    for path, methods in openapi_document()["paths"].items():
        if path in ("/v1/health", "/v1/metrics", "/v1/openapi.json"):
            continue
        for method, described in methods.items():
            assert "503" in described["responses"], (method, path)
