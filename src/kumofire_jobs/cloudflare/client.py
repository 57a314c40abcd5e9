"""The jobs API over a service binding: `JobsClient(env.JOBS)` in another Python Worker.

```toml
# the calling Worker's wrangler.toml
[[services]]
binding = "JOBS"
service = "kumofire-jobs"
entrypoint = "JobsService"
```

```python
from kumofire_jobs.client import JobsClient

jobs = JobsClient(self.env.JOBS)
created = await jobs.create("email", {"to": "a@example.com"}, delay=60)
run = await jobs.get(created.kumofire_job_run_id)
```

The methods, arguments and results are those of a bound runtime's jobs API (`Jobs`): the
client turns them into the `JobsService` RPC calls (positional arguments only, one dict shaped
like the HTTP body or query, times as RFC 3339 strings) and the answers back into the models
(`CreatedRun`, `JobRun`, `JobSchedule`, `Page`). The service answers an error as a JavaScript
`Error` whose message is `"<code>: <message>"` (older versions raised it, and Workers RPC
delivered their traceback); either comes back as the exception the jobs API raises:
`UnknownJobError`, `ValidationError`, `PayloadTooLargeError`, `ConflictError`, or None /
False where the jobs API answers a missing run or schedule so (`get`, `attempts`, `logs`,
`cancel`, `retry`, `get_schedule`, `update_schedule`, `enable_schedule`, `disable_schedule`,
the `*_by_key` forms; the `delete_schedule*` methods return False). Any other code raises
`JobsServiceError` (its `code` says which, `internal_error` for a failure inside the service);
a failure that is not the service's answer (the binding missing, the network) propagates as
the platform raised it.

The binding may be the Workers SDK's wrapper (which converts arguments and results itself) or
the raw JavaScript object: arguments go out as JavaScript values and results come back through
`to_py()`, so both work. Importing this module reaches neither `sqlite3`, nor the local
bindings, nor `js`/`pyodide`, so it is safe on a Worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..api.protocol import JobsApi
from ..api.wire import (
    attempts_from_wire,
    bulk_body,
    bulk_from_wire,
    counts_from_wire,
    create_body,
    created_from_wire,
    created_items_from_wire,
    flow_body,
    flow_from_wire,
    given_fields,
    job_from_wire,
    jobs_from_wire,
    logs_from_wire,
    page_from_wire,
    run_from_wire,
    schedule_from_wire,
    schedule_patch_body,
    schedule_times_to_wire,
)
from ..core.errors import (
    ConflictError,
    KumofireJobsError,
    NotFoundError,
    PayloadTooLargeError,
    UnknownJobError,
    ValidationError,
)
from ..core.models import (
    BulkResult,
    CreatedFlow,
    CreatedRun,
    CreateRequest,
    JobInfo,
    JobRun,
    JobSchedule,
    LogLine,
    Page,
    RunAttempt,
)
from ..core.states import RunStatus
from .ffi import js_error, to_js, to_py
from .service import split_error

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..core.models import SchedulePatch

__all__ = ["JobsClient", "JobsServiceError"]

T = TypeVar("T")


class JobsServiceError(KumofireJobsError):
    """An error the service answered with a code the jobs API has no exception for
    (`internal_error`, or an answer this client cannot read: `invalid_response`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


ERRORS: Final[Mapping[str, type[KumofireJobsError]]] = {
    UnknownJobError.code: UnknownJobError,
    ValidationError.code: ValidationError,
    PayloadTooLargeError.code: PayloadTooLargeError,
    NotFoundError.code: NotFoundError,
    ConflictError.code: ConflictError,
}


def error_from_service(exc: BaseException) -> KumofireJobsError | None:
    """The jobs API's exception for a `JobsService` error, read from its message: the `Error`
    the service answers (a `JsException` from a raw binding, an `Exception("Error: ...")`
    from the SDK's wrapper), or what an older service raised (the Python traceback Workers RPC
    delivers); None when the failure is not the service's answer."""
    found = js_error(exc)
    text = found[1] if found is not None else str(exc)
    parts = split_error(text)
    if parts is None:
        return None
    code, message = parts
    error_type = ERRORS.get(code)
    if error_type is None:
        return JobsServiceError(code, message)
    return error_type(message)


# --- Reading answers ------------------------------------------------------------------------------


def _read(convert: Callable[[Any], T], data: Any) -> T:
    try:
        return convert(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise JobsServiceError(
            "invalid_response", f"the service answered a shape this client cannot read: {exc!r}"
        ) from None


# --- The client -------------------------------------------------------------------------------


class JobsClient(JobsApi):
    """The jobs API (`JobsApi`) of a deployed Kumofire Jobs service, through a service binding
    to its `JobsService` entrypoint (`JobsClient(self.env.JOBS)`)."""

    def __init__(self, binding: Any) -> None:
        self._binding = binding

    async def _call(self, method: str, *args: Any) -> Any:
        function = getattr(self._binding, method)
        js_args = [to_js(arg) for arg in args]  # a payload that is not plain data fails here
        try:
            result = await function(*js_args)
        except Exception as exc:
            error = error_from_service(exc)
            if error is None:
                raise
            if isinstance(error, JobsServiceError):
                raise error from exc
            raise error from None
        if isinstance(result, BaseException):  # the service answered an error
            answered = error_from_service(result)
            if answered is None:
                raise JobsServiceError(
                    "invalid_response", f"the service answered an error: {str(result)[:200]}"
                )
            raise answered
        return to_py(result)

    async def _maybe(self, method: str, *args: Any) -> Any:
        """A call whose not_found is the jobs API's None."""
        try:
            return await self._call(method, *args)
        except NotFoundError:
            return None

    # --- runs -------------------------------------------------------------------------------

    async def create(
        self,
        name: str,
        payload: Any = None,
        *,
        run_at: datetime | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        dedupe_key: str | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        dedupe_ttl: float | None = None,
    ) -> CreatedRun:
        request = CreateRequest(
            name=name,
            payload=payload,
            run_at=run_at,
            delay=delay,
            max_attempts=max_attempts,
            dedupe_key=dedupe_key,
            priority=priority,
            concurrency_key=concurrency_key,
            dedupe_ttl=dedupe_ttl,
        )
        return _read(created_from_wire, await self._call("create", create_body(request)))

    async def create_many(self, requests: Sequence[CreateRequest]) -> list[CreatedRun]:
        """Up to 100 runs in one call (one D1 transaction in the service)."""
        bodies = [create_body(request) for request in requests]
        return _read(created_items_from_wire, await self._call("create_many", bodies))

    async def create_flow(
        self, parent: CreateRequest, children: Sequence[CreateRequest]
    ) -> CreatedFlow:
        """A parent run that waits until each of its 1 to 100 children has finished."""
        body = flow_body(parent, list(children))
        return _read(flow_from_wire, await self._call("create_flow", body))

    async def get(self, run_id: str) -> JobRun | None:
        data = await self._maybe("get", run_id)
        return None if data is None else _read(run_from_wire, data)

    async def attempts(self, run_id: str) -> list[RunAttempt] | None:
        data = await self._maybe("attempts", run_id)
        return None if data is None else _read(attempts_from_wire, data)

    async def logs(self, run_id: str) -> list[LogLine] | None:
        data = await self._maybe("logs", run_id)
        return None if data is None else _read(logs_from_wire, data)

    async def list_jobs(self) -> list[JobInfo]:
        return _read(jobs_from_wire, await self._call("list_jobs"))

    async def get_job(self, name: str) -> JobInfo | None:
        data = await self._maybe("get_job", name)
        return None if data is None else _read(job_from_wire, data)

    async def pause_job(self, name: str) -> JobInfo | None:
        data = await self._maybe("pause_job", name)
        return None if data is None else _read(job_from_wire, data)

    async def resume_job(self, name: str) -> JobInfo | None:
        data = await self._maybe("resume_job", name)
        return None if data is None else _read(job_from_wire, data)

    async def list(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str | None = None,
        schedule_id: str | None = None,
        parent_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[JobRun]:
        query = given_fields(
            status=None if status is None else str(status),
            name=name,
            schedule_id=schedule_id,
            parent_id=parent_id,
            limit=limit,
            cursor=cursor,
        )
        return _read(page_from_wire(run_from_wire), await self._call("list", query))

    async def counts(self, *, name: str | None = None) -> dict[str, int]:
        return _read(counts_from_wire, await self._call("counts", given_fields(name=name)))

    async def cancel(self, run_id: str) -> JobRun | None:
        data = await self._maybe("cancel", run_id)
        return None if data is None else _read(run_from_wire, data)

    async def retry(self, run_id: str) -> JobRun | None:
        data = await self._maybe("retry", run_id)
        return None if data is None else _read(run_from_wire, data)

    async def promote(self, run_id: str) -> JobRun | None:
        data = await self._maybe("promote", run_id)
        return None if data is None else _read(run_from_wire, data)

    async def delete(self, run_id: str) -> bool:
        return await self._maybe("delete", run_id) is not None

    async def cancel_many(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str | None = None,
        schedule_id: str | None = None,
        created_before: datetime | None = None,
        limit: int = 1000,
    ) -> BulkResult:
        body = bulk_body(status, name, schedule_id, created_before, limit)
        return _read(bulk_from_wire, await self._call("cancel_many", body))

    async def retry_many(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str | None = None,
        schedule_id: str | None = None,
        created_before: datetime | None = None,
        limit: int = 1000,
    ) -> BulkResult:
        body = bulk_body(status, name, schedule_id, created_before, limit)
        return _read(bulk_from_wire, await self._call("retry_many", body))

    async def delete_many(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str | None = None,
        schedule_id: str | None = None,
        created_before: datetime | None = None,
        limit: int = 1000,
    ) -> BulkResult:
        body = bulk_body(status, name, schedule_id, created_before, limit)
        return _read(bulk_from_wire, await self._call("delete_many", body))

    # --- schedules --------------------------------------------------------------------------

    async def create_schedule(
        self,
        name: str,
        payload: Any = None,
        *,
        cron: str | None = None,
        every: float | None = None,
        key: str | None = None,
        timezone: str | None = None,
        enabled: bool = True,
        max_attempts: int | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        limit: int | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
    ) -> JobSchedule:
        body = given_fields(
            name=name, payload=payload, cron=cron, every=every, key=key, timezone=timezone,
            enabled=enabled, max_attempts=max_attempts, priority=priority,
            concurrency_key=concurrency_key,
            **schedule_times_to_wire(limit=limit, start_at=start_at, end_at=end_at),
        )  # fmt: skip
        return _read(schedule_from_wire, await self._call("create_schedule", body))

    async def upsert_schedule(
        self,
        key: str,
        name: str,
        payload: Any = None,
        *,
        cron: str | None = None,
        every: float | None = None,
        timezone: str | None = None,
        enabled: bool | None = None,
        max_attempts: int | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        limit: int | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
    ) -> JobSchedule:
        """Create the schedule `key` names, or change only the fields given."""
        body = given_fields(
            name=name, payload=payload, cron=cron, every=every, timezone=timezone,
            enabled=enabled, max_attempts=max_attempts, priority=priority,
            concurrency_key=concurrency_key,
            **schedule_times_to_wire(limit=limit, start_at=start_at, end_at=end_at),
        )  # fmt: skip
        return _read(schedule_from_wire, await self._call("upsert_schedule", key, body))

    async def _schedule(self, method: str, *args: Any) -> JobSchedule | None:
        data = await self._maybe(method, *args)
        return None if data is None else _read(schedule_from_wire, data)

    async def get_schedule(self, schedule_id: str) -> JobSchedule | None:
        return await self._schedule("get_schedule", schedule_id)

    async def get_schedule_by_key(self, key: str) -> JobSchedule | None:
        return await self._schedule("get_schedule_by_key", key)

    async def update_schedule(
        self, schedule_id: str, **patch: Unpack[SchedulePatch]
    ) -> JobSchedule | None:
        return await self._schedule("update_schedule", schedule_id, schedule_patch_body(patch))

    async def update_schedule_by_key(
        self, key: str, **patch: Unpack[SchedulePatch]
    ) -> JobSchedule | None:
        return await self._schedule("update_schedule_by_key", key, schedule_patch_body(patch))

    async def disable_schedule(self, schedule_id: str) -> JobSchedule | None:
        return await self._schedule("disable_schedule", schedule_id)

    async def disable_schedule_by_key(self, key: str) -> JobSchedule | None:
        return await self._schedule("disable_schedule_by_key", key)

    async def enable_schedule(self, schedule_id: str) -> JobSchedule | None:
        return await self._schedule("enable_schedule", schedule_id)

    async def enable_schedule_by_key(self, key: str) -> JobSchedule | None:
        return await self._schedule("enable_schedule_by_key", key)

    async def delete_schedule(self, schedule_id: str) -> bool:
        return await self._maybe("delete_schedule", schedule_id) is not None

    async def delete_schedule_by_key(self, key: str) -> bool:
        return await self._maybe("delete_schedule_by_key", key) is not None

    async def list_schedules(
        self,
        *,
        enabled: bool | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[JobSchedule]:
        query = given_fields(enabled=enabled, name=name, limit=limit, cursor=cursor)
        return _read(page_from_wire(schedule_from_wire), await self._call("list_schedules", query))
