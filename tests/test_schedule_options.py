"""A schedule's `priority` and `concurrency_key` (API.md Part 2, "Schedules"), passed to each
occurrence, through Python and HTTP."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from kumofire_jobs import ConflictError, ValidationError
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.times import format_rfc3339, ms_to_datetime
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


async def test_enabling_a_schedule_past_its_limit_is_a_conflict_that_changes_nothing(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    schedule = await env.jobs.create_schedule("tick", every=10, limit=2, key="twice")
    for _ in range(10):
        await clock.advance(5)
    done = await env.jobs.get_schedule(schedule.id)
    assert done is not None and (done.enabled, done.count) == (False, 2)
    message = (
        f"schedule {schedule.id} cannot be enabled: it has had all 2 occurrences its limit "
        "allows (limit 2): raise its limit to enable it"
    )
    for call in (
        env.jobs.enable_schedule(schedule.id),
        env.jobs.enable_schedule_by_key("twice"),
        env.jobs.update_schedule(schedule.id, enabled=True),
        env.jobs.update_schedule_by_key("twice", enabled=True, payload={"x": 1}),
        env.jobs.upsert_schedule("twice", "tick", enabled=True),
    ):
        with pytest.raises(ConflictError) as raised:
            await call
        assert str(raised.value) == message
    assert await env.jobs.get_schedule(schedule.id) == done  # nothing written
    assert len(await occurrences(env, schedule.id)) == 2
    # Not asking to enable is no conflict: it stays disabled, as its limit says.
    upserted = await env.jobs.upsert_schedule("twice", "tick", payload={"y": 2})
    assert (upserted.enabled, upserted.payload) == (False, {"y": 2})
    # Raising the limit with the same call enables it.
    raised_limit = await env.jobs.update_schedule(schedule.id, limit=3, enabled=True)
    assert raised_limit is not None and raised_limit.enabled and raised_limit.next_run_at


async def test_enabling_a_schedule_past_its_end_at_is_a_conflict_that_changes_nothing(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    end = at(clock, 25)
    schedule = await env.jobs.create_schedule("tick", every=10, end_at=end)
    for _ in range(10):
        await clock.advance(5)
    done = await env.jobs.get_schedule(schedule.id)
    assert done is not None and (done.enabled, done.count) == (False, 2)
    with pytest.raises(ConflictError) as raised:
        await env.jobs.enable_schedule(schedule.id)
    assert str(raised.value) == (
        f"schedule {schedule.id} cannot be enabled: its next occurrence "
        f"({format_rfc3339(at(clock, 10))}) would come after its end_at "
        f"({format_rfc3339(end)}): move end_at later to enable it"
    )
    assert await env.jobs.get_schedule(schedule.id) == done
    later = await env.jobs.update_schedule(schedule.id, end_at=at(clock, 3600), enabled=True)
    assert later is not None and later.enabled and later.next_run_at == at(clock, 10)
    # An enabled schedule asked to stay enabled past a new end_at: refused, left as it was.
    with pytest.raises(ConflictError, match="would come after its end_at"):
        await env.jobs.update_schedule(schedule.id, end_at=at(clock, 1), enabled=True)
    assert await env.jobs.get_schedule(schedule.id) == later
    assert [s for s, _, _ in await occurrences(env, schedule.id)].count("scheduled") == 1
    # Without enabled, the same change disables it (the schedule has nothing left to run).
    ended = await env.jobs.update_schedule(schedule.id, end_at=at(clock, 1))
    assert ended is not None and (ended.enabled, ended.next_run_at) == (False, None)


async def test_http_enable_past_the_bounds_is_409_conflict(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    schedule = await env.jobs.create_schedule("tick", every=10, limit=1, key="once")
    for _ in range(5):
        await clock.advance(5)
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for method, path, body in (
            ("POST", f"/v1/schedules/{schedule.id}/enable", None),
            ("POST", "/v1/schedules/by-key/once/enable", None),
            ("PATCH", f"/v1/schedules/{schedule.id}", {"enabled": True}),
            ("PATCH", "/v1/schedules/by-key/once", {"enabled": True}),
            ("PUT", "/v1/schedules/by-key/once", {"name": "tick", "enabled": True}),
        ):
            response = await http.request(method, path, json=body)
            assert response.status_code == 409, (path, response.text)
            assert response.json() == {
                "error": {
                    "code": "conflict",
                    "message": f"schedule {schedule.id} cannot be enabled: it has had all 1 "
                    "occurrences its limit allows (limit 1): raise its limit to enable it",
                }
            }
        response = await http.patch(
            f"/v1/schedules/{schedule.id}", json={"limit": 2, "enabled": True}
        )
        assert response.status_code == 200 and response.json()["enabled"] is True


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
