"""The JSON shapes of API.md: results to wire dicts, request bodies to call arguments.

Times leave as RFC 3339 UTC strings with milliseconds and arrive as RFC 3339 with an offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ..errors import ValidationError
from ..models import CreatedRun, CreateRequest, JobRun, Page
from ..times import format_rfc3339, parse_rfc3339

_CREATE_FIELDS = frozenset(CreateRequest.__struct_fields__)


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
    fields = require_object(body, what)
    unknown = sorted(set(fields) - _CREATE_FIELDS)
    if unknown:
        raise ValidationError(f"{what} has unknown field(s): {', '.join(unknown)}")
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
