from __future__ import annotations

import pytest

from kumofire_jobs.core.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
