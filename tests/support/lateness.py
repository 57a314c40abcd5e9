"""The lateness figures of the real-runtime suite (tests/workerd/): each test records its own,
and the suite's conftest prints them at the end of the run and writes them to a file."""

from __future__ import annotations

from typing import Any

LATENESS: list[dict[str, Any]] = []


def record(scenario: str, lateness_ms: float) -> None:
    LATENESS.append({"scenario": scenario, "lateness_ms": round(lateness_ms, 1)})
