"""The OpenAPI 3.1 description of the HTTP API, served at `GET /v1/openapi.json`.

Its paths come from the table of operations (`api/operations.py`: the route, the summary, the
path and query parameters, the body, the success and error statuses); the schemas of the
bodies and answers are written out (`openapi_schemas.py`), rather than inferred, so that they
say what API.md promises (times as RFC 3339 strings, the limits of each field).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .. import __version__
from ..api import operations
from ..core import validation
from ..core.states import RunStatus
from .openapi_schemas import SCHEMAS, ref


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    described = {
        400: "the body is not JSON (`invalid_json`)",
        401: "token missing or wrong (`unauthorized`)",
        403: "production Worker with no token configured (`api_disabled`), or a browser's "
        "write from another origin (`cross_origin`)",
        404: "unknown id, key or route (`not_found`)",
        409: "the call contradicts the current state (`conflict`)",
        413: "body over the limit (`payload_too_large`)",
        415: "a body declared as something but JSON (`unsupported_media_type`)",
        422: "a field is invalid (`validation_error`) or the job has no handler (`unknown_job`)",
        503: "the storage is full (`storage_full`): retry once space is freed (`Retry-After`)",
    }
    return {str(s): _json(ref("Error"), described[s]) for s in statuses}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_AUTH = (401, 403)
# Any operation may find the storage full (its write, or a coordinator's, refused).
_ALWAYS = (*_AUTH, 503)


# The routes of the HTTP layer alone (not operations of the jobs API).
_HTTP_ONLY: dict[str, Any] = {
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
    "/v1/metrics": {
        "get": {
            "summary": "Prometheus metrics: runs by job and status, the oldest due run's age "
            "by job, paused jobs, schedules by enabled (one D1 batch of three aggregate reads)",
            "responses": {
                "200": {
                    "description": "the Prometheus text exposition format, version 0.0.4",
                    "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}},
                },
                **_errors(*_AUTH),
            },
        }
    },
    "/v1/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": {"description": "the OpenAPI document"}, **_errors(*_AUTH)},
        }
    },
}

# The query fields of `operations` (the same name means the same field in every operation).
# None may be given empty (422 naming it; `web/query.py`); unknown ones are ignored.
_QUERY: dict[str, tuple[dict[str, Any], str]] = {
    "status": ({"type": "string", "enum": [s.value for s in RunStatus]}, ""),
    "name": ({"type": "string", "minLength": 1}, "job name"),
    "schedule_id": ({"type": "string", "minLength": 1}, "runs of one schedule"),
    "parent_id": ({"type": "string", "minLength": 1}, "the children of one flow's parent"),
    "enabled": ({"type": "boolean"}, ""),
    "limit": (
        {"type": "integer", "minimum": 1, "maximum": validation.MAX_LIST_LIMIT},
        "page size",
    ),
    "cursor": ({"type": "string", "minLength": 1}, "next_cursor of the previous page"),
}


def _operation(op: operations.Operation) -> dict[str, Any]:
    """An operation of the table as the document describes it."""
    described: dict[str, Any] = {"summary": op.summary}
    parameters = [_path(name) for name in op.path_parameters]
    parameters += [_query(name, *_QUERY[name]) for name in op.query]
    if parameters:
        described["parameters"] = parameters
    if op.body is not None:
        body = _json(ref(op.body.schema), op.body.description)
        described["requestBody"] = {"required": True, **body}
    responses: dict[str, Any] = {}
    for status, meaning in op.ok.items():
        responses[str(status)] = (
            {"description": meaning} if op.result is None else _json(ref(op.result), meaning)
        )
    described["responses"] = {**responses, **_errors(*sorted({*_ALWAYS, *op.errors}))}
    return described


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = dict(_HTTP_ONLY)
    for op in operations.OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return paths


_PATHS = _paths()


@cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kumofire Jobs", "version": __version__},
        "paths": _PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def documented_routes() -> set[tuple[str, str]]:
    """(METHOD, path) for every operation described; a test compares them with the app."""
    return {(method.upper(), path) for path, ops in _PATHS.items() for method in ops}
