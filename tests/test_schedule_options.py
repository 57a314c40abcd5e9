"""A schedule's `priority` and `concurrency_key` (API.md Part 2, "Schedules"), passed to each
occurrence, through Python and HTTP."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from kumofire_jobs import ValidationError
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.times import ms_to_datetime
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from tests.support.envs import EnvFactory, noop


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    return await make_env({"tick": noop})


async def occurrences(env: LocalEnvironment, schedule_id: str) -> list[tuple[str, int, object]]:
    page = await env.jobs.list(schedule_id=schedule_id)
    return [(run.status.value, run.priority, run.concurrency_key) for run in page.items]


async def test_each_occurrence_gets_the_schedule_s_priority_and_key(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    schedule = await env.jobs.create_schedule(
        "tick", every=10, priority=20, concurrency_key="tenant"
    )
    assert (schedule.priority, schedule.concurrency_key) == (20, "tenant")
    assert await occurrences(env, schedule.id) == [("scheduled", 20, "tenant")]
    await clock.advance(10)
    await clock.advance(0.01)
    assert await occurrences(env, schedule.id) == [
        ("scheduled", 20, "tenant"),
        ("succeeded", 20, "tenant"),
    ]
    changed = await env.jobs.update_schedule(schedule.id, priority=-3, concurrency_key="other")
    assert changed is not None and (changed.priority, changed.concurrency_key) == (-3, "other")
    # the waiting occurrence takes the change on; the finished one keeps what it ran with
    assert await occurrences(env, schedule.id) == [
        ("scheduled", -3, "other"),
        ("succeeded", 20, "tenant"),
    ]
    plain = await env.jobs.upsert_schedule("k", "tick", every=60)
    assert (plain.priority, plain.concurrency_key) == (0, None)
    upserted = await env.jobs.upsert_schedule("k", "tick", priority=100)
    assert upserted.priority == 100
    assert await occurrences(env, upserted.id) == [("scheduled", 100, None)]


async def test_bad_schedule_options_are_refused(env: LocalEnvironment) -> None:
    with pytest.raises(ValidationError, match="priority must be between"):
        await env.jobs.create_schedule("tick", every=10, priority=101)
    with pytest.raises(ValidationError, match="concurrency_key must be a non-empty string"):
        await env.jobs.create_schedule("tick", every=10, concurrency_key="")
    schedule = await env.jobs.create_schedule("tick", every=10)
    with pytest.raises(ValidationError, match="priority must be an integer"):
        await env.jobs.update_schedule(schedule.id, priority="high")  # type: ignore[arg-type]


async def test_http_schedule_bodies_take_priority_and_key(env: LocalEnvironment) -> None:
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post(
            "/v1/schedules",
            json={"name": "tick", "every": 60, "priority": 7, "concurrency_key": "t"},
        )
        assert response.status_code == 201
        body = response.json()
        assert (body["priority"], body["concurrency_key"]) == (7, "t")
        response = await http.patch(f"/v1/schedules/{body['id']}", json={"priority": 8})
        assert response.status_code == 200 and response.json()["priority"] == 8
        response = await http.put("/v1/schedules/by-key/x", json={"name": "tick", "every": 5,
                                                                   "priority": -1})  # fmt: skip
        assert response.status_code == 201 and response.json()["priority"] == -1
        response = await http.post(
            "/v1/schedules", json={"name": "tick", "every": 60, "priority": 1000}
        )
        assert response.status_code == 422


def at(clock: ManualClock, seconds: float) -> datetime:
    return ms_to_datetime(int((clock.now() + seconds) * 1000))


async def test_a_schedule_with_a_limit_disables_itself_after_the_last(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    schedule = await env.jobs.create_schedule("tick", every=10, limit=3)
    assert (schedule.limit, schedule.count) == (3, 0)
    for _ in range(30):
        await clock.advance(5)
    runs = await occurrences(env, schedule.id)
    assert [status for status, _, _ in runs] == ["succeeded"] * 3
    done = await env.jobs.get_schedule(schedule.id)
    assert done is not None and (done.enabled, done.next_run_at, done.count) == (False, None, 3)
    await env.jobs.dispatch()  # reconciliation restores nothing
    assert len(await occurrences(env, schedule.id)) == 3
    raised = await env.jobs.update_schedule(schedule.id, limit=4, enabled=True)
    assert raised is not None and raised.enabled and raised.next_run_at is not None
    for _ in range(10):
        await clock.advance(5)
    assert len(await occurrences(env, schedule.id)) == 4


async def test_no_occurrence_before_start_at_nor_after_end_at(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    start, end = at(clock, 100), at(clock, 125)
    schedule = await env.jobs.create_schedule("tick", every=10, start_at=start, end_at=end)
    assert (schedule.start_at, schedule.end_at, schedule.next_run_at) == (start, end, start)
    for _ in range(60):
        await clock.advance(5)
    page = await env.jobs.list(schedule_id=schedule.id)
    due = sorted(run.scheduled_for for run in page.items)
    assert due == [start, at(clock, 110 - 300), at(clock, 120 - 300)]
    done = await env.jobs.get_schedule(schedule.id)
    assert done is not None and not done.enabled and done.count == 3
    cron = await env.jobs.create_schedule("tick", cron="0 * * * *", start_at=at(clock, 7200))
    assert cron.next_run_at is not None and cron.next_run_at >= at(clock, 7200)
    past = await env.jobs.create_schedule("tick", every=10, end_at=at(clock, -1))
    assert (past.enabled, past.next_run_at) == (False, None)


async def test_bad_bounds_are_refused(env: LocalEnvironment, clock: ManualClock) -> None:
    with pytest.raises(ValidationError, match="end_at must be after start_at"):
        await env.jobs.create_schedule(
            "tick", every=10, start_at=at(clock, 10), end_at=at(clock, 10)
        )
    with pytest.raises(ValidationError, match="limit must be between"):
        await env.jobs.create_schedule("tick", every=10, limit=0)
    with pytest.raises(ValidationError, match="start_at must be a timezone-aware datetime"):
        await env.jobs.create_schedule("tick", every=10, start_at="soon")  # type: ignore[arg-type]


async def test_http_schedule_bounds(env: LocalEnvironment, clock: ManualClock) -> None:
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post(
            "/v1/schedules",
            json={"name": "tick", "every": 60, "limit": 2, "start_at": "2030-01-01T00:00:00Z",
                  "end_at": "2030-01-02T00:00:00+09:00"},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["limit"], body["count"]) == (2, 0)
        assert body["start_at"] == "2030-01-01T00:00:00.000Z" == body["next_run_at"]
        assert body["end_at"] == "2030-01-01T15:00:00.000Z"
        for bad in ({"start_at": "tomorrow"}, {"end_at": 5}, {"limit": 0}):
            response = await http.patch(f"/v1/schedules/{body['id']}", json=bad)
            assert response.status_code == 422, bad


async def test_times_outside_the_years_1_to_9999_are_refused_and_early_years_have_four_digits(
    env: LocalEnvironment,
) -> None:
    """`0001-01-01T00:00:00+14:00` is in the year 0 in UTC: it was stored, then every read of
    the schedules failed with a 500. And a year before 1000 printed with fewer than four
    digits, which is no RFC 3339 (our own clients could not read it back)."""
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for field, value in (
            ("start_at", "0001-01-01T00:00:00+14:00"),
            ("end_at", "9999-12-31T23:59:59-14:00"),
        ):
            response = await http.post(
                "/v1/schedules", json={"name": "tick", "every": 60, field: value}
            )
            assert response.status_code == 422, response.text
            assert response.json()["error"]["message"] == (
                f"{field}: must be, in UTC, after the year 0 and before the year 10000"
            )
        response = await http.post(
            "/v1/schedules",
            json={"name": "tick", "every": 60, "start_at": "0287-08-04T16:01:07.164-07:01"},
        )
        assert response.status_code == 201, response.text
        assert response.json()["start_at"] == "0287-08-04T23:02:07.164Z"
        listed = await http.get("/v1/schedules")
        assert listed.status_code == 200
        assert [s["start_at"] for s in listed.json()["items"]] == ["0287-08-04T23:02:07.164Z"]
