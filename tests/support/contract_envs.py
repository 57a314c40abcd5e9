"""The local bindings plugged into the contract suites of tests/contracts/ (the Cloudflare
adapter's tests extend them: the adapter over the local binding)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kumofire_jobs.core.bindings import MessageBatch, Queue
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.durable_objects import LocalDurableObjectNamespace
from kumofire_jobs.local.queue import ConsumerSettings, LocalQueueBroker
from tests.contracts.durable_object_contract import ContractObject, Probe

Handler = Callable[[MessageBatch], Awaitable[None]]


class LocalQueueEnv:
    rejected: tuple[type[BaseException], ...] = (TypeError, ValueError)

    def __init__(self, path: Path, clock: ManualClock) -> None:
        self.path = path
        self.clock = clock
        self.broker = LocalQueueBroker(path, clock)
        self._consumers: list[tuple[str, Handler, ConsumerSettings]] = []
        self._started = False

    def now(self) -> float:
        return self.clock.now()

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)

    def producer(self, queue: str) -> Queue:
        return self.broker.producer(queue)

    def consume(self, queue: str, handler: Handler, **settings: Any) -> None:
        parsed = ConsumerSettings.from_wrangler({"queue": queue, **settings})
        self._consumers.append((queue, handler, parsed))
        self.broker.add_consumer(queue, handler, parsed)

    async def start(self) -> None:
        self._started = True
        await self.broker.start()

    async def depth(self, queue: str) -> int:
        return await self.broker.depth(queue)

    async def restart(self) -> None:
        self.broker.close()  # abrupt, as a dying process: nothing in flight is settled
        self.broker = LocalQueueBroker(self.path, self.clock)
        for queue, handler, settings in self._consumers:
            self.broker.add_consumer(queue, handler, settings)
        if self._started:
            await self.broker.start()

    async def shutdown(self) -> None:
        await self.broker.stop(cancel_in_flight=True)
        self.broker.close()


class LocalDurableObjectEnv:
    rejected: tuple[type[BaseException], ...] = (TypeError, ValueError)

    def __init__(self, clock: ManualClock, path: Path, **options: Any) -> None:
        self.clock = clock
        self.path = path
        self.options = options
        self.probe = Probe(now=clock.now)
        self._namespace: LocalDurableObjectNamespace | None = None

    def now(self) -> float:
        return self.clock.now()

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)

    async def advance_to(self, when: float) -> None:
        await self.clock.advance_to(when)

    def namespace(self) -> LocalDurableObjectNamespace:
        assert self._namespace is not None
        return self._namespace

    async def open(self, *, start: bool = True) -> LocalDurableObjectNamespace:
        self._namespace = LocalDurableObjectNamespace(
            ContractObject,
            path=self.path,
            clock=self.clock,
            env=SimpleNamespace(PROBE=self.probe),
            **self.options,
        )
        if start:
            await self._namespace.start()
        return self._namespace

    async def evict(self, name: str) -> None:
        self.namespace().evict(name)

    async def restart(self) -> None:
        await self.close()
        await self.open()

    async def close(self) -> None:
        if self._namespace is not None:
            await self._namespace.close()
