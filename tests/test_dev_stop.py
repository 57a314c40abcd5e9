"""How `kumofire-jobs dev` stops, in a real process: once the last running handler is done,
it exits with nothing left to wait for: no poll, no sleep, between that handler's end and the
exit (`tests/support/dev_probe.py` reports every `asyncio.sleep` the process makes)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dev_server import DevServer

pytestmark = pytest.mark.slow

PROBE = [sys.executable, "-m", "tests.support.dev_probe", "dev"]


@pytest.fixture
def servers() -> Iterator[list[DevServer]]:
    started: list[DevServer] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_after_the_last_handler_ends_the_process_exits_without_waiting(
    tmp_path: Path, servers: list[DevServer], sig: signal.Signals
) -> None:
    server = DevServer(tmp_path / "data", "--app", "tests.support.dev_app:quiet", command=PROBE)
    servers.append(server)
    server.http.post("/v1/runs", json={"name": "marked", "payload": 1.0})
    server.http.post("/v1/runs", json={"name": "marked", "payload": 1.5})
    server.wait_for(lambda: server.counts()["running"] == 2)
    server.process.send_signal(sig)
    server.wait_for_line("Stopping: waiting up to 10 s for 2 running runs to finish")
    # What sleeps before this was armed before it (uvicorn's grace for open connections to
    # finish their answer, the runs' timers); the lease is long enough that none renews.
    assert server.stop(None) == 0
    lines = server.output.splitlines()
    last_done = max(i for i, line in enumerate(lines) if '"event":"marked.done"' in line)
    after = lines[last_done + 1 :]
    assert [line for line in after if line.startswith("sleep: ")] == [], after
    assert sum('"event":"run.succeeded"' in line for line in lines) == 2
    assert after[-1] == "Stopped."
