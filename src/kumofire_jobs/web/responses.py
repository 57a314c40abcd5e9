"""The HTTP API's JSON answers: the JSON response, the documented error body and its codes, and
the middleware that answers an unexpected error with a bare 500 `internal_error`."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.log import get_logger

__all__ = ["HTTP_CODES", "ApiError", "InternalErrors", "JSONResponse", "error_response"]

log = get_logger()

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
    """Answers an unexpected error with the JSON 500 and logs it once, with its traceback.

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
        except Exception:
            log.exception("http.internal_error", method=scope["method"], path=scope["path"])
            if started:
                raise  # part of an answer is out: only closing the connection can end it
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
