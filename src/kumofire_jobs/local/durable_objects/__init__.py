"""The embedded Durable Objects binding: one instance per id, SQLite storage, alarms.

A `LocalDurableObjectNamespace` is what a Worker sees as `env.COORDINATOR`: stubs whose
methods are RPC calls into one live object per id, each object with its `ctx.storage` (KV,
alarm, and a lazily created SQL database) persisted on disk, and event-driven alarms. The
semantics follow the platform's documentation, not convenience; each module holds one part:

* `stubs`: ids and stubs. RPC takes positional arguments only; values are structured-cloned
  both ways (`clone`); exceptions arrive as `DurableObjectError` (`errors`) carrying the
  message but not the type. A call is sent when it is made, and runs in a task that starts
  once its caller awaits; a call of one of the namespace's `start_in_caller` methods, made
  from code outside any object, starts at once instead, in its caller's step (in a context of
  its own), and goes on in a task only if it has to wait (no task for a call that never
  waits). From inside an object's call or alarm every call is a task: that caller holds its
  input gate until it awaits.
* `gate`: the input gate. Calls to one object start one at a time, in order. Storage methods
  complete inside the event loop without yielding, so while a call awaits storage no other
  call can start, and a read-modify-write over storage is atomic. When a call awaits
  anything else (a queue send, another RPC, a future) the event loop runs other calls to the
  same object, which may interleave. `blockConcurrencyWhile` and `waitUntil` live on `ctx`.
* `storage` (`ctx.storage`: KV, the alarm API) and `sql` (`ctx.storage.sql`).
* `commit`: write coalescing and the output gate, as the platform does them. A storage write
  applies at once in memory (the object's later reads see it) and is committed with every
  other write made in the same event-loop turn, by any object, in one transaction (the
  local bindings' `group_commit`). What the object sends waits for its writes to be durable:
  an RPC result (or error) is released to the caller only after the commit, and before the
  object performs I/O through another local binding (a D1 statement, a queue send, an RPC to
  another object) its pending writes are committed first, by the turn's shared commit (see
  `output_gate`; at once only when nothing else is ready to run). So a crash
  loses only writes whose call had not yet returned; with `synchronous="NORMAL"` durable
  against a crash of this process, `"FULL"` for power loss too. Reads are served from a
  per-object cache of what was read or written (dropped on eviction; `CACHE_MAX_BYTES`, 4 MiB,
  before it starts over), as the platform's storage cache does. A failed commit resets the
  objects whose writes it held, and their callers get the error; a call of a reset instance
  still in flight fails at its next storage operation.
* `alarms`: one per object, millisecond granularity, retried with backoff when `alarm()`
  throws (2 s, 4 s, 8 s, ... up to 6 retries) or its commit fails (the same backoff, then
  every 64 s until a commit succeeds). At least once: a handler cut short by `stop()` runs
  again after `start()`.
* `deleteAll()` also deletes the alarm: the platform does so for compatibility dates from
  2026-02-24 (changelog "deleteAll() now deletes Durable Object alarm"), and this project's
  date is later. `delete_all_deletes_alarm=False` gives the older behaviour.
* `eviction`. An object with no call in flight, no alarm running or due within the idle
  period, no retry of a failed alarm pending, no task (`waitUntil`, `blockConcurrencyWhile`)
  and no uncommitted write is evicted once idle for `IDLE_EVICTION_SECONDS` (70 s, the
  platform's lower bound), on the namespace's clock: its instance goes, and, unless its
  alarm is due within `ALARM_WINDOW_SECONDS` (then the alarm, in the namespace's heap,
  rebuilds it), its book-keeping (`actor`) too: a later alarm lives in storage only.
  An object emptied by `deleteAll()` with no alarm left (a coordinator that closed) goes as
  soon as it is idle: storage holds nothing of it, so its next call would build the same
  object. The next call builds a fresh instance from storage. With more than
  `MAX_IDLE_OBJECTS` idle, the oldest go early, as the platform evicts under memory pressure.
* `namespace`: the binding itself, which ties these together.

Storage layout: one SQLite file per namespace (`<path>/objects.sqlite3`) holds every object's
KV pairs and alarm, so thousands of objects cost rows, not files; or, given `one_file`, D1's
file holds those tables and they commit with D1's and the queue's (`local/one_file.py`). An
object that uses `ctx.storage.sql` gets its own file under `<path>/sql/` on first use (its
statements commit one by one, so they are durable when `exec()` returns). `abort()` closes as
a crash would.
"""

from __future__ import annotations

from .alarms import (
    ALARM_MAX_RETRIES,
    ALARM_RETRY_START_SECONDS,
    ALARM_WINDOW_SECONDS,
    AlarmInvocationInfo,
)
from .clone import structured_clone
from .commit import CACHE_MAX_BYTES
from .errors import DataCloneError, DurableObjectError
from .eviction import IDLE_EVICTION_SECONDS, MAX_IDLE_OBJECTS, IdleEvictor
from .gate import LocalDurableObjectState
from .namespace import Factory, LocalDurableObjectNamespace
from .sql import LocalSqlCursor, LocalSqlStorage, SqlRow
from .storage import (
    DELETE_ALL_DELETES_ALARM,
    MAX_KEY_BYTES,
    MAX_KEYS_PER_CALL,
    MAX_VALUE_BYTES,
    VALUE_SIZE_SLACK,
    LocalDurableObjectStorage,
)
from .stubs import LocalDurableObjectId, LocalDurableObjectStub

__all__ = [
    "ALARM_MAX_RETRIES",
    "ALARM_RETRY_START_SECONDS",
    "ALARM_WINDOW_SECONDS",
    "CACHE_MAX_BYTES",
    "DELETE_ALL_DELETES_ALARM",
    "IDLE_EVICTION_SECONDS",
    "MAX_IDLE_OBJECTS",
    "MAX_KEYS_PER_CALL",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "VALUE_SIZE_SLACK",
    "AlarmInvocationInfo",
    "DataCloneError",
    "DurableObjectError",
    "Factory",
    "IdleEvictor",
    "LocalDurableObjectId",
    "LocalDurableObjectNamespace",
    "LocalDurableObjectState",
    "LocalDurableObjectStorage",
    "LocalDurableObjectStub",
    "LocalSqlCursor",
    "LocalSqlStorage",
    "SqlRow",
    "structured_clone",
]
