"""`kumofire-jobs dev` names, at start, the jobs its data directory has work for that the app
has no handler for (a directory reused by another app), before its consumer fails their runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kumofire_jobs import JobContext, ManualClock, create_runtime
from kumofire_jobs.core.unhandled import UnhandledJob, unhandled_jobs, unhandled_warning
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.dev_server import DevServer


async def ok(ctx: JobContext) -> None:
    return None


async def test_the_jobs_without_a_handler_are_named_with_their_work(tmp_path: Path) -> None:
    runtime = create_runtime({"slow": ok, "hello": ok, "done": ok}, clock=ManualClock())
    async with LocalEnvironment(runtime, tmp_path) as env:
        assert await unhandled_jobs(env.JOBS_DB, set()) == []  # nothing stored yet
        await env.jobs.create("slow", delay=3600)
        await env.jobs.create("slow", delay=3600)
        await env.jobs.upsert_schedule("beat", "hello", every=3600)
        await env.jobs.disable_schedule_by_key("beat")
        await env.jobs.upsert_schedule("tick", "hello", every=60)
        finished = await env.jobs.create("done", delay=3600)
        await env.jobs.cancel(finished.kumofire_job_run_id)

        found = await unhandled_jobs(env.JOBS_DB, {"other"})
        # hello: the enabled schedule and its pending occurrence; the disabled one's is canceled
        assert found == [UnhandledJob("hello", 1, 1), UnhandledJob("slow", 2, 0)]
        assert await unhandled_jobs(env.JOBS_DB, {"slow", "hello"}) == []
        assert await unhandled_jobs(env.JOBS_DB, {"slow"}) == [UnhandledJob("hello", 1, 1)]

    warning = unhandled_warning(found, ".kumofire/")
    assert warning is not None
    assert warning.startswith("Warning: .kumofire/ has work for jobs this app has no handler for")
    assert "hello (1 unfinished run, 1 enabled schedule); slow (2 unfinished runs)" in warning
    assert "Their runs will fail" in warning and "--data-dir" in warning
    assert unhandled_warning([], ".kumofire/") is None


@pytest.mark.slow
def test_dev_warns_at_start_and_says_nothing_when_every_job_is_handled(tmp_path: Path) -> None:
    data = tmp_path / "data"
    demo = DevServer(data)  # the built-in demo, as the README's quick start
    try:
        created = demo.http.post("/v1/runs", json={"name": "hello", "delay": 3600})
        assert created.status_code == 202
    finally:
        assert demo.stop() == 0

    mine = DevServer(data, "--app", "tests.support.dev_app:runtime")
    try:
        line = mine.wait_for_line("Warning: ")
        assert "hello (1 unfinished run)" in line and "will fail" in line
        run = mine.http.get(f"/v1/runs/{created.json()['kumofire_job_run_id']}").json()
        assert run["status"] == "scheduled"  # named, not yet failed: it is due in an hour
    finally:
        assert mine.stop() == 0

    again = DevServer(data)  # the demo again: it handles hello
    try:
        again.wait_for_line("jobs (the built-in demo)")
        again.http.get("/v1/health")
    finally:
        assert again.stop() == 0
    assert "Warning" not in again.output
