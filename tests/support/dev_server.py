"""A real `kumofire-jobs dev` process for the tests that need one (tests/test_dev_server.py,
tests/browser/): started on a free port, its output read as it prints it, its HTTP API at
hand, and stopped by signal."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (http://\S+)")


class DevServer:
    def __init__(
        self,
        data_dir: Path,
        *extra: str,
        script: bool = False,
        command: list[str] | None = None,
    ) -> None:
        """`script`: started as the README starts it, `bash scripts/dev`, in a session of its
        own (a terminal's process group: `ctrl_c()` signals the whole group). `command`: the
        command that runs `dev` in its place (`--port`, `--data-dir` and `extra` follow)."""
        if command is None:
            command = (
                ["bash", "scripts/dev"]
                if script
                else [sys.executable, "-m", "kumofire_jobs.cli", "dev"]
            )
        self.process = subprocess.Popen(
            [*command, "--port", "0", "--data-dir", str(data_dir), *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=script,
        )  # fmt: skip
        self.url = self._wait_for_url()
        self.output = ""
        self.http = httpx.Client(base_url=self.url, timeout=5)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _drain(self, timeout: float | None) -> str | None:
        line = self._lines.get(timeout=timeout)
        if line is not None:
            self.output += line
        return line

    def wait_for_line(self, text: str, timeout: float = 30.0) -> str:
        """The next line printed that contains `text` (read as the process prints it)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._drain(max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{text!r} not printed in {timeout} s") from None
            if line is None:
                raise AssertionError(f"the process exited without printing {text!r}")
            if text in line:
                return line

    def _wait_for_url(self) -> str:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            match = LISTENING.search(line)
            if match:
                self.listening = line
                return match.group(1)
        raise AssertionError(f"the dev server exited ({self.process.wait()}) before listening")

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; last value {value!r}")
            time.sleep(0.05)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.http.get("/v1/runs:counts").json()
        return counts

    def ctrl_c(self) -> None:
        """A terminal's Ctrl-C: SIGINT to every process of the server's group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def stop(self, sig: int | None = signal.SIGTERM) -> int:
        """Stop it (None: wait for it to exit); what it printed after it started listening is
        then in `output`."""
        self.http.close()
        if sig is not None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=20)
        finally:
            self._reader.join(timeout=10)
            while not self._lines.empty():
                self._drain(None)
            if self.process.stdout is not None:
                self.process.stdout.close()
