"""A service binding (`env.JOBS` in another Worker) to a `WorkerEntrypoint` instance, as the
calling Python Worker sees it, in the two styles of `fake_sdk` (`"sdk"`: the SDK's
`_FetcherWrapper`; `"js"`: the raw JavaScript object).

A call crosses Workers RPC twice: the caller's arguments become JavaScript values (positional
only: Pyodide would pass keyword arguments as a trailing object), are structured-cloned, and
reach the Python entrypoint as the SDK's `python_from_rpc` makes them (`JsDict`, None for
null); the answer goes back the same way and reaches the caller as its style presents it. An
exception in the entrypoint reaches the caller as a JavaScript `Error` whose message is the
Python traceback, its last line `<module>.<type>: <message>`: the type is lost.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from .fake_sdk import UNDEFINED, JsError, _call_options, present, receive


def structured_clone(value: Any) -> Any:
    """A copy of plain data (None for null), refusing what a structured clone refuses here."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, dict):
        return {str(key): structured_clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [structured_clone(item) for item in value]
    raise JsError("DataCloneError", f"{type(value).__name__} could not be cloned.")


def python_error_text(exc: BaseException) -> str:
    """What a JavaScript caller reads as the message of a Python entrypoint's exception."""
    return "".join(traceback.format_exception(exc))


class FakeServiceBinding:
    """`env.<BINDING>` for `[[services]] ... entrypoint = "<Class>"`: every public method of
    `entrypoint` is callable by RPC. `calls` records (method, arguments as they arrived)."""

    def __init__(self, entrypoint: Any, style: str) -> None:
        self._entrypoint = entrypoint
        self._style = style
        self.calls: list[tuple[str, list[Any]]] = []

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        entrypoint = self._entrypoint
        style = self._style

        async def call(*args: Any, **kwargs: Any) -> Any:
            sent = [receive(arg, style) for arg in _call_options(args, kwargs)]
            arrived = [
                present(structured_clone(None if a is UNDEFINED else a), "sdk") for a in sent
            ]
            self.calls.append((method, arrived))
            target = getattr(entrypoint, method, None)
            if target is None or method.startswith("_"):
                raise JsError(
                    "TypeError", f'The RPC receiver does not implement the method "{method}".'
                )
            try:
                result = await target(*arrived)
            except Exception as exc:
                raise JsError("Error", python_error_text(exc)) from None
            return present(structured_clone(receive(result, "sdk")), style)

        return call
