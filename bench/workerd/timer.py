"""The same floor measured from Python: a Python Durable Object that only records how late its
alarm fired (no D1, no queue), on the same Pyodide as the service. Routes as timer.js."""

import time
from typing import Any
from urllib.parse import parse_qs, urlparse

from workers import DurableObject, Request, Response, WorkerEntrypoint


def now_ms() -> int:
    return int(time.time() * 1000)


class Timer(DurableObject):
    async def arm(self, due: int) -> None:
        await self.ctx.storage.put("due", due)
        await self.ctx.storage.setAlarm(due)

    async def alarm(self, info: Any = None) -> None:
        due = await self.ctx.storage.get("due")
        await self.ctx.storage.put("late", now_ms() - due)

    async def late(self) -> Any:
        return await self.ctx.storage.get("late")


class Default(WorkerEntrypoint):
    async def fetch(self, request: Request) -> Response:
        import asyncio
        import json

        url = urlparse(str(request.url))
        query = parse_qs(url.query)
        n = int(query.get("n", ["1"])[0])
        if url.path == "/health":
            return Response("ok")
        if url.path == "/arm":
            due = now_ms() + int(query.get("delay", ["2000"])[0])
            stubs = [self.env.TIMER.getByName(f"{due}-{i}") for i in range(n)]
            await asyncio.gather(*(stub.arm(due) for stub in stubs))
            return Response(json.dumps({"key": str(due)}))
        key = query["key"][0]
        stubs = [self.env.TIMER.getByName(f"{key}-{i}") for i in range(n)]
        lates = [await stub.late() for stub in stubs]
        lates = [None if v is None else int(v) for v in lates]
        return Response(json.dumps({"lates": None if None in lates else lates}))
