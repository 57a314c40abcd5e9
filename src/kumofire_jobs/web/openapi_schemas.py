"""The component schemas of the OpenAPI document (`openapi.py`): the bodies and answers of the
HTTP API written out field by field, with the limits API.md promises (times as RFC 3339
strings), and the request bodies built from `api/operations.py`'s field sets."""

from __future__ import annotations

from typing import Any

from ..api import operations
from ..core import history, validation
from ..core.bulk import MAX_BULK_LIMIT
from ..core.flows import MAX_CHILDREN
from ..core.schedule_bounds import MAX_LIMIT
from ..core.schedule_timing import MAX_CRON_CHARS, MAX_EVERY_SECONDS, MAX_TIMEZONE_CHARS
from ..core.states import AttemptOutcome, ConsumeOutcome, RunStatus

__all__ = ["SCHEMAS", "ref"]

_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional body field: the server takes null as the field left out."""
    if "type" not in schema:
        return schema  # any JSON value, null included
    return {**schema, "type": [schema["type"], "null"]}


def _body(fields: dict[str, dict[str, Any]], body: operations.Body) -> dict[str, Any]:
    """A request body of exactly the fields the server accepts (`operations`' field sets)."""
    return {
        "type": "object",
        "required": list(body.required),
        "additionalProperties": False,
        "properties": {
            name: schema if name in body.required else _or_null(schema)
            for name, schema in fields.items()
            if name in body.fields
        },
    }


_NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": validation.MAX_NAME_CHARS,
    "description": "a job name with a registered handler",
}
_PAYLOAD_LIMITS = (
    f"at most {validation.MAX_PAYLOAD_BYTES} bytes as JSON (413 payload_too_large) and "
    f"{validation.MAX_PAYLOAD_DEPTH} levels deep"
)
_MAX_ATTEMPTS = {"type": "integer", "minimum": 1, "maximum": validation.MAX_ATTEMPTS}

_RUN_FIELDS: dict[str, dict[str, Any]] = {
    "name": _NAME,
    "payload": {"description": f"any JSON value, handed to the handler; {_PAYLOAD_LIMITS}"},
    "run_at": {**_TIME, "description": "due time (before the year 10000); a past time is due now"},
    "delay": {"type": "number", "minimum": 0, "maximum": validation.MAX_DELAY_SECONDS},
    "max_attempts": _MAX_ATTEMPTS,
    "dedupe_key": {"type": "string", "minLength": 1,
                   "maxLength": validation.MAX_DEDUPE_KEY_CHARS},
    "priority": {"type": "integer", "minimum": validation.MIN_PRIORITY,
                 "maximum": validation.MAX_PRIORITY,
                 "description": "higher starts first among the job's waiting runs"},
    "concurrency_key": {"type": "string", "minLength": 1,
                        "maxLength": validation.MAX_CONCURRENCY_KEY_CHARS,
                        "description": "what key_concurrency and key_rate_limit count by"},
    "dedupe_ttl": {"type": "number", "exclusiveMinimum": 0,
                   "maximum": validation.MAX_DELAY_SECONDS,
                   "description": "seconds the dedupe_key is held after the run's creation"},
}  # fmt: skip

_FILTER_FIELDS: dict[str, dict[str, Any]] = {
    "status": {"type": "string", "enum": [s.value for s in RunStatus]},
    "name": {"type": "string", "minLength": 1},
    "schedule_id": {"type": "string", "minLength": 1},
    "created_before": {**_TIME, "description": "runs created before this time"},
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_BULK_LIMIT,
              "description": f"at most this many runs change (default {MAX_BULK_LIMIT})"},
}  # fmt: skip

_SCHEDULE_FIELDS: dict[str, dict[str, Any]] = {
    "name": _NAME,
    "payload": {"description": f"any JSON value, handed to every occurrence; {_PAYLOAD_LIMITS}"},
    "cron": {
        "type": "string",
        "maxLength": MAX_CRON_CHARS,
        "description": "5 fields, or 6 with a leading seconds field; exclusive with every",
    },
    "every": {"type": "number", "minimum": 1, "maximum": MAX_EVERY_SECONDS,
              "description": "seconds between runs"},
    "key": {"type": "string", "minLength": 1, "maxLength": validation.MAX_KEY_CHARS,
            "pattern": "^[^/]*$", "description": "unique"},
    "timezone": {"type": "string", "maxLength": MAX_TIMEZONE_CHARS,
                 "description": "IANA name, cron only (default UTC)"},
    "enabled": {"type": "boolean"},
    "max_attempts": _MAX_ATTEMPTS,
    "priority": {**_RUN_FIELDS["priority"], "description": "each occurrence's priority"},
    "concurrency_key": {**_RUN_FIELDS["concurrency_key"],
                        "description": "each occurrence's concurrency key"},
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
              "description": "occurrences in all; after the last the schedule disables"},
    "start_at": {**_TIME, "description": "no occurrence before"},
    "end_at": {**_TIME, "description": "no occurrence after"},
}  # fmt: skip

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "CreateRun": _body(_RUN_FIELDS, operations.CREATE_RUN),
    "CreateRuns": {
        "type": "object",
        "required": list(operations.CREATE_RUNS.required),
        "additionalProperties": False,
        "properties": {
            "runs": {
                "type": "array",
                "maxItems": validation.MAX_BATCH,
                "items": ref(operations.CREATE_RUN.schema),
            }
        },
    },
    "CreateFlow": {
        "type": "object",
        "required": list(operations.CREATE_FLOW.required),
        "additionalProperties": False,
        "properties": {
            "parent": {
                **ref(operations.CREATE_RUN.schema),
                "description": "the parent: waiting until every child has finished",
            },
            "children": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_CHILDREN,
                "items": ref(operations.CREATE_RUN.schema),
                "description": "the children (no dedupe_key)",
            },
        },
    },
    "CreatedFlow": {
        "type": "object",
        "required": ["parent_id", "children"],
        "properties": {
            "parent_id": {"type": "string"},
            "children": {
                "type": "array",
                "items": {"type": "string"},
                "description": "the children's run ids, in the order given",
            },
        },
    },
    "CreatedRun": {
        "type": "object",
        "required": ["kumofire_job_run_id", "deduplicated"],
        "properties": {
            "kumofire_job_run_id": {"type": "string"},
            "deduplicated": {"type": "boolean"},
        },
    },
    "CreatedRuns": {
        "type": "object",
        "properties": {"items": {"type": "array", "items": ref("CreatedRun")}},
    },
    "JobRun": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in RunStatus]},
            "payload": {},
            "attempt": {"type": "integer"},
            "max_attempts": {"type": "integer"},
            "scheduled_for": _TIME,
            "created_at": _TIME,
            "updated_at": _TIME,
            "started_at": _NULLABLE_TIME,
            "finished_at": _NULLABLE_TIME,
            "last_error": {"type": ["string", "null"]},
            "dedupe_key": {"type": ["string", "null"]},
            "schedule_id": {"type": ["string", "null"]},
            "priority": {
                "type": "integer",
                "minimum": validation.MIN_PRIORITY,
                "maximum": validation.MAX_PRIORITY,
            },
            "concurrency_key": {"type": ["string", "null"]},
            "timeout": {"type": ["number", "null"], "description": "seconds"},
            "parent_id": {"type": ["string", "null"]},
            "progress": {
                "description": "the latest ctx.progress(value) of the current or last attempt: "
                f"JSON (at most {history.MAX_PROGRESS_BYTES} bytes) or null"
            },
            "result": {
                "description": "what the handler returned, once the run succeeded: JSON (at "
                f"most {history.MAX_RESULT_BYTES} bytes) or null"
            },
        },
    },
    "Attempt": {
        "type": "object",
        "required": ["attempt", "started_at", "finished_at", "duration_ms", "outcome", "error"],
        "properties": {
            "attempt": {"type": "integer", "minimum": 1},
            "started_at": _TIME,
            "finished_at": {
                **_TIME,
                "description": "when it ended (interrupted: when its consumer's death was seen)",
            },
            "duration_ms": {"type": "integer"},
            "outcome": {"type": "string", "enum": [o.value for o in AttemptOutcome]},
            "error": {
                "type": ["string", "null"],
                "description": "the exception with its traceback, at most "
                f"{history.MAX_ERROR_BYTES} bytes",
            },
        },
    },
    "AttemptList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": ref("Attempt")}},
    },
    "LogLine": {
        "type": "object",
        "required": ["at", "attempt", "level", "event", "fields"],
        "properties": {
            "at": _TIME,
            "attempt": {"type": "integer", "minimum": 1},
            "level": {"type": "string", "enum": ["info", "warning", "error", "critical"]},
            "event": {"type": "string"},
            "fields": {"type": "object", "description": "the fields logged with the event"},
        },
    },
    "LogList": {
        "type": "object",
        "required": ["items"],
        "description": f"the last {history.MAX_LOG_LINES} lines, at most "
        f"{history.MAX_LOG_BYTES} bytes, oldest first",
        "properties": {"items": {"type": "array", "items": ref("LogLine")}},
    },
    "RunFilter": {
        **_body(_FILTER_FIELDS, operations.RUN_FILTER),
        # At least one of these, not null (a null field is one left out): `{}` is a 422.
        "anyOf": [
            {"required": [field], "properties": {field: {"not": {"type": "null"}}}}
            for field in ("status", "name", "schedule_id", "created_before")
        ],
    },
    "Job": {
        "type": "object",
        "required": ["name", "paused", "options", "counts"],
        "properties": {
            "name": {"type": "string"},
            "paused": {"type": "boolean"},
            "options": {"type": "object", "description": "the JobOptions, null where unset"},
            "counts": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "its runs by status",
            },
        },
    },
    "JobList": {
        "type": "object",
        "properties": {"items": {"type": "array", "items": ref("Job")}},
    },
    "BulkResult": {
        "type": "object",
        "required": ["count", "has_more"],
        "properties": {
            "count": {
                "type": "integer",
                "description": "the runs this call changed (a canceled flow parent's children "
                "included)",
            },
            "has_more": {"type": "boolean", "description": "whether more runs match"},
        },
    },
    "RunPage": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": ref("JobRun")},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "Counts": {
        "type": "object",
        "properties": {s.value: {"type": "integer"} for s in RunStatus},
    },
    "CreateSchedule": _body(_SCHEDULE_FIELDS, operations.CREATE_SCHEDULE),
    "ScheduleFields": _body(_SCHEDULE_FIELDS, operations.SCHEDULE_FIELDS),
    "JobSchedule": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "key": {"type": ["string", "null"]},
            "name": {"type": "string"},
            "type": {"type": "string", "enum": ["cron", "interval"]},
            "expr": {"type": "string"},
            "timezone": {"type": ["string", "null"]},
            "enabled": {"type": "boolean"},
            "payload": {},
            "max_attempts": {"type": ["integer", "null"]},
            "next_run_at": _NULLABLE_TIME,
            "last_scheduled_at": _NULLABLE_TIME,
            "created_at": _TIME,
            "updated_at": _TIME,
            "priority": {"type": "integer"},
            "concurrency_key": {"type": ["string", "null"]},
            "limit": {"type": ["integer", "null"]},
            "count": {"type": "integer", "description": "occurrences delivered so far"},
            "start_at": _NULLABLE_TIME,
            "end_at": _NULLABLE_TIME,
        },
    },
    "SchedulePage": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": ref("JobSchedule")},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "ConsumeOutcome": {"type": "string", "enum": [o.value for o in ConsumeOutcome]},
}
