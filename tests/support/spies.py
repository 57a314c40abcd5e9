"""Spies on the runtime's steps, for tests that assert what a step answered."""

from __future__ import annotations

from typing import Any

import pytest

from kumofire_jobs import ConsumeOutcome
from kumofire_jobs.core.consume import Consumer


def consume_outcomes(monkeypatch: pytest.MonkeyPatch) -> list[ConsumeOutcome]:
    """The outcome of every `Consumer.consume` call from now on (a delivered message's), in
    order; runs a consumer was handed by a limiter have none of their own."""
    outcomes: list[ConsumeOutcome] = []
    consume = Consumer.consume

    async def spy(self: Consumer, message: Any) -> Any:
        result = await consume(self, message)
        outcomes.append(result.outcome)
        return result

    monkeypatch.setattr(Consumer, "consume", spy)
    return outcomes
