"""Checks on what callers pass in, each failing with a message that says what is wrong."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from .errors import PayloadTooLargeError, UnknownJobError, ValidationError
from .times import datetime_to_ms, seconds_to_ms

MAX_DELAY_SECONDS = 365 * 86_400
MAX_ATTEMPTS = 100
MAX_DEDUPE_KEY_CHARS = 512
MAX_NAME_CHARS = 256
MAX_BATCH = 100
MAX_KEY_CHARS = 512  # a schedule's key
MIN_PRIORITY = -100
MAX_PRIORITY = 100
MAX_CONCURRENCY_KEY_CHARS = 200
MAX_LIST_LIMIT = 200
DEFAULT_LIST_LIMIT = 50
# D1 refuses a string or a row over 1,000,000 bytes. A run's row also keeps its history (at
# most `history.MAX_HISTORY_BYTES`, 216,608: its logs, result, progress and attempts), and the
# rest (name, dedupe key, a 2,000-character last_error) fits in the 40,000 bytes left.
MAX_PAYLOAD_BYTES = 740_000
# Far below the interpreter's recursion limit, so a payload that is accepted also decodes
# wherever it is read (an HTTP answer, the consumer), however deep that caller's stack is.
MAX_PAYLOAD_DEPTH = 100


def job_name(name: Any, handlers: Mapping[str, Any]) -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError("name must be a non-empty string")
    if len(name) > MAX_NAME_CHARS:
        raise ValidationError(f"name is longer than {MAX_NAME_CHARS} characters")
    if name not in handlers:
        raise UnknownJobError(f"no handler is registered for job {name!r}")
    return name


def integer(field: str, value: Any) -> int:
    """An integer field's value: an int, or a float with no fraction (JSON has one number
    type, and `5.0` is what many encoders write for 5), as an int; anything else, `5.5`, a
    bool or a string among them, raises ValidationError naming the field."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{field} must be an integer, not {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A short JSON rendering of a refused value (as the caller sent it), else its type."""
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, ValueError, msgspec.EncodeError, RecursionError):
        text = ""
    return text if 0 < len(text) <= 40 else f"a {type(value).__name__}"


def _key_text(field: str, value: Any, max_chars: int) -> str:
    """A non-empty string of at most `max_chars` that D1 can store (UTF-8: no lone surrogate,
    which a Python caller, or a JavaScript one over RPC, can pass), else ValidationError."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field} must be a non-empty string")
    if len(value) > max_chars:
        raise ValidationError(f"{field} is longer than {max_chars} characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValidationError(f"{field} has a lone surrogate: it is not Unicode text") from None
    return value


def max_attempts(value: Any, default: int) -> int:
    if value is None:
        return default
    number = integer("max_attempts", value)
    if not 1 <= number <= MAX_ATTEMPTS:
        raise ValidationError(f"max_attempts must be between 1 and {MAX_ATTEMPTS}")
    return number


def due_ms(run_at: Any, delay: Any, now: int) -> int:
    """When a run is due: `run_at` (a past one is due now), `delay` seconds, or now."""
    if run_at is not None and delay is not None:
        raise ValidationError("give run_at or delay, not both")
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise ValidationError("run_at must be a timezone-aware datetime")
        try:
            due = datetime_to_ms(run_at)
        except ValueError as exc:
            raise ValidationError(f"run_at: {exc}") from None
        return max(due, now)
    if delay is not None:
        # isnan only for floats: it converts an int, and a huge one overflows.
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or (isinstance(delay, float) and math.isnan(delay))
        ):
            raise ValidationError("delay must be a number of seconds")
        if not 0 <= delay <= MAX_DELAY_SECONDS:
            raise ValidationError("delay must be between 0 and 365 days (31536000 seconds)")
        return now + seconds_to_ms(delay)
    return now


def dedupe_key(value: Any) -> str | None:
    if value is None:
        return None
    return _key_text("dedupe_key", value, MAX_DEDUPE_KEY_CHARS)


def payload(value: Any) -> str | None:
    """The payload as JSON text for D1, or ValidationError saying why it cannot be stored."""
    if value is None:
        return None
    if not within_depth(value, MAX_PAYLOAD_DEPTH):
        raise ValidationError(f"payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels")
    try:
        encoded = msgspec.json.encode(value)
    except (TypeError, ValueError, msgspec.EncodeError, RecursionError) as exc:
        # ValueError: an integer too long to print, a string with lone surrogates.
        raise ValidationError(f"payload is not JSON-serializable: {exc}") from None
    if len(encoded) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLargeError(
            f"payload is {len(encoded)} bytes as JSON, over the limit of {MAX_PAYLOAD_BYTES} "
            "(a D1 row holds at most 1,000,000 bytes)"
        )
    return encoded.decode()


def within_depth(value: Any, limit: int, what: str = "payload") -> bool:
    """Whether lists and objects nest at most `limit` deep (ValidationError, naming `what`,
    for a float JSON cannot hold). Iterative, so it cannot overflow the stack itself, and it
    ends on a container that holds itself."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple | set | frozenset):
            children = item
        elif isinstance(item, float) and not math.isfinite(item):
            # JSON has no NaN or infinity: the encoder would store null in its place.
            raise ValidationError(f"{what} holds {item!r}, which JSON cannot represent")
        else:
            continue
        if depth >= limit:
            return False
        stack.extend((child, depth + 1) for child in children if not _is_plain(child))
    return True


def _is_plain(value: Any) -> bool:
    """A scalar with nothing to check inside (a float is checked for being finite)."""
    return isinstance(value, str | int | bool) or value is None


def limit(value: Any, default: int = DEFAULT_LIST_LIMIT) -> int:
    if value is None:
        return default
    number = integer("limit", value)
    if not 1 <= number <= MAX_LIST_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    return number


def priority(value: Any) -> int:
    if value is None:
        return 0
    number = integer("priority", value)
    if not MIN_PRIORITY <= number <= MAX_PRIORITY:
        raise ValidationError(f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}")
    return number


def concurrency_key(value: Any) -> str | None:
    if value is None:
        return None
    return _key_text("concurrency_key", value, MAX_CONCURRENCY_KEY_CHARS)


def dedupe_expires_ms(ttl: Any, dedupe_key: str | None, now: int) -> int | None:
    """When the hold of a run's `dedupe_key` ends: `dedupe_ttl` seconds after `now`."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise ValidationError("dedupe_ttl must be a number of seconds")
    if not math.isfinite(ttl) or not 0 < ttl <= MAX_DELAY_SECONDS:
        raise ValidationError(f"dedupe_ttl must be above 0 and at most {MAX_DELAY_SECONDS} s")
    if dedupe_key is None:
        raise ValidationError("dedupe_ttl needs a dedupe_key")
    # At least 1 ms: a ttl under half a millisecond would round to a hold already over.
    return now + max(1, seconds_to_ms(ttl))


def schedule_key(value: Any) -> str:
    key = _key_text("key", value, MAX_KEY_CHARS)
    if "/" in key:
        raise ValidationError("key must not contain '/' (it is a path segment in the HTTP API)")
    if key in (".", ".."):  # a dot segment, resolved away by browsers, httpx and curl
        raise ValidationError(f"key must not be {key!r} (it is a path segment in the HTTP API)")
    return key


def enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("enabled must be true or false")
    return value
