"""What a hostile or careless client can send: every route answers a documented 4xx, never a
500, and the API's edges (Allow on 405, the token on the OpenAPI document, `limit`) hold."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
from starlette.requests import Request

from kumofire_jobs import JobContext, Jobs, PayloadTooLargeError, ValidationError
from kumofire_jobs.cloudflare import JobsRpcError, service
from kumofire_jobs.core.validation import MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from kumofire_jobs.web.origin import is_loopback
from tests.support.envs import EnvFactory


async def ok(ctx: JobContext) -> None:
    return None


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    return await make_env({"email": ok})


@pytest.fixture
async def client(env: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    # The default body limit (1 MiB): a payload can be under it and over D1's value limit.
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str), body
    assert "Traceback" not in body["error"]["message"]
    return response.status_code, body["error"]["code"]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


HUGE = b"1" + b"0" * 400  # a JSON integer no float holds
STRING_OVER_D1 = b'"' + b"x" * 999_990 + b'"'  # under the 1 MiB body limit, over D1's value limit


def run_body(**fields: bytes) -> bytes:
    return (
        b'{"name":"email",'
        + b",".join(b'"%s":%s' % (k.encode(), v) for k, v in fields.items())
        + b"}"
    )


def schedule_body(**fields: bytes) -> bytes:
    fields.setdefault("every", b"5")
    return run_body(**fields)


# (method, path, body, expected (status, code)); each was a 500 or is a class of one.
HOSTILE: list[tuple[str, str, bytes | None, tuple[int, str]]] = [
    ("POST", "/v1/runs", run_body(payload=nested(MAX_PAYLOAD_DEPTH + 1)),
     (422, "validation_error")),
    ("POST", "/v1/runs", run_body(payload=nested(1_000)), (422, "validation_error")),
    ("POST", "/v1/runs", nested(100_000), (422, "validation_error")),
    ("POST", "/v1/runs", run_body(delay=HUGE), (422, "validation_error")),
    ("POST", "/v1/runs", run_body(delay=b"-" + HUGE), (422, "validation_error")),
    ("POST", "/v1/runs", run_body(delay=b"1e400"), (400, "invalid_json")),
    ("POST", "/v1/runs", run_body(max_attempts=HUGE), (422, "validation_error")),
    ("POST", "/v1/runs", run_body(payload=STRING_OVER_D1), (413, "payload_too_large")),
    ("POST", "/v1/runs", run_body(run_at=b'"9999-12-31T23:59:59-23:59"'),
     (422, "validation_error")),
    ("POST", "/v1/runs", run_body(run_at=b'"2030-02-30T00:00:00Z"'), (422, "validation_error")),
    ("POST", "/v1/runs", run_body(run_at=b'"2030-01-01T00:00:00+99:99"'),
     (422, "validation_error")),
    ("POST", "/v1/runs", run_body(dedupe_key=b'"\\ud800"'), (400, "invalid_json")),
    ("POST", "/v1/runs", b"\xff\xfe", (400, "invalid_json")),
    ("POST", "/v1/runs", b'{"name":"email","payload":1}' * 2, (400, "invalid_json")),
    ("POST", "/v1/runs:batch", b'{"runs":[' + run_body(payload=nested(1_000)) + b"]}",
     (422, "validation_error")),
    ("POST", "/v1/runs:batch", b'{"runs":[' + run_body(payload=STRING_OVER_D1) + b"]}",
     (413, "payload_too_large")),
    ("POST", "/v1/runs:batch", b'{"runs":' + nested(5_000) + b"}", (422, "validation_error")),
    ("POST", "/v1/schedules", schedule_body(every=HUGE), (422, "validation_error")),
    ("POST", "/v1/schedules", schedule_body(every=b"-" + HUGE), (422, "validation_error")),
    ("POST", "/v1/schedules", schedule_body(every=b"1e308"), (422, "validation_error")),
    ("POST", "/v1/schedules", schedule_body(max_attempts=HUGE), (422, "validation_error")),
    ("POST", "/v1/schedules", schedule_body(enabled=HUGE), (422, "validation_error")),
    ("POST", "/v1/schedules", schedule_body(payload=nested(1_000)), (422, "validation_error")),
    ("POST", "/v1/schedules", schedule_body(payload=STRING_OVER_D1), (413, "payload_too_large")),
    ("POST", "/v1/schedules", run_body(cron=b'"0 0 31 2 *"'), (422, "validation_error")),
    ("POST", "/v1/schedules", run_body(cron=b'"' + b"0," * 50_000 + b'0 * * * *"'),
     (422, "validation_error")),
    ("POST", "/v1/schedules", run_body(cron=b'"' + HUGE + b' * * * *"'), (422, "validation_error")),
    ("POST", "/v1/schedules", run_body(cron=b'"' + b"*" * 100_000 + b'"'),
     (422, "validation_error")),
    ("POST", "/v1/schedules", run_body(cron=b'"* * * * *"', timezone=b'"' + b"A" * 100_000 + b'"'),
     (422, "validation_error")),
    ("POST", "/v1/schedules", schedule_body(key=b'"' + b"k" * 100_000 + b'"'),
     (422, "validation_error")),
    ("PUT", "/v1/schedules/by-key/k", schedule_body(every=HUGE), (422, "validation_error")),
    ("PUT", "/v1/schedules/by-key/k", schedule_body(payload=STRING_OVER_D1),
     (413, "payload_too_large")),
    ("PUT", "/v1/schedules/by-key/k", nested(100_000), (422, "validation_error")),
    ("PUT", "/v1/schedules/by-key/" + "k" * 5_000, schedule_body(), (422, "validation_error")),
    ("PATCH", "/v1/schedules/by-key/present", b'{"every":' + HUGE + b"}",
     (422, "validation_error")),
    ("PATCH", "/v1/schedules/by-key/present", b'{"payload":' + nested(1_000) + b"}",
     (422, "validation_error")),
    ("PATCH", "/v1/schedules/by-key/present", b'{"payload":' + STRING_OVER_D1 + b"}",
     (413, "payload_too_large")),
    ("GET", "/v1/runs?limit=" + "9" * 5_000, None, (422, "validation_error")),
    # Bytes that are not UTF-8 inside a JSON string, on every route with a body.
    ("POST", "/v1/runs", b'{"name":"\xff\xfe"}', (400, "invalid_json")),
    ("POST", "/v1/runs:batch", b'{"runs":[{"name":"\xff"}]}', (400, "invalid_json")),
    ("POST", "/v1/schedules", schedule_body(key=b'"\xc3"'), (400, "invalid_json")),
    ("PUT", "/v1/schedules/by-key/k", schedule_body(payload=b'"\xed\xa0\x80"'),
     (400, "invalid_json")),
    ("PATCH", "/v1/schedules/by-key/present", b'{"payload":"\xff"}', (400, "invalid_json")),
    ("GET", "/v1/runs?limit=1e3", None, (422, "validation_error")),
    ("GET", "/v1/runs?limit=%D9%A3", None, (422, "validation_error")),
    ("GET", "/v1/runs?limit=%EF%BC%95", None, (422, "validation_error")),
    ("GET", "/v1/runs?limit=1_0", None, (422, "validation_error")),
    ("GET", "/v1/runs?limit=%2B5", None, (422, "validation_error")),
    ("GET", "/v1/runs?limit=%205", None, (422, "validation_error")),
    ("GET", "/v1/runs?cursor=%ff%fe", None, (422, "validation_error")),
    ("GET", "/v1/runs?cursor=" + "A" * 5_000, None, (422, "validation_error")),
    ("GET", "/v1/runs?status=%00", None, (422, "validation_error")),
    ("GET", "/v1/runs/" + "r" * 5_000, None, (404, "not_found")),
    ("GET", "/v1/schedules?limit=-" + "9" * 5_000, None, (422, "validation_error")),
    ("GET", "/v1/schedules?enabled=%00", None, (422, "validation_error")),
]  # fmt: skip


MAX_MESSAGE_CHARS = 1_000


async def test_hostile_requests_get_a_documented_4xx_never_a_500(
    client: httpx.AsyncClient, env: LocalEnvironment
) -> None:
    await client.put("/v1/schedules/by-key/present", json={"name": "email", "every": 60})
    before = await env.jobs.counts()
    for method, path, body, expected in HOSTILE:
        response = await client.request(method, path, content=body)
        assert error_of(response) == expected, (method, path[:80], (body or b"")[:80])
        # The message says what is wrong without echoing a huge input back.
        assert len(response.json()["error"]["message"]) <= MAX_MESSAGE_CHARS, (method, path[:80])
    assert await env.jobs.counts() == before  # nothing bad was stored


async def test_errors_say_what_is_wrong(client: httpx.AsyncClient) -> None:
    def message(response: httpx.Response) -> str:
        return str(response.json()["error"]["message"])

    too_large = await client.post("/v1/runs", content=run_body(payload=STRING_OVER_D1))
    assert f"limit of {MAX_PAYLOAD_BYTES}" in message(too_large)
    deep = await client.post("/v1/runs", content=run_body(payload=nested(500)))
    assert f"nested deeper than {MAX_PAYLOAD_DEPTH} levels" in message(deep)
    deeper = await client.post("/v1/runs", content=run_body(payload=nested(50_000)))
    assert "nests too deeply" in message(deeper)
    delay = await client.post("/v1/runs", content=run_body(delay=HUGE))
    assert "delay must be between 0 and 365 days" in message(delay)
    # An offset past 23:59 is named as such, not in Python's terms (found by outside testing).
    for offset in (b"+25:00", b"-24:00", b"+00:60"):
        said = message(await client.post("/v1/runs", content=run_body(
            run_at=b'"2030-01-01T00:00:00' + offset + b'"')))  # fmt: skip
        assert said == f"run_at: offset {offset.decode()} is not an offset of -23:59 to +23:59"


async def test_the_limits_are_the_same_in_python_and_rpc(env: LocalEnvironment) -> None:
    jobs: Jobs = env.jobs
    big = "x" * MAX_PAYLOAD_BYTES  # two quotes over the limit as JSON
    with pytest.raises(PayloadTooLargeError, match="over the limit"):
        await jobs.create("email", big)
    with pytest.raises(ValidationError, match="over the limit"):  # a kind of ValidationError
        await jobs.create_schedule("email", big, every=5)
    # Exactly the limit fits a D1 row with the longest other columns, for runs and schedules.
    largest = "x" * (MAX_PAYLOAD_BYTES - 2)
    created = await jobs.create("email", largest, dedupe_key="d" * 512)
    assert created.deduplicated is False
    schedule = await jobs.create_schedule("email", largest, cron="0 0 1 1 *", key="k" * 512)
    assert schedule.next_run_at is not None  # its first occurrence, a run, was written too

    deep: Any = []
    for _ in range(MAX_PAYLOAD_DEPTH):
        deep = [deep]
    with pytest.raises(ValidationError, match=f"deeper than {MAX_PAYLOAD_DEPTH} levels"):
        await jobs.create("email", deep)
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValidationError, match="deeper than"):
        await jobs.create("email", looped)
    await jobs.create("email", deep[0])  # exactly the limit
    # What JSON cannot hold is refused, not changed (the encoder would store NaN as null) and
    # not a raw Python error.
    for unstorable in (float("nan"), {"a": [float("inf")]}, -float("inf"), "\ud800", 10**5000):
        with pytest.raises(ValidationError, match="payload"):
            await jobs.create("email", unstorable)
    with pytest.raises(ValidationError, match="delay must be between"):
        await jobs.create("email", delay=10**400)
    with pytest.raises(ValidationError, match="year 10000"):
        await jobs.create(
            "email", run_at=datetime.max.replace(tzinfo=timezone(-timedelta(hours=1)))
        )

    with pytest.raises(JobsRpcError) as caught:
        await service.create(jobs, {"name": "email", "payload": big})
    assert caught.value.code == "payload_too_large"
    with pytest.raises(JobsRpcError) as caught:
        await service.create_many(jobs, [{"name": "email", "payload": deep}])
    assert caught.value.code == "validation_error"
    with pytest.raises(JobsRpcError) as caught:
        await service.create(jobs, {"name": "email", "delay": 10**400})
    assert caught.value.code == "validation_error"
    deeper: Any = []
    for _ in range(50_000):  # beyond the interpreter's recursion limit
        deeper = [deeper]
    with pytest.raises(JobsRpcError) as caught:
        await service.create(jobs, {"name": "email", "payload": deeper})
    assert caught.value.code == "validation_error" and "nest" in caught.value.message


async def test_limit_outside_1_to_200_is_refused_everywhere(
    client: httpx.AsyncClient, env: LocalEnvironment
) -> None:
    for path in ("/v1/runs", "/v1/schedules"):
        for limit in ("0", "-1", "201"):
            response = await client.get(path, params={"limit": limit})
            assert error_of(response) == (422, "validation_error"), (path, limit)
        assert (await client.get(path, params={"limit": "200"})).status_code == 200
        empty = await client.get(path, params={"limit": ""})  # absent is the default; empty
        assert error_of(empty) == (422, "validation_error")  # is a mistake, named
        assert "query parameter limit is empty" in empty.json()["error"]["message"]
    for limit_value in (0, -1, 201):
        for call in (service.list_runs, service.list_schedules):
            with pytest.raises(JobsRpcError) as caught:
                await call(env.jobs, {"limit": limit_value})
            assert caught.value.code == "validation_error"
        with pytest.raises(ValidationError, match="limit must be between"):
            await env.jobs.list(limit=limit_value)
        with pytest.raises(ValidationError, match="limit must be between"):
            await env.jobs.list_schedules(limit=limit_value)


async def test_every_405_carries_allow_with_the_methods_of_its_path(
    client: httpx.AsyncClient,
) -> None:
    cases = {
        ("DELETE", "/v1/runs"): "GET, HEAD, POST",
        ("GET", "/v1/runs:batch"): "POST",
        ("PUT", "/v1/runs/run_x"): "DELETE, GET, HEAD",
        ("GET", "/v1/runs/run_x/cancel"): "POST",
        ("POST", "/v1/health"): "GET, HEAD",
        ("PUT", "/v1/schedules"): "GET, HEAD, POST",
        ("POST", "/v1/schedules/sch_x"): "DELETE, GET, HEAD, PATCH",
        ("POST", "/v1/schedules/by-key/k"): "DELETE, GET, HEAD, PATCH, PUT",
        ("GET", "/v1/schedules/by-key/k/enable"): "POST",
    }
    for (method, path), allow in cases.items():
        response = await client.request(method, path)
        assert error_of(response) == (405, "method_not_allowed"), (method, path)
        assert response.headers.get("allow") == allow, (method, path)
    by_path: dict[str, set[str]] = {}
    for route in client._transport.app.routes:  # type: ignore[attr-defined]
        by_path.setdefault(route.path, set()).update(route.methods)
    for template, methods in by_path.items():
        path = template.format(run_id="run_x", schedule_id="sch_x", key="k", name="email")
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} - methods:
            response = await client.request(method, path)
            assert error_of(response) == (405, "method_not_allowed"), (method, path)
            assert response.headers["allow"] == ", ".join(sorted(methods)), (method, path)


async def test_the_openapi_document_needs_the_token(env: LocalEnvironment) -> None:
    app = create_app(lambda request: env.jobs, api_token="s3cret")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert error_of(await http.get("/v1/openapi.json")) == (401, "unauthorized")
        right = {"Authorization": "Bearer s3cret"}
        document = await http.get("/v1/openapi.json", headers=right)
        assert document.status_code == 200
        assert document.json()["paths"]["/v1/openapi.json"]["get"].get("security") != []
        assert (await http.get("/v1/health")).status_code == 200  # still never needs one


async def test_an_unexpected_error_answers_500_logs_once_and_keeps_the_connection(
    env: LocalEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    def jobs(request: Request) -> Jobs:
        if "boom" in request.query_params:
            raise RuntimeError("a bug")
        return env.jobs

    # A socket listening before the server starts: the client's connection waits in its backlog.
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    # log_config=None: uvicorn's loggers propagate to the root logger, where caplog sees them.
    config = uvicorn.Config(create_app(jobs), lifespan="off", log_level="info", log_config=None)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        local_ports: list[int] = []

        async def note_port(response: httpx.Response) -> None:
            stream = response.extensions["network_stream"]
            local_ports.append(stream.get_extra_info("socket").getsockname()[1])

        hooks: Any = {"response": [note_port]}
        limits = httpx.Limits(max_connections=1)
        caplog.set_level(logging.INFO)
        with structlog.testing.capture_logs() as events:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", limits=limits, event_hooks=hooks
            ) as http:
                failed = await http.get("/v1/runs", params={"boom": "1"})
                assert error_of(failed) == (500, "internal_error")
                assert "a bug" not in failed.text
                again = await http.get("/v1/runs")
                assert again.status_code == 200
        assert len(set(local_ports)) == 1, local_ports  # one connection served both
        errors = [e for e in events if e["log_level"] == "error"]
        assert [e["event"] for e in errors] == ["http.internal_error"]
        assert errors[0]["exc_info"] is True and errors[0]["path"] == "/v1/runs"
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    finally:
        server.should_exit = True
        await serving


HOSTILE_SEGMENTS = ["%00", "%ed%a0%80", "..", "x" * 4_000, "run_" + "9" * 500, "%25%32%66"]
HOSTILE_QUERIES = [
    {"limit": "9" * 5_000, "cursor": "%ff", "status": "\x00", "enabled": "1"},
    {"limit": "-0", "name": "\udcff".encode("utf-8", "surrogatepass").decode("latin-1")},
]
HOSTILE_BODIES = [nested(100_000), b"[" + HUGE + b"]", b'{"runs":' + HUGE + b"}", b"\x00", b"{}"]


async def test_every_route_survives_hostile_ids_queries_and_bodies(
    client: httpx.AsyncClient,
) -> None:
    served = [
        (method, route.path)
        for route in client._transport.app.routes  # type: ignore[attr-defined]
        for method in sorted(route.methods - {"HEAD"})
    ]
    for method, template in served:
        for segment in HOSTILE_SEGMENTS:
            path = template.format(run_id=segment, schedule_id=segment, key=segment, name=segment)
            for query in HOSTILE_QUERIES:
                for body in HOSTILE_BODIES if method in ("POST", "PUT", "PATCH") else [None]:
                    response = await client.request(method, path, params=query, content=body)
                    assert response.status_code < 500, (method, path[:60], query, body)
                    if response.status_code >= 400:
                        error_of(response)


async def test_a_trailing_slash_is_not_redirected_to_the_host_header(env: LocalEnvironment) -> None:
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs, api_token="t"))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for path in ("/v1/runs/", "/v1/openapi.json/", "/v1/schedules/"):
            response = await http.get(path, headers={"host": "evil.example"})
            assert error_of(response) == (404, "not_found"), path
            assert "location" not in response.headers


async def test_a_lone_surrogate_escape_is_named_not_reported_as_a_truncated_body(
    client: httpx.AsyncClient,
) -> None:
    def message(response: httpx.Response) -> str:
        assert error_of(response) == (400, "invalid_json")
        return str(response.json()["error"]["message"])

    for body in (
        run_body(dedupe_key=b'"\\ud800"'),
        run_body(payload=b'{"k": "ab\\uDBFF"}'),
    ):
        said = message(await client.post("/v1/runs", content=body))
        assert "lone UTF-16 surrogate escape" in said and "truncated" not in said, said
    said = message(await client.post("/v1/runs", content=run_body(payload=b'"\\ud800"')))
    assert said.startswith("the body is not valid JSON: a string holds a lone UTF-16 ")
    assert "(\\ud800 at byte 27," in said  # after {"name":"email","payload":"
    # A low surrogate alone, or a high one before another escape: msgspec names it already.
    for payload in (b'"\\udc00"', b'"\\ud800\\u0041"'):
        said = message(await client.post("/v1/runs", content=run_body(payload=payload)))
        assert "invalid utf-16 surrogate pair" in said, said
    # A body cut short is still called so.
    said = message(await client.post("/v1/runs", content=b'{"name":"email","payload":"\\ud8'))
    assert "truncated" in said
    # A pair, and an escaped backslash before `ud800`, are fine.
    for payload in (b'"\\ud83d\\ude00"', b'"\\\\ud800"'):
        response = await client.post("/v1/runs", content=run_body(payload=payload))
        assert response.status_code == 202, response.text


async def test_a_browser_on_another_origin_cannot_write(
    client: httpx.AsyncClient, env: LocalEnvironment
) -> None:
    # What a page on another site makes a browser send without a CORS preflight (found by
    # outside testing: such a page created runs, paused a job and deleted the finished runs of
    # a `kumofire-jobs dev` without a token).
    done = await env.jobs.create("email")
    cross_site = {"sec-fetch-site": "cross-site", "content-type": "text/plain"}
    attempts: list[tuple[str, str, dict[str, str], bytes | None]] = [
        ("POST", "/v1/runs", cross_site, b'{"name":"email"}'),
        ("POST", "/v1/runs", {"sec-fetch-site": "same-site"}, b'{"name":"email"}'),
        ("POST", "/v1/runs:delete", {"sec-fetch-site": "cross-site"}, b'{"status":"queued"}'),
        ("POST", "/v1/jobs/email/pause", {"sec-fetch-site": "cross-site"}, None),
        ("POST", f"/v1/runs/{done.kumofire_job_run_id}/cancel", {"origin": "http://evil"}, None),
        ("DELETE", "/v1/schedules/by-key/k", {"origin": "null"}, None),
    ]
    before = await env.jobs.counts()
    for method, path, headers, body in attempts:
        response = await client.request(method, path, headers=headers, content=body)
        assert error_of(response) == (403, "cross_origin"), (method, path, headers)
    assert await env.jobs.counts() == before
    job = await env.jobs.get_job("email")
    assert job is not None and job.paused is False
    run = await env.jobs.get(done.kumofire_job_run_id)
    assert run is not None and run.status != "canceled"

    # The dashboard (its own origin), a typed-in request and programs (no such header) write.
    json_type = {"content-type": "application/json"}
    for headers in (
        {"sec-fetch-site": "same-origin", **json_type},
        {"sec-fetch-site": "none", **json_type},
        {"origin": "http://test", **json_type},
        json_type,
    ):
        response = await client.post("/v1/runs", headers=headers, content=b'{"name":"email"}')
        assert response.status_code == 202, (headers, response.text)
    # Reading is not refused: without CORS headers the browser shows the answer to no one.
    listed = await client.get("/v1/runs", headers={"sec-fetch-site": "cross-site"})
    assert listed.status_code == 200


async def test_a_body_declared_as_something_but_json_is_refused(
    client: httpx.AsyncClient, env: LocalEnvironment
) -> None:
    body = b'{"name":"email"}'
    for content_type in (
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",  # curl -d without -H
        "multipart/form-data; boundary=x",
        "application/xml",
        "",
    ):
        declared = {"content-type": content_type}
        response = await client.post("/v1/runs", headers=declared, content=body)
        assert error_of(response) == (415, "unsupported_media_type"), content_type
        assert "content-type: application/json" in response.json()["error"]["message"]
        for path, bulk in (("/v1/runs:batch", b'{"runs":[' + body + b"]}"),
                           ("/v1/runs:cancel", b'{"name":"email"}')):  # fmt: skip
            refused = await client.post(path, headers={"content-type": content_type}, content=bulk)
            assert error_of(refused) == (415, "unsupported_media_type"), (path, content_type)
    assert (await env.jobs.counts())["queued"] + (await env.jobs.counts())["scheduled"] == 0
    for content_type in ("application/json", "Application/JSON; charset=utf-8",
                         "application/merge-patch+json"):  # fmt: skip
        declared = {"content-type": content_type}
        response = await client.post("/v1/runs", headers=declared, content=body)
        assert response.status_code == 202, content_type
    # No content-type at all: a program's raw body, read as JSON.
    assert (await client.post("/v1/runs", content=body)).status_code == 202


async def test_a_server_on_loopback_answers_to_loopback_names_only(env: LocalEnvironment) -> None:
    # A page whose DNS name is rebound to 127.0.0.1 calls `kumofire-jobs dev` as its own
    # origin (Sec-Fetch-Site: same-origin) and reads the answers: only the Host header shows it.
    transport = httpx.ASGITransport(app=create_app(lambda request: env.jobs, loopback=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for host in ("rebind.example:8787", "rebind.example", "127.0.0.1.nip.io:8787", "x:y:z"):
            same_origin = {"host": host, "sec-fetch-site": "same-origin"}
            for method, path in (("GET", "/v1/runs"), ("POST", "/v1/jobs/email/pause")):
                refused = await client.request(method, path, headers=same_origin)
                assert error_of(refused) == (403, "cross_origin"), (host, method)
        for host in ("127.0.0.1:8787", "localhost:8787", "LOCALHOST", "[::1]:8787",
                     "app.localhost:8787", "localhost.", "127.0.0.2"):  # fmt: skip
            answered = await client.get("/v1/runs", headers={"host": host})
            assert answered.status_code == 200, host
        assert (await client.get("/ui/", headers={"host": "rebind.example"})).status_code == 200
    job = await env.jobs.get_job("email")
    assert job is not None and job.paused is False
    # Without `loopback` (a Worker; dev on --host 0.0.0.0), any name is answered.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(lambda request: env.jobs)),
        base_url="http://jobs.example.com",
    ) as client:
        assert (await client.get("/v1/runs")).status_code == 200
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.5")] == [
        True, True, True, True, True,
    ]  # fmt: skip
    assert [is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.com")] == [
        False, False, False, False,
    ]  # fmt: skip
