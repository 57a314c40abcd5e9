"""`HttpJobsClient` against the real Starlette app (httpx's ASGI transport) on the embedded
bindings and the manual clock: typed results equal to the in-process jobs API's, and the
jobs API's exceptions, with the server's messages, back from the HTTP errors."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.routing import Match, Route

from kumofire_jobs import (
    ConflictError,
    CreateRequest,
    JobContext,
    JobRun,
    JobSchedule,
    NotFoundError,
    Page,
    PayloadTooLargeError,
    RunStatus,
    UnknownJobError,
    ValidationError,
)
from kumofire_jobs.api.operations import OPERATIONS, Operation
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.http import HttpJobsClient, HttpJobsError, _request
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from tests.support.envs import EnvFactory, noop

TOKEN = "s3cret"


async def broken(ctx: JobContext) -> None:
    raise RuntimeError("boom")


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    return await make_env({"email": noop, "broken": broken})


def transport(env: LocalEnvironment, **options: Any) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=create_app(lambda request: env.jobs, **options))


@pytest.fixture
async def client(env: LocalEnvironment) -> AsyncIterator[HttpJobsClient]:
    app = transport(env, api_token=TOKEN, max_body_bytes=2048)
    async with HttpJobsClient("http://test/", TOKEN, transport=app) as jobs:
        yield jobs


# --- every operation reaches its route -----------------------------------------------------------


async def test_a_job_whose_name_has_url_specials_is_paused_over_http(
    make_env: EnvFactory,
) -> None:
    """A job name is a path segment: quoted by the client, decoded by the route ('/' is the
    one character a name may not have, refused by `create_runtime`)."""
    name = "team.email v2?#%"
    env = await make_env({name: noop})
    async with HttpJobsClient("http://test", transport=transport(env)) as jobs:
        paused = await jobs.pause_job(name)
        assert paused is not None and (paused.name, paused.paused) == (name, True)
        found = await jobs.get_job(name)
        assert found is not None and found.paused


def rpc_sample(op: Operation) -> tuple[Any, ...]:
    samples = {"id": "run_x:1", "key": "k 1", "query": {"limit": 5, "enabled": False}}
    return tuple(samples.get(name, [] if name == "bodies" else {}) for name in op.rpc)


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.name)
def test_each_operation_is_sent_to_its_own_route(op: Operation) -> None:
    """The request built from an operation's RPC arguments is the route of that operation,
    with the id or key as its path parameter (quoted, and read back as given)."""
    app = create_app(lambda request: pytest.fail("no request is served"))
    path, options = _request(op, rpc_sample(op))
    decoded = httpx.URL("http://test" + path).path  # what the server routes on
    scope = {"type": "http", "method": op.method, "path": decoded, "root_path": ""}
    matched = [r for r in app.routes if isinstance(r, Route) and r.matches(scope)[0] is Match.FULL]
    assert [r.path for r in matched] == [op.path]
    params = matched[0].matches(scope)[1]["path_params"]
    assert list(params.values()) == list(rpc_sample(op)[: len(op.path_parameters)])
    if op.query:
        assert options == {"params": {"limit": "5", "enabled": "false"}}
    elif op.body is not None:
        assert "json" in options and isinstance(options["json"], dict)
    else:
        assert options == {}


# --- round trips ------------------------------------------------------------------------------


async def test_runs_round_trip(
    client: HttpJobsClient, env: LocalEnvironment, clock: ManualClock
) -> None:
    local = env.jobs
    run_at = datetime(2027, 1, 1, 0, 0, 30, 123000, tzinfo=UTC)
    created = await client.create("email", {"to": "x"}, run_at=run_at, dedupe_key="d", priority=3)
    assert created.deduplicated is False
    assert (await client.create("email", dedupe_key="d")).deduplicated is True
    run = await client.get(created.kumofire_job_run_id)
    assert isinstance(run, JobRun) and run == await local.get(created.kumofire_job_run_id)
    assert run.scheduled_for == run_at and run.priority == 3 and run.payload == {"to": "x"}
    many = await client.create_many([CreateRequest(name="email", payload=i) for i in range(3)])
    await clock.advance(31)
    for made in many:
        done = await client.get(made.kumofire_job_run_id)
        assert done is not None and done.status is RunStatus.SUCCEEDED
    page = await client.list(name="email", limit=2)
    assert isinstance(page, Page) and page == await local.list(name="email", limit=2)
    rest = await client.list(name="email", limit=2, cursor=page.next_cursor)
    assert rest == await local.list(name="email", limit=2, cursor=page.next_cursor)
    assert await client.list(status=RunStatus.SUCCEEDED) == await local.list(status="succeeded")
    assert await client.counts() == await local.counts()
    assert await client.counts(name="broken") == await local.counts(name="broken")


async def test_flows_round_trip(
    client: HttpJobsClient, env: LocalEnvironment, clock: ManualClock
) -> None:
    flow = await client.create_flow(
        CreateRequest(name="email", payload="parent"),
        [CreateRequest(name="email", payload=i) for i in range(3)],
    )
    parent = await client.get(flow.parent_id)
    assert parent is not None and parent.status is RunStatus.WAITING
    assert await client.attempts(flow.parent_id) == []  # waiting: no attempt yet
    page = await client.list(parent_id=flow.parent_id)
    assert page == await env.jobs.list(parent_id=flow.parent_id)
    assert [run.id for run in page.items] == flow.children[::-1]
    assert all(run.parent_id == flow.parent_id for run in page.items)
    await clock.advance(0)  # the children run, then the released parent
    await clock.advance(0)
    done = await client.get(flow.parent_id)
    assert done is not None and done.status is RunStatus.SUCCEEDED
    assert (await client.counts())["waiting"] == 0


async def test_control_round_trip(
    client: HttpJobsClient, env: LocalEnvironment, clock: ManualClock
) -> None:
    local = env.jobs
    later = await client.create("email", delay=3600)
    promoted = await client.promote(later.kumofire_job_run_id)
    assert promoted is not None and promoted.scheduled_for == datetime(2027, 1, 1, tzinfo=UTC)
    await clock.advance(0)
    failed = await client.create("broken", max_attempts=1)
    await clock.advance(0)
    retried = await client.retry(failed.kumofire_job_run_id)
    assert retried is not None and retried.status is RunStatus.SCHEDULED
    canceled = await client.cancel(failed.kumofire_job_run_id)
    assert canceled == await local.get(failed.kumofire_job_run_id)
    assert canceled is not None and canceled.status is RunStatus.CANCELED
    assert await client.delete(failed.kumofire_job_run_id) is True
    assert await client.delete(failed.kumofire_job_run_id) is False
    for _ in range(3):
        await client.create("email", delay=60)
    bulk = await client.cancel_many(name="email", limit=2)
    assert (bulk.count, bulk.has_more) == (2, True)
    assert (await client.retry_many(status="canceled", limit=1)).count == 1
    before = datetime(2100, 1, 1, tzinfo=UTC)
    deleted = await client.delete_many(status=RunStatus.CANCELED, created_before=before)
    assert (deleted.count, deleted.has_more) == (1, False)

    assert await client.list_jobs() == await local.list_jobs()
    paused = await client.pause_job("email")
    assert paused is not None and paused.paused and paused == await local.get_job("email")
    resumed = await client.resume_job("email")
    assert resumed is not None and not resumed.paused
    assert await client.get_job("email") == await local.get_job("email")
    for call in (client.get_job, client.pause_job, client.resume_job):
        assert await call("nope") is None


async def test_history_round_trip(
    client: HttpJobsClient, env: LocalEnvironment, clock: ManualClock
) -> None:
    failed = await client.create("broken", max_attempts=2)
    await clock.advance(0)
    await clock.advance(5)  # past the retry's backoff
    run_id = failed.kumofire_job_run_id
    attempts = await client.attempts(run_id)
    assert attempts == await env.jobs.attempts(run_id)
    assert attempts is not None and [a.outcome for a in attempts] == ["retried", "failed"]
    assert await client.logs(run_id) == await env.jobs.logs(run_id) == []
    assert await client.attempts("run_nope") is None
    assert await client.logs("run_nope") is None


async def test_schedules_round_trip(client: HttpJobsClient, env: LocalEnvironment) -> None:
    local = env.jobs
    start = datetime(2027, 2, 1, tzinfo=UTC)
    created = await client.create_schedule(
        "email", {"a": 1}, cron="0 9 * * *", key="daily", timezone="Asia/Tokyo", limit=3,
        start_at=start,
    )  # fmt: skip
    assert isinstance(created, JobSchedule) and created.start_at == start
    assert created == await local.get_schedule(created.id)
    assert await client.get_schedule_by_key("daily") == created
    upserted = await client.upsert_schedule("five", "email", every=5, enabled=False)
    assert upserted.type == "interval" and upserted.enabled is False
    changed = await client.update_schedule(created.id, payload=[2], priority=4)
    assert changed is not None and (changed.payload, changed.priority) == ([2], 4)
    by_key = await client.update_schedule_by_key("five", every=7.5)
    assert by_key is not None and by_key.expr == "7.5"
    assert (await client.enable_schedule_by_key("five")).enabled is True  # type: ignore[union-attr]
    assert (await client.disable_schedule(created.id)).enabled is False  # type: ignore[union-attr]
    assert (await client.enable_schedule(created.id)).enabled is True  # type: ignore[union-attr]
    assert (await client.disable_schedule_by_key("five")).enabled is False  # type: ignore[union-attr]
    listed = await client.list_schedules(enabled=False)
    assert listed == await local.list_schedules(enabled=False) and len(listed.items) == 1
    assert await client.list_schedules(name="email", limit=1) == await local.list_schedules(
        name="email", limit=1
    )
    assert await client.delete_schedule_by_key("five") is True
    assert await client.delete_schedule(created.id) is True
    assert await client.delete_schedule(created.id) is False
    assert await client.delete_schedule_by_key("five") is False
    assert await client.get_schedule(created.id) is None
    assert await client.update_schedule_by_key("five", payload=1) is None
    assert await client.enable_schedule("sch_nope") is None


# --- errors -----------------------------------------------------------------------------------


async def same_error(
    remote: Callable[[], Awaitable[Any]], local: Callable[[], Awaitable[Any]], kind: type
) -> None:
    with pytest.raises(kind) as over_http:
        await remote()
    with pytest.raises(kind) as in_process:
        await local()
    assert type(over_http.value) is type(in_process.value)
    assert str(over_http.value) == str(in_process.value)


async def test_errors_are_the_jobs_api_s_with_its_messages(
    client: HttpJobsClient, env: LocalEnvironment, clock: ManualClock
) -> None:
    local = env.jobs
    await same_error(lambda: client.create("nope"), lambda: local.create("nope"), UnknownJobError)
    await same_error(
        lambda: client.create("email", max_attempts=0),
        lambda: local.create("email", max_attempts=0),
        ValidationError,
    )
    await same_error(lambda: client.list(limit=500), lambda: local.list(limit=500), ValidationError)
    created = await client.create("email")
    await clock.advance(0)
    run_id = created.kumofire_job_run_id
    await same_error(lambda: client.retry(run_id), lambda: local.retry(run_id), ConflictError)
    await same_error(lambda: client.promote(run_id), lambda: local.promote(run_id), ConflictError)
    await same_error(
        lambda: client.cancel_many(limit=5), lambda: local.cancel_many(limit=5), ValidationError
    )
    with pytest.raises(PayloadTooLargeError, match="over 2048 bytes"):
        await client.create("email", "x" * 4000)
    for missing in (client.get, client.cancel, client.retry, client.promote):
        assert await missing("run_nope") is None


async def test_answers_that_have_no_exception_of_their_own(env: LocalEnvironment) -> None:
    async with HttpJobsClient("http://test", transport=transport(env, api_token=TOKEN)) as anon:
        with pytest.raises(HttpJobsError) as unauthorized:
            await anon.get("run_x")
    assert (unauthorized.value.status, unauthorized.value.code) == (401, "unauthorized")
    assert unauthorized.value.message == "a valid bearer token is required"
    assert not isinstance(unauthorized.value, NotFoundError)

    # A route the server does not serve (a wrong base URL) is an error, not a missing run.
    wrong = HttpJobsClient("http://test/prefix", transport=transport(env))
    async with wrong:
        with pytest.raises(HttpJobsError) as no_route:
            await wrong.get("run_x")
    assert (no_route.value.status, no_route.value.code) == (404, "not_found")

    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html><body>Bad   gateway</body></html>")

    async with HttpJobsClient("http://test", transport=httpx.MockTransport(proxy)) as behind:
        with pytest.raises(HttpJobsError) as bad_gateway:
            await behind.counts()
    assert (bad_gateway.value.status, bad_gateway.value.code) == (502, "http_502")
    assert bad_gateway.value.message == "<html><body>Bad gateway</body></html>"


async def test_no_server_raises_httpx_s_connect_error() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    async with HttpJobsClient(f"http://127.0.0.1:{port}") as nowhere:
        with pytest.raises(httpx.ConnectError):
            await nowhere.counts()


async def test_a_non_ascii_token_is_sent_as_utf_8_and_a_token_no_header_carries_is_refused(
    env: LocalEnvironment,
) -> None:
    # httpx refuses a non-ASCII str header (UnicodeEncodeError, a traceback in the CLI) and
    # a newline in one (LocalProtocolError, which the CLI took for an unreachable service).
    app = transport(env, api_token="grüß")
    async with HttpJobsClient("http://test", " grüß\n", transport=app) as jobs:
        assert (await jobs.counts())["succeeded"] == 0
    for bad in ("a\nb", "a\rb", "   ", "tab\x7f"):
        with pytest.raises(ValueError, match="token must be"):
            HttpJobsClient("http://test", bad, transport=app)
