"""The `JobsService` RPC entrypoint's methods (API.md, "Service binding (RPC)"), as plain
async functions over a bound `Jobs`, one per operation of `api/operations.py`
(`entrypoint.FUNCTIONS` names them; `entrypoint.rpc_entrypoint` makes them the methods of the
entrypoint class in `src/entry.py`).

Workers RPC passes positional arguments only and plain values: each function takes an id or
one dict shaped like the HTTP body or query, and returns the dict the HTTP API answers. A
failure raises `JobsRpcError`, whose message starts with the error code
(`"not_found: run not found"`). The entrypoint does not let it escape: `answer()` turns it
into the JavaScript `Error` the method returns, since an exception raised out of a Python
entrypoint reaches the caller as a Pyodide `PythonError` whose message is the whole traceback
(and workerd logs it as an uncaught exception).

Where HTTP answers 404 (an unknown run id, schedule id or key) these raise `not_found`, so no
method returns None. Two answers differ from HTTP's because HTTP says it with the status alone:
`upsert_schedule` returns the schedule without telling whether it was created (201) or updated
(200), and `delete_schedule*` return `{"deleted": true}` where HTTP answers 204 with no body.
`kumofire_jobs.client.JobsClient` turns all of this back into the typed jobs API.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, ParamSpec, TypeVar

from ..api import operations, wire
from ..core import validation
from ..core.errors import KumofireJobsError, ValidationError
from ..core.jobs import Jobs
from ..core.log import get_logger
from ..core.models import JobInfo, JobSchedule
from .ffi import error_value, to_py

log = get_logger()

P = ParamSpec("P")
R = TypeVar("R")

LIST_QUERY_KEYS: Final = frozenset(operations.RUN_QUERY)
COUNTS_QUERY_KEYS: Final = frozenset(operations.COUNTS_QUERY)
SCHEDULE_LIST_QUERY_KEYS: Final = frozenset(operations.SCHEDULE_QUERY)


class JobsRpcError(Exception):
    """What a `JobsService` method raises: `str()` is `"<code>: <message>"`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def split_error(text: str) -> tuple[str, str] | None:
    """The (code, message) of a `JobsService` error as the caller sees its text: the answered
    `Error`'s message (or its `toString()`, `"Error: <code>: <message>"`, as the Workers SDK
    presents it), or, from a service that raised instead (before `answer()`), the Python
    traceback Workers RPC delivers, whose last line is
    `kumofire_jobs.cloudflare.service.JobsRpcError: <code>: <message>`."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1].strip()
    marker = f"{JobsRpcError.__name__}: "
    if marker in last:
        last = last.split(marker, 1)[1]
    elif len(lines) > 1:
        return None
    else:
        last = last.removeprefix("Error: ")
    code, sep, message = last.partition(": ")
    if not sep or not code or not all(c.islower() or c == "_" for c in code):
        return None
    return code, message


async def answer(call: Awaitable[R]) -> R | Any:
    """What a `JobsService` method returns over Workers RPC: the call's result, or, when it
    raised `JobsRpcError`, a JavaScript `Error` whose message is `"<code>: <message>"` and
    whose `code` property is the code, returned as the answer rather than thrown. A JavaScript
    caller checks `result instanceof Error`; `JobsClient` raises the jobs API's exception."""
    try:
        return await call
    except JobsRpcError as exc:
        return error_value(str(exc), code=exc.code)


def rpc_method(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Errors as `JobsRpcError`: the API's own with their code; anything else is logged and
    answered as `internal_error`, as the HTTP API answers it, without internals."""

    @functools.wraps(function)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await function(*args, **kwargs)
        except JobsRpcError:
            raise
        except KumofireJobsError as exc:
            raise JobsRpcError(exc.code, str(exc)) from None
        except RecursionError:
            # Converting a deeply nested argument, as the HTTP API's JSON decoding says it.
            raise JobsRpcError(
                ValidationError.code,
                "the arguments nest too deeply to read "
                f"(a payload may nest at most {validation.MAX_PAYLOAD_DEPTH} levels)",
            ) from None
        except Exception:
            log.exception("rpc.internal_error", method=function.__name__)
            raise JobsRpcError("internal_error", "the server failed to handle the call") from None

    return call


def _not_found(what: str) -> JobsRpcError:
    return JobsRpcError("not_found", f"{what} not found")


def _found(value: R | None, what: str) -> R:
    """`value`, or the `not_found` error for a `what` that does not exist."""
    if value is None:
        raise _not_found(what)
    return value


def _run_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError("the run id must be a non-empty string")
    return value


def _query(value: Any, allowed: frozenset[str]) -> dict[str, Any]:
    query = to_py(value)
    if query is None:
        return {}
    if not isinstance(query, dict):
        raise ValidationError("the query must be an object")
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ValidationError(f"the query has unknown field(s): {', '.join(unknown)}")
    return query


def _optional_str(query: Mapping[str, Any], key: str) -> str | None:
    value = query.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{key} must be a string")
    return value


def _limit(fields: Mapping[str, Any]) -> int:
    limit = fields.get("limit")
    if limit is None:
        return validation.DEFAULT_LIST_LIMIT
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValidationError("limit must be an integer")
    return limit


@rpc_method
async def create(jobs: Jobs, body: Any) -> dict[str, Any]:
    created = await jobs.create_many([wire.create_request(to_py(body))])
    return wire.created_to_wire(created[0])


@rpc_method
async def create_many(jobs: Jobs, bodies: Any) -> dict[str, Any]:
    items = to_py(bodies)
    if not isinstance(items, list):
        raise ValidationError("bodies must be a list of run bodies")
    requests = [wire.create_request(item, f"bodies[{i}]") for i, item in enumerate(items)]
    created = await jobs.create_many(requests)
    return {"items": [wire.created_to_wire(c) for c in created]}


@rpc_method
async def create_flow(jobs: Jobs, body: Any) -> dict[str, Any]:
    """`POST /v1/flows`: `{"parent_id": ..., "children": [...]}`."""
    parent, children = wire.flow_request(to_py(body))
    return wire.flow_to_wire(await jobs.create_flow(parent, children))


@rpc_method
async def get(jobs: Jobs, run_id: Any) -> dict[str, Any]:
    return wire.run_to_wire(_found(await jobs.get(_run_id(run_id)), "run"))


@rpc_method
async def attempts(jobs: Jobs, run_id: Any) -> dict[str, Any]:
    return wire.attempts_to_wire(_found(await jobs.attempts(_run_id(run_id)), "run"))


@rpc_method
async def logs(jobs: Jobs, run_id: Any) -> dict[str, Any]:
    return wire.logs_to_wire(_found(await jobs.logs(_run_id(run_id)), "run"))


@rpc_method
async def list_runs(jobs: Jobs, query: Any = None) -> dict[str, Any]:
    fields = _query(query, LIST_QUERY_KEYS)
    page = await jobs.list(
        status=_optional_str(fields, "status"),
        name=_optional_str(fields, "name"),
        schedule_id=_optional_str(fields, "schedule_id"),
        parent_id=_optional_str(fields, "parent_id"),
        limit=_limit(fields),
        cursor=_optional_str(fields, "cursor"),
    )
    return wire.page_to_wire(page)


@rpc_method
async def counts(jobs: Jobs, query: Any = None) -> dict[str, int]:
    fields = _query(query, COUNTS_QUERY_KEYS)
    return await jobs.counts(name=_optional_str(fields, "name"))


@rpc_method
async def cancel(jobs: Jobs, run_id: Any) -> dict[str, Any]:
    return wire.run_to_wire(_found(await jobs.cancel(_run_id(run_id)), "run"))


@rpc_method
async def retry(jobs: Jobs, run_id: Any) -> dict[str, Any]:
    return wire.run_to_wire(_found(await jobs.retry(_run_id(run_id)), "run"))


@rpc_method
async def promote(jobs: Jobs, run_id: Any) -> dict[str, Any]:
    return wire.run_to_wire(_found(await jobs.promote(_run_id(run_id)), "run"))


@rpc_method
async def delete(jobs: Jobs, run_id: Any) -> dict[str, bool]:
    """`DELETE /v1/runs/{id}`: `{"deleted": true}` where HTTP answers 204."""
    if not await jobs.delete(_run_id(run_id)):
        raise _not_found("run")
    return {"deleted": True}


@rpc_method
async def cancel_many(jobs: Jobs, body: Any) -> dict[str, Any]:
    return wire.bulk_to_wire(await jobs.cancel_many(**wire.bulk_filter(to_py(body))))


@rpc_method
async def retry_many(jobs: Jobs, body: Any) -> dict[str, Any]:
    return wire.bulk_to_wire(await jobs.retry_many(**wire.bulk_filter(to_py(body))))


@rpc_method
async def delete_many(jobs: Jobs, body: Any) -> dict[str, Any]:
    return wire.bulk_to_wire(await jobs.delete_many(**wire.bulk_filter(to_py(body))))


def _job_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError("the job name must be a non-empty string")
    return value


def _job_found(job: JobInfo | None) -> dict[str, Any]:
    return wire.job_to_wire(_found(job, "job"))


@rpc_method
async def list_jobs(jobs: Jobs) -> dict[str, Any]:
    return {"items": [wire.job_to_wire(job) for job in await jobs.list_jobs()]}


@rpc_method
async def get_job(jobs: Jobs, name: Any) -> dict[str, Any]:
    return _job_found(await jobs.get_job(_job_name(name)))


@rpc_method
async def pause_job(jobs: Jobs, name: Any) -> dict[str, Any]:
    return _job_found(await jobs.pause_job(_job_name(name)))


@rpc_method
async def resume_job(jobs: Jobs, name: Any) -> dict[str, Any]:
    return _job_found(await jobs.resume_job(_job_name(name)))


# --- schedules --------------------------------------------------------------------------------


def _ref(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"the schedule {what} must be a non-empty string")
    return value


def _schedule(schedule: JobSchedule | None) -> dict[str, Any]:
    return wire.schedule_to_wire(_found(schedule, "schedule"))


@rpc_method
async def create_schedule(jobs: Jobs, body: Any) -> dict[str, Any]:
    """`POST /v1/schedules`: the new schedule (HTTP 201)."""
    fields = wire.schedule_fields(to_py(body), operations.SCHEDULE_CREATE_FIELDS)
    if fields.get("enabled", True) is None:
        del fields["enabled"]
    name = fields.pop("name", None)
    return _schedule(await jobs.create_schedule(name, **fields))


@rpc_method
async def upsert_schedule(jobs: Jobs, key: Any, body: Any) -> dict[str, Any]:
    """`PUT /v1/schedules/by-key/{key}`: the schedule, created or updated. Like the HTTP body,
    the answer does not say which (HTTP tells by its status, 201 or 200)."""
    fields = wire.schedule_fields(to_py(body), operations.SCHEDULE_PATCH_FIELDS)
    name = fields.pop("name", None)
    return _schedule(await jobs.upsert_schedule(_ref(key, "key"), name, **fields))


@rpc_method
async def get_schedule(jobs: Jobs, schedule_id: Any) -> dict[str, Any]:
    return _schedule(await jobs.get_schedule(_ref(schedule_id, "id")))


@rpc_method
async def get_schedule_by_key(jobs: Jobs, key: Any) -> dict[str, Any]:
    return _schedule(await jobs.get_schedule_by_key(_ref(key, "key")))


@rpc_method
async def update_schedule(jobs: Jobs, schedule_id: Any, patch: Any) -> dict[str, Any]:
    fields = wire.schedule_fields(to_py(patch), operations.SCHEDULE_PATCH_FIELDS)
    return _schedule(await jobs.update_schedule(_ref(schedule_id, "id"), **fields))


@rpc_method
async def update_schedule_by_key(jobs: Jobs, key: Any, patch: Any) -> dict[str, Any]:
    fields = wire.schedule_fields(to_py(patch), operations.SCHEDULE_PATCH_FIELDS)
    return _schedule(await jobs.update_schedule_by_key(_ref(key, "key"), **fields))


@rpc_method
async def disable_schedule(jobs: Jobs, schedule_id: Any) -> dict[str, Any]:
    return _schedule(await jobs.disable_schedule(_ref(schedule_id, "id")))


@rpc_method
async def disable_schedule_by_key(jobs: Jobs, key: Any) -> dict[str, Any]:
    return _schedule(await jobs.disable_schedule_by_key(_ref(key, "key")))


@rpc_method
async def enable_schedule(jobs: Jobs, schedule_id: Any) -> dict[str, Any]:
    return _schedule(await jobs.enable_schedule(_ref(schedule_id, "id")))


@rpc_method
async def enable_schedule_by_key(jobs: Jobs, key: Any) -> dict[str, Any]:
    return _schedule(await jobs.enable_schedule_by_key(_ref(key, "key")))


@rpc_method
async def delete_schedule(jobs: Jobs, schedule_id: Any) -> dict[str, bool]:
    """`DELETE /v1/schedules/{id}`: `{"deleted": true}` where HTTP answers 204; a schedule that
    does not exist raises `not_found`, as HTTP answers 404 and as a missing run does here."""
    if not await jobs.delete_schedule(_ref(schedule_id, "id")):
        raise _not_found("schedule")
    return {"deleted": True}


@rpc_method
async def delete_schedule_by_key(jobs: Jobs, key: Any) -> dict[str, bool]:
    if not await jobs.delete_schedule_by_key(_ref(key, "key")):
        raise _not_found("schedule")
    return {"deleted": True}


@rpc_method
async def list_schedules(jobs: Jobs, query: Any = None) -> dict[str, Any]:
    """`GET /v1/schedules`: `enabled` is a JSON boolean here (the HTTP query's `true`/`false`)."""
    fields = _query(query, SCHEDULE_LIST_QUERY_KEYS)
    enabled = fields.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise ValidationError("enabled must be true or false")
    page = await jobs.list_schedules(
        enabled=enabled,
        name=_optional_str(fields, "name"),
        limit=_limit(fields),
        cursor=_optional_str(fields, "cursor"),
    )
    return wire.schedule_page_to_wire(page)
