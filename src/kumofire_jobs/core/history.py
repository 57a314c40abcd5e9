"""A run's history as its row keeps it: the finished attempts, the handler's log lines, its
progress and its result, each a JSON column of the runs table (migration 5).

The columns ride on the statements a run makes anyway: the start of an attempt records an
interrupted predecessor (`append_attempt_sql`), the finalize writes the attempt, the logs, the
progress and the result it returns. D1 bills rows written, not bytes, so a run that logs
nothing and returns None costs what it cost before. This module holds their bounds, their
encoding and their reading; `journal.py` gathers them while the handler runs.

A D1 row holds at most 1,000,000 bytes, payload included: `MAX_HISTORY_BYTES` is the most all
of these take, and `validation.MAX_PAYLOAD_BYTES` leaves room for it.
"""

from __future__ import annotations

import traceback
from collections import deque
from typing import Any, Final

import msgspec

from .errors import NonRetryableError, PayloadTooLargeError, ValidationError
from .models import LogLine, RunAttempt
from .states import AttemptOutcome
from .times import ms_to_datetime
from .validation import MAX_PAYLOAD_DEPTH, within_depth

MAX_ERROR_CHARS: Final = 2000
"""A run's `last_error`: the exception's type and message."""
MAX_ERROR_BYTES: Final = 8 * 1024
"""An attempt's error: the exception with its traceback, cut in the middle beyond this."""
MAX_LOG_LINES: Final = 200
MAX_LOG_BYTES: Final = 64 * 1024
"""The log lines kept per run: the last `MAX_LOG_LINES`, at most this much JSON."""
MAX_LINE_BYTES: Final = 8 * 1024
"""One log line; a line with larger fields keeps their size instead."""
MAX_EVENT_BYTES: Final = 1000
"""A log line's event, cut in the middle beyond this."""
MAX_PROGRESS_BYTES: Final = 16 * 1024
MAX_RESULT_BYTES: Final = 64 * 1024
MAX_ATTEMPTS_BYTES: Final = 48 * 1024
"""The attempts the consumer writes with an outcome: the oldest errors shortened first (to
`SHORT_ERROR_BYTES`), then the oldest attempts dropped."""
SHORT_ERROR_BYTES: Final = 256
MAX_ATTEMPTS_KEPT: Final = 100
"""The statements that record an attempt in SQL (interrupted, canceled) drop the oldest past
this many; each such record is small (no error), at most `_SQL_RECORD_BYTES`."""
_SQL_RECORD_BYTES: Final = 200
MAX_HISTORY_BYTES: Final = (
    MAX_PROGRESS_BYTES
    + MAX_RESULT_BYTES
    + MAX_LOG_BYTES
    + MAX_ATTEMPTS_BYTES
    + MAX_ATTEMPTS_KEPT * _SQL_RECORD_BYTES
)
"""The most the history columns of one row hold together."""

# Only `Encoder()`, `encode` and `decode`: the msgspec API the Worker path keeps to (its test
# double, tests/workerd/msgspec_double, has no `enc_hook` and no `Raw`).
_encoder = msgspec.json.Encoder()
_ENCODE_ERRORS = (TypeError, ValueError, msgspec.EncodeError, RecursionError, OverflowError)


def _items(text: str | None) -> deque[bytes]:
    """A JSON array column's items, each as its JSON text."""
    return deque(_encoder.encode(item) for item in decode_json(text) or [])


def _jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    """Log fields as JSON can hold them: a value that is not JSON as its `repr`."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        try:
            _encoder.encode(value)
        except _ENCODE_ERRORS:
            value = repr(value)
        out[str(key)] = value
    return out


def append_attempt_sql(outcome: AttemptOutcome, finished: str) -> str:
    """An SQL expression: the row's `attempts` with its current attempt appended as ended with
    `outcome` at `finished` (an SQL expression of epoch ms), no error. It reads the row's
    columns as they were before the statement (`attempt`, `started_at`), as an UPDATE's
    expressions do."""
    return (
        "json_insert(CASE WHEN json_array_length(COALESCE(attempts, '[]')) >= "
        f"{MAX_ATTEMPTS_KEPT} THEN json_remove(attempts, '$[0]') ELSE COALESCE(attempts, '[]') "
        "END, '$[#]', json_object('attempt', attempt, 'started_at', started_at, "
        f"'finished_at', {finished}, 'duration_ms', {finished} - started_at, "
        f"'outcome', '{outcome.value}', 'error', NULL))"
    )


def bounded_text(text: str, limit: int) -> str:
    """`text` within `limit` bytes of UTF-8: cut in the middle, keeping more of the end (a
    traceback's last line names the exception), and saying how long it was."""
    data = text.encode()
    if len(data) <= limit:
        return text
    marker = f"\n... [{len(data)} bytes, cut] ...\n"
    keep = limit - len(marker.encode())
    head = keep // 4
    return (
        data[:head].decode(errors="ignore")
        + marker
        + data[len(data) - (keep - head) :].decode(errors="ignore")
    )


def describe_error(exc: BaseException) -> str:
    """An exception as a run's `last_error` keeps it: its type and message."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_CHARS]


def error_detail(exc: BaseException) -> str:
    """An attempt's error: the exception with its traceback, at most `MAX_ERROR_BYTES`."""
    return bounded_text("".join(traceback.format_exception(exc)).rstrip(), MAX_ERROR_BYTES)


def encode_value(value: Any, limit: int, what: str) -> str | None:
    """`value` as JSON text for its column (None stays NULL), or ValidationError (not JSON)
    or PayloadTooLargeError (over `limit` bytes) saying so."""
    if value is None:
        return None
    if not within_depth(value, MAX_PAYLOAD_DEPTH, what):
        raise ValidationError(f"{what} is nested deeper than {MAX_PAYLOAD_DEPTH} levels")
    try:
        encoded = _encoder.encode(value)
    except _ENCODE_ERRORS as exc:
        raise ValidationError(f"{what} is not JSON-encodable: {exc}") from None
    if len(encoded) > limit:
        raise PayloadTooLargeError(
            f"{what} is {len(encoded)} bytes as JSON, over the limit of {limit}"
        )
    return encoded.decode()


def encode_result(value: Any) -> str | None:
    """A handler's return value as its run's `result`. One that cannot be kept fails the
    attempt for good: the handler's work is done, and running it again would return the
    same value (and repeat its side effects)."""
    try:
        return encode_value(value, MAX_RESULT_BYTES, "the handler's return value")
    except ValidationError as exc:
        raise NonRetryableError(f"{exc} (a result must be JSON, at most 64 KiB)") from None


def progress_value(value: Any) -> str | None:
    """A `ctx.progress(value)` as JSON text (ValidationError if it cannot be kept)."""
    return encode_value(value, MAX_PROGRESS_BYTES, "progress")


def decode_json(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


# --- attempts -------------------------------------------------------------------------------------


def attempt_record(
    attempt: int, started_ms: int, finished_ms: int, outcome: AttemptOutcome, error: str | None
) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "started_at": started_ms,
        "finished_at": finished_ms,
        "duration_ms": finished_ms - started_ms,
        "outcome": outcome.value,
        "error": None if error is None else bounded_text(error, MAX_ERROR_BYTES),
    }


def with_attempt(attempts: str | None, record: dict[str, Any]) -> str:
    """The `attempts` column with `record` appended, kept within `MAX_ATTEMPTS_BYTES` and
    `MAX_ATTEMPTS_KEPT`: first the errors of the oldest attempts are cut to
    `SHORT_ERROR_BYTES` (every attempt stays listed: 100 of them fit so), then the oldest
    attempts are dropped. The newest is always kept whole."""
    items: list[dict[str, Any]] = [*(decode_json(attempts) or []), record]
    sizes = [len(_encoder.encode(item)) for item in items]
    total = sum(sizes) + len(items) + 1  # the commas and brackets
    for i in range(len(items) - 1):
        if total <= MAX_ATTEMPTS_BYTES:
            break
        error = items[i].get("error")
        if error is not None and len(error.encode()) > SHORT_ERROR_BYTES:
            items[i] = {**items[i], "error": bounded_text(error, SHORT_ERROR_BYTES)}
            size = len(_encoder.encode(items[i]))
            total += size - sizes[i]
            sizes[i] = size
    while len(items) > 1 and (len(items) > MAX_ATTEMPTS_KEPT or total > MAX_ATTEMPTS_BYTES):
        items.pop(0)
        total -= sizes.pop(0) + 1
    return _encoder.encode(items).decode()


def attempts_from_json(text: str | None) -> list[RunAttempt]:
    return [
        RunAttempt(
            attempt=item["attempt"],
            started_at=ms_to_datetime(item["started_at"]),
            finished_at=ms_to_datetime(item["finished_at"]),
            duration_ms=item["duration_ms"],
            outcome=AttemptOutcome(item["outcome"]),
            error=item["error"],
        )
        for item in decode_json(text) or []
    ]


# --- log lines ------------------------------------------------------------------------------------


class LogBuffer:
    """A run's log lines as they are kept: the last `MAX_LOG_LINES`, at most `MAX_LOG_BYTES`
    of JSON, each line encoded once."""

    def __init__(self, stored: str | None) -> None:
        self._lines = _items(stored)
        self._size = sum(len(line) + 1 for line in self._lines) + 1

    def add(self, at_ms: int, attempt: int, level: str, event: str, fields: dict[str, Any]) -> None:
        line = {
            "at": at_ms,
            "attempt": attempt,
            "level": level,
            "event": bounded_text(event, MAX_EVENT_BYTES),
            "fields": _jsonable(fields),
        }
        encoded = _encoder.encode(line)
        if len(encoded) > MAX_LINE_BYTES:
            line["fields"] = {"fields_omitted": f"<{len(encoded)} bytes as JSON>"}
            encoded = _encoder.encode(line)
        self._lines.append(encoded)
        self._size += len(encoded) + 1
        while self._lines and (len(self._lines) > MAX_LOG_LINES or self._size > MAX_LOG_BYTES):
            self._size -= len(self._lines.popleft()) + 1

    def json(self) -> str | None:
        if not self._lines:
            return None
        return "[" + ",".join(line.decode() for line in self._lines) + "]"


def log_lines_from_json(text: str | None) -> list[LogLine]:
    return [
        LogLine(
            at=ms_to_datetime(item["at"]),
            attempt=item["attempt"],
            level=item["level"],
            event=item["event"],
            fields=item["fields"],
        )
        for item in decode_json(text) or []
    ]
