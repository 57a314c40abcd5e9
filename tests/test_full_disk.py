"""A full data directory (issue 10, defect 2): failed commits keep their backoff, nothing
spins, the repeated error is logged at a bounded rate, starting on a full disk says so in
one line, and once space is freed every accepted run completes.

The disk is simulated at the SQLite connection (`full_disk.FullDisk`): every commit fails
with SQLITE_FULL while it is full. Time is the manual clock; `settle()` raises if the event
loop never goes quiet, so a busy loop fails a test instead of hanging it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog

from kumofire_jobs import JobContext, cli
from kumofire_jobs.core.bindings import MessageBatch
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.delivery import run_message
from kumofire_jobs.core.log import RepeatedLog, configure_logging
from kumofire_jobs.local import disk as local_disk
from kumofire_jobs.local import environment, output_gate, server
from kumofire_jobs.local.d1 import D1Error
from kumofire_jobs.local.durable_objects import (
    ALARM_MAX_RETRIES,
    LocalDurableObjectNamespace,
    LocalDurableObjectState,
)
from kumofire_jobs.local.queue import ConsumerSettings, LocalQueueBroker
from tests.support.batches import FakeBatch, FakeMessage
from tests.support.envs import EnvFactory, noop
from tests.support.faults import FailingNamespace, rewire
from tests.support.full_disk import FullDisk, disk_full_error


class Ticker:
    """A Durable Object whose alarm writes storage and records each run."""

    runs: ClassVar[list[tuple[float, int]]] = []

    def __init__(self, ctx: LocalDurableObjectState, env: Any) -> None:
        self.ctx = ctx
        self.clock: ManualClock = env

    async def arm(self, at_ms: float) -> None:
        await self.ctx.storage.setAlarm(at_ms)

    async def alarm(self, info: Any) -> None:
        Ticker.runs.append((self.clock.now(), info.retryCount))
        await self.ctx.storage.put("ran", len(Ticker.runs))


async def ticker_namespace(clock: ManualClock, path: Path) -> LocalDurableObjectNamespace:
    Ticker.runs = []
    ns = LocalDurableObjectNamespace(Ticker, path=path, clock=clock, env=clock)
    await ns.start()
    return ns


# --- Durable Object alarms ------------------------------------------------------------------


async def test_alarm_whose_commit_fails_is_retried_with_the_platform_backoff(
    clock: ManualClock, tmp_path: Path
) -> None:
    ns = await ticker_namespace(clock, tmp_path)
    disk = FullDisk()
    ns._db = disk.wrap(ns._db)
    try:
        start = clock.now()
        await ns.getByName("t").arm(start * 1000 + 1000)
        disk.full = True
        await clock.advance(1 + 2 + 4 + 8 + 16 + 32 + 64 + 64 + 64 - 0.5)
        offsets = [round(at - start, 3) for at, _ in Ticker.runs]
        # The first run, then the platform's 2 s doubling, then the last backoff while the
        # commits keep failing (the alarm is still stored: it is not dropped).
        assert offsets == [1, 3, 7, 15, 31, 63, 127, 191]
        assert [retry for _, retry in Ticker.runs] == [0, 1, 2, 3, 4, 5, 6, 6]
        assert ns.alarm_of("t") == (start + 255) * 1000

        disk.full = False
        await clock.advance(1)
        assert len(Ticker.runs) == 9  # the run whose commit succeeds ends the alarm
        assert ns.alarm_of("t") is None
        await clock.advance(600)
        assert len(Ticker.runs) == 9
    finally:
        await ns.close()


async def test_throwing_alarm_whose_retry_cannot_be_stored_keeps_its_backoff(
    clock: ManualClock, tmp_path: Path
) -> None:
    class Failing(Ticker):
        async def alarm(self, info: Any) -> None:
            Ticker.runs.append((self.clock.now(), info.retryCount))
            raise RuntimeError("handler failed")

    Ticker.runs = []
    ns = LocalDurableObjectNamespace(Failing, path=tmp_path, clock=clock, env=clock)
    await ns.start()
    disk = FullDisk()
    ns._db = disk.wrap(ns._db)
    try:
        start = clock.now()
        await ns.getByName("t").arm(start * 1000)
        disk.full = True
        await clock.advance(2 + 4 + 8 + 16 + 32 + 64 + 1)
        offsets = [round(at - start, 3) for at, _ in Ticker.runs]
        assert offsets == [0, 2, 6, 14, 30, 62, 126]
        assert [retry for _, retry in Ticker.runs] == list(range(ALARM_MAX_RETRIES + 1))
    finally:
        await ns.close()


# --- The queue ------------------------------------------------------------------------------


@pytest.fixture(params=["alone", "grouped"])
def commit_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Writes commit at once when nothing else is ready, else with the turn's group commit:
    test both ways of failing."""
    if request.param == "grouped":
        monkeypatch.setattr(output_gate, "alone", lambda: False)
    return str(request.param)


async def broker_on(
    disk: FullDisk, clock: ManualClock, path: Path, handler: Any, **settings: Any
) -> LocalQueueBroker:
    broker = LocalQueueBroker(path, clock)
    broker._db = disk.wrap(broker._db)
    parsed = ConsumerSettings.from_wrangler({"queue": "q", "max_batch_timeout": 0, **settings})
    broker.add_consumer("q", handler, parsed)
    await broker.start()
    return broker


async def test_delivery_whose_commit_fails_waits_and_is_not_counted(
    clock: ManualClock, tmp_path: Path, commit_mode: str
) -> None:
    seen: list[tuple[float, int]] = []

    async def handler(batch: MessageBatch) -> None:
        seen.extend((clock.now(), m.attempts) for m in batch.messages)

    disk = FullDisk()
    broker = await broker_on(disk, clock, tmp_path / "q.sqlite", handler)
    try:
        start = clock.now()
        disk.full = True
        with pytest.raises(sqlite3.OperationalError):
            await broker.producer("q").send({"n": 0})  # the sender is told
        disk.full = False
        await broker.producer("q").send({"n": 1})
        disk.full = True
        await clock.advance(30)
        # The delivery could not be recorded, so it did not happen: no handler ran, and it
        # was tried again after a backoff (2 s, 4 s, 8 s, 16 s), not in a loop.
        assert seen == []
        assert disk.refused <= 6
        disk.full = False
        await clock.advance(60)
        assert [attempts for _, attempts in seen] == [1]
        assert seen[0][0] - start >= 30
    finally:
        await broker.stop(cancel_in_flight=True)
        broker.close()


async def test_a_commit_that_succeeds_ends_the_backoff(
    clock: ManualClock, tmp_path: Path, commit_mode: str
) -> None:
    seen: list[Any] = []

    async def handler(batch: MessageBatch) -> None:
        seen.extend(m.body for m in batch.messages)

    disk = FullDisk()
    broker = await broker_on(disk, clock, tmp_path / "q.sqlite", handler)
    try:
        await broker.producer("q").send("first", {"delaySeconds": 1})
        disk.full = True
        await clock.advance(20)  # its delivery fails at 1 s, 3 s, 7 s, 15 s: next at 31 s
        assert seen == []
        disk.full = False
        await broker.producer("q").send("second")  # space was freed: this commit succeeds
        await clock.advance(0.001)
        assert sorted(seen) == ["first", "second"]
    finally:
        await broker.stop(cancel_in_flight=True)
        broker.close()


async def test_settlement_whose_commit_fails_keeps_the_retry_delay_and_count(
    clock: ManualClock, tmp_path: Path, commit_mode: str
) -> None:
    seen: list[tuple[float, Any, int]] = []
    disk = FullDisk()

    async def handler(batch: MessageBatch) -> None:
        for message in batch.messages:
            seen.append((clock.now(), message.body, message.attempts))
            if message.body == "retry" and message.attempts == 1:
                message.retry({"delaySeconds": 30})
            else:
                message.ack()
        disk.full = len(seen) == 2  # the first settlement cannot be stored

    broker = await broker_on(disk, clock, tmp_path / "q.sqlite", handler, max_batch_size=2)
    try:
        start = clock.now()
        await broker.producer("q").sendBatch([{"body": "retry"}, {"body": "ack"}])
        await clock.advance(1)
        assert disk.refused >= 1
        disk.full = False
        await clock.advance(120)
        # Retried 30 s after its first delivery, as asked, and counted as a second attempt;
        # the acked message is not delivered again.
        assert [(round(at - start), body, n) for at, body, n in seen] == [
            (0, "retry", 1),
            (0, "ack", 1),
            (30, "retry", 2),
        ]
        assert await broker.depth("q") == 0
    finally:
        await broker.stop(cancel_in_flight=True)
        broker.close()


# --- The runtime's retry of a message -------------------------------------------------------


async def test_a_message_the_runtime_cannot_consume_is_retried_with_a_growing_delay(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    async def hello(ctx: JobContext) -> None:
        pass

    env = await make_env({"hello": hello})
    created = await env.jobs.create("hello", delay=3600)
    # The coordinator cannot be reached (its storage refuses writes, say).
    rewire(env, coordinator=FailingNamespace(env.JOB_COORDINATOR, "lease"))
    messages = [FakeMessage(run_message(created.kumofire_job_run_id), n) for n in (1, 2, 3, 9)]
    await env.runtime.consume_batch(FakeBatch(messages), env.resources)
    # The message comes back after 2 s, 4 s, 8 s, ... (at most a minute), not at once, when
    # it would most likely fail again.
    assert [m.settled for m in messages] == [
        ("retry", {"delaySeconds": 2}),
        ("retry", {"delaySeconds": 4}),
        ("retry", {"delaySeconds": 8}),
        ("retry", {"delaySeconds": 60}),
    ]


# --- Logging a repeated error ---------------------------------------------------------------


async def test_repeated_log_logs_the_first_then_a_count_at_most_every_interval(
    clock: ManualClock,
) -> None:
    repeats = RepeatedLog(clock, interval=10.0)
    assert repeats.check("full") == 0
    assert [repeats.check("full") for _ in range(5)] == [None] * 5
    assert repeats.check("other") == 0  # another error is not held back
    await clock.advance(9.9)
    assert repeats.check("full") is None
    await clock.advance(0.1)
    assert repeats.check("full") == 6  # the summary: six suppressed since the last line
    assert repeats.check("full") is None
    await clock.advance(10)
    assert repeats.check("full") == 1


async def test_repeated_log_stays_bounded(clock: ManualClock) -> None:
    repeats = RepeatedLog(clock, interval=10.0, max_keys=8)
    for n in range(100):
        assert repeats.check(n) == 0
        assert len(repeats._seen) <= 8


async def test_alarms_failing_on_a_full_disk_log_a_bounded_number_of_lines(
    clock: ManualClock, tmp_path: Path
) -> None:
    ns = await ticker_namespace(clock, tmp_path)
    disk = FullDisk()
    ns._db = disk.wrap(ns._db)
    try:
        for n in range(50):
            await ns.getByName(f"t{n}").arm(clock.now() * 1000 + 1000 + n)
        disk.full = True
        with structlog.testing.capture_logs() as events:
            await clock.advance(120)
        assert len(Ticker.runs) == 50 * 6  # each alarm ran and was retried 5 times
        lines = [e for e in events if e["event"] == "durable_object.commit_failed"]
        # One line when the error first shows, then at most one every 10 s with a count.
        assert 1 <= len(lines) <= 13
        assert any(e["suppressed"] for e in lines)
        assert not any(e["exc_info"] for e in lines)  # a full disk: no traceback
        disk.full = False
    finally:
        await ns.close()


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The runtime's structured log as `kumofire-jobs dev` writes it off a terminal."""
    stream = io.StringIO()
    configure_logging(stream=stream)
    yield stream
    structlog.reset_defaults()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]  # each line JSON


async def test_a_coordinator_alarm_failing_on_a_full_disk_logs_one_json_line(
    make_env: EnvFactory,
    clock: ManualClock,
    json_log: io.StringIO,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = await make_env({"work": noop})
    disk = FullDisk()
    disk.install(env)
    run = await env.jobs.create("work", delay=10)
    await clock.advance(1)  # armed
    disk.full = True
    capsys.readouterr()
    await clock.advance(60)  # the alarm fires and is retried, every try failing
    failures = [e for e in json_lines(json_log) if e["event"] == "durable_object.alarm_failed"]
    assert failures, json_log.getvalue()
    for failure in failures:
        assert failure["key"] == run.kumofire_job_run_id
        assert "database or disk is full" in failure["error"]
        assert "exception" not in failure  # a full disk: one line, no traceback
    assert "Traceback" not in capsys.readouterr().err
    disk.full = False


async def test_an_alarm_failing_otherwise_keeps_its_traceback_in_its_line(
    clock: ManualClock, tmp_path: Path, json_log: io.StringIO
) -> None:
    class Failing(Ticker):
        async def alarm(self, info: Any) -> None:
            raise RuntimeError("handler failed")

    ns = LocalDurableObjectNamespace(Failing, path=tmp_path, clock=clock, env=clock)
    await ns.start()
    try:
        await ns.getByName("t").arm(clock.now() * 1000)
        await clock.advance(1)
    finally:
        await ns.close()
    (failure,) = [e for e in json_lines(json_log) if e["event"] == "durable_object.alarm_failed"]
    assert failure["key"] == "t" and failure["error"] == "RuntimeError: handler failed"
    assert failure["exception"].startswith("Traceback") and "handler failed" in failure["exception"]


# --- Starting on a full disk ----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """`kumofire-jobs dev` configures logging for the process: not for the test process."""
    monkeypatch.setattr(server, "configure_logging", lambda **options: None)


def _refuse(error: BaseException) -> Any:
    def opener(*args: Any, **kwargs: Any) -> Any:
        raise error

    return opener


@pytest.mark.parametrize("command", ["dev", "migrate"])
def test_starting_on_a_full_disk_exits_with_one_line(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(environment, "LocalD1Database", _refuse(disk_full_error()))
    data_dir = tmp_path / "data"
    argv = [command, "--data-dir", str(data_dir)] + (["--port", "0"] if command == "dev" else [])
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err == (
        f"kumofire-jobs: the data directory {data_dir} is full (database or disk is full); "
        "free space and start again\n"
    )


def test_migrations_failing_on_a_full_disk_exit_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def full(db: Any) -> Any:
        try:
            raise disk_full_error()
        except sqlite3.Error as error:
            raise D1Error("D1_ERROR: database or disk is full: SQLITE_FULL") from error

    monkeypatch.setattr(environment, "apply_migrations", full)
    assert cli.main(["dev", "--data-dir", str(tmp_path), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is full (database or disk is full)" in err


def test_an_io_error_with_no_space_left_is_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # SQLite says "disk I/O error" when it cannot create a database's -wal or -shm file.
    monkeypatch.setattr(
        environment, "LocalD1Database", _refuse(sqlite3.OperationalError("disk I/O error"))
    )
    monkeypatch.setattr(local_disk, "free_bytes", lambda path: 0)
    assert cli.main(["migrate", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"kumofire-jobs: the data directory {tmp_path} is full (disk I/O error, 0 bytes free); "
        "free space and start again\n"
    )


def test_dev_does_not_start_on_a_data_directory_with_no_room_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A directory whose -wal and -shm files exist opens without writing: check the space.
    monkeypatch.setattr(local_disk, "free_bytes", lambda path: 4096)
    assert cli.main(["dev", "--data-dir", str(tmp_path), "--port", "0"]) == 1
    assert capsys.readouterr().err == (
        f"kumofire-jobs: the data directory {tmp_path} is full (4096 bytes free); "
        "free space and start again\n"
    )


def test_other_storage_errors_keep_their_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        environment, "LocalD1Database", _refuse(sqlite3.OperationalError("disk I/O error"))
    )
    monkeypatch.setattr(local_disk, "free_bytes", lambda path: 10**9)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        cli.main(["dev", "--data-dir", str(tmp_path), "--port", "0"])


# --- A real full filesystem -----------------------------------------------------------------


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (needs root and a kernel that lets it mount)."""
    mount = shutil.which("mount")
    if mount is None or os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root and mount(8)")
    point = tmp_path / "small"
    point.mkdir()
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mount is not permitted here: {done.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _fill(directory: Path) -> None:
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # no space left
    finally:
        os.close(fd)


@pytest.mark.parametrize("data", ["new", "existing", "killed"])
def test_dev_on_a_real_full_filesystem_exits_with_one_line(
    small_filesystem: Path, data: str
) -> None:
    data_dir = small_filesystem / "data"
    if data == "killed":  # its -wal and -shm files stay behind
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kumofire_jobs.cli",
                "dev",
                "--port",
                "0",
                "--data-dir",
                data_dir,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert server.stdout is not None
            for line in server.stdout:  # log lines, then the address once it serves
                if "listening" in line:
                    break
        finally:
            server.kill()
            server.wait()
            if server.stdout is not None:
                server.stdout.close()
        assert (data_dir / "d1" / "jobs.sqlite-wal").exists()
    if data == "existing":
        done = subprocess.run(
            [sys.executable, "-m", "kumofire_jobs.cli", "migrate", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    _fill(small_filesystem)
    done = subprocess.run(
        [sys.executable, "-m", "kumofire_jobs.cli", "dev", "--port", "0", "--data-dir", data_dir],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"kumofire-jobs: the data directory {data_dir} is full (")
    assert done.stderr.endswith("; free space and start again\n")
    assert done.stderr.count("\n") == 1, done.stderr


# --- Everything accepted completes once space is freed --------------------------------------


async def test_runs_accepted_before_the_disk_filled_all_complete_once_it_is_freed(
    make_env: EnvFactory,
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    running: dict[str, int] = {}
    overlaps: list[str] = []
    executions: list[str] = []

    async def work(ctx: JobContext) -> None:
        run_id = ctx.job.id
        running[run_id] = running.get(run_id, 0) + 1
        if running[run_id] > 1:
            overlaps.append(run_id)
        executions.append(run_id)
        try:
            await clock.sleep_until(clock.now() + 5)
        finally:
            running[run_id] -= 1

    env = await make_env({"work": work})
    disk = FullDisk()
    disk.install(env)
    runs = [await env.jobs.create("work", payload={"n": n}) for n in range(10)]  # due now
    runs += [await env.jobs.create("work", delay=10 + n, payload={"n": n}) for n in range(20)]
    await clock.advance(1)  # the first runs are queued and running when the disk fills
    disk.full = True
    capsys.readouterr()
    caplog.clear()
    await clock.advance(600)  # ten minutes on a full disk: settle() fails on a busy loop
    assert disk.refused < 2000
    # The repeated errors are logged at a bounded rate: a few events a minute per kind
    # (the cron's reconciliation, which fails too, logs once a minute).
    out = capsys.readouterr().out
    events = len(re.findall(r"^(\d{4}-\d\d-\d\d|\{)", out, re.MULTILINE))
    assert events + len(caplog.records) < 300

    disk.full = False
    await clock.advance(900)
    now = [await env.jobs.get(r.kumofire_job_run_id) for r in runs]
    statuses = [run.status if run is not None else None for run in now]
    assert statuses == ["succeeded"] * len(runs)
    assert overlaps == []
    assert set(executions) == {r.kumofire_job_run_id for r in runs}
