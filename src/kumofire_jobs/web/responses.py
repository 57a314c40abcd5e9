"""The HTTP API's JSON answers: the JSON response, the documented error body and its codes, and
the middleware that answers an unexpected error with a bare 500 `internal_error`, or a 503
`storage_full` when the storage had no room for the request's write."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.log import get_logger
from ..core.storage_full import storage_full

__all__ = ["HTTP_CODES", "ApiError", "InternalErrors", "JSONResponse", "error_response"]

log = get_logger()

# A full disk is not the client's fault, nor a bug: it passes once space is freed. The client
# may try again; this says when, without promising anything.
STORAGE_FULL_RETRY_AFTER = "10"
STORAGE_FULL_MESSAGE = (
    "the service's storage is full (database or disk is full), so this request failed: retry "
    "once space is freed (what was accepted before is kept, and goes on then)"
)

_encoder = msgspec.json.Encoder()


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class InternalErrors:
    """Answers an unexpected error with the JSON 500 and logs it once, with its traceback; a
    full storage instead with 503 `storage_full` and a `Retry-After`, logged in one line (a
    full disk fails every write the same way: its traceback tells nothing new).

    Starlette's own catch-all (`ServerErrorMiddleware`) re-raises after answering, so the server
    prints a second traceback and closes the client's keep-alive connection; this middleware
    sits inside it and does not re-raise."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            full = storage_full(exc)
            if full:
                log.warning(
                    "http.storage_full", method=scope["method"], path=scope["path"],
                    error=f"{type(exc).__name__}: {exc}",
                )  # fmt: skip
            else:
                log.exception("http.internal_error", method=scope["method"], path=scope["path"])
            if started:
                raise  # part of an answer is out: only closing the connection can end it
            if full:
                response = error_response(503, "storage_full", STORAGE_FULL_MESSAGE)
                response.headers["Retry-After"] = STORAGE_FULL_RETRY_AFTER
            else:
                response = error_response(
                    500, "internal_error", "the server failed to handle the request"
                )
            await response(scope, receive, send)


HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}
