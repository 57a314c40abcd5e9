"""The Starlette app of the HTTP API (API.md, "HTTP API").

Every route calls the public jobs API and nothing else: one endpoint per operation of
`api/operations.py`, served at the operation's path with its status. Bad input gets the
documented JSON error, never a stack trace: validation errors map to their codes, and an
unexpected error is logged once with its traceback and answered with a bare 500
`internal_error` on a connection that stays open.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from ..api import operations, wire
from ..core.errors import KumofireJobsError, ValidationError
from ..core.jobs import Jobs
from ..core.models import JobRun
from .body import check_media_type, decode_json
from .control import OperationEndpoint, register_control
from .dashboard import dashboard_routes
from .history import register_history
from .metrics import metrics_endpoint
from .openapi import openapi_document
from .origin import cross_origin, named_elsewhere
from .query import query_limit, query_str
from .responses import HTTP_CODES, ApiError, InternalErrors, JSONResponse, error_response
from .schedules import register_schedules

DEFAULT_MAX_BODY_BYTES = 1024 * 1024

JobsProvider = Callable[[Request], Jobs]
Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(
    jobs: JobsProvider,
    *,
    api_token: str | None = None,
    require_token: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    loopback: bool = False,
) -> Starlette:
    """`jobs(request)` gives the bound jobs API for a request. With `api_token`, every `/v1`
    route but health needs `Authorization: Bearer <token>`; with `require_token` (a production
    Worker) and no token configured, the API answers 403 `api_disabled`. The dashboard's files
    (`/ui/`, `dashboard.py`) hold no data and need no token. With `loopback` (a server on a
    loopback address) and no `api_token`, a `Host` naming anything but loopback is refused
    (DNS rebinding)."""

    # HTTP strips a header value's surrounding whitespace, so the configured token's own (a
    # pasted secret's newline) is dropped too; the header's bytes (Starlette decodes them as
    # Latin-1) are compared with the token's UTF-8. A blank token matches nothing.
    expected = None if api_token is None else api_token.strip().encode()

    def authorize(request: Request) -> None:
        if expected is None:
            if require_token:
                raise ApiError(403, "api_disabled", "the API is disabled: no token is configured")
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if (
            scheme.lower() != "bearer"
            or not expected
            or not hmac.compare_digest(given.strip().encode("latin-1"), expected)
        ):
            raise ApiError(401, "unauthorized", "a valid bearer token is required")

    def too_large() -> ApiError:
        return ApiError(413, "payload_too_large", f"the body is over {max_body_bytes} bytes")

    async def read_json(request: Request) -> Any:
        check_media_type(request.headers.get("content-type"))
        declared = request.headers.get("content-length", "")
        # Compare lengths first: int() refuses more than 4,300 digits.
        if declared.isascii() and declared.isdigit():
            digits = declared.lstrip("0")
            if len(digits) > len(str(max_body_bytes)) or int(digits or "0") > max_body_bytes:
                raise too_large()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise too_large()
            chunks.append(chunk)
        return decode_json(b"".join(chunks))

    def route(
        path: str, methods: list[str], *, public: bool = False
    ) -> Callable[[Endpoint], Route]:
        def wrap(endpoint: Endpoint) -> Route:
            async def handle(request: Request) -> Response:
                try:
                    # With a token a rebinding page, lacking it, gets nothing: any name is
                    # answered then (dev behind a reverse proxy or a tunnel).
                    if loopback and api_token is None and named_elsewhere(request):
                        raise ApiError(
                            403,
                            "cross_origin",
                            f"this server listens on loopback and answers to localhost, "
                            f"127.0.0.1 and [::1], not to the name in Host "
                            f"({request.headers.get('host', '')[:100]!r}): a page that rebinds "
                            "its own name to 127.0.0.1 would reach it so (set "
                            "KUMOFIRE_API_TOKEN to answer any name)",
                        )
                    if cross_origin(request):
                        raise ApiError(
                            403,
                            "cross_origin",
                            "a browser sent this from another origin: the API takes writes "
                            "from its own origin (the dashboard) or from programs",
                        )
                    if not public:
                        authorize(request)
                    return await endpoint(request)
                except ApiError as exc:
                    return error_response(exc.status, exc.code, exc.message)
                except KumofireJobsError as exc:
                    return error_response(exc.status, exc.code, str(exc))

            return Route(path, handle, methods=methods)

        return wrap

    def not_found(what: str) -> ApiError:
        return ApiError(404, "not_found", f"{what} not found")

    # --- routes -----------------------------------------------------------------------------

    @route("/v1/health", ["GET"], public=True)
    async def health(request: Request) -> Response:
        version = await jobs(request).schema_version()
        return JSONResponse({"status": "ok", "schema_version": version})

    @route("/v1/openapi.json", ["GET"])
    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    metrics = route("/v1/metrics", ["GET"])(metrics_endpoint(jobs))

    # One endpoint per operation of `operations.OPERATIONS`, by its name: it answers the wire
    # body, which goes out with the operation's status (no body when the operation has none),
    # or a Response of its own when the status depends on the call (upsert: 201 or 200).
    endpoints: dict[str, OperationEndpoint] = {}

    def operation(name: str) -> Callable[[OperationEndpoint], OperationEndpoint]:
        def register(endpoint: OperationEndpoint) -> OperationEndpoint:
            endpoints[name] = endpoint
            return endpoint

        return register

    def run_found(run: JobRun | None) -> Any:
        if run is None:
            raise not_found("run")
        return wire.run_to_wire(run)

    @operation("create")
    async def create_run(request: Request) -> Any:
        created = await jobs(request).create_many([wire.create_request(await read_json(request))])
        return wire.created_to_wire(created[0])

    @operation("create_many")
    async def create_runs(request: Request) -> Any:
        body = wire.known_fields(await read_json(request), operations.BATCH_FIELDS)
        runs = body.get("runs")
        if not isinstance(runs, list):
            raise ValidationError("runs must be a list of run bodies")
        requests = [wire.create_request(item, f"runs[{i}]") for i, item in enumerate(runs)]
        created = await jobs(request).create_many(requests)
        return {"items": [wire.created_to_wire(c) for c in created]}

    @operation("list")
    async def list_runs(request: Request) -> Any:
        page = await jobs(request).list(
            status=query_str(request, "status"),
            name=query_str(request, "name"),
            schedule_id=query_str(request, "schedule_id"),
            parent_id=query_str(request, "parent_id"),
            limit=query_limit(request),
            cursor=query_str(request, "cursor"),
        )
        return wire.page_to_wire(page)

    @operation("counts")
    async def counts(request: Request) -> Any:
        return await jobs(request).counts(name=query_str(request, "name"))

    @operation("get")
    async def get_run(request: Request) -> Any:
        return run_found(await jobs(request).get(request.path_params["run_id"]))

    @operation("cancel")
    async def cancel_run(request: Request) -> Any:
        return run_found(await jobs(request).cancel(request.path_params["run_id"]))

    @operation("retry")
    async def retry_run(request: Request) -> Any:
        return run_found(await jobs(request).retry(request.path_params["run_id"]))

    register_schedules(operation, jobs, read_json, not_found)
    register_control(operation, jobs, read_json, not_found)
    register_history(operation, jobs, not_found)

    def serve(op: operations.Operation) -> Route:
        endpoint = endpoints[op.name]

        async def answer(request: Request) -> Response:
            result = await endpoint(request)
            if isinstance(result, Response):
                return result
            if op.result is None:
                return Response(status_code=op.status)
            return JSONResponse(result, status_code=op.status)

        return route(op.path, [op.method])(answer)

    missing = sorted(set(operations.BY_NAME) - set(endpoints))
    if missing:  # tests/test_operations.py says so first
        raise RuntimeError(f"the HTTP app has no endpoint for: {', '.join(missing)}")
    routes = [
        health,
        openapi,
        metrics,
        *(serve(op) for op in operations.OPERATIONS),
        *dashboard_routes(),
    ]

    def allowed_methods(scope: Scope) -> str:
        """Every method of the path (RFC 9110's Allow), not only the first route's: each
        method of a path is a route of its own."""
        methods: set[str] = set()
        for candidate in routes:
            if candidate.matches(scope)[0] is not Match.NONE and candidate.methods:
                methods |= candidate.methods
        return ", ".join(sorted(methods))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = HTTP_CODES.get(exc.status_code, "error")
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        response = error_response(exc.status_code, code, message)
        if exc.status_code == 405:
            response.headers["Allow"] = allowed_methods(request.scope)
        return response

    app = Starlette(
        routes=routes,
        middleware=[Middleware(InternalErrors)],
        exception_handlers={HTTPException: http_error},
    )
    # No redirect from `/v1/runs/` to `/v1/runs`: Starlette builds it from the Host header
    # (anyone's to set) and answers it before the token check; an API answers 404 instead.
    app.router.redirect_slashes = False
    return app
