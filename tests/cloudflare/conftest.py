"""Fixtures of the Cloudflare adapter's tests: each value style the SDK hands Python, and
`src/entry.py` imported on the stand-in `workers` package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_sdk import STYLES
from tests.support.worker_entry import WorkerEntry, import_entry, unload_entry


@pytest.fixture(params=STYLES)
def style(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def entry(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerEntry]:
    """`src/entry.py`, imported with the stand-in `workers` package."""
    yield import_entry(monkeypatch)
    unload_entry()
