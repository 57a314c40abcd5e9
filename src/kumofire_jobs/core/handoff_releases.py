"""The slot releases of one queue batch's chains, asked in one event-loop turn, sent to each
job's limiter in one request (`limit_release_many`) instead of one each.

The chains (one per slot) step in the same turns (`handoff_writes.py`): their handlers end in
one turn, and each releases its slot with a hand-over. Each release's reply is the one
`limit_release(run_id, token, lease_ms)` would give; a release alone in its turn is that call
(so a lone chain, and the cost of an isolated run, are as before). A failed request fails
every release of it: each chain ends, and each slot expires with its lease (a run the limiter
had leased for us, with its own lease: it is delivered again), as after a failed release.

Held by the batch's `handoff.Budget`, so no request crosses invocations (a Worker cannot await
another request's I/O).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from kumofire_coordinator.messages import SlotReleaseReply, SlotReleasesReply

__all__ = ["Releases"]


class _Request:
    """The releases of one job asked in one turn; `sent` holds the request's answer once sent."""

    __slots__ = ("pairs", "sent")

    def __init__(self) -> None:
        self.pairs: list[tuple[str, int]] = []
        self.sent: asyncio.Future[asyncio.Future[Any]] = asyncio.get_running_loop().create_future()


class Releases:
    def __init__(self, stub: Callable[[str], Any], lease_ms: int) -> None:
        self._stub = stub  # job -> its limiter's stub
        self._lease_ms = lease_ms
        self._pending: dict[str, _Request] = {}

    async def release(self, job: str, run_id: str, token: int) -> SlotReleaseReply:
        """`limit_release(run_id, token, lease_ms)` on the job's limiter, with the other
        releases of this turn."""
        request = self._pending.get(job)
        if request is None:
            request = self._pending[job] = _Request()
            # Sent after what is ready in this turn: the other chains' releases asked in it
            # join the request. (A callback, not a task: the callers await the request's
            # own answer, with no step between it and them.)
            asyncio.get_running_loop().call_soon(self._send, job)
        index = len(request.pairs)
        request.pairs.append((run_id, token))
        reply = await (await request.sent)
        if len(request.pairs) == 1:
            return cast(SlotReleaseReply, reply)
        return cast(SlotReleasesReply, reply)["released"][index]

    def _send(self, job: str) -> None:
        request = self._pending.pop(job)
        pairs = request.pairs
        try:
            stub = self._stub(job)
            if len(pairs) == 1:
                call = stub.limit_release(pairs[0][0], pairs[0][1], self._lease_ms)
            else:
                run_ids = [run_id for run_id, _ in pairs]
                call = stub.limit_release_many(run_ids, [t for _, t in pairs], self._lease_ms)
            # (A stub's call is sent now; on Workers it is awaited by each of its callers.)
            request.sent.set_result(asyncio.ensure_future(call))
        except Exception as exc:
            request.sent.set_exception(exc)
