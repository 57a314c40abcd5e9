"""The embedded Cloudflare Queue: producers, a persistent broker and push consumers.

One SQLite file (WAL) holds every queue's messages, so they survive a restart. The broker
runs SQLite synchronously on the event loop: a statement takes microseconds, less than a hop
to a thread would. One process owns the file at a time.

Writes are group-committed (see `group_commit`): they run inside a transaction that commits at
the end of the event loop's turn, shared by every send, delivery and settlement of that turn. A
`send()` returns only after its commit, so an acknowledged message is durable; a handler
starts only after the commit that recorded its delivery, so a delivery that happened is
counted. When nothing else is ready to run, a write commits at once instead. Called from a
Durable Object with storage writes not yet durable, a send first waits for them (the
object's output gate).

Semantics follow Cloudflare's documentation (Queues: limits, JavaScript APIs, batching and
retries, dead-letter queues) and Miniflare's broker where the documentation is silent:

- A message is delivered at most `max_retries + 1` times: each delivery counts one attempt
  (`attempts` is 1 on the first), and a message that is retried on its `max_retries + 1`-th
  delivery goes to the dead-letter queue, or is deleted when none is configured. There it
  keeps its id, timestamp and body, and its attempts start again from 1.
- A batch holds up to `max_batch_size` visible messages and is delivered when it is full or
  when `max_batch_timeout` has passed since its oldest message became visible.
- After the handler returns, messages explicitly retried are retried and all others acked; if
  it raises, every message not explicitly acked is retried. The first of `ack()`/`retry()` on a
  message wins, and a message's own call wins over `ackAll()`/`retryAll()`.
- Order: by visibility time, then send order. The platform orders best effort only; code must
  not rely on it.
- A process that dies with a batch in flight loses nothing: on open those messages are visible
  again, and the interrupted delivery counts as an attempt (it happened).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec

from kumofire_jobs.core.bindings import MessageBatch, QueueMessage
from kumofire_jobs.core.clock import Clock, now_ms, sleep_until_or_woken
from kumofire_jobs.core.log import RepeatedLog, get_logger
from kumofire_jobs.local import checkpoint, group_commit, output_gate, table_names, wal_sync

if TYPE_CHECKING:
    from kumofire_jobs.local.one_file import OneFile

# --- The platform's limits and defaults --------------------------------------------------
# The platform measures 1 KB as 1000 bytes and counts ~100 bytes of metadata per message;
# the metadata is counted in a sendBatch total too, so what passes here passes there.
MESSAGE_METADATA_BYTES: Final = 100
MAX_MESSAGE_BYTES: Final = 128_000
MAX_SEND_BATCH_MESSAGES: Final = 100
MAX_SEND_BATCH_BYTES: Final = 256_000
MAX_DELAY_SECONDS: Final = 86_400  # delaySeconds on send and on retry: 24 h

DEFAULT_MAX_BATCH_SIZE: Final = 10
MAX_MAX_BATCH_SIZE: Final = 100
DEFAULT_MAX_BATCH_TIMEOUT: Final = 5.0
MAX_MAX_BATCH_TIMEOUT: Final = 60.0
DEFAULT_MAX_RETRIES: Final = 3
MAX_MAX_RETRIES: Final = 100
DEFAULT_RETRY_DELAY: Final = 0
# After a commit fails (a full disk, say), delivery pauses 2 s, doubling to 60 s while commits
# keep failing: storage that refuses writes is retried, not spun on.
STORAGE_RETRY_START_SECONDS: Final = 2.0
STORAGE_RETRY_MAX_SECONDS: Final = 60.0
MAX_MAX_CONCURRENCY: Final = 250  # concurrent consumer invocations per queue
# The platform autoscales consumers when `max_concurrency` is unset. Locally a fixed cap
# stands in: several batches at once, so one long handler (a job holding its lease for
# minutes) does not stall the queue, yet a backlog cannot start unbounded work.
LOCAL_DEFAULT_MAX_CONCURRENCY: Final = 10

CONTENT_TYPES: Final = ("json", "text", "bytes", "v8")

_SEND_OPTIONS: Final = frozenset({"contentType", "delaySeconds"})
_BATCH_ITEM_KEYS: Final = frozenset({"body", "contentType", "delaySeconds"})
_BATCH_OPTIONS: Final = frozenset({"delaySeconds"})
_RETRY_OPTIONS: Final = frozenset({"delaySeconds"})
_WRANGLER_CONSUMER_KEYS: Final = frozenset(
    {
        "queue",
        "type",
        "max_batch_size",
        "max_batch_timeout",
        "max_retries",
        "dead_letter_queue",
        "retry_delay",
        "max_concurrency",
    }
)
_SYNCHRONOUS: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})

_log = get_logger(component="local.queue")

QueueHandler = Callable[[MessageBatch], Awaitable[None]]


# --- Validation ----------------------------------------------------------------------------


def _check_keys(options: Mapping[str, Any] | None, allowed: frozenset[str], where: str) -> None:
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise TypeError(f"{where}: options must be a dict, got {type(options).__name__}")
    for key in options:
        if key not in allowed:
            raise TypeError(f"{where}: unknown option {key!r} (allowed: {sorted(allowed)})")


def _delay(value: Any, where: str) -> int | None:
    """A `delaySeconds` value: None when absent, else an integer in 0..MAX_DELAY_SECONDS."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where}: delaySeconds must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{where}: delaySeconds must be a whole number of seconds, got {value}")
    if not 0 <= value <= MAX_DELAY_SECONDS:
        raise ValueError(f"{where}: delaySeconds must be in 0..{MAX_DELAY_SECONDS}, got {value}")
    return int(value)


def _content_type(value: Any, where: str) -> str:
    if value is None:
        return "json"
    if not isinstance(value, str) or value.lower() not in CONTENT_TYPES:
        raise TypeError(f"{where}: unsupported contentType {value!r} (one of {CONTENT_TYPES})")
    return value.lower()


def _encode(body: Any, content_type: str, where: str) -> bytes:
    # A Python Worker's None reaches the runtime as JavaScript's undefined, which it rejects.
    if body is None:
        raise TypeError(f"{where}: message body cannot be undefined (None)")
    if content_type == "text":
        if not isinstance(body, str):
            raise TypeError(f'{where}: contentType "text" needs a str, got {type(body).__name__}')
        return body.encode()
    if content_type == "bytes":
        if not isinstance(body, bytes | bytearray | memoryview):
            raise TypeError(
                f'{where}: contentType "bytes" needs bytes-like, got {type(body).__name__}'
            )
        return bytes(body)
    # "json", and "v8" (structured clone) which Python bodies reach only as JSON-like values.
    try:
        text = _JSON_ENCODER.encode(body)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: body cannot be serialized as {content_type}: {exc}") from exc
    return text.encode()


# `json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))`, built once.
_JSON_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
# What `_encode` writes, msgspec reads as `json.loads` does, at a tenth of its cost (a
# delivery reads one body per run); anything else it refuses goes to `json.loads`.
_JSON_DECODER: Final = msgspec.json.Decoder()


def _decode(body: bytes, content_type: str) -> Any:
    if content_type == "text":
        return body.decode()
    if content_type == "bytes":
        return body
    try:
        return _JSON_DECODER.decode(body)
    except msgspec.DecodeError:
        return json.loads(body)


def _check_size(encoded: bytes, where: str) -> int:
    size = len(encoded) + MESSAGE_METADATA_BYTES
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"{where}: message of {len(encoded)} bytes (+{MESSAGE_METADATA_BYTES} of metadata) "
            f"exceeds the {MAX_MESSAGE_BYTES}-byte limit"
        )
    return size


def _int_in(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return value


# --- Consumer settings ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """A push consumer's settings: wrangler.toml's `[[queues.consumers]]`, validated."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_batch_timeout: float = DEFAULT_MAX_BATCH_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    dead_letter_queue: str | None = None
    retry_delay: int = DEFAULT_RETRY_DELAY
    # None: unset, as on the platform (which autoscales); locally LOCAL_DEFAULT_MAX_CONCURRENCY.
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        _int_in(self.max_batch_size, "max_batch_size", 1, MAX_MAX_BATCH_SIZE)
        timeout = self.max_batch_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"max_batch_timeout must be a number, got {timeout!r}")
        if not 0 <= timeout <= MAX_MAX_BATCH_TIMEOUT:
            raise ValueError(f"max_batch_timeout must be in 0..{MAX_MAX_BATCH_TIMEOUT}")
        _int_in(self.max_retries, "max_retries", 0, MAX_MAX_RETRIES)
        _int_in(self.retry_delay, "retry_delay", 0, MAX_DELAY_SECONDS)
        if self.max_concurrency is not None:
            _int_in(self.max_concurrency, "max_concurrency", 1, MAX_MAX_CONCURRENCY)
        dlq = self.dead_letter_queue
        if dlq is not None and (not isinstance(dlq, str) or not dlq):
            raise TypeError(f"dead_letter_queue must be a non-empty string, got {dlq!r}")

    @property
    def concurrency(self) -> int:
        return self.max_concurrency or LOCAL_DEFAULT_MAX_CONCURRENCY

    @classmethod
    def from_wrangler(cls, consumer: Mapping[str, Any]) -> ConsumerSettings:
        """Settings from one `[[queues.consumers]]` table; absent keys take the defaults."""
        for key in consumer:
            if key not in _WRANGLER_CONSUMER_KEYS:
                raise ValueError(f"unknown queue consumer setting {key!r}")
        if consumer.get("type", "worker") != "worker":
            raise ValueError("only push (worker) consumers run locally, not http_pull")
        fields = {k: v for k, v in consumer.items() if k not in ("queue", "type")}
        return cls(**fields)


# --- Producer ------------------------------------------------------------------------------


class LocalQueue:
    """A producer binding (`env.QUEUE`): `send` and `sendBatch`, as the platform's."""

    __slots__ = ("_broker", "name")

    def __init__(self, broker: LocalQueueBroker, name: str) -> None:
        self._broker = broker
        self.name = name

    async def send(self, body: Any, options: dict[str, Any] | None = None) -> None:
        _check_keys(options, _SEND_OPTIONS, "send()")
        opts = options or {}
        content_type = _content_type(opts.get("contentType"), "send()")
        delay = _delay(opts.get("delaySeconds"), "send()")
        encoded = _encode(body, content_type, "send()")
        _check_size(encoded, "send()")
        await self._broker._send(self.name, [(content_type, encoded, delay or 0)])

    async def sendBatch(  # the platform's spelling
        self, messages: Sequence[dict[str, Any]], options: dict[str, Any] | None = None
    ) -> None:
        _check_keys(options, _BATCH_OPTIONS, "sendBatch()")
        batch_delay = _delay((options or {}).get("delaySeconds"), "sendBatch()")
        items = list(messages)
        if not items:
            raise TypeError("sendBatch() requires at least one message")
        if len(items) > MAX_SEND_BATCH_MESSAGES:
            raise ValueError(
                f"sendBatch(): {len(items)} messages exceed the limit of {MAX_SEND_BATCH_MESSAGES}"
            )
        # Validate and encode everything before writing anything: all or nothing.
        rows: list[tuple[str, bytes, int]] = []
        total = 0
        for index, item in enumerate(items):
            where = f"sendBatch() message {index}"
            if not isinstance(item, Mapping):
                raise TypeError(f"{where}: must be a dict with a 'body'")
            _check_keys(item, _BATCH_ITEM_KEYS, where)
            if "body" not in item:
                raise TypeError(f"{where}: missing 'body'")
            content_type = _content_type(item.get("contentType"), where)
            delay = _delay(item.get("delaySeconds"), where)
            encoded = _encode(item["body"], content_type, where)
            total += _check_size(encoded, where)
            rows.append((content_type, encoded, delay if delay is not None else batch_delay or 0))
        if total > MAX_SEND_BATCH_BYTES:
            raise ValueError(
                f"sendBatch(): {total} bytes in total exceed the {MAX_SEND_BATCH_BYTES}-byte limit"
            )
        await self._broker._send(self.name, rows)


# --- Consumer side: messages and batches ---------------------------------------------------

_ACK: Final = "ack"
_RETRY: Final = "retry"
_Decision = tuple[str, int | None]  # (ack | retry, retry delay or None)
# seq, id, timestamp_ms, content_type, body, visible_at, attempts: one stored message.
_Row = tuple[int, str, float, str, bytes, float, int]


@dataclass(frozen=True, slots=True)
class _Settlement:
    """What one batch's settlement writes: kept until committed, so that a commit that fails
    is written again later (the retry delays decided and the attempts counted stand)."""

    consumer: _Consumer
    acked: list[int]
    retried: list[tuple[float, int]]  # (visible_at, seq)
    exhausted: list[int]


class LocalMessage:
    """One delivered message (`Message` of the platform's consumer API)."""

    __slots__ = ("_batch", "_decision", "_seq", "attempts", "body", "id", "timestamp")

    def __init__(
        self,
        batch: LocalMessageBatch,
        seq: int,
        id: str,
        timestamp: float,
        body: Any,
        attempts: int,
    ) -> None:
        self._batch = batch
        self._seq = seq
        self._decision: _Decision | None = None
        self.id = id
        self.timestamp = timestamp
        self.body = body
        self.attempts = attempts

    def ack(self) -> None:
        if self._decision is None and not self._batch._settled:
            self._decision = (_ACK, None)

    def retry(self, options: dict[str, Any] | None = None) -> None:
        _check_keys(options, _RETRY_OPTIONS, "retry()")
        delay = _delay((options or {}).get("delaySeconds"), "retry()")
        if self._decision is None and not self._batch._settled:
            self._decision = (_RETRY, delay)

    def __repr__(self) -> str:
        return f"LocalMessage(id={self.id!r}, attempts={self.attempts}, body={self.body!r})"


class LocalMessageBatch:
    """A batch handed to a consumer (`MessageBatch` of the platform's consumer API)."""

    __slots__ = (
        "_decision",
        "_lease",
        "_messages",
        "_requeued",
        "_settled",
        "messages",
        "queue",
    )

    def __init__(self, queue: str, lease: int, messages: Sequence[_Row]) -> None:
        self.queue = queue
        self._lease = lease
        self._decision: _Decision | None = None
        self._settled = False
        self._requeued = False  # some messages are back in the queue (retried, released)
        self._messages = [
            LocalMessage(self, seq, id, timestamp, _decode(body, content_type), attempts + 1)
            for seq, id, timestamp, content_type, body, _, attempts in messages
        ]
        self.messages: Sequence[QueueMessage] = self._messages

    def ackAll(self) -> None:  # the platform's spelling
        if self._decision is None and not self._settled:
            self._decision = (_ACK, None)

    def retryAll(self, options: dict[str, Any] | None = None) -> None:
        _check_keys(options, _RETRY_OPTIONS, "retryAll()")
        delay = _delay((options or {}).get("delaySeconds"), "retryAll()")
        if self._decision is None and not self._settled:
            self._decision = (_RETRY, delay)


# --- The broker ----------------------------------------------------------------------------

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS kumofire_local_queue_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- send order
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    timestamp_ms REAL NOT NULL,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,
    visible_at REAL NOT NULL,               -- epoch seconds
    attempts INTEGER NOT NULL DEFAULT 0,    -- deliveries so far
    lease INTEGER                           -- the batch holding it; NULL when not in flight
);
CREATE INDEX IF NOT EXISTS kumofire_local_queue_messages_ready
    ON kumofire_local_queue_messages (queue, lease, visible_at);
"""

_SELECT_READY: Final = (
    "SELECT seq, id, timestamp_ms, content_type, body, visible_at, attempts"
    " FROM kumofire_local_queue_messages"
    " WHERE queue = ? AND lease IS NULL AND visible_at <= ? ORDER BY visible_at, seq LIMIT ?"
)
_SELECT_NEXT_VISIBLE: Final = (
    "SELECT min(visible_at) FROM kumofire_local_queue_messages"
    " WHERE queue = ? AND lease IS NULL AND visible_at > ?"
)
_INSERT: Final = (
    "INSERT INTO kumofire_local_queue_messages"
    " (queue, id, timestamp_ms, content_type, body, visible_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_RETRY_ROW: Final = (
    "UPDATE kumofire_local_queue_messages SET lease = NULL, visible_at = ? WHERE seq = ?"
)
_RELEASE_LEASE: Final = "UPDATE kumofire_local_queue_messages SET lease = NULL WHERE lease = ?"
_LEASE: Final = "UPDATE kumofire_local_queue_messages SET lease = ?, attempts = attempts + 1 WHERE "
_DELETE: Final = "DELETE FROM kumofire_local_queue_messages WHERE "


_UNKNOWN: Final[Any] = float("-inf")


def _report_crash(task: asyncio.Task[None]) -> None:
    # A broken store stops delivery: say so at once rather than at garbage collection.
    if not task.cancelled() and (exc := task.exception()) is not None:
        _log.error("queue broker task failed", task=task.get_name(), exc_info=exc)


# A list of message seqs as one bound parameter: the one-file layout's connection keeps D1's
# limit of 100 bound parameters, and a batch holds up to 100 messages.
_SEQS: Final = "(SELECT value FROM json_each(?))"


def _json_list(seqs: Sequence[int]) -> str:
    return "[" + ",".join(map(str, seqs)) + "]"


def _where_seqs(seqs: Sequence[int]) -> tuple[str, int | str]:
    """The condition selecting `seqs` and its one parameter: `seq = ?` for a single message
    (the commonest batch when runs are created one at a time), which SQLite looks up directly;
    the JSON list otherwise, which it reads into a temporary table first (three times the
    instructions for one message)."""
    if len(seqs) == 1:
        return "seq = ?", seqs[0]
    return f"seq IN {_SEQS}", _json_list(seqs)


def _disk_error(error: OSError) -> sqlite3.Error:
    return sqlite3.OperationalError(f"disk I/O error: {error}")


def _as_sqlite_error(error: BaseException) -> BaseException:
    """A failed commit as the queue's callers see it (a shared commit may fail with D1's)."""
    if isinstance(error, sqlite3.Error):
        return error
    return sqlite3.OperationalError(str(error))


class _Consumer:
    __slots__ = ("handler", "in_flight", "next_visible", "queue", "settings", "task", "wake")

    def __init__(self, queue: str, handler: QueueHandler, settings: ConsumerSettings) -> None:
        self.queue = queue
        self.handler = handler
        self.settings = settings
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.in_flight: set[asyncio.Task[None]] = set()
        # A lower bound of the next time a delayed message becomes visible (None: there is
        # none), or _UNKNOWN; kept up to date on sends and retries, so the delivery loop asks
        # SQLite only when a bound has passed.
        self.next_visible: float | None = _UNKNOWN

    def delayed_until(self, visible_at: float) -> None:
        """A message of this queue becomes visible at `visible_at`."""
        known = self.next_visible
        if known is not _UNKNOWN and (known is None or visible_at < known):
            self.next_visible = visible_at


class LocalQueueBroker:
    """Every local queue, stored in one SQLite file, with the push consumers registered on it.

    `close()` is abrupt, like a process dying: in-flight batches are abandoned unsettled and
    come back on the next open. `await stop()` first for a clean shutdown.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        clock: Clock,
        *,
        synchronous: str = "NORMAL",
        one_file: OneFile | None = None,
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}")
        self._clock = clock
        # The one-file layout: the messages live in D1's file and commit with its turn.
        self._one_file = one_file
        if one_file is not None:
            self._db = one_file.conn
            self._checkpointer = one_file.checkpointer
        else:
            if path is None:
                raise ValueError("a queue broker needs a path or a shared file")
            # Autocommit, except for the group transaction (_write) that writes join.
            self._db = sqlite3.connect(os.fspath(path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            checkpoint.configure(self._db)
            self._checkpointer = checkpoint.Checkpointer(path)
            table_names.rename_legacy(self._db, table_names.QUEUE_TABLES)  # its own file only
        self._db.executescript(SCHEMA)
        # Batches in flight when the last process died: visible again, attempt counted.
        self._db.execute(
            "UPDATE kumofire_local_queue_messages SET lease = NULL WHERE lease IS NOT NULL"
        )
        self._consumers: dict[str, _Consumer] = {}
        self._leases = itertools.count(1)
        self._started = False
        self._closed = False
        # Group commit: our open transaction (`pending` while open) and who waits for its
        # commit.
        if one_file is not None:
            self._commits = one_file.commits
        else:
            assert path is not None
            self._commits = group_commit.GroupCommit(
                self._commit_transaction,
                wal=wal_sync.for_connection(
                    self._db,
                    path,
                    synchronous,
                    lambda exc: sqlite3.OperationalError(f"disk I/O error: {exc}"),
                ),
            )
        # Failed commits: how many in a row, until when delivery pauses, the settlements in
        # the open group transaction, and those lost with a failed commit (written again when
        # the pause ends).
        self._failures = 0
        self._resume_at = 0.0
        self._settling: list[_Settlement] = []
        self._lost: list[_Settlement] = []
        self._errors = RepeatedLog(clock)
        if one_file is not None:
            one_file.join(self)

    # -- public API

    def producer(self, queue_name: str) -> LocalQueue:
        if not queue_name:
            raise ValueError("a queue needs a name")
        return LocalQueue(self, queue_name)

    def add_consumer(
        self, queue_name: str, handler: QueueHandler, settings: ConsumerSettings | None = None
    ) -> None:
        """Register the push consumer of a queue (the platform allows one per queue)."""
        settings = settings or ConsumerSettings()
        if queue_name in self._consumers:
            raise ValueError(f"queue {queue_name!r} already has a consumer")
        if settings.dead_letter_queue == queue_name:
            raise ValueError(f"queue {queue_name!r} cannot be its own dead-letter queue")
        consumer = _Consumer(queue_name, handler, settings)
        self._consumers[queue_name] = consumer
        if self._started:
            self._start_consumer(consumer)

    async def start(self) -> None:
        """Start delivering to every registered consumer."""
        self._check_open()
        self._started = True
        for consumer in self._consumers.values():
            if consumer.task is None:
                self._start_consumer(consumer)

    async def stop(self, *, cancel_in_flight: bool = False) -> None:
        """Stop delivering. In-flight batches finish and settle, unless `cancel_in_flight`:
        then their handlers are cancelled and their messages made visible again at once
        (the delivery still counts as an attempt)."""
        self._started = False
        loops = [c.task for c in self._consumers.values() if c.task is not None]
        for consumer in self._consumers.values():
            consumer.task = None
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        handlers = [t for c in self._consumers.values() for t in c.in_flight]
        if cancel_in_flight:
            for task in handlers:
                task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for consumer in self._consumers.values():
            consumer.in_flight.clear()  # a task cancelled before it began did not remove itself
        if not self._closed:
            self._commits.commit()
            # Nothing is in flight now; a handler cancelled before it began left its lease.
            try:
                self._db.execute(
                    "UPDATE kumofire_local_queue_messages SET lease = NULL WHERE lease IS NOT NULL"
                )
            except sqlite3.Error as exc:
                self._write_failed(exc)  # they come back on the next open
            for consumer in self._consumers.values():
                consumer.next_visible = _UNKNOWN

    def close(self) -> None:
        """Close the store. Anything still in flight is abandoned, as by a crash."""
        if self._closed:
            return
        self._closed = True
        if self._one_file is None:
            self._commits.close()
        self._started = False
        for consumer in self._consumers.values():
            for task in (consumer.task, *consumer.in_flight):
                if task is not None:
                    task.cancel()
            consumer.task = None
        try:
            self._commits.commit()  # what was written is kept (as if the crash came after)
        finally:
            if self._one_file is not None:
                self._one_file.leave(self)  # D1 owns the file and closes it
            else:
                self._checkpointer.close()
                self._db.close()

    async def depth(self, queue_name: str) -> int:
        """Messages not yet acked: visible, delayed and in flight."""
        self._check_open()
        if self._commits.pending:
            await self._commits.wait(_as_sqlite_error)
        row = self._db.execute(
            "SELECT count(*) FROM kumofire_local_queue_messages WHERE queue = ?", (queue_name,)
        ).fetchone()
        return int(row[0])

    async def bodies(self, queue_name: str) -> list[Any]:
        """The bodies of the messages not yet acked (visible, delayed and in flight), read
        at a start: which runs the queue still holds (`LocalEnvironment.start`)."""
        self._check_open()
        if self._commits.pending:
            await self._commits.wait(_as_sqlite_error)
        rows = self._db.execute(
            "SELECT content_type, body FROM kumofire_local_queue_messages WHERE queue = ?",
            (queue_name,),
        ).fetchall()
        return [_decode(body, content_type) for content_type, body in rows]

    # -- producing

    async def _send(self, queue: str, rows: Sequence[tuple[str, bytes, int]]) -> None:
        """Store the messages; return once they are durable."""
        self._check_open()
        gate = output_gate.pending_gate()
        if gate is not None:
            await gate.durable()  # the sending object's writes first
        self._enqueue(queue, rows)
        await self._commits.wait(_as_sqlite_error)
        if self._one_file is not None:
            self._one_file.answer_outside(_disk_error)  # at FULL, to a sender outside the runtime

    def _enqueue(self, queue: str, rows: Sequence[tuple[str, bytes, int]]) -> None:
        self._check_open()
        now = self._clock.now()
        timestamp = float(now_ms(self._clock))
        params = [
            (queue, secrets.token_hex(16), timestamp, content_type, body, now + delay)
            for content_type, body, delay in rows
        ]
        consumer = self._consumers.get(queue)
        if consumer is not None:
            for _, _, delay in rows:
                if delay > 0:
                    consumer.delayed_until(now + delay)
        # Alone in this turn, the send commits at once; else the consumer is woken before the
        # write asks for its commit, so it runs first in the next turn and its delivery joins
        # the same commit as this send.
        solo = not self._commits.pending and output_gate.alone()
        if consumer is not None and not solo:
            consumer.wake.set()
        try:
            if len(params) == 1:
                self._write()
                self._db.execute(_INSERT, params[0])
            else:
                with self._tx():
                    self._db.executemany(_INSERT, params)
        except sqlite3.Error as exc:
            self._write_failed(exc)
            raise  # the sender is told
        if self._failures and not self._commits.pending:
            self._storage_works()
        if consumer is not None and solo:
            consumer.wake.set()

    # -- delivering

    def _start_consumer(self, consumer: _Consumer) -> None:
        consumer.task = asyncio.get_running_loop().create_task(
            self._deliver_loop(consumer), name=f"queue-consumer:{consumer.queue}"
        )
        consumer.task.add_done_callback(_report_crash)

    async def _deliver_loop(self, consumer: _Consumer) -> None:
        """Deliver batches as they fill or time out; sleep until the next thing that can
        change that (a delayed message becoming visible, a batch deadline) or a wake-up (a
        send, a batch settling)."""
        settings = consumer.settings
        size = settings.max_batch_size
        timeout = settings.max_batch_timeout
        max_attempts = settings.max_retries + 1
        while True:
            if len(consumer.in_flight) >= settings.concurrency:
                await sleep_until_or_woken(self._clock, None, consumer.wake)
                continue
            now = self._clock.now()
            if now < self._resume_at:
                # A commit failed: wait out the backoff, unless a commit succeeds meanwhile.
                await sleep_until_or_woken(self._clock, self._resume_at, consumer.wake)
                continue
            if self._lost:
                self._rewrite_lost()
                continue
            rows: list[_Row] = self._db.execute(
                _SELECT_READY, (consumer.queue, now, size)
            ).fetchall()
            deadline: float | None = None
            if rows:
                # Recovered after a crash on their last allowed delivery: out of attempts.
                exhausted = [row[0] for row in rows if row[6] >= max_attempts]
                if exhausted:
                    try:
                        with self._tx():
                            self._dead_letter(consumer, exhausted)
                    except sqlite3.Error as exc:
                        self._write_failed(exc)
                    continue
                if len(rows) >= size or now >= rows[0][5] + timeout:
                    try:
                        self._dispatch(consumer, rows)
                    except sqlite3.Error as exc:
                        self._write_failed(exc)  # not delivered: it waits for the backoff
                        continue
                    if len(rows) >= size:
                        continue  # there may be more
                    # That was everything visible now: wait for what changes it.
                else:
                    deadline = rows[0][5] + timeout
            next_visible = consumer.next_visible
            if next_visible is _UNKNOWN or (next_visible is not None and next_visible <= now):
                # Unknown, or the bound passed (those messages are visible now): ask.
                (next_visible,) = self._db.execute(
                    _SELECT_NEXT_VISIBLE, (consumer.queue, now)
                ).fetchone()
                consumer.next_visible = next_visible
            if next_visible is not None and (deadline is None or next_visible < deadline):
                deadline = next_visible
            await sleep_until_or_woken(self._clock, deadline, consumer.wake)

    def _dispatch(self, consumer: _Consumer, rows: list[_Row]) -> None:
        lease = next(self._leases)
        seqs = [row[0] for row in rows]
        self._write()
        where, listed = _where_seqs(seqs)
        self._db.execute(_LEASE + where, (lease, listed))
        if self._failures and not self._commits.pending:
            self._storage_works()
        batch = LocalMessageBatch(consumer.queue, lease, rows)
        # The delivery's own commit, taken now: once the group has committed (or failed),
        # `pending` no longer tells whether this delivery was recorded.
        recorded = self._commits.wait(_as_sqlite_error) if self._commits.pending else None
        task = asyncio.get_running_loop().create_task(self._run_handler(consumer, batch, recorded))
        if not task.done():  # (an eager task factory may have run it to the end already)
            consumer.in_flight.add(task)  # _run_handler removes it

    async def _run_handler(
        self,
        consumer: _Consumer,
        batch: LocalMessageBatch,
        recorded: asyncio.Future[None] | None,
    ) -> None:
        try:
            if recorded is not None:
                try:
                    await recorded  # the delivery is recorded before it happens
                except sqlite3.Error:
                    # Rolled back: the messages are as they were, the attempt not counted,
                    # and they are delivered again once the backoff has passed.
                    batch._settled = True
                    batch._requeued = True
                    return
            await consumer.handler(batch)
        except asyncio.CancelledError:
            batch._settled = True
            batch._requeued = True
            if not self._closed:  # stopped, not crashed: hand the messages back now
                try:
                    self._write()
                    self._db.execute(_RELEASE_LEASE, (batch._lease,))
                except sqlite3.Error as exc:
                    self._write_failed(exc)  # they come back on the next open or stop()
            raise
        except Exception:
            _log.exception(
                "queue handler raised; unacked messages will be retried",
                queue=consumer.queue,
                messages=len(batch._messages),
            )
            self._settle_or_report(consumer, batch, failed=True)
        else:
            self._settle_or_report(consumer, batch, failed=False)
        finally:
            in_flight = consumer.in_flight
            saturated = len(in_flight) >= consumer.settings.concurrency
            in_flight.discard(asyncio.current_task())
            # The delivery loop waits for news only when a slot frees up for it or messages
            # are visible again (retried); an acked batch changes nothing it waits for.
            if saturated or batch._requeued:
                consumer.wake.set()

    def _settle_or_report(
        self, consumer: _Consumer, batch: LocalMessageBatch, *, failed: bool
    ) -> None:
        try:
            self._settle(consumer, batch, failed=failed)
        except Exception:
            # The messages stay leased until the next open or stop(), then come back.
            batch._requeued = True
            _log.exception("queue batch could not be settled", queue=consumer.queue)

    def _settle(self, consumer: _Consumer, batch: LocalMessageBatch, *, failed: bool) -> None:
        batch._settled = True
        if self._closed:
            return
        settings = consumer.settings
        max_attempts = settings.max_retries + 1
        now = self._clock.now()
        acked: list[int] = []
        retried: list[tuple[float, int]] = []
        exhausted: list[int] = []
        batch_delay = batch._decision[1] if batch._decision is not None else None
        for message in batch._messages:
            decision = message._decision or batch._decision
            if decision is None:
                decision = (_RETRY, None) if failed else (_ACK, None)
            if decision[0] == _ACK:
                acked.append(message._seq)
            elif message.attempts >= max_attempts:
                exhausted.append(message._seq)
            else:
                delay = decision[1]
                if delay is None:
                    delay = batch_delay if batch_delay is not None else settings.retry_delay
                retried.append((now + delay, message._seq))
        if retried:
            batch._requeued = True
        self._write_settlement(_Settlement(consumer, acked, retried, exhausted))

    def _write_settlement(self, settlement: _Settlement) -> None:
        """Write a settlement; if it cannot be stored, keep it to write after the backoff."""
        acked, retried = settlement.acked, settlement.retried
        try:
            if acked and not retried and not settlement.exhausted:
                self._write()  # one statement: atomic by itself
                where, listed = _where_seqs(acked)
                self._db.execute(_DELETE + where, (listed,))
            else:
                with self._tx():
                    if acked:
                        self._db.execute(
                            f"DELETE FROM kumofire_local_queue_messages WHERE seq IN {_SEQS}",
                            (_json_list(acked),),
                        )
                    if retried:
                        self._db.executemany(_RETRY_ROW, retried)
                    if settlement.exhausted:
                        self._dead_letter(settlement.consumer, settlement.exhausted)
        except sqlite3.Error as exc:
            self._write_failed(exc)
            self._lost.append(settlement)
            return
        if self._commits.pending:
            self._settling.append(settlement)  # until the group commits
        elif self._failures:
            self._storage_works()
        consumer = settlement.consumer
        for visible_at, _ in retried:
            consumer.delayed_until(visible_at)

    def _rewrite_lost(self) -> None:
        """The pause after a failed commit is over: write the settlements it lost, in order,
        until one fails again."""
        while self._lost and self._clock.now() >= self._resume_at:
            self._write_settlement(self._lost.pop(0))
        for consumer in self._consumers.values():
            consumer.next_visible = _UNKNOWN

    def _dead_letter(self, consumer: _Consumer, seqs: list[int]) -> None:
        """Move messages out of attempts to the dead-letter queue, or delete them."""
        dlq = consumer.settings.dead_letter_queue
        listed = _json_list(seqs)
        ids = [
            row[0]
            for row in self._db.execute(
                f"SELECT id FROM kumofire_local_queue_messages WHERE seq IN {_SEQS}", (listed,)
            )
        ]
        if dlq is None:
            self._db.execute(
                f"DELETE FROM kumofire_local_queue_messages WHERE seq IN {_SEQS}", (listed,)
            )
            _log.warning(
                "queue messages dropped after their last retry",
                queue=consumer.queue,
                ids=ids,
                attempts=consumer.settings.max_retries + 1,
            )
            return
        self._db.execute(
            "UPDATE kumofire_local_queue_messages"
            " SET queue = ?, lease = NULL, attempts = 0, visible_at = ?"
            f" WHERE seq IN {_SEQS}",
            (dlq, self._clock.now(), listed),
        )
        _log.warning(
            "queue messages moved to the dead-letter queue",
            queue=consumer.queue,
            dead_letter_queue=dlq,
            ids=ids,
            attempts=consumer.settings.max_retries + 1,
        )
        target = self._consumers.get(dlq)
        if target is not None:
            target.wake.set()

    # -- helpers

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """Several statements as one change, inside the group transaction."""
        self._write()
        self._db.execute("SAVEPOINT change")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK TO change")
                self._db.execute("RELEASE change")
            raise
        self._db.execute("RELEASE change")

    # -- group commit

    def _write(self) -> None:
        """Open the group transaction (if needed) for a write; it commits at the end of the
        loop's turn."""
        self._checkpointer.wrote()
        if not self._commits.pending and not output_gate.alone():
            wal = self._commits._wal
            if wal is not None:
                wal.relax()  # the group commit syncs the WAL itself (wal_sync)
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                if wal is not None:
                    wal.restore()
                raise
            self._commits.join()

    def _commit_transaction(self) -> sqlite3.Error | None:
        """The group commit's work: commit the open transaction (undo it if that fails)."""
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._group_lost(exc)
            return exc
        self.committed()
        return None

    # -- the one-file layout's commit (`one_file.Participant`)

    def stage(self) -> None:
        """Nothing is buffered: the queue writes into the open transaction as it goes."""

    def committed(self) -> None:
        self._settling.clear()
        if self._failures:
            self._storage_works()

    def rolled_back(self, error: BaseException) -> None:
        self._group_lost(error)

    def _group_lost(self, error: BaseException) -> None:
        """The group transaction was rolled back: its sends fail (their callers are told),
        its deliveries did not happen, and its settlements are written again later."""
        self._lost.extend(self._settling)
        self._settling.clear()
        self._pause(error)

    def _write_failed(self, error: sqlite3.Error) -> None:
        """A write outside the group commit, or its own commit, failed: undo what is left of
        it and pause."""
        db = self._db
        if self._commits.pending:
            if not db.in_transaction:  # SQLite rolled the whole group back
                self._group_lost(error)
                self._commits.lost(error)
                return
        elif db.in_transaction:
            db.execute("ROLLBACK")
        self._pause(error)

    def _storage_works(self) -> None:
        """A commit succeeded after failures: storage takes writes again (space was freed),
        so delivery resumes now rather than when the backoff would have ended."""
        self._failures = 0
        if self._resume_at > self._clock.now():
            self._resume_at = 0.0
            for consumer in self._consumers.values():
                consumer.wake.set()
        _log.info("queue commits succeed again; delivery resumes")

    def _pause(self, error: BaseException) -> None:
        """A commit failed: deliver nothing until the backoff has passed (2 s, doubling to
        60 s while commits keep failing); log the repeated error at a bounded rate."""
        now = self._clock.now()
        delay = min(STORAGE_RETRY_START_SECONDS * 2**self._failures, STORAGE_RETRY_MAX_SECONDS)
        if now >= self._resume_at:  # failures during a pause do not lengthen the next one
            self._failures += 1
            self._resume_at = now + delay
        for consumer in self._consumers.values():
            consumer.next_visible = _UNKNOWN
        suppressed = self._errors.check(str(error))
        if suppressed is not None:
            _log.error(
                "queue commit failed; its writes are lost",
                error=str(error),
                retry_in_seconds=round(self._resume_at - now, 3),
                **({"suppressed": suppressed} if suppressed else {}),
            )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the queue broker is closed")


def wrangler_consumers(config: Mapping[str, Any]) -> Iterable[tuple[str, ConsumerSettings]]:
    """(queue name, settings) for each `[[queues.consumers]]` of a parsed wrangler config."""
    for table in config.get("queues", {}).get("consumers", []):
        yield table["queue"], ConsumerSettings.from_wrangler(table)
