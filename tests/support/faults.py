"""Faults injected at the binding edges: a queue that drops sends, a coordinator namespace
whose calls fail, a D1 database whose statements fail on demand, and `rewire` to put one in
front of an environment's real binding."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from kumofire_jobs import Resources
from kumofire_jobs.core.bindings import D1Database, DurableObjectNamespace, Queue
from kumofire_jobs.local.environment import LocalEnvironment


def rewire(
    env: LocalEnvironment,
    *,
    queue: Queue | None = None,
    coordinator: DurableObjectNamespace | None = None,
    db: D1Database | None = None,
) -> None:
    """Put a faulty binding in front of the real one, before any coordinator is built."""
    env.resources = Resources(
        db=db or env.JOBS_DB,
        queue=queue or env.JOBS_QUEUE,
        coordinator=coordinator or env.JOB_COORDINATOR,
        wait_for_arms=env.resources.wait_for_arms,
    )
    env.jobs = env.runtime.bind(env.resources)


class DroppingQueue:
    """Loses the first `drops` sends (a message lost between producer and consumer)."""

    def __init__(self, inner: Queue, drops: int) -> None:
        self.inner = inner
        self.drops = drops
        self.sent = 0

    async def send(self, body: Any, options: dict[str, Any] | None = None) -> None:
        self.sent += 1
        if self.drops > 0:
            self.drops -= 1
            return
        await self.inner.send(body, options)

    async def sendBatch(self, messages: Any, options: dict[str, Any] | None = None) -> None:
        await self.inner.sendBatch(messages, options)


class FailingNamespace:
    """A coordinator namespace whose stubs fail the named methods while `failing` holds, and
    lose the answers of the methods in `lost` (the call runs; its caller gets an error)."""

    def __init__(self, inner: DurableObjectNamespace, *methods: str, times: int = 10**9) -> None:
        self.inner = inner
        self.methods = set(methods)
        self.lost: set[str] = set()
        self.times = times
        self.calls: Counter[str] = Counter()  # every call made through it, by method
        self.order: list[tuple[str, str]] = []  # every call, in order: (object name, method)

    def idFromName(self, name: str) -> Any:
        return self.inner.idFromName(name)

    def get(self, id: Any) -> Any:
        return _FailingStub(self, self.inner.get(id))

    def getByName(self, name: str) -> Any:
        return _FailingStub(self, self.inner.getByName(name))


class _FailingStub:
    def __init__(self, namespace: FailingNamespace, inner: Any) -> None:
        self._namespace = namespace
        self._inner = inner
        self.id = inner.id
        self._name = str(getattr(inner, "name", None) or getattr(inner.id, "name", "") or "")

    def __getattr__(self, method: str) -> Any:
        target = getattr(self._inner, method)
        namespace = self._namespace

        def call(*args: Any) -> Any:
            # Decided and sent when called, not when awaited, as the platform's stubs do.
            namespace.calls[method] += 1
            namespace.order.append((self._name, method))
            if method in namespace.methods and namespace.times > 0:
                namespace.times -= 1
                return _fail(method)
            if method in namespace.lost:
                return _lose(method, target(*args))
            return target(*args)

        return call


async def _fail(method: str) -> Any:
    raise RuntimeError(f"injected failure of {method}")


async def _lose(method: str, answer: Any) -> Any:
    await answer
    raise RuntimeError(f"injected loss of the answer of {method}")


class FaultyD1:
    """A D1 database that keeps the SQL of every statement it ran (`ran`, a `batch()`'s each
    in order) and fails the next statements whose SQL contains a text (`fail`), before they
    run: a D1 error at the edge, as an overloaded or unreachable database answers."""

    def __init__(self, inner: D1Database) -> None:
        self.inner = inner
        self.ran: list[str] = []
        self._failing: list[list[Any]] = []  # [text, times left]
        self._before: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    def fail(self, text: str, times: int = 1) -> None:
        self._failing.append([text, times])

    def before(self, text: str, hook: Callable[[], Awaitable[None]]) -> None:
        """Await `hook` once, before the next statement whose SQL contains `text` runs
        (something that lands meanwhile)."""
        self._before.append((text, hook))

    async def _run_before(self, sql: str) -> None:
        for entry in list(self._before):
            if entry[0] in sql and entry in self._before:
                self._before.remove(entry)
                await entry[1]()

    def _check(self, sql: str) -> None:
        for rule in self._failing:
            if rule[1] > 0 and rule[0] in sql:
                rule[1] -= 1
                raise RuntimeError(f"D1_ERROR: injected failure of {sql[:40]!r}")
        self.ran.append(sql)

    def prepare(self, query: str) -> _FaultyStatement:
        return _FaultyStatement(self, query, self.inner.prepare(query))

    async def batch(self, statements: Sequence[Any]) -> Any:
        for statement in statements:
            await self._run_before(statement.sql)
        for statement in statements:
            self._check(statement.sql)
        return await self.inner.batch([statement.inner for statement in statements])

    async def exec(self, query: str) -> Any:
        return await self.inner.exec(query)


class _FaultyStatement:
    def __init__(self, db: FaultyD1, sql: str, inner: Any) -> None:
        self._db = db
        self.sql = sql
        self.inner = inner

    def bind(self, *values: Any) -> _FaultyStatement:
        return _FaultyStatement(self._db, self.sql, self.inner.bind(*values))

    async def first(self, column: str | None = None) -> Any:
        await self._db._run_before(self.sql)
        self._db._check(self.sql)
        return await self.inner.first(column)

    async def all(self) -> Any:
        await self._db._run_before(self.sql)
        self._db._check(self.sql)
        return await self.inner.all()

    async def run(self) -> Any:
        await self._db._run_before(self.sql)
        self._db._check(self.sql)
        return await self.inner.run()

    async def raw(self, options: Any = None) -> Any:
        await self._db._run_before(self.sql)
        self._db._check(self.sql)
        return await self.inner.raw(options)
