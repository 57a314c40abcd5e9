"""Shared fixtures: a manual clock and a fresh data directory per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from kumofire_jobs.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "kumofire"
    path.mkdir()
    return path
