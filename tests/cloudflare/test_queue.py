"""The Queue contract through the Cloudflare adapter (producer and consumer batches), over the
local broker presented as the Workers SDK presents the platform's queues."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kumofire_jobs.cloudflare import CloudflareQueue, QueueError, adapt_batch
from kumofire_jobs.cloudflare.queue import epoch_ms
from kumofire_jobs.core.bindings import MessageBatch, Queue
from kumofire_jobs.core.clock import ManualClock
from tests.contracts.queue_contract import QueueContract, Recorder
from tests.support.contract_envs import LocalQueueEnv
from tests.support.fake_sdk import STYLES, FakeMessageBatch, FakeQueue, JsDate

Handler = Callable[[MessageBatch], Awaitable[None]]


class CloudflareQueueEnv(LocalQueueEnv):
    # Options and bodies the adapter refuses (TypeError), or the platform does (QueueError).
    rejected: tuple[type[BaseException], ...] = (TypeError, QueueError)

    def __init__(self, path: Path, clock: ManualClock, style: str) -> None:
        super().__init__(path, clock)
        self.style = style

    def producer(self, queue: str) -> Queue:
        return CloudflareQueue(FakeQueue(self.broker.producer(queue), self.style))

    def consume(self, queue: str, handler: Handler, **settings: Any) -> None:
        style = self.style

        async def worker_queue_handler(batch: MessageBatch) -> None:
            await handler(adapt_batch(FakeMessageBatch(batch, style)))

        super().consume(queue, worker_queue_handler, **settings)


@pytest.fixture(params=STYLES)
def style(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def queue_env(
    data_dir: Path, clock: ManualClock, style: str
) -> AsyncIterator[CloudflareQueueEnv]:
    env = CloudflareQueueEnv(data_dir / "queues.sqlite3", clock, style)
    yield env
    await env.shutdown()


class TestCloudflareQueue(QueueContract):
    pass


# --- The adapter's own behaviour ------------------------------------------------------------


async def test_bodies_arrive_as_plain_python(queue_env: CloudflareQueueEnv) -> None:
    env = queue_env
    got = Recorder(env)
    env.consume("q", got, max_batch_timeout=0, max_batch_size=10)
    await env.start()
    queue = env.producer("q")
    await queue.send({"version": 1, "kumofireJobRunId": "run_1", "none": None, "t": (1, 2)})
    await queue.sendBatch([{"body": b"\x00", "contentType": "bytes"}, {"body": "text"}])
    await env.advance(0)
    first, raw, text = got.flat_bodies
    assert first == {"version": 1, "kumofireJobRunId": "run_1", "none": None, "t": [1, 2]}
    assert type(first) is dict
    assert raw == b"\x00" and type(raw) is bytes
    assert text == "text"


async def test_refused_options_name_the_key(queue_env: CloudflareQueueEnv) -> None:
    queue = queue_env.producer("q")
    with pytest.raises(TypeError, match="delay_seconds"):
        await queue.send("x", {"delay_seconds": 1})
    with pytest.raises(TypeError, match="no body"):
        await queue.sendBatch([{"contentType": "json"}])
    with pytest.raises(QueueError, match="delaySeconds") as caught:
        await queue.send("x", {"delaySeconds": -1})
    assert caught.value.name == "RangeError"


def test_timestamps_are_epoch_milliseconds() -> None:
    ms = 1_798_761_600_123.0
    assert epoch_ms(datetime.fromtimestamp(ms / 1000)) == ms  # the SDK's conversion of a Date
    assert epoch_ms(JsDate(ms)) == ms  # a raw Date
    assert epoch_ms(ms) == ms
    with pytest.raises(TypeError):
        epoch_ms("yesterday")
