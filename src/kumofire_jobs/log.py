"""Structured logging: one event per run state change, JSON when not on a terminal.

The library only asks structlog for loggers; `configure_logging()` (called by the CLI, and
available to users) sets the output. A Worker's `print`-style output reaches Workers Logs,
where JSON lines become searchable fields.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, TextIO

import msgspec
import structlog

if TYPE_CHECKING:
    from .clock import Clock

_encoder = msgspec.json.Encoder()


def _json_serializer(event: dict[str, Any], **_: Any) -> str:
    return _encoder.encode(event).decode()


class TurnFlushedLogger:
    """Writes each line at once and flushes once per event-loop turn, not once per line: a
    busy runtime logs several events per run, and a flush is a system call each. Outside
    an event loop every line is flushed by itself."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._flush_pending = False

    def msg(self, message: str) -> None:
        self._stream.write(message + "\n")
        if self._flush_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._stream.flush()
            return
        self._flush_pending = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        self._stream.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


def configure_logging(
    *, json: bool | None = None, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """JSON lines when `json` (default: when the stream is not a terminal), else console."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_serializer)
        if json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: TurnFlushedLogger(stream),
        cache_logger_on_first_use=True,
    )


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
