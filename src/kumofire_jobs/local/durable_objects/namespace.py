"""The namespace: what a Worker sees as `env.COORDINATOR`, tying ids, calls, storage, the
commit, alarms and eviction together for one Durable Object class."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import inspect
import itertools
import os
import re
import secrets
import sqlite3
from collections.abc import Callable, Collection, Coroutine, Generator, Mapping
from pathlib import Path
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from kumofire_jobs.core import answers
from kumofire_jobs.core.clock import Clock
from kumofire_jobs.core.log import RepeatedLog
from kumofire_jobs.local import checkpoint, group_commit, output_gate, table_names, wal_sync

from . import upgrade
from .actor import Actor
from .alarms import Alarms
from .clone import structured_clone
from .commit import SCHEMA, Commit, storage_error
from .errors import DurableObjectError, log
from .eviction import IDLE_EVICTION_SECONDS, MAX_IDLE_OBJECTS, Eviction, IdleEvictor
from .gate import InputGate, LocalDurableObjectState
from .storage import (
    DELETE_ALL_DELETES_ALARM,
    RESET_MESSAGE,
    LocalDurableObjectStorage,
    check_options,
)
from .stubs import LocalDurableObjectId, LocalDurableObjectStub

if TYPE_CHECKING:
    from kumofire_coordinator.storage import ActorStorage
    from kumofire_jobs.core.bindings import DurableObjectNamespace
    from kumofire_jobs.local.one_file import OneFile

_SYNCHRONOUS_MODES = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_HEX_ID = re.compile(r"[0-9a-f]{64}")

# What storage holds of an object not in memory: its alarm (and the name kept with it), and
# whether it has KV pairs.
_STORED = """
SELECT (SELECT time_ms FROM kumofire_local_do_alarms WHERE object_id = ?1),
       (SELECT retry FROM kumofire_local_do_alarms WHERE object_id = ?1),
       (SELECT name FROM kumofire_local_do_alarms WHERE object_id = ?1),
       EXISTS (SELECT 1 FROM kumofire_local_do_kv WHERE object_id = ?1)
"""

Factory = Callable[[LocalDurableObjectState, Any], Any]


class LocalDurableObjectNamespace(InputGate, Alarms, Commit, Eviction):
    """A Durable Object namespace bound to one class, persisted under the directory `path`.

    `factory(ctx, env)` builds an object, like `DurableObject.__init__(self, ctx, env)`.
    Objects are built lazily on their first call and rebuilt from storage after `evict()` or
    idle eviction (`idle_eviction_seconds`; early, oldest first, once more than
    `max_idle_objects` are idle). Alarms fire, and idle objects are evicted, only
    between `start()` and `stop()`/`close()`.

    This class holds the binding's API, its lifecycle and RPC calls, and the state its parts
    share; the parts are its base classes: the input gate (`gate.InputGate`), alarms
    (`alarms.Alarms`), pending writes and their commit (`commit.Commit`) and eviction
    (`eviction.Eviction`).
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
        max_idle_objects: int = MAX_IDLE_OBJECTS,
        one_file: OneFile | None = None,
        start_in_caller: Collection[str] = (),
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS_MODES)}")
        self.class_name: str = class_name or str(getattr(factory, "__name__", "DurableObject"))
        self.delete_all_deletes_alarm = delete_all_deletes_alarm
        # Methods whose calls from outside any object start in the caller's step (`_send`).
        self._start_in_caller = frozenset(start_in_caller)
        self._factory = factory
        self._env = env
        self._clock = clock
        self._synchronous = synchronous.upper()
        self._dir = Path(path)
        self._dir.mkdir(parents=True, exist_ok=True)
        # The one-file layout: storage lives in D1's file and commits with its turn.
        self._one_file = one_file
        if one_file is not None:
            self._db = one_file.conn
            self._checkpointer = one_file.checkpointer
        else:
            self._db = self._connect(self._dir / "objects.sqlite3")
            checkpoint.configure(self._db)
            self._checkpointer = checkpoint.Checkpointer(self._dir / "objects.sqlite3")
            table_names.rename_legacy(self._db, table_names.OBJECT_TABLES)  # its own file only
        self._db.executescript(SCHEMA)
        if upgrade.fold_names(self._db):  # a file written before the name moved to the alarm
            log.info("Durable Object names moved into their alarms' rows (%s)", self.class_name)
        self._actors: dict[str, Actor] = {}
        self._idle_seconds = idle_eviction_seconds
        self._evictor = IdleEvictor[Actor](
            clock, self._evict_idle, idle_eviction_seconds, max_idle_objects
        )
        self._digests: dict[str, str] = {}  # idFromName's recent answers
        self._tasks: set[asyncio.Future[Any]] = set()
        # The alarm heap: (due epoch seconds, seq, actor, actor.alarm_gen when pushed).
        self._heap: list[tuple[float, int, Actor, int]] = []
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
        # Group commit: objects with writes not yet committed, and the commit that writes
        # them out (with the waiters and the RPC answers the output gate holds until then).
        self._dirty: list[Actor] = []
        self._staged: list[Actor] = []  # written into the shared transaction (one file)
        if one_file is not None:
            self._commits = one_file.commits
        else:
            self._commits = group_commit.GroupCommit(
                self._write_pending,
                report=self._report,
                wal=wal_sync.for_connection(
                    self._db,
                    self._dir / "objects.sqlite3",
                    self._synchronous,
                    lambda exc: DurableObjectError(f"Durable Object storage write failed: {exc}"),
                ),
            )
        self._errors = RepeatedLog(clock)  # a failure repeated by many objects: logged sparsely
        if one_file is not None:
            one_file.join(self)
        self._open_alarms()  # the first window of stored alarms, not all of them

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
        check_options(options, frozenset({"jurisdiction"}), "newUniqueId")
        return LocalDurableObjectId(secrets.token_hex(32), None, self.class_name)

    def idFromString(self, id: str) -> LocalDurableObjectId:
        if not isinstance(id, str) or not _HEX_ID.fullmatch(id):
            raise TypeError("Invalid Durable Object ID: must be 64 hex digits")
        return LocalDurableObjectId(id, None, self.class_name)

    def get(self, id: Any, options: Mapping[str, Any] | None = None) -> LocalDurableObjectStub:
        check_options(options, frozenset({"locationHint"}), "get")
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
            error = self._commits.commit()
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
        dirty, self._dirty = self._dirty, []
        if self._one_file is not None and self._db.in_transaction:
            self._db.execute("ROLLBACK")  # the whole file's open turn dies with the process
        self._close_files()
        self._commits.abandon()  # held answers and waiters are cancelled
        for actor in dirty:
            actor.dirty = False
        await self._cancel_all()

    def _close_files(self) -> None:
        for actor in self._actors.values():
            if actor.sql is not None:
                actor.sql._close()
        if not self._closed:
            self._closed = True
            if self._one_file is not None:
                self._one_file.leave(self)  # D1 owns the file and closes it
                return
            self._commits.close()
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
        hex_id = self._hex(id_or_name)
        actor = self._actors.get(hex_id)
        if actor is not None:
            return self._alarm_time(actor)
        row = self._db.execute(
            "SELECT time_ms FROM kumofire_local_do_alarms WHERE object_id = ?", (hex_id,)
        )
        stored = row.fetchone()  # an object not in memory: its committed alarm, if any
        return None if stored is None else float(stored[0])

    def instance_count(self) -> int:
        return sum(1 for actor in self._actors.values() if actor.instance is not None)

    def actor_count(self) -> int:
        """Objects the namespace keeps book on (live, with an alarm due within the window or
        the idle period, or with pending writes)."""
        return len(self._actors)

    def _hex(self, id_or_name: LocalDurableObjectId | str) -> str:
        if isinstance(id_or_name, LocalDurableObjectId):
            return id_or_name.toString()
        return self.idFromName(id_or_name).toString()

    # Calls ---------------------------------------------------------------------------------------

    def _actor(self, hex_id: str, name: str | None) -> Actor:
        actor = self._actors.get(hex_id)
        if actor is None:
            actor = self._actors[hex_id] = Actor(hex_id, name, self)
            actor.storage = LocalDurableObjectStorage(self, actor)
            # Not in memory: storage holds all of it (an object leaves memory only with its
            # writes committed). No KV pairs: its reads need no query.
            time_ms, retry, stored_name, stored = self._db.execute(_STORED, (hex_id,)).fetchone()
            actor.cache_complete = not stored
            if name is None:
                actor.name = stored_name  # an alarm's object rebuilt, or a call by its id alone
            if time_ms is not None:
                actor.alarm_retry = retry
                actor.alarm_row = actor.alarm_committed = (time_ms, retry)
                self._arm(actor, time_ms)
        elif actor.name is None and name is not None:
            actor.name = name
        return actor

    def _send(
        self,
        id: LocalDurableObjectId,
        method: str,
        args: list[Any],
        durable: asyncio.Future[None] | None = None,
    ) -> asyncio.Future[Any]:
        """Call `method` on the object, once `durable` (the calling object's writes pending
        when it called, made durable by the turn's commit) is resolved, if given; not at all
        if it failed (the call fails with the commit's error)."""
        actor = self._actor(id._hex, id.name)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self._hold(actor)  # from now: a call queued at the gate counts as in flight
        call = self._rpc(actor, method, args, answer, durable)
        if method not in self._start_in_caller or output_gate.current() is not None:
            # A task, which starts once the caller awaits. Always from inside an object's
            # call or alarm: that caller holds its own input gate until then, and may be the
            # target.
            task = loop.create_task(call)
            self._calls[task] = answer  # stop() cancels both; `_rpc_done` forgets them
            # A done callback, not `finally`: it runs too for a call cancelled unstarted.
            task.add_done_callback(lambda done: self._rpc_done(done, actor))
            return answer
        # One of `start_in_caller`, from outside any object (the runtime's consumer: a
        # coordinator's lease and release): the call starts at once, in a context of its
        # own as a task's would be, and runs until it first waits. Such calls seldom wait,
        # and then finish here without a task, its scheduling and its done callback; one
        # that waits (at the gate, for I/O) goes on in a task, in the same context. Its
        # answer is released as before, after the object's writes are durable.
        context = contextvars.copy_context()
        try:
            waiting = context.run(call.send, None)
        except StopIteration:
            self._release(actor)
            return answer
        except BaseException:
            self._release(actor)
            raise
        task = loop.create_task(_Resumed(call, waiting), context=context)
        self._calls[task] = answer
        task.add_done_callback(lambda done: self._rpc_done(done, actor))
        return answer

    def _rpc_done(self, task: asyncio.Task[None], actor: Actor) -> None:
        self._calls.pop(task, None)
        self._release(actor)

    async def _rpc(
        self,
        actor: Actor,
        method: str,
        args: list[Any],
        answer: asyncio.Future[Any],
        durable: asyncio.Future[None] | None,
    ) -> None:
        if durable is not None:
            try:
                await durable
            except asyncio.CancelledError:
                answer.cancel()  # stop(): the caller sees the call cut off
                raise
            except Exception as error:  # the caller's writes were lost: nothing is sent
                if not answer.done():
                    answer.set_exception(error)
                return
        output_gate.enter(actor)
        answers.mark_runtime_work()  # an object answers its caller, never the outside world
        try:
            instance = actor.instance
            if instance is None or actor.blockers:
                instance = await self._enter(actor)
            storage = actor.storage  # the instance's: marked if a failed commit resets it
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
            if storage is not None and storage.reset:
                # A commit of its writes failed during the call (before a call out, say): the
                # object was reset, and its caller hears that, never of a write that was lost.
                raise DurableObjectError(RESET_MESSAGE)
        except asyncio.CancelledError:
            answer.cancel()  # stop(): the caller sees the call cut off
            raise
        except Exception as error:
            self._answer(actor, answer, error, True)
        else:
            self._answer(actor, answer, value, False)

    def _answer(self, actor: Actor, answer: asyncio.Future[Any], value: Any, error: bool) -> None:
        """Release a call's outcome to its caller, once the object's writes are durable."""
        if actor.dirty:
            self._commits.hold(answer, value, error, storage_error)
            if output_gate.alone():
                self._commit_and_report()  # nobody else could join this turn's commit
        elif not answer.done():
            if error:
                answer.set_exception(value)
            else:
                answer.set_result(value)

    def _build(self, actor: Actor) -> None:
        assert actor.storage is not None
        id = LocalDurableObjectId(actor.hex, actor.name, self.class_name)
        ctx = LocalDurableObjectState(self, actor, id, actor.storage)
        actor.serial += 1
        try:
            actor.instance = self._factory(ctx, self._env)
        except Exception as exc:
            log.debug("Durable Object constructor raised", exc_info=True)
            raise DurableObjectError(str(exc)) from None

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


class _Resumed(Coroutine[Any, Any, None]):
    """A call's coroutine that was started by hand and waits for `waiting` (what its first
    `send` yielded: a future, or None for a bare yield), for a task to drive on: the task's
    first step hands it `waiting`, as if it had just yielded it; every later step and
    exception goes to the call."""

    __slots__ = ("_call", "_waiting")

    def __init__(self, call: Coroutine[Any, Any, None], waiting: Any) -> None:
        self._call = call
        self._waiting: Any = waiting

    def send(self, value: Any) -> Any:
        waiting = self._waiting
        if waiting is not _RESUMED:
            self._waiting = _RESUMED
            return waiting
        return self._call.send(value)

    def throw(self, *exc: Any) -> Any:
        self._waiting = _RESUMED
        return self._call.throw(*exc)

    def close(self) -> None:
        self._call.close()

    def __await__(self) -> Generator[Any, None, None]:
        raise TypeError("a resumed call is driven by its task, not awaited")


_RESUMED: Any = object()


if TYPE_CHECKING:
    # The binding satisfies the runtime's protocols.
    def _as_namespace(ns: LocalDurableObjectNamespace) -> DurableObjectNamespace:
        return ns

    def _as_actor_storage(storage: LocalDurableObjectStorage) -> ActorStorage:
        return storage
