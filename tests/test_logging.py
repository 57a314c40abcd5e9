"""One structured event per run state change, as JSON lines off a terminal."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

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
