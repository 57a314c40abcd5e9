"""A `create_many`'s limited runs placed in their limiter's line in one request per job.

A run due at its create is armed with its placement in its note, and its coordinator's
delivery asks the limiter where it goes (`Limits.place`): one limiter request per run. A run
that finds a slot is sent by that delivery and its coordinator stores nothing; one that must
wait is parked (its state and fallback alarm stored). A `create_many` of more runs of a
limited job than its limits could start at once (`placed_together`: past the first
`concurrency`, or `key_concurrency` of their key) arms the first ones so, and for the others

1. arms each coordinator *parked*: due at the fallback `PARK_MS` ahead, its placement in the
   note (the same write as a park, and no delivery), and waits for the arms to be stored;
2. places them all in one `limit_place_many` request, in order (each as `limit_acquire` with
   token 0 would: a slot reserved for it, or a place in line);
3. arms for now, inline, each run given a slot after all, with its job's name as the note
   (its delivery only sends it), and re-arms each run of a paused job for `PAUSED_PARK_MS`.

A run that waits thus costs what it did less its own limiter request (a share of one); one
given a slot in step 3 (the limits had room past the first ones: a slot freed meanwhile, or
keys held back the first ones) costs a second arm and its two rows. The arms come first so
that a waiter the limiter hands over at once finds its coordinator (a hand-over that found
it closed would take it out of the line). If this stops after 1 (a crash, or the limiter
request failed and then the arms for now failed too), each run is parked in no line: its
fallback alarm delivers it after `PARK_MS` (its note places it then), and before that
reconciliation arms for now a `queued` run overdue by its grace whose coordinator is parked
and which no limiter names as waiting. If the placement fails, every run is armed for now
inline with its placement note, as a lone create's is. See docs/architecture.md, "A run due
at its create".
"""

from __future__ import annotations

from collections.abc import Sequence

from kumofire_coordinator.messages import LimitsMessage

from .coordination import PLACEMENT_MARK, Coordinators, arm_note
from .limits import PARK_MS, Limits, park_ms
from .log import get_logger
from .run_rows import NewRun
from .states import RunStatus

log = get_logger()


def placed_together(runs: Sequence[NewRun], limits: Limits | None) -> dict[str, list[NewRun]]:
    """The runs to place together, per job: of a limited job's runs due at their insert,
    those its limits could not all start at once (past the first `concurrency` of the batch,
    or the first `key_concurrency` of their key; a rate limit's `limit` likewise), if two or
    more. The runs before them are armed one by one, as a lone create's: one that finds a
    slot is sent by its arm's delivery with no coordinator write, where placed together it
    would be armed twice (parked, then for now). So a burst into a saturated job places all
    but its first few together, and one the job has room for costs what it did."""
    if limits is None or limits.names is None:
        return {}
    by_job: dict[str, list[NewRun]] = {}
    seen: dict[str, int] = {}  # runs of the batch so far, by job
    seen_key: dict[tuple[str, str], int] = {}  # and by job and key
    for run in runs:
        message = limits.limits(run.name) if run.limited else None
        if message is None or run.status != RunStatus.QUEUED:
            continue
        key = (run.name, run.concurrency_key or "")
        index, key_index = seen.get(run.name, 0), seen_key.get(key, 0)
        seen[run.name], seen_key[key] = index + 1, key_index + 1
        first, first_of_key = _room(message)
        if (first is None or index < first) and (first_of_key is None or key_index < first_of_key):
            continue  # the limits might start it at once: armed alone
        by_job.setdefault(run.name, []).append(run)
    return {job: group for job, group in by_job.items() if len(group) > 1}


def _room(message: LimitsMessage) -> tuple[int | None, int | None]:
    """How many runs the limits could start at once, job-wide and per key (None: no bound
    of that kind)."""
    job_bounds = [b for b in (message["concurrency"], _count(message["rate_limit"])) if b]
    key_bounds = [b for b in (message["key_concurrency"], _count(message["key_rate_limit"])) if b]
    return min(job_bounds, default=None), min(key_bounds, default=None)


def _count(rate: list[int] | None) -> int | None:
    return None if rate is None else rate[0]


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
