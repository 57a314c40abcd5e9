"""The `D1Database` protocol over a Worker's D1 binding.

Binds are checked and converted for JavaScript (`None` as null, booleans as 1/0, bytes-likes
as `Uint8Array`s), results come back as plain Python (rows as dicts, BLOBs as bytes, which
D1's JSON wire format carries as arrays of numbers), and errors as `D1Error` with D1's own
message. Transient errors, the ones D1 documents as "retry the operation" plus overload, are
retried with capped exponential backoff and jitter; anything else surfaces at once.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..core.bindings import D1Meta, D1Result
from ..core.log import get_logger
from .errors import D1Error, D1TypeError, raise_platform
from .ffi import is_js_proxy, js_error, to_js, to_py

log = get_logger()

# From "Debug D1" (developers.cloudflare.com/d1/observability/debug-d1/, the list of
# D1_ERRORs whose recommended action is to retry) and "Retry queries"
# (d1/best-practices/retry-queries/). Matched case-insensitively as substrings.
TRANSIENT_D1_ERRORS: Final = (
    "D1 DB reset because its code was updated",
    # "Internal error while starting up D1 DB storage caused object to be reset." and
    # "Internal error in D1 DB storage caused object to be reset."
    "storage caused object to be reset",
    "Network connection lost",
    "Cannot resolve D1 DB due to transient issue on remote node",
    "Can't read from request stream because client disconnected",
    # "D1 DB is overloaded. Requests queued for too long." / "... Too many requests queued."
    "D1 DB is overloaded",
    "internal error",
)
_TRANSIENT_LOWER: Final = tuple(text.lower() for text in TRANSIENT_D1_ERRORS)

_RAW_OPTIONS: Final = frozenset({"columnNames"})


def is_transient_d1_error(message: str) -> bool:
    lowered = message.lower()
    return any(text in lowered for text in _TRANSIENT_LOWER)


@dataclass(frozen=True, slots=True)
class D1RetryPolicy:
    """At most `max_attempts` tries of one D1 call; the n-th retry waits
    `min(initial_delay * multiplier ** (n - 1), max_delay)` seconds, scaled into [50%, 100%]
    at random when `jitter` is on."""

    max_attempts: int = 5
    initial_delay: float = 0.05
    max_delay: float = 2.0
    multiplier: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("delays must be non-negative and multiplier at least 1")

    def delay(self, retry: int, random: Callable[[], float]) -> float:
        base = min(self.initial_delay * self.multiplier ** (retry - 1), self.max_delay)
        return base * (0.5 + 0.5 * random()) if self.jitter else base


def _default_random() -> float:
    import random  # here, not at import time: a Worker's module graph is snapshotted

    return random.random()


# --- Results --------------------------------------------------------------------------------


_META_DEFAULTS: Final[dict[str, Any]] = {
    "changes": 0,
    "last_row_id": 0,
    "rows_read": 0,
    "rows_written": 0,
    "duration": 0.0,
    "changed_db": False,
    "size_after": 0,
}


class CloudflareD1Meta:
    """A result's `meta`: D1's fields as attributes (and items), including those this code
    does not know by name (`served_by_region`, `total_attempts`, `timings`...)."""

    __slots__ = ("_fields",)

    changes: int
    last_row_id: int
    rows_read: int
    rows_written: int
    duration: float
    changed_db: bool
    size_after: int

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self._fields = {**_META_DEFAULTS, **fields}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # unset slot, or Python's own probes (copy, pickle)
            raise AttributeError(name)
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._fields[name]

    def to_dict(self) -> dict[str, Any]:
        return dict(self._fields)

    def __repr__(self) -> str:
        return f"CloudflareD1Meta({self._fields!r})"


@dataclass(slots=True)
class CloudflareD1Result:
    results: list[dict[str, Any]] = field(default_factory=list)
    success: bool = True
    # Typed as the protocol (whose attributes mypy holds invariant); it is a CloudflareD1Meta.
    meta: D1Meta = field(default_factory=lambda: CloudflareD1Meta({}))

    def __getitem__(self, key: str) -> Any:
        if key not in ("results", "success", "meta"):
            raise KeyError(key)
        return getattr(self, key)


@dataclass(slots=True)
class CloudflareD1ExecResult:
    count: int
    duration: float

    def __getitem__(self, key: str) -> Any:
        if key not in ("count", "duration"):
            raise KeyError(key)
        return getattr(self, key)


def _cell(value: Any) -> Any:
    """One column value: a BLOB arrives as an array of byte values (D1's JSON wire format)
    or as a buffer; SQLite has no other value a list could be."""
    value = to_py(value)
    if isinstance(value, list):
        return bytes(value)
    return value


def _row(value: Any) -> dict[str, Any]:
    value = to_py(value)
    if not isinstance(value, dict):
        raise D1Error(f"D1 returned a row that is not an object: {value!r}")
    return {key: _cell(item) for key, item in value.items()}


def _result(value: Any) -> CloudflareD1Result:
    data = to_py(value)
    if not isinstance(data, dict):
        raise D1Error(f"D1 returned a result that is not an object: {data!r}")
    rows = data.get("results") or []
    meta = data.get("meta") or {}
    return CloudflareD1Result(
        results=[_row(row) for row in rows],
        success=bool(data.get("success", True)),
        meta=CloudflareD1Meta(meta if isinstance(meta, dict) else {}),
    )


def _bind_value(value: Any) -> Any:
    """A bound value as D1 takes it. D1 itself would bind a list of small numbers as a BLOB
    and refuses objects only on the platform side; refuse both here, with D1's message."""
    if value is None or isinstance(value, str | float):
        return value
    if isinstance(value, bool):
        return int(value)  # D1 binds booleans as 1 and 0 (older runtimes refused them)
    if isinstance(value, int):
        return int(value)  # beyond 2**53 it becomes a BigInt, which D1 refuses itself
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    kind = "function" if callable(value) else "object"
    raise D1TypeError(f"D1_TYPE_ERROR: Type '{kind}' not supported for value '{value!r}'")


async def _resolve(result: Any) -> Any:
    if inspect.isawaitable(result):
        return await result
    return result


# --- The binding ----------------------------------------------------------------------------


class CloudflareD1Database:
    """A `D1Database` over `env.<binding>` (the SDK's wrapper or the raw JavaScript object)."""

    def __init__(
        self,
        binding: Any,
        *,
        retry: D1RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.binding = binding
        self.retry = retry or D1RetryPolicy()
        self._sleep = sleep or asyncio.sleep
        self._random = random or _default_random

    def prepare(self, query: str) -> CloudflareD1Statement:
        try:
            handle = self.binding.prepare(query)
        except Exception as exc:
            raise_platform(exc, D1Error)
        return CloudflareD1Statement(self, handle)

    async def batch(self, statements: Sequence[Any]) -> list[D1Result]:
        handles = []
        for statement in statements:
            if not isinstance(statement, CloudflareD1Statement):
                raise TypeError("batch() takes statements from prepare()")
            handles.append(statement.handle)
        # The SDK's wrapper converts a list of its statement wrappers itself; a raw binding
        # needs a JavaScript array of the raw statements.
        argument = to_js(handles) if is_js_proxy(self.binding) else handles
        results = await self.call("batch", lambda: self.binding.batch(argument))
        return [_result(item) for item in to_py(results) or []]

    async def exec(self, query: str) -> CloudflareD1ExecResult:
        data = to_py(await self.call("exec", lambda: self.binding.exec(query)))
        if not isinstance(data, dict):
            raise D1Error(f"D1 returned an exec result that is not an object: {data!r}")
        return CloudflareD1ExecResult(
            count=int(data.get("count", 0)), duration=data.get("duration", 0.0)
        )

    async def call(self, operation: str, invoke: Callable[[], Any]) -> Any:
        """Run one D1 call (`invoke` makes it anew on each try), retrying transient errors."""
        attempt = 1
        while True:
            try:
                return await _resolve(invoke())
            except Exception as exc:
                info = js_error(exc)
                if info is None or isinstance(exc, D1Error):
                    raise
                name, message = info
                if attempt >= self.retry.max_attempts or not is_transient_d1_error(message):
                    raise D1Error(message, name) from exc
                delay = self.retry.delay(attempt, self._random)
                log.warning(
                    "d1.transient_error",
                    operation=operation,
                    attempt=attempt,
                    retry_in=round(delay, 3),
                    error=message,
                )
                await self._sleep(delay)
                attempt += 1


class CloudflareD1Statement:
    """A prepared statement; `bind()` returns a new one, as D1's does."""

    __slots__ = ("db", "handle")

    def __init__(self, db: CloudflareD1Database, handle: Any) -> None:
        self.db = db
        self.handle = handle

    def bind(self, *values: Any) -> CloudflareD1Statement:
        converted = [to_js(_bind_value(value)) for value in values]
        try:
            handle = self.handle.bind(*converted)
        except Exception as exc:
            raise_platform(exc, D1Error)
        return CloudflareD1Statement(self.db, handle)

    async def first(self, column: str | None = None) -> Any:
        handle = self.handle
        if column is None:
            # Not first(null): D1 would look up a column named null.
            row = to_py(await self.db.call("first", lambda: handle.first()))
            return None if row is None else _row(row)
        value = await self.db.call("first", lambda: handle.first(column))
        return _cell(value)

    async def all(self) -> CloudflareD1Result:
        handle = self.handle
        return _result(await self.db.call("all", lambda: handle.all()))

    async def run(self) -> CloudflareD1Result:
        handle = self.handle
        return _result(await self.db.call("run", lambda: handle.run()))

    async def raw(self, options: Mapping[str, Any] | None = None) -> list[list[Any]]:
        handle = self.handle
        if options is None:
            rows = await self.db.call("raw", lambda: handle.raw())
        else:
            unknown = sorted(set(options) - _RAW_OPTIONS)
            if unknown:
                raise TypeError(f"raw() takes the option columnNames only, not {unknown}")
            js_options = to_js(dict(options))
            rows = await self.db.call("raw", lambda: handle.raw(js_options))
        return [[_cell(value) for value in row] for row in to_py(rows) or []]
