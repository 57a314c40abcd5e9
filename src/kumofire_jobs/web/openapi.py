"""The OpenAPI 3.1 description of the HTTP API, served at `GET /v1/openapi.json`.

Written out rather than inferred, so that it says what API.md promises: status codes, error
codes and the wire shapes (times as RFC 3339 strings).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .. import __version__
from ..api import wire
from ..core import validation
from ..core.schedule_timing import MAX_CRON_CHARS, MAX_EVERY_SECONDS, MAX_TIMEZONE_CHARS
from ..core.schedules import MAX_KEY_CHARS
from ..core.states import ConsumeOutcome, RunStatus

_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    described = {
        400: "the body is not JSON (`invalid_json`)",
        401: "token missing or wrong (`unauthorized`)",
        403: "production Worker with no token configured (`api_disabled`)",
        404: "unknown id, key or route (`not_found`)",
        409: "the call contradicts the current state (`conflict`)",
        413: "body over the limit (`payload_too_large`)",
        422: "a field is invalid (`validation_error`) or the job has no handler (`unknown_job`)",
    }
    return {str(s): _json(_ref("Error"), described[s]) for s in statuses}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_AUTH = (401, 403)


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional body field: the server takes null as the field left out."""
    if "type" not in schema:
        return schema  # any JSON value, null included
    return {**schema, "type": [schema["type"], "null"]}


def _body(
    fields: dict[str, dict[str, Any]], accepted: frozenset[str], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A request body of exactly the fields the server accepts (`wire`'s field sets)."""
    return {
        "type": "object",
        "required": list(required),
        "additionalProperties": False,
        "properties": {
            name: schema if name in required else _or_null(schema)
            for name, schema in fields.items()
            if name in accepted
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
    "key": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS, "pattern": "^[^/]*$",
            "description": "unique"},
    "timezone": {"type": "string", "maxLength": MAX_TIMEZONE_CHARS,
                 "description": "IANA name, cron only (default UTC)"},
    "enabled": {"type": "boolean"},
    "max_attempts": _MAX_ATTEMPTS,
}  # fmt: skip

_SCHEMAS: dict[str, Any] = {
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
    "CreateRun": _body(_RUN_FIELDS, wire.CREATE_FIELDS, required=("name",)),
    "CreatedRun": {
        "type": "object",
        "required": ["kumofire_job_run_id", "deduplicated"],
        "properties": {
            "kumofire_job_run_id": {"type": "string"},
            "deduplicated": {"type": "boolean"},
        },
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
        },
    },
    "RunPage": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": _ref("JobRun")},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "Counts": {
        "type": "object",
        "properties": {s.value: {"type": "integer"} for s in RunStatus},
    },
    "CreateSchedule": _body(_SCHEDULE_FIELDS, wire.SCHEDULE_CREATE_FIELDS, required=("name",)),
    # PUT and PATCH: the fields to change (the key is in the path). A PUT that creates needs
    # `name` and a timing, as a create does.
    "ScheduleFields": _body(_SCHEDULE_FIELDS, wire.SCHEDULE_PATCH_FIELDS),
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
        },
    },
    "SchedulePage": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": _ref("JobSchedule")},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "ConsumeOutcome": {"type": "string", "enum": [o.value for o in ConsumeOutcome]},
}

_PATHS: dict[str, Any] = {
    "/v1/health": {
        "get": {
            "summary": "Liveness and the database schema version (never needs a token)",
            "security": [],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "status": {"const": "ok"},
                            "schema_version": {"type": "integer"},
                        },
                    },
                    "the service is up",
                )
            },
        }
    },
    "/v1/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": {"description": "the OpenAPI document"}, **_errors(*_AUTH)},
        }
    },
    "/v1/runs": {
        "post": {
            "summary": "Create a run",
            "requestBody": {"required": True, **_json(_ref("CreateRun"), "the run")},
            "responses": {
                "202": _json(_ref("CreatedRun"), "created, or an existing run by dedupe_key"),
                **_errors(400, *_AUTH, 413, 422),
            },
        },
        "get": {
            "summary": "List runs, newest first",
            "parameters": [
                _query("status", {"type": "string", "enum": [s.value for s in RunStatus]}, ""),
                _query("name", {"type": "string"}, "job name"),
                _query("schedule_id", {"type": "string"}, "runs of one schedule"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "page size"),
                _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
            ],
            "responses": {"200": _json(_ref("RunPage"), "a page"), **_errors(*_AUTH, 422)},
        },
    },
    "/v1/runs:batch": {
        "post": {
            "summary": "Create up to 100 runs in one call",
            "requestBody": {
                "required": True,
                **_json(
                    {
                        "type": "object",
                        "required": ["runs"],
                        "additionalProperties": False,
                        "properties": {
                            "runs": {"type": "array", "maxItems": 100, "items": _ref("CreateRun")}
                        },
                    },
                    "the runs",
                ),
            },
            "responses": {
                "202": _json(
                    {
                        "type": "object",
                        "properties": {"items": {"type": "array", "items": _ref("CreatedRun")}},
                    },
                    "one result per run, in order",
                ),
                **_errors(400, *_AUTH, 413, 422),
            },
        }
    },
    "/v1/runs:counts": {
        "get": {
            "summary": "Run counts by status (every status, zeros included)",
            "parameters": [_query("name", {"type": "string"}, "job name")],
            "responses": {"200": _json(_ref("Counts"), "the counts"), **_errors(*_AUTH)},
        }
    },
    "/v1/runs/{run_id}": {
        "get": {
            "summary": "Get a run",
            "parameters": [_path("run_id")],
            "responses": {"200": _json(_ref("JobRun"), "the run"), **_errors(*_AUTH, 404)},
        }
    },
    "/v1/runs/{run_id}/cancel": {
        "post": {
            "summary": "Cancel a scheduled, queued or running run (a finished one is unchanged)",
            "parameters": [_path("run_id")],
            "responses": {"200": _json(_ref("JobRun"), "the run"), **_errors(*_AUTH, 404)},
        }
    },
    "/v1/runs/{run_id}/retry": {
        "post": {
            "summary": "Schedule a failed or canceled run again now, with one more attempt",
            "parameters": [_path("run_id")],
            "responses": {
                "200": _json(_ref("JobRun"), "the run"),
                **_errors(*_AUTH, 404, 409),
            },
        }
    },
}


def _schedule_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v1/schedules": {
            "post": {
                "summary": "Create a schedule (its first occurrence is materialized at once)",
                "requestBody": {"required": True, **_json(_ref("CreateSchedule"), "the schedule")},
                "responses": {
                    "201": _json(_ref("JobSchedule"), "created"),
                    **_errors(400, *_AUTH, 409, 413, 422),
                },
            },
            "get": {
                "summary": "List schedules, newest first",
                "parameters": [
                    _query("enabled", {"type": "boolean"}, ""),
                    _query("name", {"type": "string"}, "job name"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, ""),
                    _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
                ],
                "responses": {
                    "200": _json(_ref("SchedulePage"), "a page"),
                    **_errors(*_AUTH, 422),
                },
            },
        },
        "/v1/schedules/by-key/{key}": {
            "put": {
                "summary": "Create or change the schedule with this key (only the fields given)",
                "parameters": [_path("key")],
                "requestBody": {"required": True, **_json(_ref("ScheduleFields"), "the fields")},
                "responses": {
                    "201": _json(_ref("JobSchedule"), "created"),
                    "200": _json(_ref("JobSchedule"), "updated"),
                    **_errors(400, *_AUTH, 413, 422),
                },
            }
        },
    }
    for base, param in (
        ("/v1/schedules/{schedule_id}", "schedule_id"),
        ("/v1/schedules/by-key/{key}", "key"),
    ):
        one = {"200": _json(_ref("JobSchedule"), "the schedule"), **_errors(*_AUTH, 404)}
        paths.setdefault(base, {}).update(
            {
                "get": {"summary": "Get a schedule", "parameters": [_path(param)],
                        "responses": one},
                "patch": {
                    "summary": "Change the fields given (timing changes replace the pending "
                    "occurrence)",
                    "parameters": [_path(param)],
                    "requestBody": {"required": True, **_json(_ref("ScheduleFields"), "fields")},
                    "responses": {**one, **_errors(400, 413, 422)},
                },
                "delete": {
                    "summary": "Delete a schedule (its pending occurrence is canceled; its runs "
                    "are kept)",
                    "parameters": [_path(param)],
                    "responses": {"204": {"description": "deleted"}, **_errors(*_AUTH, 404)},
                },
            }
        )  # fmt: skip
        for action, summary in (
            ("disable", "Disable (cancels the pending occurrence)"),
            ("enable", "Enable (materializes the next occurrence)"),
        ):
            paths[f"{base}/{action}"] = {
                "post": {"summary": summary, "parameters": [_path(param)], "responses": one}
            }
    return paths


_PATHS.update(_schedule_paths())


@cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kumofire Jobs", "version": __version__},
        "paths": _PATHS,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def documented_routes() -> set[tuple[str, str]]:
    """(METHOD, path) for every operation described; a test compares them with the app."""
    return {(method.upper(), path) for path, ops in _PATHS.items() for method in ops}
