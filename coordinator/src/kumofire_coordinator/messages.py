"""The replies of the actor's RPC methods, declared once for both ends.

The actor builds them, the endpoint returns them across Workers RPC, and the jobs layer's
client (`kumofire_jobs.core.coordination`) reads them with these types, so mypy checks both
ends. They are TypedDicts, plain dicts at run time: a reply crosses Workers RPC as a
structured clone and arrives as a plain object whatever class built it.

Each reply is a union tagged by one `Literal` key (`armed`, `granted`, `ok`, `phase`), so a
check of that key narrows it: `if grant["granted"]: grant["token"]`.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

# --- arm --------------------------------------------------------------------------------------


class Armed(TypedDict):
    armed: Literal[True]


class ArmedUndelivered(TypedDict):
    """A key already due is delivered inline; that delivery failed (why), and the alarm
    tries again in a moment."""

    armed: Literal[True]
    delivery_error: str


class ArmDeferred(TypedDict):
    """A live lease is never displaced: the due time applies when the holder releases."""

    armed: Literal[False]
    reason: Literal["leased"]


ArmReply = Armed | ArmedUndelivered | ArmDeferred

# --- lease ------------------------------------------------------------------------------------


class LeaseGranted(TypedDict):
    granted: Literal[True]
    token: int  # fences the holder's writes elsewhere; only grows
    expires_ms: int


class LeaseNotDue(TypedDict):
    granted: Literal[False]
    reason: Literal["not_due"]
    due_ms: int


class LeaseRefused(TypedDict):
    """`closed`: the actor does not own the key; `canceled`: it was canceled; `held`: another
    caller's lease is live."""

    granted: Literal[False]
    reason: Literal["closed", "canceled", "held"]


LeaseReply = LeaseGranted | LeaseNotDue | LeaseRefused

# --- renew and release ------------------------------------------------------------------------


class HolderGone(TypedDict):
    """`lost`: the lease expired and went to another (or the actor closed); `canceled`: the
    run was canceled while held (renew only)."""

    ok: Literal[False]
    reason: Literal["lost", "canceled"]


class Renewed(TypedDict):
    ok: Literal[True]
    expires_ms: int


RenewReply = Renewed | HolderGone


class Released(TypedDict):
    ok: Literal[True]
    closed: bool  # closed, or armed again for a retry


ReleaseReply = Released | HolderGone

# --- cancel, close, status --------------------------------------------------------------------


class CancelReply(TypedDict):
    canceled: Literal[True]
    leased: bool  # a live lease stays until its holder learns of the cancel


class CloseReply(TypedDict):
    closed: Literal[True]


class ExpireReply(TypedDict):
    expired: bool  # a live lease granted before the given time ended now


class StatusClosed(TypedDict):
    phase: Literal["closed"]
    lease_live: Literal[False]


# An open actor's phase as `status` reports it (`kumofire_coordinator.Phase`'s values).
PhaseName = Literal["armed", "delivered", "leased", "abandoned"]


class StatusOpen(TypedDict):
    key: str
    phase: PhaseName
    due_ms: int
    deliveries: int
    lease_live: bool
    lease_expires_ms: int | None
    canceled: bool


StatusReply = StatusClosed | StatusOpen


# --- the limiter (limiter.py) -----------------------------------------------------------------


class LimitsMessage(TypedDict):
    """A job's limits, sent with every `acquire` (the code is the truth). Rate limits are
    `[limit, per_ms]`: at most `limit` starts in any window of `per_ms`."""

    concurrency: int | None
    key_concurrency: int | None
    rate_limit: list[int] | None
    key_rate_limit: list[int] | None


class SlotGranted(TypedDict):
    granted: Literal[True]
    expires_ms: int


class SlotRefused(TypedDict):
    """`wait`: the run is in the wait list and will be woken through its coordinator;
    `paused`: the same, while the job is paused (it waits for the resume);
    `lost`: a newer lease token of the run holds its slot."""

    granted: Literal[False]
    reason: Literal["wait", "paused", "lost"]


AcquireReply = SlotGranted | SlotRefused


class PlacementsReply(TypedDict):
    """`limit_place_many`: each placement's reply (as `limit_acquire` with token 0), in the
    order asked."""

    placed: list[AcquireReply]


class SlotLost(TypedDict):
    ok: Literal[False]
    reason: Literal["lost"]


class Handoff(TypedDict):
    """A waiter given the freed slot in `limit_release(run_id, token, lease_ms)`: the limiter
    leased its coordinator (early, for `lease_ms`) and holds the slot for it under that
    lease's `token`, so the caller starts it at once, as the lease's holder."""

    run_id: str
    key: str
    priority: int
    due_ms: int
    token: int


class SlotReleased(TypedDict):
    ok: Literal[True]
    next: NotRequired[Handoff | None]  # with `lease_ms` only: the waiter passed to the caller


SlotRenewReply = Renewed | SlotLost
SlotReleaseReply = SlotReleased | SlotLost


class SlotReleasesReply(TypedDict):
    """`limit_release_many`: each release's reply, in the order asked."""

    released: list[SlotReleaseReply]


class ForgetReply(TypedDict):
    forgotten: bool


class ExpireSlotsReply(TypedDict):
    expired: list[str]  # run ids whose slot, held under a lease granted before, was freed


class WaitingReply(TypedDict):
    waiting: list[str]  # of the run ids asked, those waiting in the limiter's line
    paused: bool


class PauseReply(TypedDict):
    paused: bool


class LimiterStatus(TypedDict):
    held: list[str]  # run ids holding a slot
    offered: list[str]  # run ids woken, their slot reserved
    waiting: int


__all__ = [
    "AcquireReply",
    "ArmDeferred",
    "ArmReply",
    "Armed",
    "CancelReply",
    "CloseReply",
    "ExpireReply",
    "ForgetReply",
    "Handoff",
    "HolderGone",
    "LeaseGranted",
    "LeaseNotDue",
    "LeaseRefused",
    "LeaseReply",
    "LimiterStatus",
    "LimitsMessage",
    "PauseReply",
    "PhaseName",
    "PlacementsReply",
    "ReleaseReply",
    "Released",
    "RenewReply",
    "Renewed",
    "SlotGranted",
    "SlotLost",
    "SlotRefused",
    "SlotReleaseReply",
    "SlotReleased",
    "SlotReleasesReply",
    "SlotRenewReply",
    "StatusClosed",
    "StatusOpen",
    "StatusReply",
    "WaitingReply",
]
