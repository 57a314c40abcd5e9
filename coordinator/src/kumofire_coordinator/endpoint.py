"""The Durable Object's RPC surface over a `CoordinatorActor`.

Workers RPC passes positional arguments only and plain values, so each method takes and
returns exactly that: the replies are the TypedDicts of `messages`. A Durable Object class
mixes this in and builds `self.actor` in its constructor from its `ctx.storage`, a clock and
the jobs layer's delivery hook.
"""

from __future__ import annotations

from typing import Any

from .actor import CoordinatorActor
from .limiter import LimiterActor
from .messages import (
    AcquireReply,
    ArmReply,
    CancelReply,
    CloseReply,
    ExpireReply,
    ExpireSlotsReply,
    ForgetReply,
    LeaseReply,
    LimiterStatus,
    LimitsMessage,
    PauseReply,
    PlacementsReply,
    ReleaseReply,
    RenewReply,
    SlotReleaseReply,
    SlotReleasesReply,
    SlotRenewReply,
    StatusReply,
    WaitingReply,
)


class CoordinatorEndpoint:
    """One class serves both actors: a run's coordinator (named by the run id) and a job's
    limiter (named `limiter:<job>`, methods `limit_*`). The alarm is the coordinator's when
    the object holds coordinator state, the limiter's otherwise."""

    actor: CoordinatorActor
    limiter: LimiterActor | None = None

    async def arm(
        self, key: str, due_ms: int, note: str | None = None, inline: bool = False
    ) -> ArmReply:
        # Only a non-empty string is a note (a caller passes "" for none before `inline`).
        note = note if isinstance(note, str) and note else None
        return await self.actor.arm(key, int(due_ms), note, bool(inline))

    async def lease(
        self,
        key: str,
        lease_ms: int,
        early: bool = False,
        vacant: bool = False,
        token: int = 0,
    ) -> LeaseReply:
        return await self.actor.lease(
            key, int(lease_ms), bool(early), bool(vacant), int(token or 0)
        )

    async def renew(self, token: int, lease_ms: int) -> RenewReply:
        return await self.actor.renew(int(token), int(lease_ms))

    async def release(self, token: int, rearm_ms: int | None = None) -> ReleaseReply:
        return await self.actor.release(int(token), None if rearm_ms is None else int(rearm_ms))

    async def cancel(self) -> CancelReply:
        return await self.actor.cancel()

    async def close(self) -> CloseReply:
        return await self.actor.close()

    async def status(self) -> StatusReply:
        return await self.actor.status()

    async def expire_lease(self, granted_before_ms: int) -> ExpireReply:
        return await self.actor.expire_lease(int(granted_before_ms))

    async def alarm(self, alarmInfo: Any = None) -> None:
        if not await self.actor.alarm() and self.limiter is not None:
            await self.limiter.alarm()

    # --- the limiter ------------------------------------------------------------------------

    def _limiter(self) -> LimiterActor:
        if self.limiter is None:
            raise RuntimeError("this Durable Object class hosts no limiter")
        return self.limiter

    async def limit_acquire(
        self,
        run_id: str,
        token: int,
        key: str,
        priority: int,
        due_ms: int,
        lease_ms: int,
        limits: LimitsMessage,
    ) -> AcquireReply:
        return await self._limiter().acquire(
            run_id, int(token), key, int(priority), int(due_ms), int(lease_ms), limits
        )

    async def limit_place_many(
        self,
        run_ids: list[str],
        keys: list[str],
        priorities: list[int],
        due_ms: list[int],
        offer_ms: int,
        limits: LimitsMessage,
    ) -> PlacementsReply:
        return await self._limiter().place_many(
            [str(r) for r in run_ids], [str(k) for k in keys], [int(p) for p in priorities],
            [int(d) for d in due_ms], int(offer_ms), limits,
        )  # fmt: skip

    async def limit_renew(self, run_id: str, token: int, key: str, lease_ms: int) -> SlotRenewReply:
        return await self._limiter().renew(run_id, int(token), key, int(lease_ms))

    async def limit_release(self, run_id: str, token: int, lease_ms: int = 0) -> SlotReleaseReply:
        return await self._limiter().release(run_id, int(token), int(lease_ms))

    async def limit_release_many(
        self, run_ids: list[str], tokens: list[int], lease_ms: int
    ) -> SlotReleasesReply:
        return await self._limiter().release_many(
            [str(r) for r in run_ids], [int(t) for t in tokens], int(lease_ms)
        )

    async def limit_forget(self, run_id: str) -> ForgetReply:
        return await self._limiter().forget(run_id)

    async def limit_expire_slots(
        self, granted_before_ms: int, run_ids: list[str]
    ) -> ExpireSlotsReply:
        return await self._limiter().expire_slots(int(granted_before_ms), [str(r) for r in run_ids])

    async def limit_waiting(self, run_ids: list[str]) -> WaitingReply:
        return await self._limiter().waiting([str(r) for r in run_ids])

    async def limit_pause(self, paused: bool) -> PauseReply:
        return await self._limiter().pause(bool(paused))

    async def limit_status(self) -> LimiterStatus:
        return await self._limiter().status()
