"""The JSON shapes of API.md, both directions, for every surface: the HTTP layer and the
`JobsService` RPC entrypoint encode results and decode request bodies here; `JobsClient` encodes
call arguments and decodes results here; remote handlers send and read a run here.

Times leave as RFC 3339 UTC strings with milliseconds and arrive as RFC 3339 with an offset.
Imports only the core and msgspec (no Starlette), so a calling Worker loads no HTTP layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from ..core.errors import ValidationError
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
from ..core.states import AttemptOutcome, RunStatus
from ..core.times import datetime_to_ms, format_rfc3339, parse_rfc3339
from .operations import BULK_FIELDS, CREATE_FIELDS, FLOW_FIELDS

T = TypeVar("T")


# --- Results to the wire (HTTP responses, RPC answers, remote handlers) ---------------------------


def run_to_wire(run: JobRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status.value,
        "payload": run.payload,
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        "scheduled_for": format_rfc3339(run.scheduled_for),
        "created_at": format_rfc3339(run.created_at),
        "updated_at": format_rfc3339(run.updated_at),
        "started_at": format_rfc3339(run.started_at),
        "finished_at": format_rfc3339(run.finished_at),
        "last_error": run.last_error,
        "dedupe_key": run.dedupe_key,
        "schedule_id": run.schedule_id,
        "priority": run.priority,
        "concurrency_key": run.concurrency_key,
        "timeout": run.timeout,
        "parent_id": run.parent_id,
        "progress": run.progress,
        "result": run.result,
    }


def schedule_to_wire(schedule: JobSchedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "key": schedule.key,
        "name": schedule.name,
        "type": schedule.type,
        "expr": schedule.expr,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "payload": schedule.payload,
        "max_attempts": schedule.max_attempts,
        "next_run_at": format_rfc3339(schedule.next_run_at),
        "last_scheduled_at": format_rfc3339(schedule.last_scheduled_at),
        "created_at": format_rfc3339(schedule.created_at),
        "updated_at": format_rfc3339(schedule.updated_at),
        "priority": schedule.priority,
        "concurrency_key": schedule.concurrency_key,
        "limit": schedule.limit,
        "count": schedule.count,
        "start_at": format_rfc3339(schedule.start_at),
        "end_at": format_rfc3339(schedule.end_at),
    }


def attempt_to_wire(attempt: RunAttempt) -> dict[str, Any]:
    return {
        "attempt": attempt.attempt,
        "started_at": format_rfc3339(attempt.started_at),
        "finished_at": format_rfc3339(attempt.finished_at),
        "duration_ms": attempt.duration_ms,
        "outcome": attempt.outcome.value,
        "error": attempt.error,
    }


def attempts_to_wire(attempts: list[RunAttempt]) -> dict[str, Any]:
    return {"items": [attempt_to_wire(attempt) for attempt in attempts]}


def log_line_to_wire(line: LogLine) -> dict[str, Any]:
    return {
        "at": format_rfc3339(line.at),
        "attempt": line.attempt,
        "level": line.level,
        "event": line.event,
        "fields": line.fields,
    }


def logs_to_wire(lines: list[LogLine]) -> dict[str, Any]:
    return {"items": [log_line_to_wire(line) for line in lines]}


def created_to_wire(created: CreatedRun) -> dict[str, Any]:
    return msgspec.structs.asdict(created)


def flow_to_wire(created: CreatedFlow) -> dict[str, Any]:
    return {"parent_id": created.parent_id, "children": list(created.children)}


def page_to_wire(page: Page[JobRun]) -> dict[str, Any]:
    return {"items": [run_to_wire(run) for run in page.items], "next_cursor": page.next_cursor}


def bulk_to_wire(result: BulkResult) -> dict[str, Any]:
    return {"count": result.count, "has_more": result.has_more}


def job_to_wire(job: JobInfo) -> dict[str, Any]:
    return {"name": job.name, "paused": job.paused, "options": job.options, "counts": job.counts}


def schedule_page_to_wire(page: Page[JobSchedule]) -> dict[str, Any]:
    return {
        "items": [schedule_to_wire(schedule) for schedule in page.items],
        "next_cursor": page.next_cursor,
    }


# --- Request bodies from the wire (the HTTP routes, the RPC entrypoint) ---------------------------
# The field sets are `operations`' (CREATE_FIELDS, SCHEDULE_PATCH_FIELDS, ...).


def schedule_fields(body: Any, allowed: frozenset[str]) -> dict[str, Any]:
    """A schedule body's fields, rejecting unknown ones (their values are checked later;
    `start_at` and `end_at` are read as RFC 3339)."""
    fields = known_fields(body, allowed)
    for name in ("start_at", "end_at"):
        value = fields.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise ValidationError(f"{name} must be an RFC 3339 date-time string")
            try:
                fields[name] = parse_rfc3339(value)
            except ValueError as exc:
                raise ValidationError(f"{name}: {exc}") from None
    return fields


def known_fields(body: Any, allowed: frozenset[str], what: str = "the body") -> dict[str, Any]:
    """A body's fields, rejecting unknown ones: what OpenAPI describes is what is accepted."""
    fields = require_object(body, what)
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValidationError(f"{what} has unknown field(s): {', '.join(unknown)}")
    return dict(fields)


def require_object(body: Any, what: str = "the body") -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError(f"{what} must be a JSON object")
    return body


def create_request(body: Any, what: str = "the body") -> CreateRequest:
    """A create body to a CreateRequest, checking each field's JSON type."""
    fields = known_fields(body, CREATE_FIELDS, what)
    run_at = fields.get("run_at")
    if run_at is not None:
        if not isinstance(run_at, str):
            raise ValidationError("run_at must be an RFC 3339 date-time string")
        try:
            run_at = parse_rfc3339(run_at)
        except ValueError as exc:
            raise ValidationError(f"run_at: {exc}") from None
    name = fields.get("name")
    if not isinstance(name, str):
        raise ValidationError("name is required and must be a string")
    return CreateRequest(
        name=name,
        payload=fields.get("payload"),
        run_at=run_at,
        delay=fields.get("delay"),
        max_attempts=fields.get("max_attempts"),
        dedupe_key=fields.get("dedupe_key"),
        priority=fields.get("priority"),
        concurrency_key=fields.get("concurrency_key"),
        dedupe_ttl=fields.get("dedupe_ttl"),
    )


def flow_request(body: Any) -> tuple[CreateRequest, list[CreateRequest]]:
    """`POST /v1/flows`' body: the parent's create body and the children's (each read as
    `create_request` reads one; their count is checked by the jobs API)."""
    fields = known_fields(body, FLOW_FIELDS)
    if "parent" not in fields:
        raise ValidationError("parent is required: the parent's create body")
    parent = create_request(fields["parent"], "parent")
    children = fields.get("children")
    if not isinstance(children, list):
        raise ValidationError("children is required: a list of 1 to 100 create bodies")
    return parent, [create_request(c, f"children[{i}]") for i, c in enumerate(children)]


def bulk_filter(body: Any) -> dict[str, Any]:
    """A bulk operation's body to its keyword arguments (`created_before` read as RFC 3339;
    null is left out; the values are checked by the jobs API)."""
    fields = {k: v for k, v in known_fields(body, BULK_FIELDS).items() if v is not None}
    before = fields.get("created_before")
    if before is not None:
        if not isinstance(before, str):
            raise ValidationError("created_before must be an RFC 3339 date-time string")
        try:
            fields["created_before"] = parse_rfc3339(before)
        except ValueError as exc:
            raise ValidationError(f"created_before: {exc}") from None
    return fields


# --- Call arguments to the wire (the client) ------------------------------------------------------


def run_at_to_wire(value: Any) -> str:
    if not isinstance(value, datetime):
        raise ValidationError("run_at must be a timezone-aware datetime")
    try:
        datetime_to_ms(value)
    except ValueError as exc:
        raise ValidationError(f"run_at: {exc}") from None
    text = format_rfc3339(value)
    assert text is not None
    return text


def given_fields(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def create_body(request: CreateRequest) -> dict[str, Any]:
    """A `CreateRequest` as the create body of the HTTP API (`run_at` as RFC 3339)."""
    return given_fields(
        name=request.name,
        payload=request.payload,
        run_at=None if request.run_at is None else run_at_to_wire(request.run_at),
        delay=request.delay,
        max_attempts=request.max_attempts,
        dedupe_key=request.dedupe_key,
        priority=request.priority,
        concurrency_key=request.concurrency_key,
        dedupe_ttl=request.dedupe_ttl,
    )


def schedule_times_to_wire(**fields: Any) -> dict[str, Any]:
    """Schedule fields as a body's: the datetimes as RFC 3339, None left out."""
    return {
        name: format_rfc3339(value) if isinstance(value, datetime) else value
        for name, value in fields.items()
        if value is not None
    }


def schedule_patch_body(patch: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: format_rfc3339(value) if isinstance(value, datetime) else value
        for name, value in patch.items()
    }


def bulk_body(
    status: Any, name: Any, schedule_id: Any, created_before: Any, limit: Any
) -> dict[str, Any]:
    """A bulk operation's keyword arguments as its body (`created_before` as RFC 3339)."""
    if created_before is not None:
        if not isinstance(created_before, datetime):
            raise ValidationError("created_before must be a timezone-aware datetime")
        created_before = format_rfc3339(created_before)
    if isinstance(status, RunStatus):
        status = status.value
    return given_fields(
        status=status, name=name, schedule_id=schedule_id, created_before=created_before,
        limit=limit,
    )  # fmt: skip


# --- Results from the wire (the client, remote handler targets) -----------------------------------


def time_from_wire(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected an RFC 3339 string, got {type(value).__name__}")
    return parse_rfc3339(value)


def optional_time_from_wire(value: Any) -> datetime | None:
    return None if value is None else time_from_wire(value)


def created_from_wire(data: Mapping[str, Any]) -> CreatedRun:
    return CreatedRun(
        kumofire_job_run_id=data["kumofire_job_run_id"], deduplicated=data["deduplicated"]
    )


def run_from_wire(data: Mapping[str, Any]) -> JobRun:
    return JobRun(
        id=data["id"],
        name=data["name"],
        status=RunStatus(data["status"]),
        payload=data["payload"],
        attempt=data["attempt"],
        max_attempts=data["max_attempts"],
        scheduled_for=time_from_wire(data["scheduled_for"]),
        created_at=time_from_wire(data["created_at"]),
        updated_at=time_from_wire(data["updated_at"]),
        started_at=optional_time_from_wire(data["started_at"]),
        finished_at=optional_time_from_wire(data["finished_at"]),
        last_error=data["last_error"],
        dedupe_key=data["dedupe_key"],
        schedule_id=data["schedule_id"],
        priority=data["priority"],
        concurrency_key=data["concurrency_key"],
        timeout=data["timeout"],
        parent_id=data["parent_id"],
        progress=data["progress"],
        result=data["result"],
    )


def schedule_from_wire(data: Mapping[str, Any]) -> JobSchedule:
    return JobSchedule(
        id=data["id"],
        key=data["key"],
        name=data["name"],
        type=data["type"],
        expr=data["expr"],
        timezone=data["timezone"],
        enabled=data["enabled"],
        payload=data["payload"],
        max_attempts=data["max_attempts"],
        next_run_at=optional_time_from_wire(data["next_run_at"]),
        last_scheduled_at=optional_time_from_wire(data["last_scheduled_at"]),
        created_at=time_from_wire(data["created_at"]),
        updated_at=time_from_wire(data["updated_at"]),
        priority=data["priority"],
        concurrency_key=data["concurrency_key"],
        limit=data["limit"],
        count=data["count"],
        start_at=optional_time_from_wire(data["start_at"]),
        end_at=optional_time_from_wire(data["end_at"]),
    )


def page_from_wire(convert: Callable[[Mapping[str, Any]], T]) -> Callable[[Any], Page[T]]:
    def read(data: Any) -> Page[T]:
        items = [convert(item) for item in data["items"]]
        return Page(items=items, next_cursor=data["next_cursor"])

    return read


def flow_body(parent: CreateRequest, children: Any) -> dict[str, Any]:
    """`create_flow`'s arguments as its body."""
    if not isinstance(children, list | tuple):
        raise ValidationError("children must be a list of CreateRequest")
    return {"parent": create_body(parent), "children": [create_body(c) for c in children]}


def flow_from_wire(data: Mapping[str, Any]) -> CreatedFlow:
    return CreatedFlow(
        parent_id=data["parent_id"], children=[str(child) for child in data["children"]]
    )


def created_items_from_wire(data: Any) -> list[CreatedRun]:
    return [created_from_wire(item) for item in data["items"]]


def counts_from_wire(data: Any) -> dict[str, int]:
    if not isinstance(data, dict):
        raise TypeError(f"expected an object, got {type(data).__name__}")
    return {str(status): int(count) for status, count in data.items()}


def bulk_from_wire(data: Mapping[str, Any]) -> BulkResult:
    return BulkResult(count=data["count"], has_more=data["has_more"])


def job_from_wire(data: Mapping[str, Any]) -> JobInfo:
    return JobInfo(
        name=data["name"],
        paused=data["paused"],
        options=dict(data["options"]),
        counts={str(status): int(n) for status, n in data["counts"].items()},
    )


def jobs_from_wire(data: Any) -> list[JobInfo]:
    return [job_from_wire(item) for item in data["items"]]


def attempt_from_wire(data: Mapping[str, Any]) -> RunAttempt:
    return RunAttempt(
        attempt=data["attempt"],
        started_at=time_from_wire(data["started_at"]),
        finished_at=time_from_wire(data["finished_at"]),
        duration_ms=data["duration_ms"],
        outcome=AttemptOutcome(data["outcome"]),
        error=data["error"],
    )


def attempts_from_wire(data: Any) -> list[RunAttempt]:
    return [attempt_from_wire(item) for item in data["items"]]


def log_line_from_wire(data: Mapping[str, Any]) -> LogLine:
    return LogLine(
        at=time_from_wire(data["at"]),
        attempt=data["attempt"],
        level=data["level"],
        event=data["event"],
        fields=dict(data["fields"]),
    )


def logs_from_wire(data: Any) -> list[LogLine]:
    return [log_line_from_wire(item) for item in data["items"]]
