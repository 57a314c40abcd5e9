"""The `Queue` protocol over a Worker's producer binding, and consumer batches as the core
reads them.

Producer: bodies and option objects are converted for JavaScript (camelCase keys, as the
platform spells them, checked here so that a misspelt option fails instead of being ignored).
Consumer: `adapt_batch` turns the batch a `queue()` handler receives into plain Python (bodies
converted once, timestamps as epoch milliseconds) whose `ack()`/`retry()` reach the platform.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from ..core.bindings import QueueMessage
from .errors import QueueError, raise_platform
from .ffi import to_js, to_py

SEND_OPTIONS: Final = frozenset({"contentType", "delaySeconds"})
BATCH_MESSAGE_KEYS: Final = frozenset({"body", "contentType", "delaySeconds"})
BATCH_OPTIONS: Final = frozenset({"delaySeconds"})
RETRY_OPTIONS: Final = frozenset({"delaySeconds"})


def _options(options: Mapping[str, Any] | None, allowed: frozenset[str], what: str) -> Any:
    """Checked options as a JavaScript object, or None when there are none."""
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise TypeError(f"{what} options must be an object")
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"{what} takes the options {sorted(allowed)}, not {unknown}")
    return to_js(dict(options))


async def _settle(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


class CloudflareQueue:
    """A `Queue` producer over `env.<binding>`."""

    def __init__(self, binding: Any) -> None:
        self.binding = binding

    async def send(self, body: Any, options: Mapping[str, Any] | None = None) -> None:
        js_options = _options(options, SEND_OPTIONS, "send()")
        js_body = to_js(body)
        try:
            if js_options is None:
                await _settle(self.binding.send(js_body))
            else:
                await _settle(self.binding.send(js_body, js_options))
        except Exception as exc:
            raise_platform(exc, QueueError)

    async def sendBatch(  # the platform's spelling
        self, messages: Sequence[Mapping[str, Any]], options: Mapping[str, Any] | None = None
    ) -> None:
        js_options = _options(options, BATCH_OPTIONS, "sendBatch()")
        items: list[dict[str, Any]] = []
        for index, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise TypeError(f"sendBatch() message {index} must be an object")
            unknown = sorted(set(message) - BATCH_MESSAGE_KEYS)
            if unknown:
                raise TypeError(
                    f"sendBatch() message {index} takes {sorted(BATCH_MESSAGE_KEYS)}, not {unknown}"
                )
            if "body" not in message:
                raise TypeError(f"sendBatch() message {index} has no body")
            items.append(dict(message))
        js_messages = to_js(items)
        try:
            if js_options is None:
                await _settle(self.binding.sendBatch(js_messages))
            else:
                await _settle(self.binding.sendBatch(js_messages, js_options))
        except Exception as exc:
            raise_platform(exc, QueueError)


# --- Consumer side --------------------------------------------------------------------------


def epoch_ms(value: Any) -> float:
    """A message timestamp as epoch milliseconds: the SDK gives a `datetime` (its conversion
    of the JavaScript Date, naive in the Worker's local time, which is UTC), a raw JsProxy
    gives the Date itself."""
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000, 3)
    get_time = getattr(value, "getTime", None)
    if callable(get_time):
        return float(get_time())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"a queue message timestamp cannot be a {type(value).__name__}")


class CloudflareQueueMessage:
    """One message of a batch: `id`, `timestamp` (epoch ms), `body` (plain Python),
    `attempts`, and `ack()`/`retry()` forwarded to the platform."""

    __slots__ = ("attempts", "body", "handle", "id", "timestamp")

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.id = str(handle.id)
        self.timestamp = epoch_ms(handle.timestamp)
        self.body = to_py(handle.body)
        self.attempts = int(handle.attempts)

    def ack(self) -> None:
        try:
            self.handle.ack()
        except Exception as exc:
            raise_platform(exc, QueueError)

    def retry(self, options: Mapping[str, Any] | None = None) -> None:
        js_options = _options(options, RETRY_OPTIONS, "retry()")
        try:
            if js_options is None:
                self.handle.retry()
            else:
                self.handle.retry(js_options)
        except Exception as exc:
            raise_platform(exc, QueueError)

    def __repr__(self) -> str:
        return f"<queue message {self.id} attempt {self.attempts}>"


class CloudflareMessageBatch:
    """A consumer batch as the `MessageBatch` protocol reads it."""

    __slots__ = ("handle", "messages", "queue")

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.queue = str(handle.queue)
        raw: Iterable[Any] = handle.messages
        self.messages: Sequence[QueueMessage] = [CloudflareQueueMessage(message) for message in raw]

    def ackAll(self) -> None:  # the platform's spelling
        try:
            self.handle.ackAll()
        except Exception as exc:
            raise_platform(exc, QueueError)

    def retryAll(self, options: Mapping[str, Any] | None = None) -> None:
        js_options = _options(options, RETRY_OPTIONS, "retryAll()")
        try:
            if js_options is None:
                self.handle.retryAll()
            else:
                self.handle.retryAll(js_options)
        except Exception as exc:
            raise_platform(exc, QueueError)


def adapt_batch(batch: Any) -> CloudflareMessageBatch:
    """The batch a Worker's `queue()` handler receives, as the runtime consumes it."""
    if isinstance(batch, CloudflareMessageBatch):
        return batch
    return CloudflareMessageBatch(batch)
