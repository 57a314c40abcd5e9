"""One process at a time on a data directory: a second is refused at once, and the lock goes
with its holder, even one killed with SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kumofire_jobs import create_runtime
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.data_dir_lock import DataDirectoryInUseError
from kumofire_jobs.local.environment import LocalEnvironment

ROOT = Path(__file__).resolve().parent.parent

# A script, as a user writes one, opening the data directory that another process may hold.
SCRIPT = """
import asyncio, sys
from kumofire_jobs import create_runtime
from kumofire_jobs.local.environment import LocalEnvironment
try:
    env = LocalEnvironment(create_runtime({}), sys.argv[1])
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}", flush=True)
    sys.exit(3)
print("opened", flush=True)
if sys.argv[2] == "hold":
    sys.stdin.read()  # until killed
asyncio.run(env.close())
"""


def open_in_another_process(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(data_dir), "close"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def hold_in_another_process(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(data_dir), "hold"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip


async def test_a_second_process_is_refused_until_the_first_closes(
    tmp_path: Path, clock: ManualClock
) -> None:
    env = LocalEnvironment(create_runtime({}, clock=clock), tmp_path)
    await env.start()
    refused = open_in_another_process(tmp_path)
    assert refused.returncode == 3, refused.stderr
    assert refused.stdout.startswith("DataDirectoryInUseError: the data directory ")
    assert "in use by another process" in refused.stdout
    assert "HTTP API (POST /v1/runs)" in refused.stdout
    with pytest.raises(DataDirectoryInUseError, match="another environment of this process"):
        LocalEnvironment(create_runtime({}, clock=clock), tmp_path)

    await env.stop()
    opened = open_in_another_process(tmp_path)
    assert (opened.returncode, opened.stdout) == (0, "opened\n"), opened.stderr


async def test_the_lock_of_a_process_killed_with_sigkill_is_gone(
    tmp_path: Path, clock: ManualClock
) -> None:
    with hold_in_another_process(tmp_path) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "opened\n"
        with pytest.raises(DataDirectoryInUseError, match=f"pid {holder.pid}"):
            LocalEnvironment(create_runtime({}, clock=clock), tmp_path)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    env = LocalEnvironment(create_runtime({}, clock=clock), tmp_path)
    await env.start()
    await env.stop()
