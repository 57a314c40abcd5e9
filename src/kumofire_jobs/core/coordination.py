"""Calls to a run's coordinator actor, through the Durable Object namespace binding.

One actor per run, addressed by the run id. The replies are the TypedDicts the actor's RPC
methods declare (`kumofire_coordinator.messages`): plain dicts across Workers RPC, typed on
both ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, cast

import msgspec

from kumofire_coordinator.messages import (
    ArmReply,
    CancelReply,
    CloseReply,
    ExpireReply,
    LeaseReply,
    ReleaseReply,
    RenewReply,
    StatusReply,
)

from .bindings import DurableObjectNamespace, DurableObjectStub
from .log import get_logger
from .run_rows import NewRun
from .states import RunStatus

log = get_logger()


# A note that starts so is a limited run's placement (`placement_note`), not a job's name.
PLACEMENT_MARK = "{"


class Placement(msgspec.Struct, frozen=True):
    """What a limited run's limiter places it in line by (`Limits.place`), in its note."""

    job: str
    due: int  # scheduled_for, epoch ms
    key: str | None = None  # concurrency_key
    priority: int = 0


_placement_decoder = msgspec.json.Decoder(Placement)


def arm_note(run: NewRun) -> str | None:
    """What a created run's arm tells its delivery hook (`QueueDeliveryHook.deliver`): for a
    run inserted `queued`, its job's name (the first delivery only sends), or for a limited
    job's its placement (JSON: the delivery places it without reading the row); else None.
    (A job whose name reads as a placement goes without: its delivery reads the row.)"""
    if run.status != RunStatus.QUEUED:
        return None
    if run.limited:
        placement = Placement(
            job=run.name, due=run.scheduled_for, key=run.concurrency_key, priority=run.priority
        )
        return msgspec.json.encode(placement).decode()
    return None if run.name.startswith(PLACEMENT_MARK) else run.name


def read_placement(note: str) -> Placement | None:
    """The placement `arm_note` wrote, or None if `note` is a job's name."""
    if not note.startswith(PLACEMENT_MARK):
        return None
    try:
        return _placement_decoder.decode(note)
    except msgspec.DecodeError:  # (and its ValidationError)
        return None


# The name of a job's limiter actor, in the coordinators' namespace: `limiter:<job>` (run ids
# never contain a colon).
LIMITER_PREFIX = "limiter:"
# A coordinator named `resume:<mark>` is not a run's: its alarm re-arms the next page of a
# resumed job's runs (`JobService.resume_page`).
RESUME_PREFIX = "resume:"


class Coordinators:
    def __init__(self, namespace: DurableObjectNamespace, *, wait_for_arms: bool = True) -> None:
        self._namespace = namespace
        self._wait_for_arms = wait_for_arms

    def _stub(self, run_id: str) -> DurableObjectStub:
        return self._namespace.getByName(run_id)

    async def arm(
        self, run_id: str, due_ms: int, note: str | None = None, *, inline: bool = False
    ) -> ArmReply:
        """`inline`: a run already due is delivered within the call (see the actor's `arm`)."""
        reply = await _arm_call(self._stub(run_id), run_id, due_ms, note, inline)
        return _delivery_logged(run_id, cast(ArmReply, reply))

    async def lease(self, run_id: str, lease_ms: int, *, early: bool = False) -> LeaseReply:
        """`early`: before the due time, for a run its job's limiter handed over (parked).
        Otherwise `vacant` (the actor's `lease`): an actor holding nothing grants too, as
        one whose `create` arm delivered the run inline and stored nothing does; the
        consumer's guarded `running` update decides whether the run starts. Never for a
        name another actor lives under (a limiter's, a resume's)."""
        stub = self._stub(run_id)
        if early:
            reply = await stub.lease(run_id, lease_ms, True)
        elif run_id.startswith((LIMITER_PREFIX, RESUME_PREFIX)):
            reply = await stub.lease(run_id, lease_ms)
        else:
            reply = await stub.lease(run_id, lease_ms, False, True)
        return cast(LeaseReply, reply)

    def lease_early(self, run_id: str, lease_ms: int, token: int) -> Awaitable[LeaseReply]:
        """`lease(run_id, lease_ms, early=True, token=token)`, sent now: the stub's own
        awaitable (a limiter hands several waiters over at once, with no task each)."""
        call = self._stub(run_id).lease(run_id, lease_ms, True, False, token)
        return cast(Awaitable[LeaseReply], call)

    async def renew(self, run_id: str, token: int, lease_ms: int) -> RenewReply:
        return cast(RenewReply, await self._stub(run_id).renew(token, lease_ms))

    def release_now(
        self, run_id: str, token: int, rearm_ms: int | None = None
    ) -> Awaitable[ReleaseReply]:
        """`release`, sent now: the stub's own awaitable (sent in a given loop turn, see
        `HandoffWrites.after_releases`)."""
        return cast(Awaitable[ReleaseReply], self._stub(run_id).release(token, rearm_ms))

    async def release(self, run_id: str, token: int, rearm_ms: int | None = None) -> ReleaseReply:
        return cast(ReleaseReply, await self._stub(run_id).release(token, rearm_ms))

    async def cancel(self, run_id: str) -> CancelReply:
        return cast(CancelReply, await self._stub(run_id).cancel())

    async def close(self, run_id: str) -> CloseReply:
        return cast(CloseReply, await self._stub(run_id).close())

    async def status(self, run_id: str) -> StatusReply:
        return cast(StatusReply, await self._stub(run_id).status())

    async def expire_lease(self, run_id: str, granted_before_ms: int) -> ExpireReply:
        """End a lease its holder cannot still hold (see `reconcile_unfinished`)."""
        return cast(ExpireReply, await self._stub(run_id).expire_lease(granted_before_ms))

    # --- after a D1 write: the run is durable, so a failed call is logged, not raised --------

    async def arm_created(
        self,
        run_id: str,
        due_ms: int,
        note: str | None = None,
        *,
        inline: bool = False,
        **context: str | None,
    ) -> None:
        """Arm a run just inserted (by `create`, or a schedule's occurrence); `note`: see
        `arm_note`; `inline`: delivered within the call if due; `context` (the job's name,
        or the schedule's id) goes into the `run.created` line. If the call fails,
        reconciliation arms the run later."""
        log.info("run.created", run_id=run_id, **context, attempt=0, scheduled_for_ms=due_ms)
        try:
            await self.arm(run_id, due_ms, note, inline=inline)
        except Exception as exc:
            log.error("run.arm_failed", run_id=run_id, error=str(exc))

    async def arm_all_created(
        self, runs: Sequence[tuple[str, int, str, str | None]], *, concurrent: bool = False
    ) -> None:
        """Arm runs `create` just inserted: (run id, due time, job name, `arm_note`). A run
        already due is delivered within its arm call (`inline`). The calls are sent
        at once, in order, so a later call to the same coordinator (a cancel, a promote)
        lands after its arm. Their answers are awaited only if this runtime waits for arms
        (`Resources.wait_for_arms`) or other creates are `concurrent` with this one (they
        share the commit anyway, and waiting keeps creates from running ahead of the
        coordinators that deliver their runs); either way a failed arm is logged, and
        reconciliation arms the run later: the run is durable in D1 before its arm is sent."""
        await self.settle_created(self.send_created(runs), concurrent=concurrent)

    def send_created(
        self, runs: Sequence[tuple[str, int, str, str | None]]
    ) -> list[tuple[str, Awaitable[Any]]]:
        """`arm_all_created`'s calls, sent now; `settle_created` awaits them."""
        sent: list[tuple[str, Awaitable[Any]]] = []
        for run_id, due_ms, job, note in runs:
            log.info("run.created", run_id=run_id, job=job, attempt=0, scheduled_for_ms=due_ms)
            try:
                sent.append((run_id, _arm_call(self._stub(run_id), run_id, due_ms, note, True)))
            except Exception as exc:
                log.error("run.arm_failed", run_id=run_id, error=str(exc))
        return sent

    async def settle_created(
        self, sent: list[tuple[str, Awaitable[Any]]], *, concurrent: bool = False
    ) -> None:
        """Await `send_created`'s calls if this runtime waits for arms or creates are
        `concurrent`; else log their failures when they answer."""
        if not (self._wait_for_arms or concurrent):
            for run_id, answer in sent:
                asyncio.ensure_future(answer).add_done_callback(_arm_answered(run_id))
            return
        for run_id, answer in sent:
            try:
                _delivery_logged(run_id, await answer)
            except Exception as exc:
                log.error("run.arm_failed", run_id=run_id, error=str(exc))

    def send_arms(
        self, arms: Sequence[tuple[str, int, str | None]], *, inline: bool = False
    ) -> list[tuple[str, Awaitable[Any] | None]]:
        """Send arms of runs already inserted ((run id, due time, note)) at once, in order;
        `answers` awaits them. A call that could not be sent is logged (None)."""
        sent: list[tuple[str, Awaitable[Any] | None]] = []
        for run_id, due_ms, note in arms:
            try:
                sent.append((run_id, _arm_call(self._stub(run_id), run_id, due_ms, note, inline)))
            except Exception as exc:
                log.error("run.arm_failed", run_id=run_id, error=str(exc))
                sent.append((run_id, None))
        return sent

    async def answers(
        self, sent: Sequence[tuple[str, Awaitable[Any] | None]]
    ) -> list[ArmReply | None]:
        """The replies of `send_arms`' calls, None for each that failed (logged:
        reconciliation arms the run later)."""
        replies: list[ArmReply | None] = []
        for run_id, answer in sent:
            try:
                replies.append(None if answer is None else _delivery_logged(run_id, await answer))
            except Exception as exc:
                log.error("run.arm_failed", run_id=run_id, error=str(exc))
                replies.append(None)
        return replies

    @property
    def waits_for_arms(self) -> bool:
        return self._wait_for_arms

    async def forget_waiting(self, job: str, run_id: str) -> None:
        """Tell a limited job's limiter (`limiter:<job>`, same namespace) that a run D1 holds
        as canceled no longer waits. If the call fails, its offer is made and expires (see
        docs/architecture.md, "The limiter actor")."""
        try:
            await self._namespace.getByName(LIMITER_PREFIX + job).limit_forget(run_id)
        except Exception as exc:
            log.error("run.limit_forget_failed", run_id=run_id, error=str(exc))

    async def cancel_canceled(self, run_id: str) -> None:
        """Tell the actor of a run D1 already holds as canceled. If the call fails, the run's
        next delivery finds it canceled and closes the actor, and a running handler's fenced
        finalize leaves it canceled."""
        try:
            await self.cancel(run_id)
        except Exception as exc:
            log.error("run.cancel_notify_failed", run_id=run_id, error=str(exc))


def _arm_call(
    stub: DurableObjectStub, run_id: str, due_ms: int, note: str | None, inline: bool
) -> Awaitable[Any]:
    """The arm RPC, sent now (positional arguments, trailing defaults left out)."""
    if inline:
        call = stub.arm(run_id, due_ms, note or "", True)
    else:
        call = stub.arm(run_id, due_ms) if note is None else stub.arm(run_id, due_ms, note)
    return cast(Awaitable[Any], call)


def _delivery_logged(run_id: str, reply: ArmReply) -> ArmReply:
    """Log an arm's failed inline delivery (its alarm tries again in a moment)."""
    error = cast(Mapping[str, Any], reply).get("delivery_error")
    if error is not None:
        log.warning("run.deliver_failed", run_id=run_id, error=error)
    return reply


def _arm_answered(run_id: str) -> Any:
    """A callback logging the failure of an arm nobody awaits."""

    def answered(answer: asyncio.Future[Any]) -> None:
        if answer.cancelled():
            return
        if (exc := answer.exception()) is not None:
            log.error("run.arm_failed", run_id=run_id, error=str(exc))
        else:
            _delivery_logged(run_id, answer.result())

    return answered
