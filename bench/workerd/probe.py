"""What one binding call costs from a Python Worker on local workerd: a D1 query, a Durable
Object RPC (with and without a storage write), and a queue message from send to consumer.
Routes: /d1?n=, /do?n=, /do_write?n=, /queue?n= then /queue_result."""

import asyncio
import json
import statistics
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

from workers import DurableObject, Request, Response, WorkerEntrypoint


def now_ms() -> float:
    return time.time() * 1000


class Probe(DurableObject):
    async def ping(self) -> int:
        return 1

    async def write(self, value: int) -> int:
        await self.ctx.storage.put("v", value)
        return 1

    async def record(self, value: float) -> None:
        values = json.loads(await self.ctx.storage.get("q") or "[]")
        values.append(value)
        await self.ctx.storage.put("q", json.dumps(values))

    async def results(self) -> str:
        return await self.ctx.storage.get("q") or "[]"


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


class Default(WorkerEntrypoint):
    async def fetch(self, request: Request) -> Response:
        url = urlparse(str(request.url))
        n = int(parse_qs(url.query).get("n", ["20"])[0])
        probe = self.env.PROBE.getByName("probe")
        times: list[float] = []
        if url.path == "/health":
            return Response("ok")
        if url.path == "/d1":
            for _ in range(n):
                start = now_ms()
                await self.env.DB.prepare("SELECT 1 AS one").first()
                times.append(now_ms() - start)
        elif url.path in ("/do", "/do_write"):
            for i in range(n):
                start = now_ms()
                if url.path == "/do":
                    await probe.ping()
                else:
                    await probe.write(i)
                times.append(now_ms() - start)
        elif url.path == "/queue":
            for _ in range(n):
                await self.env.QUEUE.send(json.dumps({"sent": now_ms()}))
                await asyncio.sleep(0.2)
            return Response("sent")
        elif url.path == "/queue_result":
            return Response(json.dumps(summary(json.loads(await probe.results()))))
        return Response(json.dumps(summary(times)))

    async def queue(self, batch: Any, env: Any = None, ctx: Any = None) -> None:
        arrived = now_ms()
        probe = self.env.PROBE.getByName("probe")
        for message in batch.messages:
            sent = json.loads(message.body)["sent"]
            await probe.record(arrived - sent)
            message.ack()
