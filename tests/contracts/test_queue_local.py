"""The Queue contract on the embedded broker, plus what only the embedded broker promises."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kumofire_jobs.core.bindings import MessageBatch
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.queue import (
    LOCAL_DEFAULT_MAX_CONCURRENCY,
    ConsumerSettings,
    LocalQueueBroker,
    _decode,
    wrangler_consumers,
)
from tests.support.contract_envs import LocalQueueEnv

from .queue_contract import QueueContract, Recorder


@pytest.fixture
async def queue_env(data_dir: Path, clock: ManualClock) -> AsyncIterator[LocalQueueEnv]:
    env = LocalQueueEnv(data_dir / "queues.sqlite3", clock)
    yield env
    await env.shutdown()


class TestLocalQueue(QueueContract):
    pass


# --- Local specifics ------------------------------------------------------------------------


async def test_order_is_by_visibility_time_then_send_order(queue_env: LocalQueueEnv) -> None:
    env = queue_env
    got = Recorder(env)
    env.consume("q", got, max_batch_size=10, max_batch_timeout=60)
    await env.start()
    queue = env.producer("q")
    await queue.send("a", {"delaySeconds": 10})
    await queue.send("b")
    await queue.send("c", {"delaySeconds": 5})
    await queue.send("d")
    await env.advance(60)
    assert got.bodies == [["b", "d", "c", "a"]]


async def test_concurrency_limits_batches_in_flight(
    queue_env: LocalQueueEnv, clock: ManualClock
) -> None:
    env = queue_env
    running: list[int] = []
    peak = 0

    async def slow(batch: MessageBatch, call: int) -> None:
        nonlocal peak
        running.append(call)
        peak = max(peak, len(running))
        await clock.sleep_until(clock.now() + 10)
        running.remove(call)

    got = Recorder(env, slow)
    env.consume("q", got, max_batch_size=1, max_batch_timeout=0, max_concurrency=2)
    await env.start()
    start = env.now()
    await env.producer("q").sendBatch([{"body": i} for i in range(5)])
    await env.advance(100)
    assert peak == 2
    assert [c.at - start for c in got.calls] == [0, 0, 10, 10, 20]
    assert got.flat_bodies == [0, 1, 2, 3, 4]


async def test_default_concurrency_is_the_local_cap(
    queue_env: LocalQueueEnv, clock: ManualClock
) -> None:
    env = queue_env

    async def hold(batch: MessageBatch, call: int) -> None:
        await clock.sleep_until(clock.now() + 1)

    got = Recorder(env, hold)
    env.consume("q", got, max_batch_size=1, max_batch_timeout=0)
    await env.start()
    await env.producer("q").sendBatch([{"body": i} for i in range(20)])
    await env.advance(0)
    assert len(got.calls) == LOCAL_DEFAULT_MAX_CONCURRENCY


async def test_stop_lets_in_flight_batches_settle(
    queue_env: LocalQueueEnv, clock: ManualClock
) -> None:
    env = queue_env

    async def hold(batch: MessageBatch, call: int) -> None:
        await clock.sleep_until(clock.now() + 1)

    got = Recorder(env, hold)
    env.consume("q", got, max_batch_timeout=0)
    await env.start()
    await env.producer("q").send("x")
    await env.advance(0)
    stopping = asyncio.ensure_future(env.broker.stop())
    await env.advance(1)
    await stopping
    assert await env.depth("q") == 0
    await env.producer("q").send("after stop")
    await env.advance(10)
    assert len(got.calls) == 1  # stopped: nothing more is delivered


async def test_stop_with_cancel_returns_in_flight_messages(
    queue_env: LocalQueueEnv, clock: ManualClock
) -> None:
    env = queue_env

    async def hold(batch: MessageBatch, call: int) -> None:
        await clock.sleep_until(clock.now() + 3600)

    got = Recorder(env, hold)
    env.consume("q", got, max_batch_timeout=0)
    await env.start()
    await env.producer("q").send("x")
    await env.advance(0)
    await env.broker.stop(cancel_in_flight=True)
    assert await env.depth("q") == 1
    await env.broker.start()
    await env.advance(0)
    assert [c.attempts for c in got.calls] == [[1], [2]]


async def test_timers_are_event_driven(queue_env: LocalQueueEnv, clock: ManualClock) -> None:
    """An idle consumer waits on nothing but the wake-up; a delayed message sets exactly one
    timer, for when it becomes visible."""
    env = queue_env
    env.consume("q", Recorder(env), max_batch_timeout=0)
    await env.start()
    await env.advance(0)
    assert clock.next_deadline() is None
    await env.producer("q").send("x", {"delaySeconds": 42})
    await env.advance(0)
    assert clock.next_deadline() == clock.now() + 42


async def test_a_dead_letter_queue_may_dead_letter_again(queue_env: LocalQueueEnv) -> None:
    async def fail(batch: MessageBatch, call: int) -> None:
        raise RuntimeError("no")

    env = queue_env
    first = Recorder(env, fail)
    second = Recorder(env, fail)
    env.consume("a", first, max_batch_timeout=0, max_retries=0, dead_letter_queue="b")
    env.consume("b", second, max_batch_timeout=0, max_retries=1, dead_letter_queue="c")
    await env.start()
    await env.producer("a").send("x")
    await env.advance(0)
    assert (len(first.calls), len(second.calls)) == (1, 2)
    assert await env.depth("c") == 1


def test_one_consumer_per_queue(data_dir: Path, clock: ManualClock) -> None:
    broker = LocalQueueBroker(data_dir / "q.sqlite3", clock)
    try:

        async def handler(batch: MessageBatch) -> None:
            return None

        broker.add_consumer("q", handler)
        with pytest.raises(ValueError, match="already has a consumer"):
            broker.add_consumer("q", handler)
        with pytest.raises(ValueError, match="own dead-letter"):
            broker.add_consumer("z", handler, ConsumerSettings(dead_letter_queue="z"))
    finally:
        broker.close()


def test_consumer_settings_from_wrangler() -> None:
    settings = ConsumerSettings.from_wrangler(
        {
            "queue": "jobs",
            "max_batch_size": 50,
            "max_batch_timeout": 0,
            "max_retries": 10,
            "dead_letter_queue": "jobs-dlq",
            "retry_delay": 30,
            "max_concurrency": 5,
        }
    )
    assert settings == ConsumerSettings(
        max_batch_size=50,
        max_batch_timeout=0,
        max_retries=10,
        dead_letter_queue="jobs-dlq",
        retry_delay=30,
        max_concurrency=5,
    )
    config = {"queues": {"consumers": [{"queue": "jobs", "max_retries": 5}, {"queue": "dlq"}]}}
    assert list(wrangler_consumers(config)) == [
        ("jobs", ConsumerSettings(max_retries=5)),
        ("dlq", ConsumerSettings()),
    ]
    defaults = ConsumerSettings.from_wrangler({"queue": "jobs"})
    assert (defaults.max_batch_size, defaults.max_batch_timeout, defaults.max_retries) == (
        10,
        5,
        3,
    )
    assert (defaults.retry_delay, defaults.dead_letter_queue) == (0, None)


@pytest.mark.parametrize(
    "bad",
    [
        {"max_batch_size": 0},
        {"max_batch_size": 101},
        {"max_batch_timeout": -1},
        {"max_batch_timeout": 61},
        {"max_retries": -1},
        {"max_retries": 101},
        {"retry_delay": 86_401},
        {"max_concurrency": 0},
        {"max_concurrency": 251},
        {"max_batch_size": True},
        {"max_batch_size": "10"},
        {"dead_letter_queue": ""},
        {"max_batch_sise": 10},
        {"type": "http_pull"},
    ],
)
def test_consumer_settings_reject_out_of_range(bad: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        ConsumerSettings.from_wrangler({"queue": "jobs", **bad})


def test_synchronous_mode_is_validated(data_dir: Path, clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        LocalQueueBroker(data_dir / "q.sqlite3", clock, synchronous="sometimes")


# --- group commit ------------------------------------------------------------------------------


def _committed_bodies(path: Path) -> list[bytes]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT body FROM kumofire_local_queue_messages ORDER BY seq")
        return [row[0] for row in rows]
    finally:
        conn.close()


async def test_an_acknowledged_send_is_durable(queue_env: LocalQueueEnv) -> None:
    env = queue_env
    queue = env.producer("q")
    on_disk_when_answered: list[int] = []
    sends = [asyncio.ensure_future(queue.send(i)) for i in range(3)]
    for send in sends:
        send.add_done_callback(
            lambda _: on_disk_when_answered.append(len(_committed_bodies(env.path)))
        )
    await asyncio.gather(*sends)
    assert on_disk_when_answered == [3, 3, 3]  # one commit for the three


async def test_a_delivery_is_recorded_before_its_handler_runs(queue_env: LocalQueueEnv) -> None:
    import sqlite3

    env = queue_env
    attempts_seen: list[int] = []

    async def handler(batch: MessageBatch, call: int) -> None:
        conn = sqlite3.connect(env.path)
        try:
            rows = conn.execute("SELECT attempts FROM kumofire_local_queue_messages")
            attempts_seen.extend(row[0] for row in rows)
        finally:
            conn.close()

    env.consume("q", Recorder(env, handler), max_batch_timeout=0)
    await env.start()
    await env.producer("q").send("x")
    await env.advance(0)
    assert attempts_seen == [1]


async def test_an_idle_consumer_does_not_query_for_delayed_messages(
    queue_env: LocalQueueEnv,
) -> None:
    env = queue_env
    got = Recorder(env)
    env.consume("q", got, max_batch_timeout=0)
    await env.start()
    await env.advance(0)
    queries: list[str] = []
    env.broker._db.set_trace_callback(queries.append)
    for i in range(5):
        await env.producer("q").send(i)
        await env.advance(0)
    env.broker._db.set_trace_callback(None)
    assert len(got.calls) == 5
    assert not [q for q in queries if "min(visible_at)" in q]
    await env.producer("q").send("later", {"delaySeconds": 30})
    await env.advance(29)
    assert len(got.calls) == 5
    await env.advance(1)
    assert got.bodies[-1] == ["later"]


@pytest.mark.parametrize(
    "stored",
    [
        b'{"version":1,"kumofireJobRunId":"run_1","n":[1,-0.0,2.5e-320,123456789012345678901234567890]}',
        b"1e400",  # a number beyond a float: msgspec refuses it, json reads infinity
        b'"\\ud800"',  # an escaped lone surrogate: likewise
        b'{"a":1,"a":2}',
    ],
)
def test_stored_json_bodies_decode_as_json_loads_reads_them(stored: bytes) -> None:
    decoded = _decode(stored, "json")
    expected = json.loads(stored)
    assert decoded == expected
    assert json.dumps(decoded) == json.dumps(expected)  # same types (1.0 is not 1), same order
