from __future__ import annotations

import pytest

from kumofire_jobs.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
