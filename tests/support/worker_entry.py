"""`src/entry.py` as the tests run it: imported on the stand-in `workers` package
(tests/support/sdk_stub: the SDK itself needs Pyodide), and `Stack`, its Worker on the local
bindings behind the SDK-shaped fakes of tests/support/fake_sdk.py."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol, cast

import pytest
import structlog

from kumofire_jobs import JobContext, Runtime, create_runtime
from kumofire_jobs.cloudflare import CloudflareD1Database, WorkerApp
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.context import Handler
from kumofire_jobs.core.migrations import apply_migrations
from kumofire_jobs.local.d1 import LocalD1Database
from kumofire_jobs.local.durable_objects import LocalDurableObjectNamespace
from kumofire_jobs.local.queue import ConsumerSettings, LocalQueueBroker
from tests.support.fake_sdk import (
    FakeD1Database,
    FakeDurableObjectNamespace,
    FakeDurableObjectState,
    FakeEnv,
    FakeMessageBatch,
    FakeQueue,
)

STUBS = Path(__file__).parent / "sdk_stub"
QUEUE = "kumofire-jobs"
# What importing the entry loads (and a test unloads again): the entry, the stand-in SDK.
ENTRY_MODULES = ("entry", "workers", "workers.asgi")


class WorkerEntry(Protocol):
    """What the tests reach in `src/entry.py` (a module imported at run time)."""

    app: WorkerApp
    runtime: Runtime
    # The registered handlers, called by the tests with a duck of a JobContext too.
    handlers: dict[str, Callable[[Any], Awaitable[Any]]]
    echo: Handler
    # The entrypoint classes, which workerd builds as `Class(ctx, env)`.
    Default: type[Any]
    JobsService: type[Any]
    JobCoordinator: type[Any]


def import_entry(monkeypatch: pytest.MonkeyPatch) -> WorkerEntry:
    """Import `src/entry.py` afresh with the stand-in `workers` package first on the path
    (undo with `unload_entry`)."""
    monkeypatch.syspath_prepend(str(STUBS))
    for name in ENTRY_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    return cast(WorkerEntry, importlib.import_module("entry"))


def unload_entry() -> None:
    for name in ENTRY_MODULES:
        sys.modules.pop(name, None)
    structlog.reset_defaults()  # importing the entry configured the Worker's logging


class Recorder:
    """The Worker's one handler: records each payload; a payload object may also ask it to
    `log` an event, report `progress`, fail until attempt `fail_until` and return `result`."""

    def __init__(self) -> None:
        self.payloads: list[Any] = []

    async def __call__(self, ctx: JobContext) -> Any:
        self.payloads.append(ctx.job.payload)
        script = ctx.job.payload if isinstance(ctx.job.payload, dict) else {}
        if "log" in script:
            ctx.log.info(script["log"], attempt_seen=ctx.job.attempt)
        if "progress" in script:
            await ctx.progress(script["progress"])
        if ctx.job.attempt < script.get("fail_until", 0):
            raise RuntimeError(f"attempt {ctx.job.attempt} fails")
        return script.get("result")


class Stack:
    """The Worker of src/entry.py on local bindings: its `env` is SDK-shaped, its queue
    consumer calls `Default.queue`, its coordinator objects are `entry.JobCoordinator`."""

    def __init__(
        self, entry: WorkerEntry, clock: ManualClock, data_dir: Path, style: str, **vars: Any
    ) -> None:
        self.entry = entry
        self.style = style
        self.recorder = Recorder()
        runtime = create_runtime({"job": self.recorder}, clock=clock)
        self.app = WorkerApp(runtime)
        entry.app = self.app  # the module's app, with this test's handlers and clock
        self.d1 = LocalD1Database(data_dir / "d1.sqlite")
        self.broker = LocalQueueBroker(data_dir / "queues.sqlite", clock)
        self.namespace = LocalDurableObjectNamespace(
            self.coordinator, path=data_dir / "do", clock=clock, class_name="JobCoordinator"
        )
        self.env = FakeEnv(
            JOBS_DB=FakeD1Database(self.d1, style),
            JOBS_QUEUE=FakeQueue(self.broker.producer(QUEUE), style),
            JOB_COORDINATOR=FakeDurableObjectNamespace(self.namespace, style),
            **vars,
        )
        self.broker.add_consumer(
            QUEUE, self.consume, ConsumerSettings(max_batch_size=100, max_batch_timeout=0)
        )

    def coordinator(self, ctx: Any, env: Any) -> Any:
        return self.entry.JobCoordinator(FakeDurableObjectState(ctx, self.style), self.env)

    async def consume(self, batch: Any) -> None:
        worker = self.entry.Default(SimpleNamespace(), self.env)
        await worker.queue(FakeMessageBatch(batch, self.style))

    def service(self) -> Any:
        return self.entry.JobsService(SimpleNamespace(), self.env)

    async def start(self) -> None:
        # Migrations through the adapter too (batches of DDL).
        await apply_migrations(CloudflareD1Database(FakeD1Database(self.d1, self.style)))
        await self.namespace.start()
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop(cancel_in_flight=True)
        self.broker.close()
        await self.namespace.close()
        self.d1.close()
