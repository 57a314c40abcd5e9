"""Jobs as a whole (API.md Part 2): list_jobs, get_job, pause_job, resume_job, through Python
and HTTP on the embedded bindings and the manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kumofire_jobs import JobContext, JobInfo, JobOptions, create_runtime
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from tests.support.envs import EnvFactory, noop
from tests.support.faults import FailingNamespace, rewire


class Order:
    def __init__(self) -> None:
        self.seen: list[object] = []

    async def __call__(self, ctx: JobContext) -> None:
        self.seen.append(ctx.job.payload)


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    return await make_env(
        {"a": Order(), "b": noop}, job_options={"a": JobOptions(timeout=5, concurrency=2)}
    )


@pytest.fixture
async def client(env: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_list_and_get_jobs(env: LocalEnvironment, clock: ManualClock) -> None:
    await env.jobs.create("a", delay=60)
    await env.jobs.create("b")
    await clock.advance(0)
    jobs = await env.jobs.list_jobs()
    assert [job.name for job in jobs] == ["a", "b"]
    a, b = jobs
    assert a.paused is False and a.options["timeout"] == 5 and a.options["concurrency"] == 2
    assert a.options["retry"] is None and a.options["rate_limit"] is None
    assert a.counts["scheduled"] == 1 and a.counts["succeeded"] == 0
    assert b.counts["succeeded"] == 1 and set(b.counts) == set(a.counts)
    assert all(value is None for value in b.options.values())
    assert await env.jobs.get_job("a") == a
    assert await env.jobs.get_job("nope") is None
    assert await env.jobs.pause_job("nope") is None
    assert await env.jobs.resume_job("nope") is None


async def test_a_paused_job_starts_nothing_until_resumed_then_by_priority(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    paused = await env.jobs.pause_job("a")
    assert paused is not None and paused.paused
    low = await env.jobs.create("a", "low", priority=-5)
    high = await env.jobs.create("a", "high", priority=50)
    mid = await env.jobs.create("a", "mid")
    other = await env.jobs.create("b")
    await clock.advance(600)  # the cron's reconciliation runs meanwhile, and changes nothing
    for created in (low, high, mid):
        run = await env.jobs.get(created.kumofire_job_run_id)
        assert run is not None and run.status == "queued" and run.attempt == 0
    run = await env.jobs.get(other.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded"
    resumed = await env.jobs.resume_job("a")
    assert resumed is not None and not resumed.paused
    await clock.advance(0)
    handler = env.runtime.handlers["a"]
    assert isinstance(handler, Order)
    # `a` has concurrency 2: high and mid get the two slots at once (which handler is
    # called first is up to their two consumers), low waits for one of them.
    assert set(handler.seen[:2]) == {"high", "mid"} and handler.seen[2:] == ["low"]


async def test_a_running_run_goes_on_when_its_job_is_paused(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def slow(ctx: JobContext) -> None:
        await clock.sleep_until(clock.now() + 10)

    env = await make_env({"slow": slow})
    created = await env.jobs.create("slow")
    await clock.advance(1)
    await env.jobs.pause_job("slow")
    await clock.advance(10)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and run.status == "succeeded"


async def test_a_paused_job_s_schedule_keeps_one_pending_occurrence(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    await env.jobs.pause_job("b")
    schedule = await env.jobs.create_schedule("b", every=10)
    await clock.advance(300)
    runs = (await env.jobs.list(schedule_id=schedule.id)).items
    assert [run.status for run in runs] == ["queued"]
    await env.jobs.resume_job("b")
    await clock.advance(0)
    await clock.advance(0.01)
    runs = (await env.jobs.list(schedule_id=schedule.id)).items
    assert sorted(run.status for run in runs) == ["scheduled", "succeeded"]


async def test_restarting_a_paused_job_s_schedule_keeps_one_pending_occurrence(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    # Its delivered occurrence waits for the resume; each change of timing meanwhile must not
    # add another occurrence beside it (they would all run at the resume).
    await env.jobs.pause_job("b")
    schedule = await env.jobs.create_schedule("b", every=10)
    await clock.advance(30)
    for every in (20, 30, 40):
        await env.jobs.update_schedule(schedule.id, every=every)
        await clock.advance(300)
    runs = (await env.jobs.list(schedule_id=schedule.id)).items
    assert [run.status for run in runs if run.status != "canceled"] == ["queued"]
    await env.jobs.resume_job("b")
    await clock.advance(0)
    await clock.advance(0.01)
    runs = (await env.jobs.list(schedule_id=schedule.id)).items
    assert sorted(run.status for run in runs if run.status != "canceled") == [
        "scheduled",
        "succeeded",
    ]
    current = await env.jobs.get_schedule(schedule.id)
    assert current is not None and current.count == 1 and current.next_run_at is not None


async def test_disabling_a_paused_job_s_schedule_cancels_its_waiting_occurrence(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    # Disabling cancels the pending occurrence (API.md), the one delivered and waiting for the
    # resume too: else each disable and enable while paused left one more to run at the resume.
    await env.jobs.pause_job("b")
    schedule = await env.jobs.create_schedule("b", every=10)
    await clock.advance(30)
    for _ in range(3):
        await env.jobs.update_schedule(schedule.id, enabled=False)
        await env.jobs.update_schedule(schedule.id, enabled=True)
        await clock.advance(300)
    runs = (await env.jobs.list(schedule_id=schedule.id)).items
    assert [run.status for run in runs if run.status != "canceled"] == ["queued"]
    current = await env.jobs.get_schedule(schedule.id)
    assert current is not None and current.count == 0  # none of the canceled ones ran
    await env.jobs.resume_job("b")
    await clock.advance(0)
    await clock.advance(0.01)
    runs = (await env.jobs.list(schedule_id=schedule.id)).items
    assert sorted(run.status for run in runs if run.status != "canceled") == [
        "scheduled",
        "succeeded",
    ]


async def test_a_paused_job_s_waiting_occurrence_takes_a_payload_change(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    # A payload change carries over to the pending occurrence (API.md), the one delivered and
    # waiting for the resume too: it must not run at the resume with the old payload.
    await env.jobs.pause_job("a")
    schedule = await env.jobs.create_schedule("a", "old", every=10)
    await clock.advance(30)
    await env.jobs.update_schedule(schedule.id, payload="new", max_attempts=7, priority=9)
    (waiting,) = (await env.jobs.list(schedule_id=schedule.id)).items
    assert waiting.status == "queued" and waiting.payload == "new"
    assert waiting.max_attempts == 7 and waiting.priority == 9
    await env.jobs.resume_job("a")
    await clock.advance(0)
    await clock.advance(0.01)
    handler = env.runtime.handlers["a"]
    assert isinstance(handler, Order) and handler.seen == ["new"]


async def test_a_paused_job_s_waiting_occurrence_takes_a_payload_given_with_new_timing(
    env: LocalEnvironment, clock: ManualClock
) -> None:
    await env.jobs.pause_job("a")
    schedule = await env.jobs.create_schedule("a", "old", every=10)
    await clock.advance(30)
    await env.jobs.update_schedule(schedule.id, payload="new", every=20)
    runs = (await env.jobs.list(schedule_id=schedule.id)).items
    assert [(run.status, run.payload) for run in runs] == [("queued", "new")]


async def test_pausing_survives_a_restart(clock: ManualClock, tmp_path: Path) -> None:
    def environment() -> LocalEnvironment:
        runtime = create_runtime({"a": noop}, clock=clock)
        return LocalEnvironment(runtime, tmp_path / "data")

    first = environment()
    await first.start()
    await first.jobs.pause_job("a")
    created = await first.jobs.create("a")
    await clock.advance(1)
    await first.stop(drain_seconds=0)
    second = environment()
    await second.start()
    try:
        job = await second.jobs.get_job("a")
        assert job is not None and job.paused
        await clock.advance(120)
        run = await second.jobs.get(created.kumofire_job_run_id)
        assert run is not None and run.status == "queued"
        await second.jobs.resume_job("a")
        await clock.advance(0)
        run = await second.jobs.get(created.kumofire_job_run_id)
        assert run is not None and run.status == "succeeded"
    finally:
        await second.stop(drain_seconds=0)


async def test_http_jobs_routes(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/jobs")
    assert response.status_code == 200
    assert [job["name"] for job in response.json()["items"]] == ["a", "b"]
    response = await client.get("/v1/jobs/a")
    body = response.json()
    assert response.status_code == 200 and set(body) == {"name", "paused", "options", "counts"}
    assert body["options"]["timeout"] == 5 and body["paused"] is False
    response = await client.post("/v1/jobs/a/pause")
    assert response.status_code == 200 and response.json()["paused"] is True
    assert (await client.get("/v1/jobs/a")).json()["paused"] is True
    response = await client.post("/v1/jobs/a/resume")
    assert response.status_code == 200 and response.json()["paused"] is False
    for method, path in (("GET", "/v1/jobs/nope"), ("POST", "/v1/jobs/nope/pause"),
                         ("POST", "/v1/jobs/nope/resume")):  # fmt: skip
        response = await client.request(method, path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert JobInfo(name="a", paused=False, options={}, counts={}).name == "a"


async def test_a_refused_start_whose_release_is_lost_is_refused_again_then_runs_at_resume(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    # The crash point between a start the pause refused and its release: the lease expires,
    # the alarm delivers, the start is refused again; no attempt is used.
    env = await make_env({"b": noop}, lease_seconds=30)
    partition = FailingNamespace(env.JOB_COORDINATOR, "release", times=1)
    rewire(env, coordinator=partition)
    await env.jobs.pause_job("b")
    run_id = (await env.jobs.create("b")).kumofire_job_run_id
    await clock.advance(0)
    assert partition.calls["release"] == 1
    stub = env.JOB_COORDINATOR.getByName(run_id)
    assert (await stub.status())["lease_live"]
    await clock.advance(30)  # the lease expires: delivered, refused, released (closed now)
    assert partition.calls["release"] == 2
    assert (await stub.status())["phase"] == "closed"
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "queued" and run.attempt == 0
    await env.jobs.resume_job("b")
    await clock.advance(0)
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_a_resume_whose_re_arms_are_lost_is_repaired_by_reconciliation(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    # The crash point between resume's flag write and its page's re-arms: the runs are
    # overdue, their actors closed; the first cron tick after the grace re-arms them.
    env = await make_env({"b": noop})
    await env.jobs.pause_job("b")
    ids = [(await env.jobs.create("b")).kumofire_job_run_id for _ in range(3)]
    await clock.advance(0)  # each delivered, refused, its actor closed
    partition = FailingNamespace(env.JOB_COORDINATOR, "arm")
    rewire(env, coordinator=partition)
    with pytest.raises(Exception, match="injected failure of arm"):
        await env.jobs.resume_job("b")
    job = await env.jobs.get_job("b")
    assert job is not None and not job.paused
    partition.methods.clear()
    await clock.advance(59)
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "queued"
    await clock.advance(62)  # a tick at least the grace (60 s) after the runs' due time
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1
