"""The local bindings presented the way a Python Worker sees Cloudflare's through Pyodide and
the Workers SDK, so that the Cloudflare adapter can run the binding contract suites.

Two styles, as the adapter meets both:

- `"sdk"`: what `env.<binding>` is on Workers: the SDK's `_BindingWrapper`
  (workers/rpc.py). Arguments go through `python_to_rpc` (None to null, dicts to objects,
  tuples and bytearrays refused), results through `python_from_rpc` (`JsDict`, None for null,
  `memoryview` for buffers, a naive `datetime` for a Date).
- `"js"`: the raw JavaScript objects (`JsProxy`s): arguments must already be JavaScript values
  (what `ffi.to_js` makes; a Python dict would arrive as a PyProxy, so it is refused here),
  results are proxies with attribute access and `to_py()`, null is `jsnull`.

Both: errors are JavaScript errors (`JsError`, like `pyodide.ffi.JsException`: `name`,
`message`), D1 results have D1's JSON wire shape (a BLOB is an array of byte values), Queue
option objects are camelCase, Durable Object RPC is positional (keyword arguments become a
trailing options object, as Pyodide passes them) and carries structured clones.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from kumofire_jobs.cloudflare.ffi import JS_NULL, HostJsArray, HostJsError, HostJsObject
from kumofire_jobs.local.d1 import LocalD1Database, LocalD1PreparedStatement
from kumofire_jobs.local.durable_objects import DataCloneError

STYLES = ("sdk", "js")


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Any = _Undefined()


class JsError(Exception):
    """A JavaScript error as Pyodide raises it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def js_error(exc: BaseException) -> JsError:
    if isinstance(exc, JsError):
        return exc
    if isinstance(exc, DataCloneError):
        name = "DataCloneError"
    elif isinstance(exc, TypeError):
        name = "TypeError"
    elif isinstance(exc, ValueError):
        name = "RangeError"
    else:
        name = "Error"
    return JsError(name, str(exc))


def answered_error(answer: Any, pattern: str) -> HostJsError:
    """The `Error` a `JobsService` method answered instead of raising (what `ffi.error_value`
    makes off Pyodide): its message matches `pattern`, its `code` is the message's code."""
    assert isinstance(answer, HostJsError), f"not an answered error: {answer!r}"
    assert re.search(pattern, answer.message), (pattern, answer.message)
    assert answer.name == "Error"
    assert answer.js_properties == {"code": answer.message.split(": ", 1)[0]}
    return answer


# --- JavaScript values as Python sees them (the "js" style) ---------------------------------


class JsDict(dict[str, Any]):
    """The SDK's JsDict: a dict whose keys are also attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class JsProxy:
    """A proxy of a plain object, array or Map."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def to_py(self) -> Any:
        return _deep_to_py(self._value)

    def __getattr__(self, name: str) -> Any:
        if isinstance(self._value, dict):
            if name in self._value:
                return _present_js(self._value[name])
            return None  # undefined
        if name == "length":
            return len(self._value)
        raise AttributeError(name)

    def __iter__(self) -> Any:
        if not isinstance(self._value, list):
            raise TypeError("not iterable")
        return (_present_js(item) for item in self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __getitem__(self, index: int) -> Any:
        return _present_js(self._value[index])

    def __repr__(self) -> str:
        return f"JsProxy({self._value!r})"


class JsBuffer:
    """A proxy of a Uint8Array/ArrayBuffer: `to_py()` gives a memoryview."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def to_py(self) -> memoryview:
        return memoryview(self._data)

    def to_bytes(self) -> bytes:
        return self._data


class JsDate:
    def __init__(self, ms: float) -> None:
        self._ms = ms

    def getTime(self) -> float:
        return self._ms

    def to_py(self) -> Any:
        return self  # no built-in conversion


def _deep_to_py(value: Any) -> Any:
    if value is None:
        return JS_NULL  # Pyodide 0.28: null converts to jsnull
    if isinstance(value, bytes):
        return memoryview(value)
    if isinstance(value, dict):
        return {key: _deep_to_py(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_to_py(item) for item in value]
    return value


def _present_js(value: Any) -> Any:
    if value is None:
        return JS_NULL
    if isinstance(value, bytes):
        return JsBuffer(value)
    if isinstance(value, dict | list):
        return JsProxy(value)
    return value


def _present_sdk(value: Any) -> Any:
    """python_from_rpc: plain objects to JsDict, null to None, buffers to memoryview."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return memoryview(value)
    if isinstance(value, dict):
        return JsDict({key: _present_sdk(item) for key, item in value.items()})
    if isinstance(value, list):
        return [_present_sdk(item) for item in value]
    return value


def present(value: Any, style: str) -> Any:
    """A value of the JavaScript world (held here as plain Python, None for null) as the
    Python side of the Worker receives it."""
    return _present_sdk(value) if style == "sdk" else _present_js(value)


# --- Python values arriving in JavaScript --------------------------------------------------


def receive(value: Any, style: str, *, top: bool = True) -> Any:
    """An argument a Python caller passed, as the JavaScript side gets it (held as plain
    Python for the local bindings; a top-level `undefined` is `UNDEFINED`)."""
    if value is JS_NULL:
        return None
    if value is None:
        if style == "sdk":
            return None  # python_to_rpc: None is null
        return UNDEFINED if top else None
    if isinstance(value, HostJsObject):
        return {key: receive(item, style, top=False) for key, item in value.items()}
    if isinstance(value, HostJsArray):
        return [receive(item, style, top=False) for item in value]
    if isinstance(value, bool | int | float | str | bytes):
        return value
    if style == "js":
        raise AssertionError(
            f"a Python {type(value).__name__} reached JavaScript unconverted (as a PyProxy)"
        )
    if isinstance(value, tuple | bytearray):  # python_to_rpc refuses these
        raise TypeError(f"{type(value)} cannot be sent over RPC.")
    if isinstance(value, dict):
        return {key: receive(item, style, top=False) for key, item in value.items()}
    if isinstance(value, list):
        return [receive(item, style, top=False) for item in value]
    return value  # left for the binding to refuse


def _arguments(args: tuple[Any, ...], style: str) -> list[Any]:
    return [None if v is UNDEFINED else v for v in (receive(arg, style) for arg in args)]


def _call_options(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    # Pyodide passes keyword arguments to a JavaScript function as a trailing object.
    return (*args, HostJsObject(kwargs)) if kwargs else args


async def _settle(awaitable: Awaitable[Any], style: str, wire: Callable[[Any], Any]) -> Any:
    try:
        result = await awaitable
    except Exception as exc:
        raise js_error(exc) from None
    return present(wire(result), style)


def _identity(value: Any) -> Any:
    return value


# --- D1 -------------------------------------------------------------------------------------


def _json_cell(value: Any) -> Any:
    return list(value) if isinstance(value, bytes) else value  # BLOBs travel as byte arrays


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: _json_cell(value) for key, value in row.items()}


def _meta(meta: Any) -> dict[str, Any]:
    fields = ("changes", "last_row_id", "rows_read", "rows_written", "duration", "changed_db")
    out = {name: getattr(meta, name) for name in fields}
    out["size_after"] = meta.size_after
    out["served_by_region"] = "LOCAL"
    return out


def _d1_result(result: Any) -> dict[str, Any]:
    return {
        "success": result.success,
        "meta": _meta(result.meta),
        "results": [_json_row(row) for row in result.results],
    }


class FakeD1Database:
    """`env.DB`. `fail_next(*messages)` makes the next calls fail with those D1 errors."""

    def __init__(self, local: LocalD1Database, style: str) -> None:
        self.local = local
        self.style = style
        self.failures: list[str] = []
        self.calls = 0

    def fail_next(self, *messages: str) -> None:
        self.failures.extend(messages)

    async def _gate(self) -> None:
        self.calls += 1
        if self.failures:
            raise JsError("Error", self.failures.pop(0))

    def prepare(self, query: str) -> FakeD1Statement:
        return FakeD1Statement(self, self.local.prepare(query))

    async def batch(self, statements: Any) -> Any:
        if self.style == "js":
            assert isinstance(statements, list)  # a JavaScript array of statements
        local = [s.local for s in statements]
        await self._gate()
        return await _settle(
            self.local.batch(local), self.style, lambda rs: [_d1_result(r) for r in rs]
        )

    async def exec(self, query: Any) -> Any:
        await self._gate()
        return await _settle(
            self.local.exec(receive(query, self.style)),
            self.style,
            lambda r: {"count": r.count, "duration": r.duration},
        )


class FakeD1Statement:
    def __init__(self, db: FakeD1Database, local: LocalD1PreparedStatement) -> None:
        self.db = db
        self.local = local

    def bind(self, *args: Any) -> FakeD1Statement:
        # workerd's D1PreparedStatement.bind (src/cloudflare/internal/d1-api.ts)
        values: list[Any] = []
        for arg in args:
            value = receive(arg, self.db.style)
            if value is UNDEFINED:
                raise JsError(
                    "Error", "D1_TYPE_ERROR: Type 'undefined' not supported for value 'undefined'"
                )
            if isinstance(value, bool):
                value = int(value)
            elif isinstance(value, list):
                if not all(isinstance(b, int) and 0 <= b < 256 for b in value):
                    raise JsError(
                        "Error", f"D1_TYPE_ERROR: Type 'object' not supported for value '{value}'"
                    )
                value = bytes(value)
            elif isinstance(value, dict):
                raise JsError(
                    "Error",
                    "D1_TYPE_ERROR: Type 'object' not supported for value '[object Object]'",
                )
            values.append(value)
        try:
            return FakeD1Statement(self.db, self.local.bind(*values))
        except Exception as exc:
            raise js_error(exc) from None

    async def first(self, *args: Any) -> Any:
        await self.db._gate()
        column = receive(args[0], self.db.style) if args else UNDEFINED
        if column is UNDEFINED:
            awaitable = self.local.first()
            return await _settle(
                awaitable, self.db.style, lambda r: None if r is None else _json_row(r)
            )
        # A null column is looked up as the property "null", as JavaScript does.
        name = "null" if column is None else column
        return await _settle(self.local.first(name), self.db.style, _json_cell)

    async def all(self) -> Any:
        await self.db._gate()
        return await _settle(self.local.all(), self.db.style, _d1_result)

    async def run(self) -> Any:
        await self.db._gate()
        return await _settle(self.local.run(), self.db.style, _d1_result)

    async def raw(self, *args: Any) -> Any:
        await self.db._gate()
        options = receive(args[0], self.db.style) if args else UNDEFINED
        awaitable = self.local.raw() if options in (UNDEFINED, None) else self.local.raw(options)
        return await _settle(
            awaitable, self.db.style, lambda rows: [[_json_cell(v) for v in row] for row in rows]
        )


# --- Queues ---------------------------------------------------------------------------------


class FakeQueue:
    """`env.QUEUE`, a producer."""

    def __init__(self, local: Any, style: str) -> None:
        self.local = local
        self.style = style

    async def send(self, *args: Any, **kwargs: Any) -> None:
        body, *options = _arguments(_call_options(args, kwargs), self.style)
        await _settle(self.local.send(body, *options), self.style, _identity)

    async def sendBatch(self, *args: Any, **kwargs: Any) -> None:
        if self.style == "js":
            assert isinstance(args[0], HostJsArray)
        messages, *options = _arguments(_call_options(args, kwargs), self.style)
        await _settle(self.local.sendBatch(messages, *options), self.style, _identity)


class FakeMessage:
    def __init__(self, local: Any, style: str) -> None:
        self._local = local
        self._style = style
        self.id = local.id
        self.attempts = local.attempts
        self.body = present(local.body, style)
        if style == "sdk":  # python_from_rpc: datetime.fromtimestamp(Date.getTime() / 1000)
            self.timestamp: Any = datetime.fromtimestamp(local.timestamp / 1000)
        else:
            self.timestamp = JsDate(local.timestamp)

    def ack(self) -> None:
        self._local.ack()

    def retry(self, *args: Any, **kwargs: Any) -> None:
        try:
            self._local.retry(*_arguments(_call_options(args, kwargs), self._style))
        except Exception as exc:
            raise js_error(exc) from None


class FakeMessageBatch:
    """The batch a `queue()` handler receives (after the SDK wrapped it)."""

    def __init__(self, local: Any, style: str) -> None:
        self._local = local
        self._style = style
        self.queue = local.queue
        self.messages = [FakeMessage(message, style) for message in local.messages]

    def ackAll(self) -> None:
        self._local.ackAll()

    def retryAll(self, *args: Any, **kwargs: Any) -> None:
        try:
            self._local.retryAll(*_arguments(_call_options(args, kwargs), self._style))
        except Exception as exc:
            raise js_error(exc) from None


# --- Durable Objects ------------------------------------------------------------------------


class FakeDurableObjectNamespace:
    """`env.NAMESPACE`: ids are the platform's objects, stubs call by RPC."""

    def __init__(self, local: Any, style: str) -> None:
        self.local = local
        self.style = style

    def idFromName(self, name: str) -> Any:
        return self.local.idFromName(name)

    def idFromString(self, id: str) -> Any:
        try:
            return self.local.idFromString(id)
        except Exception as exc:
            raise js_error(exc) from None

    def newUniqueId(self, *args: Any) -> Any:
        return self.local.newUniqueId(*_arguments(args, self.style))

    def get(self, id: Any, *args: Any) -> FakeStub:
        try:
            return FakeStub(self.local.get(id, *_arguments(args, self.style)), self.style)
        except Exception as exc:
            raise js_error(exc) from None

    def getByName(self, name: str, *args: Any) -> FakeStub:
        return FakeStub(self.local.getByName(name, *_arguments(args, self.style)), self.style)


class FakeStub:
    def __init__(self, local: Any, style: str) -> None:
        self._local = local
        self._style = style
        self.id = local.id

    def __getattr__(self, method: str) -> Callable[..., Any]:
        local = self._local
        style = self._style

        def call(*args: Any, **kwargs: Any) -> Any:
            arguments = _arguments(_call_options(args, kwargs), style)
            try:
                pending = getattr(local, method)(*arguments)  # sent now, as the platform does
            except Exception as exc:
                raise js_error(exc) from None
            return _settle(pending, style, _identity)

        return call


class FakeDurableObjectStorage:
    """`ctx.storage` of an object, as its own code sees it."""

    def __init__(self, local: Any, style: str) -> None:
        self.local = local
        self.style = style

    def __getattr__(self, method: str) -> Callable[..., Any]:
        function = getattr(self.local, method)
        style = self.style

        def call(*args: Any) -> Any:
            try:
                result = function(*_arguments(args, style))
            except Exception as exc:
                raise js_error(exc) from None
            if inspect.isawaitable(result):
                return _settle(result, style, _identity)
            return present(result, style)

        return call


class FakeDurableObjectState:
    """`ctx` of an object (the SDK's DurableObjectContext): `storage` wrapped, the rest as is."""

    def __init__(self, local: Any, style: str) -> None:
        self._local = local
        self.storage = FakeDurableObjectStorage(local.storage, style)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._local, name)


class FakeEnv:
    """A Worker's `env`: bindings and text variables as attributes."""

    def __init__(self, **bindings: Any) -> None:
        self.__dict__.update(bindings)

    # Which bindings an env has is the test's choice: to mypy, any attribute, of any type.
    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
