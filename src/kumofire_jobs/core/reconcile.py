"""Reconciliation: the cron trigger's safety net.

Each run's coordinator delivers it on time; this finds what a coordinator or the queue
dropped and repairs it. It asks each unfinished, overdue run's actor what it holds (never
guessing from D1 alone): an actor that no longer owns the run (closed, say, because an arm
call failed after the insert) or gave up redelivering is armed again, which delivers at
once. It also deletes finished runs past the retention age. In a healthy system it finds
nothing to repair. The embedded runtime also reconciles at its start, with no grace
(`reconcile_unfinished`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping

from .clock import Clock, now_ms
from .coordination import Coordinators
from .log import get_logger
from .models import DispatchResult
from .reconcile_cursor import read_cursor, write_cursor
from .reconcile_reads import active_due_after, active_due_before, unfinished_after
from .retention import prune_pass
from .run_rows import UnfinishedRow
from .store import RunStore

log = get_logger()

# A run is "overdue" only this long after its due time: before that its actor is still
# expected to be delivering it, and asking would only cost a Durable Object request.
DEFAULT_GRACE_SECONDS = 60.0
_CONCURRENCY = 16
_LOST_PHASES = {"closed", "abandoned"}
# Pages of overdue runs one tick reads past those parked in limiters' lines (see below).
_MAX_PAGES = 10

# Which of these run ids wait in a limited job's line (`Limits.parked`).
ParkedProbe = Callable[[list[str]], Awaitable[set[str]]]


async def reconcile(
    *,
    store: RunStore,
    coordinators: Coordinators,
    clock: Clock,
    limit: int,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    retention_seconds: float | None,
    retention_overrides: Mapping[str, tuple[float | None, float | None]] | None = None,
    parked: ParkedProbe | None = None,
) -> DispatchResult:
    """One cron pass: ask at most `limit` coordinators about overdue unfinished runs, going on
    after the run the last pass (in any isolate) stopped at (`reconcile_cursor`), then from
    the oldest once the walk has reached the newest. Without it the oldest overdue runs,
    healthy ones included (long handlers still running), would fill every pass's page and
    hide a lost run behind them for as long as they run."""
    now = now_ms(clock)
    result = DispatchResult()
    cutoff = now - int(grace_seconds * 1000)
    cursor = await read_cursor(store.db)
    start = cursor.after
    rows = [] if start is None else await active_due_after(store.db, cutoff, *start, limit)
    if not rows:  # from the oldest (a cycle over the overdue runs ended, or none began)
        rows = await active_due_before(store.db, cutoff, limit)
    gate = asyncio.Semaphore(_CONCURRENCY)
    asked = 0
    stopped_at: UnfinishedRow | None = None  # the last run looked at, if the bound stopped it
    for _ in range(_MAX_PAGES):
        # A limited job's waiting runs are `queued` and overdue, their coordinators parked:
        # their limiter answers for them all in one request, and the tick looks further
        # instead of asking the same parked coordinators again every minute.
        queued = [str(r["id"]) for r in rows if r["status"] == "queued"]
        skip = await parked(queued) if parked is not None and queued else set()
        unparked = [row for row in rows if row["id"] not in skip]
        ask = unparked[: limit - asked]
        await asyncio.gather(
            *(_rearm_if_lost(row, coordinators, gate, result, now=now) for row in ask)
        )
        asked += len(ask)
        stopped_at = None
        if len(ask) < len(unparked):
            stopped_at = ask[-1]
        elif len(rows) == limit:  # a full page: more may follow
            stopped_at = rows[-1]
        if not skip or len(rows) < limit or asked >= limit:
            break
        last = rows[-1]
        rows = await active_due_after(
            store.db, cutoff, int(last["scheduled_for"]), str(last["id"]), limit
        )
    after = (
        None if stopped_at is None else (int(stopped_at["scheduled_for"]), str(stopped_at["id"]))
    )
    if not await write_cursor(store.db, cursor, after):
        # Another tick (another isolate's, at once) moved it since this one read it: that
        # write stands, so the cursor never goes back.
        log.debug("reconcile.cursor_moved_meanwhile")
    result.pruned = await prune_pass(
        store.db,
        now=now,
        retention_seconds=retention_seconds,
        overrides=retention_overrides or {},
    )
    if result.dispatched or result.recovered or result.pruned:
        log.info(
            "reconcile.done", dispatched=result.dispatched, recovered=result.recovered,
            pruned=result.pruned, checked=result.checked,
        )  # fmt: skip
    return result


async def reconcile_unfinished(
    *,
    store: RunStore,
    coordinators: Coordinators,
    page: int = 500,
    expire_leases_before: int | None = None,
    held: Collection[str] = (),
) -> DispatchResult:
    """Reconciliation with no grace, over every unfinished run whatever its due time.

    Only for a process that alone owns its bindings, at its start (the embedded runtime, whose
    data directory is locked): nothing is in flight then, so an actor that does not hold its
    unfinished run lost it, and a run whose creation a crash cut before its coordinator was
    armed starts at once (or when due) instead of a grace and a cron tick late.

    `expire_leases_before` (epoch ms, this process's start): the leases granted before it
    were held by a process that is gone (the lock proves it), so they end now and their runs
    go again at once instead of when the lease would have run out. Leases this process has
    granted since are left alone (`CoordinatorActor.expire_lease`).

    `held`: the run ids whose message the queue holds. A `queued` run among them whose
    actor holds nothing is not lost: a create's inline arm stores nothing once it sent, and
    the message's consumer is granted the lease on the empty actor (arming it again would
    send every run of a backlog twice at each start)."""
    result = DispatchResult()
    gate = asyncio.Semaphore(_CONCURRENCY)
    after: tuple[int, str] = (-1, "")
    while True:
        rows = await unfinished_after(store.db, *after, page)
        await asyncio.gather(
            *(
                _rearm_if_lost(row, coordinators, gate, result, expire_leases_before, held=held)
                for row in rows
            )
        )
        if len(rows) < page:
            break
        after = (int(rows[-1]["scheduled_for"]), str(rows[-1]["id"]))
    if result.dispatched or result.recovered:
        log.info(
            "reconcile.start_done", dispatched=result.dispatched, recovered=result.recovered,
            checked=result.checked,
        )  # fmt: skip
    return result


async def _rearm_if_lost(
    row: UnfinishedRow,
    coordinators: Coordinators,
    gate: asyncio.Semaphore,
    result: DispatchResult,
    expire_leases_before: int | None = None,
    *,
    now: int | None = None,
    held: Collection[str] = (),
) -> None:
    """Ask the run's actor what it holds; arm it again if it no longer owns the run, or end
    its lease if that was granted before `expire_leases_before` (a holder known gone). With
    `now` (the tick's runs in a limiter's line were left out): a `queued` run whose actor is
    parked (armed for later) waits in no line, so no limiter will wake it: armed for now.
    `held`: see `reconcile_unfinished`."""
    run_id = str(row["id"])
    async with gate:
        status = await coordinators.status(run_id)
        result.checked += 1
        if expire_leases_before is not None and status["lease_live"]:
            expired = await coordinators.expire_lease(run_id, expire_leases_before)
            if expired["expired"]:
                result.recovered += 1
                log.warning("run.lease_expired_at_start", run_id=run_id, status=row["status"])
            return
        due = int(str(row["scheduled_for"]))
        if status["phase"] == "closed" and row["status"] == "queued" and run_id in held:
            return  # its message is in the queue: its consumer leases the empty actor
        if status["phase"] not in _LOST_PHASES:
            if now is None or row["status"] != "queued" or status["phase"] != "armed":
                return
            if int(status.get("due_ms") or 0) <= now:
                return  # armed and due: delivering it
            due = now
        await coordinators.arm(run_id, due)
    if row["status"] == "running":
        result.recovered += 1
    else:
        result.dispatched += 1
    log.warning("run.reconciled", run_id=run_id, status=row["status"], actor=status["phase"])
