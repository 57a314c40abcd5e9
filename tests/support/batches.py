"""Queue batches made by hand, for tests that hand the runtime's consumer a batch the way the
platform would (`runtime.consume_batch(FakeBatch([...]), env.resources)`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kumofire_jobs.core.bindings import QueueMessage


class FakeMessage:
    def __init__(self, body: Any, attempts: int = 1) -> None:
        self.id = f"m{attempts}"
        self.timestamp = 0.0
        self.body = body
        self.attempts = attempts
        self.settled: tuple[str, Any] | None = None

    def ack(self) -> None:
        self.settled = self.settled or ("ack", None)

    def retry(self, options: dict[str, Any] | None = None) -> None:
        self.settled = self.settled or ("retry", options)


class FakeBatch:
    def __init__(self, messages: list[FakeMessage]) -> None:
        self.queue = "kumofire-jobs"
        self.messages: Sequence[QueueMessage] = messages

    def ackAll(self) -> None:
        raise AssertionError("not used")

    def retryAll(self, options: dict[str, Any] | None = None) -> None:
        raise AssertionError("not used")
