"""Structured logging: one event per run state change, JSON when not on a terminal.

The library only asks structlog for loggers; `configure_logging()` (called by the CLI, and
available to users) sets the output. A Worker's `print`-style output reaches Workers Logs,
where JSON lines become searchable fields.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, TextIO

import msgspec
import structlog

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
