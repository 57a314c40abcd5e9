"""The testing kit (`kumofire_jobs.testing`) through its public interface: `JobsHarness`
(drain, advance, run_until_idle, the run helpers, the bounds, virtual sleep) and the pytest
plugin's `jobs_harness` fixture, run by pytest itself (`pytester`) on a user's test file."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kumofire_jobs import JobContext, JobOptions, RetryPolicy
from kumofire_jobs.testing import JobsHarness, RunawayError

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "testing" / "test_example.py"


class Calls:
    """A handler that records each attempt and fails the first `fail` attempts of a run."""

    def __init__(self, fail: int = 0) -> None:
        self.attempts: list[tuple[str, int]] = []
        self.fail = fail

    async def __call__(self, ctx: JobContext) -> None:
        self.attempts.append((ctx.job.id, ctx.job.attempt))
        if ctx.job.attempt <= self.fail:
            raise RuntimeError(f"attempt {ctx.job.attempt} failed")


async def test_create_then_drain_runs_it() -> None:
    email = Calls()
    async with JobsHarness({"email": email}) as h:
        created = await h.jobs.create("email", {"to": "a@example.com"})
        await h.drain()
        run = await h.run(created.kumofire_job_run_id)
        assert run.status == "succeeded"
        assert run.payload == {"to": "a@example.com"}
        assert email.attempts == [(run.id, 1)]
        assert run.finished_at == h.now()  # drain moved no time
        assert [r.id for r in await h.runs("email", "succeeded")] == [run.id]


async def test_drain_does_not_wait_for_a_delay_advance_does() -> None:
    job = Calls()
    async with JobsHarness({"job": job}) as h:
        start = h.now()
        created = await h.jobs.create("job", delay=30)
        await h.drain()
        assert (await h.run(created.kumofire_job_run_id)).status == "scheduled"
        await h.advance(29.999)
        assert job.attempts == []
        await h.advance(0.001)
        run = await h.run(created.kumofire_job_run_id)
        assert run.status == "succeeded"
        assert run.started_at == start + timedelta(seconds=30)


async def test_retry_backoff_is_reached_by_advancing() -> None:
    flaky = Calls(fail=2)
    async with JobsHarness({"flaky": flaky}, retry=RetryPolicy(base_delay=5)) as h:
        created = await h.jobs.create("flaky")
        await h.drain()
        run = await h.run(created.kumofire_job_run_id)
        assert (run.status, run.attempt) == ("scheduled", 1)
        assert run.scheduled_for == h.now() + timedelta(seconds=5)
        await h.advance(4.999)
        assert len(flaky.attempts) == 1
        await h.advance(0.001)  # attempt 2 fails: the next waits 10 s
        assert len(flaky.attempts) == 2
        await h.advance(10)
        run = await h.run(created.kumofire_job_run_id)
        assert (run.status, run.attempt) == ("succeeded", 3)


async def test_run_until_idle_runs_retries_to_their_end_and_stops_there() -> None:
    flaky = Calls(fail=2)
    async with JobsHarness({"flaky": flaky}, retry=RetryPolicy(base_delay=5)) as h:
        start = h.clock.now()
        created = await h.jobs.create("flaky")
        await h.run_until_idle()
        run = await h.run(created.kumofire_job_run_id)
        assert (run.status, run.attempt) == ("succeeded", 3)
        assert h.clock.now() - start == 15.0  # 5 s then 10 s of backoff; not a second more
        assert await h.runs(status="failed") == []


async def test_a_schedules_occurrences_come_with_advance() -> None:
    tick = Calls()
    async with JobsHarness({"tick": tick}) as h:
        schedule = await h.jobs.create_schedule("tick", every=60)
        start = h.now()
        await h.advance(180)
        done = await h.runs("tick", "succeeded", schedule_id=schedule.id)
        assert [r.scheduled_for for r in done] == [
            start + timedelta(seconds=s) for s in (60, 120, 180)
        ]
        await h.advance(1)  # the next occurrence is made 5 ms after the last one went out
        (pending,) = await h.runs(status="scheduled")
        assert pending.scheduled_for == start + timedelta(seconds=240)
        # run_until_idle does not wait for a schedule's next occurrence (it never ends)
        await h.run_until_idle()
        assert h.now() == start + timedelta(seconds=181)


async def test_a_handler_that_recreates_itself_ends_in_runaway_error() -> None:
    attempts = 0

    async def again(ctx: JobContext) -> None:
        nonlocal attempts
        attempts += 1
        await h.jobs.create("again")

    async with JobsHarness({"again": again}) as h:
        await h.jobs.create("again")
        with pytest.raises(RunawayError, match=r"more than 20 handler attempts .*max_steps"):
            await h.drain(max_steps=20)
        assert attempts == 20
        # the 21st attempt is held (its run stays `running`, until the harness closes), which
        # stops the chain: nothing more runs
        (held,) = await h.runs(status="running")
        await h.drain(max_steps=5)
        assert attempts == 20
        assert [r.id for r in await h.runs(status="running")] == [held.id]


def test_a_handler_that_is_not_async_is_refused() -> None:
    plain: dict[str, Any] = {"job": lambda ctx: None}
    with pytest.raises(TypeError, match="not async"):
        JobsHarness(plain)


async def test_run_until_idle_is_bounded_in_clock_time_and_in_steps() -> None:
    async def later(ctx: JobContext) -> None:
        await h.jobs.create("later", delay=60)

    async with JobsHarness({"later": later}) as h:
        start = h.clock.now()
        await h.jobs.create("later")
        with pytest.raises(RunawayError, match=r"1 run\(s\) run_\w+ \(later, scheduled\).*600 s"):
            await h.run_until_idle(max_time=600)
        assert h.clock.now() - start == 600.0  # ten attempts, one a minute
        assert len(await h.runs(status="succeeded")) == 11
        with pytest.raises(RunawayError, match="more than 3 handler attempts"):
            await h.run_until_idle(max_steps=3)


async def test_virtual_sleep_moves_the_clock_instead_of_waiting() -> None:
    seen: list[float] = []

    async def slow(ctx: JobContext) -> str:
        seen.append(h.clock.now())
        await asyncio.sleep(3600)
        seen.append(h.clock.now())
        return "done"

    async with JobsHarness({"slow": slow}, virtual_sleep=True) as h:
        start = h.clock.now()
        created = await h.jobs.create("slow")
        await h.drain()
        run = await h.run(created.kumofire_job_run_id)
        assert run.status == "succeeded"
        assert seen == [start, start + 3600]
        assert h.clock.now() == start + 3600
        assert run.finished_at is not None and run.started_at is not None
        assert run.finished_at - run.started_at == timedelta(hours=1)


async def test_virtual_sleep_counts_for_the_jobs_timeout() -> None:
    async def slow(ctx: JobContext) -> None:
        await asyncio.sleep(3600)

    options = {"slow": JobOptions(timeout=60, retry=RetryPolicy(max_attempts=1))}
    async with JobsHarness({"slow": slow}, options, virtual_sleep=True) as h:
        start = h.clock.now()
        created = await h.jobs.create("slow")
        await h.drain()
        run = await h.run(created.kumofire_job_run_id)
        assert run.status == "failed"
        assert run.last_error is not None and run.last_error.startswith("TimeoutError")
        assert h.clock.now() == start + 60  # the sleep was cut off at the timeout


async def test_virtual_sleep_is_only_inside_handlers_and_only_while_open() -> None:
    real_sleep = asyncio.sleep
    in_child: list[float] = []

    async def parent(ctx: JobContext) -> None:
        async def child() -> None:  # a task the handler starts sleeps virtually too
            await asyncio.sleep(90)
            in_child.append(h.clock.now())

        await asyncio.gather(child(), asyncio.sleep(0))

    async with JobsHarness({"parent": parent}, virtual_sleep=True) as h:
        assert asyncio.sleep is not real_sleep
        start = h.clock.now()
        await asyncio.sleep(0.001)  # the test's own sleep is the event loop's
        assert h.clock.now() == start
        await h.jobs.create("parent")
        await h.drain()
        assert in_child == [start + 90]
    assert asyncio.sleep is real_sleep


async def test_without_virtual_sleep_drain_waits_for_real_work() -> None:
    async def real(ctx: JobContext) -> None:
        await asyncio.sleep(0.02)  # stands for real I/O

    async with JobsHarness({"real": real}) as h:
        start = h.now()
        created = await h.jobs.create("real")
        await h.drain()
        run = await h.run(created.kumofire_job_run_id)
        assert run.status == "succeeded"
        assert run.finished_at == start  # real time passed, the clock's did not


async def test_advance_waits_for_real_work_before_moving_on() -> None:
    async def real(ctx: JobContext) -> None:
        await asyncio.sleep(0.02)  # real I/O: the clock holds still meanwhile

    async with JobsHarness({"real": real}) as h:
        start = h.now()
        created = await h.jobs.create("real", delay=5)
        await h.advance(60)
        run = await h.run(created.kumofire_job_run_id)
        assert run.status == "succeeded"
        assert run.finished_at == start + timedelta(seconds=5)


async def test_canceling_a_virtually_sleeping_run_ends_it_on_the_clock() -> None:
    async def slow(ctx: JobContext) -> None:
        await asyncio.sleep(3600)

    async with JobsHarness({"slow": slow}, virtual_sleep=True) as h:
        start = h.clock.now()
        created = await h.jobs.create("slow")
        await h.advance(0)  # started, and asleep: advance does not wait for the hour
        assert (await h.run(created.kumofire_job_run_id)).status == "running"
        await h.jobs.cancel(created.kumofire_job_run_id)
        await h.drain()  # the handler learns of it at its next lease renewal and stops
        assert (await h.run(created.kumofire_job_run_id)).status == "canceled"
        assert h.clock.now() - start <= 30  # within one lease (30 s), not the hour


async def test_drain_gives_up_on_a_handler_that_never_returns() -> None:
    async def stuck(ctx: JobContext) -> None:
        await asyncio.Event().wait()

    async with JobsHarness({"stuck": stuck}, timeout=0.05) as h:
        await h.jobs.create("stuck")
        with pytest.raises(TimeoutError, match=r"still runs after 0\.05 s of real time"):
            await h.drain()


async def test_runs_reads_every_page_oldest_first_and_the_directory_goes() -> None:
    async with JobsHarness({"a": Calls(), "b": Calls()}) as h:
        created = [(await h.jobs.create("a", {"n": n})).kumofire_job_run_id for n in range(210)]
        other = await h.jobs.create("b")
        await h.drain()
        assert [r.id for r in await h.runs("a")] == created  # more than one page of 200
        assert [r.id for r in await h.runs(status="succeeded")] == [
            *created,
            other.kumofire_job_run_id,
        ]
        with pytest.raises(LookupError):
            await h.run("run_nope")
        data_dir = h.data_dir
        assert data_dir.is_dir()
    assert not data_dir.exists()
    with pytest.raises(RuntimeError, match="not open"):
        h.jobs  # noqa: B018


# --- the pytest plugin, run by pytest on a user's test file -------------------------------

USER_TESTS = """
import asyncio

import pytest

from kumofire_jobs import RetryPolicy
from kumofire_jobs.testing import JobsHarness

sent = []


async def send_email(ctx):
    if ctx.job.attempt == 1:
        raise ConnectionError("smtp down")
    await asyncio.sleep(600)
    sent.append(ctx.job.payload["to"])


@pytest.fixture
def kumofire_handlers():
    return {"email": send_email}


@pytest.fixture
def kumofire_harness_options():
    return {"virtual_sleep": True, "retry": RetryPolicy(base_delay=30)}


{mark}
async def test_email_is_retried_then_sent(jobs_harness: JobsHarness):
    start = jobs_harness.clock.now()
    await jobs_harness.jobs.create("email", {"to": "a@example.com"})
    await jobs_harness.run_until_idle()
    (run,) = await jobs_harness.runs("email")
    assert (run.status, run.attempt) == ("succeeded", 2)
    assert jobs_harness.clock.now() - start == 630
    assert sent == ["a@example.com"]


{mark}
async def test_each_test_has_its_own_harness(jobs_harness: JobsHarness):
    assert await jobs_harness.runs() == []
"""

INI = """
[pytest]
filterwarnings = error
asyncio_default_fixture_loop_scope = function
"""


def run_user_tests(
    pytester: pytest.Pytester, mark: str, *args: str, ini: str = INI
) -> pytest.RunResult:
    pytester.makeini(ini)
    pytester.makepyfile(test_user=USER_TESTS.replace("{mark}", mark))
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)


def test_plugin_fixture_under_pytest_asyncio_auto_mode(pytester: pytest.Pytester) -> None:
    result = run_user_tests(pytester, "", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=2)


def test_plugin_fixture_under_pytest_asyncio_strict_mode(pytester: pytest.Pytester) -> None:
    result = run_user_tests(pytester, "@pytest.mark.asyncio", "-o", "asyncio_mode=strict")
    result.assert_outcomes(passed=2)


def test_plugin_fixture_under_anyio(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "import pytest\n\n@pytest.fixture\ndef anyio_backend():\n    return 'asyncio'\n"
    )
    ini = "[pytest]\nfilterwarnings = error\n"  # no pytest-asyncio: no asyncio_ options
    result = run_user_tests(pytester, "@pytest.mark.anyio", "-p", "no:asyncio", ini=ini)
    result.assert_outcomes(passed=2)


def test_plugin_asks_for_the_handlers_fixture(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_user="async def test_it(jobs_harness):\n    pass\n",
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-o", "asyncio_mode=auto")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*define a fixture `kumofire_handlers`*"])


def test_the_docs_show_the_example_file_as_it_is() -> None:
    page = (ROOT / "docs" / "testing.md").read_text()
    shown = page.split("## A complete example", 1)[1].split("```python\n", 1)[1]
    assert shown.split("\n```", 1)[0] + "\n" == EXAMPLE.read_text()


@pytest.mark.slow
def test_the_documented_example_passes_from_another_directory(tmp_path: Path) -> None:
    """docs/testing.md's example, run as a user would: alone in a directory, with no
    configuration, against the installed package."""
    shutil.copy(EXAMPLE, tmp_path / "test_example.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error",
         "-o", "asyncio_default_fixture_loop_scope=function", "test_example.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout
