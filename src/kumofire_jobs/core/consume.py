"""Consume: take the lease, start the run in one guarded update, run the handler while the
lease is renewed in the background, record the one outcome of the attempt (with its history:
`history.py`, `journal.py`), release.

The D1 writes are fenced by the lease's token (`lease_token`): a consumer whose lease
expired and was granted to another cannot finalize, whatever it does afterwards.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from .attempt import RECORDED, Attempt
from .clock import Clock, now_ms
from .consumer_batch import SEAT, outcome_store
from .context import Handler, JobContext
from .coordination import Coordinators
from .errors import JobCanceledError, LeaseLostError, NonRetryableError
from .flows import FlowService
from .handoff import BATCH, CHAIN, Chain
from .handoff_writes import HandoffWrites, Releasing
from .history import describe_error, encode_result, error_detail
from .history_store import HistoryStore
from .journal import Journal, RunLogger
from .lease_keeper import LeaseKeeper
from .limits import Limits, Passed
from .log import get_logger
from .message import parse_message
from .models import ConsumeResult
from .options import JobPolicies
from .reconcile_reads import canceled_running_since
from .run_rows import RunRow, StartedRow, row_to_run
from .states import TERMINAL, AttemptOutcome, ConsumeOutcome, RunStatus
from .store import RunStore

__all__ = ["Consumer", "describe_error"]

log = get_logger()

# The folded writes a handed-over run records its outcome through (set by `_take_over`).
HANDED: ContextVar[HandoffWrites | None] = ContextVar("kumofire_handed_over", default=None)


class Consumer:
    def __init__(
        self,
        *,
        store: RunStore,
        coordinators: Coordinators,
        handlers: Mapping[str, Handler],
        policies: JobPolicies,
        lease_seconds: float,
        clock: Clock,
        flows: FlowService,
        limits: Limits | None = None,
    ) -> None:
        self._store = store
        self._flows = flows
        self._history = HistoryStore(store.db)
        self._coordinators = coordinators
        self._handlers = handlers
        self._policies = policies
        self._lease_ms = int(lease_seconds * 1000)
        self._clock = clock
        self._limits = limits
        self.running = 0  # handlers running now (the dev server says how many it waits for)
        # False once the process is stopping: a freed slot then wakes its next run through
        # the queue (delivered at the next start) instead of being run by this process.
        self.handing_over = True

    async def expire_slots(self, granted_before_ms: int) -> None:
        """The embedded runtime's start: free the limiter slots that runs canceled while they
        ran hold under leases of a process known gone (`Limits.expire_before`). A slot lives
        at most a lease past its last renewal, which came before the cancel (a renewal after
        it finds the run canceled and renews no slot): a cancel older than a lease holds
        none (twice that is read, a margin)."""
        if self._limits is None or self._limits.names is None:
            return
        since = granted_before_ms - 2 * self._lease_ms
        runs = await canceled_running_since(self._store.db, since, self._limits.names)
        if runs:
            await self._limits.expire_before(granted_before_ms, runs)

    async def consume(self, message: Any) -> ConsumeResult:
        run_id = parse_message(message)
        if self._limits is None or self._limits.names is None:
            return await self._consume(run_id)
        # A limited run that frees a slot may be handed the next waiter (see `_release`):
        # this call runs it, and so on, within the chain's budget.
        chain = Chain(self._clock.now(), budget=BATCH.get())
        reset = CHAIN.set(chain)
        try:
            return await self._consume(run_id)
        finally:
            CHAIN.reset(reset)
            await chain.drain()

    async def _take_over(self, passed: Passed) -> None:
        """Run a waiter the limiter handed over: it leased the run's coordinator for this
        consumer and holds the slot under the same token, so start it with the ordinary
        guarded start."""
        run_id, token = passed.run["run_id"], int(passed.run["token"])
        log.debug("run.handed_over", run_id=run_id, job=passed.job)
        assert self._limits is not None
        try:
            await self._run_handed(run_id, token)
        finally:
            self._limits.forget(run_id, token)

    async def _run_handed(self, run_id: str, token: int) -> None:
        writes = self._handoff_writes()
        if writes is None:
            started = await self._store.start(run_id, token, now_ms(self._clock))
        else:  # with the other chains' starts of this turn
            started = await writes.start(run_id, token)
        reset = HANDED.set(writes)  # its outcome, with the other chains' (`_record`)
        try:
            if started is None:
                await self._not_started(run_id, token)
            else:
                await self._execute(started, token)
        finally:
            HANDED.reset(reset)

    def _handoff_writes(self) -> HandoffWrites | None:
        """The queue batch's folded writes of handed-over runs (None outside a batch)."""
        budget = BATCH.get()
        if budget is None:
            return None
        if budget.writes is None:
            seat = SEAT.get()
            outcomes = None if seat is None else seat.batch.outcomes
            budget.writes = HandoffWrites(self._store, self._clock, outcomes)
        return budget.writes

    async def _consume(self, run_id: str) -> ConsumeResult:
        grant = await self._coordinators.lease(run_id, self._lease_ms)
        if not grant["granted"]:
            log.debug("run.ignored", run_id=run_id, reason=grant["reason"])
            return ConsumeResult(outcome=ConsumeOutcome.IGNORED, job_run_id=run_id)
        token = int(grant["token"])
        if self._limits is None:
            return await self._start(run_id, token)
        try:
            return await self._start(run_id, token)
        finally:
            self._limits.forget(run_id, token)

    async def _start(self, run_id: str, token: int) -> ConsumeResult:
        # In a runtime with limited jobs, their runs do not start here (`unless_jobs`): the
        # row read below tells the job, key and priority the limiter needs. Other runs start
        # in this one statement, as in a runtime without limits.
        limited = None if self._limits is None else self._limits.names
        seat = SEAT.get()
        if seat is None:
            row = await self._store.start(run_id, token, now_ms(self._clock), unless_jobs=limited)
        else:  # a message of a consumer batch: its runs start in one statement
            row = await seat.start(run_id, token, limited)
        if row is None:
            outcome = await self._not_started(run_id, token)
            return ConsumeResult(outcome=outcome, job_run_id=run_id)
        return ConsumeResult(outcome=await self._execute(row, token), job_run_id=run_id)

    async def _limited_start(self, row: RunRow, token: int) -> ConsumeOutcome | None:
        """A run of a limited job: ask its limiter for a slot, then start. A run told to wait
        is woken by the limiter through its coordinator: park that until then (the fallback
        due time only matters if the limiter lost the run). None: not started after all."""
        assert self._limits is not None
        run_id = row["id"]
        park = await self._limits.enter(row, token)
        if park is not None:
            await self._release(run_id, token, rearm_ms=now_ms(self._clock) + park)
            return ConsumeOutcome.IGNORED
        started = await self._store.start(run_id, token, now_ms(self._clock))
        return None if started is None else await self._execute(started, token)

    async def _not_started(self, run_id: str, token: int) -> ConsumeOutcome:
        """The guarded start matched nothing: learn why from the row, and act on it."""
        row = await self._store.get_row(run_id)
        if row is not None and self._limits is not None and self._limits.limits(row["name"]):
            outcome = await self._limited_start(row, token)
            if outcome is not None:
                return outcome
            row = await self._store.get_row(run_id)  # it did not start: learn why, as below
        now = now_ms(self._clock)
        if row is not None and row["status"] == RunStatus.RUNNING and row["lease_token"] == token:
            # Our own start landed, but its answer was lost (a retried D1 write): go on.
            started = await self._store.get_started_row(run_id)
            if started is not None and started["lease_token"] == token:
                return await self._execute(started, token)
        if row is None or RunStatus(row["status"]) in TERMINAL:
            if row is not None and row["parent_id"] is not None:
                # A finished flow child delivered again: the last try may have crashed
                # before its parent's release, or before the released parent was armed.
                await self._flows.settle(row["parent_id"], recovering=True)
            await self._release(run_id, token)  # closes the actor: nothing left to deliver
            return ConsumeOutcome.IGNORED
        if row["scheduled_for"] > now and row["status"] != RunStatus.WAITING:
            # A crash fell between a retry's D1 write and its re-arm: arm for the due time.
            # (Not a flow's parent still waiting, named by a stray message: its last
            # child's finish arms it.)
            await self._release(run_id, token, rearm_ms=row["scheduled_for"])
            return ConsumeOutcome.IGNORED
        if row["status"] == RunStatus.RUNNING and row["attempt"] >= row["max_attempts"]:
            error = f"attempt {row['attempt']} was cut off: its lease expired before it finished"
            failed = await self._store.fail_cut_off(run_id, token, now, error)
            if failed is not None and failed.parent_id is not None:
                await self._flows.settle(failed.parent_id)
            await self._release(run_id, token)
            if failed is not None:
                log.warning(
                    "run.failed", run_id=run_id, job=row["name"], attempt=row["attempt"],
                    outcome="failed", error=error,
                )  # fmt: skip
                return ConsumeOutcome.FAILED
        else:
            await self._release(run_id, token)
        return ConsumeOutcome.IGNORED

    async def _execute(self, row: StartedRow, token: int) -> ConsumeOutcome:
        run = row_to_run(row)
        journal = Journal(
            store=self._history, clock=self._clock, run_id=run.id, token=token,
            attempt=run.attempt, logs=row["logs"],
        )  # fmt: skip
        attempt = Attempt(
            run=run,
            token=token,
            log=log.bind(run_id=run.id, job=run.name, attempt=run.attempt),
            started=self._clock.now(),
            started_ms=row["started_at"] or now_ms(self._clock),
            attempts=row["attempts"],
            journal=journal,
            # Only a flow's parent reads its children: `child_count` is in the started row.
            children=await self._flows.children(run.id) if row["child_count"] else (),
        )
        attempt.log.info("run.started")
        handler = self._handlers.get(run.name)
        if handler is None:
            error = f"no handler is registered for job {run.name!r}"
            return await self._record(attempt, RunStatus.FAILED, error)

        runner = asyncio.current_task()
        if runner is None:  # a coroutine driven outside any task: give the handler its own
            return await asyncio.ensure_future(self._run_handler(attempt, handler))
        return await self._run_handler(attempt, handler)

    async def _run_handler(self, attempt: Attempt, handler: Handler) -> ConsumeOutcome:
        run = attempt.run
        keeper = LeaseKeeper(self._coordinators, self._clock, attempt, self._lease_ms, self._limits)
        journal = attempt.journal
        ctx = JobContext(
            job=run, heartbeat=keeper.renew, log=RunLogger(attempt.log, journal),
            progress=journal.set_progress, children=attempt.children,
        )  # fmt: skip
        runner = asyncio.current_task()
        assert runner is not None
        # The handler runs in this task (no task of its own: most handlers are short), and
        # the keeper cancels this task if the run is canceled or the lease lost meanwhile,
        # or at the job's timeout (the job's when the run was created).
        timeout = run.timeout
        keeper.start(runner, None if timeout is None else attempt.started + timeout)
        self.running += 1
        try:
            try:
                result = handler(ctx)
                if not inspect.isawaitable(result):
                    # Its side effect has run: a retry would repeat it (the runtime refuses a
                    # handler that is not async, so only an odd callable gets here).
                    raise NonRetryableError(
                        f"the handler returned {type(result).__name__}, not an awaitable: a "
                        "handler must be async def"
                    )
                result_json = encode_result(await result)  # NonRetryableError: not kept
            finally:
                # The handler has ended: before any outcome is written, so neither the
                # timeout nor a renewal's answer can stop this task while it writes one.
                self.running -= 1
                keeper.stop()  # not awaited: once `finished`, a renewal under way touches nothing
                await journal.close()  # what is left goes with the outcome
        except asyncio.CancelledError as exc:
            if keeper.stopped_runner:
                if runner.uncancel() > 0:
                    raise  # this consumer itself is being stopped as well
                return await self._stopped(attempt, keeper.ended, timeout)
            if runner.cancelling() > 0:
                raise  # this consumer itself is being stopped
            # Nobody cancelled this task: the handler raised it (a task of its own cancelled,
            # say). An error like any other, not a stop that waits for the lease to expire.
            return await self._failed(attempt, exc)
        except BaseException as exc:  # sys.exit(), GeneratorExit...: its attempt's end only
            if isinstance(exc, KeyboardInterrupt):
                raise  # the operator's, not the handler's
            if keeper.stopped_runner:
                # The handler raised another error in place of the CancelledError that stopped
                # it (a `finally` whose cleanup failed, say): the stop counts, as when it
                # returns; and this task is not left cancelling.
                if runner.uncancel() > 0:
                    raise asyncio.CancelledError from exc  # this consumer is being stopped too
                return await self._stopped(attempt, keeper.ended, timeout)
            if isinstance(exc, JobCanceledError):
                return await self._ended(attempt, "canceled")
            if isinstance(exc, LeaseLostError):
                return await self._ended(attempt, keeper.ended or "lost")
            if isinstance(exc, NonRetryableError):
                return await self._record(
                    attempt, RunStatus.FAILED, describe_error(exc), detail=error_detail(exc)
                )
            return await self._failed(attempt, exc)
        if keeper.stopped_runner:
            # The handler caught the CancelledError that stopped it and returned: its result
            # does not count, the stop does (a timeout is a timed-out attempt).
            if runner.uncancel() > 0:
                raise asyncio.CancelledError  # this consumer itself is being stopped as well
            return await self._stopped(attempt, keeper.ended, timeout)
        return await self._record(attempt, RunStatus.SUCCEEDED, result=result_json)

    async def _stopped(
        self, attempt: Attempt, ended: str | None, limit: float | None
    ) -> ConsumeOutcome:
        """The lease keeper stopped the handler: its job's timeout (`limit` seconds), a cancel,
        or the lease lost."""
        if ended == "timed_out":
            return await self._timed_out(attempt, limit)
        return await self._ended(attempt, ended or "lost")

    async def _failed(self, attempt: Attempt, exc: BaseException) -> ConsumeOutcome:
        """The handler raised `exc`: retried while attempts remain."""
        retry = attempt.run.attempt < attempt.run.max_attempts
        status = RunStatus.SCHEDULED if retry else RunStatus.FAILED
        return await self._record(attempt, status, describe_error(exc), detail=error_detail(exc))

    # --- outcomes ---------------------------------------------------------------------------

    async def _timed_out(self, attempt: Attempt, limit: float | None) -> ConsumeOutcome:
        """The job's timeout (`limit` seconds) stopped the handler: a failed attempt, retried
        under the job's policy while attempts remain."""
        error = f"TimeoutError: the attempt ran longer than the job's timeout of {limit:g} s"
        retry = attempt.run.attempt < attempt.run.max_attempts
        attempt.log.warning("run.timed_out", outcome="timed_out", timeout=limit)
        status = RunStatus.SCHEDULED if retry else RunStatus.FAILED
        await self._record(attempt, status, error, recorded=AttemptOutcome.TIMED_OUT)
        return ConsumeOutcome.TIMED_OUT

    async def _record(
        self, attempt: Attempt, status: RunStatus, error: str | None = None, *,
        detail: str | None = None, result: str | None = None,
        recorded: AttemptOutcome | None = None,
    ) -> ConsumeOutcome:  # fmt: skip
        """Record the attempt's one outcome: `succeeded` (with its `result`), `failed`, or
        `scheduled` again (a retry after the policy's delay), and in the same statement the
        attempt in the run's history (as `recorded`, else as the status says; its error the
        `detail`, the traceback, else `error`), its log lines and progress. The write is
        fenced by the lease's token; if it matches nothing and no earlier try of it landed,
        the run was canceled or the lease lost meanwhile. Then release the lease (re-arming
        the actor for a retry) and log."""
        run, token = attempt.run, attempt.token
        now = now_ms(self._clock)
        await attempt.journal.close()
        history = attempt.history(recorded or RECORDED[status], detail or error, now, result)
        rearm_ms: int | None = None
        # The handler has ended, so its slot goes back now, beside the outcome's write (the
        # next run of a limited job starts one round trip sooner).
        leaving = self._leave_early(run.id, token)
        # In a consumer batch, written with the others'; a handed-over run's, with the other
        # chains' of its queue batch.
        handed = HANDED.get()
        outcomes = outcome_store(self._store) if handed is None else handed.outcomes
        try:
            if status is RunStatus.SCHEDULED:
                rearm_ms = now + int(self._policies.retry(run.name).delay(run.attempt) * 1000)
                written = await outcomes.reschedule(run.id, token, now, rearm_ms, error, history)
            else:
                written = await outcomes.finish(run.id, token, status, now, error, history)
        finally:
            if leaving is not None:
                await leaving
        if not written and not await self._landed(attempt, status):
            return await self._superseded(attempt)
        if run.parent_id is not None and status is not RunStatus.SCHEDULED:
            # A flow's child finished: release its parent if it was the last. Before the
            # lease goes, so after a crash here the child's coordinator delivers it again
            # and the delivery (or `_not_started`) settles the parent then.
            await self._flows.settle(run.parent_id)
        await self._release(run.id, token, rearm_ms=rearm_ms)
        if status is RunStatus.SUCCEEDED:
            attempt.log.info(
                "run.succeeded", outcome="succeeded", duration_ms=attempt.duration_ms(self._clock)
            )
            return ConsumeOutcome.SUCCEEDED
        if status is RunStatus.FAILED:
            attempt.log.warning(
                "run.failed", outcome="failed", error=error,
                duration_ms=attempt.duration_ms(self._clock),
            )  # fmt: skip
            return ConsumeOutcome.FAILED
        assert rearm_ms is not None
        attempt.log.info(
            "run.retried", outcome="retried", error=error, retry_in_ms=rearm_ms - now,
            duration_ms=attempt.duration_ms(self._clock),
        )  # fmt: skip
        return ConsumeOutcome.RETRIED

    async def _ended(self, attempt: Attempt, why: str) -> ConsumeOutcome:
        """The handler was stopped: the run was canceled, or the lease went to another."""
        await attempt.journal.close()
        if why == "canceled":
            await attempt.journal.save_closed()  # its last lines: the cancel wrote the outcome
            await self._release(attempt.run.id, attempt.token)
            attempt.log.info(
                "run.canceled", outcome="canceled", duration_ms=attempt.duration_ms(self._clock)
            )
            return ConsumeOutcome.CANCELED
        if why == "slot_lost":
            # The lease is still ours but the job's limiter gave the slot away (it expired
            # while this consumer stalled): deliver again now, to wait in line for a slot.
            # Its lines are kept; the next start records the attempt as interrupted.
            await attempt.journal.save_closed()
            await self._release(attempt.run.id, attempt.token, rearm_ms=now_ms(self._clock))
        attempt.log.warning(
            "run.lease_lost", outcome="ignored", duration_ms=attempt.duration_ms(self._clock)
        )
        return ConsumeOutcome.IGNORED

    async def _landed(self, attempt: Attempt, status: RunStatus) -> bool:
        """Whether a fenced write that matched nothing had in fact landed on an earlier try
        (a D1 call retried after its answer was lost): the row shows our token and status."""
        row = await self._store.get_row(attempt.run.id)
        return row is not None and row["lease_token"] == attempt.token and row["status"] == status

    async def _superseded(self, attempt: Attempt) -> ConsumeOutcome:
        """The fenced write matched nothing: canceled meanwhile, or no longer our lease."""
        current = await self._store.get_row(attempt.run.id)
        if current is not None and current["status"] == RunStatus.CANCELED:
            return await self._ended(attempt, "canceled")
        return await self._ended(attempt, "lost")

    async def _release(self, run_id: str, token: int, rearm_ms: int | None = None) -> None:
        if self._limits is None or not self._limits.holds(run_id, token):
            await self._release_lease(run_id, token, rearm_ms)
            return
        # The slot and the lease at once (two objects; neither waits for the other). Within
        # the chain's budget the limiter hands this call the run the slot goes to (see
        # `_leave`) instead of waking it.
        await asyncio.gather(
            self._leave(run_id, token), self._release_lease(run_id, token, rearm_ms)
        )

    def _leave_early(self, run_id: str, token: int) -> asyncio.Future[None] | None:
        """Release the run's slot in a task of its own, beside the outcome's write; the
        future returned is done once the limiter answered. The run the slot is handed to
        (`_leave`) then runs in that same task, which the chain awaits."""
        if self._limits is None or not self._limits.holds(run_id, token):
            return None
        chain = CHAIN.get()
        if chain is None:
            return asyncio.ensure_future(self._leave(run_id, token))
        released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Counted as in flight from now, in the turn the handler ended, not once its task
        # runs: what waits for the batch's releases (`HandoffWrites`) sees it at once.
        handoff = self.handing_over and chain.open(self._clock.now())
        writes = self._handoff_writes() if handoff else None
        releasing = None if writes is None else writes.releasing()
        task = asyncio.ensure_future(self._leave(run_id, token, released, handoff, releasing))

        def ended(_: object) -> None:  # (also if the task is cancelled before it ran)
            if releasing is not None:
                releasing.end()
            _resolve(released)  # the outcome's writer waits for this

        task.add_done_callback(ended)
        chain.hold(task)
        return released

    async def _leave(
        self, run_id: str, token: int, released: asyncio.Future[None] | None = None,
        handoff: bool | None = None, releasing: Releasing | None = None,
    ) -> None:  # fmt: skip
        """Release the run's slot; within the chain's budget (`handoff`, decided by the
        caller or here), take the run it goes to: in this task once `released` is told (no
        task to start: a loop turn sooner), else in a task of its own."""
        assert self._limits is not None
        chain = CHAIN.get()
        if handoff is None:
            handoff = chain is not None and self.handing_over and chain.open(self._clock.now())
            writes = self._handoff_writes() if handoff else None
            releasing = None if writes is None else writes.releasing()
        try:
            if releasing is None:
                passed = await self._limits.leave(run_id, token, handoff=handoff)
            else:  # the batch's hand-over starts wait for it (`HandoffWrites.releasing`), and
                # its chains' releases of this turn go in one request (`handoff_releases.py`)
                passed = await self._limits.leave(run_id, token, handoff=True, batch=BATCH.get())
        finally:
            if releasing is not None:
                releasing.end()
            if released is not None:
                _resolve(released)
        if passed is None:
            return
        assert chain is not None
        if released is None:
            chain.add(asyncio.ensure_future(self._take_over(passed)))
            return
        chain.add(None)
        await self._take_over(passed)

    async def _release_lease(self, run_id: str, token: int, rearm_ms: int | None) -> None:
        # D1 already holds the outcome; if the actor cannot be told now, its lease expires and
        # its alarm delivers again, and the next consumer reads the outcome and closes it.
        try:
            writes = self._batch_writes()
            if writes is None:
                await self._coordinators.release(run_id, token, rearm_ms)
            else:  # in the turn of the batch's next flush, while its releases are in flight
                await writes.after_releases(
                    lambda: self._coordinators.release_now(run_id, token, rearm_ms)
                )
        except Exception as exc:
            log.warning("lease.release_failed", run_id=run_id, error=describe_error(exc))

    def _batch_writes(self) -> HandoffWrites | None:
        """The queue batch's folded writes of handed-over runs, if it has any by now (only in
        a runtime with limited jobs)."""
        if self._limits is None or self._limits.names is None:
            return None
        budget = BATCH.get()
        return None if budget is None else budget.writes


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
