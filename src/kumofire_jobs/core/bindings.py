"""The binding protocols: the platform objects the runtime talks to.

Each protocol has the method names, camelCase option keys and result shapes that a Python
Worker sees through the Workers SDK. Two families implement them: the embedded bindings in
`kumofire_jobs.local` (SQLite, one process) and the Cloudflare adapter over the SDK's
objects. The job core imports only this module, never an implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

# --- D1 -------------------------------------------------------------------------------------


class D1Meta(Protocol):
    changes: int
    last_row_id: int
    rows_read: int
    rows_written: int
    duration: float


class D1Result(Protocol):
    """What `all()` and `run()` resolve to (`results` is empty for `run()` without RETURNING)."""

    results: list[dict[str, Any]]
    success: bool
    meta: D1Meta


class D1ExecResult(Protocol):
    count: int
    duration: float


class D1PreparedStatement(Protocol):
    def bind(self, *values: Any) -> D1PreparedStatement: ...

    async def first(self, column: str | None = None) -> Any: ...

    async def all(self) -> D1Result: ...

    async def run(self) -> D1Result: ...

    async def raw(self, options: dict[str, Any] | None = None) -> list[list[Any]]: ...


class D1Database(Protocol):
    def prepare(self, query: str) -> D1PreparedStatement: ...

    async def batch(self, statements: Sequence[D1PreparedStatement]) -> list[D1Result]: ...

    async def exec(self, query: str) -> D1ExecResult: ...


# --- Queues ---------------------------------------------------------------------------------


class Queue(Protocol):
    """A Queue producer binding. Options: `{"contentType": ..., "delaySeconds": n}`."""

    async def send(self, body: Any, options: dict[str, Any] | None = None) -> None: ...

    async def sendBatch(
        self, messages: Sequence[dict[str, Any]], options: dict[str, Any] | None = None
    ) -> None: ...


class QueueMessage(Protocol):
    """One message of a consumer batch. `ack()`/`retry()` settle it explicitly."""

    id: str
    timestamp: float  # epoch milliseconds, as the platform's Date
    body: Any
    attempts: int

    def ack(self) -> None: ...

    def retry(self, options: dict[str, Any] | None = None) -> None: ...


class MessageBatch(Protocol):
    queue: str
    messages: Sequence[QueueMessage]

    def ackAll(self) -> None: ...

    def retryAll(self, options: dict[str, Any] | None = None) -> None: ...


# --- Durable Objects ------------------------------------------------------------------------


class DurableObjectId(Protocol):
    name: str | None

    def toString(self) -> str: ...


class DurableObjectStub(Protocol):
    """An RPC stub: any public method of the object's class, called with positional args."""

    id: DurableObjectId

    def __getattr__(self, method: str) -> Any: ...


class DurableObjectNamespace(Protocol):
    def idFromName(self, name: str) -> DurableObjectId: ...

    def get(self, id: DurableObjectId) -> DurableObjectStub: ...

    def getByName(self, name: str) -> DurableObjectStub: ...
