"""The Queue binding's contract: what any implementation must do, as Cloudflare Queues do.

An implementation plugs in by subclassing `QueueContract` in a test module and providing a
`queue_env` fixture that yields a `QueueEnv`. Consumer settings are given as wrangler.toml's
`[[queues.consumers]]` keys, so the suite says nothing about how an implementation is built.
Time only moves through `env.advance()`: no test sleeps.

Where the platform documents a behaviour, the test cites it in its docstring.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

from kumofire_jobs.core.bindings import MessageBatch, Queue


class QueueEnv(Protocol):
    """One queue service under test, with time under the test's control."""

    # What a rejected send/option raises (the platform: a JavaScript TypeError or Error).
    rejected: tuple[type[BaseException], ...]

    def now(self) -> float: ...

    async def advance(self, seconds: float) -> None:
        """Move time forward, delivering everything that falls due on the way."""
        ...

    def producer(self, queue: str) -> Queue: ...

    def consume(
        self, queue: str, handler: Callable[[MessageBatch], Awaitable[None]], **settings: Any
    ) -> None:
        """Register the consumer of `queue`; `settings` are wrangler consumer keys."""
        ...

    async def start(self) -> None: ...

    async def depth(self, queue: str) -> int:
        """Messages not yet acked (visible, delayed or in flight)."""
        ...

    async def restart(self) -> None:
        """The process dies (in-flight batches unsettled) and starts again with the same
        consumers registered and started. Producers must be taken again afterwards."""
        ...


@dataclass
class Delivered:
    at: float
    queue: str
    ids: list[str]
    bodies: list[Any]
    attempts: list[int]
    timestamps: list[float]


@dataclass
class Recorder:
    """A consumer handler that records each batch, then runs `then` (which may raise)."""

    env: QueueEnv
    then: Callable[[MessageBatch, int], Awaitable[None]] | None = None
    calls: list[Delivered] = field(default_factory=list)

    async def __call__(self, batch: MessageBatch) -> None:
        messages = list(batch.messages)
        self.calls.append(
            Delivered(
                at=self.env.now(),
                queue=batch.queue,
                ids=[m.id for m in messages],
                bodies=[m.body for m in messages],
                attempts=[m.attempts for m in messages],
                timestamps=[m.timestamp for m in messages],
            )
        )
        if self.then is not None:
            await self.then(batch, len(self.calls))

    @property
    def bodies(self) -> list[list[Any]]:
        return [call.bodies for call in self.calls]

    @property
    def flat_bodies(self) -> list[Any]:
        return [body for call in self.calls for body in call.bodies]


async def _raise(batch: MessageBatch, call: int) -> None:
    raise RuntimeError(f"handler failed on call {call}")


class QueueContract:
    """The contract suite. Subclasses provide the `queue_env` fixture."""

    # --- delivery --------------------------------------------------------------------------

    async def test_send_delivers_a_fresh_decoded_body(self, queue_env: QueueEnv) -> None:
        env = queue_env
        got = Recorder(env)
        env.consume("q", got, max_batch_timeout=0)
        await env.start()
        sent = {"kumofireJobRunId": "run_1", "version": 1, "nested": [1, 2.5, None, True]}
        sent_at = env.now()
        await env.producer("q").send(sent)
        await env.advance(0)

        assert len(got.calls) == 1
        call = got.calls[0]
        assert call.queue == "q"
        assert call.bodies == [sent]
        assert call.bodies[0] is not sent  # a structured clone, not the sender's object
        assert call.attempts == [1]
        assert isinstance(call.ids[0], str)
        assert call.ids[0]
        assert call.timestamps == [pytest.approx(sent_at * 1000, abs=1)]
        assert await env.depth("q") == 0

    async def test_content_types_round_trip(self, queue_env: QueueEnv) -> None:
        env = queue_env
        got = Recorder(env)
        env.consume("q", got, max_batch_timeout=0, max_batch_size=10)
        await env.start()
        queue = env.producer("q")
        await queue.send("plain text", {"contentType": "text"})
        await queue.send(b"\x00\x01\xff", {"contentType": "bytes"})
        await queue.send([1, "two"], {"contentType": "json"})
        await queue.send({"k": "v"}, {"contentType": "v8"})
        await env.advance(0)
        assert got.flat_bodies == ["plain text", b"\x00\x01\xff", [1, "two"], {"k": "v"}]

    async def test_message_ids_are_unique(self, queue_env: QueueEnv) -> None:
        env = queue_env
        got = Recorder(env)
        env.consume("q", got, max_batch_timeout=0, max_batch_size=100)
        await env.start()
        await env.producer("q").sendBatch([{"body": i} for i in range(50)])
        await env.advance(0)
        ids = [i for call in got.calls for i in call.ids]
        assert len(ids) == len(set(ids)) == 50

    async def test_delay_seconds_holds_a_message_until_due(self, queue_env: QueueEnv) -> None:
        env = queue_env
        got = Recorder(env)
        env.consume("q", got, max_batch_timeout=0)
        await env.start()
        start = env.now()
        await env.producer("q").send("later", {"delaySeconds": 30})
        await env.advance(29)
        assert got.calls == []
        assert await env.depth("q") == 1  # a delayed message counts
        await env.advance(1)
        assert got.bodies == [["later"]]
        assert got.calls[0].at == start + 30

    async def test_send_batch_delay_applies_unless_a_message_has_its_own(
        self, queue_env: QueueEnv
    ) -> None:
        env = queue_env
        got = Recorder(env)
        env.consume("q", got, max_batch_timeout=0)
        await env.start()
        start = env.now()
        await env.producer("q").sendBatch(
            [{"body": "batch delay"}, {"body": "own delay", "delaySeconds": 5}],
            {"delaySeconds": 20},
        )
        await env.advance(60)
        assert [(c.at - start, c.bodies) for c in got.calls] == [
            (5, ["own delay"]),
            (20, ["batch delay"]),
        ]

    async def test_full_batches_go_at_once_and_the_rest_after_the_timeout(
        self, queue_env: QueueEnv
    ) -> None:
        """Docs (batching): whichever of max_batch_size and max_batch_timeout is reached
        first triggers the delivery of a batch."""
        env = queue_env
        got = Recorder(env)
        env.consume("q", got, max_batch_size=3, max_batch_timeout=5)
        await env.start()
        start = env.now()
        await env.producer("q").sendBatch([{"body": i} for i in range(7)])
        await env.advance(0)
        assert sorted(len(c.bodies) for c in got.calls) == [3, 3]
        await env.advance(4.9)
        assert len(got.calls) == 2
        await env.advance(0.1)
        assert len(got.calls) == 3
        assert got.calls[2].at == start + 5
        assert len(got.calls[2].bodies) == 1
        assert sorted(got.flat_bodies) == list(range(7))

    async def test_batch_timeout_counts_from_the_first_message(self, queue_env: QueueEnv) -> None:
        env = queue_env
        got = Recorder(env)
        env.consume("q", got, max_batch_size=10, max_batch_timeout=5)
        await env.start()
        start = env.now()
        queue = env.producer("q")
        await queue.send("first")
        await env.advance(2)
        await queue.send("second")
        await env.advance(2.9)
        assert got.calls == []
        await env.advance(0.1)
        assert got.bodies == [["first", "second"]]
        assert got.calls[0].at == start + 5

    async def test_timeout_zero_delivers_at_once(self, queue_env: QueueEnv) -> None:
        env = queue_env
        got = Recorder(env)
        env.consume("q", got, max_batch_size=10, max_batch_timeout=0)
        await env.start()
        start = env.now()
        await env.producer("q").send("now")
        await env.advance(0)
        assert got.bodies == [["now"]]
        assert got.calls[0].at == start

    async def test_default_batch_timeout_is_five_seconds(self, queue_env: QueueEnv) -> None:
        env = queue_env
        got = Recorder(env)
        env.consume("q", got)
        await env.start()
        await env.producer("q").send("x")
        await env.advance(4.999)
        assert got.calls == []
        await env.advance(0.001)
        assert got.bodies == [["x"]]

    # --- acknowledgement and retries -------------------------------------------------------

    async def test_returning_acks_and_explicit_retry_redelivers_after_its_delay(
        self, queue_env: QueueEnv
    ) -> None:
        """Docs: retry() marks a message to be redelivered; others are acked on return."""
        env = queue_env

        async def then(batch: MessageBatch, call: int) -> None:
            if call == 1:
                batch.messages[0].ack()
                batch.messages[1].retry({"delaySeconds": 10})
                # messages[2]: nothing, acked because the handler returns

        got = Recorder(env, then)
        env.consume("q", got, max_batch_timeout=0, max_batch_size=3)
        await env.start()
        start = env.now()
        await env.producer("q").sendBatch([{"body": "a"}, {"body": "b"}, {"body": "c"}])
        await env.advance(0)
        assert await env.depth("q") == 1
        await env.advance(9)
        assert len(got.calls) == 1
        await env.advance(1)
        assert got.bodies == [["a", "b", "c"], ["b"]]
        assert got.calls[1].attempts == [2]
        assert got.calls[1].ids == [got.calls[0].ids[1]]
        assert got.calls[1].at == start + 10
        assert await env.depth("q") == 0

    async def test_handler_raising_redelivers_what_was_not_acked(self, queue_env: QueueEnv) -> None:
        """Docs: when a batch fails the entire batch is retried, except messages explicitly
        acknowledged."""
        env = queue_env

        async def then(batch: MessageBatch, call: int) -> None:
            if call == 1:
                batch.messages[0].ack()
                raise RuntimeError("boom")

        got = Recorder(env, then)
        env.consume("q", got, max_batch_timeout=0, max_batch_size=3)
        await env.start()
        await env.producer("q").sendBatch([{"body": "a"}, {"body": "b"}, {"body": "c"}])
        await env.advance(0)
        assert got.bodies == [["a", "b", "c"], ["b", "c"]]
        assert got.calls[1].attempts == [2, 2]
        assert await env.depth("q") == 0

    async def test_failed_batch_waits_retry_delay_unless_retried_with_a_delay(
        self, queue_env: QueueEnv
    ) -> None:
        """Docs: retry_delay applies to messages retried by failure or by retry() without
        a delay; a per-message delay takes precedence."""
        env = queue_env

        async def then(batch: MessageBatch, call: int) -> None:
            if call == 1:
                batch.messages[0].retry({"delaySeconds": 3})
                raise RuntimeError("boom")

        got = Recorder(env, then)
        env.consume("q", got, max_batch_timeout=0, max_batch_size=2, retry_delay=7)
        await env.start()
        start = env.now()
        await env.producer("q").sendBatch([{"body": "own"}, {"body": "default"}])
        await env.advance(60)
        assert [(c.at - start, c.bodies) for c in got.calls] == [
            (0, ["own", "default"]),
            (3, ["own"]),
            (7, ["default"]),
        ]

    async def test_ack_all_and_retry_all(self, queue_env: QueueEnv) -> None:
        """Docs: a call on a single message takes precedence over ackAll()/retryAll(), and
        ackAll() holds even when the handler then raises."""
        env = queue_env

        async def then(batch: MessageBatch, call: int) -> None:
            if call == 1:
                batch.messages[0].retry()
                batch.ackAll()
                raise RuntimeError("after ackAll")
            if call == 2:
                batch.retryAll({"delaySeconds": 4})

        got = Recorder(env, then)
        env.consume("q", got, max_batch_timeout=0, max_batch_size=3)
        await env.start()
        start = env.now()
        await env.producer("q").sendBatch([{"body": "x"}, {"body": "y"}])
        await env.advance(10)
        assert [(c.at - start, c.bodies, c.attempts) for c in got.calls] == [
            (0, ["x", "y"], [1, 1]),
            (0, ["x"], [2]),
            (4, ["x"], [3]),
        ]

    async def test_first_call_on_a_message_wins(self, queue_env: QueueEnv) -> None:
        """Docs: after ack(), later ack()/retry() calls are ignored, and the other way round."""
        env = queue_env

        async def then(batch: MessageBatch, call: int) -> None:
            if call == 1:
                batch.messages[0].ack()
                batch.messages[0].retry()
                batch.messages[1].retry()
                batch.messages[1].ack()

        got = Recorder(env, then)
        env.consume("q", got, max_batch_timeout=0, max_batch_size=2)
        await env.start()
        await env.producer("q").sendBatch([{"body": "acked"}, {"body": "retried"}])
        await env.advance(0)
        assert got.bodies == [["acked", "retried"], ["retried"]]

    async def test_dead_letter_queue_after_max_retries(self, queue_env: QueueEnv) -> None:
        """Docs: max_retries (default 3) retries after the first delivery, so at most
        max_retries + 1 deliveries; then the message goes to the dead-letter queue, keeping
        its id, timestamp and body."""
        env = queue_env
        failing = Recorder(env, _raise)
        dead = Recorder(env)
        env.consume("q", failing, max_batch_timeout=0, max_retries=2, dead_letter_queue="q-dlq")
        env.consume("q-dlq", dead, max_batch_timeout=0)
        await env.start()
        await env.producer("q").send({"n": 1})
        await env.advance(0)

        assert [c.attempts for c in failing.calls] == [[1], [2], [3]]
        assert len(dead.calls) == 1
        assert dead.calls[0].bodies == [{"n": 1}]
        assert dead.calls[0].ids == failing.calls[0].ids
        assert dead.calls[0].timestamps == failing.calls[0].timestamps
        assert dead.calls[0].attempts == [1]
        assert dead.calls[0].queue == "q-dlq"
        assert await env.depth("q") == 0
        assert await env.depth("q-dlq") == 0

    async def test_default_max_retries_is_three(self, queue_env: QueueEnv) -> None:
        env = queue_env
        failing = Recorder(env, _raise)
        env.consume("q", failing, max_batch_timeout=0, dead_letter_queue="q-dlq")
        await env.start()
        await env.producer("q").send("x")
        await env.advance(0)
        assert [c.attempts for c in failing.calls] == [[1], [2], [3], [4]]
        assert await env.depth("q") == 0
        assert await env.depth("q-dlq") == 1  # kept for a consumer that may come later

    async def test_explicit_retries_count_towards_max_retries(self, queue_env: QueueEnv) -> None:
        env = queue_env

        async def retry(batch: MessageBatch, call: int) -> None:
            batch.retryAll()

        got = Recorder(env, retry)
        env.consume("q", got, max_batch_timeout=0, max_retries=1, dead_letter_queue="dlq")
        await env.start()
        await env.producer("q").send("x")
        await env.advance(0)
        assert [c.attempts for c in got.calls] == [[1], [2]]
        assert await env.depth("dlq") == 1

    async def test_without_dead_letter_queue_exhausted_messages_are_dropped(
        self, queue_env: QueueEnv
    ) -> None:
        """Docs: without a DLQ, messages that reach the retry limit are deleted."""
        env = queue_env
        failing = Recorder(env, _raise)
        env.consume("q", failing, max_batch_timeout=0, max_retries=1)
        await env.start()
        await env.producer("q").send("doomed")
        await env.advance(0)
        assert [c.attempts for c in failing.calls] == [[1], [2]]
        assert await env.depth("q") == 0
        await env.advance(3600)
        assert len(failing.calls) == 2

    async def test_max_retries_zero_delivers_once(self, queue_env: QueueEnv) -> None:
        env = queue_env
        failing = Recorder(env, _raise)
        env.consume("q", failing, max_batch_timeout=0, max_retries=0, dead_letter_queue="dlq")
        await env.start()
        await env.producer("q").send("once")
        await env.advance(0)
        assert len(failing.calls) == 1
        assert await env.depth("dlq") == 1

    # --- limits and validation -------------------------------------------------------------

    async def test_message_size_limit(self, queue_env: QueueEnv) -> None:
        """Limits: 128 KB per message (1 KB = 1000 bytes), ~100 bytes of it metadata."""
        env = queue_env
        queue = env.producer("q")
        with pytest.raises(env.rejected, match=r"(?i)exceed|too large|size"):
            await queue.send("x" * 129_000, {"contentType": "text"})
        with pytest.raises(env.rejected, match=r"(?i)exceed|too large|size"):
            await queue.send({"blob": "x" * 129 * 1024})
        with pytest.raises(env.rejected, match=r"(?i)exceed|too large|size"):
            await queue.sendBatch([{"body": "small"}, {"body": "x" * 129_000}])
        assert await env.depth("q") == 0
        await queue.send("x" * 120_000, {"contentType": "text"})
        assert await env.depth("q") == 1

    async def test_send_batch_limits(self, queue_env: QueueEnv) -> None:
        """Limits: sendBatch takes up to 100 messages and 256 KB in total."""
        env = queue_env
        queue = env.producer("q")
        await queue.sendBatch([{"body": i} for i in range(100)])
        assert await env.depth("q") == 100
        with pytest.raises(env.rejected, match="101"):
            await queue.sendBatch([{"body": i} for i in range(101)])
        with pytest.raises(env.rejected, match=r"(?i)exceed|too large|size"):
            await queue.sendBatch([{"body": "x" * 100_000, "contentType": "text"}] * 3)
        with pytest.raises(env.rejected):
            await queue.sendBatch([])
        assert await env.depth("q") == 100
        await queue.sendBatch([{"body": "x" * 100_000, "contentType": "text"}] * 2)
        assert await env.depth("q") == 102

    async def test_delay_range(self, queue_env: QueueEnv) -> None:
        """Limits: delaySeconds up to 24 hours, on send and on retry."""
        env = queue_env
        queue = env.producer("q")
        for bad in (-1, 86_401):
            with pytest.raises(env.rejected, match="delaySeconds"):
                await queue.send("x", {"delaySeconds": bad})
            with pytest.raises(env.rejected, match="delaySeconds"):
                await queue.sendBatch([{"body": "x"}], {"delaySeconds": bad})
            with pytest.raises(env.rejected, match="delaySeconds"):
                await queue.sendBatch([{"body": "x", "delaySeconds": bad}])
        assert await env.depth("q") == 0
        await queue.send("x", {"delaySeconds": 86_400})
        assert await env.depth("q") == 1

    async def test_unknown_option_keys_are_rejected(self, queue_env: QueueEnv) -> None:
        env = queue_env
        queue = env.producer("q")
        with pytest.raises(env.rejected, match="delay_seconds"):
            await queue.send("x", {"delay_seconds": 5})
        with pytest.raises(env.rejected, match="delay"):
            await queue.sendBatch([{"body": "x", "delay": 5}])
        with pytest.raises(env.rejected, match="contentType"):
            await queue.sendBatch([{"body": "x"}], {"contentType": "json"})
        assert await env.depth("q") == 0

        errors: list[BaseException] = []

        async def then(batch: MessageBatch, call: int) -> None:
            try:
                batch.messages[0].retry({"delay": 1})
            except env.rejected as exc:
                errors.append(exc)
            try:
                batch.retryAll({"seconds": 1})
            except env.rejected as exc:
                errors.append(exc)

        got = Recorder(env, then)
        env.consume("q", got, max_batch_timeout=0)
        await env.start()
        await queue.send("x")
        await env.advance(0)
        assert len(errors) == 2
        assert "delay" in str(errors[0])
        assert "seconds" in str(errors[1])
        assert len(got.calls) == 1  # the rejected retries changed nothing: acked on return

    async def test_bodies_that_cannot_be_serialized_are_rejected(self, queue_env: QueueEnv) -> None:
        env = queue_env
        queue = env.producer("q")
        with pytest.raises(env.rejected):
            await queue.send(object())
        with pytest.raises(env.rejected):
            await queue.send({"when": object()})
        with pytest.raises(env.rejected):
            await queue.send(123, {"contentType": "text"})
        with pytest.raises(env.rejected):
            await queue.send("not bytes", {"contentType": "bytes"})
        with pytest.raises(env.rejected):
            await queue.send("x", {"contentType": "xml"})
        assert await env.depth("q") == 0

    async def test_send_batch_is_all_or_nothing(self, queue_env: QueueEnv) -> None:
        env = queue_env
        queue = env.producer("q")
        bad_batches: list[list[dict[str, Any]]] = [
            [{"body": 1}, {"body": 2}, {"body": object()}],
            [{"body": 1}, {"body": 2, "delaySeconds": 99_999}],
            [{"body": 1}, {"no_body": 2}],
            [{"body": 1}, {"body": 2, "contentType": "text"}],
        ]
        for batch in bad_batches:
            with pytest.raises(env.rejected):
                await queue.sendBatch(batch)
        assert await env.depth("q") == 0

    # --- durability ------------------------------------------------------------------------

    async def test_messages_survive_a_restart(self, queue_env: QueueEnv) -> None:
        env = queue_env
        await env.producer("q").sendBatch([{"body": "now"}, {"body": "later", "delaySeconds": 60}])
        await env.restart()
        assert await env.depth("q") == 2
        got = Recorder(env)
        env.consume("q", got, max_batch_timeout=0)
        await env.start()
        await env.advance(0)
        assert got.bodies == [["now"]]
        await env.advance(60)
        assert got.bodies == [["now"], ["later"]]
        assert await env.depth("q") == 0

    async def test_in_flight_messages_come_back_after_a_crash(self, queue_env: QueueEnv) -> None:
        """A consumer that dies mid-batch has neither acked nor retried: the messages are
        delivered again, and the interrupted delivery counted as an attempt."""
        env = queue_env
        never = asyncio.Event()

        async def then(batch: MessageBatch, call: int) -> None:
            if call == 1:
                await never.wait()  # the process dies while the handler runs

        got = Recorder(env, then)
        env.consume("q", got, max_batch_timeout=0, max_batch_size=2)
        await env.start()
        await env.producer("q").sendBatch([{"body": "a"}, {"body": "b"}])
        await env.advance(0)
        assert got.bodies == [["a", "b"]]
        await env.restart()
        assert await env.depth("q") == 2
        await env.advance(0)
        assert got.bodies == [["a", "b"], ["a", "b"]]
        assert got.calls[1].attempts == [2, 2]
        assert got.calls[1].ids == got.calls[0].ids
        assert await env.depth("q") == 0

    async def test_a_crash_on_the_last_attempt_dead_letters(self, queue_env: QueueEnv) -> None:
        env = queue_env
        never = asyncio.Event()

        async def then(batch: MessageBatch, call: int) -> None:
            await never.wait()

        got = Recorder(env, then)
        env.consume("q", got, max_batch_timeout=0, max_retries=0, dead_letter_queue="dlq")
        await env.start()
        await env.producer("q").send("x")
        await env.advance(0)
        await env.restart()
        await env.advance(0)
        assert len(got.calls) == 1
        assert await env.depth("q") == 0
        assert await env.depth("dlq") == 1
