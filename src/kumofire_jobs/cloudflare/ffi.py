"""Values across the Python/JavaScript boundary of a Python Worker.

Under Pyodide the bindings are JavaScript objects, usually inside the Workers SDK's wrappers
(`workers.rpc._BindingWrapper`, which converts arguments and results itself). Results arrive
as `JsProxy`s, as `pyodide.ffi.jsnull`, or as Python values the SDK already converted
(`JsDict`, `memoryview`, `datetime`); arguments must be JavaScript values, and Python's `None`
must become `null`, since Pyodide passes it as `undefined` (which D1 refuses).

`to_js` and `to_py` handle both forms, so the adapter works whether it is given the SDK's
wrappers or the raw JavaScript objects. Nothing here imports `js` or `pyodide` at import time:
off Pyodide (tests, the host) `to_js` builds stand-in JavaScript values (`HostJsObject`,
`HostJsArray`, `JS_NULL`) that a platform-shaped test layer can check.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from functools import cache
from typing import Any, Final

IN_PYODIDE: Final = sys.platform == "emscripten"


class _HostNull:
    """JavaScript's `null` off Pyodide (where `pyodide.ffi.jsnull` stands for it)."""

    __slots__ = ()
    _instance: _HostNull | None = None

    def __new__(cls) -> _HostNull:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "null"

    def __bool__(self) -> bool:
        return False


class HostJsObject(dict[str, Any]):
    """A JavaScript object as `to_js` makes one off Pyodide."""


class HostJsArray(list[Any]):
    """A JavaScript array as `to_js` makes one off Pyodide."""


@cache
def _pyodide_ffi() -> Any:
    return importlib.import_module("pyodide.ffi")


@cache
def _js() -> Any:
    return importlib.import_module("js")


def _platform_null() -> Any:
    if not IN_PYODIDE:
        return _HostNull()
    # Pyodide 0.28 (Python 3.13 Workers) has jsnull; without it null cannot be written and
    # converts to None, so None is the best stand-in there.
    return getattr(_pyodide_ffi(), "jsnull", None)


JS_NULL: Final[Any] = _platform_null()


def is_null(value: Any) -> bool:
    """JavaScript `null` or `undefined`, in any of the forms it reaches Python."""
    return value is None or value is JS_NULL or type(value).__name__ == "JsNull"


def is_js_proxy(value: Any) -> bool:
    """A raw JavaScript object (a `JsProxy`): only ever true under Pyodide."""
    if not IN_PYODIDE:
        return False
    return isinstance(value, _pyodide_ffi().JsProxy)


def _has_to_py(value: Any) -> bool:
    # Looked up on the type, so that a wrapper whose __getattr__ forwards everything (the SDK's
    # _BindingWrapper) is not mistaken for a JsProxy.
    return callable(getattr(type(value), "to_py", None))


# --- Python to JavaScript -------------------------------------------------------------------


def to_js(value: Any) -> Any:
    """A Python value as a JavaScript value: dicts become objects (string keys only), lists
    and tuples arrays, bytes-likes `Uint8Array`s, `None` null. Anything else (sets, objects,
    dates) raises TypeError, as a structured clone of plain data would refuse it."""
    try:
        prepared = _prepare(value, host=not IN_PYODIDE)
    except RecursionError:
        raise TypeError("the value is cyclic or nested too deeply to cross to JavaScript") from None
    if not IN_PYODIDE or prepared is JS_NULL or isinstance(prepared, bool | int | float | str):
        return prepared
    if is_js_proxy(prepared):
        return prepared
    return _pyodide_ffi().to_js(
        prepared, dict_converter=_js().Object.fromEntries, create_pyproxies=False
    )


def _prepare(value: Any, *, host: bool) -> Any:
    if value is None or value is JS_NULL:
        return JS_NULL
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)  # StrEnum members cross as their value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if is_js_proxy(value):
        return value
    if isinstance(value, Mapping):
        out = HostJsObject() if host else {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"object keys must be strings to cross to JavaScript, not {type(key).__name__}"
                )
            out[str(key)] = _prepare(item, host=host)
        return out
    if isinstance(value, list | tuple):
        items = [_prepare(item, host=host) for item in value]
        return HostJsArray(items) if host else items
    raise TypeError(f"a {type(value).__name__} cannot cross to JavaScript (plain data only)")


# --- JavaScript to Python -------------------------------------------------------------------


def to_py(value: Any) -> Any:
    """A value from JavaScript (a JsProxy, jsnull, or what the SDK made of it) as plain
    Python: dicts, lists, str, int, float, bool, None and bytes (buffers become bytes).
    JavaScript objects with no plain form (a Date, a class instance) are returned as they are."""
    if is_null(value):
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)  # JsBigInt too
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, Mapping):
        return {str(key): to_py(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_py(item) for item in value]
    if _has_to_py(value):
        converted = value.to_py()
        if converted is value:  # no plain conversion exists (a Date, a class instance)
            return value
        return to_py(converted)
    return value


# --- Errors ---------------------------------------------------------------------------------


class HostJsError(Exception):
    """A JavaScript `Error` as `error_value` makes one off Pyodide: `name` ("Error"),
    `message`, and its own properties (`js_properties`, also readable as attributes)."""

    def __init__(self, message: str, **properties: str) -> None:
        super().__init__(message)
        self.name = "Error"
        self.message = message
        self.js_properties = dict(properties)
        for key, value in properties.items():
            setattr(self, key, value)


def error_value(message: str, **properties: str) -> Any:
    """A JavaScript `Error` with this message and these own properties, to return (not raise)
    across Workers RPC: the caller receives it as a value, `instanceof Error`, with the message
    and properties as given. (A Python exception raised out of an entrypoint reaches a caller as
    a Pyodide `PythonError` whose message is the traceback; Pyodide wraps even a JavaScript
    error raised from Python so.)"""
    if not IN_PYODIDE:
        return HostJsError(message, **properties)
    error = _js().Error.new(message)
    for key, value in properties.items():
        setattr(error, key, value)
    return error


def js_error(exc: BaseException) -> tuple[str, str] | None:
    """The (name, message) of a JavaScript error as Pyodide raises it (`JsException`: `Error`,
    `TypeError`, `DataCloneError`...); None for an exception Python raised."""
    name = getattr(exc, "name", None)
    message = getattr(exc, "message", None)
    if isinstance(name, str) and isinstance(message, str):
        return name, message
    return None
