"""The `JobsService` RPC functions over a bound `Jobs`: the HTTP API's response shapes, and
errors whose message starts with the error code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kumofire_jobs import JobContext, Jobs
from kumofire_jobs.cloudflare import JobsRpcError, service
from kumofire_jobs.cloudflare.ffi import HostJsError
from kumofire_jobs.cloudflare.service import split_error
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.web import create_app
from tests.support.envs import EnvFactory


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
        ("Error: not_found: run not found", ("not_found", "run not found")),  # toString()
        ("Network connection lost.", None),
        ("Error: Network connection lost.", None),
        ("Traceback (most recent call last):\nValueError: x: y\n", None),
        ("", None),
    ],
)
def test_split_error(text: str, expected: tuple[str, str] | None) -> None:
    assert split_error(text) == expected


async def test_the_entrypoint_answers_errors_as_javascript_errors(jobs: Jobs) -> None:
    # `answer` is what the entrypoint returns: the result, or for a JobsRpcError a JavaScript
    # Error (off Pyodide, HostJsError) whose message starts with the code, its `code` the code.
    created = await service.answer(service.create(jobs, {"name": "email"}))
    assert set(created) == {"kumofire_job_run_id", "deduplicated"}
    missing = await service.answer(service.get(jobs, "run_missing"))
    assert isinstance(missing, HostJsError)
    assert (missing.name, missing.message) == ("Error", "not_found: run not found")
    assert missing.js_properties == {"code": "not_found"} and vars(missing)["code"] == "not_found"
    unknown = await service.answer(service.create(jobs, {"name": "nope"}))
    assert isinstance(unknown, HostJsError) and unknown.message.startswith("unknown_job: ")

    async def crash() -> None:
        raise KeyError("not a service error")

    with pytest.raises(KeyError):  # only the service's own errors are answered
        await service.answer(crash())


# --- schedules ---------------------------------------------------------------------------------


async def test_schedule_answers_have_the_http_shapes(
    jobs: Jobs, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    body = {"name": "email", "payload": {"n": 1}, "every": 5, "key": "tick", "max_attempts": 2}
    created = await service.create_schedule(jobs, body)
    assert created == (await http.get(f"/v1/schedules/{created['id']}")).json()
    assert created["type"] == "interval" and created["expr"] == "5"
    assert created["next_run_at"] == "2027-01-01T00:00:05.000Z"
    # And the other way round: what HTTP created reads the same through RPC.
    response = await http.post("/v1/schedules", json={"name": "email", "cron": "0 * * * *"})
    assert response.status_code == 201
    assert await service.get_schedule(jobs, response.json()["id"]) == response.json()

    assert await service.get_schedule(jobs, created["id"]) == created
    assert await service.get_schedule_by_key(jobs, "tick") == created
    await clock.advance(1)

    # upsert: created (HTTP 201) and updated (HTTP 200) both answer the schedule itself.
    upserted = await service.upsert_schedule(jobs, "daily", {"name": "email", "cron": "0 9 * * *"})
    assert upserted == (await http.get("/v1/schedules/by-key/daily")).json()
    assert upserted["key"] == "daily" and upserted["timezone"] == "UTC"
    changed = await service.upsert_schedule(jobs, "daily", {"timezone": "Asia/Tokyo"})
    assert changed == (await http.get("/v1/schedules/by-key/daily")).json()
    assert (changed["id"], changed["timezone"]) == (upserted["id"], "Asia/Tokyo")
    put = await http.put("/v1/schedules/by-key/daily", json={"payload": [1]})
    assert put.status_code == 200
    assert await service.get_schedule_by_key(jobs, "daily") == put.json()

    patched = await service.update_schedule(jobs, created["id"], {"payload": {"n": 2}})
    assert patched == (await http.get(f"/v1/schedules/{created['id']}")).json()
    assert patched["payload"] == {"n": 2}
    patched = await service.update_schedule_by_key(jobs, "tick", {"every": 1.5})
    assert patched == (await http.get("/v1/schedules/by-key/tick")).json()
    assert patched["expr"] == "1.5"
    http_patch = await http.patch("/v1/schedules/by-key/tick", json={"max_attempts": 3})
    assert await service.get_schedule_by_key(jobs, "tick") == http_patch.json()

    disabled = await service.disable_schedule(jobs, created["id"])
    assert disabled == (await http.get(f"/v1/schedules/{created['id']}")).json()
    assert (disabled["enabled"], disabled["next_run_at"]) == (False, None)
    enabled = await service.enable_schedule(jobs, created["id"])
    assert enabled == (await http.get(f"/v1/schedules/{created['id']}")).json()
    assert enabled["enabled"] is True and enabled["next_run_at"] is not None
    disabled = await service.disable_schedule_by_key(jobs, "daily")
    assert disabled == (await http.get("/v1/schedules/by-key/daily")).json()
    assert disabled["enabled"] is False
    enabled = await service.enable_schedule_by_key(jobs, "daily")
    assert enabled == (await http.post("/v1/schedules/by-key/daily/enable")).json()

    assert await service.list_schedules(jobs) == (await http.get("/v1/schedules")).json()
    assert await service.list_schedules(jobs, None) == (await http.get("/v1/schedules")).json()
    page = await service.list_schedules(jobs, {"enabled": True, "name": "email", "limit": 2})
    assert page == (await http.get("/v1/schedules?enabled=true&name=email&limit=2")).json()
    assert len(page["items"]) == 2 and page["next_cursor"] is not None
    rest = await service.list_schedules(jobs, {"cursor": page["next_cursor"], "limit": 2})
    cursor = page["next_cursor"]
    assert rest == (await http.get("/v1/schedules", params={"cursor": cursor, "limit": 2})).json()
    await service.disable_schedule(jobs, created["id"])
    assert await service.list_schedules(jobs, {"enabled": False}) == (
        (await http.get("/v1/schedules?enabled=false")).json()
    )

    # delete: {"deleted": true} where HTTP answers 204; the schedule is gone either way.
    assert await service.delete_schedule(jobs, created["id"]) == {"deleted": True}
    assert (await http.get(f"/v1/schedules/{created['id']}")).status_code == 404
    assert await service.delete_schedule_by_key(jobs, "daily") == {"deleted": True}
    assert (await http.get("/v1/schedules/by-key/daily")).status_code == 404
    # The schedules' runs are kept.
    runs = await service.list_runs(jobs, {"schedule_id": created["id"]})
    assert runs["items"] and all(r["schedule_id"] == created["id"] for r in runs["items"])


async def test_schedule_errors_start_with_their_code(jobs: Jobs, http: httpx.AsyncClient) -> None:
    schedule = await service.create_schedule(jobs, {"name": "email", "every": 60, "key": "k"})
    not_found = ("not_found", "schedule not found")
    for call in (
        service.get_schedule(jobs, "sch_missing"),
        service.get_schedule_by_key(jobs, "missing"),
        service.update_schedule(jobs, "sch_missing", {"payload": 1}),
        service.update_schedule_by_key(jobs, "missing", {"payload": 1}),
        service.disable_schedule(jobs, "sch_missing"),
        service.disable_schedule_by_key(jobs, "missing"),
        service.enable_schedule(jobs, "sch_missing"),
        service.enable_schedule_by_key(jobs, "missing"),
        service.delete_schedule(jobs, "sch_missing"),
        service.delete_schedule_by_key(jobs, "missing"),
    ):
        assert await rpc_error(call) == not_found
    # HTTP answers 404 for each of those.
    assert (await http.delete("/v1/schedules/sch_missing")).json()["error"]["code"] == "not_found"

    async def code(call: Any) -> str:
        return (await rpc_error(call))[0]

    assert await code(service.create_schedule(jobs, {"name": "nope", "every": 5})) == "unknown_job"
    assert await code(service.upsert_schedule(jobs, "new", {"name": "nope", "every": 5})) == (
        "unknown_job"
    )
    assert await code(service.update_schedule(jobs, schedule["id"], {"name": "nope"})) == (
        "unknown_job"
    )
    assert await code(service.create_schedule(jobs, {"name": "email", "every": 5, "key": "k"})) == (
        "conflict"
    )
    invalid = [
        service.create_schedule(jobs, {"every": 5}),  # no name
        service.create_schedule(jobs, {"name": "email"}),  # no timing
        service.create_schedule(jobs, {"name": "email", "cron": "* * *"}),
        service.create_schedule(jobs, {"name": "email", "every": 5, "cron": "* * * * *"}),
        service.create_schedule(jobs, {"name": "email", "every": 5, "timezone": "UTC"}),
        service.create_schedule(jobs, {"name": "email", "every": 5, "typo": 1}),
        service.create_schedule(jobs, "not an object"),
        service.upsert_schedule(jobs, "new", {"every": 5}),  # a new schedule needs a name
        service.upsert_schedule(jobs, "k", {"key": "other"}),  # the key is the argument
        service.upsert_schedule(jobs, "a/b", {"name": "email", "every": 5}),
        service.upsert_schedule(jobs, 7, {"name": "email", "every": 5}),
        service.update_schedule(jobs, schedule["id"], {"enabled": "yes"}),
        service.update_schedule(jobs, schedule["id"], None),
        service.update_schedule_by_key(jobs, "k", {"every": 0}),
        service.get_schedule(jobs, 42),
        service.get_schedule_by_key(jobs, ""),
        service.delete_schedule(jobs, None),
        service.list_schedules(jobs, {"enabled": "true"}),
        service.list_schedules(jobs, {"limit": "10"}),
        service.list_schedules(jobs, {"limit": 0}),
        service.list_schedules(jobs, {"page": 2}),
        service.list_schedules(jobs, ["enabled"]),
    ]
    for call in invalid:
        assert await code(call) == "validation_error"
    # Nothing above changed the schedule.
    assert await service.get_schedule(jobs, schedule["id"]) == schedule
