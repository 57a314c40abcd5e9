"""`kumofire-jobs dev` as a user runs it: a real process, real HTTP, killed and restarted.

These tests wait on a real process, so they poll its HTTP API with a deadline; the timing
they depend on is the short lease of `tests/support/dev_app.py`, not a sleep.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kumofire_jobs.core.ids import IdFactory
from kumofire_jobs.core.migrations import SCHEMA_VERSION
from tests.support.dev_server import ROOT, DevServer

pytestmark = pytest.mark.slow


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[DevServer]]:
    started: list[DevServer] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)


def test_quick_start_demo_runs_a_job_and_stops_on_sigterm(
    tmp_path: Path, servers: list[DevServer]
) -> None:
    server = DevServer(tmp_path / "data")
    servers.append(server)
    assert server.url.startswith("http://127.0.0.1:")
    assert server.http.get("/v1/health").json() == {
        "status": "ok",
        "schema_version": SCHEMA_VERSION,
    }
    created = server.http.post("/v1/runs", json={"name": "hello", "payload": {"hi": 1}})
    assert created.status_code == 202
    run_id = created.json()["kumofire_job_run_id"]
    run = server.wait_for(
        lambda: (r := server.http.get(f"/v1/runs/{run_id}").json())["status"] == "succeeded" and r
    )
    assert run["attempt"] == 1
    # On loopback it answers to loopback names only (DNS rebinding; tests/test_http_hostile.py).
    rebound = server.http.get("/v1/runs", headers={"host": "rebind.example:8787"})
    assert (rebound.status_code, rebound.json()["error"]["code"]) == (403, "cross_origin")
    assert server.http.get("/v1/runs", headers={"host": "localhost"}).status_code == 200
    assert server.stop(signal.SIGTERM) == 0


def test_quick_start_pause_and_a_concurrency_limit(
    tmp_path: Path, servers: list[DevServer]
) -> None:
    """README's three commands: pause `slow`, create five runs of it, resume: they wait while
    paused, then run at most two at once (its `concurrency=2`) and all succeed."""
    server = DevServer(tmp_path / "data")
    servers.append(server)
    paused = server.http.post("/v1/jobs/slow/pause").json()
    assert paused["paused"] is True and paused["options"]["concurrency"] == 2
    batch = server.http.post("/v1/runs:batch", json={"runs": [{"name": "slow"}] * 5})
    assert batch.status_code == 202
    assert server.http.get("/v1/jobs/slow").json()["counts"]["succeeded"] == 0
    assert server.http.post("/v1/jobs/slow/resume").json()["paused"] is False
    most = 0

    def all_succeeded() -> bool:
        nonlocal most
        counts = server.http.get("/v1/jobs/slow").json()["counts"]
        most = max(most, counts["running"])
        return bool(counts["succeeded"] == 5)

    server.wait_for(all_succeeded, timeout=40)
    assert 1 <= most <= 2
    assert server.stop(signal.SIGTERM) == 0


def test_sigkill_with_runs_pending_and_in_flight_loses_nothing(
    tmp_path: Path, servers: list[DevServer]
) -> None:
    data = tmp_path / "data"
    first = DevServer(data, "--app", "tests.support.dev_app:runtime")
    servers.append(first)
    in_flight = [
        first.http.post("/v1/runs", json={"name": "sleep", "payload": 2}).json() for _ in range(5)
    ]
    pending = [
        first.http.post("/v1/runs", json={"name": "sleep", "delay": 1.5}).json() for _ in range(5)
    ]
    first.wait_for(lambda: first.counts()["running"] == 5)
    first.stop(signal.SIGKILL)

    second = DevServer(data, "--app", "tests.support.dev_app:runtime")
    servers.append(second)
    second.wait_for(lambda: second.counts()["succeeded"] == 10, timeout=40)
    assert second.counts() == {
        "waiting": 0, "scheduled": 0, "queued": 0, "running": 0,
        "succeeded": 10, "failed": 0, "canceled": 0,
    }  # fmt: skip
    for created in in_flight:
        run = second.http.get(f"/v1/runs/{created['kumofire_job_run_id']}").json()
        assert run["attempt"] == 2  # the attempt the kill cut off counts
    for created in pending:
        run = second.http.get(f"/v1/runs/{created['kumofire_job_run_id']}").json()
        assert run["attempt"] == 1
    assert second.stop(signal.SIGINT) == 0


def test_ctrl_c_says_what_it_waits_for_and_twice_stops_at_once_losing_nothing(
    tmp_path: Path, servers: list[DevServer]
) -> None:
    data = tmp_path / "data"
    first = DevServer(data, "--app", "tests.support.dev_app:runtime")
    servers.append(first)
    created = [
        first.http.post("/v1/runs", json={"name": "slow_first", "payload": 300}).json()
        for _ in range(2)
    ]
    first.wait_for(lambda: first.counts()["running"] == 2)
    first.process.send_signal(signal.SIGINT)
    first.wait_for_line(
        "Stopping: waiting up to 10 s for 2 running runs to finish (Ctrl-C again to stop now"
    )
    first.process.send_signal(signal.SIGINT)  # stop now: the handlers are cut off
    first.wait_for_line("Stopping now.")
    first.wait_for_line(
        "Stopped: 2 running runs cut off; each runs again at the next start"
        " (the cut-off attempt counts)"
    )
    assert first.stop(None) == 0

    second = DevServer(data, "--app", "tests.support.dev_app:runtime")
    servers.append(second)
    second.wait_for(lambda: second.counts()["succeeded"] == 2)
    for run in created:
        got = second.http.get(f"/v1/runs/{run['kumofire_job_run_id']}").json()
        assert got["attempt"] == 2  # the attempt the stop cut off counts
    second.process.send_signal(signal.SIGINT)
    second.wait_for_line("Stopping.")
    second.wait_for_line("Stopped.")
    assert second.stop(None) == 0


def test_one_ctrl_c_in_a_terminal_running_scripts_dev_waits_for_the_running_runs(
    tmp_path: Path, servers: list[DevServer]
) -> None:
    """The README's `bash scripts/dev` and one Ctrl-C (SIGINT to the terminal's whole process
    group): the server is told once, so it waits for its running runs. Under `uv run` it was
    told twice (the terminal's and uv's forwarded copy) and cut them off."""
    server = DevServer(tmp_path / "data", "--app", "tests.support.dev_app:runtime", script=True)
    servers.append(server)
    server.http.post("/v1/runs", json={"name": "slow_first", "payload": 3})
    server.wait_for(lambda: server.counts()["running"] == 1)
    server.ctrl_c()
    server.wait_for_line("Stopping: waiting up to 10 s for 1 running run to finish")
    assert server.stop(None) == 0
    assert "Stopped." in server.output and "Stopping now." not in server.output


def test_a_run_a_crash_left_unarmed_starts_at_once_and_a_second_server_is_refused(
    tmp_path: Path, servers: list[DevServer]
) -> None:
    data = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-m", "kumofire_jobs.cli", "migrate", "--data-dir", str(data)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    # A run written to D1 by a process killed before it armed the run's coordinator.
    now = int(time.time() * 1000)
    run_id = IdFactory().run_id(now)
    with contextlib.closing(sqlite3.connect(data / "d1" / "jobs.sqlite")) as db, db:
        db.execute(
            "INSERT INTO kumofire_job_runs (id, name, status, payload, attempt, max_attempts, "
            "scheduled_for, created_at, updated_at) VALUES (?, 'sleep', 'scheduled', '0', 0, 3, "
            "?, ?, ?)",
            (run_id, now, now, now),
        )
    server = DevServer(data, "--app", "tests.support.dev_app:runtime")
    servers.append(server)
    listening = time.monotonic()
    run = server.wait_for(
        lambda: (r := server.http.get(f"/v1/runs/{run_id}").json())["status"] == "succeeded" and r,
        timeout=10,  # at once (armed before it listens), not 60-120 s later; 10: a busy CI
    )
    assert (run["attempt"], time.monotonic() - listening < 10) == (1, True)

    refused = subprocess.run(
        [sys.executable, "-m", "kumofire_jobs.cli", "dev", "--port", "0", "--data-dir",
         str(data), "--app", "tests.support.dev_app:runtime"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1
    assert f"is in use by another process (pid {server.process.pid}" in refused.stderr
    assert "HTTP API (POST /v1/runs)" in refused.stderr
    assert server.stop(signal.SIGTERM) == 0


def test_a_route_in_wrangler_toml_reaches_a_worker_run_in_process_with_service(
    tmp_path: Path, servers: list[DevServer]
) -> None:
    # The example handler Worker, as its README runs it: the service's routing var and
    # [[services]] binding in a wrangler.toml, the Worker itself behind --service.
    config = tmp_path / "wrangler.toml"
    config.write_text((ROOT / "examples" / "handler-worker" / "jobs-service.toml").read_text())
    server = DevServer(
        tmp_path / "data", "--config", str(config),
        "--service", "HANDLERS=examples/handler-worker/src/entry.py:Handlers",
    )  # fmt: skip
    servers.append(server)
    flaky = server.http.post(
        "/v1/runs",
        json={"name": "notify", "payload": {"to": "a@example.com", "fail_attempts": 1}},
    ).json()["kumofire_job_run_id"]
    refused = server.http.post(
        "/v1/runs", json={"name": "notify", "payload": {"to": "nobody"}}
    ).json()["kumofire_job_run_id"]
    unknown = server.http.post("/v1/runs", json={"name": "nope"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (422, "unknown_job")

    def finished(run_id: str) -> Any:
        run = server.http.get(f"/v1/runs/{run_id}").json()
        return run["status"] in ("succeeded", "failed") and run

    run = server.wait_for(lambda: finished(flaky))
    assert (run["status"], run["attempt"]) == ("succeeded", 2)  # its first attempt was retried
    run = server.wait_for(lambda: finished(refused))
    assert (run["status"], run["attempt"]) == ("failed", 1)
    assert run["last_error"] == (
        "NonRetryableError: HANDLERS.run_job: ValueError: non_retryable: notify needs an email "
        "address in payload.to, got 'nobody'"
    )
    assert server.stop(signal.SIGTERM) == 0
    assert "remote job 'notify' -> HANDLERS.run_job" in server.output
    assert f'"event": "notify.sent", "run_id": "{flaky}"' in server.output  # the target printed


def test_the_token_in_dev_vars_beside_wrangler_toml_guards_the_api(
    tmp_path: Path, servers: list[DevServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where the docs put a Worker's token for `wrangler dev`: `.dev.vars` over `[vars]`.
    monkeypatch.delenv("KUMOFIRE_API_TOKEN", raising=False)
    config = tmp_path / "wrangler.toml"
    config.write_text('[vars]\nKUMOFIRE_API_TOKEN = "from-vars"\n')
    (tmp_path / ".dev.vars").write_text("KUMOFIRE_API_TOKEN=from-dev-vars\n")
    server = DevServer(tmp_path / "data", "--config", str(config))
    servers.append(server)

    def status(token: str | None) -> int:
        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        return server.http.get("/v1/runs", headers=headers).status_code

    assert (status(None), status("from-vars"), status("from-dev-vars")) == (401, 401, 200)
    (tmp_path / ".dev.vars").unlink()
    assert server.stop(signal.SIGTERM) == 0
    server = DevServer(tmp_path / "data", "--config", str(config))  # [vars] alone
    servers.append(server)
    assert (status(None), status("from-vars")) == (401, 200)
    assert server.stop(signal.SIGTERM) == 0


def test_migrate_command(tmp_path: Path) -> None:
    def migrate(*extra: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "kumofire_jobs.cli", "migrate", "--data-dir", str(tmp_path),
             *extra],
            check=True, capture_output=True, text=True, cwd=ROOT,
        ).stdout  # fmt: skip

    assert "0001_job_runs.sql" in migrate("--dry-run")
    assert "Applied 0001_job_runs.sql" in migrate()
    assert "No migrations to apply" in migrate()


def _health_with_a_header_of(url: str, size: int) -> bytes:
    """The status line of `GET /v1/health` with a header of `size` bytes, sent in 4 KB
    pieces a moment apart, as a network delivers a large request (not in one read)."""
    host, port = url.removeprefix("http://").split(":")
    request = f"GET /v1/health HTTP/1.1\r\nHost: {host}\r\nX-Big: {'a' * size}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        for start in range(0, len(request), 4096):
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.sendall(request[start : start + 4096])
            time.sleep(0.002)
        return conn.recv(4096).split(b"\r\n", 1)[0]


def test_request_headers_up_to_cloudflare_s_128_kib_are_served(
    tmp_path: Path, servers: list[DevServer]
) -> None:
    # uvicorn's h11 refused a request whose headers were over 16 KiB when they came in more
    # than one read (a slow client, a tunnel), and took up to 64 KiB in one read.
    server = DevServer(tmp_path / "data")
    servers.append(server)
    assert _health_with_a_header_of(server.url, 100 * 1024) == b"HTTP/1.1 200 OK"
    assert _health_with_a_header_of(server.url, 140 * 1024) == b"HTTP/1.1 400 Bad Request"
