"""The slice of Durable Object storage the actor uses, in the platform's spelling.

`ctx.storage` of a Durable Object satisfies it on Cloudflare (through the adapter) and the
embedded binding's storage satisfies it locally. Alarm times are epoch milliseconds.
"""

from __future__ import annotations

from typing import Any, Protocol


class ActorStorage(Protocol):
    async def get(self, key: str) -> Any: ...

    async def put(self, key: str, value: Any) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def deleteAll(self) -> None: ...

    async def getAlarm(self) -> float | None: ...

    async def setAlarm(self, scheduled_time: float) -> None: ...

    async def deleteAlarm(self) -> None: ...
