"""Errors the platform raised, as the adapter surfaces them.

On Cloudflare a binding's failure is a JavaScript error (a `JsException` under Pyodide) whose
type means little; its message is what D1, Queues and Durable Objects document. The adapter
re-raises it as one of these, keeping the message (`str(exc)`) and the JavaScript name.
"""

from __future__ import annotations

from typing import NoReturn

from .ffi import js_error


class CloudflareError(Exception):
    """A platform error: `str()` is the JavaScript error's message, `name` its name."""

    def __init__(self, message: str, name: str = "Error") -> None:
        super().__init__(message)
        self.message = message
        self.name = name


class D1Error(CloudflareError):
    """A D1 error (`D1_ERROR: ...`, `D1_TYPE_ERROR: ...`, `D1_EXEC_ERROR: ...`)."""


class D1TypeError(D1Error, TypeError):
    """A bound value D1 cannot take (raised by the adapter before anything is sent)."""


class QueueError(CloudflareError):
    """A Queue producer or consumer call the platform refused."""


class DurableObjectError(CloudflareError):
    """A Durable Object call or storage operation that failed (the object's own exception
    arrives as its message only: Workers RPC does not carry exception types)."""


def raise_platform(exc: Exception, kind: type[CloudflareError]) -> NoReturn:
    """Re-raise a JavaScript error as `kind`; an exception Python raised stays as it is."""
    info = js_error(exc)
    if info is None or isinstance(exc, CloudflareError):
        raise exc
    name, message = info
    raise kind(message, name) from exc
