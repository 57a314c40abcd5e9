"""The jobs API of a bound runtime: what `runtime.bind(resources)` returns.

The HTTP API, the RPC entrypoint and the CLI call exactly these methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import validation
from .clock import now_ms
from .errors import ConflictError, ValidationError
from .log import get_logger
from .migrations import check_schema, schema_version
from .models import (
    ConsumeResult,
    CreatedRun,
    CreateRequest,
    DispatchResult,
    JobRun,
    JobSchedule,
    Page,
)
from .reconcile import reconcile, reconcile_unfinished
from .schedules import Schedules
from .states import RunStatus
from .store import NewRun

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .models import SchedulePatch
    from .runtime import BoundResources, Runtime

log = get_logger()

# Passes of create_many's insert: a second is needed only when a dedupe_key's holder was
# pruned between the insert and the lookup; a third would need that to happen again.
_INSERT_PASSES = 3


class Jobs:
    def __init__(self, runtime: Runtime, bound: BoundResources) -> None:
        self._runtime = runtime
        self._bound = bound
        self._store = bound.store
        self._coordinators = bound.coordinators
        self._clock = runtime.clock
        self.schedules = Schedules(runtime, bound)

    async def _ready(self) -> None:
        await self._bound.ensure_schema(check_schema)

    async def schema_version(self) -> int:
        """The schema version the database is at (for health checks; never fails on an old
        schema)."""
        return await schema_version(self._bound.resources.db)

    # --- create -----------------------------------------------------------------------------

    def _new_run(self, request: CreateRequest, now: int) -> NewRun:
        runtime = self._runtime
        return NewRun(
            id=runtime.ids.run_id(now),
            name=validation.job_name(request.name, self._bound.handlers),
            payload=validation.payload(request.payload),
            max_attempts=validation.max_attempts(request.max_attempts, runtime.retry.max_attempts),
            scheduled_for=validation.due_ms(request.run_at, request.delay, now),
            created_at=now,
            dedupe_key=validation.dedupe_key(request.dedupe_key),
        )

    async def create(
        self,
        name: str,
        payload: Any = None,
        *,
        run_at: datetime | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        dedupe_key: str | None = None,
    ) -> CreatedRun:
        request = CreateRequest(
            name=name,
            payload=payload,
            run_at=run_at,
            delay=delay,
            max_attempts=max_attempts,
            dedupe_key=dedupe_key,
        )
        return (await self.create_many([request]))[0]

    async def create_many(self, requests: Sequence[CreateRequest]) -> list[CreatedRun]:
        """Create up to 100 runs in one D1 transaction, then arm their coordinators."""
        if len(requests) > validation.MAX_BATCH:
            raise ValidationError(f"at most {validation.MAX_BATCH} runs per call")
        await self._ready()
        now = now_ms(self._clock)
        runs = [self._new_run(request, now) for request in requests]
        keys = [run.dedupe_key for run in runs if run.dedupe_key is not None]
        if len(keys) != len(set(keys)):
            raise ValidationError("two runs in one call share a dedupe_key")
        created: list[CreatedRun | None] = [None] * len(runs)
        to_arm: list[NewRun] = []
        try:
            # A run keeps its id across passes: a second pass inserts only the runs whose
            # dedupe_key holder vanished (pruned) between the insert and the lookup, so no
            # run of the batch is ever inserted twice.
            pending = list(enumerate(runs))
            for _ in range(_INSERT_PASSES):
                if pending:
                    pending = await self._insert_pass(pending, created, to_arm)
            if pending:
                raise ConflictError("a dedupe_key kept changing hands: try again")
        finally:
            # Whatever was inserted is armed, even if a later statement failed.
            await asyncio.gather(*(self._arm(run) for run in to_arm))
        return [c for c in created if c is not None]

    async def _insert_pass(
        self,
        pending: list[tuple[int, NewRun]],
        created: list[CreatedRun | None],
        to_arm: list[NewRun],
    ) -> list[tuple[int, NewRun]]:
        """Insert `pending`, fill in `created` and `to_arm`; return the runs whose dedupe_key
        was taken at the insert but free at the lookup (to insert again)."""
        inserted = await self._store.insert_many([run for _, run in pending])
        again: list[tuple[int, NewRun]] = []
        for (index, run), was_inserted in zip(pending, inserted, strict=True):
            if not was_inserted and await self._store.get_row(run.id) is not None:
                was_inserted = True  # our insert landed on an earlier try of a retried batch
            if was_inserted:
                created[index] = CreatedRun(kumofire_job_run_id=run.id, deduplicated=False)
                to_arm.append(run)
                continue
            existing = await self._store.id_by_dedupe_key(run.dedupe_key or "")
            if existing is None:  # pruned between the two statements: insert it again
                again.append((index, run))
            else:
                created[index] = CreatedRun(kumofire_job_run_id=existing, deduplicated=True)
        return again

    async def _arm(self, run: NewRun) -> None:
        log.info(
            "run.created",
            run_id=run.id,
            job=run.name,
            attempt=0,
            scheduled_for_ms=run.scheduled_for,
        )
        try:
            await self._coordinators.arm(run.id, run.scheduled_for)
        except Exception as exc:
            # The run is durable in D1; reconciliation arms it if this call never landed.
            log.error("run.arm_failed", run_id=run.id, error=str(exc))

    # --- read -------------------------------------------------------------------------------

    async def get(self, run_id: str) -> JobRun | None:
        await self._ready()
        return await self._store.get(run_id)

    async def list(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str | None = None,
        schedule_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[JobRun]:
        if status is not None:
            try:
                status = RunStatus(status)
            except ValueError:
                known = ", ".join(s.value for s in RunStatus)
                raise ValidationError(f"status must be one of: {known}") from None
        await self._ready()
        return await self._store.page(
            status=status,
            name=name,
            schedule_id=schedule_id,
            limit=validation.limit(limit),
            cursor=cursor,
        )

    async def counts(self, *, name: str | None = None) -> dict[str, int]:
        await self._ready()
        return await self._store.counts(name=name)

    # --- change -----------------------------------------------------------------------------

    async def cancel(self, run_id: str) -> JobRun | None:
        """Cancel an unfinished run at once; a finished run comes back unchanged."""
        await self._ready()
        run = await self._store.cancel(run_id, now_ms(self._clock))
        if run is None:
            return await self._store.get(run_id)
        log.info("run.canceled", run_id=run.id, job=run.name, attempt=run.attempt)
        try:
            await self._coordinators.cancel(run_id)
        except Exception as exc:
            # D1 says canceled: a delivery finds that and closes the actor; a running
            # handler's fenced finalize leaves the run canceled.
            log.error("run.cancel_notify_failed", run_id=run_id, error=str(exc))
        if run.schedule_id is not None:
            # Canceling a schedule's pending occurrence moves the schedule on to the next.
            await self.schedules.advance(run.schedule_id, run.id, delivered=False, nominal_ms=None)
        return run

    async def retry(self, run_id: str) -> JobRun | None:
        """Schedule a failed or canceled run again now, with one more attempt allowed."""
        await self._ready()
        now = now_ms(self._clock)
        run = await self._store.retry(run_id, now)
        if run is None:
            current = await self._store.get(run_id)
            if current is None:
                return None
            raise ConflictError(
                f"run {run_id} is {current.status.value}: only failed or canceled runs can be "
                "retried"
            )
        log.info("run.retry_requested", run_id=run.id, job=run.name, attempt=run.attempt)
        await self._coordinators.arm(run.id, now)
        return run

    # --- the queue consumer and the cron trigger --------------------------------------------

    async def consume(self, message: Any) -> ConsumeResult:
        """One queue message: lease, start, run the handler, record the outcome."""
        await self._ready()
        return await self._bound.consumer.consume(message)

    async def dispatch(self, limit: int = 100) -> DispatchResult:
        """Reconciliation: re-arm runs whose coordinator lost them, restore schedules whose
        next occurrence is missing, and delete finished runs past the retention age."""
        await self._ready()
        result = await reconcile(
            store=self._store,
            coordinators=self._coordinators,
            clock=self._clock,
            limit=limit,
            grace_seconds=self._runtime.reconcile_grace_seconds,
            retention_seconds=self._runtime.retention_seconds,
        )
        result.schedules_restored = await self.schedules.restore(limit)
        return result

    async def dispatch_at_start(self, limit: int = 100) -> DispatchResult:
        """Reconciliation for a process that alone owns its bindings, at its start (the
        embedded runtime): no grace and every unfinished run, whatever its due time, since
        nothing is in flight; then schedules whose next occurrence is missing."""
        await self._ready()
        result = await reconcile_unfinished(store=self._store, coordinators=self._coordinators)
        result.schedules_restored = await self.schedules.restore(limit)
        return result

    # --- schedules --------------------------------------------------------------------------

    async def create_schedule(
        self,
        name: str,
        payload: Any = None,
        *,
        cron: str | None = None,
        every: float | None = None,
        key: str | None = None,
        timezone: str | None = None,
        enabled: bool = True,
        max_attempts: int | None = None,
    ) -> JobSchedule:
        await self._ready()
        return await self.schedules.create(
            name, payload, cron=cron, every=every, key=key, timezone=timezone,
            enabled=enabled, max_attempts=max_attempts,
        )  # fmt: skip

    async def upsert_schedule(
        self,
        key: str,
        name: str,
        payload: Any = None,
        *,
        cron: str | None = None,
        every: float | None = None,
        timezone: str | None = None,
        enabled: bool | None = None,
        max_attempts: int | None = None,
    ) -> JobSchedule:
        """Create the schedule `key` names, or change only the fields given."""
        schedule, _ = await self._upsert_schedule_created(
            key, name, payload, cron=cron, every=every, timezone=timezone, enabled=enabled,
            max_attempts=max_attempts,
        )  # fmt: skip
        return schedule

    async def _upsert_schedule_created(
        self, key: str, name: str, payload: Any = None, **fields: Any
    ) -> tuple[JobSchedule, bool]:
        """`upsert_schedule`, also telling whether the schedule was created (HTTP 201, which
        the HTTP layer alone answers)."""
        await self._ready()
        return await self.schedules.upsert(key, name, payload, **fields)

    async def get_schedule(self, schedule_id: str) -> JobSchedule | None:
        await self._ready()
        return await self.schedules.get("id", schedule_id)

    async def get_schedule_by_key(self, key: str) -> JobSchedule | None:
        await self._ready()
        return await self.schedules.get("key", key)

    async def update_schedule(
        self, schedule_id: str, **patch: Unpack[SchedulePatch]
    ) -> JobSchedule | None:
        await self._ready()
        return await self.schedules.update("id", schedule_id, patch)

    async def update_schedule_by_key(
        self, key: str, **patch: Unpack[SchedulePatch]
    ) -> JobSchedule | None:
        await self._ready()
        return await self.schedules.update("key", key, patch)

    async def disable_schedule(self, schedule_id: str) -> JobSchedule | None:
        return await self.update_schedule(schedule_id, enabled=False)

    async def disable_schedule_by_key(self, key: str) -> JobSchedule | None:
        return await self.update_schedule_by_key(key, enabled=False)

    async def enable_schedule(self, schedule_id: str) -> JobSchedule | None:
        return await self.update_schedule(schedule_id, enabled=True)

    async def enable_schedule_by_key(self, key: str) -> JobSchedule | None:
        return await self.update_schedule_by_key(key, enabled=True)

    async def delete_schedule(self, schedule_id: str) -> bool:
        await self._ready()
        return await self.schedules.delete("id", schedule_id)

    async def delete_schedule_by_key(self, key: str) -> bool:
        await self._ready()
        return await self.schedules.delete("key", key)

    async def list_schedules(
        self,
        *,
        enabled: bool | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[JobSchedule]:
        await self._ready()
        return await self.schedules.list(enabled=enabled, name=name, limit=limit, cursor=cursor)
