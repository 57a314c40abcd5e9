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

    async def deleteAll(self) -> None: ...  # noqa: N802 - the platform's spelling

    async def getAlarm(self) -> float | None: ...  # noqa: N802

    async def setAlarm(self, scheduled_time: float) -> None: ...  # noqa: N802

    async def deleteAlarm(self) -> None: ...  # noqa: N802
