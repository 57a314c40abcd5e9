"""A service binding (`env.JOBS` in another Worker) to a `WorkerEntrypoint` instance, as the
calling Python Worker sees it, in the two styles of `fake_sdk` (`"sdk"`: the SDK's
`_FetcherWrapper`; `"js"`: the raw JavaScript object).

A call crosses Workers RPC twice: the caller's arguments become JavaScript values (positional
only: Pyodide would pass keyword arguments as a trailing object), are structured-cloned, and
reach the Python entrypoint as the SDK's `python_from_rpc` makes them (`JsDict`, None for
null); the answer goes back the same way and reaches the caller as its style presents it. An
exception in the entrypoint reaches the caller as a JavaScript `Error` whose message is the
Python traceback, its last line `<module>.<type>: <message>`: the type is lost. A JavaScript
`Error` the entrypoint returns arrives as a value: through the SDK an
`Exception("Error: <message>")`, raw a `JsException` (`name`, `message`, its own properties).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kumofire_jobs.local.services import (
    LocalServiceBinding,
    ReceivedError,
    ServiceBindingError,
    as_received,
    clone_for_rpc,
    python_error_text,
)

from .fake_sdk import UNDEFINED, JsError, _call_options, present, receive

__all__ = ["FakeServiceBinding", "python_error_text"]


class FakeServiceBinding:
    """`env.<BINDING>` for `[[services]] ... entrypoint = "<Class>"`: every public method of
    `entrypoint` is callable by RPC. `calls` records (method, arguments as they arrived).

    Workers RPC itself (clones, the call as its own task, errors as tracebacks) is the local
    bindings' `LocalServiceBinding`; this adds the caller's style on both ends."""

    def __init__(self, entrypoint: Any, style: str) -> None:
        self._local = LocalServiceBinding(lambda ctx, env: entrypoint, name="BINDING")
        self._style = style
        self.calls: list[tuple[str, list[Any]]] = []

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        style = self._style

        async def call(*args: Any, **kwargs: Any) -> Any:
            sent = [receive(arg, style) for arg in _call_options(args, kwargs)]
            arguments = [None if a is UNDEFINED else a for a in sent]
            try:
                self.calls.append((method, as_received(clone_for_rpc(arguments))))
                result = await getattr(self._local, method)(*arguments)
            except ServiceBindingError as exc:
                raise JsError(exc.name, exc.message) from None
            if isinstance(result, ReceivedError):
                return result if style == "sdk" else _raw_error(result)
            return present(receive(result, "sdk"), style)

        return call


def _raw_error(received: ReceivedError) -> JsError:
    """An answered `Error` as a raw binding gives it: a `JsException` (Pyodide makes the proxy
    of a JavaScript error one) with its own properties as attributes."""
    error = JsError(received.error_name, received.error_message)
    for key, value in received.error_properties.items():
        setattr(error, key, value)
    return error
