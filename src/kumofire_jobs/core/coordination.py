"""Calls to a run's coordinator actor, through the Durable Object namespace binding.

One actor per run, addressed by the run id. Results are the plain dicts the actor's RPC
methods return (see `kumofire_coordinator.endpoint`).
"""

from __future__ import annotations

from typing import Any

from .bindings import DurableObjectNamespace, DurableObjectStub


class Coordinators:
    def __init__(self, namespace: DurableObjectNamespace) -> None:
        self._namespace = namespace

    def _stub(self, run_id: str) -> DurableObjectStub:
        return self._namespace.getByName(run_id)

    async def arm(self, run_id: str, due_ms: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._stub(run_id).arm(run_id, due_ms)
        return result

    async def lease(self, run_id: str, lease_ms: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._stub(run_id).lease(run_id, lease_ms)
        return result

    async def renew(self, run_id: str, token: int, lease_ms: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._stub(run_id).renew(token, lease_ms)
        return result

    async def release(self, run_id: str, token: int, rearm_ms: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._stub(run_id).release(token, rearm_ms)
        return result

    async def cancel(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._stub(run_id).cancel()
        return result

    async def close(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._stub(run_id).close()
        return result

    async def status(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._stub(run_id).status()
        return result
