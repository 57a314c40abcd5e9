"""The D1 contract through the Cloudflare adapter, over the local D1 presented as the Workers
SDK presents the platform's (both the SDK's wrappers and raw JavaScript objects); and the
adapter's own behaviour: conversions and the retry of transient errors."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest

from kumofire_jobs.cloudflare import (
    CloudflareD1Database,
    D1Error,
    D1RetryPolicy,
    is_transient_d1_error,
)
from kumofire_jobs.cloudflare.d1 import CloudflareD1Meta
from kumofire_jobs.local.d1 import LocalD1Database
from tests.contracts.d1_contract import D1Contract, ReopenD1, make_people
from tests.support.fake_sdk import STYLES, FakeD1Database, JsError


class Sleeps:
    """Records backoff sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture(params=STYLES)
def style(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def d1_path(tmp_path: Path) -> Path:
    return tmp_path / "d1.sqlite"


@pytest.fixture
def local_handles() -> Iterator[list[LocalD1Database]]:
    handles: list[LocalD1Database] = []
    yield handles
    for handle in handles:
        handle.close()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def adapt(
    local: LocalD1Database, style: str, sleeps: Sleeps, retry: D1RetryPolicy | None = None
) -> CloudflareD1Database:
    return CloudflareD1Database(
        FakeD1Database(local, style), sleep=sleeps, random=lambda: 1.0, retry=retry
    )


@pytest.fixture
def d1(
    d1_path: Path, style: str, sleeps: Sleeps, local_handles: list[LocalD1Database]
) -> CloudflareD1Database:
    local = LocalD1Database(d1_path)
    local_handles.append(local)
    return adapt(local, style, sleeps)


@pytest.fixture
def reopen_d1(
    d1: CloudflareD1Database,
    d1_path: Path,
    style: str,
    sleeps: Sleeps,
    local_handles: list[LocalD1Database],
) -> ReopenD1:
    async def reopen() -> CloudflareD1Database:
        d1.binding.local.close()
        local = LocalD1Database(d1_path)
        local_handles.append(local)
        return adapt(local, style, sleeps)

    return reopen


class TestCloudflareD1(D1Contract):
    pass


# --- The adapter's own behaviour ------------------------------------------------------------


def fake(d1: CloudflareD1Database) -> FakeD1Database:
    binding = d1.binding
    assert isinstance(binding, FakeD1Database)
    return binding


async def test_results_are_plain_python(d1: CloudflareD1Database) -> None:
    await make_people(d1)
    result = (
        await d1.prepare("INSERT INTO people (name, age) VALUES (?, ?) RETURNING *")
        .bind("ada", None)
        .run()
    )
    assert type(result.results) is list
    assert type(result.results[0]) is dict
    assert result.results == [{"id": 1, "name": "ada", "age": None}]
    assert result["results"] is result.results
    meta = result.meta
    assert isinstance(meta, CloudflareD1Meta)
    assert meta["changes"] == 1
    assert meta.served_by_region == "LOCAL"  # fields the adapter does not name pass too
    with pytest.raises(AttributeError):
        _ = meta.no_such_field
    assert copy.deepcopy(meta).to_dict() == meta.to_dict()


async def test_none_binds_as_null_not_undefined(d1: CloudflareD1Database) -> None:
    # Pyodide passes None as undefined, which D1 refuses (D1_TYPE_ERROR): the adapter sends null.
    assert await d1.prepare("SELECT ? IS NULL AS n").bind(None).first("n") == 1


async def test_blobs_come_back_as_bytes_everywhere(d1: CloudflareD1Database) -> None:
    statement = d1.prepare("SELECT ? AS b, x'' AS empty").bind(b"\x00\x01")
    assert await statement.first() == {"b": b"\x00\x01", "empty": b""}
    assert await statement.first("b") == b"\x00\x01"
    assert (await statement.all()).results == [{"b": b"\x00\x01", "empty": b""}]
    assert await statement.raw() == [[b"\x00\x01", b""]]


async def test_transient_errors_are_retried_with_backoff(
    d1: CloudflareD1Database, sleeps: Sleeps
) -> None:
    fake(d1).fail_next(
        "D1_ERROR: D1 DB is overloaded. Too many requests queued.",
        "Network connection lost.",
        "D1_ERROR: Internal error in D1 DB storage caused object to be reset.",
    )
    assert await d1.prepare("SELECT 1 AS one").first("one") == 1
    assert sleeps.delays == [0.05, 0.1, 0.2]
    assert fake(d1).calls == 4


async def test_retries_are_bounded(
    d1_path: Path, style: str, sleeps: Sleeps, local_handles: list[LocalD1Database]
) -> None:
    local = LocalD1Database(d1_path)
    local_handles.append(local)
    d1 = adapt(
        local, style, sleeps, retry=D1RetryPolicy(max_attempts=3, initial_delay=1, max_delay=1.5)
    )
    fake(d1).fail_next(*["D1_ERROR: D1 DB reset because its code was updated."] * 5)
    with pytest.raises(D1Error, match="reset because its code was updated") as caught:
        await d1.prepare("SELECT 1").run()
    assert caught.value.name == "Error"
    assert sleeps.delays == [1, 1.5]
    assert fake(d1).calls == 3


async def test_permanent_errors_surface_at_once_with_their_message(
    d1: CloudflareD1Database, sleeps: Sleeps
) -> None:
    await make_people(d1)
    insert = d1.prepare("INSERT INTO people (name) VALUES (?)")
    await insert.bind("ada").run()
    with pytest.raises(D1Error) as caught:
        await insert.bind("ada").run()
    assert str(caught.value) == "D1_ERROR: UNIQUE constraint failed: people.name: SQLITE_CONSTRAINT"
    assert isinstance(caught.value.__cause__, JsError)
    assert sleeps.delays == []


async def test_batch_and_exec_are_retried_too(d1: CloudflareD1Database, sleeps: Sleeps) -> None:
    fake(d1).fail_next("Network connection lost.")
    assert (await d1.exec("CREATE TABLE t (x)")).count == 1
    fake(d1).fail_next("D1_ERROR: Cannot resolve D1 DB due to transient issue on remote node.")
    results = await d1.batch(
        [d1.prepare("INSERT INTO t VALUES (1)"), d1.prepare("SELECT x FROM t")]
    )
    assert results[1].results == [{"x": 1}]
    assert len(sleeps.delays) == 2


async def test_batch_takes_only_this_databases_statements(d1: CloudflareD1Database) -> None:
    with pytest.raises(TypeError, match="prepare"):
        await d1.batch([object()])


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("D1_ERROR: D1 DB reset because its code was updated.", True),
        (
            "D1_ERROR: Internal error while starting up D1 DB storage caused object to be reset.",
            True,
        ),
        ("D1_ERROR: Internal error in D1 DB storage caused object to be reset.", True),
        ("Network connection lost.", True),
        ("D1_ERROR: Cannot resolve D1 DB due to transient issue on remote node.", True),
        ("D1_ERROR: Can't read from request stream because client disconnected.", True),
        ("D1_ERROR: D1 DB is overloaded. Requests queued for too long.", True),
        ("D1_ERROR: D1 DB is overloaded. Too many requests queued.", True),
        ("D1_ERROR: internal error; reference = abc123", True),
        ("D1_ERROR: UNIQUE constraint failed: t.x: SQLITE_CONSTRAINT", False),
        (
            "D1_ERROR: D1 DB storage operation exceeded timeout which caused object to be reset.",
            False,
        ),
        ("D1_ERROR: D1 DB's isolate exceeded its memory limit and was reset.", False),
        ("D1_ERROR: D1 DB exceeded its CPU time limit and was reset.", False),
        ("D1_TYPE_ERROR: Type 'undefined' not supported for value 'undefined'", False),
    ],
)
def test_transient_error_classification(message: str, transient: bool) -> None:
    assert is_transient_d1_error(message) is transient


def test_retry_policy_delays() -> None:
    policy = D1RetryPolicy(initial_delay=0.1, max_delay=0.5, multiplier=3)
    assert [policy.delay(n, lambda: 1.0) for n in (1, 2, 3)] == [0.1, pytest.approx(0.3), 0.5]
    assert policy.delay(1, lambda: 0.0) == pytest.approx(0.05)  # jitter: half to full
    assert D1RetryPolicy(jitter=False).delay(1, lambda: 0.0) == 0.05
    with pytest.raises(ValueError, match="max_attempts"):
        D1RetryPolicy(max_attempts=0)
