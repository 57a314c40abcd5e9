"""The HTTP endpoints of a run's history (API.md Part 2, "Seeing what happened"): its attempts
and its log lines. `web/app.py` registers them with the rest, one per row of
`api/operations.py`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from ..api import wire
from ..core.jobs import Jobs
from .control import Register


def register_history(
    operation: Register, jobs: Callable[[Request], Jobs], not_found: Callable[[str], Exception]
) -> None:
    @operation("attempts")
    async def attempts(request: Request) -> Any:
        found = await jobs(request).attempts(request.path_params["run_id"])
        if found is None:
            raise not_found("run")
        return wire.attempts_to_wire(found)

    @operation("logs")
    async def logs(request: Request) -> Any:
        found = await jobs(request).logs(request.path_params["run_id"])
        if found is None:
            raise not_found("run")
        return wire.logs_to_wire(found)
