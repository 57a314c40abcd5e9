"""The delivery hook the jobs layer plugs into each run's coordinator.

On the actor's alarm: mark the run `queued` (guarded) and send the one message the queue
carries. A run that is finished, canceled or gone closes the actor; one that is not due
(a retry's later `scheduled_for`) re-arms it for then.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from kumofire_coordinator import Delivery, DeliveryAction

from .bindings import Queue
from .clock import Clock, now_ms
from .log import get_logger
from .states import TERMINAL, RunStatus
from .store import RunStore

log = get_logger()

MESSAGE_VERSION = 1
_SEND_OPTIONS = {"contentType": "json"}


def run_message(run_id: str) -> dict[str, object]:
    return {"version": MESSAGE_VERSION, "kumofireJobRunId": run_id}


# Called after a schedule's occurrence is delivered: (schedule_id, run_id, nominal ms).
OccurrenceDelivered = Callable[[str, str, int], Awaitable[object]]


class QueueDeliveryHook:
    def __init__(
        self,
        store: RunStore,
        queue: Queue,
        clock: Clock,
        on_occurrence: OccurrenceDelivered | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._clock = clock
        self._on_occurrence = on_occurrence

    async def deliver(self, key: str, delivery: int) -> Delivery:
        now = now_ms(self._clock)
        queued = await self._store.mark_queued(key, now)
        row = queued
        if row is None:
            row = await self._store.get_row(key)
            if row is None or RunStatus(row["status"]) in TERMINAL:
                return Delivery(DeliveryAction.CLOSE)
            if row["status"] == RunStatus.SCHEDULED and row["scheduled_for"] > now:
                return Delivery(DeliveryAction.DEFER, due_ms=row["scheduled_for"])
            # queued or running: a redelivery (lost message, or a holder that died).
        await self._queue.send(run_message(key), _SEND_OPTIONS)
        log.info(
            "run.queued", run_id=key, job=row["name"], attempt=row["attempt"], delivery=delivery
        )
        if queued is not None and queued["schedule_id"] and self._on_occurrence is not None:
            # A schedule's pending occurrence went out: materialize the next one. If that
            # fails, reconciliation restores the schedule's missing next occurrence.
            try:
                await self._on_occurrence(queued["schedule_id"], key, queued["scheduled_for"])
            except Exception as exc:
                log.error("schedule.advance_failed", run_id=key, error=str(exc))
        return Delivery(DeliveryAction.SENT)
