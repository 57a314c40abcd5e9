"""The embedded Durable Objects binding: one instance per id, SQLite storage, alarms.

A `LocalDurableObjectNamespace` is what a Worker sees as `env.COORDINATOR`: stubs whose
methods are RPC calls into one live object per id, each object with its `ctx.storage` (KV,
alarm, and a lazily created SQL database) persisted on disk, and event-driven alarms. The
semantics follow the platform's documentation, not convenience:

* Concurrency (the input gate). Calls to one object start one at a time, in order. Storage
  methods complete inside the event loop without yielding, so while a call awaits storage no
  other call can start, and a read-modify-write over storage is atomic. When a call awaits
  anything else (a queue send, another RPC, a future) the event loop runs other calls to the
  same object, which may interleave.
* Write coalescing and the output gate, as the platform does them. A storage write applies at
  once in memory (the object's later reads see it) and is committed with every other write
  made in the same event-loop turn, by any object, in one transaction. What the object sends
  waits for its writes to be durable: an RPC result (or error) is released to the caller only
  after the commit, and before the object performs I/O through another local binding (a D1
  statement, a queue send, an RPC to another object) its pending writes are committed first
  (see `output_gate`). So a crash loses only writes whose call had not yet returned; with
  `synchronous="NORMAL"` durable against a crash of this process, `"FULL"` for power loss
  too. Reads are served from a per-object cache of what was read or written (dropped on
  eviction), as the platform's storage cache does. A failed commit resets the objects whose
  writes it held, and their callers get the error.
* Alarms. One per object, millisecond granularity; an alarm set in the past fires at once; a
  throwing `alarm()` is retried after 2 s, 4 s, 8 s, ... up to 6 retries, then dropped; an alarm
  set while `alarm()` runs replaces the running one (no retry of the old one); during the
  handler `getAlarm()` is None unless the handler set a new alarm, and `deleteAlarm()` there
  removes only such a new alarm (as workerd does). Between retries `getAlarm()` answers the
  retry's time. A run whose commit fails (a full disk) failed too: its stored alarm is retried
  after the same backoff, then every 64 s until a commit succeeds, never at once.
  At least once: a handler cut short by `stop()` runs again after `start()`.
  Scheduling is event-driven: one timer task sleeps until the earliest alarm (re-aimed only
  when an earlier one is set), and an alarm already due starts its handler at once.
* `deleteAll()` also deletes the alarm: the platform does so for compatibility dates from
  2026-02-24 (changelog "deleteAll() now deletes Durable Object alarm"), and this project's
  date is later. `delete_all_deletes_alarm=False` gives the older behaviour.
* RPC: positional arguments only, values structured-cloned both ways, exceptions arrive as
  `DurableObjectError` carrying the message but not the type.
* Eviction (`eviction`). An object with no call in flight, no alarm running or due within the
  idle period, no retry of a failed alarm pending, no task (`waitUntil`,
  `blockConcurrencyWhile`) and no uncommitted write is evicted once idle for
  `IDLE_EVICTION_SECONDS` (70 s, the platform's lower bound), on the namespace's clock: its
  instance goes, and, unless an alarm is set (the alarm lives in the namespace and rebuilds
  it), its book-keeping too. An object emptied by `deleteAll()` with no alarm left (a
  coordinator that closed) goes as soon as it is idle: storage holds nothing of it, so its
  next call would build the same object. The next call builds a fresh instance from storage.

Storage layout: one SQLite file per namespace (`<path>/objects.sqlite3`) holds every object's
KV pairs and alarm, so thousands of objects cost rows, not files; an object that uses
`ctx.storage.sql` gets its own file under `<path>/sql/` on first use (its statements commit
one by one, so they are durable when `exec()` returns). `abort()` closes as a crash would.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import heapq
import inspect
import itertools
import logging
import math
import os
import re
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import CoroutineType
from typing import TYPE_CHECKING, Any, overload

import msgspec

from kumofire_jobs.core.clock import Clock
from kumofire_jobs.core.log import RepeatedLog
from kumofire_jobs.local import checkpoint, output_gate
from kumofire_jobs.local.eviction import IDLE_EVICTION_SECONDS, IdleEvictor

if TYPE_CHECKING:
    from kumofire_coordinator.storage import ActorStorage
    from kumofire_jobs.core.bindings import DurableObjectId, DurableObjectNamespace

log = logging.getLogger(__name__)

# --- Platform facts -------------------------------------------------------------------------

ALARM_RETRY_START_SECONDS = 2.0  # first retry 2 s after a throwing alarm(), then doubling
ALARM_MAX_RETRIES = 6  # retries after the first run; the alarm is dropped after the 6th fails
# The KV-backed class limits. SQLite-backed classes allow 2 MB per key plus value; enforcing
# the stricter pair keeps code that runs here within both.
MAX_KEY_BYTES = 2 * 1024  # UTF-8 bytes of one key
MAX_VALUE_BYTES = 128 * 1024  # one serialized value
# Like miniflare: the platform's own serialization adds a few tag bytes, and a 128 KiB byte
# string must still fit.
VALUE_SIZE_SLACK = 32
MAX_KEYS_PER_CALL = 128  # keys in one get/put/delete
# deleteAll() deletes the alarm from compatibility date 2026-02-24 on; the project's is later.
DELETE_ALL_DELETES_ALARM = True

_GET_OPTIONS = frozenset({"allowConcurrency", "noCache"})
_PUT_OPTIONS = frozenset({"allowConcurrency", "allowUnconfirmed", "noCache"})
_LIST_OPTIONS = _GET_OPTIONS | {"start", "startAfter", "end", "prefix", "reverse", "limit"}
_GET_ALARM_OPTIONS = frozenset({"allowConcurrency"})
_SET_ALARM_OPTIONS = frozenset({"allowConcurrency", "allowUnconfirmed"})
_SYNCHRONOUS_MODES = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_TRANSACTION_STATEMENT = re.compile(
    r"\s*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE
)
_HEX_ID = re.compile(r"[0-9a-f]{64}")
_NO_VALUE: Any = object()
_MISSING: Any = object()
# Keys an object's read cache holds before it starts over (the platform caches a few MB).
CACHE_MAX_KEYS = 1024

# --- Errors ---------------------------------------------------------------------------------


class DurableObjectError(Exception):
    """An exception raised inside a Durable Object, as the caller sees it.

    Workers RPC carries the message across but not the exception's type, so callers must not
    branch on types raised by the object. `remote` is True as on the platform's errors.
    """

    remote = True


class DataCloneError(TypeError):
    """A value that the structured clone algorithm (RPC, storage) cannot carry."""


# --- Structured clone -----------------------------------------------------------------------


def structured_clone(value: Any) -> Any:
    """A deep copy limited to what crosses RPC and storage: dict (str keys), list, str, int,
    float, bool, None, bytes. Tuples arrive as lists; anything else raises DataCloneError."""
    if type(value) in _ATOMS:
        return value
    try:
        return _clone(value)
    except RecursionError:
        raise DataCloneError("value is cyclic or nested too deeply to clone") from None


# Immutable values that cross as they are (checked by exact type: subclasses are converted).
_ATOMS = frozenset({str, int, float, bool, type(None), bytes})


def _clone(value: Any) -> Any:
    kind = type(value)
    if kind in _ATOMS:
        return value
    atoms = _ATOMS
    if kind is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    raise DataCloneError(f"dict keys must be strings, not {type(key).__name__}")
                key = str(key)
            out[key] = item if type(item) in atoms else _clone(item)
        return out
    if kind is list or kind is tuple:
        return [item if type(item) in atoms else _clone(item) for item in value]
    # Subclasses (str and int enums, dict subclasses) cross as their base value, as Pyodide
    # converts them.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, dict):
        return _clone(dict(value))
    if isinstance(value, list | tuple):
        return [_clone(item) for item in value]
    raise DataCloneError(f"{kind.__name__} object could not be cloned")


def _encode(value: Any) -> bytes:
    try:
        return msgspec.msgpack.encode(structured_clone(value))
    except OverflowError:
        raise DataCloneError("an integer beyond 64 bits could not be cloned into storage") from None


_decode = msgspec.msgpack.decode


def _more(suppressed: int) -> str:
    """The note on a rate-limited log line (`RepeatedLog`)."""
    return f" (the same error {suppressed} more times since last logged)" if suppressed else ""


# --- Ids and stubs --------------------------------------------------------------------------


class LocalDurableObjectId:
    """A Durable Object id: 64 hex digits; `name` is kept when it came from a name."""

    __slots__ = ("_hex", "_namespace", "name")

    def __init__(self, hex_id: str, name: str | None, namespace: str) -> None:
        self._hex = hex_id
        self.name = name
        self._namespace = namespace

    def toString(self) -> str:
        return self._hex

    def equals(self, other: object) -> bool:
        return self == other

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LocalDurableObjectId)
            and other._hex == self._hex
            and other._namespace == self._namespace
        )

    def __hash__(self) -> int:
        return hash(self._hex)

    def __str__(self) -> str:
        return self._hex

    def __repr__(self) -> str:
        return f"LocalDurableObjectId({self._hex[:12]}…, name={self.name!r})"


class LocalDurableObjectStub:
    """`await stub.method(*args)` calls the object's public method by RPC."""

    def __init__(self, namespace: LocalDurableObjectNamespace, id: LocalDurableObjectId) -> None:
        self.id: DurableObjectId = id
        self.name = id.name
        self._local_id = id
        self._namespace = namespace

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)
        return _RpcMethod(self._namespace, self._local_id, method)

    def __repr__(self) -> str:
        return f"<stub {self._namespace.class_name} {self.id!r}>"


class _RpcMethod:
    __slots__ = ("_id", "_method", "_namespace")

    def __init__(
        self, namespace: LocalDurableObjectNamespace, id: LocalDurableObjectId, method: str
    ) -> None:
        self._namespace = namespace
        self._id = id
        self._method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        if kwargs:
            raise TypeError(
                f"RPC method {self._method!r} takes positional arguments only "
                f"(got keyword arguments {sorted(kwargs)})"
            )
        args_clone = structured_clone(args)  # a list, as tuples arrive
        # Output from the calling object (if any) waits for its writes to be durable.
        output_gate.flush()
        # Like the platform the call is sent now, not when awaited, so calls made in order are
        # delivered in order; awaiting the result only waits for the answer. The answer is its
        # own future: a caller that stops waiting does not cancel the call inside the object.
        return self._namespace._send(self._id, self._method, args_clone)


# --- Per-object state -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlarmInvocationInfo:
    """What the platform passes to `alarm(alarmInfo)`."""

    retryCount: int
    isRetry: bool


class _Actor:
    """Book-keeping for one object id: its live instance (if any), gates, alarm, and the
    writes not yet committed. It is the object's output gate (`output_gate.Gate`)."""

    __slots__ = (
        "alarm_committed",
        "alarm_gen",
        "alarm_ms",
        "alarm_queued",
        "alarm_ran",
        "alarm_retry",
        "alarm_row",
        "alarm_running",
        "blockers",
        "busy",
        "cache",
        "cache_complete",
        "cleared",
        "dirty",
        "hex",
        "instance",
        "name",
        "name_committed",
        "name_recorded",
        "namespace",
        "opened",
        "reset_error",
        "resets",
        "serial",
        "sql",
        "storage",
        "writes",
        "writes_clear",
    )

    def __init__(
        self, hex_id: str, name: str | None, namespace: LocalDurableObjectNamespace
    ) -> None:
        self.hex = hex_id
        self.name = name
        self.namespace = namespace
        self.name_recorded = False  # the name's row, as it will be once pending writes commit
        self.name_committed: bool | None = None  # the row as committed (None: not known)
        # Writes not yet committed: KV values by key (None: deleted), whether every committed
        # key goes first (deleteAll), and the alarm row (alarm_row) when it differs from the
        # committed one (alarm_committed; an object with a stored alarm is loaded at open, so
        # any other object has none). `dirty` while any of these waits for a commit.
        self.dirty = False
        self.writes: dict[str, bytes | None] = {}
        self.writes_clear = False
        self.alarm_row: tuple[int, int] | None = None
        self.alarm_committed: tuple[int, int] | None = None
        # Committed values read or written (None: absent); complete when it holds every key.
        self.cache: dict[str, bytes | None] = {}
        self.cache_complete = False
        self.instance: Any = None
        self.serial = 0  # how many instances have been built (tests watch rebuilds)
        # Calls, alarm runs and tasks (waitUntil, blockConcurrencyWhile) not finished: an
        # object is evicted only at 0. `cleared`: emptied by deleteAll() and not written since.
        self.busy = 0
        self.cleared = False
        self.blockers = 0  # running blockConcurrencyWhile callbacks
        self.opened: asyncio.Event | None = None  # set when blockers drops to 0
        self.resets = 0  # blockConcurrencyWhile callbacks that failed (each resets the object)
        self.reset_error = ""
        self.storage: LocalDurableObjectStorage | None = None
        self.sql: LocalSqlStorage | None = None
        # The alarm: alarm_ms is the pending (or running) alarm, alarm_retry its retry count.
        # While it runs, alarm_queued holds one set by the handler (None: none or deleted).
        self.alarm_ms: int | None = None
        self.alarm_retry = 0
        self.alarm_gen = 0  # bumps on every change, so stale heap entries are skipped
        self.alarm_running = False
        self.alarm_queued: int | None = None
        # The retry count of the alarm run whose outcome (and writes) await a commit: if that
        # commit fails, the run failed, and its retry keeps the backoff (None: no such run).
        self.alarm_ran: int | None = None

    # The output gate ---------------------------------------------------------------------------

    def pending(self) -> bool:
        return self.dirty

    def flush(self) -> None:
        self.namespace._flush()

    def durable(self) -> asyncio.Future[None]:
        return self.namespace._durable()


class LocalDurableObjectState:
    """`ctx` as the object's constructor receives it."""

    def __init__(
        self,
        namespace: LocalDurableObjectNamespace,
        actor: _Actor,
        id: LocalDurableObjectId,
        storage: LocalDurableObjectStorage,
    ) -> None:
        self.id = id
        self.storage = storage
        self._namespace = namespace
        self._actor = actor

    def blockConcurrencyWhile(self, callback: Callable[[], Awaitable[Any]]) -> asyncio.Future[Any]:
        """Run `callback` with no other call to this object starting until it completes.

        Starts at once (so a constructor may call it without awaiting, as in JavaScript);
        await the returned task for its result. If the callback raises, the object is reset:
        the next call builds a fresh instance.
        """
        actor = self._actor
        self._namespace._hold(actor)
        actor.blockers += 1
        if actor.opened is None:
            actor.opened = asyncio.Event()
        actor.opened.clear()

        async def run() -> Any:
            try:
                return await callback()
            except Exception as exc:
                # The platform resets the object; the calls waiting at the gate fail.
                actor.resets += 1
                actor.reset_error = str(exc)
                if actor.instance is not None:
                    self._namespace._drop_instance(actor)
                raise

        def release(_: object) -> None:
            # A done callback, not `finally`: it also runs if the task is cancelled unstarted.
            actor.blockers -= 1
            if actor.blockers == 0 and actor.opened is not None:
                actor.opened.set()
            self._namespace._release(actor)

        task = asyncio.ensure_future(run())
        task.add_done_callback(release)
        return self._namespace._track(task, "blockConcurrencyWhile")

    def waitUntil(self, awaitable: Awaitable[Any]) -> None:
        """Keep `awaitable` running after the call returns (its errors are logged); the
        object is not evicted before it ends."""
        actor = self._actor
        self._namespace._hold(actor)
        task = asyncio.ensure_future(awaitable)
        task.add_done_callback(lambda _: self._namespace._release(actor))
        self._namespace._track(task, "waitUntil")


# --- Storage --------------------------------------------------------------------------------


def _check_options(options: Mapping[str, Any] | None, allowed: frozenset[str], op: str) -> None:
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise TypeError(f"{op}() options must be a dict, not {type(options).__name__}")
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(
            f"{op}() got unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"storage keys must be strings, not {type(key).__name__}")
    if len(key) * 4 > MAX_KEY_BYTES and len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"keys cannot exceed {MAX_KEY_BYTES} bytes")
    return key


def _check_keys(keys: Any, op: str) -> list[str]:
    if not isinstance(keys, list | tuple):
        raise TypeError(f"{op}() takes a key or a list of keys")
    if len(keys) > MAX_KEYS_PER_CALL:
        raise ValueError(f"{op}() takes at most {MAX_KEYS_PER_CALL} keys")
    return [_check_key(key) for key in keys]


def _encode_value(value: Any) -> bytes:
    data = _encode(value)
    if len(data) > MAX_VALUE_BYTES + VALUE_SIZE_SLACK:
        raise ValueError(f"values cannot exceed {MAX_VALUE_BYTES} bytes")
    return data


def _alarm_ms(scheduled_time: Any) -> int:
    if isinstance(scheduled_time, datetime):
        if scheduled_time.tzinfo is None:
            raise TypeError("setAlarm() needs a timezone-aware datetime")
        return math.floor(scheduled_time.timestamp() * 1000)
    if isinstance(scheduled_time, bool) or not isinstance(scheduled_time, int | float):
        raise TypeError("setAlarm() takes epoch milliseconds or a datetime")
    if not math.isfinite(scheduled_time):
        raise ValueError("setAlarm() needs a finite time")
    return math.floor(scheduled_time)


class LocalDurableObjectStorage:
    """`ctx.storage`: the KV API, the alarm API and `sql`, in the platform's spelling.

    Every method runs to completion without yielding to the event loop (SQLite is called
    synchronously), which is what makes the input gate hold. Writes apply to the object's
    pending writes and commit with the turn's other writes; the output gate holds what the
    object sends until then.
    """

    def __init__(self, namespace: LocalDurableObjectNamespace, actor: _Actor) -> None:
        self._namespace = namespace
        self._actor = actor

    # KV ------------------------------------------------------------------------------------

    @overload
    async def get(self, key: str, options: Mapping[str, Any] | None = None) -> Any: ...

    @overload
    async def get(
        self, key: list[str] | tuple[str, ...], options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]: ...

    async def get(self, key: Any, options: Mapping[str, Any] | None = None) -> Any:
        """A key's value (None when absent), or for a list of keys a dict of those present."""
        if options is not None:
            _check_options(options, _GET_OPTIONS, "get")
        if isinstance(key, str):
            data = self._namespace._read(self._actor, _check_key(key))
            return None if data is None else _decode(data)
        keys = _check_keys(key, "get")
        if not keys:
            return {}
        found = self._namespace._read_many(self._actor, keys)
        return {k: _decode(found[k]) for k in sorted(found)}

    async def put(
        self,
        key: str | Mapping[str, Any],
        value: Any = _NO_VALUE,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """`put(key, value)` or `put({key: value, ...})` (then the second argument is options)."""
        actor = self._actor
        if isinstance(key, str):
            if value is _NO_VALUE:
                raise TypeError("put() needs a value")
            if options is not None:
                _check_options(options, _PUT_OPTIONS, "put")
            key = _check_key(key)
            actor.writes[key] = _encode_value(value)
        elif isinstance(key, Mapping):
            if options is not None:
                raise TypeError("put(entries, options) takes two arguments")
            entries_options = None if value is _NO_VALUE else value
            _check_options(entries_options, _PUT_OPTIONS, "put")
            if len(key) > MAX_KEYS_PER_CALL:
                raise ValueError(f"put() takes at most {MAX_KEYS_PER_CALL} entries")
            # Validate and encode every entry before applying any: all or nothing.
            rows = [(_check_key(k), _encode_value(v)) for k, v in key.items()]
            actor.writes.update(rows)
        else:
            raise TypeError("put() takes a key and a value, or a dict of entries")
        actor.cleared = False
        self._namespace._record_name(actor)
        self._namespace._touch(actor)

    @overload
    async def delete(self, key: str, options: Mapping[str, Any] | None = None) -> bool: ...

    @overload
    async def delete(
        self, key: list[str] | tuple[str, ...], options: Mapping[str, Any] | None = None
    ) -> int: ...

    async def delete(self, key: Any, options: Mapping[str, Any] | None = None) -> bool | int:
        """Delete a key (True if it existed) or a list of keys (how many existed)."""
        _check_options(options, _PUT_OPTIONS, "delete")
        keys = [_check_key(key)] if isinstance(key, str) else _check_keys(key, "delete")
        if not keys:
            return 0
        namespace, actor = self._namespace, self._actor
        found = namespace._read_many(actor, keys)
        if found:
            for existing in found:
                actor.writes[existing] = None
            namespace._touch(actor)
        return len(found) > 0 if isinstance(key, str) else len(found)

    async def deleteAll(self, options: Mapping[str, Any] | None = None) -> None:
        """Delete every key, the SQL database and (see DELETE_ALL_DELETES_ALARM) the alarm."""
        _check_options(options, _PUT_OPTIONS, "deleteAll")
        namespace, actor = self._namespace, self._actor
        actor.writes.clear()
        actor.writes_clear = True
        if namespace.delete_all_deletes_alarm:
            namespace._delete_alarm(actor)
            actor.name_recorded = False
        namespace._touch(actor)
        actor.cleared = True  # with no alarm left, nothing of the object remains
        if actor.sql is not None:
            actor.sql._destroy()

    async def list(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Entries ordered by key: `prefix`, `start` (inclusive) or `startAfter`, `end`
        (exclusive), `reverse`, `limit`."""
        _check_options(options, _LIST_OPTIONS, "list")
        # None stands for JavaScript's undefined: the option is absent.
        opts = {k: v for k, v in (options or {}).items() if v is not None}
        where = ["object_id = ?"]
        params: list[Any] = [self._actor.hex]
        if "start" in opts and "startAfter" in opts:
            raise TypeError("list() takes start or startAfter, not both")
        for option, op in (("start", ">="), ("startAfter", ">"), ("end", "<")):
            if option in opts:
                where.append(f"key {op} ?")
                params.append(_check_key(opts[option]))
        prefix = opts.get("prefix")
        if prefix is not None and prefix != "":
            where.append("key >= ? AND substr(key, 1, ?) = ?")
            params += [_check_key(prefix), len(prefix), prefix]
        order = "DESC" if opts.get("reverse") else "ASC"
        sql = f"SELECT key, value FROM kv WHERE {' AND '.join(where)} ORDER BY key {order}"
        if "limit" in opts:
            limit = opts["limit"]
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError("list() limit must be a positive integer")
            sql += " LIMIT ?"
            params.append(limit)
        if self._actor.dirty:
            self._namespace._flush()  # list the committed rows, pending writes included
        rows = self._namespace._db.execute(sql, params).fetchall()
        return {k: _decode(v) for k, v in rows}

    async def sync(self) -> None:
        """Resolve once the writes made so far are durable."""
        if self._actor.dirty:
            await self._namespace._durable()

    # Alarm ---------------------------------------------------------------------------------

    async def getAlarm(self, options: Mapping[str, Any] | None = None) -> float | None:
        """The alarm's time in epoch ms, or None. Inside `alarm()`: only one it set itself."""
        if options is not None:
            _check_options(options, _GET_ALARM_OPTIONS, "getAlarm")
        return self._namespace._alarm_time(self._actor)

    async def setAlarm(
        self, scheduled_time: float | datetime, options: Mapping[str, Any] | None = None
    ) -> None:
        """Set the object's one alarm (epoch ms or datetime), replacing any other."""
        if options is not None:
            _check_options(options, _SET_ALARM_OPTIONS, "setAlarm")
        time_ms = _alarm_ms(scheduled_time)
        instance = self._actor.instance
        if instance is not None and not callable(getattr(instance, "alarm", None)):
            raise TypeError("the Durable Object class must have an alarm() handler to setAlarm()")
        self._namespace._set_alarm(self._actor, time_ms)

    async def deleteAlarm(self, options: Mapping[str, Any] | None = None) -> None:
        if options is not None:
            _check_options(options, _SET_ALARM_OPTIONS, "deleteAlarm")
        namespace, actor = self._namespace, self._actor
        if actor.alarm_running or actor.alarm_ms is not None or actor.alarm_row is not None:
            namespace._delete_alarm(actor)

    # SQL -----------------------------------------------------------------------------------

    @property
    def sql(self) -> LocalSqlStorage:
        actor = self._actor
        actor.cleared = False
        if actor.sql is None:
            actor.sql = LocalSqlStorage(self._namespace._sql_path(actor.hex), self._namespace)
        return actor.sql


# --- SQL storage ----------------------------------------------------------------------------


class SqlRow(dict[str, Any]):
    """A result row: a dict that also reads columns as attributes (`row.greeting`), as a
    Python Worker reads the JavaScript row object."""

    def __getattr__(self, column: str) -> Any:
        try:
            return self[column]
        except KeyError:
            raise AttributeError(column) from None


class LocalSqlCursor:
    """The result of `sql.exec()`: iterate it once, or take `toArray()` / `one()` / `raw()`."""

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]], written: int) -> None:
        self.columnNames = columns
        self._rows = rows
        self._next = 0
        # sqlite3 does not report rows scanned: rowsRead counts the rows returned, a lower
        # bound of what the platform bills.
        self.rowsRead = len(rows)
        self.rowsWritten = written

    def _take(self) -> list[tuple[Any, ...]]:
        rows = self._rows[self._next :]
        self._next = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[SqlRow]:
        while self._next < len(self._rows):
            row = self._rows[self._next]
            self._next += 1
            yield SqlRow(zip(self.columnNames, row, strict=True))

    def next(self) -> dict[str, Any]:
        """The JavaScript iterator protocol: `{"done": bool, "value": row}`."""
        for row in self:
            return {"done": False, "value": row}
        return {"done": True}

    def toArray(self) -> list[SqlRow]:
        return [SqlRow(zip(self.columnNames, row, strict=True)) for row in self._take()]

    def one(self) -> SqlRow:
        rows = self._take()
        if len(rows) != 1:
            raise ValueError(f"Expected exactly one result from SQL query, got {len(rows)}")
        return SqlRow(zip(self.columnNames, rows[0], strict=True))

    def raw(self) -> Iterator[list[Any]]:
        return (list(row) for row in self._take())


class LocalSqlStorage:
    """`ctx.storage.sql`: a per-object SQLite database, created on first use."""

    def __init__(self, path: Path, namespace: LocalDurableObjectNamespace) -> None:
        self._path = path
        self._namespace = namespace
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = self._namespace._connect(self._path)
        return self._conn

    def exec(self, query: str, *bindings: Any) -> LocalSqlCursor:
        """Run one statement (or several, without bindings) and return its cursor."""
        for binding in bindings:
            if binding is not None and not isinstance(binding, int | float | str | bytes):
                raise TypeError(f"cannot bind a {type(binding).__name__} to a SQL parameter")
        statements = _split_sql(query)
        if not statements:
            raise ValueError("exec() needs a statement")
        if len(statements) > 1 and bindings:
            raise ValueError("bindings apply to a single statement")
        for statement in statements:
            if _TRANSACTION_STATEMENT.match(statement):
                raise ValueError(
                    "To execute a transaction, use the storage's transaction APIs instead of "
                    "the SQL BEGIN TRANSACTION or SAVEPOINT statements"
                )
        conn = self._connection()
        before = conn.total_changes
        cursor: sqlite3.Cursor | None = None
        for statement in statements:
            cursor = conn.execute(statement, bindings)
        assert cursor is not None
        rows = cursor.fetchall()
        columns = [d[0] for d in cursor.description or ()]
        return LocalSqlCursor(columns, rows, conn.total_changes - before)

    @property
    def databaseSize(self) -> int:
        if self._conn is None and not self._path.exists():
            return 0
        conn = self._connection()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int(pages * size)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _destroy(self) -> None:
        self._close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self._path}{suffix}")


def _split_sql(query: str) -> list[str]:
    statements: list[str] = []
    buffer = ""
    for piece in query.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer)
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        statements.append(buffer)
    return statements


# --- The namespace --------------------------------------------------------------------------

Factory = Callable[[LocalDurableObjectState, Any], Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    object_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (object_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alarms (
    object_id TEXT PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    retry INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS names (
    object_id TEXT PRIMARY KEY,
    name TEXT NOT NULL
) WITHOUT ROWID;
"""


class LocalDurableObjectNamespace:
    """A Durable Object namespace bound to one class, persisted under the directory `path`.

    `factory(ctx, env)` builds an object, like `DurableObject.__init__(self, ctx, env)`.
    Objects are built lazily on their first call and rebuilt from storage after `evict()` or
    idle eviction (`idle_eviction_seconds`). Alarms fire, and idle objects are evicted, only
    between `start()` and `stop()`/`close()`.
    """

    def __init__(
        self,
        factory: Factory,
        *,
        path: str | os.PathLike[str],
        clock: Clock,
        env: Any = None,
        class_name: str | None = None,
        synchronous: str = "NORMAL",
        delete_all_deletes_alarm: bool = DELETE_ALL_DELETES_ALARM,
        idle_eviction_seconds: float = IDLE_EVICTION_SECONDS,
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS_MODES)}")
        self.class_name: str = class_name or str(getattr(factory, "__name__", "DurableObject"))
        self.delete_all_deletes_alarm = delete_all_deletes_alarm
        self._factory = factory
        self._env = env
        self._clock = clock
        self._synchronous = synchronous.upper()
        self._dir = Path(path)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._db = self._connect(self._dir / "objects.sqlite3")
        checkpoint.configure(self._db)
        self._checkpointer = checkpoint.Checkpointer(self._dir / "objects.sqlite3")
        self._db.executescript(_SCHEMA)
        self._actors: dict[str, _Actor] = {}
        self._idle_seconds = idle_eviction_seconds
        self._evictor = IdleEvictor[_Actor](clock, self._evict_idle, idle_eviction_seconds)
        self._digests: dict[str, str] = {}  # idFromName's recent answers
        self._tasks: set[asyncio.Future[Any]] = set()
        # The alarm heap: (due epoch seconds, seq, actor, actor.alarm_gen when pushed).
        self._heap: list[tuple[float, int, _Actor, int]] = []
        self._seq = itertools.count()
        self._pending_alarms = 0
        # Alarms fire between start() and stop(): one timer task sleeps until the earliest.
        self._running = False
        self._timer: asyncio.Task[None] | None = None
        self._timer_due: float | None = None
        self._context: contextvars.Context | None = None  # alarm handlers' context (start())
        # RPC calls in flight, with the future their caller awaits.
        self._calls: dict[asyncio.Task[None], asyncio.Future[Any]] = {}
        self._closed = False
        # Group commit: objects with writes not yet committed, futures waiting for the commit,
        # and RPC answers (future, value, is_error) the output gate holds until then.
        self._dirty: list[_Actor] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._held: list[tuple[asyncio.Future[Any], Any, bool]] = []
        self._commit_requested = False
        self._errors = RepeatedLog(clock)  # a failure repeated by many objects: logged sparsely
        # Objects with stored KV pairs when the namespace opened: any other object starts with
        # a complete (empty) cache, so its first reads need no query.
        self._stored: set[str] = {
            row[0] for row in self._db.execute("SELECT DISTINCT object_id FROM kv")
        }
        for hex_id, time_ms, retry in self._db.execute(
            "SELECT object_id, time_ms, retry FROM alarms"
        ).fetchall():
            actor = self._actor(hex_id, None)
            actor.alarm_retry = retry
            actor.alarm_row = actor.alarm_committed = (time_ms, retry)
            self._arm(actor, time_ms)

    # The binding -----------------------------------------------------------------------------

    def idFromName(self, name: str) -> LocalDurableObjectId:
        if not isinstance(name, str):
            raise TypeError("idFromName() takes a string")
        digest = self._digests.get(name)
        if digest is None:
            digest = hashlib.sha256(f"{self.class_name}\0{name}".encode()).hexdigest()
            if len(self._digests) >= 4096:
                self._digests.clear()
            self._digests[name] = digest
        return LocalDurableObjectId(digest, name, self.class_name)

    def newUniqueId(self, options: Mapping[str, Any] | None = None) -> LocalDurableObjectId:
        _check_options(options, frozenset({"jurisdiction"}), "newUniqueId")
        return LocalDurableObjectId(secrets.token_hex(32), None, self.class_name)

    def idFromString(self, id: str) -> LocalDurableObjectId:
        if not isinstance(id, str) or not _HEX_ID.fullmatch(id):
            raise TypeError("Invalid Durable Object ID: must be 64 hex digits")
        return LocalDurableObjectId(id, None, self.class_name)

    def get(self, id: Any, options: Mapping[str, Any] | None = None) -> LocalDurableObjectStub:
        _check_options(options, frozenset({"locationHint"}), "get")
        if not isinstance(id, LocalDurableObjectId) or id._namespace != self.class_name:
            raise TypeError("get() takes an id made by this namespace")
        return LocalDurableObjectStub(self, id)

    def getByName(
        self, name: str, options: Mapping[str, Any] | None = None
    ) -> LocalDurableObjectStub:
        return self.get(self.idFromName(name), options)

    # Lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start firing alarms (the ones persisted before fire as soon as they are due)."""
        if self._closed:
            raise RuntimeError("the namespace is closed")
        if not self._running:
            self._running = True
            self._context = contextvars.copy_context()
            self._reschedule()
            sweeper = asyncio.get_running_loop().create_task(
                self._evictor.run(), context=self._context.copy()
            )
            self._track(sweeper, "idle eviction")

    async def _cancel_all(self) -> None:
        """Stop the alarm timer and cut off every call and alarm handler in flight."""
        self._running = False
        self._timer, self._timer_due = None, None
        calls, self._calls = self._calls, {}
        tasks = [*self._tasks, *calls]
        for task in tasks:
            task.cancel()
        for answer in calls.values():
            answer.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def stop(self) -> None:
        """Stop firing alarms and cancel in-flight calls and alarm handlers.

        Like a process that dies: a cancelled alarm stays stored and fires again later.
        """
        await self._cancel_all()
        if not self._closed:
            # What the objects wrote is committed (answers held for it are released).
            error = self._commit()
            if error is not None:
                log.error("Durable Object storage commit failed at stop: %s", error)
        self._rearm_all()

    async def close(self) -> None:
        await self.stop()
        self._close_files()

    async def abort(self) -> None:
        """Close as a crash would: calls and alarm handlers are cut off, and writes not yet
        committed are lost. Only writes whose call had not returned can be among them: an
        answer is released after its object's writes are committed."""
        # Before anything yields, so no commit can slip in.
        held, waiters, dirty = self._held, self._waiters, self._dirty
        self._held, self._waiters, self._dirty = [], [], []
        self._close_files()
        for answer, _, _ in held:
            answer.cancel()
        for waiter in waiters:
            waiter.cancel()
        for actor in dirty:
            actor.dirty = False
        await self._cancel_all()

    def _close_files(self) -> None:
        for actor in self._actors.values():
            if actor.sql is not None:
                actor.sql._close()
        if not self._closed:
            self._closed = True
            self._checkpointer.close()
            self._db.close()

    async def __aenter__(self) -> LocalDurableObjectNamespace:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Inspection (tests, the dev server) --------------------------------------------------------

    def evict(self, id_or_name: LocalDurableObjectId | str) -> None:
        """Drop the object's in-memory instance; storage and alarm stay. Calls already running
        finish on the old instance."""
        actor = self._actors.get(self._hex(id_or_name))
        if actor is not None and actor.instance is not None:
            self._drop_instance(actor)

    def evict_all(self) -> None:
        for actor in self._actors.values():
            if actor.instance is not None:
                self._drop_instance(actor)

    def alarm_of(self, id_or_name: LocalDurableObjectId | str) -> float | None:
        """What the object's `getAlarm()` would answer."""
        actor = self._actors.get(self._hex(id_or_name))
        return None if actor is None else self._alarm_time(actor)

    def instance_count(self) -> int:
        return sum(1 for actor in self._actors.values() if actor.instance is not None)

    def actor_count(self) -> int:
        """Objects the namespace keeps book on (live, with an alarm, or with pending writes)."""
        return len(self._actors)

    def _hex(self, id_or_name: LocalDurableObjectId | str) -> str:
        if isinstance(id_or_name, LocalDurableObjectId):
            return id_or_name.toString()
        return self.idFromName(id_or_name).toString()

    # Calls ---------------------------------------------------------------------------------------

    def _actor(self, hex_id: str, name: str | None) -> _Actor:
        actor = self._actors.get(hex_id)
        if actor is None:
            actor = self._actors[hex_id] = _Actor(hex_id, name, self)
            actor.storage = LocalDurableObjectStorage(self, actor)
            actor.cache_complete = hex_id not in self._stored
        elif actor.name is None and name is not None:
            actor.name = name
        return actor

    def _send(self, id: LocalDurableObjectId, method: str, args: list[Any]) -> asyncio.Future[Any]:
        actor = self._actor(id._hex, id.name)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self._hold(actor)  # from now: a call queued at the gate counts as in flight
        task = loop.create_task(self._rpc(actor, method, args, answer))
        if not task.done():  # (an eager task factory may have run it to the end already)
            self._calls[task] = answer  # stop() cancels both; _rpc removes it when done
        # A done callback, not `finally`: it runs too for a call cancelled before it started.
        task.add_done_callback(lambda _: self._release(actor))
        return answer

    async def _rpc(
        self, actor: _Actor, method: str, args: list[Any], answer: asyncio.Future[Any]
    ) -> None:
        try:
            await self._call(actor, method, args, answer)
        except asyncio.CancelledError:
            answer.cancel()  # stop(): the caller sees the call cut off
            raise
        finally:
            self._calls.pop(asyncio.current_task(), None)  # type: ignore[arg-type]

    async def _call(
        self, actor: _Actor, method: str, args: list[Any], answer: asyncio.Future[Any]
    ) -> None:
        output_gate.enter(actor)
        try:
            instance = actor.instance
            if instance is None or actor.blockers:
                instance = await self._enter(actor)
            function = getattr(instance, method, None)
            if not callable(function):
                raise DurableObjectError(
                    f'The RPC receiver does not implement the method "{method}".'
                )
            try:
                result = function(*args)
                if type(result) is CoroutineType or inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                log.debug("Durable Object method %s raised", method, exc_info=True)
                raise DurableObjectError(str(exc)) from None
            value = structured_clone(result)
        except Exception as error:
            self._answer(actor, answer, error, True)
        else:
            self._answer(actor, answer, value, False)

    def _answer(self, actor: _Actor, answer: asyncio.Future[Any], value: Any, error: bool) -> None:
        """Release a call's outcome to its caller, once the object's writes are durable."""
        if actor.dirty:
            self._held.append((answer, value, error))
            if output_gate.alone():
                self._commit_and_report()  # nobody else could join this turn's commit
        elif not answer.done():
            if error:
                answer.set_exception(value)
            else:
                answer.set_result(value)

    async def _enter(self, actor: _Actor) -> Any:
        """Wait for the object's gate, building the instance if needed; return it."""
        while True:
            resets = actor.resets
            while actor.blockers:
                assert actor.opened is not None
                await actor.opened.wait()
            if actor.resets != resets:
                raise DurableObjectError(actor.reset_error)
            if actor.instance is None:
                self._build(actor)
            if not actor.blockers:  # the constructor may have called blockConcurrencyWhile
                return actor.instance

    def _build(self, actor: _Actor) -> None:
        assert actor.storage is not None
        if actor.name is None:
            row = self._db.execute(
                "SELECT name FROM names WHERE object_id = ?", (actor.hex,)
            ).fetchone()
            if row is not None:
                actor.name, actor.name_recorded = row[0], True
        id = LocalDurableObjectId(actor.hex, actor.name, self.class_name)
        ctx = LocalDurableObjectState(self, actor, id, actor.storage)
        actor.serial += 1
        try:
            actor.instance = self._factory(ctx, self._env)
        except Exception as exc:
            log.debug("Durable Object constructor raised", exc_info=True)
            raise DurableObjectError(str(exc)) from None

    # Eviction -----------------------------------------------------------------------------------

    def _hold(self, actor: _Actor) -> None:
        if not actor.busy:
            self._evictor.busy(actor)
        actor.busy += 1

    def _release(self, actor: _Actor) -> None:
        actor.busy -= 1
        if actor.busy or self._closed or self._actors.get(actor.hex) is not actor:
            return
        if self._is_closed_object(actor) and not actor.dirty:
            self._forget(actor)
        else:
            # (Closed with its writes pending: it goes when they commit, see _committed.)
            self._evictor.idle(actor)

    @staticmethod
    def _is_closed_object(actor: _Actor) -> bool:
        """Emptied by deleteAll() with no alarm left: a rebuilt instance would be the same.
        `cache_complete`: the clear is known committed (a failed commit resets it)."""
        return (
            actor.cleared
            and actor.cache_complete
            and actor.alarm_ms is None
            and not actor.alarm_running
            and not actor.busy
            and not actor.blockers
        )

    def _evict_idle(self, actor: _Actor) -> bool:
        """The object has been idle for the idle period: evict its instance, and forget it
        entirely unless an alarm is set. False: not now (look again a period later)."""
        if actor.busy or self._actors.get(actor.hex) is not actor:
            return True  # running again (it is offered again once idle) or forgotten
        if actor.dirty or actor.blockers or actor.alarm_running or actor.alarm_retry:
            return False  # writes not committed, input gate held, or an alarm's retry due
        if actor.alarm_ms is not None:
            if actor.alarm_ms / 1000 - self._clock.now() < self._idle_seconds:
                return False  # its alarm is due soon: the platform keeps it in memory
            if actor.instance is not None:
                self._drop_instance(actor)  # the alarm (in the namespace) rebuilds it
            return True
        self._forget(actor)
        return True

    def _forget(self, actor: _Actor) -> None:
        """Drop the object from memory, book-keeping included: storage is all there is of it,
        and its next call starts from there."""
        self._evictor.busy(actor)
        del self._actors[actor.hex]
        if actor.cleared and actor.cache_complete:
            self._stored.discard(actor.hex)
        else:
            self._stored.add(actor.hex)  # its first reads when rebuilt must query storage
        if actor.sql is not None:
            actor.sql._close()
        # Break the actor's cycles (instance -> ctx -> actor, actor <-> storage): reference
        # counting frees it all now, without waiting for the cyclic collector.
        actor.instance = None
        actor.storage = None
        actor.cache = {}

    def _drop_instance(self, actor: _Actor) -> None:
        actor.instance = None
        actor.cache = {}  # the storage cache lives with the instance; pending writes stay
        actor.cache_complete = False
        if actor.sql is not None:
            actor.sql._close()  # frees the file handle; reopened on next use

    def _track(self, task: asyncio.Future[Any], label: str | None) -> asyncio.Future[Any]:
        self._tasks.add(task)

        def done(task: asyncio.Future[Any]) -> None:
            self._tasks.discard(task)
            # Retrieve the outcome so an unawaited failure is logged, not left for the GC.
            if not task.cancelled() and (exc := task.exception()) is not None and label:
                log.error("Durable Object %s failed", label, exc_info=exc)

        task.add_done_callback(done)
        return task

    # Storage plumbing -----------------------------------------------------------------------------

    def _connect(self, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _sql_path(self, hex_id: str) -> Path:
        return self._dir / "sql" / f"{hex_id}.sqlite3"

    # Storage: reads, pending writes, group commit --------------------------------------------

    def _read(self, actor: _Actor, key: str) -> bytes | None:
        """A key's value as the object sees it: pending writes, then the cache, then disk."""
        value = actor.writes.get(key, _MISSING)
        if value is not _MISSING:
            return value  # type: ignore[no-any-return]
        if actor.writes_clear:
            return None
        cache = actor.cache
        value = cache.get(key, _MISSING)
        if value is not _MISSING:
            return value  # type: ignore[no-any-return]
        if actor.cache_complete:
            return None
        row = self._db.execute(
            "SELECT value FROM kv WHERE object_id = ? AND key = ?", (actor.hex, key)
        ).fetchone()
        data: bytes | None = None if row is None else row[0]
        if len(cache) >= CACHE_MAX_KEYS:
            cache.clear()
        cache[key] = data
        return data

    def _read_many(self, actor: _Actor, keys: list[str]) -> dict[str, bytes]:
        """The present keys among `keys`, with their values."""
        found: dict[str, bytes] = {}
        missing: list[str] = []
        writes, cache = actor.writes, actor.cache
        for key in keys:
            value = writes.get(key, _MISSING)
            if value is _MISSING and not actor.writes_clear:
                value = cache.get(key, _MISSING)
                if value is _MISSING:
                    if not actor.cache_complete:
                        missing.append(key)
                    continue
            if value is not _MISSING and value is not None:
                found[key] = value
        if missing:
            missing = list(dict.fromkeys(missing))
            marks = ",".join("?" * len(missing))
            rows = dict(
                self._db.execute(
                    f"SELECT key, value FROM kv WHERE object_id = ? AND key IN ({marks})",
                    (actor.hex, *missing),
                ).fetchall()
            )
            if len(cache) + len(missing) > CACHE_MAX_KEYS:
                cache.clear()
            for key in missing:
                data = rows.get(key)
                cache[key] = data
                if data is not None:
                    found[key] = data
        return found

    def _record_name(self, actor: _Actor) -> None:
        # Remember the object's name beside its first stored value, so an instance rebuilt
        # after a restart (say, by its alarm) still knows `ctx.id.name`.
        if actor.name and not actor.name_recorded:
            actor.name_recorded = True

    def _touch(self, actor: _Actor) -> None:
        """The object has pending writes: commit them at the end of the loop's turn."""
        if not actor.dirty:
            actor.dirty = True
            self._dirty.append(actor)
            if not self._commit_requested:
                self._commit_requested = True
                output_gate.at_commit(self._commit_phase)

    def _commit_phase(self) -> None:
        self._commit_requested = False
        if not self._closed:
            self._commit_and_report()

    def _commit_and_report(self) -> None:
        error = self._commit()
        if error is not None:
            suppressed = self._errors.check(("commit", str(error)))
            if suppressed is not None:
                log.error("Durable Object storage commit failed: %s%s", error, _more(suppressed))

    def _durable(self) -> asyncio.Future[None]:
        """A future resolved once every write pending now is committed."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._dirty:
            self._waiters.append(waiter)
        else:
            waiter.set_result(None)
        return waiter

    def _flush(self) -> None:
        """Commit every pending write now; raise if that fails."""
        if self._dirty or self._held or self._waiters:
            error = self._commit()
            if error is not None:
                raise error

    def _commit(self) -> DurableObjectError | None:
        """One transaction for every object's pending writes; then release what waited."""
        dirty, self._dirty = self._dirty, []
        waiters, self._waiters = self._waiters, []
        held, self._held = self._held, []
        error: DurableObjectError | None = None
        if dirty:
            try:
                self._write_out(dirty)
            except sqlite3.Error as exc:
                error = DurableObjectError(f"Durable Object storage write failed: {exc}")
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                for actor in dirty:
                    self._reset_after_failed_commit(actor)
            else:
                for actor in dirty:
                    self._committed(actor)
        for waiter in waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
        for answer, value, failed in held:
            if not answer.done():
                if error is not None:
                    answer.set_exception(error)
                elif failed:
                    answer.set_exception(value)
                else:
                    answer.set_result(value)
        return error

    def _write_out(self, dirty: list[_Actor]) -> None:
        clears: list[tuple[str]] = []
        deletes: list[tuple[str, str]] = []
        puts: list[tuple[str, str, bytes]] = []
        alarm_sets: list[tuple[str, int, int]] = []
        alarm_deletes: list[tuple[str]] = []
        name_sets: list[tuple[str, str]] = []
        name_deletes: list[tuple[str]] = []
        for actor in dirty:
            hex_id = actor.hex
            if actor.writes_clear:
                clears.append((hex_id,))
            for key, value in actor.writes.items():
                if value is None:
                    if not actor.writes_clear:
                        deletes.append((hex_id, key))
                else:
                    puts.append((hex_id, key, value))
            row = actor.alarm_row
            if row != actor.alarm_committed:
                if row is None:
                    alarm_deletes.append((hex_id,))
                else:
                    alarm_sets.append((hex_id, row[0], row[1]))
            if actor.name_recorded != actor.name_committed:
                if actor.name_recorded:
                    name_sets.append((hex_id, actor.name or ""))
                else:
                    name_deletes.append((hex_id,))
        db = self._db
        self._checkpointer.wrote()
        db.execute("BEGIN IMMEDIATE")
        if clears:
            db.executemany("DELETE FROM kv WHERE object_id = ?", clears)
        if deletes:
            db.executemany("DELETE FROM kv WHERE object_id = ? AND key = ?", deletes)
        if puts:
            db.executemany(
                "INSERT OR REPLACE INTO kv (object_id, key, value) VALUES (?, ?, ?)", puts
            )
        if alarm_sets:
            db.executemany(
                "INSERT OR REPLACE INTO alarms (object_id, time_ms, retry) VALUES (?, ?, ?)",
                alarm_sets,
            )
        if alarm_deletes:
            db.executemany("DELETE FROM alarms WHERE object_id = ?", alarm_deletes)
        if name_sets:
            db.executemany("INSERT OR IGNORE INTO names (object_id, name) VALUES (?, ?)", name_sets)
        if name_deletes:
            db.executemany("DELETE FROM names WHERE object_id = ?", name_deletes)
        db.execute("COMMIT")

    def _committed(self, actor: _Actor) -> None:
        cache = actor.cache
        if actor.writes_clear:
            cache.clear()
            actor.cache_complete = True
            actor.writes_clear = False
        if len(cache) + len(actor.writes) > CACHE_MAX_KEYS:
            cache.clear()
            actor.cache_complete = False
        cache.update(actor.writes)
        actor.writes = {}
        actor.alarm_committed = actor.alarm_row
        actor.name_committed = actor.name_recorded
        actor.alarm_ran = None
        actor.dirty = False
        if self._is_closed_object(actor) and self._actors.get(actor.hex) is actor:
            self._forget(actor)  # closed, and idle since before its writes committed

    def _reset_after_failed_commit(self, actor: _Actor) -> None:
        """The writes are lost: the object starts again from what is committed."""
        actor.dirty = False
        actor.writes = {}
        actor.writes_clear = False
        actor.name_recorded = bool(actor.name_committed)
        if actor.instance is not None:
            self._drop_instance(actor)
        else:
            actor.cache, actor.cache_complete = {}, False
        committed = actor.alarm_committed
        actor.alarm_row = committed
        ran, actor.alarm_ran = actor.alarm_ran, None
        if actor.alarm_running:
            actor.alarm_queued = None
        elif committed is None:
            if actor.alarm_ms is not None:
                self._pending_alarms -= 1
            actor.alarm_ms = None
            actor.alarm_retry = 0
            actor.alarm_gen += 1
        elif ran is not None and committed[0] <= self._clock.now() * 1000:
            # The run's writes and outcome were lost, so it failed: the stored (past) alarm
            # is retried after the backoff, not at its time, which would fire it at once and
            # again after every failed commit (a busy loop while the disk is full). Retries
            # stay at the last backoff until a commit succeeds: the alarm is still stored.
            retry = min(ran + 1, ALARM_MAX_RETRIES)
            actor.alarm_retry = retry
            self._arm(actor, self._retry_at(retry))
        else:
            actor.alarm_retry = committed[1]
            self._arm(actor, committed[0])

    # Alarms ------------------------------------------------------------------------------------

    def _alarm_time(self, actor: _Actor) -> float | None:
        if actor.alarm_running:
            return None if actor.alarm_queued is None else float(actor.alarm_queued)
        return None if actor.alarm_ms is None else float(actor.alarm_ms)

    def _set_alarm(self, actor: _Actor, time_ms: int) -> None:
        actor.alarm_row = (time_ms, 0)
        self._record_name(actor)
        self._touch(actor)
        if actor.alarm_running:
            actor.alarm_queued = time_ms  # takes over when the running handler returns
        else:
            actor.alarm_retry = 0
            self._arm(actor, time_ms)

    def _delete_alarm(self, actor: _Actor) -> None:
        if actor.alarm_running:
            # Only the alarm queued by the handler goes; the running one may still be retried,
            # so its row is what a restart must find.
            actor.alarm_queued = None
            assert actor.alarm_ms is not None
            actor.alarm_row = (actor.alarm_ms, actor.alarm_retry)
            self._touch(actor)
            return
        actor.alarm_row = None
        self._touch(actor)
        if actor.alarm_ms is not None:
            self._pending_alarms -= 1
        actor.alarm_ms = None
        actor.alarm_retry = 0
        actor.alarm_gen += 1

    def _arm(self, actor: _Actor, time_ms: int) -> None:
        """Schedule the actor's alarm in memory (its row is written or pending)."""
        if actor.alarm_ms is None:
            self._pending_alarms += 1
        actor.alarm_ms = time_ms
        actor.alarm_gen += 1
        due = time_ms / 1000
        if self._running and due <= self._clock.now():
            self._start_fire(actor, actor.alarm_gen)  # due already: no timer needed
            return
        heapq.heappush(self._heap, (due, next(self._seq), actor, actor.alarm_gen))
        if len(self._heap) > 1024 and len(self._heap) > 4 * self._pending_alarms:
            self._compact()
        if self._running and (self._timer_due is None or due < self._timer_due):
            self._reschedule()

    def _start_fire(self, actor: _Actor, gen: int) -> None:
        assert self._context is not None
        self._hold(actor)
        task = asyncio.get_running_loop().create_task(
            self._fire(actor, gen), context=self._context.copy()
        )
        if not task.done():
            self._tasks.add(task)  # _fire removes it when done
        task.add_done_callback(lambda _: self._release(actor))

    def _reschedule(self) -> None:
        """Point the timer at the earliest pending alarm."""
        due = self._next_due()
        if due is None or (self._timer_due is not None and self._timer_due <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        assert self._context is not None
        self._timer_due = due
        timer = asyncio.get_running_loop().create_task(
            self._sleep_until(due), context=self._context.copy()
        )
        if not timer.done():
            self._timer = timer
            self._tasks.add(timer)

    async def _sleep_until(self, due: float) -> None:
        """The timer: at `due`, start the handlers of every alarm due by then."""
        timer = asyncio.current_task()
        try:
            await self._clock.sleep_until(due)
            self._timer, self._timer_due = None, None
            dispatched = 0
            now = self._clock.now()
            next_due = self._next_due()
            while next_due is not None and next_due <= now:
                _, _, actor, gen = heapq.heappop(self._heap)
                self._start_fire(actor, gen)
                dispatched += 1
                if dispatched % 256 == 0:
                    # Let the first handlers start while thousands more are due at once.
                    await asyncio.sleep(0)
                next_due = self._next_due()
            if next_due is not None and self._running:
                self._reschedule()
        finally:
            self._tasks.discard(timer)

    def _compact(self) -> None:
        self._heap = [entry for entry in self._heap if entry[3] == entry[2].alarm_gen]
        heapq.heapify(self._heap)

    def _next_due(self) -> float | None:
        heap = self._heap
        while heap and (heap[0][3] != heap[0][2].alarm_gen or heap[0][2].alarm_running):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    async def _fire(self, actor: _Actor, gen: int) -> None:
        try:
            await self._run_alarm(actor, gen)
        finally:
            self._tasks.discard(asyncio.current_task())

    async def _run_alarm(self, actor: _Actor, gen: int) -> None:
        if actor.alarm_gen != gen or actor.alarm_running:
            return  # replaced or deleted between its dispatch and now
        output_gate.enter(actor)
        actor.alarm_running = True
        actor.alarm_queued = None
        retry = actor.alarm_retry
        info = AlarmInvocationInfo(retryCount=retry, isRetry=retry > 0)
        succeeded = False
        try:
            instance = await self._enter(actor)
            handler = getattr(instance, "alarm", None)
            if not callable(handler):
                log.error("%s has no alarm() handler; dropping its alarm", self.class_name)
                succeeded = True
            else:
                result = handler(info)
                if inspect.isawaitable(result):
                    await result
                succeeded = True
        except asyncio.CancelledError:
            raise  # stop(): the stored alarm stands and stop() re-arms it
        except Exception as exc:
            suppressed = self._errors.check(("alarm", type(exc), str(exc)))
            if suppressed is not None:
                log.warning(
                    "alarm() of %s %s raised (retry %d)%s",
                    self.class_name,
                    actor.name or actor.hex,
                    retry,
                    _more(suppressed),
                    exc_info=True,
                )
        actor.alarm_running = False
        queued, actor.alarm_queued = actor.alarm_queued, None
        if queued is not None:  # set during the run: it replaces this alarm, row written
            actor.alarm_retry = 0
            self._arm(actor, queued)
        elif succeeded or retry >= ALARM_MAX_RETRIES:
            self._delete_alarm(actor)
        else:
            time_ms = self._retry_at(retry + 1)
            actor.alarm_retry = retry + 1
            actor.alarm_row = (time_ms, actor.alarm_retry)
            self._touch(actor)
            self._arm(actor, time_ms)
        if actor.dirty:
            actor.alarm_ran = retry  # its outcome waits for this turn's commit

    def _retry_at(self, retry: int) -> int:
        """When retry number `retry` (from 1) of a failed alarm runs: 2 s, 4 s, 8 s, ..."""
        delay = ALARM_RETRY_START_SECONDS * 2.0 ** (retry - 1)
        return math.floor((self._clock.now() + delay) * 1000)

    def _rearm_all(self) -> None:
        """After stop(): handlers cut short count as not run; rebuild the heap from scratch."""
        self._heap = []
        self._pending_alarms = 0
        for actor in self._actors.values():
            if actor.alarm_running:
                actor.alarm_running = False
                if actor.alarm_queued is not None:
                    actor.alarm_ms, actor.alarm_retry = actor.alarm_queued, 0
                actor.alarm_queued = None
            time_ms, actor.alarm_ms = actor.alarm_ms, None
            if time_ms is not None:
                self._arm(actor, time_ms)


if TYPE_CHECKING:
    # The binding satisfies the runtime's protocols.
    def _as_namespace(ns: LocalDurableObjectNamespace) -> DurableObjectNamespace:
        return ns

    def _as_actor_storage(storage: LocalDurableObjectStorage) -> ActorStorage:
        return storage
