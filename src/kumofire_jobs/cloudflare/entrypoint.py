"""The wiring of the `JobsService` RPC entrypoint: `rpc_entrypoint` gives the entrypoint class
of `src/entry.py` one real method per operation of `api/operations.py` (Workers RPC calls the
methods of the class itself), each calling its function of `service` (the behaviour) over the
call's bound `Jobs`. Kept apart from `service`, which `JobsClient` imports for the error
format, so a calling Worker does not load it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

from ..api import operations
from ..core.jobs import Jobs
from .service import (
    answer,
    attempts,
    cancel,
    cancel_many,
    counts,
    create,
    create_flow,
    create_many,
    create_schedule,
    delete,
    delete_many,
    delete_schedule,
    delete_schedule_by_key,
    disable_schedule,
    disable_schedule_by_key,
    enable_schedule,
    enable_schedule_by_key,
    get,
    get_job,
    get_schedule,
    get_schedule_by_key,
    list_jobs,
    list_runs,
    list_schedules,
    logs,
    pause_job,
    promote,
    resume_job,
    retry,
    retry_many,
    update_schedule,
    update_schedule_by_key,
    upsert_schedule,
)

E = TypeVar("E", bound=type)

RpcFunction = Callable[..., Awaitable[Any]]

FUNCTIONS: Final[Mapping[str, RpcFunction]] = {
    # One per operation of `operations.OPERATIONS`, by its name (tests/test_operations.py).
    "create": create,
    "create_many": create_many,
    "create_flow": create_flow,
    "get": get,
    "attempts": attempts,
    "logs": logs,
    "list": list_runs,
    "counts": counts,
    "cancel": cancel,
    "retry": retry,
    "promote": promote,
    "delete": delete,
    "cancel_many": cancel_many,
    "retry_many": retry_many,
    "delete_many": delete_many,
    "list_jobs": list_jobs,
    "get_job": get_job,
    "pause_job": pause_job,
    "resume_job": resume_job,
    "create_schedule": create_schedule,
    "upsert_schedule": upsert_schedule,
    "get_schedule": get_schedule,
    "get_schedule_by_key": get_schedule_by_key,
    "update_schedule": update_schedule,
    "update_schedule_by_key": update_schedule_by_key,
    "disable_schedule": disable_schedule,
    "disable_schedule_by_key": disable_schedule_by_key,
    "enable_schedule": enable_schedule,
    "enable_schedule_by_key": enable_schedule_by_key,
    "delete_schedule": delete_schedule,
    "delete_schedule_by_key": delete_schedule_by_key,
    "list_schedules": list_schedules,
}


def _entrypoint_method(
    op: operations.Operation, function: RpcFunction, jobs_of: Callable[[Any], Jobs]
) -> Callable[..., Awaitable[Any]]:
    """The entrypoint's method of `op`: positional arguments as `op.rpc` names them (a
    trailing `query` optional), the function's answer or its error as `answer()` gives it."""
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [inspect.Parameter("self", positional)]
        + [
            inspect.Parameter(
                arg, positional, default=None if arg == "query" else inspect.Parameter.empty
            )
            for arg in op.rpc
        ]
    )

    async def method(*args: Any, **kwargs: Any) -> Any:
        call = signature.bind(*args, **kwargs)  # a wrong call raises TypeError, as a def does
        call.apply_defaults()
        self, *values = call.arguments.values()
        return await answer(function(jobs_of(self), *values))

    method.__name__ = method.__qualname__ = op.name
    method.__doc__ = op.summary
    method.__signature__ = signature  # type: ignore[attr-defined]
    return method


def rpc_entrypoint(jobs_of: Callable[[Any], Jobs]) -> Callable[[E], E]:
    """A class decorator giving the `JobsService` `WorkerEntrypoint` one real method per
    operation of `operations.OPERATIONS` (Workers RPC calls the methods of the class itself):
    `jobs_of(self)` is the bound jobs API of a call (in `src/entry.py`,
    `app.jobs(self.env)`)."""

    def decorate(cls: E) -> E:
        for op in operations.OPERATIONS:
            setattr(cls, op.name, _entrypoint_method(op, FUNCTIONS[op.name], jobs_of))
        return cls

    return decorate
