"""Times stored before the years-1-to-9999 check existed (a schedule's `start_at` of
`0001-01-01T00:00:00+01:00`, year 0 in UTC, say) are read back clamped into that range: the
public reads answer them instead of failing (a 500 over HTTP) on every read of the row."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.times import MAX_TIME_MS, MIN_TIME_MS
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from tests.support.envs import EnvFactory, noop

YEAR_0 = MIN_TIME_MS - 3_600_000  # 0001-01-01T00:00:00+01:00, as the old check let it in
YEAR_10000 = MAX_TIME_MS + 86_400_000


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    return await make_env({"tick": noop})


@pytest.fixture
async def client(env: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_a_schedule_stored_with_year_0_bounds_is_read(
    env: LocalEnvironment, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    schedule = await env.jobs.create_schedule("tick", every=60, key="old")
    await (
        env.resources.db.prepare(
            "UPDATE kumofire_job_schedules SET start_at = ?, end_at = ? WHERE id = ?"
        )
        .bind(YEAR_0, YEAR_10000, schedule.id)
        .run()
    )
    listed = await client.get("/v1/schedules")
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert item["start_at"] == "0001-01-01T00:00:00.000Z"
    assert item["end_at"] == "9999-12-31T23:59:59.999Z"
    for path in (f"/v1/schedules/{schedule.id}", "/v1/schedules/by-key/old"):
        response = await client.get(path)
        assert response.status_code == 200, response.text
        assert response.json()["start_at"] == "0001-01-01T00:00:00.000Z"
    read = await env.jobs.get_schedule(schedule.id)
    assert read is not None and read.start_at is not None and read.start_at.year == 1
    # The schedule still runs and can be changed (a change keeps the stored bounds).
    await clock.advance(60.01)
    page = await env.jobs.list(schedule_id=schedule.id)
    assert [run.status.value for run in page.items] == ["scheduled", "succeeded"]
    changed = await client.patch(f"/v1/schedules/{schedule.id}", json={"priority": 3})
    assert changed.status_code == 200, changed.text
    assert changed.json()["priority"] == 3


async def test_a_run_stored_with_out_of_range_times_is_read(
    env: LocalEnvironment, client: httpx.AsyncClient
) -> None:
    created = await env.jobs.create("tick", delay=3600)
    run_id = created.kumofire_job_run_id
    await (
        env.resources.db.prepare(
            "UPDATE kumofire_job_runs SET scheduled_for = ?, created_at = ?, updated_at = ? "
            "WHERE id = ?"
        )
        .bind(YEAR_10000, YEAR_0, YEAR_0, run_id)
        .run()
    )
    for path in ("/v1/runs", "/v1/runs?status=scheduled", f"/v1/runs/{run_id}"):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
    run = (await client.get(f"/v1/runs/{run_id}")).json()
    assert run["scheduled_for"] == "9999-12-31T23:59:59.999Z"
    assert run["created_at"] == "0001-01-01T00:00:00.000Z"
    page = await env.jobs.list()
    assert [r.id for r in page.items] == [run_id]
    canceled = await client.post(f"/v1/runs/{run_id}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"


async def test_a_schedule_stored_starting_after_the_year_9999_can_be_changed(
    env: LocalEnvironment, client: httpx.AsyncClient
) -> None:
    schedule = await env.jobs.create_schedule("tick", cron="0 * * * *")
    await (
        env.resources.db.prepare("UPDATE kumofire_job_schedules SET start_at = ? WHERE id = ?")
        .bind(YEAR_10000, schedule.id)
        .run()
    )
    changed = await client.patch(f"/v1/schedules/{schedule.id}", json={"cron": "30 * * * *"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["start_at"] == "9999-12-31T23:59:59.999Z"
    assert changed.json()["next_run_at"] is None


async def test_a_schedule_with_no_occurrence_before_the_year_10000_is_created_disabled(
    env: LocalEnvironment, client: httpx.AsyncClient
) -> None:
    body = {"name": "tick", "cron": "0 0 * * *", "start_at": "9999-12-31T12:00:00Z"}
    created = await client.post("/v1/schedules", json=body)
    assert created.status_code == 201, created.text
    assert (created.json()["enabled"], created.json()["next_run_at"]) == (False, None)
    later = await env.jobs.create_schedule(
        "tick", every=100 * 365 * 86_400, start_at=datetime(9950, 1, 1, tzinfo=UTC)
    )
    assert later.enabled and later.next_run_at == datetime(9950, 1, 1, tzinfo=UTC)
