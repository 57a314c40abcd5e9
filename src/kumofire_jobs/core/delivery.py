"""The delivery hook the jobs layer plugs into each run's coordinator.

On the actor's alarm (or its `arm`, for a run already due): mark the run `queued` (guarded)
and send the one message the queue carries; a run `create` inserted `queued` (the arm's note
says so) is only sent, the first time. A run that is finished, canceled or gone closes the
actor; one that is not due (a retry's later `scheduled_for`) re-arms it for then. A finished
flow child found here (its consumer died after its finish, before its lease was released)
settles its parent first: that consumer may have died before the parent's release, or before
its arm.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from kumofire_coordinator import Delivery, DeliveryAction

from .bindings import Queue
from .clock import Clock, now_ms
from .coordination import RESUME_PREFIX, read_placement
from .limits import Limits
from .log import get_logger
from .run_rows import QueuedRow
from .states import TERMINAL, RunStatus
from .store import RunStore

log = get_logger()

MESSAGE_VERSION = 1
_SEND_OPTIONS = {"contentType": "json"}
MATERIALIZE_AFTER = 0.005  # seconds after an occurrence's delivery
_RAN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED})


def run_message(run_id: str) -> dict[str, object]:
    return {"version": MESSAGE_VERSION, "kumofireJobRunId": run_id}


# Called after a schedule's occurrence is delivered: (schedule_id, run_id, nominal ms or
# None: the schedule's record of it).
OccurrenceDelivered = Callable[[str, str, int | None], Awaitable[object]]
# Called for a finished flow child whose coordinator delivers it again: (parent_id).
ChildFinished = Callable[[str], Awaitable[object]]
# Called for a `resume:` coordinator (not a run's): re-arm the next page of a resumed job.
ResumePage = Callable[[str], Awaitable[object]]


class QueueDeliveryHook:
    def __init__(
        self,
        store: RunStore,
        queue: Queue,
        clock: Clock,
        on_occurrence: OccurrenceDelivered | None = None,
        on_child_finished: ChildFinished | None = None,
        *,
        limits: Limits | None = None,
        on_resume_page: ResumePage | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._clock = clock
        self._on_occurrence = on_occurrence
        self._on_child_finished = on_child_finished
        self._limits = limits if limits is not None and limits.names is not None else None
        self._on_resume_page = on_resume_page

    async def deliver(self, key: str, delivery: int, note: str | None = None) -> Delivery:
        if key.startswith(RESUME_PREFIX) and self._on_resume_page is not None:
            await self._on_resume_page(key)  # raises on failure: the alarm is retried
            return Delivery(DeliveryAction.CLOSE)
        if note is not None:
            # Inserted `queued` by `create` (`arm_note`: `note` is its job, or a limited job's
            # placement) and due: nothing to write or read. Should it have been canceled
            # meanwhile, the message is harmless: its consumer finds it so and closes the
            # coordinator; and so is its place in line: when its turn comes, the limiter
            # finds its coordinator closed and passes the slot on.
            placement = read_placement(note)
            job = note if placement is None else placement.job
            if placement is not None and self._limits is not None:
                placed = {
                    "id": key, "name": job, "scheduled_for": placement.due,
                    "concurrency_key": placement.key, "priority": placement.priority,
                }  # fmt: skip
                parked = await self._limits.place(placed, now_ms(self._clock))
                if parked is not None:
                    return Delivery(DeliveryAction.DEFER, due_ms=parked)
            await self._queue.send(run_message(key), _SEND_OPTIONS)
            log.info("run.queued", run_id=key, job=job, attempt=0, delivery=delivery)
            return Delivery(DeliveryAction.SENT)
        now = now_ms(self._clock)
        first = delivery == 1
        sending: asyncio.Future[None] | None = None
        if first and self._limits is None:
            # The common case, a run's first delivery: the send goes out with the D1 write
            # (one round trip, not two). Should the run turn out finished or not yet due,
            # the message is harmless: its consumer is refused the lease. (In a runtime with
            # limited jobs the write comes first: it tells the job, and a limited run that
            # has to wait is not sent at all.)
            sending = asyncio.ensure_future(self._queue.send(run_message(key), _SEND_OPTIONS))
        try:
            queued = await self._store.mark_queued(key, now)
        finally:
            if sending is not None:
                await sending
        row: QueuedRow | None = queued
        if row is None:
            current = await self._store.get_row(key)
            if current is None:
                return Delivery(DeliveryAction.CLOSE)
            status = RunStatus(current["status"])
            if status in TERMINAL:
                parent_id = current["parent_id"]
                if parent_id is not None and self._on_child_finished is not None:
                    # Raises on failure: the alarm is retried, and this with it.
                    await self._on_child_finished(parent_id)
                if first and status in _RAN:
                    # Its consumer was faster than our D1 write: it was delivered all the same.
                    await self._occurrence_delivered(current, key)
                return Delivery(DeliveryAction.CLOSE)
            if status == RunStatus.SCHEDULED and current["scheduled_for"] > now:
                if first and current["attempt"] > 0:
                    # Its consumer was faster still: it ran, failed and waits for a retry.
                    await self._occurrence_delivered(current, key)
                return Delivery(DeliveryAction.DEFER, due_ms=current["scheduled_for"])
            # queued or running: a redelivery (lost message, or a holder that died), or a
            # first delivery whose consumer started before our D1 write landed.
            row = current
        parked = None if self._limits is None else await self._limits.place({**row, "id": key}, now)
        if parked is not None:
            # Its job's limiter put it in line: park until it is woken or handed over (the
            # fallback due time matters only if the limiter lost it). A schedule's occurrence
            # joined the line as it would have gone out: its next one is materialized now.
            if queued is not None or first:
                await self._occurrence_delivered(row, key)
            return Delivery(DeliveryAction.DEFER, due_ms=parked)
        if sending is None:
            await self._queue.send(run_message(key), _SEND_OPTIONS)
        log.info(
            "run.queued", run_id=key, job=row["name"], attempt=row["attempt"], delivery=delivery
        )
        if queued is not None or first:
            await self._occurrence_delivered(row, key)
        return Delivery(DeliveryAction.SENT)

    async def _occurrence_delivered(self, row: QueuedRow, key: str) -> None:
        """A schedule's pending occurrence went out: materialize the next one (guarded by
        the schedule's pending run id, so asking twice does it once). If that fails,
        reconciliation restores the schedule's missing next occurrence."""
        if not row["schedule_id"] or self._on_occurrence is None:
            return
        # Let the delivered occurrence start first: the next one is due a second or more
        # later, and its D1 batch and arm would otherwise compete with this one's lease and
        # `running` write (on one event loop here, at the one D1 database on Cloudflare).
        await self._clock.sleep_until(self._clock.now() + MATERIALIZE_AFTER)
        # The schedule's own record of the pending occurrence's nominal time (None), never
        # the run's `scheduled_for`: a retry rescheduled it, a promote moved it to now (the
        # next occurrence would then be the promoted one's own nominal time again).
        try:
            await self._on_occurrence(row["schedule_id"], key, None)
        except Exception as exc:
            log.error("schedule.advance_failed", run_id=key, error=str(exc))
