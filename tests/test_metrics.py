"""`GET /v1/metrics` on the embedded bindings and the manual clock, its output read back with
`prometheus_client`'s own parser (a malformed exposition fails to parse)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kumofire_jobs import CreateRequest, JobContext
from kumofire_jobs.core import metrics
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.states import ALL_STATUSES
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from tests.support.envs import EnvFactory, noop

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


async def broken(ctx: JobContext) -> None:
    raise RuntimeError("boom")


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    # A job name that needs escaping in a label value.
    return await make_env({"email": noop, "broken": broken, 'odd"\\name': noop})


@pytest.fixture
async def client(env: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(lambda request: env.jobs, api_token="secret")
    transport = httpx.ASGITransport(app=app)
    headers = {"authorization": "Bearer secret"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=headers
    ) as http:
        yield http


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/v1/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        assert family.type == "gauge", family.name
        assert family.documentation, family.name
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def runs(samples: Samples, job: str, status: str) -> float:
    return samples["kumofire_runs"][(("job", job), ("status", status))]


async def test_runs_by_job_and_status_with_zeros_schedules_and_pauses(
    env: LocalEnvironment, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    samples = await scrape(client)
    jobs = ["broken", "email", 'odd"\\name']
    # Every registered job times every status, zeros included, before any run exists.
    assert set(samples["kumofire_runs"]) == {
        (("job", job), ("status", status.value)) for job in jobs for status in ALL_STATUSES
    }
    assert set(samples["kumofire_runs"].values()) == {0}
    assert samples["kumofire_schedules"] == {(("enabled", "true"),): 0, (("enabled", "false"),): 0}

    for _ in range(3):
        await env.jobs.create("email")
    await env.jobs.create("email", delay=3600)
    await env.jobs.create("broken", max_attempts=1)
    await env.jobs.create('odd"\\name')
    await env.jobs.create_schedule("email", every=60)
    await env.jobs.create_schedule("email", every=60, enabled=False)
    await env.jobs.create_schedule("broken", cron="0 * * * *", enabled=False)
    await clock.advance(0)

    samples = await scrape(client)
    assert runs(samples, "email", "succeeded") == 3
    assert runs(samples, "email", "scheduled") == 2  # the delayed run and the occurrence
    assert runs(samples, "broken", "failed") == 1
    assert runs(samples, 'odd"\\name', "succeeded") == 1
    assert runs(samples, "broken", "running") == 0
    assert samples["kumofire_schedules"] == {(("enabled", "true"),): 1, (("enabled", "false"),): 2}
    assert samples["kumofire_job_paused"] == {(("job", job),): 0 for job in jobs}
    assert samples["kumofire_runs_oldest_due_age_seconds"] == {(("job", job),): 0 for job in jobs}
    counts = await env.jobs.counts(name="email")
    assert {s: runs(samples, "email", s) for s in counts} == counts

    await env.jobs.pause_job("broken")
    samples = await scrape(client)
    assert samples["kumofire_job_paused"][(("job", "broken"),)] == 1
    assert samples["kumofire_job_paused"][(("job", "email"),)] == 0


async def test_the_oldest_due_run_s_age_grows_while_it_waits(
    env: LocalEnvironment, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await env.jobs.pause_job("email")
    await env.jobs.create("email")  # due now, waits (queued) while the job is paused
    await clock.advance(30)
    await env.jobs.create("email")  # a younger one: the oldest counts
    await env.jobs.create("email", delay=10_000)  # not due: not counted
    await clock.advance(60.5)
    samples = await scrape(client)
    ages = samples["kumofire_runs_oldest_due_age_seconds"]
    assert ages[(("job", "email"),)] == 90.5
    assert ages[(("job", "broken"),)] == 0
    assert runs(samples, "email", "queued") == 2
    await env.jobs.resume_job("email")
    await clock.advance(0)
    samples = await scrape(client)
    assert samples["kumofire_runs_oldest_due_age_seconds"][(("job", "email"),)] == 0
    assert runs(samples, "email", "succeeded") == 2


async def test_a_job_with_runs_but_no_handler_is_reported_too(make_env: EnvFactory) -> None:
    env = await make_env({"email": noop})
    await env.jobs.create("email", delay=60)
    renamed = "UPDATE kumofire_job_runs SET name = 'gone'"
    await env.resources.db.prepare(renamed).run()
    snapshot = await env.jobs.metrics()
    assert snapshot.jobs["gone"].counts["scheduled"] == 1
    assert snapshot.jobs["email"].counts["scheduled"] == 0


async def test_metrics_need_the_token(env: LocalEnvironment) -> None:
    app = create_app(lambda request: env.jobs, api_token="secret")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/v1/metrics")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


async def test_a_scrape_reads_the_unfinished_runs_by_index_and_one_page_of_the_rest(
    env: LocalEnvironment,
) -> None:
    """Its cost does not grow with the finished runs kept: the unfinished runs come through
    their partial index, the others through one page of a sweep in primary-key order."""

    async def plan(sql: str, *params: object) -> str:
        rows = await env.JOBS_DB.prepare(f"EXPLAIN QUERY PLAN {sql}").bind(*params).all()
        return " | ".join(str(row["detail"]) for row in rows.results)

    unfinished = await plan(metrics._UNFINISHED, 0)
    # The partial index holds only the unfinished runs: scanning it reads no finished one.
    assert unfinished.startswith("SCAN kumofire_job_runs USING INDEX kumofire_job_runs_unfinished")
    page = await plan(metrics._SWEEP, "", metrics.SWEEP_ROWS)
    assert "SEARCH kumofire_job_runs USING PRIMARY KEY (id>?)" in page, page
    assert "USE TEMP B-TREE FOR ORDER BY" not in page, page


async def test_finished_counts_are_the_last_complete_sweep_s_a_page_a_scrape(
    env: LocalEnvironment, client: httpx.AsyncClient, clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(metrics, "SWEEP_ROWS", 10)
    await env.jobs.create_many([CreateRequest(name="email") for _ in range(25)])
    await clock.advance(1)
    # The first scrape of the process sweeps the whole table: exact.
    assert runs(await scrape(client), "email", "succeeded") == 25
    await env.jobs.create_many([CreateRequest(name="email") for _ in range(10)])
    await env.jobs.create_many([CreateRequest(name="email", delay=600) for _ in range(2)])
    await clock.advance(1)
    # 37 runs, a page of 10 a scrape: the new finished runs show once the sweep has passed
    # them all (the fourth scrape from here); the unfinished ones at once.
    for _ in range(3):
        samples = await scrape(client)
        assert runs(samples, "email", "succeeded") == 25
        assert runs(samples, "email", "scheduled") == 2
    samples = await scrape(client)
    assert runs(samples, "email", "succeeded") == 35
    assert runs(samples, "email", "scheduled") == 2
