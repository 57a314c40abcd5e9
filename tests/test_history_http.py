"""`GET /v1/runs/{id}/attempts` and `GET /v1/runs/{id}/logs`: the answers' shapes, as the
OpenAPI document describes them, and 404 for an unknown run."""

from __future__ import annotations

from typing import Any

import httpx

from kumofire_jobs import JobContext
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.web import create_app
from tests.support.envs import EnvFactory
from tests.test_openapi import DOCUMENT, errors


def documented(path: str, response: httpx.Response) -> list[str]:
    answer = DOCUMENT["paths"][path]["get"]["responses"][str(response.status_code)]
    return errors(answer["content"]["application/json"]["schema"], response.json())


async def test_attempts_and_logs_over_http(make_env: EnvFactory, clock: ManualClock) -> None:
    async def flaky(ctx: JobContext) -> Any:
        ctx.log.info("sending", to="a@example.com")
        await ctx.progress({"sent": ctx.job.attempt})
        if ctx.job.attempt == 1:
            raise ConnectionError("smtp down")
        return {"id": "msg-1"}

    env = await make_env({"email": flaky})
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        created = await http.post("/v1/runs", json={"name": "email"})
        run_id = created.json()["kumofire_job_run_id"]
        await clock.advance(5)

        run = (await http.get(f"/v1/runs/{run_id}")).json()
        assert (run["status"], run["progress"], run["result"]) == (
            "succeeded", {"sent": 2}, {"id": "msg-1"},
        )  # fmt: skip

        attempts = await http.get(f"/v1/runs/{run_id}/attempts")
        assert attempts.status_code == 200
        assert documented("/v1/runs/{run_id}/attempts", attempts) == []
        items = attempts.json()["items"]
        assert [(a["attempt"], a["outcome"]) for a in items] == [(1, "retried"), (2, "succeeded")]
        first = items[0]
        assert set(first) == {"attempt", "started_at", "finished_at", "duration_ms", "outcome",
                              "error"}  # fmt: skip
        assert first["started_at"] == "2027-01-01T00:00:00.000Z"
        assert first["finished_at"] == "2027-01-01T00:00:00.000Z" and first["duration_ms"] == 0
        assert first["error"].endswith("ConnectionError: smtp down")
        assert items[1]["error"] is None and items[1]["started_at"] == "2027-01-01T00:00:01.000Z"

        logs = await http.get(f"/v1/runs/{run_id}/logs")
        assert logs.status_code == 200
        assert documented("/v1/runs/{run_id}/logs", logs) == []
        assert logs.json() == {
            "items": [
                {"at": "2027-01-01T00:00:00.000Z", "attempt": 1, "level": "info",
                 "event": "sending", "fields": {"to": "a@example.com"}},
                {"at": "2027-01-01T00:00:01.000Z", "attempt": 2, "level": "info",
                 "event": "sending", "fields": {"to": "a@example.com"}},
            ]
        }  # fmt: skip

        for route in ("attempts", "logs"):
            missing = await http.get(f"/v1/runs/run_missing/{route}")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "not_found"
            assert (await http.post(f"/v1/runs/{run_id}/{route}")).status_code == 405
