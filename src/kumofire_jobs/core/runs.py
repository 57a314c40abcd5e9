"""Runs: create, read, cancel, retry by hand, and reconcile.

The service the jobs API (`jobs.Jobs`) delegates runs to. Its collaborators come in through
its constructor (the runtime assembles it): the runs' SQL, their coordinators, the clock,
ids, the handlers (the job names known), the default attempts, the schedules (canceling a
schedule's pending occurrence moves the schedule on) and the reconciliation settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence

from . import validation
from .clock import Clock, now_ms
from .context import Handler
from .coordination import Coordinators, arm_note
from .created_placements import ParkedArms, placed_together
from .errors import ConflictError, ValidationError
from .flows import FlowService
from .ids import IdFactory
from .limits import Limits, limits_message
from .log import get_logger
from .models import CreatedRun, CreateRequest, DispatchResult, JobRun, Page
from .options import JobPolicies
from .reconcile import ParkedProbe, reconcile, reconcile_unfinished
from .run_rows import NewRun
from .schedules import ScheduleService
from .states import RunStatus
from .store import RunStore

log = get_logger()

# Passes of create_many's insert: a second is needed only when a dedupe_key's holder was
# pruned between the insert and the lookup; a third would need that to happen again.
_INSERT_PASSES = 3


class RunService:
    def __init__(
        self,
        *,
        store: RunStore,
        coordinators: Coordinators,
        clock: Clock,
        ids: IdFactory,
        handlers: Mapping[str, Handler],
        policies: JobPolicies,
        schedules: ScheduleService,
        flows: FlowService,
        reconcile_grace_seconds: float,
        retention_seconds: float | None,
        parked: ParkedProbe | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._store = store
        self.store = store  # the bulk operations read their candidates through it
        self._coordinators = coordinators
        self._clock = clock
        self._ids = ids
        self._handlers = handlers
        self._policies = policies
        self._schedules = schedules
        self.flows = flows
        self._grace_seconds = reconcile_grace_seconds
        self._retention_seconds = retention_seconds
        self._parked = parked  # which runs wait in a limiter's line (None: no limited job)
        self._creating = 0  # create_many calls in progress
        self._limits = limits  # places a create_many's limited runs (None: no limited job)
        self._placing: set[asyncio.Future[list[None]]] = set()  # placements not awaited

    # --- create -----------------------------------------------------------------------------

    def new_run(self, request: CreateRequest, now: int) -> NewRun:
        """A create request checked (ValidationError, UnknownJobError) as a run to insert."""
        name = validation.job_name(request.name, self._handlers)
        dedupe_key = validation.dedupe_key(request.dedupe_key)
        scheduled_for = validation.due_ms(request.run_at, request.delay, now)
        # Due already: inserted `queued`, and its coordinator, told so (`arm_note`), sends it
        # at once without a D1 write of its own; a limited job's run is placed in its
        # limiter's line by what the note carries, without reading the row.
        due = scheduled_for <= now
        limited = limits_message(self._policies.of(name)) is not None
        return NewRun(
            id=self._ids.run_id(now),
            name=name,
            payload=validation.payload(request.payload),
            max_attempts=validation.max_attempts(
                request.max_attempts, self._policies.max_attempts(name)
            ),
            scheduled_for=scheduled_for,
            status=RunStatus.QUEUED.value if due else RunStatus.SCHEDULED.value,
            created_at=now,
            dedupe_key=dedupe_key,
            priority=validation.priority(request.priority),
            concurrency_key=validation.concurrency_key(request.concurrency_key),
            dedupe_expires_at=validation.dedupe_expires_ms(request.dedupe_ttl, dedupe_key, now),
            timeout=self._policies.timeout(name),
            limited=limited,
        )

    async def create_many(self, requests: Sequence[CreateRequest]) -> list[CreatedRun]:
        """Create runs (the caller checked there are at most `validation.MAX_BATCH`) in one
        D1 transaction, then arm their coordinators."""
        now = now_ms(self._clock)
        runs = [self.new_run(request, now) for request in requests]
        keys = [run.dedupe_key for run in runs if run.dedupe_key is not None]
        if len(keys) != len(set(keys)):
            raise ValidationError("two runs in one call share a dedupe_key")
        created: list[CreatedRun | None] = [None] * len(runs)
        to_arm: list[NewRun] = []
        self._creating += 1
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
            try:
                await self._arm(to_arm, now, concurrent=self._creating > 1)
            finally:
                self._creating -= 1
        return [c for c in created if c is not None]

    async def _arm(self, runs: list[NewRun], now: int, *, concurrent: bool) -> None:
        """Arm the runs inserted; a limited job's runs its limits cannot all start at once
        are parked and placed in its limiter's line in one request (`created_placements`)."""
        together = placed_together(runs, self._limits)
        placed = {run.id for group in together.values() for run in group}
        # Those armed alone first: their placements reach the limiter before the batch's.
        sent = self._coordinators.send_created(
            [(run.id, run.scheduled_for, run.name, arm_note(run))
             for run in runs if run.id not in placed]
        )  # fmt: skip
        placing = [
            ParkedArms(self._coordinators, job, group, now) for job, group in together.items()
        ]
        await self._coordinators.settle_created(sent, concurrent=concurrent)
        if not placing or self._limits is None:
            return
        limits = self._limits
        done = asyncio.gather(*(arms.place(limits) for arms in placing))
        if self._coordinators.waits_for_arms or concurrent:
            await done
        else:  # as the arms' answers: the lone create does not wait (see `arm_all_created`)
            self._placing.add(done)
            done.add_done_callback(self._placing.discard)

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
            existing = await self._store.id_by_dedupe_key(run.dedupe_key or "", run.created_at)
            if existing is None:  # pruned, or its hold ended (dedupe_ttl): insert it again
                again.append((index, run))
            else:
                created[index] = CreatedRun(kumofire_job_run_id=existing, deduplicated=True)
        return again

    # --- read -------------------------------------------------------------------------------

    async def get(self, run_id: str) -> JobRun | None:
        return await self._store.get(run_id)

    async def list(
        self,
        *,
        status: RunStatus | None,
        name: str | None,
        schedule_id: str | None,
        parent_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[JobRun]:
        return await self._store.page(
            status=status,
            name=name,
            schedule_id=schedule_id,
            parent_id=parent_id,
            limit=validation.limit(limit),
            cursor=cursor,
        )

    async def counts(self, *, name: str | None) -> dict[str, int]:
        return await self._store.counts(name=name)

    # --- change -----------------------------------------------------------------------------

    async def cancel(self, run_id: str) -> JobRun | None:
        """Cancel an unfinished run at once; a finished run comes back unchanged."""
        run = await self.cancel_unfinished(run_id)
        return await self._store.get(run_id) if run is None else run

    async def cancel_unfinished(self, run_id: str) -> JobRun | None:
        """Cancel the run if it is unfinished: the run canceled, or None if it was not."""
        canceled = await self.cancel_with_children(run_id)
        return next((run for run in canceled if run.id == run_id), None)

    async def cancel_with_children(self, run_id: str) -> Sequence[JobRun]:
        """Cancel the run if it is unfinished: every run this call canceled (none if it was
        not). A flow's parent takes its unfinished children with it (in the same
        statement); a flow's child may release its parent."""
        canceled = await self._store.cancel(run_id, now_ms(self._clock))
        await asyncio.gather(*(self._canceled(run) for run in canceled))
        run = next((run for run in canceled if run.id == run_id), None)
        if run is not None and run.parent_id is not None:
            await self.flows.settle_logged(run.parent_id)
        return canceled

    async def _canceled(self, run: JobRun) -> None:
        """Tell the actors of a run D1 now holds as canceled."""
        log.info("run.canceled", run_id=run.id, job=run.name, attempt=run.attempt)
        await self._coordinators.cancel_canceled(run.id)
        if limits_message(self._policies.of(run.name)) is not None:
            await self._coordinators.forget_waiting(run.name, run.id)
        if run.schedule_id is not None:
            # Canceling a schedule's pending occurrence moves the schedule on to the next; one
            # that had started (its materialization lost) was delivered, and counts.
            await self._schedules.advance(
                run.schedule_id, run.id, delivered=run.attempt > 0, nominal_ms=None
            )

    async def retry(self, run_id: str) -> JobRun | None:
        """Schedule a failed or canceled run again now, with one more attempt allowed (a
        flow's parent with a child unfinished waits for its children again: not armed, the
        last child's finish releases it). A crash between the write and the arm: the run is
        overdue with its coordinator closed, and reconciliation arms it."""
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
        if run.status is RunStatus.SCHEDULED:  # (a flow's parent may wait for its children)
            await self._coordinators.arm(run.id, now)
        return run

    async def promote(self, run_id: str) -> JobRun | None:
        """Make a `scheduled` run due now and re-arm its coordinator; ConflictError for any
        other status, None for an unknown run. A crash between the two leaves the actor's
        alarm at the old due time: the run starts then, as it would have."""
        now = now_ms(self._clock)
        run = await self._store.promote(run_id, now)
        if run is None:
            current = await self._store.get(run_id)
            if current is None:
                return None
            raise ConflictError(
                f"run {run_id} is {current.status.value}: only a scheduled run can be promoted"
            )
        log.info("run.promoted", run_id=run.id, job=run.name, attempt=run.attempt)
        await self._coordinators.arm(run.id, now)
        return run

    async def delete(self, run_id: str) -> bool:
        """Delete a finished run; False for an unknown run, ConflictError for an unfinished
        one (its coordinator still holds it: cancel it first)."""
        if await self._store.delete(run_id):
            log.info("run.deleted", run_id=run_id)
            return True
        current = await self._store.get(run_id)
        if current is None:
            return False
        raise ConflictError(
            f"run {run_id} is {current.status.value}: only a finished run can be deleted"
        )

    # --- reconciliation ---------------------------------------------------------------------

    async def reconcile(self, limit: int) -> DispatchResult:
        """Re-arm runs whose coordinator lost them (overdue by the grace), delete finished
        runs past the retention age."""
        return await reconcile(
            store=self._store,
            coordinators=self._coordinators,
            clock=self._clock,
            limit=limit,
            grace_seconds=self._grace_seconds,
            retention_seconds=self._retention_seconds,
            retention_overrides=self._policies.retention_overrides(),
            parked=self._parked,
        )

    async def reconcile_unfinished(
        self, *, expire_leases_before: int | None = None, held: Collection[str] = ()
    ) -> DispatchResult:
        """Reconciliation at the start of a process that alone owns its bindings."""
        return await reconcile_unfinished(
            store=self._store,
            coordinators=self._coordinators,
            expire_leases_before=expire_leases_before,
            held=held,
        )
