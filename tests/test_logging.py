"""One structured event per run state change, as JSON lines off a terminal."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from kumofire_jobs import JobContext
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.log import MAX_FIELD_CHARS, configure_logging, limit_fields
from tests.support.envs import EnvFactory


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()  # not a terminal: JSON
    configure_logging(stream=stream)
    yield stream
    structlog.reset_defaults()


async def test_every_state_change_is_one_json_event(
    make_env: EnvFactory, clock: ManualClock, log_stream: io.StringIO
) -> None:
    async def flaky(ctx: JobContext) -> None:
        if ctx.job.attempt == 1:
            raise RuntimeError("first attempt fails")

    env = await make_env({"flaky": flaky})
    created = await env.jobs.create("flaky")
    await clock.advance(1)
    events = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    ours = [e for e in events if e.get("run_id") == created.kumofire_job_run_id]
    assert [(e["event"], e["attempt"]) for e in ours] == [
        ("run.created", 0),
        ("run.queued", 0),
        ("run.started", 1),
        ("run.retried", 1),
        ("run.queued", 1),
        ("run.started", 2),
        ("run.succeeded", 2),
    ]
    for event in ours:
        assert event["job"] == "flaky"
        assert event["level"] in {"info", "warning"}
        assert event["timestamp"].endswith("Z")
    finished = [e for e in ours if e["event"] in {"run.retried", "run.succeeded"}]
    assert [e["outcome"] for e in finished] == ["retried", "succeeded"]
    assert all(isinstance(e["duration_ms"], int) for e in finished)
    assert finished[0]["error"] == "RuntimeError: first attempt fails"


def test_a_long_field_keeps_both_ends_so_a_traceback_keeps_its_exception_line() -> None:
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 1_000
    traceback += "OSError: [Errno 28] No space left on device"
    event = limit_fields(None, "error", {"event": "http.internal_error", "exception": traceback})
    cut = event["exception"]
    assert cut.startswith("Traceback (most recent call last):")
    assert cut.endswith("OSError: [Errno 28] No space left on device")
    assert f"[{len(traceback)} chars]" in cut and len(cut) < MAX_FIELD_CHARS + 50


def test_a_json_line_has_the_level_the_time_the_exception_and_bounded_fields(
    log_stream: io.StringIO,
) -> None:
    # The JSON configuration renders in one processor what four did in a chain: the same
    # fields, the exception formatted, long fields cut, structured ones sized.
    log = structlog.get_logger("kumofire_jobs")
    try:
        raise ValueError("boom")
    except ValueError:
        log.error(
            "x.failed", note="n" * (MAX_FIELD_CHARS + 1), blob=list(range(1000)), exc_info=True
        )
    log.info("x.done", count=3)
    failed, done = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert failed["event"] == "x.failed" and failed["level"] == "error"
    assert "exc_info" not in failed
    assert failed["exception"].startswith("Traceback") and "ValueError: boom" in failed["exception"]
    assert f"[{MAX_FIELD_CHARS + 1} chars]" in failed["note"]
    assert failed["blob"].startswith("<list of ")
    assert done == {"event": "x.done", "count": 3, "level": "info", "timestamp": done["timestamp"]}
    assert done["timestamp"].endswith("Z") and len(done["timestamp"]) == len(
        "2026-01-01T00:00:00.000000Z"
    )


class _CountingStream(io.StringIO):
    """A non-terminal stream that counts its flushes and what was in it at each."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[int] = []

    def flush(self) -> None:
        self.flushed.append(len(self.getvalue().splitlines()))


def _loop_with_time() -> tuple[asyncio.AbstractEventLoop, list[float]]:
    """An event loop whose timers follow a time the test sets (its callbacks, not a sleep)."""
    loop = asyncio.new_event_loop()
    now = [0.0]
    loop.time = lambda: now[0]  # type: ignore[method-assign]
    return loop, now


def test_lines_of_many_turns_share_one_flush_within_the_delay() -> None:
    stream = _CountingStream()
    configure_logging(stream=stream, flush_delay=0.05)
    log = structlog.get_logger("a")
    other = structlog.get_logger("b")  # every logger of the configuration shares the flush

    async def turns(now: list[float]) -> None:
        log.info("one")
        await asyncio.sleep(0)
        other.info("two")
        await asyncio.sleep(0)
        assert stream.flushed == []  # written, not flushed: the delay has not passed
        now[0] += 0.05
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert stream.flushed == [2]  # one flush for both
        log.info("three")
        now[0] += 0.05
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert stream.flushed == [2, 3]
        log.info("pending")  # its flush is still waiting when the loop closes

    try:
        loop, now = _loop_with_time()
        loop.run_until_complete(turns(now))
        loop.close()
        # A loop closed with a flush pending does not hold the next loop's lines back.
        log.info("four")
        assert stream.flushed == [2, 3, 5]  # outside a loop: flushed by itself
        loop, now = _loop_with_time()
        loop.run_until_complete(_log_and_wait(log, now))
        loop.close()
        assert stream.flushed == [2, 3, 5, 6]
    finally:
        structlog.reset_defaults()


async def _log_and_wait(log: structlog.typing.FilteringBoundLogger, now: list[float]) -> None:
    log.info("five")
    now[0] += 0.05
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_the_worker_flushes_at_the_end_of_the_turn() -> None:
    stream = _CountingStream()
    configure_logging(stream=stream, json=True, flush_delay=None)  # as the Worker's
    log = structlog.get_logger("w")

    async def turn() -> None:
        log.info("one")
        log.info("two")
        assert stream.flushed == []
        await asyncio.sleep(0)
        assert stream.flushed == [2]

    try:
        asyncio.run(turn())
    finally:
        structlog.reset_defaults()


def test_a_stream_closed_before_its_flush_is_left_alone() -> None:
    stream = io.TextIOWrapper(io.BytesIO())  # a file's stream: flushing it once closed raises
    configure_logging(stream=stream, flush_delay=0.05)
    log = structlog.get_logger("c")

    async def close_after_a_line(now: list[float]) -> None:
        log.info("last")
        stream.close()  # as a program closes its log file while the flush waits
        now[0] += 0.05
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    errors: list[dict[str, Any]] = []
    try:
        loop, now = _loop_with_time()
        loop.set_exception_handler(lambda _, context: errors.append(context))
        loop.run_until_complete(close_after_a_line(now))
        loop.close()
    finally:
        structlog.reset_defaults()
    assert errors == []
