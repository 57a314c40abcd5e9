"""Structured logging: one event per run state change, JSON when not on a terminal.

The library only asks structlog for loggers; `configure_logging()` (called by the CLI, and
available to users) sets the output, and `configure_worker_logging()` (called by the Worker's
`src/entry.py` when it is imported) sets JSON lines on standard output, which Workers Logs
receives as `console.log` lines and indexes field by field.

Every configuration bounds what one event carries: a text field is cut at `MAX_FIELD_CHARS`
(the cut says how long it was), and a structured or binary value (a payload, a result) larger
than that is logged as its size only. A line is small whatever a handler passes to its logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Hashable, MutableMapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec
import structlog

MAX_FIELD_CHARS: Final = 1000
"""The longest text a log field carries; a structured value is logged whole only up to this
size as JSON, else as its size."""

if TYPE_CHECKING:
    from .clock import Clock

_encoder = msgspec.json.Encoder()


def _cut(text: str) -> str:
    # Both ends: a traceback's last line (the exception and its message) matters most.
    half = MAX_FIELD_CHARS // 2
    return f"{text[:half]} ... [{len(text)} chars] ... {text[-half:]}"


def _sized(value: Any) -> Any:
    """A structured or binary value as it is logged: itself when small, else its size."""
    if isinstance(value, bytes | bytearray | memoryview):
        size = memoryview(value).nbytes
        return value if size <= MAX_FIELD_CHARS else f"<{size} bytes>"
    try:
        size = len(_encoder.encode(value))
    except (TypeError, ValueError, OverflowError):  # not JSON: the renderer says so, not us
        return value
    if size <= MAX_FIELD_CHARS:
        return value
    return f"<{type(value).__name__} of {size} bytes as JSON>"


def limit_fields(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: no field longer than `MAX_FIELD_CHARS` (text cut, payloads and
    other structured values replaced by their size)."""
    for key, value in event.items():
        kind = type(value)
        if kind is str:
            if len(value) > MAX_FIELD_CHARS:
                event[key] = _cut(value)
        elif kind in _SMALL:  # most other fields: checked by type alone
            continue
        elif isinstance(value, str):
            if len(value) > MAX_FIELD_CHARS:
                event[key] = _cut(value)
        elif isinstance(value, _STRUCTURED):
            event[key] = _sized(value)
    return event


# Field types that are never cut (a str is, when long), and those logged by their size.
_SMALL: Final = frozenset({int, float, bool, type(None)})
_STRUCTURED: Final = (dict, list, tuple, bytes, bytearray, memoryview)


_LEVEL_NAMES: Final = {"warn": "warning", "exception": "error"}
_stamp_second = -1  # the whole second `_stamp_prefix` spells, cached: a line costs no strftime
_stamp_prefix = ""


def add_level_and_timestamp(
    _logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: structlog's `add_log_level` and `TimeStamper(fmt="iso",
    utc=True)` in one step, the same fields (microseconds always written): a run logs
    several lines, and the datetime formatting was most of their processing."""
    global _stamp_second, _stamp_prefix
    event["level"] = _LEVEL_NAMES.get(method, method)
    now = time.time()
    second = int(now)
    if second != _stamp_second:
        _stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _stamp_second = second
    event["timestamp"] = f"{_stamp_prefix}.{int((now - second) * 1_000_000):06d}Z"
    return event


def _json_line(logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
    """The JSON configuration's processors after the context's, in one step (a run logs
    several lines, and each processor is a call and a dict pass): `add_level_and_timestamp`,
    structlog's `format_exc_info` (only when the event carries `exc_info`), `limit_fields`,
    then the JSON rendering, with the same output as the four in a chain."""
    event = add_level_and_timestamp(logger, method, event)
    if "exc_info" in event:
        event = structlog.processors.format_exc_info(logger, method, event)
    return _encoder.encode(limit_fields(logger, method, event)).decode()


class LineStream(Protocol):
    """Where log lines go: a text stream (`sys.stderr`, a file, `io.StringIO`)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...

    def isatty(self) -> bool: ...


class TurnFlushedLogger:
    """Writes each line at once and flushes after it in a loop callback, not once per line:
    a busy runtime logs several events per run, and a flush is a system call each. One
    instance serves every logger of a configuration, so a turn's lines share one flush.

    `delay` None flushes at the end of the loop's turn (the Worker: a timer may never fire
    once its request is answered); a number of seconds flushes that long after the first
    line not yet flushed (the embedded runtime: one flush for the lines of many turns, each
    line out within `delay`). Outside an event loop every line is flushed by itself."""

    def __init__(self, stream: LineStream, delay: float | None = None) -> None:
        self._stream = stream
        self._delay = delay
        # The loop whose callback will flush (None: nothing waits for a flush). Another
        # loop, or one that closed before its callback ran, gets a callback of its own.
        self._flush_loop: asyncio.AbstractEventLoop | None = None

    def msg(self, message: str) -> None:
        self._stream.write(message + "\n")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._stream.flush()
            return
        if self._flush_loop is loop:
            return
        self._flush_loop = loop
        if self._delay is None:
            loop.call_soon(self._flush)
        else:
            loop.call_later(self._delay, self._flush)

    def _flush(self) -> None:
        self._flush_loop = None
        # A stream closed since its last line (its close flushed it) has nothing to flush.
        with contextlib.suppress(ValueError):
            self._stream.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


# How long a line written by the embedded runtime may wait for its flush (see TurnFlushedLogger).
FLUSH_DELAY_SECONDS: Final = 0.05


def configure_logging(
    *,
    json: bool | None = None,
    level: int = logging.INFO,
    stream: LineStream | None = None,
    flush_delay: float | None = FLUSH_DELAY_SECONDS,
) -> None:
    """JSON lines when `json` (default: when the stream is not a terminal), else console.
    Inside an event loop a line is flushed at most `flush_delay` seconds after it is written
    (None: at the end of the loop's turn)."""
    if stream is None:
        stream = sys.stderr
    if json is None:
        json = not stream.isatty()
    processors: list[Any] = [structlog.contextvars.merge_contextvars]
    if json:
        processors.append(_json_line)
    else:
        processors += [
            add_level_and_timestamp,
            structlog.processors.format_exc_info,
            limit_fields,
            structlog.dev.ConsoleRenderer(),
        ]
    output = TurnFlushedLogger(stream, flush_delay)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: output,
        cache_logger_on_first_use=True,
    )


class _StandardOutput:
    """`sys.stdout` as it is when written to (not when logging was configured)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return False


def configure_worker_logging(level: int = logging.INFO) -> None:
    """The Worker's logging: one JSON object per line on standard output (`console.log` under
    Pyodide, which Workers Logs indexes), never the console renderer's colours."""
    configure_logging(json=True, level=level, stream=_StandardOutput(), flush_delay=None)


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("kumofire_jobs", **bound)


class RepeatedLog:
    """Rate-limits a repeated error: the first occurrence of a key is logged, then at most
    one per `interval` seconds, saying how many were suppressed in between. A failure that
    repeats by the thousand (every commit on a full disk) then costs a line every few
    seconds, not megabytes of log a second."""

    def __init__(self, clock: Clock, interval: float = 10.0, max_keys: int = 256) -> None:
        self._clock = clock
        self._interval = interval
        self._max_keys = max_keys
        self._seen: dict[Hashable, list[float]] = {}  # key -> [last logged at, suppressed]

    def check(self, key: Hashable) -> int | None:
        """None: suppress this occurrence. Else log it, with the returned number of
        occurrences suppressed since the last one logged."""
        now = self._clock.now()
        entry = self._seen.get(key)
        if entry is not None and now < entry[0] + self._interval:
            entry[1] += 1
            return None
        if entry is None and len(self._seen) >= self._max_keys:
            # Forget the quiet keys (their window is over, nothing suppressed); if every
            # key is busy, start over rather than grow.
            self._seen = {
                k: v for k, v in self._seen.items() if v[1] or now < v[0] + self._interval
            }
            if len(self._seen) >= self._max_keys:
                self._seen.clear()
        suppressed = 0 if entry is None else int(entry[1])
        self._seen[key] = [now, 0]
        return suppressed
