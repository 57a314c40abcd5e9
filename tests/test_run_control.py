"""Controlling runs (API.md Part 2): promote, delete, and the bulk cancel_many, retry_many,
delete_many, through Python and HTTP on the embedded bindings and the manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from kumofire_jobs import (
    BulkResult,
    ConflictError,
    JobContext,
    NonRetryableError,
    RunStatus,
    ValidationError,
)
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.times import ms_to_datetime
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from tests.support.envs import EnvFactory, noop
from tests.support.faults import FailingNamespace, rewire


async def fail(ctx: JobContext) -> None:
    raise NonRetryableError("no")


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    return await make_env({"a": noop, "b": noop, "fail": fail})


@pytest.fixture
async def client(env: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def status_of(env: LocalEnvironment, run_id: str) -> str | None:
    run = await env.jobs.get(run_id)
    return None if run is None else run.status.value


async def test_promote_makes_a_scheduled_run_due_now(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    created = await env.jobs.create("a", delay=3600)
    run_id = created.kumofire_job_run_id
    promoted = await env.jobs.promote(run_id)
    assert promoted is not None and promoted.status == "scheduled"
    assert promoted.scheduled_for == ms_to_datetime(int(clock.now() * 1000))
    await clock.advance(0)
    assert await status_of(env, run_id) == "succeeded"
    with pytest.raises(ConflictError, match="only a scheduled run can be promoted"):
        await env.jobs.promote(run_id)
    assert await env.jobs.promote("run_missing") is None


async def test_a_promote_whose_arm_is_lost_starts_the_run_at_its_old_time_or_again_promoted(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    # The crash point between promote's D1 write and its re-arm: the actor's alarm stays at
    # the old due time, where the run starts as it would have; promoting again repairs it.
    late = (await env.jobs.create("a", delay=600)).kumofire_job_run_id
    again = (await env.jobs.create("a", delay=600)).kumofire_job_run_id
    partition = FailingNamespace(env.JOB_COORDINATOR, "arm", times=2)
    rewire(env, coordinator=partition)
    for run_id in (late, again):
        with pytest.raises(Exception, match="injected failure of arm"):
            await env.jobs.promote(run_id)
    await clock.advance(300)  # reconciliation's ticks find each actor armed: nothing to do
    assert await status_of(env, late) == "scheduled"
    assert await status_of(env, again) == "scheduled"
    await env.jobs.promote(again)
    await clock.advance(0)
    assert await status_of(env, again) == "succeeded"
    await clock.advance(299)
    assert await status_of(env, late) == "scheduled"
    await clock.advance(1)
    assert await status_of(env, late) == "succeeded"


async def test_delete_removes_only_a_finished_run(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    waiting = await env.jobs.create("a", delay=60)
    with pytest.raises(ConflictError, match="only a finished run can be deleted"):
        await env.jobs.delete(waiting.kumofire_job_run_id)
    done = await env.jobs.create("a")
    await clock.advance(0)
    assert await env.jobs.delete(done.kumofire_job_run_id) is True
    assert await env.jobs.get(done.kumofire_job_run_id) is None
    assert await env.jobs.delete(done.kumofire_job_run_id) is False
    assert await status_of(env, waiting.kumofire_job_run_id) == "scheduled"


async def test_cancel_many_changes_at_most_limit_and_says_whether_more_match(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    a_runs = [(await env.jobs.create("a", delay=60)).kumofire_job_run_id for _ in range(5)]
    b_run = (await env.jobs.create("b", delay=60)).kumofire_job_run_id
    assert await env.jobs.cancel_many(name="a", limit=3) == BulkResult(count=3, has_more=True)
    assert [await status_of(env, r) for r in a_runs] == ["canceled"] * 3 + ["scheduled"] * 2
    assert await env.jobs.cancel_many(name="a", limit=2) == BulkResult(count=2, has_more=False)
    assert await env.jobs.cancel_many(name="a") == BulkResult(count=0, has_more=False)
    assert await status_of(env, b_run) == "scheduled"
    await clock.advance(120)
    assert await status_of(env, a_runs[0]) == "canceled"  # its coordinator was told
    assert await status_of(env, b_run) == "succeeded"


async def test_retry_many_and_delete_many_match_only_the_statuses_they_apply_to(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    failed = [(await env.jobs.create("fail", max_attempts=1)).kumofire_job_run_id for _ in range(3)]
    ok = (await env.jobs.create("a")).kumofire_job_run_id
    await clock.advance(0)
    assert await env.jobs.retry_many(status="running") == BulkResult(count=0, has_more=False)
    assert await env.jobs.retry_many(status=RunStatus.FAILED) == BulkResult(count=3, has_more=False)
    run = await env.jobs.get(failed[0])
    assert run is not None and run.status in ("scheduled", "queued") and run.max_attempts == 2
    await clock.advance(0)
    assert [await status_of(env, r) for r in failed] == ["failed"] * 3
    # delete_many: only finished runs, created before the bound
    later = await env.jobs.create("a", delay=10)
    bound = ms_to_datetime(int(clock.now() * 1000)) + timedelta(milliseconds=1)
    assert await env.jobs.delete_many(created_before=bound) == BulkResult(count=4, has_more=False)
    assert [await env.jobs.get(r) for r in (*failed, ok)] == [None] * 4
    assert await status_of(env, later.kumofire_job_run_id) == "scheduled"


async def test_created_before_1970_matches_no_run(
    env: LocalEnvironment, clock: ManualClock, client: httpx.AsyncClient
) -> None:
    """A time before the epoch is below every run id (it once wrapped round to above them
    all, and cancelled or deleted every run)."""
    waiting = (await env.jobs.create("a", delay=60)).kumofire_job_run_id
    done = (await env.jobs.create("a")).kumofire_job_run_id
    await clock.advance(0)
    for before in ("1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z"):
        for action in ("cancel", "delete"):
            answer = await client.post(f"/v1/runs:{action}", json={"created_before": before})
            assert answer.json() == {"count": 0, "has_more": False}, (action, before)
    assert await status_of(env, waiting) == "scheduled"
    assert await status_of(env, done) == "succeeded"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "give at least one of status, name, schedule_id, created_before"),
        ({"limit": 5}, "give at least one"),
        ({"name": "a", "limit": 0}, "limit must be between 1 and 1000"),
        ({"name": "a", "limit": 1001}, "limit must be between 1 and 1000"),
        ({"name": "a", "limit": True}, "limit must be an integer"),
        ({"status": "nope"}, "status must be one of"),
        ({"name": ""}, "name must be a non-empty string"),
        ({"created_before": "2030-01-01"}, "created_before must be a timezone-aware datetime"),
    ],
)
async def test_a_bad_filter_is_refused(
    env: LocalEnvironment, fields: dict[str, Any], message: str
) -> None:
    for operation in (env.jobs.cancel_many, env.jobs.retry_many, env.jobs.delete_many):
        with pytest.raises(ValidationError, match=message):
            await operation(**fields)


async def test_a_failure_mid_bulk_leaves_each_run_changed_or_not(
    env: LocalEnvironment, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = [(await env.jobs.create("a", delay=60)).kumofire_job_run_id for _ in range(4)]
    store = env.jobs.runs.store
    real_cancel = store.cancel
    calls = 0

    async def cancel_failing_once(run_id: str, now: int) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("D1 went away")
        return await real_cancel(run_id, now)

    monkeypatch.setattr(store, "cancel", cancel_failing_once)
    with pytest.raises(RuntimeError, match="D1 went away"):
        await env.jobs.cancel_many(name="a")
    statuses = [await status_of(env, r) for r in runs]
    assert statuses.count("scheduled") >= 1 and set(statuses) <= {"scheduled", "canceled"}
    result = await env.jobs.cancel_many(name="a")  # calling again goes on
    assert result == BulkResult(count=statuses.count("scheduled"), has_more=False)
    await clock.advance(120)
    assert [await status_of(env, r) for r in runs] == ["canceled"] * 4


async def test_http_control_routes_and_their_errors(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    created = await client.post("/v1/runs", json={"name": "a", "delay": 60})
    run_id = created.json()["kumofire_job_run_id"]
    response = await client.post(f"/v1/runs/{run_id}/promote")
    assert response.status_code == 200 and response.json()["id"] == run_id
    response = await client.delete(f"/v1/runs/{run_id}")
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"
    await clock.advance(0)
    response = await client.post(f"/v1/runs/{run_id}/promote")
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"
    response = await client.delete(f"/v1/runs/{run_id}")
    assert response.status_code == 204 and response.content == b""
    for method, path in (("DELETE", f"/v1/runs/{run_id}"), ("POST", "/v1/runs/run_x/promote")):
        response = await client.request(method, path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    await client.post("/v1/runs", json={"name": "b", "delay": 60})
    await client.post("/v1/runs", json={"name": "b", "delay": 60})
    response = await client.post("/v1/runs:cancel", json={"name": "b", "limit": 1})
    assert response.status_code == 200 and response.json() == {"count": 1, "has_more": True}
    response = await client.post("/v1/runs:retry", json={"status": "canceled"})
    assert response.json() == {"count": 1, "has_more": False}
    response = await client.post(
        "/v1/runs:delete", json={"created_before": "2100-01-01T00:00:00Z", "name": "b"}
    )
    assert response.json() == {"count": 0, "has_more": False}
    bad: list[dict[str, Any]] = [
        {}, {"limit": 10}, {"name": "b", "limit": 0}, {"status": "nope"},
        {"created_before": "yesterday"}, {"created_before": 5}, {"surprise": 1},
    ]  # fmt: skip
    for body in bad:
        for path in ("/v1/runs:cancel", "/v1/runs:retry", "/v1/runs:delete"):
            response = await client.post(path, json=body)
            assert response.status_code == 422, (path, body, response.text)
            assert response.json()["error"]["code"] == "validation_error"
    response = await client.post("/v1/runs:cancel", content=b"{nope")
    assert response.status_code == 400
