"""The JSON shapes of API.md: results to wire dicts, request bodies to call arguments.

Times leave as RFC 3339 UTC strings with milliseconds and arrive as RFC 3339 with an offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ..core.errors import ValidationError
from ..core.models import CreatedRun, CreateRequest, JobRun, JobSchedule, Page
from ..core.times import format_rfc3339, parse_rfc3339

CREATE_FIELDS = frozenset(CreateRequest.__struct_fields__)


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
    }


def schedule_page_to_wire(page: Page[JobSchedule]) -> dict[str, Any]:
    return {
        "items": [schedule_to_wire(schedule) for schedule in page.items],
        "next_cursor": page.next_cursor,
    }


SCHEDULE_CREATE_FIELDS = frozenset(
    {"name", "payload", "cron", "every", "key", "timezone", "enabled", "max_attempts"}
)
SCHEDULE_PATCH_FIELDS = SCHEDULE_CREATE_FIELDS - {"key"}


BATCH_FIELDS = frozenset({"runs"})


def schedule_fields(body: Any, allowed: frozenset[str]) -> dict[str, Any]:
    """A schedule body's fields, rejecting unknown ones (their values are checked later)."""
    return known_fields(body, allowed)


def known_fields(body: Any, allowed: frozenset[str], what: str = "the body") -> dict[str, Any]:
    """A body's fields, rejecting unknown ones: what OpenAPI describes is what is accepted."""
    fields = require_object(body, what)
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValidationError(f"{what} has unknown field(s): {', '.join(unknown)}")
    return dict(fields)


def created_to_wire(created: CreatedRun) -> dict[str, Any]:
    return msgspec.structs.asdict(created)


def page_to_wire(page: Page[JobRun]) -> dict[str, Any]:
    return {"items": [run_to_wire(run) for run in page.items], "next_cursor": page.next_cursor}


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
    )
