"""Counting wrappers around the binding protocols (`kumofire_jobs.core.bindings`), applied from
the outside to a `LocalEnvironment`: what each run costs in billed platform operations.

- D1: every statement with its bound values and the local meta (`rows_read`,
  `rows_written`), in order, so the trace can be replayed on miniflare's D1 to calibrate.
- Queues: messages written (send), read (each delivery) and deleted (ack); retries.
- Durable Objects: RPC calls by method and alarm runs (each a billed request), and the
  coordinator's storage operations (rows read and written as the SQLite backend bills them).
- Worker invocations: queue consumer batches here; requests are counted by the caller.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kumofire_jobs.core.bindings import D1PreparedStatement, MessageBatch, QueueMessage
from kumofire_jobs.core.runtime import Runtime
from kumofire_jobs.local.environment import LocalEnvironment, WranglerSettings


@dataclass
class D1Statement:
    sql: str
    params: list[Any]
    batch: int | None
    rows_read: int | None  # the local binding's meta (None: no meta, e.g. raw())
    rows_written: int | None


@dataclass
class Counts:
    """Totals of one stretch of activity; `d1` keeps every statement."""

    d1: list[D1Statement] = field(default_factory=list)
    queue: Counter[str] = field(default_factory=Counter)  # write, read, delete, retry
    rpc: Counter[str] = field(default_factory=Counter)  # by method
    alarms: int = 0
    storage: Counter[str] = field(default_factory=Counter)  # rows_read, rows_written, by op
    invocations: Counter[str] = field(default_factory=Counter)  # request, queue, cron


class Recorder:
    """Everything counted since it was made; `mark()` and `since()` cut out a stretch."""

    def __init__(self) -> None:
        self.total = Counts()
        self._batches = itertools.count(1)

    def next_batch(self) -> int:
        return next(self._batches)

    def mark(self) -> Counts:
        t = self.total
        return Counts(
            list(t.d1), Counter(t.queue), Counter(t.rpc), t.alarms, Counter(t.storage),
            Counter(t.invocations),
        )  # fmt: skip

    def since(self, mark: Counts) -> Counts:
        t = self.total
        return Counts(
            t.d1[len(mark.d1) :],
            t.queue - mark.queue,
            t.rpc - mark.rpc,
            t.alarms - mark.alarms,
            t.storage - mark.storage,
            t.invocations - mark.invocations,
        )


# --- D1 ---------------------------------------------------------------------------------------


class CountingD1:
    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self._inner = inner
        self._rec = recorder

    def prepare(self, query: str) -> CountingStatement:
        return CountingStatement(self, self._inner.prepare(query), query, ())

    async def batch(self, statements: Sequence[D1PreparedStatement]) -> list[Any]:
        counted = [s for s in statements if isinstance(s, CountingStatement)]
        assert len(counted) == len(statements), "statements this database's prepare() made"
        results = await self._inner.batch([s._inner for s in counted])
        batch = self._rec.next_batch()
        for statement, result in zip(counted, results, strict=True):
            statement._record(result.meta, batch)
        return list(results)

    async def exec(self, query: str) -> Any:
        raise NotImplementedError("the runtime does not call exec(); the trace cannot replay it")


class CountingStatement:
    def __init__(self, db: CountingD1, inner: Any, sql: str, params: tuple[Any, ...]) -> None:
        self._db = db
        self._inner = inner
        self.sql = sql
        self.params = params

    def bind(self, *values: Any) -> CountingStatement:
        return CountingStatement(self._db, self._inner.bind(*values), self.sql, values)

    def _record(self, meta: Any, batch: int | None) -> None:
        self._db._rec.total.d1.append(
            D1Statement(
                self.sql,
                list(self.params),
                batch,
                None if meta is None else int(meta.rows_read),
                None if meta is None else int(meta.rows_written),
            )
        )

    async def all(self) -> Any:
        result = await self._inner.all()
        self._record(result.meta, None)
        return result

    async def run(self) -> Any:
        result = await self._inner.run()
        self._record(result.meta, None)
        return result

    async def first(self, column: str | None = None) -> Any:
        # all() carries the meta; first() is its first row (as the platform's first() is).
        result = await self.all()
        if not result.results:
            return None
        row = result.results[0]
        return row if column is None else row[column]

    async def raw(self, options: dict[str, Any] | None = None) -> Any:
        rows = await self._inner.raw(options)
        self._record(None, None)
        return rows


# --- Queues -----------------------------------------------------------------------------------


class CountingQueue:
    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self._inner = inner
        self._rec = recorder

    async def send(self, body: Any, options: dict[str, Any] | None = None) -> None:
        await self._inner.send(body, options)
        self._rec.total.queue["write"] += 1

    async def sendBatch(
        self, messages: Sequence[dict[str, Any]], options: dict[str, Any] | None = None
    ) -> None:
        await self._inner.sendBatch(messages, options)
        self._rec.total.queue["write"] += len(messages)


class CountingMessage:
    """A delivered message: one read; `ack()` one delete; `retry()` (a later delivery reads
    it again). Not settled by the handler: acked, as the platform does when it returns."""

    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self._inner = inner
        self._rec = recorder
        self.decision: str | None = None
        recorder.total.queue["read"] += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def ack(self) -> None:
        self._inner.ack()
        self._decide("ack")

    def retry(self, options: dict[str, Any] | None = None) -> None:
        self._inner.retry(options)
        self._decide("retry")

    def _decide(self, decision: str) -> None:
        if self.decision is None:
            self.decision = decision
            self._rec.total.queue["delete" if decision == "ack" else "retry"] += 1


class CountingBatch:
    def __init__(self, inner: MessageBatch, recorder: Recorder) -> None:
        self._inner = inner
        self.queue = inner.queue
        self.counted = [CountingMessage(m, recorder) for m in inner.messages]
        self.messages: Sequence[QueueMessage] = self.counted

    def ackAll(self) -> None:
        self._inner.ackAll()
        for message in self.counted:
            message._decide("ack")

    def retryAll(self, options: dict[str, Any] | None = None) -> None:
        self._inner.retryAll(options)
        for message in self.counted:
            message._decide("retry")

    def settle(self) -> None:
        for message in self.counted:
            message._decide("ack")


# --- Durable Objects --------------------------------------------------------------------------


class CountingNamespace:
    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self._inner = inner
        self._rec = recorder

    def idFromName(self, name: str) -> Any:
        return self._inner.idFromName(name)

    def get(self, id: Any) -> CountingStub:
        return CountingStub(self._inner.get(id), self._rec)

    def getByName(self, name: str) -> CountingStub:
        return CountingStub(self._inner.getByName(name), self._rec)


class CountingStub:
    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self._inner = inner
        self._rec = recorder
        self.id = inner.id

    def __getattr__(self, method: str) -> Any:
        target = getattr(self._inner, method)
        rec = self._rec

        def call(*args: Any) -> Any:
            rec.total.rpc[method] += 1  # each RPC method call is its own billed session
            return target(*args)

        return call


class CountingStorage:
    """The coordinator's storage as the SQLite backend bills it: a get reads a row, a put
    writes one, a delete that deletes writes one (documented: KV methods are billed as rows,
    deletes as rows written), `deleteAll()` one per stored key (workerd's `deleteAll` resets
    the object's database and reports the keys it deleted; the alarm it deletes too, from
    compatibility date 2026-02-24, is not counted: undocumented), `setAlarm()` one
    (documented), `deleteAlarm()` of a set alarm one (assumed: it is `setAlarm(null)`)."""

    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self._inner = inner
        self._rec = recorder
        self._keys: set[str] = set()
        self.alarm_set = False

    def _count(self, op: str, rows_read: int = 0, rows_written: int = 0) -> None:
        storage = self._rec.total.storage
        storage[op] += 1
        storage["rows_read"] += rows_read
        storage["rows_written"] += rows_written

    async def get(self, key: str) -> Any:
        value = await self._inner.get(key)
        self._count("get", rows_read=1)
        return value

    async def put(self, key: str, value: Any) -> None:
        await self._inner.put(key, value)
        self._keys.add(key)
        self._count("put", rows_written=1)

    async def delete(self, key: str) -> bool:
        deleted = bool(await self._inner.delete(key))
        self._keys.discard(key)
        self._count("delete", rows_written=int(deleted))
        return deleted

    async def deleteAll(self) -> None:
        await self._inner.deleteAll()
        self._count("deleteAll", rows_written=len(self._keys))
        self._keys.clear()
        self.alarm_set = False  # deleteAll() deletes the alarm too (compatibility date)

    async def list(self, options: Any = None) -> Any:
        """The limiter's load (once per object): one row read per entry listed."""
        entries = await self._inner.list(options)
        self._keys.update(entries)
        self._count("list", rows_read=max(len(entries), 1))
        return entries

    async def getAlarm(self) -> Any:
        value = await self._inner.getAlarm()
        self._count("getAlarm", rows_read=1)
        return value

    async def setAlarm(self, scheduled_time: float) -> None:
        await self._inner.setAlarm(scheduled_time)
        self.alarm_set = True
        self._count("setAlarm", rows_written=1)

    async def deleteAlarm(self) -> None:
        await self._inner.deleteAlarm()
        self._count("deleteAlarm", rows_written=int(self.alarm_set))
        self.alarm_set = False


class CountingActor:
    """The coordinator actor, counting its alarm runs (each a billed request)."""

    def __init__(self, inner: Any, storage: CountingStorage, recorder: Recorder) -> None:
        self._inner = inner
        self._storage = storage
        self._rec = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def alarm(self) -> bool:
        self._rec.total.alarms += 1
        self._storage.alarm_set = False  # a running alarm is no longer set
        return bool(await self._inner.alarm())


# --- the environment --------------------------------------------------------------------------


class InstrumentedEnvironment(LocalEnvironment):
    """A LocalEnvironment whose runtime sees only counting bindings. No cron triggers: the
    cron's fixed cost is measured on its own (`tick()`), not mixed into a run's."""

    def __init__(
        self, runtime: Runtime, data_dir: Path, recorder: Recorder, **options: Any
    ) -> None:
        original = runtime.coordinator_actor

        def coordinator_actor(storage: Any, resources: Any) -> Any:
            counted = CountingStorage(storage, recorder)
            return CountingActor(original(counted, resources), counted, recorder)

        runtime.coordinator_actor = coordinator_actor  # type: ignore[method-assign]
        original_limiter = runtime.limiter_actor

        def limiter_actor(storage: Any, resources: Any) -> Any:
            return original_limiter(CountingStorage(storage, recorder), resources)

        runtime.limiter_actor = limiter_actor  # type: ignore[method-assign]
        options.setdefault("settings", WranglerSettings(crons=()))
        super().__init__(runtime, data_dir, **options)
        self.recorder = recorder
        self.resources = dataclasses.replace(
            self.resources,
            db=CountingD1(self.JOBS_DB, recorder),
            queue=CountingQueue(self.JOBS_QUEUE, recorder),
            coordinator=CountingNamespace(self.JOB_COORDINATOR, recorder),
        )
        self.jobs = runtime.bind(self.resources)
        self.outcomes: list[str] = []

    async def queue(self, batch: MessageBatch) -> None:
        self.recorder.total.invocations["queue"] += 1
        counted = CountingBatch(batch, self.recorder)
        results = await self.runtime.consume_batch(counted, self.resources)
        counted.settle()
        self.outcomes.extend(str(r.outcome) for r in results)

    async def tick(self) -> None:
        """One cron trigger invocation (reconciliation and retention)."""
        self.recorder.total.invocations["cron"] += 1
        await self.runtime.dispatch_scheduled(self.resources)

    async def migrate(self) -> list[str]:
        # Through the counting binding, so the recorded trace rebuilds the schema on replay.
        from kumofire_jobs.core.migrations import apply_migrations

        return [m.name for m in await apply_migrations(self.resources.db)]
