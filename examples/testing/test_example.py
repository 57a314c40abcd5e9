"""Testing your jobs: the complete example of docs/testing.md.

It needs only kumofire-jobs (installed as its README says) and `pip install pytest
pytest-asyncio`; run it with `pytest test_example.py`. The project's own suite runs this
very file, alone in a temporary directory, against the installed package.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from kumofire_jobs import JobContext, JobOptions, NonRetryableError, RetryPolicy
from kumofire_jobs.testing import JobsHarness

# pytest-asyncio's default (strict) mode runs only marked tests; in auto mode this is harmless.
pytestmark = pytest.mark.asyncio


# --- The code under test: an email provider client and three handlers -------------------


class FakeMailer:
    """Stands in for the email provider; `outage` makes the next sends fail."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.outage = 0

    async def send(self, to: str, subject: str) -> None:
        if self.outage:
            self.outage -= 1
            raise ConnectionError("the provider is unavailable")
        self.sent.append((to, subject))


def make_handlers(mailer: FakeMailer) -> dict[str, Any]:
    async def send_welcome(ctx: JobContext) -> None:
        address = ctx.job.payload["email"]
        if "@" not in address:
            raise NonRetryableError(f"not an email address: {address!r}")  # no retry
        await mailer.send(address, "Welcome!")

    async def daily_digest(ctx: JobContext) -> None:
        await mailer.send("team@example.com", "Your digest")

    async def export(ctx: JobContext) -> dict[str, int]:
        # Waits for a slow outside system: polls every 5 minutes, three times.
        for _ in range(3):
            await asyncio.sleep(300)
        return {"rows": 42}

    return {"send_welcome": send_welcome, "daily_digest": daily_digest, "export": export}


# --- The fixtures the kit's `jobs_harness` fixture is built from ---------------------------


@pytest.fixture
def mailer() -> FakeMailer:
    return FakeMailer()


@pytest.fixture
def kumofire_handlers(mailer: FakeMailer) -> dict[str, Any]:
    return make_handlers(mailer)


@pytest.fixture
def kumofire_job_options() -> dict[str, JobOptions]:
    return {"export": JobOptions(timeout=1200, retry=RetryPolicy(max_attempts=1))}


@pytest.fixture
def kumofire_harness_options() -> dict[str, Any]:
    # Handlers' `asyncio.sleep` waits on the harness's clock, not in real time.
    return {"virtual_sleep": True}


# --- The tests ----------------------------------------------------------------------------


async def test_welcome_email_is_sent(jobs_harness: JobsHarness, mailer: FakeMailer) -> None:
    created = await jobs_harness.jobs.create("send_welcome", {"email": "ada@example.com"})
    await jobs_harness.drain()  # runs everything due now

    run = await jobs_harness.run(created.kumofire_job_run_id)
    assert run.status == "succeeded"
    assert mailer.sent == [("ada@example.com", "Welcome!")]


async def test_an_outage_is_retried_with_backoff(
    jobs_harness: JobsHarness, mailer: FakeMailer
) -> None:
    mailer.outage = 2  # the first two attempts fail
    created = await jobs_harness.jobs.create("send_welcome", {"email": "ada@example.com"})
    await jobs_harness.drain()
    run = await jobs_harness.run(created.kumofire_job_run_id)
    assert (run.status, run.attempt) == ("scheduled", 1)  # waiting for its retry
    assert run.last_error is not None and "provider is unavailable" in run.last_error

    await jobs_harness.advance(1)  # the default policy waits 1 s, then 2 s
    assert mailer.sent == []
    await jobs_harness.run_until_idle()  # jumps the clock to each next due time
    run = await jobs_harness.run(created.kumofire_job_run_id)
    assert (run.status, run.attempt) == ("succeeded", 3)
    assert mailer.sent == [("ada@example.com", "Welcome!")]


async def test_a_bad_address_fails_without_retrying(jobs_harness: JobsHarness) -> None:
    await jobs_harness.jobs.create("send_welcome", {"email": "nobody"})
    await jobs_harness.run_until_idle()
    (run,) = await jobs_harness.runs("send_welcome", "failed")
    assert run.attempt == 1
    assert run.last_error is not None and "not an email address" in run.last_error


async def test_the_digest_goes_out_every_day(jobs_harness: JobsHarness, mailer: FakeMailer) -> None:
    start = jobs_harness.now()
    await jobs_harness.jobs.create_schedule("daily_digest", every=86_400, key="digest")
    await jobs_harness.advance(3 * 86_400)  # three days, in no time

    runs = await jobs_harness.runs("daily_digest", "succeeded")
    assert [run.started_at for run in runs] == [start + timedelta(days=d) for d in (1, 2, 3)]
    assert len(mailer.sent) == 3


async def test_a_slow_export_takes_clock_time_not_real_time(jobs_harness: JobsHarness) -> None:
    start = jobs_harness.clock.now()
    created = await jobs_harness.jobs.create("export")
    await jobs_harness.drain()  # its three 5-minute sleeps move the clock 15 minutes

    run = await jobs_harness.run(created.kumofire_job_run_id)
    assert run.status == "succeeded"
    assert jobs_harness.clock.now() - start == 900


async def test_the_harness_without_the_fixture(mailer: FakeMailer) -> None:
    # The same harness, built by hand: a tighter timeout makes the export time out.
    options = {"export": JobOptions(timeout=600, retry=RetryPolicy(max_attempts=1))}
    async with JobsHarness(make_handlers(mailer), options, virtual_sleep=True) as harness:
        created = await harness.jobs.create("export")
        await harness.drain()
        run = await harness.run(created.kumofire_job_run_id)
        assert run.status == "failed"
        assert run.last_error is not None and run.last_error.startswith("TimeoutError")
