"""A `create_many`'s limited runs placed in their limiter's line in one request per job.

A run due at its create is armed with its placement in its note, and its coordinator's
delivery asks the limiter where it goes (`Limits.place`): one limiter request per run, and
for a run that must wait a second coordinator write (the park) after the arm's. For two or
more runs of one limited job due in one `create_many`, this instead

1. arms each coordinator *parked*: due at the fallback `PARK_MS` ahead, its placement in the
   note (one write, no delivery), and waits for the arms to be stored;
2. places them all in one `limit_place_many` request, in order (each as `limit_acquire` with
   token 0 would: a slot reserved for it, or a place in line);
3. arms for now, inline, each run given a slot, with its job's name as the note (its delivery
   only sends it), and re-arms each run of a paused job for `PAUSED_PARK_MS`.

A run that waits thus costs one coordinator request and write and a share of one limiter
request; one given a slot, a second arm (two rows) more than through its own delivery.
The arms come first so that a waiter the limiter hands over at once finds its coordinator
(a hand-over that found it closed would take it out of the line). If this stops after 1
(a crash, or the limiter request failed and then the arms for now failed too), each run is
parked in no line: its fallback alarm delivers it after `PARK_MS` (its note places it then),
and before that reconciliation arms for now a `queued` run overdue by its grace whose
coordinator is parked and which no limiter names as waiting. If the placement fails, every
run is armed for now inline with its placement note, as a lone create's is. See
docs/architecture.md, "A run due at its create".
"""

from __future__ import annotations

from collections.abc import Sequence

from .coordination import PLACEMENT_MARK, Coordinators, arm_note
from .limits import PARK_MS, Limits, park_ms
from .log import get_logger
from .run_rows import NewRun
from .states import RunStatus

log = get_logger()


def placed_together(runs: Sequence[NewRun], limits: Limits | None) -> dict[str, list[NewRun]]:
    """The runs to place per job (two or more of one limited job, due at their insert)."""
    if limits is None or limits.names is None:
        return {}
    by_job: dict[str, list[NewRun]] = {}
    for run in runs:
        if run.limited and run.status == RunStatus.QUEUED and limits.limits(run.name):
            by_job.setdefault(run.name, []).append(run)
    return {job: group for job, group in by_job.items() if len(group) > 1}


class ParkedArms:
    """Step 1 for `runs` of `job`, sent when made (in order with the create's other arms, so
    a later call to one of these coordinators, a cancel, lands after its arm); `place()`
    does the rest."""

    def __init__(self, coordinators: Coordinators, job: str, runs: list[NewRun], now: int) -> None:
        self._coordinators = coordinators
        self._job = job
        self._runs = runs
        self._now = now
        for run in runs:
            log.info("run.created", run_id=run.id, job=job, attempt=0,
                     scheduled_for_ms=run.scheduled_for)  # fmt: skip
        self._sent = coordinators.send_arms(
            [(run.id, now + PARK_MS, arm_note(run)) for run in runs]
        )

    async def place(self, limits: Limits) -> None:
        """Steps 2 and 3, once the parked arms are stored. Never raises: a failed call is
        logged, and the runs it leaves parked are recovered as the module says."""
        coordinators, job, now = self._coordinators, self._job, self._now
        replies = await coordinators.answers(self._sent)
        armed = [run for run, reply in zip(self._runs, replies, strict=True) if reply is not None]
        if not armed:
            return
        reasons = await limits.place_many(job, armed, now)
        if reasons is None:  # each run's delivery places it, as a lone create's does
            await coordinators.answers(
                coordinators.send_arms([(r.id, now, arm_note(r)) for r in armed], inline=True)
            )
            return
        note = None if job.startswith(PLACEMENT_MARK) else job
        pairs = list(zip(armed, reasons, strict=True))
        send = [(run.id, now, note) for run, reason in pairs if reason is None]
        paused = [(run.id, now + park_ms(reason), None) for run, reason in pairs
                  if reason == "paused"]  # fmt: skip
        await coordinators.answers(
            coordinators.send_arms(send, inline=True) + coordinators.send_arms(paused)
        )
