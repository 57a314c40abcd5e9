"""The jobs API of a bound runtime: what `runtime.bind(resources)` returns.

The HTTP API, the RPC entrypoint and the CLI call exactly these methods. `Jobs` is a facade:
it checks the schema once (`schema_gate.SchemaGate`) and hands each call to the service that
does the work (`runs.RunService`, `schedules.ScheduleService`, `consume.Consumer`), which the
runtime assembles with their collaborators.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import validation
from .answers import BeforeAnswer, answering, answers_outside
from .bulk import bulk
from .consume import Consumer
from .errors import ValidationError
from .history_store import HistoryStore
from .job_control import JobService
from .metrics import MetricsSnapshot
from .migrations import schema_version
from .models import (
    BulkResult,
    ConsumeResult,
    CreatedFlow,
    CreatedRun,
    CreateRequest,
    DispatchResult,
    JobInfo,
    JobRun,
    JobSchedule,
    LogLine,
    Page,
    RunAttempt,
)
from .runs import RunService
from .schedules import ScheduleService
from .schema_gate import SchemaGate
from .states import RunStatus

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .models import SchedulePatch


# Every public call answers a caller outside the runtime, wherever it is made (a handler's
# `create` too): it calls `before_answer` before it returns (`answers.py`). The consumer's
# and the cron's calls are the runtime's own work.
@answers_outside("consume", "dispatch", "dispatch_at_start")
class Jobs:
    def __init__(
        self,
        *,
        runs: RunService,
        schedules: ScheduleService,
        consumer: Consumer,
        schema: SchemaGate,
        job_service: JobService,
        before_answer: BeforeAnswer | None = None,
    ) -> None:
        self._before_answer = before_answer
        self.job_service = job_service
        self.runs = runs
        self.schedules = schedules
        self._consumer = consumer
        self._schema = schema
        self._history = HistoryStore(runs.store.db)

    async def _ready(self) -> None:
        await self._schema.ensure()

    async def schema_version(self) -> int:
        """The schema version the database is at (for health checks; never fails on an old
        schema)."""
        return await schema_version(self._schema.db)

    async def metrics(self) -> MetricsSnapshot:
        """What `GET /v1/metrics` reports: one D1 batch of four reads (`core/metrics.py`)."""
        await self._ready()
        return await self.job_service.metrics()

    # --- create -----------------------------------------------------------------------------

    async def create(
        self,
        name: str,
        payload: Any = None,
        *,
        run_at: datetime | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        dedupe_key: str | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        dedupe_ttl: float | None = None,
    ) -> CreatedRun:
        request = CreateRequest(
            name=name, payload=payload, run_at=run_at, delay=delay, max_attempts=max_attempts,
            dedupe_key=dedupe_key, priority=priority, concurrency_key=concurrency_key,
            dedupe_ttl=dedupe_ttl,
        )  # fmt: skip
        return (await self.create_many([request]))[0]

    async def create_many(self, requests: Sequence[CreateRequest]) -> list[CreatedRun]:
        """Create up to 100 runs in one D1 transaction, then arm their coordinators."""
        if len(requests) > validation.MAX_BATCH:
            raise ValidationError(f"at most {validation.MAX_BATCH} runs per call")
        await self._ready()
        return await self.runs.create_many(requests)

    async def create_flow(
        self, parent: CreateRequest, children: Sequence[CreateRequest]
    ) -> CreatedFlow:
        """A parent run that waits (`waiting`) until each of its 1 to 100 children has
        finished, then is scheduled at its own time (or now); all in one D1 transaction."""
        await self._ready()
        return await self.runs.flows.create(parent, children, self.runs.new_run)

    # --- read -------------------------------------------------------------------------------

    async def get(self, run_id: str) -> JobRun | None:
        await self._ready()
        return await self.runs.get(run_id)

    async def attempts(self, run_id: str) -> list[RunAttempt] | None:
        """The run's finished attempts, oldest first; None for an unknown run."""
        await self._ready()
        return await self._history.attempts(run_id)

    async def logs(self, run_id: str) -> list[LogLine] | None:
        """What the run's handler logged through `ctx.log` (info and above; the last 200
        lines, at most 64 KiB), oldest first; None for an unknown run."""
        await self._ready()
        return await self._history.logs(run_id)

    # --- jobs ---------------------------------------------------------------------------------

    async def list_jobs(self) -> list[JobInfo]:
        """Every registered job (handlers and remote routes): paused, options, counts."""
        await self._ready()
        return await self.job_service.list()

    async def get_job(self, name: str) -> JobInfo | None:
        await self._ready()
        return await self.job_service.get(name)

    async def pause_job(self, name: str) -> JobInfo | None:
        """Start no run of the job until it is resumed (kept in D1); running runs go on."""
        await self._ready()
        return await self.job_service.pause(name)

    async def resume_job(self, name: str) -> JobInfo | None:
        """Start the job's runs again; its waiting runs are re-armed in priority order."""
        await self._ready()
        return await self.job_service.resume(name)

    async def list(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str | None = None,
        schedule_id: str | None = None,
        parent_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[JobRun]:
        if status is not None:
            status = _status(status)
        await self._ready()
        return await self.runs.list(
            status=status, name=name, schedule_id=schedule_id, parent_id=parent_id,
            limit=limit, cursor=cursor,
        )  # fmt: skip

    async def counts(self, *, name: str | None = None) -> dict[str, int]:
        await self._ready()
        return await self.runs.counts(name=name)

    # --- change -----------------------------------------------------------------------------

    async def cancel(self, run_id: str) -> JobRun | None:
        """Cancel an unfinished run at once; a finished run comes back unchanged."""
        await self._ready()
        return await self.runs.cancel(run_id)

    async def retry(self, run_id: str) -> JobRun | None:
        """Schedule a failed or canceled run again now, with one more attempt allowed."""
        await self._ready()
        return await self.runs.retry(run_id)

    async def promote(self, run_id: str) -> JobRun | None:
        """Make a `scheduled` run due now (ConflictError for any other status)."""
        await self._ready()
        return await self.runs.promote(run_id)

    async def delete(self, run_id: str) -> bool:
        """Delete a finished run (ConflictError for an unfinished one); False if unknown."""
        await self._ready()
        return await self.runs.delete(run_id)

    async def cancel_many(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str | None = None,
        schedule_id: str | None = None,
        created_before: datetime | None = None,
        limit: int = 1000,
    ) -> BulkResult:
        """Cancel at most `limit` unfinished runs matching the filter (at least one field)."""
        return await self._bulk("cancel", status, name, schedule_id, created_before, limit)

    async def retry_many(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str | None = None,
        schedule_id: str | None = None,
        created_before: datetime | None = None,
        limit: int = 1000,
    ) -> BulkResult:
        """Retry at most `limit` failed or canceled runs matching the filter."""
        return await self._bulk("retry", status, name, schedule_id, created_before, limit)

    async def delete_many(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str | None = None,
        schedule_id: str | None = None,
        created_before: datetime | None = None,
        limit: int = 1000,
    ) -> BulkResult:
        """Delete at most `limit` finished runs matching the filter."""
        return await self._bulk("delete", status, name, schedule_id, created_before, limit)

    async def _bulk(
        self, action: str, status: Any, name: Any, schedule_id: Any, created_before: Any,
        limit: Any,
    ) -> BulkResult:  # fmt: skip
        await self._ready()
        return await bulk(
            action, runs=self.runs, store=self.runs.store, status=status, name=name,
            schedule_id=schedule_id, created_before=created_before, limit=limit,
        )  # fmt: skip

    # --- the queue consumer and the cron trigger --------------------------------------------

    async def consume(self, message: Any) -> ConsumeResult:
        """One queue message: lease, start, run the handler, record the outcome."""
        await self._ready()
        return await self._consumer.consume(message)

    async def dispatch(self, limit: int = 100) -> DispatchResult:
        """Reconciliation: re-arm runs whose coordinator lost them, restore schedules whose
        next occurrence is missing, and delete finished runs past the retention age."""
        await self._ready()
        result = await self.runs.reconcile(limit)
        result.schedules_restored = await self.schedules.restore(limit)
        result.flows_released = await self.runs.flows.release_waiting(limit)
        return result

    async def dispatch_at_start(
        self,
        limit: int = 100,
        *,
        expire_leases_before: int | None = None,
        held: Collection[str] = (),
    ) -> DispatchResult:
        """Reconciliation for a process that alone owns its bindings, at its start (the
        embedded runtime): no grace and every unfinished run, whatever its due time, since
        nothing is in flight; then schedules whose next occurrence is missing. With
        `expire_leases_before` (this process's start, epoch ms; only where a lock proves
        every earlier process gone), the leases granted before it end at once, so the runs a
        crash cut off go again now instead of when their leases would have run out, and the
        limiter slots those leases held for runs canceled meanwhile are freed. `held`: the
        run ids whose message the queue holds (a `queued` run among them whose actor holds
        nothing is not sent again: see `reconcile_unfinished`)."""
        await self._ready()
        result = await self.runs.reconcile_unfinished(
            expire_leases_before=expire_leases_before, held=held
        )
        if expire_leases_before is not None:
            await self._consumer.expire_slots(expire_leases_before)
        result.schedules_restored = await self.schedules.restore(limit, grace=False)
        result.flows_released = await self.runs.flows.release_waiting(limit)
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
        priority: int | None = None,
        concurrency_key: str | None = None,
        limit: int | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
    ) -> JobSchedule:
        await self._ready()
        return await self.schedules.create(
            name, payload, cron=cron, every=every, key=key, timezone=timezone,
            enabled=enabled, max_attempts=max_attempts, priority=priority,
            concurrency_key=concurrency_key, limit=limit, start_at=start_at, end_at=end_at,
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
        priority: int | None = None,
        concurrency_key: str | None = None,
        limit: int | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
    ) -> JobSchedule:
        """Create the schedule `key` names, or change only the fields given."""
        schedule, _ = await self._upsert_schedule_created(
            key, name, payload, cron=cron, every=every, timezone=timezone, enabled=enabled,
            max_attempts=max_attempts, priority=priority, concurrency_key=concurrency_key,
            limit=limit, start_at=start_at, end_at=end_at,
        )  # fmt: skip
        return schedule

    @answering  # the HTTP layer's upsert (its answer leaves for a caller outside, too)
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


def _status(value: RunStatus | str) -> RunStatus:
    try:
        return RunStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in RunStatus)
        raise ValidationError(f"status must be one of: {known}") from None
