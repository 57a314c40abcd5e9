"""The Durable Object's RPC surface over a `CoordinatorActor`.

Workers RPC passes positional arguments only and plain values, so each method takes and
returns exactly that: the replies are the TypedDicts of `messages`. A Durable Object class
mixes this in and builds `self.actor` in its constructor from its `ctx.storage`, a clock and
the jobs layer's delivery hook.
"""

from __future__ import annotations

from typing import Any

from .actor import CoordinatorActor
from .messages import (
    ArmReply,
    CancelReply,
    CloseReply,
    LeaseReply,
    ReleaseReply,
    RenewReply,
    StatusReply,
)


class CoordinatorEndpoint:
    actor: CoordinatorActor

    async def arm(self, key: str, due_ms: int) -> ArmReply:
        return await self.actor.arm(key, int(due_ms))

    async def lease(self, key: str, lease_ms: int) -> LeaseReply:
        return await self.actor.lease(key, int(lease_ms))

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

    async def alarm(self, alarmInfo: Any = None) -> None:
        await self.actor.alarm()
