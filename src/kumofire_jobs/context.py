"""What a handler receives: the run, a heartbeat, a bound logger."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .models import JobRun


class JobContext:
    """`ctx.job` is the run as it started (`attempt` is 1 on the first execution);
    `await ctx.heartbeat()` extends the lease now and raises `JobCanceledError` or
    `LeaseLostError` if the run was canceled or another consumer took it over."""

    def __init__(self, job: JobRun, heartbeat: Callable[[], Awaitable[None]], log: Any) -> None:
        self.job = job
        self.log = log
        self._heartbeat = heartbeat

    async def heartbeat(self) -> None:
        await self._heartbeat()


Handler = Callable[[JobContext], Awaitable[Any]]
