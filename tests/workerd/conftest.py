"""The real-runtime suite's fixture: the three Workers under `wrangler dev` on workerd, started
once per session, and the lateness figures it reports (printed at the end of the run and
written to `workerd-lateness.json` in the session's directory)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.lateness import LATENESS

from .harness import JS_WORKER, PY_WORKER, SERVICE, Stack

RESULTS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("workerd")
    started = time.monotonic()
    stack = Stack(root)
    RESULTS["file"] = Path(
        os.environ.get("KUMOFIRE_WORKERD_RESULTS") or root / "workerd-lateness.json"
    )
    try:
        stack.migrate()
        for name in (SERVICE, JS_WORKER, PY_WORKER):
            stack.start(name)
        stack.wait_ready(SERVICE, "/v1/health")
        stack.wait_ready(JS_WORKER, "/health")
        stack.wait_ready(PY_WORKER, "/health")
        print(f"\nworkerd stack ready in {time.monotonic() - started:.1f} s under {root}")
        yield stack
    finally:
        stack.stop_all()
        RESULTS["file"].write_text(json.dumps(LATENESS, indent=2))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not LATENESS:
        return
    terminalreporter.section("workerd lateness (started_at - scheduled_for)")
    for row in LATENESS:
        terminalreporter.write_line(f"{row['scenario']:<48} {row['lateness_ms']:>9.1f} ms")
    if "file" in RESULTS:
        terminalreporter.write_line(f"(also in {RESULTS['file']})")
