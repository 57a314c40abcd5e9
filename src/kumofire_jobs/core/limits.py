"""Per-job limits in consume: the calls to a job's limiter actor (`limiter:<job>`, in the
coordinators' Durable Object class) around a run's `running` write.

A job whose options set no limit never reaches this module's actor calls: `Limits.applies`
is false for it, and a runtime with no limited job at all does nothing here. See
docs/architecture.md, "The limiter actor".
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from kumofire_coordinator.messages import (
    AcquireReply,
    ExpireSlotsReply,
    Handoff,
    LeaseReply,
    LimitsMessage,
    PlacementsReply,
    SlotReleaseReply,
    SlotRenewReply,
    WaitingReply,
)

from .bindings import DurableObjectNamespace
from .clock import Clock
from .coordination import LIMITER_PREFIX, Coordinators
from .handoff import Budget
from .handoff_releases import Releases
from .log import get_logger
from .options import JobOptions, RateLimit
from .run_rows import NewRun
from .states import TERMINAL, RunStatus

log = get_logger()

# A run told to wait parks its coordinator this long: the limiter wakes it sooner; this only
# brings it back if the limiter lost it (its storage, or after unclaimed offers).
PARK_MS = 300_000
# The same while the job is paused: nothing wakes it but the resume (its limiter serves its
# line, the resume re-arms every run not in it, reconciliation any parked run no line holds),
# so the fallback comes only a day later (it used to be hourly: a delivery, two D1 statements
# and a limiter request per waiting run and hour of the pause).
PAUSED_PARK_MS = 86_400_000
# How long a slot reserved at a run's delivery waits for its consumer to claim it.
OFFER_MS = 60_000


def park_ms(reason: str) -> int:
    """How long a run told to wait (`reason`) parks its coordinator: the fallback."""
    return PAUSED_PARK_MS if reason == "paused" else PARK_MS


def limiter_name(job: str) -> str:
    return LIMITER_PREFIX + job


def _rate(rate: RateLimit | None) -> list[int] | None:
    return None if rate is None else [rate.limit, max(int(rate.per * 1000), 1)]


def limits_message(options: JobOptions | None) -> LimitsMessage | None:
    """The limits a job's options set, as the limiter takes them, or None (no limit)."""
    if options is None:
        return None
    message: LimitsMessage = {
        "concurrency": options.concurrency,
        "key_concurrency": options.key_concurrency,
        "rate_limit": _rate(options.rate_limit),
        "key_rate_limit": _rate(options.key_rate_limit),
    }
    return message if any(v is not None for v in message.values()) else None


class CoordinatorWaker:
    """The limiter's reach into a waiting run's own coordinator: wake it (armed for now, it
    redelivers the run), or lease it early for the consumer the run is handed to."""

    def __init__(self, coordinators: Coordinators, clock: Clock) -> None:
        self._coordinators = coordinators
        self._clock = clock

    async def wake(self, run_id: str) -> None:
        await self._coordinators.arm(run_id, int(self._clock.now() * 1000))

    def lease(self, run_id: str, lease_ms: int, token: int) -> Awaitable[LeaseReply]:
        return self._coordinators.lease_early(run_id, lease_ms, token)


@dataclass(frozen=True, slots=True)
class Slot:
    job: str
    key: str
    token: int


@dataclass(frozen=True, slots=True)
class Passed:
    """A waiting run its limiter handed to this consumer with a freed slot: its coordinator
    leased for this consumer under `run["token"]`, its slot held under the same token."""

    job: str
    run: Handoff


class Limits:
    """The consumer's side of the limiters: acquire before the `running` write, renew with
    the lease, release with it."""

    def __init__(
        self,
        namespace: DurableObjectNamespace,
        options: dict[str, LimitsMessage],
        clock: Clock,
        lease_ms: int,
    ) -> None:
        self._namespace = namespace
        self._options = options
        self._clock = clock
        self._lease_ms = lease_ms
        self._held: dict[str, Slot] = {}  # run id -> the slot this consumer holds for it
        self._names = json.dumps(sorted(options)) if options else None

    @property
    def names(self) -> str | None:
        """The limited jobs as a JSON array (the start statement skips their runs), or None
        when no job is limited."""
        return self._names

    def limits(self, job: str) -> LimitsMessage | None:
        return self._options.get(job)

    def _stub(self, job: str) -> Any:
        return self._namespace.getByName(limiter_name(job))

    async def place(self, row: Mapping[str, Any], now: int) -> int | None:
        """At a limited run's delivery (the coordinator's alarm), before the queue: reserve
        it a slot (an offer, token 0, claimed by its consumer's `enter`) if the wait order
        gives it one now, else put it in the line. None: send it to the queue (reserved, or
        its slot held by a lease its consumer will take over); else it waits, and the
        coordinator parks until the time returned (the fallback if the limiter loses it). A
        run that waits thus costs no queue message and no consume."""
        limits = self._options.get(row["name"])
        if limits is None or row["scheduled_for"] > now:
            return None
        run_id = row["id"]
        try:
            reply = cast(
                AcquireReply,
                await self._stub(row["name"]).limit_acquire(
                    run_id, 0, row.get("concurrency_key") or "", int(row.get("priority") or 0),
                    int(row["scheduled_for"]), OFFER_MS, limits,
                ),
            )  # fmt: skip
        except Exception as exc:  # the consumer's `enter` asks again
            log.warning("limit.place_failed", run_id=run_id, error=str(exc))
            return None
        if reply["granted"] or reply["reason"] == "lost":
            return None
        log.info("run.waiting", run_id=run_id, job=row["name"], reason=reply["reason"])
        return now + park_ms(reply["reason"])

    async def place_many(
        self, job: str, runs: Sequence[NewRun], now: int
    ) -> list[str | None] | None:
        """`place` for runs of `job` just created and due, their coordinators armed parked
        (`created_placements.py`), in one limiter request: for each, None (a slot is
        reserved for it: send it) or why it waits (`wait`, `paused`: it is in line). None
        if the request failed (logged)."""
        limits = self._options.get(job)
        if limits is None:
            return [None] * len(runs)
        try:
            reply = cast(
                PlacementsReply,
                await self._stub(job).limit_place_many(
                    [run.id for run in runs], [run.concurrency_key or "" for run in runs],
                    [run.priority for run in runs], [run.scheduled_for for run in runs],
                    OFFER_MS, limits,
                ),
            )  # fmt: skip
        except Exception as exc:
            log.warning("limit.place_failed", job=job, runs=len(runs), error=str(exc))
            return None
        reasons: list[str | None] = []
        for run, placed in zip(runs, reply["placed"], strict=True):
            if placed["granted"] or placed["reason"] == "lost":
                reasons.append(None)
            else:
                log.info("run.waiting", run_id=run.id, job=job, reason=placed["reason"])
                reasons.append(placed["reason"])
        return reasons

    async def pause(self, job: str, paused: bool) -> None:
        """Tell a limited job's limiter it was paused or resumed (see `JobService`). If the
        call fails, a paused job's runs meet the pause at their start instead, and a resume
        is told again by reconciliation (`parked`)."""
        if job not in self._options:
            return
        try:
            await self._stub(job).limit_pause(paused)
        except Exception as exc:
            log.warning("limit.pause_failed", job=job, paused=paused, error=str(exc))

    async def parked(self, run_ids: list[str]) -> set[str]:
        """Which of `run_ids` wait in a limiter's line (one call per limited job). A limiter
        that cannot be asked answers none: their coordinators are asked instead."""
        found: set[str] = set()
        for job in self._options:
            try:
                reply = cast(WaitingReply, await self._stub(job).limit_waiting(run_ids))
            except Exception as exc:
                log.warning("limit.waiting_failed", job=job, error=str(exc))
                continue
            found.update(reply["waiting"])
            if reply["paused"] and reply["waiting"]:
                # Reconciliation's runs are of jobs D1 holds as not paused: a resume did not
                # reach this limiter. Tell it now (its line would wait forever otherwise).
                await self.pause(job, False)
        return found

    async def expire_before(self, granted_before_ms: int, runs: list[tuple[str, str]]) -> None:
        """At the start of a process that alone owns its bindings (the embedded runtime,
        its data directory locked): free the slots that `runs` ((job, run id): runs D1 holds
        as canceled once started) hold under leases granted before it, by holders known gone
        (`LimiterActor.expire_slots`). Being finished, no new attempt of theirs takes the
        slot over (a cut-off unfinished run's does, keeping its turn). If a call fails, those
        slots expire with their leases, as on Cloudflare."""
        by_job: dict[str, list[str]] = {}
        for job, run_id in runs:
            if job in self._options:
                by_job.setdefault(job, []).append(run_id)
        for job, run_ids in by_job.items():
            try:
                reply = cast(
                    ExpireSlotsReply,
                    await self._stub(job).limit_expire_slots(granted_before_ms, run_ids),
                )
            except Exception as exc:
                log.warning("limit.expire_failed", job=job, error=str(exc))
                continue
            if reply["expired"]:
                log.warning("limit.slots_expired_at_start", job=job, run_ids=reply["expired"])

    async def enter(self, row: Mapping[str, Any] | None, token: int) -> int | None:
        """Ask the run's limiter for a slot, if its job is limited and it may start now.
        None: go on. Else the run waits (recorded in the limiter's list, woken through its
        coordinator): the caller parks the coordinator for the fallback time returned (ms)."""
        if row is None or RunStatus(row["status"]) in TERMINAL:
            return None
        limits = self._options.get(row["name"])
        now = int(self._clock.now() * 1000)
        if limits is None or row["scheduled_for"] > now:
            return None  # not limited, or not due: the guarded start decides, as always
        key = row.get("concurrency_key") or ""
        reply = cast(
            AcquireReply,
            await self._stub(row["name"]).limit_acquire(
                row["id"], token, key, int(row.get("priority") or 0),
                int(row["scheduled_for"]), self._lease_ms, limits,
            ),
        )  # fmt: skip
        if reply["granted"]:
            self._held[row["id"]] = Slot(row["name"], key, token)
            return None
        log.info("run.waiting", run_id=row["id"], job=row["name"], reason=reply["reason"])
        return park_ms(reply["reason"])

    async def renew(self, run_id: str, token: int) -> bool:
        """Renew the run's slot with its lease; False if the slot is lost."""
        slot = self._held.get(run_id)
        if slot is None or slot.token != token:
            return True
        reply = cast(
            SlotRenewReply,
            await self._stub(slot.job).limit_renew(run_id, token, slot.key, self._lease_ms),
        )
        return reply["ok"]

    def forget(self, run_id: str, token: int) -> None:
        """The attempt under `token` is over here (its consume call or hand-over ended, the
        slot released or left to expire): forget its slot, if still kept. A failed start or
        a lost lease leaves the slot to expire with its lease, and no later attempt of the
        run may come to this consumer to take the record over."""
        slot = self._held.get(run_id)
        if slot is not None and slot.token == token:
            del self._held[run_id]

    def holds(self, run_id: str, token: int) -> bool:
        """Whether this consumer holds a slot for the run under `token`."""
        slot = self._held.get(run_id)
        return slot is not None and slot.token == token

    async def leave(
        self, run_id: str, token: int, *, handoff: bool = False, batch: Budget | None = None
    ) -> Passed | None:
        """Release the run's slot (the attempt ended, or never started). With `handoff`, the
        waiter the slot goes to is returned, leased for this consumer by the limiter and
        holding the slot under that lease's token, for the caller to start at once, instead
        of being woken through its coordinator; with the queue `batch` too, in one request
        with its other chains' releases of this turn (`handoff_releases.py`). If the call
        fails, the slot expires with its lease (and a run the limiter leased for us, with
        its own lease: it is delivered again)."""
        slot = self._held.get(run_id)
        if slot is None or slot.token != token:
            return None
        del self._held[run_id]
        stub = self._stub(slot.job)
        try:
            if handoff and batch is not None:
                if batch.releases is None:
                    batch.releases = Releases(self._stub, self._lease_ms)
                reply = await batch.releases.release(slot.job, run_id, token)
            elif handoff:
                reply = cast(
                    SlotReleaseReply, await stub.limit_release(run_id, token, self._lease_ms)
                )
            else:
                reply = cast(SlotReleaseReply, await stub.limit_release(run_id, token))
        except Exception as exc:
            log.warning("limit.release_failed", run_id=run_id, error=str(exc))
            return None
        passed = reply.get("next") if reply["ok"] else None
        if passed is None:
            return None
        self._held[passed["run_id"]] = Slot(slot.job, passed["key"], int(passed["token"]))
        return Passed(slot.job, passed)
