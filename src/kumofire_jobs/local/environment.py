"""The embedded bindings wired together as this project's `wrangler.toml` declares them.

`LocalEnvironment` is to the runtime what a Worker's `env` is on Cloudflare: it has the
`JOBS_DB`, `JOBS_QUEUE` and `JOB_COORDINATOR` bindings, its queue consumer calls
`runtime.consume_batch`, its coordinator objects wrap `runtime.coordinator_actor`, and its
cron triggers call `runtime.dispatch_scheduled`: the same calls `src/entry.py` makes. Every
byte lives under one data directory, so a restart loses nothing.

Service bindings given to it (in-process Workers, `local.services`) are in `services`, and
the routes of the `KUMOFIRE_REMOTE_HANDLERS` var reach them, as on Cloudflare.
"""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from asyncio import FIRST_COMPLETED
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kumofire_coordinator import CoordinatorEndpoint, LimiterActor

from ..cloudflare.remote import REMOTE_HANDLERS_VAR, RemoteRoute, parse_routes, remote_handlers
from ..core.bindings import MessageBatch
from ..core.clock import now_ms
from ..core.errors import MalformedMessageError, RemoteHandlersError
from ..core.log import get_logger
from ..core.message import parse_message
from ..core.migrations import apply_migrations
from ..core.runtime import Resources, Runtime
from . import layout as layouts
from .cron import LocalCron, ScheduledController
from .d1 import LocalD1Database
from .data_dir_lock import DataDirectoryLock
from .durable_objects import LocalDurableObjectNamespace, LocalDurableObjectState
from .one_file import OneFile
from .queue import ConsumerSettings, LocalQueueBroker

log = get_logger()

# Names as wrangler.toml declares them; used when no wrangler.toml is given.
DEFAULT_QUEUE = "kumofire-jobs"
DEFAULT_DEAD_LETTER_QUEUE = "kumofire-jobs-dlq"
DEFAULT_CRONS = ("* * * * *",)
COORDINATOR_CLASS = "JobCoordinator"
# The coordinator's methods whose calls from the runtime start in the caller's step
# (`LocalDurableObjectNamespace(start_in_caller=...)`).
COORDINATOR_CALLS_STARTED_IN_CALLER = frozenset({"lease", "release"})
# The data directory's layout when none is given (local/layout.py); the test suite runs its
# crash-point tests in both (tests/conftest.py).
DEFAULT_LAYOUT = layouts.ONE_FILE
# Prompt delivery: the platform's default batch timeout (5 s) would delay every run.
PROMPT_CONSUMER = ConsumerSettings(
    max_batch_size=100, max_batch_timeout=0, dead_letter_queue=DEFAULT_DEAD_LETTER_QUEUE
)


def open_local_d1(data_dir: Path, *, synchronous: str = "NORMAL") -> LocalD1Database:
    """The jobs database of a data directory (created if new)."""
    (data_dir / "d1").mkdir(parents=True, exist_ok=True)
    return LocalD1Database(data_dir / "d1" / "jobs.sqlite", synchronous=synchronous)


class LocalJobCoordinator(CoordinatorEndpoint):
    """The coordinator Durable Object class, as the embedded namespace builds it."""

    def __init__(self, ctx: LocalDurableObjectState, env: LocalEnvironment) -> None:
        self.ctx = ctx
        self._env = env
        self.actor = env.runtime.coordinator_actor(ctx.storage, env.resources)
        self._limiter_actor: LimiterActor | None = None

    @property
    def limiter(self) -> LimiterActor:  # type: ignore[override]
        """Built when first used: every run's object is built, few serve as a limiter."""
        if self._limiter_actor is None:
            env = self._env
            self._limiter_actor = env.runtime.limiter_actor(self.ctx.storage, env.resources)
        return self._limiter_actor


class WranglerSettings:
    """What the embedded environment takes from a wrangler.toml."""

    def __init__(
        self,
        queue: str = DEFAULT_QUEUE,
        consumer: ConsumerSettings = PROMPT_CONSUMER,
        crons: Sequence[str] = DEFAULT_CRONS,
        vars: Mapping[str, Any] | None = None,
        services: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.queue = queue
        self.consumer = consumer
        self.crons = tuple(crons)
        self.vars = dict(vars or {})  # [vars]: text or JSON values
        self.services = dict(services or {})  # [[services]] tables by binding name

    @classmethod
    def load(cls, path: Path) -> WranglerSettings:
        with path.open("rb") as file:
            config = tomllib.load(file)
        return cls.from_config(config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WranglerSettings:
        queues = config.get("queues", {})
        producers = [p for p in queues.get("producers", []) if p.get("binding") == "JOBS_QUEUE"]
        queue = producers[0]["queue"] if producers else DEFAULT_QUEUE
        consumer = PROMPT_CONSUMER
        for table in queues.get("consumers", []):
            if table.get("queue") == queue:
                consumer = ConsumerSettings.from_wrangler(table)
        crons = config.get("triggers", {}).get("crons", list(DEFAULT_CRONS))
        services = {
            table["binding"]: table
            for table in config.get("services", [])
            if isinstance(table, Mapping) and isinstance(table.get("binding"), str)
        }
        return cls(
            queue=queue,
            consumer=consumer,
            crons=crons,
            vars=config.get("vars", {}),
            services=services,
        )


class LocalEnvironment:
    def __init__(
        self,
        runtime: Runtime,
        data_dir: str | Path,
        *,
        settings: WranglerSettings | None = None,
        synchronous: str = "NORMAL",
        services: Mapping[str, Any] | None = None,
        layout: str | None = None,
    ) -> None:
        layout = layout or DEFAULT_LAYOUT
        if layout not in layouts.LAYOUTS:
            raise ValueError(f"layout must be one of {layouts.LAYOUTS}, not {layout!r}")
        self.layout = layout
        self.runtime = runtime
        self.clock = runtime.clock
        self.settings = settings or WranglerSettings()
        self.services = dict(services or {})  # binding name -> in-process Worker
        # Checked before anything is opened: a bad route leaves nothing to close.
        remote = remote_handlers(self._remote_routes(), SimpleNamespace(**self.services))
        runtime.handlers_with(remote)
        self._remote = remote
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Before any file is opened: a second process here would go unseen (data_dir_lock).
        self._lock = DataDirectoryLock(self.data_dir)
        self._lock.acquire()
        try:
            self._open(synchronous)
        except BaseException:
            self._lock.release()
            raise
        self._started = False

    def _open(self, synchronous: str) -> None:
        (self.data_dir / "d1").mkdir(exist_ok=True)
        one_file: OneFile | None = None
        if self.layout == layouts.ONE_FILE:
            if layouts.to_one_file(self.data_dir, COORDINATOR_CLASS):
                log.info("data_dir.moved_to_one_file", data_dir=str(self.data_dir))
        else:
            layouts.check_per_binding(self.data_dir)
        self.JOBS_DB = LocalD1Database(layouts.d1_path(self.data_dir), synchronous=synchronous)
        try:
            if self.layout == layouts.ONE_FILE:
                one_file = OneFile(self.JOBS_DB)
            self.broker = LocalQueueBroker(
                None if one_file else layouts.queue_path(self.data_dir),
                self.clock,
                synchronous=synchronous,
                one_file=one_file,
            )
        except BaseException:
            self.JOBS_DB.close()
            raise
        self.JOBS_QUEUE = self.broker.producer(self.settings.queue)
        self.JOB_COORDINATOR = LocalDurableObjectNamespace(
            LocalJobCoordinator,
            path=self.data_dir / "durable_objects" / COORDINATOR_CLASS,
            clock=self.clock,
            env=self,
            class_name=COORDINATOR_CLASS,
            synchronous=synchronous,
            one_file=one_file,
            # The consumer's two calls a run, which never wait: no task each (the binding's
            # `start_in_caller`). An `arm` stays a task: a due run's arm waits for its send.
            start_in_caller=COORDINATOR_CALLS_STARTED_IN_CALLER,
        )
        self.resources = Resources(
            db=self.JOBS_DB,
            queue=self.JOBS_QUEUE,
            coordinator=self.JOB_COORDINATOR,
            remote_handlers=self._remote,
            wait_for_arms=False,  # start() re-arms unfinished runs (reconcile_unfinished)
        )
        self.broker.add_consumer(self.settings.queue, self.queue, self.settings.consumer)
        self.cron = LocalCron(list(self.settings.crons), self.scheduled, self.clock)
        self.jobs = self.runtime.bind(self.resources)

    def _remote_routes(self) -> dict[str, RemoteRoute]:
        routes = parse_routes(self.settings.vars.get(REMOTE_HANDLERS_VAR))
        for route in routes.values():
            if route.binding not in self.services:
                declared = self.settings.services.get(route.binding, {})
                entrypoint = declared.get("entrypoint") or "CLASS"
                raise RemoteHandlersError(
                    f"{REMOTE_HANDLERS_VAR} routes job {route.job!r} to the service binding "
                    f"{route.binding!r}, which is not running: run that Worker in-process with "
                    f"--service {route.binding}=MODULE:{entrypoint}"
                )
        return routes

    # --- the Worker's handlers, as workerd would call them -----------------------------------

    async def queue(self, batch: MessageBatch) -> None:
        await self.runtime.consume_batch(batch, self.resources)

    async def scheduled(self, controller: ScheduledController) -> None:
        await self.runtime.dispatch_scheduled(self.resources)

    # --- lifecycle --------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        return [m.name for m in await apply_migrations(self.JOBS_DB)]

    async def start(self, *, migrate: bool = True) -> None:
        """Apply pending migrations (unless told not to), start the queue consumer and the
        alarms, arm every unfinished run whose coordinator lost it (a crash can fall between
        a run's insert and its arm), and start the cron triggers."""
        if migrate:
            applied = await self.migrate()
            if applied:
                log.info("migrations.applied", migrations=applied)
        # Every lease granted before now was granted to a process that is gone when the lock
        # is ours (the kernel frees it with its holder): those leases end at once below.
        started_ms = now_ms(self.clock)
        await self.JOB_COORDINATOR.start()
        # The runs whose message the stored queue holds: their actors may hold nothing (a
        # create's inline arm stores nothing once it sent), and they are not lost.
        held = _run_ids(await self.broker.bodies(self.settings.queue))
        await self.broker.start()
        # This process alone owns the data directory (the lock), so nothing is in flight:
        # a run whose creation a crash cut before its arm starts now, not a minute later,
        # and a run a crash cut off goes again now, not when its lease would have run out.
        await self.runtime.bind(self.resources).dispatch_at_start(
            expire_leases_before=started_ms if self._lock.exclusive else None, held=held
        )
        await self.cron.start()
        self._started = True

    def running_handlers(self) -> int:
        """How many handlers are running now (a clean stop waits for them)."""
        return self.runtime.running_handlers(self.resources)

    async def stop(
        self, *, drain_seconds: float | None = None, interrupt: asyncio.Event | None = None
    ) -> int:
        """A clean shutdown: timers stop and in-flight batches finish and settle, waiting at
        most `drain_seconds` (real time; None: as long as they take) and not after
        `interrupt` is set. Handlers still running then are cancelled, as by a crash: their
        runs are recovered when the leases expire (the cut-off attempt counts). Returns how
        many handlers were cut off."""
        cut_off = 0
        if self._started:
            await self.cron.stop()
            self.runtime.stop_handing_over(self.resources)  # wait for running runs only
            draining = asyncio.ensure_future(self.broker.stop())
            waits: set[asyncio.Future[Any]] = {draining}
            if interrupt is not None:
                waits.add(asyncio.ensure_future(interrupt.wait()))
            try:
                await asyncio.wait(waits, timeout=drain_seconds, return_when=FIRST_COMPLETED)
            finally:
                drained = draining.done()
                if not drained:
                    cut_off = self.running_handlers()
                for waiting in waits:
                    waiting.cancel()  # cancelling the drain cancels the handlers it waits for
                await asyncio.gather(*waits, return_exceptions=True)
            if drained:
                draining.result()
            else:
                await self.broker.stop(cancel_in_flight=True)  # hands their messages back
            await self.JOB_COORDINATOR.stop()
            self._started = False
        await self.close()
        return cut_off

    async def close(self) -> None:
        """Close the stores at once, as a crash would (nothing in flight is settled), and
        stop what still runs in the in-process Workers."""
        await self.cron.stop(cancel_in_flight=True)  # a dead process has no timers either
        self._started = False
        for binding in self.services.values():
            await binding.stop()
        try:
            self.broker.close()
            await self.JOB_COORDINATOR.close()
            self.JOBS_DB.close()
        finally:
            self._lock.release()  # last: nothing of ours writes the files after this

    async def __aenter__(self) -> LocalEnvironment:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _run_ids(bodies: Sequence[Any]) -> set[str]:
    """The run ids the queue's messages name (a malformed one names none)."""
    ids: set[str] = set()
    for body in bodies:
        with contextlib.suppress(MalformedMessageError):
            ids.add(parse_message(body))
    return ids
